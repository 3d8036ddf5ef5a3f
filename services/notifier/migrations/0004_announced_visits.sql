-- Visits whose visitor was sent a code: only those visitors are told of a cancellation (a visit
-- cancelled before access was ever given was never announced to the visitor).
CREATE TABLE announced_visits (
    booking_id  uuid PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now()
);
