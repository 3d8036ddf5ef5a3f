//! Events and dead letters the unit tests decide and write mails about: one building in Sydney
//! (Harbour View, two managers), a visit on Tuesday 1 December 2026, 18:00–22:00 local time,
//! and a booking of the games room on Thursday 3 December 2026, 14:00–16:00.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use contracts::{
    AccessFailure, AccessSystem, BookingWindow, ConnectionHealth, DoubleBookingPolicy,
    DriftFinding, DriftKind, Envelope, Event, FacilityAccessResult, RefusedFacilityRequest,
    RefusedVisitorRequest, SaltoDrift, TimetablesExhausted, VisitorAccessResult, VisitorBooking,
};
use platform::amqp::{Headers, Message};

use crate::dead_letter::DeadLetter;

/// The bookings themselves, shared with the integration tests.
#[path = "../tests/notifier/bookings.rs"]
mod bookings;
pub use bookings::{RESIDENT, VISITOR};

pub const OPS: &str = "ops@connecx.example";
pub const MANAGERS: [&str; 2] = ["manager@harbour.example", "deputy@harbour.example"];
pub const PIN: &str = "048213";
/// The visit's window as every mail about it gives it: on the building's clock.
pub const VISIT_WINDOW: &str = "Tuesday 1 December 2026, 18:00–22:00 (Australia/Sydney)";
pub const FACILITY_WINDOW: &str = "Thursday 3 December 2026, 14:00–16:00 (Australia/Sydney)";
/// The booking every result is about, at version 3.
pub const BOOKING: Uuid = Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0001);
/// The booking that holds the games room's slot in a double booking.
pub const HOLDER: Uuid = Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0002);
pub const DEAD_LETTER: Uuid = Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0003);

pub fn utc(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, minute, 0)
        .unwrap()
}

pub fn building() -> contracts::Building {
    bookings::building(&MANAGERS, DoubleBookingPolicy::Auto)
}

/// From `starts` to `ends` (UTC), with the building's wall-clock times.
pub fn window(starts: DateTime<Utc>, ends: DateTime<Utc>) -> BookingWindow {
    let sydney = chrono_tz::Australia::Sydney;
    BookingWindow {
        starts_at: starts,
        ends_at: ends,
        local_starts_at: starts.with_timezone(&sydney).naive_local(),
        local_ends_at: ends.with_timezone(&sydney).naive_local(),
    }
}

/// 18:00–22:00 in Sydney (UTC+11 in December).
pub fn visit_window() -> BookingWindow {
    window(utc(1, 7, 0), utc(1, 11, 0))
}

/// 14:00–16:00 in Sydney.
pub fn facility_window() -> BookingWindow {
    window(utc(3, 3, 0), utc(3, 5, 0))
}

/// An envelope about [`BOOKING`] at version 3.
pub fn envelope(event: Event) -> Envelope {
    let mut envelope = Envelope::new(BOOKING, 3, event);
    envelope.occurred_at = utc(1, 0, 0);
    envelope
}

pub fn visitor_booking() -> VisitorBooking {
    bookings::visitor_booking(&MANAGERS, visit_window())
}

pub fn visit_booking_created() -> Envelope {
    envelope(Event::VisitorBookingCreated(visitor_booking()))
}

pub fn failure(needs_manager: bool) -> AccessFailure {
    AccessFailure {
        code: "visitee_has_no_access_profile".into(),
        message: "Ana Lee has no access profile in iPassan".into(),
        needs_manager,
    }
}

pub fn visit_result(make: fn(VisitorAccessResult) -> Event, pin: Option<&str>) -> Envelope {
    envelope(make(VisitorAccessResult {
        booking: visitor_booking(),
        pin: pin.map(String::from),
        failure: None,
    }))
}

pub fn failed_visit(needs_manager: bool) -> Envelope {
    envelope(Event::VisitorAccessFailed(VisitorAccessResult {
        booking: visitor_booking(),
        pin: None,
        failure: Some(failure(needs_manager)),
    }))
}

/// A result of the games room booking; a deferred one is held by [`HOLDER`], booked for 07:00–08:30
/// the same day.
pub fn facility_result(
    make: fn(FacilityAccessResult) -> Event,
    policy: DoubleBookingPolicy,
    failure: Option<AccessFailure>,
) -> Envelope {
    let mut result = FacilityAccessResult {
        booking: bookings::facility_booking(&MANAGERS, policy, facility_window()),
        held_by: None,
        held_by_window: None,
        failure,
    };
    if matches!(make(result.clone()), Event::FacilityAccessDeferred(_)) {
        result.held_by = Some(HOLDER);
        result.held_by_window = Some(window(utc(2, 20, 0), utc(2, 21, 30)));
    }
    envelope(make(result))
}

