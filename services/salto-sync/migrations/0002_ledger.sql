-- The permission ledger (DESIGN §8). The ledger, not Salto, decides who holds an
-- (access level, zone) slot; Salto is then made to match it.

-- One row per (building, access level, zone): the booking whose permission Salto holds, with the
-- Period and Timetable it was written with and the IDs it was granted under (a later change of an
-- apartment's or a facility's Access Control ID does not move an existing grant).
CREATE TABLE permissions (
    building_id     text        NOT NULL,
    access_level_id text        NOT NULL,
    zone_id         text        NOT NULL,
    booking_id      uuid        NOT NULL UNIQUE,
    -- The booking version this grant was made for.
    version         bigint      NOT NULL,
    local_date      date        NOT NULL,
    starts_secs     integer     NOT NULL,
    ends_secs       integer     NOT NULL,
    timetable_id    integer     NOT NULL,
    period_start    timestamp   NOT NULL,
    period_end      timestamp   NOT NULL,
    granted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, access_level_id, zone_id)
);
-- The nightly clearing reads only the expired ones.
CREATE INDEX permissions_by_date ON permissions (building_id, local_date);

-- Bookings waiting for a held slot (double-booking policy `auto`), first come first served.
CREATE TABLE waiting_bookings (
    booking_id      uuid        PRIMARY KEY,
    building_id     text        NOT NULL,
    access_level_id text        NOT NULL,
    zone_id         text        NOT NULL,
    version         bigint      NOT NULL,
    local_date      date        NOT NULL,
    starts_secs     integer     NOT NULL,
    ends_secs       integer     NOT NULL,
    queued_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX waiting_by_slot ON waiting_bookings (building_id, access_level_id, zone_id, queued_at);
CREATE INDEX waiting_by_date ON waiting_bookings (building_id, local_date);

-- The last outcome reached for each booking and the version it was for: a version acted on once
-- is never acted on again (redeliveries change nothing and send nothing twice).
CREATE TABLE booking_outcomes (
    booking_id uuid        PRIMARY KEY,
    version    bigint      NOT NULL,
    outcome    text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Timetables created in Salto, keyed by their interval set and reused. A row without a key marks
-- an ID Salto already used for a timetable of someone else's.
CREATE TABLE timetables (
    timetable_id integer     PRIMARY KEY CHECK (timetable_id BETWEEN 1 AND 1024),
    interval_key text        UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Buildings seen in bookings, with their time zone, for the nightly clearing.
CREATE TABLE buildings (
    building_id text        PRIMARY KEY,
    timezone    text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One clearing per building per local date, whichever replica runs it.
CREATE TABLE cleaner_runs (
    building_id text        NOT NULL,
    local_date  date        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    expired     integer     NOT NULL DEFAULT 0,
    granted     integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (building_id, local_date)
);
