//! The text of every mail the notifier sends: its subject, plain text and HTML (rendered from
//! `templates/`, [`crate::templates`]) and, for a visitor, the calendar invite
//! ([`crate::calendar`]). Who gets which mail is decided in [`crate::decision`]; here each one is
//! written, as a function of its inputs (the clock included). The tests below check every kind
//! of mail — recipient, subject, the facts in its body and its invite — without SMTP or a
//! database.
//!
//! A mail's `kind` is its template's name: the sent-mail ledger keys on it, so it never changes.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use contracts::{
    AccessFailure, AccessSystem, BookingWindow, Building, ConnectionHealth, DoubleBookingPolicy,
    Envelope, FacilityAccessResult, FacilityBooking, RefusedFacilityRequest, RefusedVisitorRequest,
    SaltoDrift, TimetablesExhausted, VisitorAccessResult,
};

use crate::calendar::{InviteMethod, visit_invite};
use crate::dead_letter::DeadLetter;
use crate::decision::{
    About, ConnectionState, FacilityOutcome, PlannedMail, VisitOutcome, VisitorInvite,
};
use crate::mailer::Mail;
use crate::templates::{TemplateError, render_pair};

/// The mail `planned` (one of `envelope`'s) as it is sent; `now` dates an outage still going on.
pub fn compose(
    envelope: &Envelope,
    planned: &PlannedMail<'_>,
    now: DateTime<Utc>,
) -> Result<Mail, TemplateError> {
    let to = planned.to.as_str();
    match planned.about {
        About::VisitToResident(result, outcome) => visit_to_resident(envelope, result, outcome, to),
        About::VisitToVisitor(result, invite) => visit_to_visitor(envelope, result, invite, to),
        About::VisitFailedToManager(result, failure) => {
            visit_failed_to_manager(envelope, result, failure, to)
        }
        About::FacilityToBooker(result, outcome) => {
            facility_to_booker(envelope, result, outcome, to)
        }
        About::DoubleBookingToManager(result) => double_booking_to_manager(envelope, result, to),
        About::FacilityFailedToManager(result, failure) => {
            facility_failed_to_manager(envelope, result, failure, to)
        }
        About::FacilityRefusedToManager(request) => {
            facility_refused_to_manager(envelope, request, to)
        }
        About::VisitRefusedToManager(request) => visit_refused_to_manager(envelope, request, to),
        About::ConnectionToManager(health, state) => connection_to_manager(health, state, now, to),
        About::TimetablesExhaustedToOps(exhausted) => timetables_exhausted_to_ops(exhausted, to),
        About::SaltoDriftToManager(drift) => salto_drift_to_manager(drift, to),
    }
}

