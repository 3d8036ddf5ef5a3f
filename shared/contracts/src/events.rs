//! Event envelope and payloads (docs/architecture.md, "The version rule").
//!
//! An event is `{event_id, type, occurred_at, booking_id, version, data}`. `type` is also the AMQP
//! routing key, and ends in its schema version (`.v1`): a change that breaks a consumer gets a new
//! type rather than a new meaning for an old one. `data` is a snapshot of everything consumers need.
//!
//! `version` counts the changes of one booking. Consumers converge to the latest version they have
//! seen and skip older ones, so messages may arrive late, twice, or out of order.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::connections::{
    AccessSystem, ConnectionVersions, IpassanConnectionChange, SaltoConnectionChange,
};

/// One message on `connecx.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub booking_id: Uuid,
    /// The booking's version this event describes (starts at 1, +1 per change).
    pub version: i64,
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// A fresh envelope for `event`, stamped now.
    pub fn new(booking_id: Uuid, version: i64, event: Event) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            occurred_at: Utc::now(),
            booking_id,
            version,
            event,
        }
    }

    /// The routing key (= the event's `type`).
    pub fn routing_key(&self) -> &'static str {
        self.event.event_type()
    }

    /// The building the event belongs to, for routing alerts to its managers; `None` for events
    /// about something other than one building (a connection change names only its building's
    /// id, a Salto server serves several).
    pub fn building(&self) -> Option<&Building> {
        Some(match &self.event {
            Event::VisitorBookingCreated(b)
            | Event::VisitorBookingRescheduled(b)
            | Event::VisitorBookingCancelled(b) => &b.building,
            Event::FacilityBookingCreated(b)
            | Event::FacilityBookingRescheduled(b)
            | Event::FacilityBookingCancelled(b) => &b.building,
            Event::VisitorAccessGranted(r)
            | Event::VisitorAccessUpdated(r)
            | Event::VisitorAccessRevoked(r)
            | Event::VisitorAccessFailed(r) => &r.booking.building,
            Event::FacilityAccessGranted(r)
            | Event::FacilityAccessDeferred(r)
            | Event::FacilityAccessRevoked(r)
            | Event::FacilityAccessExpired(r)
            | Event::FacilityAccessFailed(r) => &r.booking.building,
            Event::FacilityRequestRefused(r) => &r.building,
            Event::VisitorRequestRefused(r) => &r.building,
            Event::ConnectionDown(h) | Event::ConnectionRecovered(h) => &h.building,
            Event::IpassanConnectionChanged(_)
            | Event::SaltoConnectionChanged(_)
            | Event::TimetablesExhausted(_) => return None,
            Event::SaltoDriftFound(d) => &d.building,
        })
    }

    /// The id of the building the event belongs to, when it belongs to one.
    pub fn building_id(&self) -> Option<&str> {
        match &self.event {
            Event::IpassanConnectionChanged(c) => Some(&c.building_id),
            Event::SaltoConnectionChanged(c) => Some(&c.building_id),
            Event::TimetablesExhausted(t) => Some(&t.building_id),
            _ => self.building().map(|b| b.id.as_str()),
        }
    }

    /// Encodes the envelope as the JSON body of an AMQP message.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail: every map key is a string.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes an AMQP message body.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// The booking events (booking-api → the workers) as a pattern, for a service that does not
/// act on them: `matches!(event, contracts::booking_events!())`. A match that uses it still names
/// every other event type, so a new one has to be decided wherever events are matched.
#[macro_export]
macro_rules! booking_events {
    () => {
        $crate::Event::VisitorBookingCreated(_)
            | $crate::Event::VisitorBookingRescheduled(_)
            | $crate::Event::VisitorBookingCancelled(_)
            | $crate::Event::FacilityBookingCreated(_)
            | $crate::Event::FacilityBookingRescheduled(_)
            | $crate::Event::FacilityBookingCancelled(_)
    };
}

