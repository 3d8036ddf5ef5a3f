-- Dead letters, stored whole so they can be shown, replayed or discarded later.
CREATE TABLE dead_letters (
    id               uuid PRIMARY KEY,
    received_at      timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'discarded')),
    status_changed_at timestamptz,
    service          text NOT NULL,
    original_queue   text NOT NULL,
    routing_key      text NOT NULL,
    error_kind       text NOT NULL,
    error            text NOT NULL,
    retry_count      bigint NOT NULL,
    first_failed_at  timestamptz,
    event_type       text,
    booking_id       uuid,
    building_id      text,
    message_id       text,
    headers          jsonb NOT NULL,
    body             bytea NOT NULL
);
CREATE INDEX dead_letters_open ON dead_letters (received_at) WHERE status = 'open';

-- One row per (thing mailed about, recipient): a redelivered message does not mail twice.
CREATE TABLE sent_mail (
    dedup_key   text NOT NULL,
    recipient   text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('sent', 'rejected')),
    detail      text,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dedup_key, recipient)
);
