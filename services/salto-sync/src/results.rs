//! The `facility_access.*` result events salto-sync publishes, and the words of their failures.
//!
//! A result's `event_id` is derived from (booking, version, outcome), so a ledger transaction
//! that is retried after publishing (its commit failed) publishes the very same event again,
//! which consumers already dedupe by `event_id`; and a result carries the booking version it was
//! decided for.

use contracts::{
    AccessFailure, BookingWindow, DoubleBookingPolicy, Envelope, Event, FacilityAccessResult,
    FacilityBooking,
};
use uuid::Uuid;

use salto_ship::{ShipError, ZonePermission, format_date_time};

/// Namespace of result event ids (a fixed random UUID).
const RESULT_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_4c2e_9b7d_4e58_a3c1_52f0_d8e4_b719);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Granted,
    Deferred,
    Revoked,
    Expired,
    Failed,
}

impl Outcome {
    /// As stored in `booking_outcomes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Deferred => "deferred",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }
}

/// The booking that holds a slot a deferred booking waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub booking_id: Uuid,
    /// Its window, from its latest snapshot (absent only if that snapshot is gone).
    pub window: Option<BookingWindow>,
}

/// The result event for `booking` (the snapshot acted on) at `version`.
pub fn result_event(
    outcome: Outcome,
    booking_id: Uuid,
    version: i64,
    booking: FacilityBooking,
    held_by: Option<Holder>,
    failure: Option<AccessFailure>,
) -> Envelope {
    let (held_by, held_by_window) = match held_by {
        Some(holder) => (Some(holder.booking_id), holder.window),
        None => (None, None),
    };
    let result = FacilityAccessResult {
        booking,
        held_by,
        held_by_window,
        failure,
    };
    let event = match outcome {
        Outcome::Granted => Event::FacilityAccessGranted(result),
        Outcome::Deferred => Event::FacilityAccessDeferred(result),
        Outcome::Revoked => Event::FacilityAccessRevoked(result),
        Outcome::Expired => Event::FacilityAccessExpired(result),
        Outcome::Failed => Event::FacilityAccessFailed(result),
    };
    let mut envelope = Envelope::new(booking_id, version, event);
    envelope.event_id = Uuid::new_v5(
        &RESULT_NAMESPACE,
        format!("{booking_id}/{version}/{}", outcome.as_str()).as_bytes(),
    );
    envelope
}

/// A second booking of a slot already held.
pub fn double_booking(policy: DoubleBookingPolicy, held_by: Uuid) -> AccessFailure {
    match policy {
        DoubleBookingPolicy::Auto => AccessFailure {
            code: "double_booking".into(),
            message: format!(
                "Salto allows one permission per apartment and facility at a time, and booking {held_by} holds it. \
                 This booking waits and is granted automatically as soon as that permission is removed \
                 (cancellation or the nightly clearing); no action is needed."
            ),
            needs_manager: false,
        },
        DoubleBookingPolicy::Manual => AccessFailure {
            code: "double_booking".into(),
            message: format!(
                "Salto allows one permission per apartment and facility at a time, and booking {held_by} holds it. \
                 The building's policy is manual: enable this booking's access in Salto by hand once the slot is free."
            ),
            needs_manager: true,
        },
    }
}

/// Salto does not know the access level, the zone or a timetable (SHIP code 11).
pub fn salto_not_found(booking: &FacilityBooking, error: &ShipError) -> AccessFailure {
    AccessFailure {
        code: "salto_not_found".into(),
        message: format!(
            "Salto does not know something this booking needs (Salto answered {}). Check that apartment {} has \
             Access Control ID `{}` and facility {} has Access Control Facility ID `{}` in both connecX and Salto, \
             then book again.",
            error.salto_answer(),
            booking.apartment.id,
            booking.apartment.access_level_id,
            booking.facility.name,
            booking.facility.zone_id,
        ),
        needs_manager: true,
    }
}

/// Salto shows a permission for the zone that the ledger does not know (made by hand).
pub fn unknown_permission(booking: &FacilityBooking, existing: &ZonePermission) -> AccessFailure {
    let period = existing
        .period
        .map(|p| {
            format!(
                "{} to {}",
                format_date_time(p.start),
                format_date_time(p.end)
            )
        })
        .unwrap_or_else(|| "no period".into());
    AccessFailure {
        code: "salto_permission_unknown".into(),
        message: format!(
            "Salto already holds a permission for zone `{}` on access level `{}` ({period}, timetable {}) that \
             connecX did not make — probably changed by hand at the Salto console. It was left untouched. \
             Remove it in Salto and book again, or grant this booking's access by hand.",
            existing.zone,
            booking.apartment.access_level_id,
            existing
                .timetable
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        needs_manager: true,
    }
}

/// The booking lacks an ID Salto needs.
pub fn missing_ids(booking: &FacilityBooking, missing: &str) -> AccessFailure {
    AccessFailure {
        code: "access_control_id_missing".into(),
        message: format!(
            "Access to {} cannot be given because {missing} is not set (apartment {}). Set it in connecX, then book again.",
            booking.facility.name, booking.apartment.id
        ),
        needs_manager: true,
    }
}

/// The building is connected to no Salto server.
pub fn not_connected(booking: &FacilityBooking) -> AccessFailure {
    AccessFailure {
        code: "salto_not_connected".into(),
        message: format!(
            "Access to {} cannot be given because the building {} is connected to no Salto \
             server. connecX support must connect the building to its Salto, then the booking \
             can be made again.",
            booking.facility.name, booking.building.name
        ),
        needs_manager: true,
    }
}

/// salto-sync gave the booking up (every retry failed, or a failure no retry can help): its
/// details are in the dead letter the managers are mailed.
pub fn gave_up() -> AccessFailure {
    AccessFailure {
        code: "gave_up".into(),
        message: "connecX could not set this booking's access in Salto after every retry. The \
                  building manager has been sent the details."
            .into(),
        // The dead letter's alert has told the managers, with the details: one alert, not
        // two.
        needs_manager: false,
    }
}

/// Reconciliation found a permission in Salto the ledger cannot explain, in the slot a booking
/// waits for.
pub fn drift(booking: &FacilityBooking, existing: &ZonePermission) -> AccessFailure {
    let mut failure = unknown_permission(booking, existing);
    failure.code = "salto_drift".into();
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_outcome_of_the_same_version_has_the_same_event_id() {
        let id = Uuid::new_v4();
        let a = Uuid::new_v5(&RESULT_NAMESPACE, format!("{id}/2/granted").as_bytes());
        let b = Uuid::new_v5(&RESULT_NAMESPACE, format!("{id}/2/granted").as_bytes());
        let c = Uuid::new_v5(&RESULT_NAMESPACE, format!("{id}/3/granted").as_bytes());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