/// Every mail of `planned`, in order.
pub fn compose_all(
    envelope: &Envelope,
    planned: &[PlannedMail<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<Mail>, TemplateError> {
    planned
        .iter()
        .map(|mail| compose(envelope, mail, now))
        .collect()
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

fn window_text(window: &BookingWindow, timezone: &str) -> String {
    local_window(window.local_starts_at, window.local_ends_at, timezone)
}

fn mail(
    to: &str,
    subject: String,
    template: &'static str,
    context: &impl Serialize,
) -> Result<Mail, TemplateError> {
    let (text, html) = render_pair(template, context)?;
    Ok(Mail {
        kind: template,
        to: to.to_owned(),
        subject,
        text,
        html,
        calendar: None,
    })
}

/// What the resident's and the visitor's mails about a visit are written from.
fn visit_context(
    envelope: &Envelope,
    result: &VisitorAccessResult,
    kind: &str,
) -> serde_json::Value {
    let booking = &result.booking;
    let failure = result.failure.as_ref();
    json!({
        "kind": kind,
        "resident_name": booking.resident.name,
        "visitor_name": booking.visitor.name,
        "building_name": booking.building.name,
        "window": window_text(&booking.window, &booking.building.timezone),
        "pin": result.pin,
        "reason": failure.map(|f| f.message.as_str()),
        "needs_manager": failure.is_some_and(|f| f.needs_manager),
        "booking_id": envelope.booking_id,
    })
}

fn visit_to_resident(
    envelope: &Envelope,
    result: &VisitorAccessResult,
    outcome: VisitOutcome,
    to: &str,
) -> Result<Mail, TemplateError> {
    let visitor = &result.booking.visitor.name;
    let (kind, subject) = match outcome {
        VisitOutcome::Granted => ("granted", format!("Access code for {visitor}'s visit")),
        VisitOutcome::Updated => ("updated", format!("New time for {visitor}'s visit")),
        VisitOutcome::Revoked => ("revoked", format!("{visitor}'s visit is cancelled")),
        VisitOutcome::Failed => (
            "failed",
            format!("No access could be given for {visitor}'s visit"),
        ),
    };
    let context = visit_context(envelope, result, kind);
    mail(to, subject, "visitor_access_resident", &context)
}

fn visit_to_visitor(
    envelope: &Envelope,
    result: &VisitorAccessResult,
    invite: VisitorInvite,
    to: &str,
) -> Result<Mail, TemplateError> {
    let booking = &result.booking;
    let resident = &booking.resident.name;
    let (kind, method, subject) = match invite {
        VisitorInvite::New => (
            "granted",
            InviteMethod::Request,
            format!(
                "Your visit to {resident} at {} — access code inside",
                booking.building.name
            ),
        ),
        VisitorInvite::Moved => (
            "updated",
            InviteMethod::Request,
            format!("Your visit to {resident} has moved"),
        ),
        VisitorInvite::Cancelled => (
            "revoked",
            InviteMethod::Cancel,
            format!("Your visit to {resident} is cancelled"),
        ),
    };
    let context = visit_context(envelope, result, kind);
    let mut visitor_mail = mail(to, subject, "visitor_access_visitor", &context)?;
    visitor_mail.calendar = Some(visit_invite(
        envelope.booking_id,
        envelope.version,
        booking,
        method,
    ));
    Ok(visitor_mail)
}

/// What the `manager_action` template is written from when a manager must act on a failure or
/// a refusal: what was asked, why it could not be done, the IDs to check and what to do. What a
/// mail has no part of is left out (the template says nothing of it).
#[derive(Serialize)]
struct ActionNeeded<'a> {
    /// `failed` (access could not be given) or `refused` (booking-api refused the booking).
    kind: &'static str,
    what: String,
    booking_id: Uuid,
    window: String,
    reason: &'a str,
    code: &'a str,
    building_name: &'a str,
    action: String,
    /// Why a refusal was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resident_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apartment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_level_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    facility_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone_id: Option<&'a str>,
}

impl<'a> ActionNeeded<'a> {
    /// `what` of `envelope`'s booking, in `window`, did not go through because of `failure`.
    fn new(
        kind: &'static str,
        envelope: &Envelope,
        what: String,
        window: String,
        failure: &'a AccessFailure,
        building: &'a Building,
        action: String,
    ) -> Self {
        Self {
            kind,
            what,
            booking_id: envelope.booking_id,
            window,
            reason: &failure.message,
            code: &failure.code,
            building_name: &building.name,
            action,
            cause: None,
            resident_name: None,
            apartment_id: None,
            access_level_id: None,
            facility_name: None,
            zone_id: None,
        }
    }

    fn mail(&self, to: &str, subject: String) -> Result<Mail, TemplateError> {
        mail(to, subject, "manager_action", self)
    }
}

fn visit_failed_to_manager(
    envelope: &Envelope,
    result: &VisitorAccessResult,
    failure: &AccessFailure,
    to: &str,
) -> Result<Mail, TemplateError> {
    let booking = &result.booking;
    let resident = &booking.resident;
    ActionNeeded {
        resident_name: Some(&resident.name),
        apartment_id: Some(&resident.apartment_id),
        ..ActionNeeded::new(
            "failed",
            envelope,
            format!(
                "building access for {}'s visitor {}",
                resident.name, booking.visitor.name
            ),
            window_text(&booking.window, &booking.building.timezone),
            failure,
            &booking.building,
            "Check the resident's person in iPassan (it must exist on the building's site and have an access profile), then ask the resident to book again.".to_owned(),
        )
    }
    .mail(
        to,
        format!(
            "[connecX] Action needed: visitor access failed for booking {}",
            envelope.booking_id
        ),
    )
}

fn policy_name(booking: &FacilityBooking) -> &'static str {
    match booking.building.double_booking_policy {
        DoubleBookingPolicy::Auto => "auto",
        DoubleBookingPolicy::Manual => "manual",
    }
}

fn facility_to_booker(
    envelope: &Envelope,
    result: &FacilityAccessResult,
    outcome: FacilityOutcome,
    to: &str,
) -> Result<Mail, TemplateError> {
    let booking = &result.booking;
    let failure = result.failure.as_ref();
    let facility = &booking.facility.name;
    let (kind, subject) = match outcome {
        FacilityOutcome::Granted => ("granted", format!("{facility} booked: access confirmed")),
        FacilityOutcome::Deferred => (
            "deferred",
            format!("{facility} booked: access waits for another booking"),
        ),
        FacilityOutcome::Revoked => ("revoked", format!("{facility} booking cancelled")),
        FacilityOutcome::Failed => (
            "failed",
            format!("{facility} booked: access could not be given"),
        ),
    };
    let context = json!({
        "kind": kind,
        "resident_name": booking.booked_by.name,
        "facility_name": facility,
        "apartment_id": booking.apartment.id,
        "building_name": booking.building.name,
        "window": window_text(&booking.window, &booking.building.timezone),
        "reason": failure.map(|f| f.message.as_str()),
        "needs_manager": failure.is_some_and(|f| f.needs_manager),
        "policy": policy_name(booking),
        "booking_id": envelope.booking_id,
    });
    mail(to, subject, "facility_access_resident", &context)
}

fn double_booking_to_manager(
    envelope: &Envelope,
    result: &FacilityAccessResult,
    to: &str,
) -> Result<Mail, TemplateError> {
    let booking = &result.booking;
    let timezone = &booking.building.timezone;
    let context = json!({
        "kind": "double_booking",
        "facility_name": booking.facility.name,
        "apartment_id": booking.apartment.id,
        "booking_id": envelope.booking_id,
        "window": window_text(&booking.window, timezone),
        "held_by": result.held_by,
        "held_by_window": result.held_by_window.as_ref().map(|w| window_text(w, timezone)),
        "policy": policy_name(booking),
        "building_name": booking.building.name,
    });
    let subject = format!(
        "[connecX] Double booking: {} for apartment {}",
        booking.facility.name, booking.apartment.id
    );
    mail(to, subject, "manager_action", &context)
}

fn facility_failed_to_manager(
    envelope: &Envelope,
    result: &FacilityAccessResult,
    failure: &AccessFailure,
    to: &str,
) -> Result<Mail, TemplateError> {
    let booking = &result.booking;
    let (apartment, facility) = (&booking.apartment, &booking.facility);
    ActionNeeded {
        resident_name: booking.booked_by.name.as_deref(),
        apartment_id: Some(&apartment.id),
        access_level_id: Some(&apartment.access_level_id),
        facility_name: Some(&facility.name),
        zone_id: Some(&facility.zone_id),
        ..ActionNeeded::new(
            "failed",
            envelope,
            format!("access to the {} for apartment {}", facility.name, apartment.id),
            window_text(&booking.window, &booking.building.timezone),
            failure,
            &booking.building,
            "Check in Salto that the apartment's access level and the facility's zone exist and match the IDs above (or correct them in connecX), and that nobody changed this permission by hand; then enable the access or ask for the booking again.".to_owned(),
        )
    }
    .mail(
        to,
        format!(
            "[connecX] Action needed: facility access failed for booking {}",
            envelope.booking_id
        ),
    )
}

/// The manager hears that a booking was refused because an ID only they can set is missing, or
/// the building is connected to no Salto (the booker already had the refusal in the API's
/// answer).
fn facility_refused_to_manager(
    envelope: &Envelope,
    request: &RefusedFacilityRequest,
    to: &str,
) -> Result<Mail, TemplateError> {
    let action = match request.failure.code.as_str() {
        "salto_not_connected" => not_connected_action(&request.building.id, AccessSystem::Salto),
        "apartment_access_control_id_missing" => format!(
            "Set apartment {}'s Access Control ID (its User Access Level ExtID in Salto) in connecX: PUT /v1/apartments/{} with access_control_id. Then ask the resident to book again.",
            request.apartment_id, request.apartment_id
        ),
        _ => format!(
            "Set the {}'s Access Control Facility ID (its Zone ExtID in Salto) in connecX: PUT /v1/facilities/{} with access_control_facility_id. Then ask the resident to book again.",
            request.facility_name, request.facility_id
        ),
    };
    let not_connected = request.failure.code == "salto_not_connected";
    let (cause, until) = if not_connected {
        (
            "the building is connected to no Salto (access control) server",
            "the building is connected to Salto",
        )
    } else {
        (
            "an ID only a manager can set is missing",
            "an Access Control ID is set",
        )
    };
    ActionNeeded {
        cause: Some(cause),
        resident_name: request.booked_by.name.as_deref(),
        apartment_id: Some(&request.apartment_id),
        facility_name: Some(&request.facility_name),
        ..ActionNeeded::new(
            "refused",
            envelope,
            format!(
                "a booking of the {} for apartment {}",
                request.facility_name, request.apartment_id
            ),
            window_text(&request.window, &request.building.timezone),
            &request.failure,
            &request.building,
            action,
        )
    }
    .mail(
        to,
        format!(
            "[connecX] Action needed: the {} cannot be booked until {until}",
            request.facility_name
        ),
    )
}

fn not_connected_action(building_id: &str, system: AccessSystem) -> String {
    format!(
        "Ask connecX support (an operator) to connect this building to its {} with PUT /v1/buildings/{building_id}/connections/{system}. Then ask the resident to book again.",
        system_name(system)
    )
}

fn system_name(system: AccessSystem) -> &'static str {
    match system {
        AccessSystem::Ipassan => "iPassan (visitor access)",
        AccessSystem::Salto => "Salto (facility access)",
    }
}

