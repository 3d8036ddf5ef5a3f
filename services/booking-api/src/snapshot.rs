//! Event snapshots (docs/architecture.md, "The version rule"): the full state a consumer needs, read from the database inside the
//! writing transaction and put in a `contracts::Envelope`. Consumers never call booking-api back,
//! so everything they use — building and its time zone, manager emails, iPassan site, policy, the
//! window in UTC and building-local time, resident, visitor or facility and apartment with their
//! Salto IDs — travels in the event.

use contracts::{BookedBy, Envelope, Event, FacilityBooking, VisitorBooking};

use crate::store::buildings::{BuildingRow, UnknownZone};
use crate::store::directory::{FacilityRow, ResidentRow};
use crate::store::facility_bookings::FacilityBookingRow;
use crate::store::visitor_bookings::VisitorBookingRow;

/// Which change of a booking an event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Rescheduled,
    Cancelled,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Rescheduled => "rescheduled",
            Self::Cancelled => "cancelled",
        })
    }
}

/// A snapshot that cannot be built from what is stored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Zone(#[from] UnknownZone),
}

/// The event for a change of a visitor booking, at the booking's (new) version.
pub fn visitor_envelope(
    change: Change,
    building: &BuildingRow,
    resident: &ResidentRow,
    booking: &VisitorBookingRow,
) -> Result<Envelope, SnapshotError> {
    let snapshot = VisitorBooking {
        building: building.to_contract(),
        window: booking.booking.window().in_zone(building.zone()?),
        resident: resident.to_contract(),
        visitor: contracts::Visitor {
            name: booking.visitor_name.clone(),
            email: booking.visitor_email.clone(),
        },
        provide_access: booking.provide_access,
        state: booking.booking.state(),
    };
    let event = match change {
        Change::Created => Event::VisitorBookingCreated(snapshot),
        Change::Rescheduled => Event::VisitorBookingRescheduled(snapshot),
        Change::Cancelled => Event::VisitorBookingCancelled(snapshot),
    };
    Ok(Envelope::new(
        booking.booking.id,
        booking.booking.version,
        event,
    ))
}

/// The event for a change of a facility booking. The Salto IDs are the ones stored on the booking
/// for this version (the route put the ones now in force there).
pub fn facility_envelope(
    change: Change,
    building: &BuildingRow,
    facility: &FacilityRow,
    booking: &FacilityBookingRow,
    booker: Option<&ResidentRow>,
) -> Result<Envelope, SnapshotError> {
    let snapshot = FacilityBooking {
        building: building.to_contract(),
        window: booking.booking.window().in_zone(building.zone()?),
        facility: contracts::Facility {
            id: facility.id.clone(),
            name: facility.name.clone(),
            zone_id: booking.zone_id.clone(),
        },
        apartment: contracts::Apartment {
            id: booking.apartment_id.clone(),
            access_level_id: booking.access_level_id.clone(),
        },
        booked_by: BookedBy {
            user_id: booking.booking.booked_by_user_id.clone(),
            role: crate::store::role_from_stored(&booking.booking.booked_by_role),
            name: booker.map(|r| r.name.clone()),
            email: booker.map(|r| r.email.clone()),
        },
        state: booking.booking.state(),
    };
    let event = match change {
        Change::Created => Event::FacilityBookingCreated(snapshot),
        Change::Rescheduled => Event::FacilityBookingRescheduled(snapshot),
        Change::Cancelled => Event::FacilityBookingCancelled(snapshot),
    };
    Ok(Envelope::new(
        booking.booking.id,
        booking.booking.version,
        event,
    ))
}
