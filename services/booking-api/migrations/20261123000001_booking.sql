-- booking-api's schema (`booking`; the pool's search_path points here).
-- Buildings, apartments, facilities and residents are keyed by connecX's own ids, scoped to their
-- building, so one building's manager can never read or overwrite another building's records.

CREATE TABLE buildings (
    id                    text PRIMARY KEY,
    name                  text NOT NULL,
    timezone              text NOT NULL,
    manager_emails        text[] NOT NULL DEFAULT '{}',
    ipassan_site          text,
    double_booking_policy text NOT NULL DEFAULT 'auto'
                          CHECK (double_booking_policy IN ('auto', 'manual')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE apartments (
    building_id       text NOT NULL REFERENCES buildings (id),
    id                text NOT NULL,
    -- Salto access level ExtID ("Access Control ID"); facility bookings need it.
    access_control_id text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, id)
);

CREATE TABLE facilities (
    building_id                text NOT NULL REFERENCES buildings (id),
    id                         text NOT NULL,
    name                       text NOT NULL,
    -- Salto Zone ExtID ("Access Control Facility ID"); bookings need it.
    access_control_facility_id text,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, id)
);

CREATE TABLE residents (
    building_id       text NOT NULL,
    id                text NOT NULL,
    name              text NOT NULL,
    email             text NOT NULL,
    apartment_id      text NOT NULL,
    -- The iPassan person (visitee) this resident is synced to; visitor access needs it.
    ipassan_person_id text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, id),
    FOREIGN KEY (building_id, apartment_id) REFERENCES apartments (building_id, id)
);

CREATE TABLE visitor_bookings (
    id                 uuid PRIMARY KEY,
    building_id        text NOT NULL REFERENCES buildings (id),
    resident_id        text NOT NULL,
    visitor_name       text NOT NULL,
    visitor_email      text NOT NULL,
    provide_access     boolean NOT NULL,
    starts_at          timestamptz NOT NULL,
    ends_at            timestamptz NOT NULL,
    state              text NOT NULL CHECK (state IN ('booked', 'cancelled')),
    -- +1 with every change; events carry it.
    version            bigint NOT NULL CHECK (version >= 1),
    access_status      text NOT NULL,
    access_pin         text,
    access_reason_code text,
    access_reason      text,
    -- The booking version and time of the result last applied (the version rule).
    access_version     bigint NOT NULL DEFAULT 0,
    access_occurred_at timestamptz,
    booked_by_user_id  text NOT NULL,
    booked_by_role     text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (building_id, resident_id) REFERENCES residents (building_id, id),
    CHECK (ends_at > starts_at)
);

CREATE INDEX visitor_bookings_by_resident ON visitor_bookings (building_id, resident_id, starts_at);
CREATE INDEX visitor_bookings_by_building ON visitor_bookings (building_id, starts_at);

CREATE TABLE facility_bookings (
    id                 uuid PRIMARY KEY,
    building_id        text NOT NULL REFERENCES buildings (id),
    facility_id        text NOT NULL,
    apartment_id       text NOT NULL,
    -- The Salto IDs the latest event carried (used again when a cancellation finds them unset).
    zone_id            text NOT NULL,
    access_level_id    text NOT NULL,
    starts_at          timestamptz NOT NULL,
    ends_at            timestamptz NOT NULL,
    state              text NOT NULL CHECK (state IN ('booked', 'cancelled')),
    version            bigint NOT NULL CHECK (version >= 1),
    access_status      text NOT NULL,
    access_reason_code text,
    access_reason      text,
    access_held_by     uuid,
    access_version     bigint NOT NULL DEFAULT 0,
    access_occurred_at timestamptz,
    booked_by_user_id  text NOT NULL,
    booked_by_role     text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (building_id, facility_id) REFERENCES facilities (building_id, id),
    FOREIGN KEY (building_id, apartment_id) REFERENCES apartments (building_id, id),
    CHECK (ends_at > starts_at)
);

CREATE INDEX facility_bookings_by_apartment ON facility_bookings (building_id, apartment_id, starts_at);
CREATE INDEX facility_bookings_by_building ON facility_bookings (building_id, starts_at);

-- One row per (caller, Idempotency-Key) for 24 hours.
CREATE TABLE idempotency_keys (
    building_id  text NOT NULL,
    user_id      text NOT NULL,
    key          text NOT NULL,
    -- sha256 of method, path and the canonical JSON body.
    request_hash text NOT NULL,
    booking_kind text NOT NULL CHECK (booking_kind IN ('visitor', 'facility')),
    booking_id   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (building_id, user_id, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- The transactional outbox: written in the same transaction as the change it announces.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    booking_id      uuid NOT NULL,
    event_type      text NOT NULL,
    envelope        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    -- A message-specific refusal (unroutable, nacked) is retried from this time on.
    next_attempt_at timestamptz,
    -- A row that cannot be decoded any more is set aside (and logged), never dropped.
    parked_at       timestamptz,
    sent_at         timestamptz
);

CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_unsent_by_booking ON outbox (booking_id, id) WHERE sent_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
