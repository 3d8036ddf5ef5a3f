//! What several of platform's integration tests share.

use contracts::{
    BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope, Event, Resident, Visitor,
    VisitorBooking,
};
use uuid::Uuid;

/// A `visitor_booking.created` event (version 1) of `booking_id`, for a building in Sydney.
pub fn visitor_booking_created(booking_id: Uuid) -> Envelope {
    let now = chrono::Utc::now();
    Envelope::new(
        booking_id,
        1,
        Event::VisitorBookingCreated(VisitorBooking {
            building: Building {
                id: "b-1".into(),
                name: "Harbour View".into(),
                timezone: "Australia/Sydney".into(),
                manager_emails: vec!["manager@example.com".into()],
                ipassan_site: Some("site-1".into()),
                double_booking_policy: DoubleBookingPolicy::Auto,
                connection_versions: Default::default(),
            },
            window: BookingWindow {
                starts_at: now,
                ends_at: now,
                local_starts_at: now.naive_utc(),
                local_ends_at: now.naive_utc(),
            },
            resident: Resident {
                id: "r-1".into(),
                name: "Ana".into(),
                email: "ana@example.com".into(),
                apartment_id: "a-1".into(),
                ipassan_person_id: Some("p-1".into()),
            },
            visitor: Visitor {
                name: "Bo".into(),
                email: "bo@example.com".into(),
            },
            provide_access: true,
            state: BookingState::Booked,
        }),
    )
}
