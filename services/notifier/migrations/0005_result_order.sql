-- Results of one version are ordered by when they happened (a facility booking's `deferred`,
-- then its `granted`): the later one wins, and no mail follows one of a newer result.
ALTER TABLE booking_snapshots ADD COLUMN occurred_at timestamptz;
UPDATE booking_snapshots SET occurred_at = (envelope ->> 'occurred_at')::timestamptz;