/// Every event type, with its payload. The serde tag is the wire `type` and routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "visitor_booking.created.v1")]
    VisitorBookingCreated(VisitorBooking),
    #[serde(rename = "visitor_booking.rescheduled.v1")]
    VisitorBookingRescheduled(VisitorBooking),
    #[serde(rename = "visitor_booking.cancelled.v1")]
    VisitorBookingCancelled(VisitorBooking),

    #[serde(rename = "facility_booking.created.v1")]
    FacilityBookingCreated(FacilityBooking),
    #[serde(rename = "facility_booking.rescheduled.v1")]
    FacilityBookingRescheduled(FacilityBooking),
    #[serde(rename = "facility_booking.cancelled.v1")]
    FacilityBookingCancelled(FacilityBooking),

    #[serde(rename = "visitor_access.granted.v1")]
    VisitorAccessGranted(VisitorAccessResult),
    #[serde(rename = "visitor_access.updated.v1")]
    VisitorAccessUpdated(VisitorAccessResult),
    #[serde(rename = "visitor_access.revoked.v1")]
    VisitorAccessRevoked(VisitorAccessResult),
    #[serde(rename = "visitor_access.failed.v1")]
    VisitorAccessFailed(VisitorAccessResult),

    #[serde(rename = "facility_access.granted.v1")]
    FacilityAccessGranted(FacilityAccessResult),
    #[serde(rename = "facility_access.deferred.v1")]
    FacilityAccessDeferred(FacilityAccessResult),
    #[serde(rename = "facility_access.revoked.v1")]
    FacilityAccessRevoked(FacilityAccessResult),
    #[serde(rename = "facility_access.expired.v1")]
    FacilityAccessExpired(FacilityAccessResult),
    #[serde(rename = "facility_access.failed.v1")]
    FacilityAccessFailed(FacilityAccessResult),

    /// booking-api refused a facility booking that a manager must make possible first.
    #[serde(rename = "facility_request.refused.v1")]
    FacilityRequestRefused(RefusedFacilityRequest),
    /// booking-api refused a visitor booking with access that a person must make possible first
    /// (the building is connected to no iPassan).
    #[serde(rename = "visitor_request.refused.v1")]
    VisitorRequestRefused(RefusedVisitorRequest),

    /// An operator changed a building's own iPassan connection (booking-api → ipassan-sync).
    #[serde(rename = "ipassan_connection.changed.v1")]
    IpassanConnectionChanged(IpassanConnectionChange),
    /// An operator changed a building's own Salto connection (booking-api → salto-sync).
    #[serde(rename = "salto_connection.changed.v1")]
    SaltoConnectionChanged(SaltoConnectionChange),

    /// A building's iPassan or Salto has been failing for longer than the alert threshold.
    #[serde(rename = "connection.down.v1")]
    ConnectionDown(ConnectionHealth),
    /// ... and works again.
    #[serde(rename = "connection.recovered.v1")]
    ConnectionRecovered(ConnectionHealth),
    /// Every timetable ID of a Salto server is in use: bookings wait, ops must look.
    #[serde(rename = "salto_server.timetables_exhausted.v1")]
    TimetablesExhausted(TimetablesExhausted),
    /// The nightly reconciliation found an access level's permissions changed outside connecX.
    #[serde(rename = "salto_server.drift_found.v1")]
    SaltoDriftFound(SaltoDrift),
}

