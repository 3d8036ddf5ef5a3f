//! Which mails a result event causes, and their text. Pure: tests check the mails of every event
//! without SMTP or a database.

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::json;

use contracts::{
    AccessSystem, BookingWindow, ConnectionHealth, DoubleBookingPolicy, Envelope, Event,
    FacilityAccessResult, FacilityBooking, RefusedFacilityRequest, RefusedVisitorRequest,
    SaltoDrift, TimetablesExhausted, VisitorAccessResult, VisitorBooking,
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
        Event::VisitorRequestRefused(r) => refused_visit_mails(envelope, r, ops_address),
        Event::ConnectionDown(h) => connection_health_mails(h, "down", ops_address),
        Event::ConnectionRecovered(h) => connection_health_mails(h, "recovered", ops_address),
        Event::TimetablesExhausted(t) => timetables_exhausted_mails(t, ops_address),
        Event::SaltoDriftFound(d) => salto_drift_mails(d, ops_address),
        // Booking events and connection changes are not for the notifier (it is not bound to
        // them).
        Event::VisitorBookingCreated(_)
        | Event::VisitorBookingRescheduled(_)
        | Event::VisitorBookingCancelled(_)
        | Event::FacilityBookingCreated(_)
        | Event::FacilityBookingRescheduled(_)
        | Event::FacilityBookingCancelled(_)
        | Event::IpassanConnectionChanged(_)
        | Event::SaltoConnectionChanged(_) => Ok(Vec::new()),
    }
}

