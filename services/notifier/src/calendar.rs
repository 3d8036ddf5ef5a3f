//! The `.ics` invite sent with visitor mails. One UID per booking, so a calendar updates the same
//! entry on reschedule (higher SEQUENCE) and removes it on cancellation (METHOD:CANCEL).

use icalendar::{Calendar, Component, EventLike, EventStatus};
use uuid::Uuid;

use contracts::VisitorBooking;

use crate::mailer::CalendarPart;

/// Whether the invite asks to add/update the visit or to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteMethod {
    Request,
    Cancel,
}

/// The invite for `booking` at `version` (the booking's version is the SEQUENCE: it grows with
/// every change, as RFC 5546 asks).
pub fn visit_invite(
    booking_id: Uuid,
    version: i64,
    booking: &VisitorBooking,
    method: InviteMethod,
) -> CalendarPart {
    let (method_name, status) = match method {
        InviteMethod::Request => ("REQUEST", EventStatus::Confirmed),
        InviteMethod::Cancel => ("CANCEL", EventStatus::Cancelled),
    };
    let event = icalendar::Event::new()
        .uid(&format!("{booking_id}@visits.connecx"))
        .summary(&format!(
            "Visit to {} at {}",
            booking.resident.name, booking.building.name
        ))
        .description("Access code in the email this invite came with.")
        .location(&booking.building.name)
        .starts(booking.window.starts_at)
        .ends(booking.window.ends_at)
        .status(status)
        .add_property("SEQUENCE", version.max(0).to_string())
        .done();
    let calendar = Calendar::new()
        .append_property(("METHOD", method_name))
        .push(event)
        .done();
    CalendarPart {
        filename: "visit.ics".to_owned(),
        method: method_name,
        content: calendar.to_string(),
    }
}