impl Event {
    /// The wire `type`, which is also the routing key.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::VisitorBookingCreated(_) => "visitor_booking.created.v1",
            Event::VisitorBookingRescheduled(_) => "visitor_booking.rescheduled.v1",
            Event::VisitorBookingCancelled(_) => "visitor_booking.cancelled.v1",
            Event::FacilityBookingCreated(_) => "facility_booking.created.v1",
            Event::FacilityBookingRescheduled(_) => "facility_booking.rescheduled.v1",
            Event::FacilityBookingCancelled(_) => "facility_booking.cancelled.v1",
            Event::VisitorAccessGranted(_) => "visitor_access.granted.v1",
            Event::VisitorAccessUpdated(_) => "visitor_access.updated.v1",
            Event::VisitorAccessRevoked(_) => "visitor_access.revoked.v1",
            Event::VisitorAccessFailed(_) => "visitor_access.failed.v1",
            Event::FacilityAccessGranted(_) => "facility_access.granted.v1",
            Event::FacilityAccessDeferred(_) => "facility_access.deferred.v1",
            Event::FacilityAccessRevoked(_) => "facility_access.revoked.v1",
            Event::FacilityAccessExpired(_) => "facility_access.expired.v1",
            Event::FacilityAccessFailed(_) => "facility_access.failed.v1",
            Event::FacilityRequestRefused(_) => "facility_request.refused.v1",
            Event::VisitorRequestRefused(_) => "visitor_request.refused.v1",
            Event::IpassanConnectionChanged(_) => "ipassan_connection.changed.v1",
            Event::SaltoConnectionChanged(_) => "salto_connection.changed.v1",
            Event::ConnectionDown(_) => "connection.down.v1",
            Event::ConnectionRecovered(_) => "connection.recovered.v1",
            Event::TimetablesExhausted(_) => "salto_server.timetables_exhausted.v1",
            Event::SaltoDriftFound(_) => "salto_server.drift_found.v1",
        }
    }

    /// Every wire type this crate knows, for tests and documentation.
    pub const ALL_TYPES: [&'static str; 23] = [
        "visitor_booking.created.v1",
        "visitor_booking.rescheduled.v1",
        "visitor_booking.cancelled.v1",
        "facility_booking.created.v1",
        "facility_booking.rescheduled.v1",
        "facility_booking.cancelled.v1",
        "visitor_access.granted.v1",
        "visitor_access.updated.v1",
        "visitor_access.revoked.v1",
        "visitor_access.failed.v1",
        "facility_access.granted.v1",
        "facility_access.deferred.v1",
        "facility_access.revoked.v1",
        "facility_access.expired.v1",
        "facility_access.failed.v1",
        "facility_request.refused.v1",
        "visitor_request.refused.v1",
        "ipassan_connection.changed.v1",
        "salto_connection.changed.v1",
        "connection.down.v1",
        "connection.recovered.v1",
        "salto_server.timetables_exhausted.v1",
        "salto_server.drift_found.v1",
    ];
}

/// The building a booking belongs to, as the consumers need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Building {
    pub id: String,
    pub name: String,
    /// IANA time zone name, e.g. `Australia/Sydney`.
    pub timezone: String,
    /// Who is told when a person must act. May be empty: alerts then go to the ops address.
    pub manager_emails: Vec<String>,
    /// The iPassan site this building maps to, when it has one.
    pub ipassan_site: Option<String>,
    pub double_booking_policy: DoubleBookingPolicy,
    /// The versions of the building's own iPassan and Salto connections this snapshot was made
    /// under (0 = the deployment default). Added after v1 shipped, hence defaulted on the wire.
    #[serde(default)]
    pub connection_versions: ConnectionVersions,
}

/// What happens to a second facility booking while Salto already holds the slot (docs/architecture.md, "Facility bookings and the ledger").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoubleBookingPolicy {
    /// The booking waits and is granted by itself when the slot frees.
    #[default]
    Auto,
    /// The manager enables it by hand.
    Manual,
}

/// A booking's window, in UTC and in the building's wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingWindow {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// `starts_at` on the building's clock.
    pub local_starts_at: NaiveDateTime,
    /// `ends_at` on the building's clock.
    pub local_ends_at: NaiveDateTime,
}

/// Whether the booking is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingState {
    Booked,
    Cancelled,
}

/// The resident who made a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resident {
    pub id: String,
    pub name: String,
    pub email: String,
    pub apartment_id: String,
    /// The iPassan person this resident is synced to (the visitee), if any.
    pub ipassan_person_id: Option<String>,
}

/// The visitor a resident expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visitor {
    pub name: String,
    pub email: String,
}

/// Snapshot carried by `visitor_booking.*` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorBooking {
    pub building: Building,
    pub window: BookingWindow,
    pub resident: Resident,
    pub visitor: Visitor,
    /// "Provide building and apartment access" was ticked.
    pub provide_access: bool,
    pub state: BookingState,
}

/// A facility (games room, gym …) as Salto knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facility {
    pub id: String,
    pub name: String,
    /// Salto `ExtZoneID` ("Access Control Facility ID"). booking-api refuses bookings without it.
    pub zone_id: String,
}

/// An apartment as Salto knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Apartment {
    pub id: String,
    /// Salto `ExtGroupID` of the apartment's User Access Level ("Access Control ID").
    pub access_level_id: String,
}

/// Who asked for a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookedBy {
    pub user_id: String,
    pub role: Role,
    /// Name and email when the booker is a known resident (managers are reached via the building).
    pub name: Option<String>,
    pub email: Option<String>,
}

/// The role a connecX user acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Resident,
    Manager,
    /// connecX platform staff: connect buildings to their systems; never book.
    Operator,
}

