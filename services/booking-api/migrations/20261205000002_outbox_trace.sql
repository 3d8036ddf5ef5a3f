-- The trace of the request that stored the event (W3C trace id, 32 hex digits): the relay sends
-- it on as the message's `traceparent`, so the workers' logs carry the same `trace_id`.
ALTER TABLE outbox ADD COLUMN trace_id text;
