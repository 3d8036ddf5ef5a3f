-- The newest version of each booking the notifier has mailed about: a result for an older
-- version arriving late (e.g. "granted" after "revoked") must not mail a stale PIN.
CREATE TABLE booking_snapshots (
    booking_id  uuid PRIMARY KEY,
    version     bigint NOT NULL,
    event_type  text NOT NULL,
    envelope    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
