-- Managers are told when a facility booking is refused because an Access Control ID is missing
-- (src/refusals.rs): once per missing ID per building-local day, whoever tries how often.
CREATE TABLE refusal_alerts (
    building_id text        NOT NULL,
    code        text        NOT NULL,
    -- The facility or apartment that lacks the ID.
    subject_id  text        NOT NULL,
    local_date  date        NOT NULL,
    -- The refused request the email quotes.
    reference   uuid        NOT NULL,
    alerted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, code, subject_id, local_date)
);
