//! What the notifier decides, without I/O (docs/architecture.md, "Mails"): whether an event is
//! its to handle, what it must remember or look up about a visit first, which mails an outcome
//! or a dead letter produces and to whom, and who hears when every recipient refuses them.
//!
//! The handlers ([`crate::results`], [`crate::alerts`]) do the I/O these name, and
//! [`crate::mails`] writes each mail's text. Two rules run through it: a person hears only what
//! concerns them (a visitor hears of a cancellation only once they were sent a code; expiry,
//! the normal end of a booking, mails nobody), and a mail for managers goes to the ops address
//! when the building has none.

use contracts::{
    AccessFailure, Building, ConnectionHealth, Envelope, Event, FacilityAccessResult,
    RefusedFacilityRequest, RefusedVisitorRequest, SaltoDrift, TimetablesExhausted,
    VisitorAccessResult,
};

use crate::dead_letter::DeadLetter;

/// The events the notifier is not bound to, as a pattern: booking events and connection
/// changes (they are for the workers).
macro_rules! not_for_the_notifier {
    () => {
        contracts::booking_events!()
            | Event::IpassanConnectionChanged(_)
            | Event::SaltoConnectionChanged(_)
    };
}

/// Whether the notifier is bound to this kind of event. One it is not bound to arriving is a
/// binding gone wrong, for a person to see (a dead letter), not an event to drop.
pub fn is_for_the_notifier(event: &Event) -> bool {
    !matches!(event, not_for_the_notifier!())
}

/// What a result needs to know about its visit before its mails are decided
/// (`announced_visits`): a visitor hears of a cancellation only if they were sent a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitAnnouncement {
    /// The visitor is sent a code now: remember that they were.
    Record,
    /// A cancellation: whether the visitor was ever sent a code decides whether they hear of it.
    LookUp,
    /// Not a visit's access, or an outcome the visitor is not mailed about.
    NotNeeded,
}

pub fn visit_announcement(event: &Event) -> VisitAnnouncement {
    match event {
        Event::VisitorAccessGranted(_) | Event::VisitorAccessUpdated(_) => {
            VisitAnnouncement::Record
        }
        Event::VisitorAccessRevoked(_) => VisitAnnouncement::LookUp,
        _ => VisitAnnouncement::NotNeeded,
    }
}

/// How a visit's access went, as the resident hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitOutcome {
    Granted,
    Updated,
    Revoked,
    Failed,
}

/// What the visitor is sent with a visit's outcome: a calendar invite, or its cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitorInvite {
    /// The code and a new invite (access granted).
    New,
    /// The same code and the invite moved (access updated).
    Moved,
    /// The invite withdrawn (access revoked).
    Cancelled,
}

/// How a facility booking's access went, as the resident who booked hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FacilityOutcome {
    Granted,
    /// Another booking holds the slot: this one waits (the double booking).
    Deferred,
    Revoked,
    Failed,
}

/// A building's connection to iPassan or Salto, as its managers hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Failing for a while, and still failing.
    Down,
    /// Answering again.
    Recovered,
}

