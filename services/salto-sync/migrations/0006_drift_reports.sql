-- What the nightly reconciliation last found changed outside connecX on each access level
-- (finding keys): only what is new is reported again.
CREATE TABLE drift_reports (
    server       text        NOT NULL,
    access_level text        NOT NULL,
    findings     jsonb       NOT NULL,
    reported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (server, access_level)
);
