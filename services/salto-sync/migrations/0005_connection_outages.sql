-- Outages of a building's Salto announced to its managers (platform::outages): one open row per
-- building while it lasts, closed when a call works again. One mail per outage, whichever
-- replica notices.
CREATE TABLE connection_outages (
    id            bigserial   PRIMARY KEY,
    building_id   text        NOT NULL,
    endpoint      text        NOT NULL,
    failing_since timestamptz NOT NULL,
    last_error    text        NOT NULL,
    announced_at  timestamptz NOT NULL DEFAULT now(),
    recovered_at  timestamptz
);
CREATE UNIQUE INDEX connection_outages_open ON connection_outages (building_id)
    WHERE recovered_at IS NULL;