/// What a mail tells its recipient, with the event's part it is written from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum About<'a> {
    /// The resident hears how their visitor's access went.
    VisitToResident(&'a VisitorAccessResult, VisitOutcome),
    /// The visitor gets the code and an invite, or the invite withdrawn.
    VisitToVisitor(&'a VisitorAccessResult, VisitorInvite),
    /// A manager must act: a visit got no access.
    VisitFailedToManager(&'a VisitorAccessResult, &'a AccessFailure),
    /// The resident who booked hears how the facility access went.
    FacilityToBooker(&'a FacilityAccessResult, FacilityOutcome),
    /// A manager hears of a double booking, and whether to act (the building's policy).
    DoubleBookingToManager(&'a FacilityAccessResult),
    /// A manager must act: a facility booking got no access.
    FacilityFailedToManager(&'a FacilityAccessResult, &'a AccessFailure),
    /// A manager must act: a facility booking was refused (an ID missing, no Salto).
    FacilityRefusedToManager(&'a RefusedFacilityRequest),
    /// A manager must act: a visit with access was refused (no iPassan).
    VisitRefusedToManager(&'a RefusedVisitorRequest),
    /// A manager hears that the building's iPassan or Salto stopped answering, or answers again.
    ConnectionToManager(&'a ConnectionHealth, ConnectionState),
    /// Ops hear that a Salto server has no timetable ID left.
    TimetablesExhaustedToOps(&'a TimetablesExhausted),
    /// A manager hears what the nightly check found changed by hand in Salto.
    SaltoDriftToManager(&'a SaltoDrift),
}

/// One mail the notifier decided to send: to whom, and what it tells them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMail<'a> {
    pub to: String,
    pub about: About<'a>,
}

/// The mails `envelope` produces, in the order they go out (none for events nobody is mailed
/// about). `ops`: the address that stands in for a building without managers.
/// `visit_announced`: the visitor of this booking was already sent a code; only then is a
/// cancellation theirs to hear about.
pub fn result_mails<'a>(
    envelope: &'a Envelope,
    ops: &str,
    visit_announced: bool,
) -> Vec<PlannedMail<'a>> {
    use {FacilityOutcome as F, VisitOutcome as V, VisitorInvite as I};
    match &envelope.event {
        Event::VisitorAccessGranted(r) => visit_mails(r, V::Granted, Some(I::New), ops),
        Event::VisitorAccessUpdated(r) => visit_mails(r, V::Updated, Some(I::Moved), ops),
        Event::VisitorAccessRevoked(r) => {
            visit_mails(r, V::Revoked, visit_announced.then_some(I::Cancelled), ops)
        }
        Event::VisitorAccessFailed(r) => visit_mails(r, V::Failed, None, ops),
        Event::FacilityAccessGranted(r) => facility_mails(r, F::Granted, ops),
        Event::FacilityAccessDeferred(r) => facility_mails(r, F::Deferred, ops),
        Event::FacilityAccessFailed(r) => facility_mails(r, F::Failed, ops),
        Event::FacilityAccessRevoked(r) => facility_mails(r, F::Revoked, ops),
        // Expiry is the normal end of a booking; nobody needs a mail for it.
        Event::FacilityAccessExpired(_) => Vec::new(),
        Event::FacilityRequestRefused(r) => {
            to_managers(&r.building, ops, About::FacilityRefusedToManager(r))
        }
        Event::VisitorRequestRefused(r) => {
            to_managers(&r.building, ops, About::VisitRefusedToManager(r))
        }
        Event::ConnectionDown(h) => to_managers(
            &h.building,
            ops,
            About::ConnectionToManager(h, ConnectionState::Down),
        ),
        Event::ConnectionRecovered(h) => to_managers(
            &h.building,
            ops,
            About::ConnectionToManager(h, ConnectionState::Recovered),
        ),
        Event::TimetablesExhausted(t) => vec![PlannedMail {
            to: ops.to_owned(),
            about: About::TimetablesExhaustedToOps(t),
        }],
        Event::SaltoDriftFound(d) => to_managers(&d.building, ops, About::SaltoDriftToManager(d)),
        not_for_the_notifier!() => Vec::new(),
    }
}

/// The resident always; the visitor when there is an invite to send or withdraw; the managers
/// when a failure needs a person.
fn visit_mails<'a>(
    result: &'a VisitorAccessResult,
    outcome: VisitOutcome,
    invite: Option<VisitorInvite>,
    ops: &str,
) -> Vec<PlannedMail<'a>> {
    let booking = &result.booking;
    let mut mails = vec![PlannedMail {
        to: booking.resident.email.clone(),
        about: About::VisitToResident(result, outcome),
    }];
    if let Some(invite) = invite {
        mails.push(PlannedMail {
            to: booking.visitor.email.clone(),
            about: About::VisitToVisitor(result, invite),
        });
    }
    if outcome == VisitOutcome::Failed
        && let Some(failure) = needing_a_manager(result.failure.as_ref())
    {
        mails.extend(to_managers(
            &booking.building,
            ops,
            About::VisitFailedToManager(result, failure),
        ));
    }
    mails
}

/// The resident who booked when connecX knows their address; the managers of a double booking,
/// and of a failure that needs a person.
fn facility_mails<'a>(
    result: &'a FacilityAccessResult,
    outcome: FacilityOutcome,
    ops: &str,
) -> Vec<PlannedMail<'a>> {
    let booking = &result.booking;
    let mut mails = Vec::new();
    if let Some(email) = &booking.booked_by.email {
        mails.push(PlannedMail {
            to: email.clone(),
            about: About::FacilityToBooker(result, outcome),
        });
    }
    let for_managers = match outcome {
        FacilityOutcome::Deferred => Some(About::DoubleBookingToManager(result)),
        FacilityOutcome::Failed => needing_a_manager(result.failure.as_ref())
            .map(|failure| About::FacilityFailedToManager(result, failure)),
        FacilityOutcome::Granted | FacilityOutcome::Revoked => None,
    };
    if let Some(about) = for_managers {
        mails.extend(to_managers(&booking.building, ops, about));
    }
    mails
}

fn needing_a_manager(failure: Option<&AccessFailure>) -> Option<&AccessFailure> {
    failure.filter(|f| f.needs_manager)
}

/// Who stands for a building's management: its managers, or the ops address when it has none.
pub fn managers_or_ops(building: Option<&Building>, ops: &str) -> Vec<String> {
    match building {
        Some(building) if !building.manager_emails.is_empty() => building.manager_emails.clone(),
        _ => vec![ops.to_owned()],
    }
}

fn to_managers<'a>(building: &Building, ops: &str, about: About<'a>) -> Vec<PlannedMail<'a>> {
    managers_or_ops(Some(building), ops)
        .into_iter()
        .map(|to| PlannedMail { to, about })
        .collect()
}