/// The manager hears that a visit with access was refused because the building is connected to
/// no iPassan.
fn visit_refused_to_manager(
    envelope: &Envelope,
    request: &RefusedVisitorRequest,
    to: &str,
) -> Result<Mail, TemplateError> {
    ActionNeeded {
        cause: Some("the building is connected to no iPassan (access control) tenant"),
        resident_name: Some(&request.resident_name),
        ..ActionNeeded::new(
            "refused",
            envelope,
            format!(
                "{}'s visitor {} with building access",
                request.resident_name, request.visitor_name
            ),
            window_text(&request.window, &request.building.timezone),
            &request.failure,
            &request.building,
            not_connected_action(&request.building.id, AccessSystem::Ipassan),
        )
    }
    .mail(
        to,
        "[connecX] Action needed: visitors cannot get access until the building is connected to iPassan"
            .to_owned(),
    )
}

/// One mail per outage and building: when its iPassan or Salto has been failing for a while
/// (how long, counted to `now`), and when it works again.
fn connection_to_manager(
    health: &ConnectionHealth,
    state: ConnectionState,
    now: DateTime<Utc>,
    to: &str,
) -> Result<Mail, TemplateError> {
    let building = &health.building;
    let zone = building.timezone.parse::<chrono_tz::Tz>().ok();
    let local = |at: DateTime<Utc>| match zone {
        Some(zone) => format!(
            "{} ({})",
            at.with_timezone(&zone).format("%A %-d %B %Y %H:%M"),
            building.timezone
        ),
        None => format!("{} UTC", at.format("%A %-d %B %Y %H:%M")),
    };
    let minutes = (health.recovered_at.unwrap_or(now) - health.failing_since)
        .num_minutes()
        .max(0);
    let system = system_name(health.system);
    let (kind, subject) = match state {
        ConnectionState::Down => (
            "down",
            format!(
                "[connecX] {system} of {} is not answering: bookings are waiting, nothing is lost",
                building.name
            ),
        ),
        ConnectionState::Recovered => (
            "recovered",
            format!("[connecX] {system} of {} works again", building.name),
        ),
    };
    let context = json!({
        "kind": kind,
        "system_name": system,
        "endpoint": health.endpoint,
        "since": local(health.failing_since),
        "recovered_at": health.recovered_at.map(local),
        "minutes": minutes,
        "last_error": health.last_error,
        "building_name": building.name,
    });
    mail(to, subject, "system_health", &context)
}

