-- The latest version of each booking this worker has seen (the version rule, DESIGN §5).
CREATE TABLE booking_snapshots (
    booking_id  uuid PRIMARY KEY,
    version     bigint NOT NULL,
    event_type  text NOT NULL,
    envelope    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
