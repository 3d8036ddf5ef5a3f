//! Which mails a result event causes, and their text. Pure: tests check the mails of every event
//! without SMTP or a database.

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::json;

use contracts::{
    BookingWindow, DoubleBookingPolicy, Envelope, Event, FacilityAccessResult, FacilityBooking,
    RefusedFacilityRequest, VisitorAccessResult, VisitorBooking,
};

use crate::calendar::{InviteMethod, visit_invite};
use crate::mailer::Mail;
use crate::templates::{TemplateError, render_pair};

/// The mails `envelope` asks for (empty for events nobody is mailed about).
///
/// `visit_announced`: the visitor of this booking was already sent a code; only then is a
/// cancellation theirs to hear about.
pub fn mails_for(
    envelope: &Envelope,
    ops_address: &str,
    visit_announced: bool,
) -> Result<Vec<Mail>, TemplateError> {
    match &envelope.event {
        Event::VisitorAccessGranted(r) => visitor_mails(envelope, r, "granted", true),
        Event::VisitorAccessUpdated(r) => visitor_mails(envelope, r, "updated", true),
        Event::VisitorAccessRevoked(r) => visitor_mails(envelope, r, "revoked", visit_announced),
        Event::VisitorAccessFailed(r) => {
            visitor_mails(envelope, r, "failed", false).and_then(|mut mails| {
                mails.extend(visitor_manager_mails(envelope, r, ops_address)?);
                Ok(mails)
            })
        }
        Event::FacilityAccessGranted(r) => facility_mails(envelope, r, "granted", ops_address),
        Event::FacilityAccessDeferred(r) => facility_mails(envelope, r, "deferred", ops_address),
        Event::FacilityAccessFailed(r) => facility_mails(envelope, r, "failed", ops_address),
        Event::FacilityAccessRevoked(r) => facility_mails(envelope, r, "revoked", ops_address),
        // Expiry is the normal end of a booking; nobody needs a mail for it.
        Event::FacilityAccessExpired(_) => Ok(Vec::new()),
        Event::FacilityRequestRefused(r) => refused_request_mails(envelope, r, ops_address),
        // Booking events are not for the notifier (it is not bound to them).
        _ => Ok(Vec::new()),
    }
}

/// A booking window on the building's clock, e.g. `Wednesday 25 November 2026, 18:00–20:00
/// (Australia/Sydney)`.
pub fn local_window(starts: NaiveDateTime, ends: NaiveDateTime, timezone: &str) -> String {
    let day = starts.format("%A %-d %B %Y");
    if starts.date() == ends.date()
        || (ends.time() == chrono::NaiveTime::MIN
            && ends.date() == starts.date().succ_opt().unwrap_or(ends.date()))
    {
        let end = if starts.date() == ends.date() {
            ends.format("%H:%M").to_string()
        } else {
            "24:00".to_owned()
        };
        format!("{day}, {}–{end} ({timezone})", starts.format("%H:%M"))
    } else {
        format!(
            "{day} {} – {} ({timezone})",
            starts.format("%H:%M"),
            ends.format("%A %-d %B %Y %H:%M")
        )
    }
}

fn visit_window(booking: &VisitorBooking) -> String {
    local_window(
        booking.window.local_starts_at,
        booking.window.local_ends_at,
        &booking.building.timezone,
    )
}

fn facility_window(booking: &FacilityBooking) -> String {
    window_text(&booking.window, &booking.building.timezone)
}

fn window_text(window: &BookingWindow, timezone: &str) -> String {
    local_window(window.local_starts_at, window.local_ends_at, timezone)
}

fn mail(
    to: &str,
    subject: String,
    template: &str,
    context: &impl Serialize,
) -> Result<Mail, TemplateError> {
    let (text, html) = render_pair(template, context)?;
    Ok(Mail {
        to: to.to_owned(),
        subject,
        text,
        html,
        calendar: None,
    })
}