/// Ops hear that a Salto server has no timetable ID left.
fn timetables_exhausted_to_ops(
    exhausted: &TimetablesExhausted,
    to: &str,
) -> Result<Mail, TemplateError> {
    let context = json!({
        "kind": "exhausted",
        "system_name": "Salto",
        "endpoint": exhausted.server,
        "held_by_connecx": exhausted.held_by_connecx,
        "held_by_others": exhausted.held_by_others,
        "building_id": exhausted.building_id,
        "building_name": format!("Salto server {}", exhausted.server),
    });
    let subject = format!(
        "[connecX] Salto server {} has no free timetable ID: facility bookings wait",
        exhausted.server
    );
    mail(to, subject, "system_health", &context)
}

/// The building's managers hear what the nightly check found changed by hand in Salto.
fn salto_drift_to_manager(drift: &SaltoDrift, to: &str) -> Result<Mail, TemplateError> {
    let context = json!({
        "access_level": drift.access_level,
        "server": drift.server,
        "findings": drift.findings,
        "building_name": drift.building.name,
    });
    let subject = format!(
        "[connecX] Salto access level {} of {} was changed outside connecX",
        drift.access_level, drift.building.name
    );
    mail(to, subject, "salto_drift", &context)
}

/// What `to` is sent instead when every recipient of `mails` (the mails of `envelope`) refused
/// them for good: who was not reached, and about what — the subjects only, never a PIN.
pub fn undeliverable(envelope: &Envelope, mails: &[Mail], to: &str) -> Result<Mail, TemplateError> {
    let context = json!({
        "booking_id": envelope.booking_id.to_string(),
        "event_type": envelope.routing_key(),
        "mails": mails.iter().map(|m| json!({"subject": m.subject, "to": m.to})).collect::<Vec<_>>(),
        "building_name": envelope.building().map_or("connecX", |b| b.name.as_str()),
    });
    let subject = format!(
        "[connecX] Undeliverable: nobody could be mailed about booking {}",
        envelope.booking_id
    );
    mail(to, subject, "undeliverable", &context)
}

#[derive(Serialize)]
struct AlertContext<'a> {
    dead_letter_id: String,
    booking_id: Option<String>,
    service: &'a str,
    event_type: Option<&'a str>,
    routing_key: &'a str,
    error: &'a str,
    error_kind: &'a str,
    attempts: i64,
    first_failed_at: Option<String>,
    building_name: Option<&'a str>,
    consequence: &'static str,
    action: String,
}

/// The alert to `to` about a dead letter: what failed, why, what it means and what to do.
pub fn dead_letter_alert(letter: &DeadLetter, to: &str) -> Result<Mail, TemplateError> {
    let failure = &letter.failure;
    let context = AlertContext {
        dead_letter_id: letter.id.to_string(),
        booking_id: letter.booking_id().map(|id| id.to_string()),
        service: &failure.service,
        event_type: letter.event_type(),
        routing_key: &failure.routing_key,
        error: &failure.error,
        error_kind: &failure.error_kind,
        attempts: failure.attempts(),
        first_failed_at: failure
            .first_failed_at
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        building_name: letter.building().map(|b| b.name.as_str()),
        consequence: consequence(letter),
        action: action(letter),
    };
    let subject = match letter.booking_id() {
        Some(booking) => format!(
            "[connecX] Action needed: {} failed for booking {booking}",
            failure.service
        ),
        None => format!(
            "[connecX] Action needed: {} could not handle a message",
            failure.service
        ),
    };
    mail(to, subject, "dead_letter_alert", &context)
}

fn consequence(letter: &DeadLetter) -> &'static str {
    match letter.event_type().unwrap_or_default().split('.').next() {
        Some("visitor_booking") => "The visitor may not have a working access code.",
        Some("facility_booking") => {
            "The facility access for this booking may be missing or out of date."
        }
        Some("visitor_access" | "facility_access") => {
            "The people concerned may not have been told the outcome."
        }
        _ => "Nothing was changed for it.",
    }
}

