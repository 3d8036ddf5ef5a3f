-- A building's own connection to iPassan or Salto, set by a connecX operator (src/connections.rs).
-- No foreign key to buildings: an operator may connect a building before its manager registers it.
CREATE TABLE building_connections (
    building_id text        NOT NULL,
    system      text        NOT NULL CHECK (system IN ('ipassan', 'salto')),
    -- +1 with every PUT and DELETE; the change's event and every later booking snapshot carry it.
    version     bigint      NOT NULL CHECK (version >= 1),
    -- contracts::IpassanConnection / SaltoConnection as JSON, every secret sealed with
    -- CONNECX__SECRETS__KEY. NULL after a DELETE: the building uses the deployment default.
    settings    jsonb,
    updated_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, system)
);
