-- Salto state per server (docs/architecture.md, "Many buildings"): each building reaches its own
-- SHIP endpoint, or the deployment default. A Salto server holds one permission per (access
-- level, zone) whichever building asked, so the ledger, its locks and the timetable pool are
-- keyed by the server (its normalized SHIP URL), not by the building.
--
-- Rows written before this migration all went to the deployment default; they get the empty
-- server here, and the service fills in the default's key at its next start.

-- The latest version of each building's Salto connection (salto_connection.changed.v1): its
-- server, or NULL when the building uses the deployment default.
CREATE TABLE building_connections (
    building_id text        PRIMARY KEY,
    version     bigint      NOT NULL,
    server      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every server a building was ever connected to, with the newest settings seen for it (secrets
-- sealed with CONNECX__SECRETS__KEY): what was granted there is removed there, even after the
-- building moved on.
CREATE TABLE salto_servers (
    server      text        PRIMARY KEY,
    -- contracts::SaltoConnection as JSON.
    connection  jsonb       NOT NULL,
    -- When the change that set these settings happened: a late event does not put older ones back.
    changed_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE permissions ADD COLUMN server text NOT NULL DEFAULT '';
ALTER TABLE permissions DROP CONSTRAINT permissions_pkey;
ALTER TABLE permissions ADD PRIMARY KEY (server, access_level_id, zone_id);
CREATE INDEX permissions_by_timetable ON permissions (server, timetable_id);

ALTER TABLE waiting_bookings ADD COLUMN server text NOT NULL DEFAULT '';
DROP INDEX waiting_by_slot;
CREATE INDEX waiting_by_slot ON waiting_bookings (server, access_level_id, zone_id, queued_at);

ALTER TABLE unrecorded_writes ADD COLUMN server text NOT NULL DEFAULT '';
ALTER TABLE unrecorded_writes DROP CONSTRAINT unrecorded_writes_pkey;
-- An access level belongs to a server, not a building.
ALTER TABLE unrecorded_writes DROP COLUMN building_id;
ALTER TABLE unrecorded_writes
    ADD PRIMARY KEY (server, access_level_id, zone_id, timetable_id, period_start, period_end);

-- One pool of timetable IDs (1..1024) per server. `in_use_checked_at`: when a delete was last
-- refused because a permission connecX does not own still uses the timetable.
ALTER TABLE timetables ADD COLUMN server text NOT NULL DEFAULT '';
ALTER TABLE timetables DROP CONSTRAINT timetables_pkey;
ALTER TABLE timetables DROP CONSTRAINT timetables_interval_key_key;
ALTER TABLE timetables ADD PRIMARY KEY (server, timetable_id);
ALTER TABLE timetables ADD CONSTRAINT timetables_interval_key UNIQUE (server, interval_key);
ALTER TABLE timetables ADD COLUMN delete_refused_at timestamptz;

-- One alert to ops per server and exhaustion of its timetable pool.
CREATE TABLE pool_alerts (
    server      text        PRIMARY KEY,
    alerted_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when an ID was freed again; the next exhaustion alerts again.
    cleared_at  timestamptz
);