fn visitor_mails(
    envelope: &Envelope,
    result: &VisitorAccessResult,
    kind: &str,
    mail_visitor: bool,
) -> Result<Vec<Mail>, TemplateError> {
    let booking = &result.booking;
    let failure = result.failure.as_ref();
    let context = json!({
        "kind": kind,
        "resident_name": booking.resident.name,
        "visitor_name": booking.visitor.name,
        "building_name": booking.building.name,
        "window": visit_window(booking),
        "pin": result.pin,
        "reason": failure.map(|f| f.message.as_str()),
        "needs_manager": failure.is_some_and(|f| f.needs_manager),
        "booking_id": envelope.booking_id,
    });
    let resident_subject = match kind {
        "granted" => format!("Access code for {}'s visit", booking.visitor.name),
        "updated" => format!("New time for {}'s visit", booking.visitor.name),
        "revoked" => format!("{}'s visit is cancelled", booking.visitor.name),
        _ => format!(
            "No access could be given for {}'s visit",
            booking.visitor.name
        ),
    };
    let mut mails = vec![mail(
        &booking.resident.email,
        resident_subject,
        "visitor_access_resident",
        &context,
    )?];
    let invite = match kind {
        "granted" | "updated" => Some(InviteMethod::Request),
        "revoked" => Some(InviteMethod::Cancel),
        _ => None,
    };
    if let Some(method) = invite.filter(|_| mail_visitor) {
        let subject = match kind {
            "granted" => format!(
                "Your visit to {} at {} — access code inside",
                booking.resident.name, booking.building.name
            ),
            "updated" => format!("Your visit to {} has moved", booking.resident.name),
            _ => format!("Your visit to {} is cancelled", booking.resident.name),
        };
        let mut visitor_mail = mail(
            &booking.visitor.email,
            subject,
            "visitor_access_visitor",
            &context,
        )?;
        visitor_mail.calendar = Some(visit_invite(
            envelope.booking_id,
            envelope.version,
            booking,
            method,
        ));
        mails.push(visitor_mail);
    }
    Ok(mails)
}

fn managers_or_ops(managers: &[String], ops_address: &str) -> Vec<String> {
    if managers.is_empty() {
        vec![ops_address.to_owned()]
    } else {
        managers.to_vec()
    }
}

fn visitor_manager_mails(
    envelope: &Envelope,
    result: &VisitorAccessResult,
    ops: &str,
) -> Result<Vec<Mail>, TemplateError> {
    let Some(failure) = result.failure.as_ref().filter(|f| f.needs_manager) else {
        return Ok(Vec::new());
    };
    let booking = &result.booking;
    let context = json!({
        "kind": "failed",
        "what": format!("building access for {}'s visitor {}", booking.resident.name, booking.visitor.name),
        "booking_id": envelope.booking_id,
        "window": visit_window(booking),
        "reason": failure.message,
        "code": failure.code,
        "resident_name": booking.resident.name,
        "apartment_id": booking.resident.apartment_id,
        "building_name": booking.building.name,
        "action": "Check the resident's person in iPassan (it must exist on the building's site and have an access profile), then ask the resident to book again.",
    });
    managers_or_ops(&booking.building.manager_emails, ops)
        .iter()
        .map(|to| {
            mail(
                to,
                format!(
                    "[connecX] Action needed: visitor access failed for booking {}",
                    envelope.booking_id
                ),
                "manager_action",
                &context,
            )
        })
        .collect()
}