/// Who hears that every recipient of a result's mails refused them for good: the building's
/// first manager, or ops.
pub fn undeliverable_recipient<'a>(envelope: &'a Envelope, ops: &'a str) -> &'a str {
    envelope
        .building()
        .and_then(|b| b.manager_emails.first())
        .map_or(ops, String::as_str)
}

/// Who is alerted to a dead letter: the managers of the building its event belongs to, or ops
/// when no building (or no manager) is known. Ops also hear of it when every one of them
/// refuses the alert for good.
pub fn dead_letter_recipients(letter: &DeadLetter, ops: &str) -> Vec<String> {
    managers_or_ops(letter.building(), ops)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use contracts::{DoubleBookingPolicy, Event};

    use super::*;
    use crate::fixtures::{self, MANAGERS, OPS, RESIDENT, VISITOR};

    /// Each planned mail as (recipient, what it is about), for comparing whole lists.
    fn planned(envelope: &Envelope, visit_announced: bool) -> Vec<(String, String)> {
        result_mails(envelope, OPS, visit_announced)
            .into_iter()
            .map(|m| (m.to, about_name(&m.about)))
            .collect()
    }

    fn about_name(about: &About<'_>) -> String {
        match about {
            About::VisitToResident(_, outcome) => format!("visit to resident: {outcome:?}"),
            About::VisitToVisitor(_, invite) => format!("visit to visitor: {invite:?}"),
            About::VisitFailedToManager(..) => "visit failed to manager".into(),
            About::FacilityToBooker(_, outcome) => format!("facility to booker: {outcome:?}"),
            About::DoubleBookingToManager(_) => "double booking to manager".into(),
            About::FacilityFailedToManager(..) => "facility failed to manager".into(),
            About::FacilityRefusedToManager(_) => "facility refused to manager".into(),
            About::VisitRefusedToManager(_) => "visit refused to manager".into(),
            About::ConnectionToManager(_, state) => format!("connection to manager: {state:?}"),
            About::TimetablesExhaustedToOps(_) => "timetables exhausted to ops".into(),
            About::SaltoDriftToManager(_) => "salto drift to manager".into(),
        }
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(to, about)| ((*to).to_owned(), (*about).to_owned()))
            .collect()
    }

    /// `first` to `to`, then `to_managers` to each manager of the fixtures' building.
    fn then_managers(to: &str, first: &str, to_managers: &str) -> Vec<(String, String)> {
        let mut expected = pairs(&[(to, first)]);
        expected.extend(managers(to_managers));
        expected
    }

    /// `about` to each manager of the fixtures' building.
    fn managers(about: &str) -> Vec<(String, String)> {
        pairs(&MANAGERS.map(|manager| (manager, about)))
    }

    #[test]
    fn a_granted_or_updated_visit_mails_the_resident_then_the_visitor_and_is_remembered() {
        let granted: fn(VisitorAccessResult) -> Event = Event::VisitorAccessGranted;
        let updated: fn(VisitorAccessResult) -> Event = Event::VisitorAccessUpdated;
        for (make, to_resident, to_visitor) in [
            (
                granted,
                "visit to resident: Granted",
                "visit to visitor: New",
            ),
            (
                updated,
                "visit to resident: Updated",
                "visit to visitor: Moved",
            ),
        ] {
            let result = fixtures::visit_result(make, Some("048213"));
            assert_eq!(
                planned(&result, false),
                pairs(&[(RESIDENT, to_resident), (VISITOR, to_visitor)])
            );
            assert_eq!(visit_announcement(&result.event), VisitAnnouncement::Record);
        }
    }

    #[test]
    fn a_cancelled_visit_reaches_the_visitor_only_when_they_were_sent_a_code() {
        let revoked = fixtures::visit_result(Event::VisitorAccessRevoked, None);
        assert_eq!(
            visit_announcement(&revoked.event),
            VisitAnnouncement::LookUp
        );
        assert_eq!(
            planned(&revoked, true),
            pairs(&[
                (RESIDENT, "visit to resident: Revoked"),
                (VISITOR, "visit to visitor: Cancelled")
            ])
        );
        assert_eq!(
            planned(&revoked, false),
            pairs(&[(RESIDENT, "visit to resident: Revoked")])
        );
    }

    #[test]
    fn a_failed_visit_tells_the_managers_only_when_a_person_must_act() {
        let needs_manager = fixtures::failed_visit(true);
        assert_eq!(
            planned(&needs_manager, false),
            then_managers(
                RESIDENT,
                "visit to resident: Failed",
                "visit failed to manager"
            )
        );
        assert_eq!(
            visit_announcement(&needs_manager.event),
            VisitAnnouncement::NotNeeded
        );
        assert_eq!(
            planned(&fixtures::failed_visit(false), false),
            pairs(&[(RESIDENT, "visit to resident: Failed")])
        );
    }

    #[test]
    fn facility_outcomes_reach_the_booker_and_double_bookings_and_failures_the_managers() {
        let outcome = |event: fn(FacilityAccessResult) -> Event, failure| {
            planned(
                &fixtures::facility_result(event, DoubleBookingPolicy::Auto, failure),
                false,
            )
        };
        assert_eq!(
            outcome(Event::FacilityAccessGranted, None),
            pairs(&[(RESIDENT, "facility to booker: Granted")])
        );
        assert_eq!(
            outcome(Event::FacilityAccessRevoked, None),
            pairs(&[(RESIDENT, "facility to booker: Revoked")])
        );
        assert_eq!(
            outcome(Event::FacilityAccessDeferred, None),
            then_managers(
                RESIDENT,
                "facility to booker: Deferred",
                "double booking to manager"
            )
        );
        assert_eq!(
            outcome(Event::FacilityAccessFailed, Some(fixtures::failure(true))),
            then_managers(
                RESIDENT,
                "facility to booker: Failed",
                "facility failed to manager"
            )
        );
        assert_eq!(
            outcome(Event::FacilityAccessFailed, Some(fixtures::failure(false))),
            pairs(&[(RESIDENT, "facility to booker: Failed")])
        );
        assert!(outcome(Event::FacilityAccessExpired, None).is_empty());
    }

    #[test]
    fn a_booker_without_an_address_is_not_mailed_and_a_building_without_managers_mails_ops() {
        let mut deferred = fixtures::facility_result(
            Event::FacilityAccessDeferred,
            DoubleBookingPolicy::Auto,
            None,
        );
        if let Event::FacilityAccessDeferred(r) = &mut deferred.event {
            r.booking.booked_by.email = None;
            r.booking.building.manager_emails.clear();
        }
        assert_eq!(
            planned(&deferred, false),
            pairs(&[(OPS, "double booking to manager")])
        );
        assert_eq!(undeliverable_recipient(&deferred, OPS), OPS);
    }

    #[test]
    fn refusals_outages_and_drift_go_to_the_managers_and_an_empty_timetable_pool_to_ops() {
        assert_eq!(
            planned(&fixtures::refused_facility("salto_not_connected"), false),
            pairs(&[
                (MANAGERS[0], "facility refused to manager"),
                (MANAGERS[1], "facility refused to manager"),
            ])
        );
        assert_eq!(
            planned(&fixtures::refused_visit(), false),
            pairs(&[
                (MANAGERS[0], "visit refused to manager"),
                (MANAGERS[1], "visit refused to manager"),
            ])
        );
        assert_eq!(
            planned(&fixtures::connection(None), false)[0],
            (
                MANAGERS[0].to_owned(),
                "connection to manager: Down".to_owned()
            )
        );
        let recovered = fixtures::connection(Some(42));
        assert_eq!(
            planned(&recovered, false)[1],
            (
                MANAGERS[1].to_owned(),
                "connection to manager: Recovered".to_owned()
            )
        );
        assert_eq!(
            planned(&fixtures::salto_drift(), false).len(),
            MANAGERS.len()
        );
        assert_eq!(
            planned(&fixtures::timetables_exhausted(), false),
            pairs(&[(OPS, "timetables exhausted to ops")])
        );
    }

    #[test]
    fn booking_events_and_connection_changes_are_not_for_the_notifier() {
        let created = fixtures::visit_booking_created();
        assert!(!is_for_the_notifier(&created.event));
        assert!(planned(&created, false).is_empty());
        let granted = fixtures::visit_result(Event::VisitorAccessGranted, Some("048213"));
        assert!(is_for_the_notifier(&granted.event));
    }

    #[test]
    fn an_undeliverable_result_is_told_to_the_first_manager() {
        let granted = fixtures::visit_result(Event::VisitorAccessGranted, Some("048213"));
        assert_eq!(undeliverable_recipient(&granted, OPS), MANAGERS[0]);
        assert_eq!(
            undeliverable_recipient(&fixtures::timetables_exhausted(), OPS),
            OPS,
            "a Salto server belongs to no one building"
        );
    }

    #[test]
    fn a_dead_letter_alerts_the_managers_of_its_building_or_else_ops() {
        let about_a_visit =
            fixtures::dead_letter("permanent", Some(fixtures::visit_booking_created()));
        assert_eq!(dead_letter_recipients(&about_a_visit, OPS), MANAGERS);
        let unreadable = fixtures::dead_letter("malformed", None);
        assert_eq!(dead_letter_recipients(&unreadable, OPS), [OPS]);
    }
}