/// A facility booking booking-api refused with the 422 `code`.
pub fn refused_facility(code: &str) -> Envelope {
    envelope(Event::FacilityRequestRefused(RefusedFacilityRequest {
        building: building(),
        window: facility_window(),
        facility_id: "games-room".into(),
        facility_name: "Games room".into(),
        apartment_id: "apt-501".into(),
        booked_by: bookings::facility_booking(
            &MANAGERS,
            DoubleBookingPolicy::Auto,
            facility_window(),
        )
        .booked_by,
        failure: AccessFailure {
            code: code.into(),
            message: format!("refused: {code}"),
            needs_manager: true,
        },
    }))
}

pub fn refused_visit() -> Envelope {
    envelope(Event::VisitorRequestRefused(RefusedVisitorRequest {
        building: building(),
        window: visit_window(),
        resident_id: "ana".into(),
        resident_name: "Ana Lee".into(),
        visitor_name: "Bo Tan".into(),
        failure: AccessFailure {
            code: "ipassan_not_connected".into(),
            message: "building harbour is connected to no iPassan tenant".into(),
            needs_manager: true,
        },
    }))
}

/// The building's Salto failing since 18:00 local time; recovered that many minutes later, or
/// still down.
pub fn connection(recovered_after_minutes: Option<i64>) -> Envelope {
    let failing_since = utc(1, 7, 0);
    let health = ConnectionHealth {
        building: building(),
        system: AccessSystem::Salto,
        endpoint: "https://salto.harbour.example/".into(),
        failing_since,
        last_error: "SaltoDBGroup.Read timed out after 10s".into(),
        recovered_at: recovered_after_minutes.map(|m| failing_since + chrono::Duration::minutes(m)),
    };
    envelope(match recovered_after_minutes {
        None => Event::ConnectionDown(health),
        Some(_) => Event::ConnectionRecovered(health),
    })
}

pub fn timetables_exhausted() -> Envelope {
    envelope(Event::TimetablesExhausted(TimetablesExhausted {
        server: "https://salto.harbour.example/".into(),
        held_by_connecx: 1000,
        held_by_others: 24,
        building_id: "harbour".into(),
    }))
}

pub fn salto_drift() -> Envelope {
    envelope(Event::SaltoDriftFound(SaltoDrift {
        building: building(),
        server: "http://salto.harbour.example/".into(),
        access_level: "501-56".into(),
        findings: vec![
            DriftFinding {
                zone: "GAMES-ROOM".into(),
                kind: DriftKind::ChangedByHand,
                found: "no timetable, at any date".into(),
                expected: Some("timetable 3, 2026-12-03T00:00:00 to 2026-12-03T23:59:59".into()),
            },
            DriftFinding {
                zone: "GYM".into(),
                kind: DriftKind::UnknownPermission,
                found: "no timetable, at any date".into(),
                expected: None,
            },
        ],
    }))
}

/// ipassan-sync gave up on `event` (a body that is no event without one) with `error_kind`,
/// after two retries; [`DEAD_LETTER`] is its id.
pub fn dead_letter(error_kind: &str, event: Option<Envelope>) -> DeadLetter {
    let headers = json!({
        "x-service": "ipassan-sync",
        "x-original-queue": "ipassan-sync",
        "x-error-kind": error_kind,
        "x-error": "iPassan answered 403 Access Denied",
        "x-retry-count": 2,
        "x-first-failed-at": "2026-11-23T10:00:00+00:00",
        "x-dead-letter-id": DEAD_LETTER.to_string(),
    });
    let body = event.map_or_else(|| b"{ not an event".to_vec(), |e| e.to_json());
    DeadLetter::from_message(&message(headers, &body))
}

/// A message on `connecx.dead` with `headers` (a JSON object) and `body`, delivered once.
pub fn message(headers: serde_json::Value, body: &[u8]) -> Message {
    Message {
        body: body.to_vec(),
        routing_key: "visitor_booking.created.v1".into(),
        message_id: Some("m-1".into()),
        headers: Headers(headers.as_object().cloned().unwrap_or_default()),
        retry_count: 0,
        wait_count: 0,
        redelivered: false,
    }
}