/// Snapshot carried by `facility_booking.*` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacilityBooking {
    pub building: Building,
    pub window: BookingWindow,
    pub facility: Facility,
    pub apartment: Apartment,
    pub booked_by: BookedBy,
    pub state: BookingState,
}

/// Why access could not be given, in words a resident or a manager can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessFailure {
    /// Stable machine code, e.g. `visitee_not_found`, `double_booking`, `salto_not_found`.
    pub code: String,
    /// Human text (also shown to the manager).
    pub message: String,
    /// A person (the building manager) must act for access to be given.
    pub needs_manager: bool,
}

/// Payload of `visitor_access.*` events: the snapshot acted on and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorAccessResult {
    pub booking: VisitorBooking,
    /// The PIN (granted / updated only).
    pub pin: Option<String>,
    pub failure: Option<AccessFailure>,
}

/// Payload of `facility_access.*` events: the snapshot acted on and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacilityAccessResult {
    pub booking: FacilityBooking,
    /// For `deferred`: the booking that holds the (access level, zone) slot.
    pub held_by: Option<Uuid>,
    /// For `deferred`: the holding booking's window, so the manager sees both bookings' dates.
    /// Added after v1 shipped, hence optional on the wire (older producers leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by_window: Option<BookingWindow>,
    pub failure: Option<AccessFailure>,
}

/// Payload of `facility_request.refused.v1`: a facility booking booking-api refused at once
/// because something only a manager can set is missing (docs/architecture.md, "Services and what each owns": a facility or apartment
/// without its Access Control ID). Nothing was stored; the envelope's `booking_id` is the id the
/// booking would have had, quoted to the manager as a reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedFacilityRequest {
    pub building: Building,
    /// The window asked for.
    pub window: BookingWindow,
    pub facility_id: String,
    pub facility_name: String,
    pub apartment_id: String,
    pub booked_by: BookedBy,
    /// `code` is the 422's code, e.g. `facility_access_control_id_missing`; `message` says what
    /// the manager must set.
    pub failure: AccessFailure,
}

/// Payload of `visitor_request.refused.v1`: a visitor booking with access booking-api refused at
/// once because something only a person can set up is missing (the building is connected to no
/// iPassan). Nothing was stored; the envelope's `booking_id` is the id the booking would have had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedVisitorRequest {
    pub building: Building,
    pub window: BookingWindow,
    pub resident_id: String,
    pub resident_name: String,
    pub visitor_name: String,
    /// `code` is the 422's code, e.g. `ipassan_not_connected`.
    pub failure: AccessFailure,
}

/// Payload of `connection.down.v1` and `connection.recovered.v1`: one building's iPassan or Salto,
/// as the worker that uses it sees it. One event per outage and building, whatever the number
/// of bookings waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionHealth {
    pub building: Building,
    pub system: AccessSystem,
    /// Where the system is reached: its URL without credentials.
    pub endpoint: String,
    /// When the calls began to fail.
    pub failing_since: DateTime<Utc>,
    /// The last failure, in words.
    pub last_error: String,
    /// For `recovered`: when a call worked again.
    pub recovered_at: Option<DateTime<Utc>>,
}

/// Payload of `salto_server.timetables_exhausted.v1`: a Salto server has no free timetable ID
/// left. Bookings that need a new timetable wait (they are retried) until one frees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimetablesExhausted {
    /// The SHIP endpoint (URL without credentials).
    pub server: String,
    /// Timetable IDs connecX holds on the server, and those someone else does.
    pub held_by_connecx: u32,
    pub held_by_others: u32,
    /// The building whose booking found the pool empty.
    pub building_id: String,
}

/// Payload of `salto_server.drift_found.v1` (code `salto_drift`): the nightly reconciliation
/// found an access level's permissions in Salto changed outside connecX. Sent once for what is
/// new; what stays as it was is not reported again each night.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaltoDrift {
    /// The building whose managers are told.
    pub building: Building,
    /// The SHIP endpoint (URL without credentials).
    pub server: String,
    /// The access level (the apartment's `ExtGroupID`).
    pub access_level: String,
    pub findings: Vec<DriftFinding>,
}