/// Events the notifier is not bound to (booking events, connection changes).
pub fn not_for_the_notifier(event: &Event) -> bool {
    matches!(
        event,
        Event::VisitorBookingCreated(_)
            | Event::VisitorBookingRescheduled(_)
            | Event::VisitorBookingCancelled(_)
            | Event::FacilityBookingCreated(_)
            | Event::FacilityBookingRescheduled(_)
            | Event::FacilityBookingCancelled(_)
            | Event::IpassanConnectionChanged(_)
            | Event::SaltoConnectionChanged(_)
    )
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
    let context = json!({
        "kind": "refused",
        "cause": if not_connected {
            "the building is connected to no Salto (access control) server".to_owned()
        } else {
            "an ID only a manager can set is missing".to_owned()
        },
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
    let subject = if not_connected {
        format!(
            "[connecX] Action needed: the {} cannot be booked until the building is connected to Salto",
            request.facility_name
        )
    } else {
        format!(
            "[connecX] Action needed: the {} cannot be booked until an Access Control ID is set",
            request.facility_name
        )
    };
    managers_or_ops(&request.building.manager_emails, ops)
        .iter()
        .map(|to| mail(to, subject.clone(), "manager_action", &context))
        .collect()
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
fn refused_visit_mails(
    envelope: &Envelope,
    request: &RefusedVisitorRequest,
    ops: &str,
) -> Result<Vec<Mail>, TemplateError> {
    let context = json!({
        "kind": "refused",
        "cause": "the building is connected to no iPassan (access control) tenant",
        "what": format!("{}'s visitor {} with building access", request.resident_name, request.visitor_name),
        "booking_id": envelope.booking_id,
        "window": window_text(&request.window, &request.building.timezone),
        "reason": request.failure.message,
        "code": request.failure.code,
        "resident_name": request.resident_name,
        "building_name": request.building.name,
        "action": not_connected_action(&request.building.id, AccessSystem::Ipassan),
    });
    let subject =
        "[connecX] Action needed: visitors cannot get access until the building is connected to iPassan"
            .to_owned();
    managers_or_ops(&request.building.manager_emails, ops)
        .iter()
        .map(|to| mail(to, subject.clone(), "manager_action", &context))
        .collect()
}

/// One mail per outage and building: when its iPassan or Salto has been failing for a while, and
/// when it works again.
fn connection_health_mails(
    health: &ConnectionHealth,
    kind: &str,
    ops: &str,
) -> Result<Vec<Mail>, TemplateError> {
    let building = &health.building;
    let zone = building.timezone.parse::<chrono_tz::Tz>().ok();
    let local = |at: chrono::DateTime<chrono::Utc>| match zone {
        Some(zone) => format!(
            "{} ({})",
            at.with_timezone(&zone).format("%A %-d %B %Y %H:%M"),
            building.timezone
        ),
        None => format!("{} UTC", at.format("%A %-d %B %Y %H:%M")),
    };
    let minutes = (health.recovered_at.unwrap_or_else(chrono::Utc::now) - health.failing_since)
        .num_minutes()
        .max(0);
    let context = json!({
        "kind": kind,
        "system_name": system_name(health.system),
        "endpoint": health.endpoint,
        "since": local(health.failing_since),
        "recovered_at": health.recovered_at.map(local),
        "minutes": minutes,
        "last_error": health.last_error,
        "building_name": building.name,
    });
    let subject = match kind {
        "down" => format!(
            "[connecX] {} of {} is not answering: bookings are waiting, nothing is lost",
            system_name(health.system),
            building.name
        ),
        _ => format!(
            "[connecX] {} of {} works again",
            system_name(health.system),
            building.name
        ),
    };
    managers_or_ops(&building.manager_emails, ops)
        .iter()
        .map(|to| mail(to, subject.clone(), "system_health", &context))
        .collect()
}

/// What is sent instead when every recipient of `mails` (the mails of `envelope`) refused them for
/// good: the building's first manager (or ops) hears who was not reached, and about what — the
/// subjects only, never a PIN.
pub fn undeliverable(
    envelope: &Envelope,
    mails: &[Mail],
    ops: &str,
) -> Result<Mail, TemplateError> {
    let building = envelope.building();
    let to = building
        .and_then(|b| b.manager_emails.first())
        .map_or(ops, String::as_str);
    let context = json!({
        "booking_id": envelope.booking_id.to_string(),
        "event_type": envelope.routing_key(),
        "mails": mails.iter().map(|m| json!({"subject": m.subject, "to": m.to})).collect::<Vec<_>>(),
        "building_name": building.map_or("connecX", |b| b.name.as_str()),
    });
    mail(
        to,
        format!(
            "[connecX] Undeliverable: nobody could be mailed about booking {}",
            envelope.booking_id
        ),
        "undeliverable",
        &context,
    )
}

/// The building's managers hear what the nightly check found changed by hand in Salto.
fn salto_drift_mails(drift: &SaltoDrift, ops: &str) -> Result<Vec<Mail>, TemplateError> {
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
    managers_or_ops(&drift.building.manager_emails, ops)
        .iter()
        .map(|to| mail(to, subject.clone(), "salto_drift", &context))
        .collect()
}

/// Ops hear that a Salto server has no timetable ID left.
fn timetables_exhausted_mails(
    exhausted: &TimetablesExhausted,
    ops: &str,
) -> Result<Vec<Mail>, TemplateError> {
    let context = json!({
        "kind": "exhausted",
        "system_name": "Salto",
        "endpoint": exhausted.server,
        "held_by_connecx": exhausted.held_by_connecx,
        "held_by_others": exhausted.held_by_others,
        "building_id": exhausted.building_id,
        "building_name": format!("Salto server {}", exhausted.server),
    });
    Ok(vec![mail(
        ops,
        format!(
            "[connecX] Salto server {} has no free timetable ID: facility bookings wait",
            exhausted.server
        ),
        "system_health",
        &context,
    )?])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::{TimeZone, Utc};
    use contracts::{AccessFailure, Building, ConnectionVersions};
    use uuid::Uuid;

    use super::*;

    const OPS: &str = "ops@connecx.example";

    fn building(managers: &[&str]) -> Building {
        Building {
            id: "harbour".into(),
            name: "Harbour View".into(),
            timezone: "Australia/Sydney".into(),
            manager_emails: managers.iter().map(|m| m.to_string()).collect(),
            ipassan_site: Some("site-7".into()),
            double_booking_policy: DoubleBookingPolicy::Auto,
            connection_versions: ConnectionVersions::default(),
        }
    }

    fn window() -> BookingWindow {
        let starts = Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap();
        let ends = Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).unwrap();
        BookingWindow {
            starts_at: starts,
            ends_at: ends,
            local_starts_at: starts
                .with_timezone(&chrono_tz::Australia::Sydney)
                .naive_local(),
            local_ends_at: ends
                .with_timezone(&chrono_tz::Australia::Sydney)
                .naive_local(),
        }
    }

    fn health(recovered: bool) -> ConnectionHealth {
        ConnectionHealth {
            building: building(&["m@harbour.example"]),
            system: AccessSystem::Salto,
            endpoint: "https://salto.harbour.example/".into(),
            failing_since: Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap(),
            last_error: "SaltoDBGroup.Read timed out after 10s".into(),
            recovered_at: recovered.then(|| Utc.with_ymd_and_hms(2026, 12, 1, 7, 42, 0).unwrap()),
        }
    }

    #[test]
    fn a_visit_refused_for_want_of_ipassan_tells_the_managers_to_have_it_connected() {
        let refused = Envelope::new(
            Uuid::nil(),
            1,
            Event::VisitorRequestRefused(RefusedVisitorRequest {
                building: building(&["m@harbour.example", "n@harbour.example"]),
                window: window(),
                resident_id: "ana".into(),
                resident_name: "Ana Lee".into(),
                visitor_name: "Bo Tan".into(),
                failure: AccessFailure {
                    code: "ipassan_not_connected".into(),
                    message: "building harbour is connected to no iPassan tenant".into(),
                    needs_manager: true,
                },
            }),
        );
        let mails = mails_for(&refused, OPS, false).unwrap();
        assert_eq!(
            mails.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(),
            ["m@harbour.example", "n@harbour.example"]
        );
        let text = &mails[0].text;
        for needle in [
            "Ana Lee's visitor Bo Tan",
            "connected to no iPassan",
            "ipassan_not_connected",
            "PUT /v1/buildings/harbour/connections/ipassan",
            "Tuesday 1 December 2026, 18:00–22:00 (Australia/Sydney)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(mails[0].html.contains("connected to no iPassan"));
    }

    #[test]
    fn an_outage_mail_says_nothing_is_lost_and_the_recovery_mail_says_how_long_it_lasted() {
        let down = Envelope::new(Uuid::nil(), 2, Event::ConnectionDown(health(false)));
        let mails = mails_for(&down, OPS, false).unwrap();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].to, "m@harbour.example");
        assert!(
            mails[0].subject.contains("nothing is lost"),
            "{}",
            mails[0].subject
        );
        for needle in [
            "Salto (facility access)",
            "Tuesday 1 December 2026 18:00 (Australia/Sydney)",
            "https://salto.harbour.example/",
            "timed out after 10s",
            "Bookings are waiting, nothing is lost",
        ] {
            assert!(
                mails[0].text.contains(needle),
                "{needle:?} missing:\n{}",
                mails[0].text
            );
        }

        let up = Envelope::new(Uuid::nil(), 3, Event::ConnectionRecovered(health(true)));
        let mails = mails_for(&up, OPS, false).unwrap();
        assert!(mails[0].subject.contains("works again"));
        assert!(mails[0].text.contains("18:42"), "{}", mails[0].text);
        assert!(mails[0].text.contains("42 minutes"), "{}", mails[0].text);
    }

    #[test]
    fn an_outage_of_a_building_without_managers_goes_to_ops() {
        let mut orphan = health(false);
        orphan.building.manager_emails.clear();
        let mails = mails_for(
            &Envelope::new(Uuid::nil(), 2, Event::ConnectionDown(orphan)),
            OPS,
            false,
        )
        .unwrap();
        assert_eq!(mails[0].to, OPS);
    }

    #[test]
    fn an_exhausted_timetable_pool_is_one_mail_to_ops_naming_the_server() {
        let exhausted = Envelope::new(
            Uuid::nil(),
            1,
            Event::TimetablesExhausted(TimetablesExhausted {
                server: "https://salto.harbour.example/".into(),
                held_by_connecx: 1000,
                held_by_others: 24,
                building_id: "harbour".into(),
            }),
        );
        let mails = mails_for(&exhausted, OPS, false).unwrap();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].to, OPS);
        assert!(mails[0].subject.contains("https://salto.harbour.example/"));
        assert!(
            mails[0].text.contains("1000 by connecX, 24 by others"),
            "{}",
            mails[0].text
        );
    }

    #[test]
    fn a_facility_booking_refused_for_want_of_salto_asks_for_the_connection() {
        let refused = Envelope::new(
            Uuid::nil(),
            1,
            Event::FacilityRequestRefused(RefusedFacilityRequest {
                building: building(&["m@harbour.example"]),
                window: window(),
                facility_id: "games-room".into(),
                facility_name: "Games room".into(),
                apartment_id: "apt-501".into(),
                booked_by: contracts::BookedBy {
                    user_id: "ana".into(),
                    role: contracts::Role::Resident,
                    name: Some("Ana Lee".into()),
                    email: Some("ana@example.com".into()),
                },
                failure: AccessFailure {
                    code: "salto_not_connected".into(),
                    message: "connected to no Salto".into(),
                    needs_manager: true,
                },
            }),
        );
        let mails = mails_for(&refused, OPS, false).unwrap();
        assert_eq!(mails.len(), 1);
        assert!(mails[0].subject.contains("connected to Salto"));
        assert!(
            mails[0]
                .text
                .contains("connected to no Salto (access control) server")
        );
        assert!(
            mails[0]
                .text
                .contains("PUT /v1/buildings/harbour/connections/salto")
        );
    }

    #[test]
    fn a_salto_drift_tells_the_managers_what_was_found_and_what_was_done() {
        use contracts::{DriftFinding, DriftKind};
        let drift = SaltoDrift {
            building: building(&["manager@harbour.example"]),
            server: "http://salto.harbour.example/".into(),
            access_level: "501-56".into(),
            findings: vec![
                DriftFinding {
                    zone: "GAMES-ROOM".into(),
                    kind: DriftKind::ChangedByHand,
                    found: "no timetable, at any date".into(),
                    expected: Some(
                        "timetable 3, 2026-12-03T00:00:00 to 2026-12-03T23:59:59".into(),
                    ),
                },
                DriftFinding {
                    zone: "GYM".into(),
                    kind: DriftKind::UnknownPermission,
                    found: "no timetable, at any date".into(),
                    expected: None,
                },
            ],
        };
        let envelope = Envelope::new(Uuid::new_v4(), 1, Event::SaltoDriftFound(drift));
        let mails = mails_for(&envelope, OPS, false).unwrap();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].to, "manager@harbour.example");
        assert!(mails[0].subject.contains("501-56"), "{}", mails[0].subject);
        let text = &mails[0].text;
        assert!(
            text.contains("zone GAMES-ROOM: connecX had granted timetable 3"),
            "{text}"
        );
        assert!(text.contains("put its grant back"), "{text}");
        assert!(
            text.contains("zone GYM: Salto holds no timetable, at any date"),
            "{text}"
        );
        assert!(
            text.contains("left as it is") && text.contains("salto_drift"),
            "{text}"
        );
    }
}
