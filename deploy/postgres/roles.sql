-- connecX on PostgreSQL: one login role per service, owning that service's schema and nothing
-- else (docs/decisions/0010-one-postgres-role-per-service.md). No role can read, write or create
-- in another service's schema, nor create schemas of its own.
--
-- Run as a superuser (or a role with CREATEROLE that owns the database) in the connecX database,
-- before the services first start and again when a service is added; it is idempotent:
--
--   psql "postgres://admin@db.internal/connecx" -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql
--
-- The roles are made without passwords (local trust authentication needs none); in any other
-- deployment give each one, and put it in that service's database URL:
--
--   ALTER ROLE connecx_booking_api PASSWORD '...';
--
-- A schema that exists already (a deployment that ran every service as one user) is handed to
-- its service's role together with every table in it.
DO $roles$
DECLARE
    service record;
    owned record;
BEGIN
    FOR service IN
        SELECT * FROM (VALUES
            ('connecx_booking_api', 'booking'),
            ('connecx_ipassan_sync', 'ipassan_sync'),
            ('connecx_salto_sync', 'salto_sync'),
            ('connecx_notifier', 'notifier')
        ) AS services (role, schema)
    LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', service.role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            -- Made before, or by a run on another database of the same server at this moment.
            NULL;
        END;
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), service.role);

        IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = service.schema) THEN
            EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', service.schema, service.role);
        ELSE
            EXECUTE format('ALTER SCHEMA %I OWNER TO %I', service.schema, service.role);
            -- Tables (their indexes and serial sequences follow them) ...
            FOR owned IN
                SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = service.schema AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            LOOP
                EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', service.schema, owned.relname, service.role);
            END LOOP;
            -- ... and sequences of their own.
            FOR owned IN
                SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = service.schema AND c.relkind = 'S'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                  WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
            LOOP
                EXECUTE format('ALTER SEQUENCE %I.%I OWNER TO %I', service.schema, owned.relname, service.role);
            END LOOP;
        END IF;
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', service.schema);
    END LOOP;
END
$roles$;
