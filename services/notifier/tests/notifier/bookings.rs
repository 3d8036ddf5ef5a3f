//! The bookings the notifier's tests mail about: Ana Lee of apartment 501 at Harbour View, in
//! Sydney, her visitor Bo Tan and her booking of the games room. One file for the unit tests
//! (`src/fixtures.rs`, which includes it) and the integration tests alike, so both arrange the
//! same booking the same way.
#![allow(dead_code)]

use contracts::{
    Apartment, BookedBy, BookingState, BookingWindow, Building, DoubleBookingPolicy, Facility,
    FacilityBooking, Resident, Role, Visitor, VisitorBooking,
};

pub const RESIDENT: &str = "ana@example.com";
pub const VISITOR: &str = "bo@example.com";

/// Harbour View, managed by `managers`, double bookings handled by `policy`.
pub fn building(managers: &[&str], policy: DoubleBookingPolicy) -> Building {
    Building {
        id: "harbour".into(),
        name: "Harbour View".into(),
        timezone: "Australia/Sydney".into(),
        manager_emails: managers.iter().map(|m| m.to_string()).collect(),
        ipassan_site: Some("site-7".into()),
        double_booking_policy: policy,
        connection_versions: Default::default(),
    }
}

/// Bo Tan visiting Ana Lee during `window`, with access.
pub fn visitor_booking(managers: &[&str], window: BookingWindow) -> VisitorBooking {
    VisitorBooking {
        building: building(managers, DoubleBookingPolicy::Auto),
        window,
        resident: Resident {
            id: "ana".into(),
            name: "Ana Lee".into(),
            email: RESIDENT.into(),
            apartment_id: "a-501".into(),
            ipassan_person_id: Some("p-123".into()),
        },
        visitor: Visitor {
            name: "Bo Tan".into(),
            email: VISITOR.into(),
        },
        provide_access: true,
        state: BookingState::Booked,
    }
}

/// Ana Lee's booking of the games room for apartment apt-501 during `window`.
pub fn facility_booking(
    managers: &[&str],
    policy: DoubleBookingPolicy,
    window: BookingWindow,
) -> FacilityBooking {
    FacilityBooking {
        building: building(managers, policy),
        window,
        facility: Facility {
            id: "games-room".into(),
            name: "Games room".into(),
            zone_id: "GAMES-ROOM".into(),
        },
        apartment: Apartment {
            id: "apt-501".into(),
            access_level_id: "501-56".into(),
        },
        booked_by: BookedBy {
            user_id: "ana".into(),
            role: Role::Resident,
            name: Some("Ana Lee".into()),
            email: Some(RESIDENT.into()),
        },
        state: BookingState::Booked,
    }
}