fn facility_mails(
    envelope: &Envelope,
    result: &FacilityAccessResult,
    kind: &str,
    ops: &str,
) -> Result<Vec<Mail>, TemplateError> {
    let booking = &result.booking;
    let failure = result.failure.as_ref();
    let policy = match booking.building.double_booking_policy {
        DoubleBookingPolicy::Auto => "auto",
        DoubleBookingPolicy::Manual => "manual",
    };
    let mut mails = Vec::new();
    if let Some(email) = booking.booked_by.email.as_deref() {
        let context = json!({
            "kind": kind,
            "resident_name": booking.booked_by.name,
            "facility_name": booking.facility.name,
            "apartment_id": booking.apartment.id,
            "building_name": booking.building.name,
            "window": facility_window(booking),
            "reason": failure.map(|f| f.message.as_str()),
            "needs_manager": failure.is_some_and(|f| f.needs_manager),
            "policy": policy,
            "booking_id": envelope.booking_id,
        });
        let subject = match kind {
            "granted" => format!("{} booked: access confirmed", booking.facility.name),
            "deferred" => format!(
                "{} booked: access waits for another booking",
                booking.facility.name
            ),
            "revoked" => format!("{} booking cancelled", booking.facility.name),
            _ => format!(
                "{} booked: access could not be given",
                booking.facility.name
            ),
        };
        mails.push(mail(email, subject, "facility_access_resident", &context)?);
    }
    let manager_context = match kind {
        "deferred" => Some(json!({
            "kind": "double_booking",
            "facility_name": booking.facility.name,
            "apartment_id": booking.apartment.id,
            "booking_id": envelope.booking_id,
            "window": facility_window(booking),
            "held_by": result.held_by,
            "held_by_window": result.held_by_window.as_ref()
                .map(|w| window_text(w, &booking.building.timezone)),
            "policy": policy,
            "building_name": booking.building.name,
        })),
        "failed" if failure.is_some_and(|f| f.needs_manager) => failure.map(|f| json!({
            "kind": "failed",
            "what": format!("access to the {} for apartment {}", booking.facility.name, booking.apartment.id),
            "booking_id": envelope.booking_id,
            "window": facility_window(booking),
            "reason": f.message,
            "code": f.code,
            "apartment_id": booking.apartment.id,
            "access_level_id": booking.apartment.access_level_id,
            "facility_name": booking.facility.name,
            "zone_id": booking.facility.zone_id,
            "resident_name": booking.booked_by.name,
            "building_name": booking.building.name,
            "action": "Check in Salto that the apartment's access level and the facility's zone exist and match the IDs above (or correct them in connecX), and that nobody changed this permission by hand; then enable the access or ask for the booking again.",
        })),
        _ => None,
    };
    if let Some(context) = manager_context {
        let subject = if kind == "deferred" {
            format!(
                "[connecX] Double booking: {} for apartment {}",
                booking.facility.name, booking.apartment.id
            )
        } else {
            format!(
                "[connecX] Action needed: facility access failed for booking {}",
                envelope.booking_id
            )
        };
        for to in managers_or_ops(&booking.building.manager_emails, ops) {
            mails.push(mail(&to, subject.clone(), "manager_action", &context)?);
        }
    }
    Ok(mails)
}

/// The manager hears that a booking was refused because an ID only they can set is missing
/// (the booker already had the refusal in the API's answer).
fn refused_request_mails(
    envelope: &Envelope,
    request: &RefusedFacilityRequest,
    ops: &str,
) -> Result<Vec<Mail>, TemplateError> {
    let action = match request.failure.code.as_str() {
        "apartment_access_control_id_missing" => format!(
            "Set apartment {}'s Access Control ID (its User Access Level ExtID in Salto) in connecX: PUT /v1/apartments/{} with access_control_id. Then ask the resident to book again.",
            request.apartment_id, request.apartment_id
        ),
        _ => format!(
            "Set the {}'s Access Control Facility ID (its Zone ExtID in Salto) in connecX: PUT /v1/facilities/{} with access_control_facility_id. Then ask the resident to book again.",
            request.facility_name, request.facility_id
        ),
    };
    let context = json!({
        "kind": "refused",
        "what": format!("a booking of the {} for apartment {}", request.facility_name, request.apartment_id),
        "booking_id": envelope.booking_id,
        "window": window_text(&request.window, &request.building.timezone),
        "reason": request.failure.message,
        "code": request.failure.code,
        "apartment_id": request.apartment_id,
        "facility_name": request.facility_name,
        "resident_name": request.booked_by.name,
        "building_name": request.building.name,
        "action": action,
    });
    let subject = format!(
        "[connecX] Action needed: the {} cannot be booked until an Access Control ID is set",
        request.facility_name
    );
    managers_or_ops(&request.building.manager_emails, ops)
        .iter()
        .map(|to| mail(to, subject.clone(), "manager_action", &context))
        .collect()
}