fn action(letter: &DeadLetter) -> String {
    match letter.failure.error_kind.as_str() {
        "transient_exhausted" => format!(
            "{} kept failing with a temporary error. Check that the system it talks to is up and reachable, then replay.",
            letter.failure.service
        ),
        "malformed" => {
            "The message is not something the service can read; it was probably sent by mistake. \
                        Forward this email to your connecX support contact and discard it."
                .to_owned()
        }
        "permanent" => {
            "The request was refused and retrying will not help. Fix what the error names \
                        (for example a missing or wrong setting), then replay."
                .to_owned()
        }
        _ => {
            "The message broker gave up on it. Forward this email to your connecX support contact."
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use contracts::{DoubleBookingPolicy, Event};

    use super::*;
    use crate::decision::result_mails;
    use crate::fixtures::{
        self, BOOKING, DEAD_LETTER, FACILITY_WINDOW, HOLDER, MANAGERS, OPS, PIN, RESIDENT,
        VISIT_WINDOW, VISITOR,
    };

    /// The clock the mails are written at: an hour after the fixtures' outage began.
    fn now() -> DateTime<Utc> {
        fixtures::utc(1, 8, 0)
    }

    /// Every mail `envelope` produces, as sent.
    fn mails_of(envelope: &Envelope, visit_announced: bool) -> Vec<Mail> {
        compose_all(
            envelope,
            &result_mails(envelope, OPS, visit_announced),
            now(),
        )
        .unwrap()
    }

    fn recipients(envelope: &Envelope, visit_announced: bool) -> Vec<String> {
        mails_of(envelope, visit_announced)
            .into_iter()
            .map(|m| m.to)
            .collect()
    }

    /// The one mail of `envelope` to `to` (its visitor sent a code before).
    #[track_caller]
    fn mail_to(envelope: &Envelope, to: &str) -> Mail {
        let mut mails: Vec<Mail> = mails_of(envelope, true)
            .into_iter()
            .filter(|m| m.to == to)
            .collect();
        assert_eq!(mails.len(), 1, "one mail to {to}");
        mails.remove(0)
    }

    /// The mail is a `kind` mail with `subject`, and its text says each of `facts`.
    #[track_caller]
    fn reads(mail: &Mail, kind: &str, subject: &str, facts: &[&str]) {
        assert_eq!((mail.kind, mail.subject.as_str()), (kind, subject));
        says(mail, facts);
    }

    /// The mail's text says each of `facts`.
    #[track_caller]
    fn says(mail: &Mail, facts: &[&str]) {
        for fact in facts {
            let text = &mail.text;
            assert!(text.contains(fact), "{fact:?} missing from:\n{text}");
        }
    }

    /// The mail's HTML says each of `facts` (escaped as the templates escape them).
    #[track_caller]
    fn html_says(mail: &Mail, facts: &[&str]) {
        for fact in facts {
            let escaped = fact.replace('&', "&amp;").replace('/', "&#x2f;");
            let escaped = escaped.replace('\'', "&#x27;").replace('<', "&lt;");
            let html = &mail.html;
            assert!(html.contains(&escaped), "{escaped:?} missing from:\n{html}");
        }
    }

    #[track_caller]
    fn does_not_say(mail: &Mail, text: &str) {
        assert!(!mail.text.contains(text), "{text:?} in:\n{}", mail.text);
        assert!(!mail.html.contains(text), "{text:?} in:\n{}", mail.html);
    }

    /// The invite attached to a visitor's mail, checked for what every invite of this booking
    /// carries: its method, UID, SEQUENCE (the version), the window in UTC and the place.
    #[track_caller]
    fn invite(mail: &Mail, method: &str) -> String {
        let invite = mail.calendar.as_ref().expect("a calendar invite");
        assert_eq!(
            (invite.filename.as_str(), invite.method),
            ("visit.ics", method)
        );
        for line in [
            format!("METHOD:{method}"),
            format!("UID:{BOOKING}@visits.connecx"),
            "SEQUENCE:3".to_owned(),
            "DTSTART:20261201T070000Z".to_owned(),
            "DTEND:20261201T110000Z".to_owned(),
            "SUMMARY:Visit to Ana Lee at Harbour View".to_owned(),
            "LOCATION:Harbour View".to_owned(),
        ] {
            let content = &invite.content;
            assert!(content.contains(&line), "{line} missing:\n{content}");
        }
        invite.content.clone()
    }

    #[test]
    fn a_granted_visit_gives_the_resident_and_the_visitor_the_code_and_the_visitor_an_invite() {
        let granted = fixtures::visit_result(Event::VisitorAccessGranted, Some(PIN));
        assert_eq!(recipients(&granted, false), [RESIDENT, VISITOR]);

        let resident = mail_to(&granted, RESIDENT);
        reads(
            &resident,
            "visitor_access_resident",
            "Access code for Bo Tan's visit",
            &[
                "Hello Ana Lee",
                "Bo Tan is expected on",
                VISIT_WINDOW,
                PIN,
                "Harbour View",
            ],
        );
        html_says(&resident, &[VISIT_WINDOW, PIN]);
        assert!(resident.calendar.is_none());

        let visitor = mail_to(&granted, VISITOR);
        reads(
            &visitor,
            "visitor_access_visitor",
            "Your visit to Ana Lee at Harbour View — access code inside",
            &[
                "Hello Bo Tan",
                "Ana Lee expects you at Harbour View on",
                VISIT_WINDOW,
                PIN,
            ],
        );
        html_says(&visitor, &[VISIT_WINDOW, PIN]);
        assert!(invite(&visitor, "REQUEST").contains("STATUS:CONFIRMED"));
    }

    #[test]
    fn a_moved_visit_keeps_the_code_and_moves_the_invite() {
        let updated = fixtures::visit_result(Event::VisitorAccessUpdated, Some(PIN));
        reads(
            &mail_to(&updated, RESIDENT),
            "visitor_access_resident",
            "New time for Bo Tan's visit",
            &[
                &format!("has moved to {VISIT_WINDOW}"),
                &format!("stays the same: {PIN}"),
            ],
        );
        let visitor = mail_to(&updated, VISITOR);
        reads(
            &visitor,
            "visitor_access_visitor",
            "Your visit to Ana Lee has moved",
            &[&format!("at Harbour View has moved to {VISIT_WINDOW}"), PIN],
        );
        invite(&visitor, "REQUEST");
    }

    #[test]
    fn a_cancelled_visit_tells_the_resident_and_withdraws_the_visitors_invite() {
        let revoked = fixtures::visit_result(Event::VisitorAccessRevoked, None);
        reads(
            &mail_to(&revoked, RESIDENT),
            "visitor_access_resident",
            "Bo Tan's visit is cancelled",
            &[
                &format!("The visit of Bo Tan on {VISIT_WINDOW} is cancelled"),
                "no longer opens",
            ],
        );
        let visitor = mail_to(&revoked, VISITOR);
        reads(
            &visitor,
            "visitor_access_visitor",
            "Your visit to Ana Lee is cancelled",
            &[
                &format!("on {VISIT_WINDOW} has been cancelled"),
                "no longer works",
            ],
        );
        assert!(invite(&visitor, "CANCEL").contains("STATUS:CANCELLED"));
        does_not_say(&visitor, PIN);

        assert_eq!(
            recipients(&revoked, false),
            [RESIDENT],
            "a visitor never sent a code hears nothing"
        );
    }

    #[test]
    fn a_failed_visit_tells_the_resident_why_and_the_managers_what_to_do() {
        let failed = fixtures::failed_visit(true);
        assert_eq!(
            recipients(&failed, false),
            [RESIDENT, MANAGERS[0], MANAGERS[1]]
        );
        reads(
            &mail_to(&failed, RESIDENT),
            "visitor_access_resident",
            "No access could be given for Bo Tan's visit",
            &[
                &format!("We could not give Bo Tan access for the visit on {VISIT_WINDOW}"),
                "Reason: Ana Lee has no access profile in iPassan",
                "Your building manager has been told",
            ],
        );
        reads(
            &mail_to(&failed, MANAGERS[0]),
            "manager_action",
            &format!("[connecX] Action needed: visitor access failed for booking {BOOKING}"),
            &[
                "building access for Ana Lee's visitor Bo Tan",
                VISIT_WINDOW,
                "[visitee_has_no_access_profile]",
                "Apartment: a-501",
                "Check the resident's person in iPassan",
                "Harbour View",
            ],
        );

        let on_their_own = fixtures::failed_visit(false);
        assert_eq!(recipients(&on_their_own, false), [RESIDENT]);
        says(
            &mail_to(&on_their_own, RESIDENT),
            &["Please check your booking or contact your building manager."],
        );
    }

    fn facility(make: fn(FacilityAccessResult) -> Event, policy: DoubleBookingPolicy) -> Envelope {
        fixtures::facility_result(make, policy, None)
    }

    #[test]
    fn a_granted_facility_booking_confirms_the_hours_to_the_resident_who_booked() {
        let granted = facility(Event::FacilityAccessGranted, DoubleBookingPolicy::Auto);
        assert_eq!(recipients(&granted, false), [RESIDENT]);
        reads(
            &mail_to(&granted, RESIDENT),
            "facility_access_resident",
            "Games room booked: access confirmed",
            &[
                &format!("Your booking of the Games room on {FACILITY_WINDOW} is confirmed"),
                "the cards of apartment apt-501 open it",
                "Harbour View",
                &BOOKING.to_string(),
            ],
        );
    }

    #[test]
    fn a_cancelled_facility_booking_tells_the_resident_its_access_is_removed() {
        let revoked = facility(Event::FacilityAccessRevoked, DoubleBookingPolicy::Auto);
        reads(
            &mail_to(&revoked, RESIDENT),
            "facility_access_resident",
            "Games room booking cancelled",
            &[FACILITY_WINDOW, "is cancelled and its access removed"],
        );
    }

    #[test]
    fn a_double_booking_gives_the_managers_both_bookings_and_says_whether_to_act() {
        let auto = facility(Event::FacilityAccessDeferred, DoubleBookingPolicy::Auto);
        assert_eq!(
            recipients(&auto, false),
            [RESIDENT, MANAGERS[0], MANAGERS[1]]
        );
        reads(
            &mail_to(&auto, RESIDENT),
            "facility_access_resident",
            "Games room booked: access waits for another booking",
            &[FACILITY_WINDOW, "Access will be given automatically"],
        );
        let holder_window = "Thursday 3 December 2026, 07:00–08:30 (Australia/Sydney)";
        let manager = mail_to(&auto, MANAGERS[1]);
        reads(
            &manager,
            "manager_action",
            "[connecX] Double booking: Games room for apartment apt-501",
            &[
                &format!("New booking:      {BOOKING}, {FACILITY_WINDOW}"),
                &format!("Holding the slot: {HOLDER}, {holder_window}"),
                "No action is needed",
            ],
        );
        html_says(&manager, &[FACILITY_WINDOW, holder_window]);

        let manual = facility(Event::FacilityAccessDeferred, DoubleBookingPolicy::Manual);
        says(
            &mail_to(&manual, RESIDENT),
            &["Your building manager has been asked to enable it."],
        );
        says(
            &mail_to(&manual, MANAGERS[0]),
            &["Action needed: this building's policy is manual"],
        );
    }

    #[test]
    fn a_failed_facility_booking_gives_the_managers_the_salto_ids_to_check() {
        let failed = fixtures::facility_result(
            Event::FacilityAccessFailed,
            DoubleBookingPolicy::Auto,
            Some(fixtures::failure(true)),
        );
        reads(
            &mail_to(&failed, RESIDENT),
            "facility_access_resident",
            "Games room booked: access could not be given",
            &[
                FACILITY_WINDOW,
                "Reason: Ana Lee has no access profile in iPassan",
            ],
        );
        let manager = mail_to(&failed, MANAGERS[0]);
        reads(
            &manager,
            "manager_action",
            &format!("[connecX] Action needed: facility access failed for booking {BOOKING}"),
            &[
                "access to the Games room for apartment apt-501",
                FACILITY_WINDOW,
                "Apartment: apt-501 (Salto access level 501-56)",
                "Facility:  Games room (Salto zone GAMES-ROOM)",
                "Resident:  Ana Lee",
                "Check in Salto",
            ],
        );
        html_says(&manager, &["501-56", "GAMES-ROOM", FACILITY_WINDOW]);
    }

    #[test]
    fn an_expired_facility_booking_mails_nobody() {
        let expired = facility(Event::FacilityAccessExpired, DoubleBookingPolicy::Auto);
        assert!(mails_of(&expired, false).is_empty());
    }

    #[test]
    fn a_facility_booking_refused_for_a_missing_id_tells_the_managers_which_one_to_set() {
        let facility_id = fixtures::refused_facility("facility_access_control_id_missing");
        assert_eq!(recipients(&facility_id, false), MANAGERS);
        reads(
            &mail_to(&facility_id, MANAGERS[0]),
            "manager_action",
            "[connecX] Action needed: the Games room cannot be booked until an Access Control ID is set",
            &[
                &format!(
                    "a booking of the Games room for apartment apt-501 ({FACILITY_WINDOW}) was refused, because an ID only a manager can set is missing"
                ),
                &format!("reference {BOOKING}"),
                "PUT /v1/facilities/games-room with access_control_facility_id",
                "Resident:  Ana Lee",
            ],
        );
        let apartment_id = fixtures::refused_facility("apartment_access_control_id_missing");
        says(
            &mail_to(&apartment_id, MANAGERS[1]),
            &["PUT /v1/apartments/apt-501 with access_control_id"],
        );
    }

    #[test]
    fn a_facility_booking_refused_for_want_of_salto_asks_for_the_connection() {
        let refused = fixtures::refused_facility("salto_not_connected");
        reads(
            &mail_to(&refused, MANAGERS[0]),
            "manager_action",
            "[connecX] Action needed: the Games room cannot be booked until the building is connected to Salto",
            &[
                "connected to no Salto (access control) server",
                "PUT /v1/buildings/harbour/connections/salto",
                "[salto_not_connected]",
            ],
        );
    }

    #[test]
    fn a_visit_refused_for_want_of_ipassan_tells_the_managers_to_have_it_connected() {
        let refused = fixtures::refused_visit();
        assert_eq!(recipients(&refused, false), MANAGERS);
        reads(
            &mail_to(&refused, MANAGERS[1]),
            "manager_action",
            "[connecX] Action needed: visitors cannot get access until the building is connected to iPassan",
            &[
                "Ana Lee's visitor Bo Tan",
                "connected to no iPassan",
                "ipassan_not_connected",
                "PUT /v1/buildings/harbour/connections/ipassan",
                VISIT_WINDOW,
            ],
        );
    }

    #[test]
    fn an_outage_mail_says_nothing_is_lost_and_the_recovery_mail_says_how_long_it_lasted() {
        let down = fixtures::connection(None);
        assert_eq!(recipients(&down, false), MANAGERS);
        reads(
            &mail_to(&down, MANAGERS[0]),
            "system_health",
            "[connecX] Salto (facility access) of Harbour View is not answering: bookings are waiting, nothing is lost",
            &[
                "Salto (facility access) has not been answering connecX since Tuesday 1 December 2026 18:00 (Australia/Sydney) (60 minutes)",
                "https://salto.harbour.example/",
                "timed out after 10s",
                "Bookings are waiting, nothing is lost",
            ],
        );
        reads(
            &mail_to(&fixtures::connection(Some(42)), MANAGERS[0]),
            "system_health",
            "[connecX] Salto (facility access) of Harbour View works again",
            &[
                "again since Tuesday 1 December 2026 18:42 (Australia/Sydney)",
                "(42 minutes)",
            ],
        );
    }

    #[test]
    fn an_outage_of_a_building_without_managers_or_a_known_time_zone_goes_to_ops_in_utc() {
        let mut orphan = fixtures::connection(None);
        if let Event::ConnectionDown(health) = &mut orphan.event {
            health.building.manager_emails.clear();
            health.building.timezone = "Nowhere/Unknown".into();
        }
        assert_eq!(recipients(&orphan, false), [OPS]);
        says(
            &mail_to(&orphan, OPS),
            &["since Tuesday 1 December 2026 07:00 UTC"],
        );
    }

    #[test]
    fn an_exhausted_timetable_pool_is_one_mail_to_ops_naming_the_server() {
        let exhausted = fixtures::timetables_exhausted();
        assert_eq!(recipients(&exhausted, false), [OPS]);
        reads(
            &mail_to(&exhausted, OPS),
            "system_health",
            "[connecX] Salto server https://salto.harbour.example/ has no free timetable ID: facility bookings wait",
            &[
                "1000 by connecX, 24 by others",
                "of building harbour",
                "Salto server https://salto.harbour.example/",
            ],
        );
    }

    #[test]
    fn a_salto_drift_tells_the_managers_what_was_found_and_what_was_done() {
        let drift = fixtures::salto_drift();
        assert_eq!(recipients(&drift, false), MANAGERS);
        reads(
            &mail_to(&drift, MANAGERS[0]),
            "salto_drift",
            "[connecX] Salto access level 501-56 of Harbour View was changed outside connecX",
            &[
                "zone GAMES-ROOM: connecX had granted timetable 3",
                "put its grant back",
                "zone GYM: Salto holds no timetable, at any date",
                "left as it is",
                "salto_drift",
            ],
        );
    }

    #[test]
    fn an_undeliverable_result_names_who_was_not_reached_and_never_the_pin() {
        let granted = fixtures::visit_result(Event::VisitorAccessGranted, Some(PIN));
        let refused = mails_of(&granted, false);
        let told = undeliverable(&granted, &refused, MANAGERS[0]).unwrap();
        assert_eq!(told.to, MANAGERS[0]);
        reads(
            &told,
            "undeliverable",
            &format!("[connecX] Undeliverable: nobody could be mailed about booking {BOOKING}"),
            &[
                "visitor_access.granted.v1",
                &format!("\"Access code for Bo Tan's visit\" to {RESIDENT}"),
                &format!("to {VISITOR}"),
                "Harbour View",
            ],
        );
        does_not_say(&told, PIN);
    }

    #[test]
    fn a_dead_letter_alert_says_what_failed_why_and_how_to_replay_it() {
        let letter = fixtures::dead_letter("permanent", Some(fixtures::visit_booking_created()));
        let alert = dead_letter_alert(&letter, MANAGERS[0]).unwrap();
        assert_eq!(alert.to, MANAGERS[0]);
        reads(
            &alert,
            "dead_letter_alert",
            &format!("[connecX] Action needed: ipassan-sync failed for booking {BOOKING}"),
            &[
                "The visitor may not have a working access code.",
                "What failed:   ipassan-sync (visitor_booking.created.v1)",
                "Why:           iPassan answered 403 Access Denied",
                "Kind:          permanent",
                "Attempts:      3 (first failure 2026-11-23 10:00 UTC)",
                "Building:      Harbour View",
                "retrying will not help",
                &format!("notifier dead-letters replay {DEAD_LETTER}"),
                &format!("notifier dead-letters discard {DEAD_LETTER}"),
            ],
        );
        html_says(
            &alert,
            &["iPassan answered 403 Access Denied", "Harbour View"],
        );
    }

    #[test]
    fn a_dead_letter_alert_tells_what_to_do_for_each_kind_of_failure() {
        let result = fixtures::visit_result(Event::VisitorAccessGranted, Some(PIN));
        let exhausted = fixtures::dead_letter("transient_exhausted", Some(result));
        says(
            &dead_letter_alert(&exhausted, OPS).unwrap(),
            &[
                "may not have been told the outcome",
                "ipassan-sync kept failing with a temporary error",
            ],
        );
        let alert = dead_letter_alert(&fixtures::dead_letter("malformed", None), OPS).unwrap();
        reads(
            &alert,
            "dead_letter_alert",
            "[connecX] Action needed: ipassan-sync could not handle a message",
            &[
                "about an unknown booking",
                "Nothing was changed for it.",
                "probably sent by mistake",
            ],
        );
        does_not_say(&alert, "Building:");
        let broker = fixtures::dead_letter("broker:delivery_limit", None);
        says(
            &dead_letter_alert(&broker, OPS).unwrap(),
            &["The message broker gave up on it."],
        );
    }

    #[test]
    fn a_window_across_midnight_names_both_days_and_one_ending_at_midnight_ends_at_24_00() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        let at = |day: chrono::NaiveDate, h| day.and_hms_opt(h, 0, 0).unwrap();
        let next = day.succ_opt().unwrap();
        assert_eq!(
            local_window(at(day, 22), at(next, 0), "Australia/Sydney"),
            "Thursday 31 December 2026, 22:00–24:00 (Australia/Sydney)"
        );
        assert_eq!(
            local_window(at(day, 22), at(next, 2), "Australia/Sydney"),
            "Thursday 31 December 2026 22:00 – Friday 1 January 2027 02:00 (Australia/Sydney)"
        );
    }
}
