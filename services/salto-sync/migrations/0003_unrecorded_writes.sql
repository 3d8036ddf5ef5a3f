-- The permissions a step is about to write to Salto, noted (and committed on their own) just
-- before the write and forgotten in the step's own transaction. A step that wrote Salto but did
-- not commit — its results could not be published, or its database connection was lost — leaves
-- them here, so the entry it left in Salto is known to be connecX's own: the next write to the
-- access level replaces or removes it, instead of taking it for a permission made by hand
-- (which would fail a rescheduled booking as `salto_permission_unknown`, or keep a cancelled
-- one's permission in Salto for ever).
CREATE TABLE unrecorded_writes (
    building_id     text        NOT NULL,
    access_level_id text        NOT NULL,
    zone_id         text        NOT NULL,
    timetable_id    integer     NOT NULL,
    period_start    timestamp   NOT NULL,
    period_end      timestamp   NOT NULL,
    noted_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, access_level_id, zone_id, timetable_id, period_start, period_end)
);