/// One thing found on an access level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftFinding {
    pub zone: String,
    pub kind: DriftKind,
    /// What Salto held, in words (`none` when nothing).
    pub found: String,
    /// What connecX granted, in words, when it granted something there.
    pub expected: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// A permission connecX granted was changed or removed by hand; connecX put it back.
    ChangedByHand,
    /// A permission on a zone connecX manages that no booking holds; left as it is.
    UnknownPermission,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn building() -> Building {
        Building {
            id: "b-1".into(),
            name: "Harbour View".into(),
            timezone: "Australia/Sydney".into(),
            manager_emails: vec!["manager@example.com".into()],
            ipassan_site: Some("site-1".into()),
            double_booking_policy: DoubleBookingPolicy::Auto,
            connection_versions: ConnectionVersions {
                ipassan: 2,
                salto: 0,
            },
        }
    }

    fn window() -> BookingWindow {
        BookingWindow {
            starts_at: Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap(),
            ends_at: Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).unwrap(),
            local_starts_at: NaiveDateTime::parse_from_str(
                "2026-12-01T18:00:00",
                "%Y-%m-%dT%H:%M:%S",
            )
            .unwrap(),
            local_ends_at: NaiveDateTime::parse_from_str(
                "2026-12-01T22:00:00",
                "%Y-%m-%dT%H:%M:%S",
            )
            .unwrap(),
        }
    }

    fn visitor_booking() -> VisitorBooking {
        VisitorBooking {
            building: building(),
            window: window(),
            resident: Resident {
                id: "r-1".into(),
                name: "Ana Lee".into(),
                email: "ana@example.com".into(),
                apartment_id: "a-501".into(),
                ipassan_person_id: Some("p-123".into()),
            },
            visitor: Visitor {
                name: "Bo Tan".into(),
                email: "bo@example.com".into(),
            },
            provide_access: true,
            state: BookingState::Booked,
        }
    }

    fn facility_booking() -> FacilityBooking {
        FacilityBooking {
            building: building(),
            window: window(),
            facility: Facility {
                id: "f-1".into(),
                name: "Games room".into(),
                zone_id: "GAMES-ROOM".into(),
            },
            apartment: Apartment {
                id: "a-501".into(),
                access_level_id: "501-56".into(),
            },
            booked_by: BookedBy {
                user_id: "r-1".into(),
                role: Role::Resident,
                name: None,
                email: None,
            },
            state: BookingState::Booked,
        }
    }

    fn one_of_each() -> Vec<Event> {
        let v = visitor_booking;
        let f = facility_booking;
        let vr = |pin: Option<&str>| VisitorAccessResult {
            booking: v(),
            pin: pin.map(String::from),
            failure: None,
        };
        let fr = || FacilityAccessResult {
            booking: f(),
            held_by: Some(Uuid::nil()),
            held_by_window: Some(window()),
            failure: Some(AccessFailure {
                code: "double_booking".into(),
                message: "held".into(),
                needs_manager: false,
            }),
        };
        vec![
            Event::VisitorBookingCreated(v()),
            Event::VisitorBookingRescheduled(v()),
            Event::VisitorBookingCancelled(v()),
            Event::FacilityBookingCreated(f()),
            Event::FacilityBookingRescheduled(f()),
            Event::FacilityBookingCancelled(f()),
            Event::VisitorAccessGranted(vr(Some("012345"))),
            Event::VisitorAccessUpdated(vr(Some("012345"))),
            Event::VisitorAccessRevoked(vr(None)),
            Event::VisitorAccessFailed(vr(None)),
            Event::FacilityAccessGranted(fr()),
            Event::FacilityAccessDeferred(fr()),
            Event::FacilityAccessRevoked(fr()),
            Event::FacilityAccessExpired(fr()),
            Event::FacilityAccessFailed(fr()),
            Event::FacilityRequestRefused(RefusedFacilityRequest {
                building: building(),
                window: window(),
                facility_id: "f-1".into(),
                facility_name: "Games room".into(),
                apartment_id: "a-501".into(),
                booked_by: f().booked_by,
                failure: AccessFailure {
                    code: "facility_access_control_id_missing".into(),
                    message: "set it".into(),
                    needs_manager: true,
                },
            }),
            Event::VisitorRequestRefused(RefusedVisitorRequest {
                building: building(),
                window: window(),
                resident_id: "r-1".into(),
                resident_name: "Ana Lee".into(),
                visitor_name: "Bo Tan".into(),
                failure: AccessFailure {
                    code: "ipassan_not_connected".into(),
                    message: "connect it".into(),
                    needs_manager: true,
                },
            }),
            Event::IpassanConnectionChanged(IpassanConnectionChange {
                building_id: "b-1".into(),
                connection: Some(crate::IpassanConnection {
                    base_url: "https://tenant.ipassan.example".into(),
                    client_id: "connecx".into(),
                    client_secret: crate::SealedSecret("cxs1.ab12cd34.eA".into()),
                    site: "site-1".into(),
                }),
            }),
            Event::SaltoConnectionChanged(SaltoConnectionChange {
                building_id: "b-1".into(),
                connection: None,
            }),
            Event::ConnectionDown(health()),
            Event::ConnectionRecovered(ConnectionHealth {
                recovered_at: Some(Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap()),
                ..health()
            }),
            Event::TimetablesExhausted(TimetablesExhausted {
                server: "http://salto.example/".into(),
                held_by_connecx: 1000,
                held_by_others: 24,
                building_id: "b-1".into(),
            }),
            Event::SaltoDriftFound(SaltoDrift {
                building: building(),
                server: "http://salto.example/".into(),
                access_level: "501-56".into(),
                findings: vec![DriftFinding {
                    zone: "GYM".into(),
                    kind: DriftKind::UnknownPermission,
                    found: "always".into(),
                    expected: None,
                }],
            }),
        ]
    }

    fn health() -> ConnectionHealth {
        ConnectionHealth {
            building: building(),
            system: AccessSystem::Salto,
            endpoint: "http://salto.example/".into(),
            failing_since: Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap(),
            last_error: "timed out".into(),
            recovered_at: None,
        }
    }

    #[test]
    fn a_result_without_the_holders_window_still_decodes() {
        let envelope = Envelope::new(
            Uuid::nil(),
            2,
            Event::FacilityAccessDeferred(FacilityAccessResult {
                booking: facility_booking(),
                held_by: Some(Uuid::nil()),
                held_by_window: None,
                failure: None,
            }),
        );
        let json: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert!(json["data"].get("held_by_window").is_none());
        assert_eq!(Envelope::from_json(&envelope.to_json()).unwrap(), envelope);
    }

    #[test]
    fn a_building_without_connection_versions_uses_the_defaults() {
        let mut json = serde_json::to_value(building()).unwrap();
        json.as_object_mut().unwrap().remove("connection_versions");
        let back: Building = serde_json::from_value(json).unwrap();
        assert_eq!(back.connection_versions, ConnectionVersions::default());
    }

    #[test]
    fn every_event_survives_a_round_trip_through_json() {
        for event in one_of_each() {
            let envelope = Envelope::new(Uuid::new_v4(), 3, event);
            let back = Envelope::from_json(&envelope.to_json()).unwrap();
            assert_eq!(back, envelope);
        }
    }

    #[test]
    fn the_wire_type_is_the_routing_key_and_every_type_is_listed() {
        let types: Vec<_> = one_of_each().iter().map(Event::event_type).collect();
        assert_eq!(types, Event::ALL_TYPES.to_vec());
        for event in one_of_each() {
            let envelope = Envelope::new(Uuid::new_v4(), 1, event);
            let json: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
            assert_eq!(json["type"], envelope.routing_key());
            assert!(json["data"].is_object());
        }
    }

    #[test]
    fn the_envelope_has_the_documented_shape() {
        let envelope = Envelope::new(
            Uuid::nil(),
            1,
            Event::VisitorBookingCreated(visitor_booking()),
        );
        let json: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "booking_id",
                "data",
                "event_id",
                "occurred_at",
                "type",
                "version"
            ]
        );
        assert_eq!(
            json["data"]["window"]["local_starts_at"],
            "2026-12-01T18:00:00"
        );
        assert_eq!(json["data"]["building"]["double_booking_policy"], "auto");
    }

    #[test]
    fn an_unknown_type_or_a_broken_body_is_an_error_not_a_panic() {
        let unknown = br#"{"event_id":"00000000-0000-0000-0000-000000000000","occurred_at":"2026-01-01T00:00:00Z","booking_id":"00000000-0000-0000-0000-000000000000","version":1,"type":"visitor_booking.created.v9","data":{}}"#;
        assert!(Envelope::from_json(unknown).is_err());
        assert!(Envelope::from_json(b"not json").is_err());
        assert!(Envelope::from_json(b"{}").is_err());
    }
}
