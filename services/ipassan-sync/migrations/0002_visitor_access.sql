-- What this worker last did for each visitor booking (DESIGN §5, §7): the version it last applied,
-- the iPassan visitor it made and the result it last published. A redelivered or duplicate event
-- then changes nothing and publishes nothing twice, and a reschedule knows whether to say
-- `granted` (first time) or `updated` (the window changed).
CREATE TABLE visitor_access (
    booking_id       uuid PRIMARY KEY,
    applied_version  bigint NOT NULL,
    site             text,
    visitor_id       text,
    -- The last result published: none | granted | updated | revoked | failed.
    published        text NOT NULL
                     CHECK (published IN ('none', 'granted', 'updated', 'revoked', 'failed')),
    -- The window (site-local) the last granted/updated result announced.
    valid_from       timestamp,
    valid_to         timestamp,
    -- The reason code of the last failed result.
    failure_code     text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
