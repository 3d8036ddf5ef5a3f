-- Buildings' own iPassan tenants (docs/architecture.md, "Many buildings").

-- The latest version of each building's iPassan connection (ipassan_connection.changed.v1): the
-- tenant and the site there, or NULL when the building uses the deployment default. A booking
-- snapshot made under a newer version waits until that version is here.
CREATE TABLE building_connections (
    building_id text        PRIMARY KEY,
    version     bigint      NOT NULL,
    tenant_key  text,
    site        text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every tenant a building was ever connected to (key: base URL and client id), with the newest
-- credentials seen for it, the client secret sealed with CONNECX__SECRETS__KEY. A visitor made in
-- a tenant is changed and revoked there, even after its building moved to another one.
CREATE TABLE tenants (
    tenant_key  text        PRIMARY KEY,
    -- contracts::IpassanConnection as JSON.
    connection  jsonb       NOT NULL,
    -- When the change that set these credentials happened: a late event does not put older ones back.
    changed_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The tenant each visitor was made in (tenants.tenant_key); NULL: the deployment default.
ALTER TABLE visitor_access ADD COLUMN tenant_key text;
