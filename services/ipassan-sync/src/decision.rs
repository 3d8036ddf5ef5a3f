//! What to do for a booking, decided from the stored latest snapshot and what this worker last
//! did for it (docs/architecture.md, "The version rule" and "Visitor bookings and iPassan"):
//! before any I/O, the [`NextAction`] on iPassan ([`next_action`]); after it, the result to
//! publish ([`result_to_publish`]).
//! Plain functions of their inputs, so the version rule, idempotency and the granted/updated
//! choice are tested without iPassan, a database or a broker.

use contracts::{AccessFailure, BookingState, VisitorBooking};

use crate::tenants::Tenant;
use ipassan_client::visit::{VisitWindow, VisitorName, split_name};

/// The result this worker last published for a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastPublished {
    Nothing,
    /// `granted` or `updated`, announcing this window.
    Access(VisitWindow),
    Revoked,
    /// `failed` with this reason code.
    Failed(String),
}

/// What this worker has done for a booking (its `visitor_access` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The latest version whose outcome is settled.
    pub version: i64,
    pub published: LastPublished,
    /// The site the visitor was made under (kept even if the building's site changes later).
    pub site: Option<String>,
    /// The tenant the visitor was made in (kept even if the building moves to another one).
    pub tenant: Tenant,
    pub visitor_id: Option<String>,
}

/// The building's iPassan, as this worker knows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildingIpassan {
    /// The building's own tenant (its key) and its site there.
    Own { tenant: String, site: String },
    /// The deployment default, with the building's `ipassan_site`.
    Default,
    /// No tenant of its own and no deployment default.
    NotConnected,
}

/// What to do on iPassan next for the stored latest snapshot. (One message is one step of the
/// worker runtime; this is what that step does in iPassan.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAction {
    /// This version was already handled: change nothing, publish nothing.
    AlreadyApplied,
    /// No access was asked for: nothing to do in iPassan.
    NothingToDo,
    /// Make sure the visitor exists for exactly `window` with a live PIN.
    Grant(GrantVisit),
    /// Make sure the visitor's PIN no longer opens anything, in `tenant`. Without a site nothing
    /// was ever made in iPassan, so there is nothing to revoke there.
    Revoke {
        tenant: Tenant,
        site: Option<String>,
    },
    /// Access cannot even be asked for; say why.
    Fail(AccessFailure),
}

/// Everything a grant needs from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantVisit {
    pub tenant: Tenant,
    pub site: String,
    /// The resident's iPassan person.
    pub visitee_id: String,
    pub name: VisitorName,
    pub email: String,
    pub window: VisitWindow,
}

/// Decides from the latest snapshot (`booking` at `version`), what was applied before, and the
/// building's iPassan now.
pub fn next_action(
    booking: &VisitorBooking,
    version: i64,
    applied: Option<&Applied>,
    building: &BuildingIpassan,
) -> NextAction {
    if applied.is_some_and(|a| a.version >= version) {
        return NextAction::AlreadyApplied;
    }
    if !booking.provide_access {
        return NextAction::NothingToDo;
    }
    // A visitor already made stays in the tenant and site it was made in (docs/architecture.md:
    // changed IDs and connections apply to later operations; existing grants are changed and
    // cleared under the ones they were made with).
    let made = applied.filter(|a| a.visitor_id.is_some());
    let (tenant, site) = match (made, building) {
        (Some(made), _) => (
            made.tenant.clone(),
            made.site
                .clone()
                .or_else(|| booking.building.ipassan_site.clone()),
        ),
        (None, BuildingIpassan::Own { tenant, site }) => {
            (Tenant::Own(tenant.clone()), Some(site.clone()))
        }
        (None, BuildingIpassan::Default) => {
            (Tenant::Default, booking.building.ipassan_site.clone())
        }
        (None, BuildingIpassan::NotConnected) => {
            if booking.state == BookingState::Cancelled {
                return NextAction::Revoke {
                    tenant: Tenant::Default,
                    site: None,
                };
            }
            return NextAction::Fail(failures::not_connected(&booking.building.name));
        }
    };
    if booking.state == BookingState::Cancelled {
        return NextAction::Revoke { tenant, site };
    }
    let Some(site) = site else {
        return NextAction::Fail(failures::building_without_site(&booking.building.name));
    };
    let Some(visitee_id) = booking.resident.ipassan_person_id.clone() else {
        return NextAction::Fail(failures::resident_not_synced(&booking.resident.name));
    };
    NextAction::Grant(GrantVisit {
        tenant,
        site,
        visitee_id,
        name: split_name(&booking.visitor.name),
        email: booking.visitor.email.clone(),
        window: VisitWindow::of(&booking.window),
    })
}

/// What the I/O achieved for the latest snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Achieved {
    Access { window: VisitWindow, pin: String },
    Revoked,
    Failed(AccessFailure),
}

/// The result event types this worker publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    Granted,
    Updated,
    Revoked,
    Failed,
}

impl ResultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Granted => "granted",
            ResultKind::Updated => "updated",
            ResultKind::Revoked => "revoked",
            ResultKind::Failed => "failed",
        }
    }
}

/// Which result to publish for a version just acted on: `granted` the first time access exists,
/// `updated` once it was announced before, `revoked` or `failed`. Every new version gets its
/// result, even when the outcome is the one already announced (the same failure after a
/// reschedule, or a window moved and moved back before this worker saw the middle version):
/// booking-api shows a rescheduled booking's access as `pending` until the result for the new
/// version arrives. A redelivered version never gets here ([`NextAction::AlreadyApplied`]).
pub fn result_to_publish(last: &LastPublished, achieved: &Achieved) -> Option<ResultKind> {
    Some(match (last, achieved) {
        (LastPublished::Access(_), Achieved::Access { .. }) => ResultKind::Updated,
        (_, Achieved::Access { .. }) => ResultKind::Granted,
        (_, Achieved::Revoked) => ResultKind::Revoked,
        (_, Achieved::Failed(_)) => ResultKind::Failed,
    })
}

/// What is on record after publishing `published` (or nothing) for `achieved`.
pub fn after_publishing(
    last: &LastPublished,
    achieved: &Achieved,
    published: Option<ResultKind>,
) -> LastPublished {
    if published.is_none() {
        return last.clone();
    }
    match achieved {
        Achieved::Access { window, .. } => LastPublished::Access(*window),
        Achieved::Revoked => LastPublished::Revoked,
        Achieved::Failed(failure) => LastPublished::Failed(failure.code.clone()),
    }
}

/// The reasons access can fail, in words for the resident and the manager.
pub mod failures {
    use contracts::AccessFailure;

    pub const VISITEE_NOT_FOUND: &str = "visitee_not_found";
    pub const VISITEE_HAS_NO_ACCESS_PROFILE: &str = "visitee_has_no_access_profile";
    pub const CREDENTIAL_REVOKED_IN_IPASSAN: &str = "credential_revoked_in_ipassan";
    pub const BUILDING_HAS_NO_IPASSAN_SITE: &str = "building_has_no_ipassan_site";
    pub const RESIDENT_NOT_SYNCED_TO_IPASSAN: &str = "resident_not_synced_to_ipassan";
    pub const IPASSAN_NOT_CONNECTED: &str = "ipassan_not_connected";
    pub const IPASSAN_REFUSED: &str = "ipassan_refused";
    pub const GAVE_UP: &str = "gave_up";

    /// ipassan-sync gave the booking up (every retry failed, or a failure no retry can help):
    /// its details are in the dead letter the managers are mailed.
    pub fn gave_up() -> AccessFailure {
        AccessFailure {
            code: GAVE_UP.into(),
            message: "connecX could not give the visitor access: iPassan did not work for this \
                      booking after every retry. The building manager has been sent the details."
                .into(),
            // The dead letter's alert has told the managers, with the details: one alert, not
            // two.
            needs_manager: false,
        }
    }

    /// iPassan refused the grant for good (400, 403, another 4xx): trying again changes
    /// nothing, a person must look at the building's iPassan.
    pub fn ipassan_refused(site: &str, refusal: &str) -> AccessFailure {
        AccessFailure {
            code: IPASSAN_REFUSED.into(),
            message: format!(
                "iPassan refused to give the visitor access at site {site}: {refusal}. The \
                 building manager must check the building's iPassan (its site, and what connecX \
                 may do there); then the booking can be made again."
            ),
            needs_manager: true,
        }
    }

    pub fn not_connected(building: &str) -> AccessFailure {
        AccessFailure {
            code: IPASSAN_NOT_CONNECTED.into(),
            message: format!(
                "The building {building} is connected to no iPassan, so visitors cannot be given \
                 access. connecX support must connect the building to its iPassan tenant."
            ),
            needs_manager: true,
        }
    }

    pub fn visitee_not_found(resident: &str, person_id: &str, site: &str) -> AccessFailure {
        AccessFailure {
            code: VISITEE_NOT_FOUND.into(),
            message: format!(
                "{resident}'s iPassan person {person_id} no longer exists at site {site}, so the \
                 visitor has no access. The building manager must link {resident} to an iPassan \
                 person again; then the booking can be made again."
            ),
            needs_manager: true,
        }
    }

    pub fn visitee_has_no_access_profile(
        resident: &str,
        person_id: &str,
        site: &str,
    ) -> AccessFailure {
        AccessFailure {
            code: VISITEE_HAS_NO_ACCESS_PROFILE.into(),
            message: format!(
                "{resident}'s iPassan person {person_id} at site {site} has no access profile, \
                 and a visitor's access is the visitee's profile, so the visitor has no access. \
                 The building manager must give {resident} an access profile in iPassan; then \
                 the booking can be made again."
            ),
            needs_manager: true,
        }
    }

    pub fn credential_revoked_in_ipassan(visitor_id: &str, site: &str) -> AccessFailure {
        AccessFailure {
            code: CREDENTIAL_REVOKED_IN_IPASSAN.into(),
            message: format!(
                "iPassan shows the visitor {visitor_id} at site {site} without a PIN: it was \
                 revoked outside connecX. The building manager must check iPassan; cancelling \
                 and booking again issues a new PIN."
            ),
            needs_manager: true,
        }
    }

    pub fn building_without_site(building: &str) -> AccessFailure {
        AccessFailure {
            code: BUILDING_HAS_NO_IPASSAN_SITE.into(),
            message: format!(
                "The building {building} has no iPassan site configured, so visitors cannot be \
                 given access. The building manager must set the building's iPassan site."
            ),
            needs_manager: true,
        }
    }

    pub fn resident_not_synced(resident: &str) -> AccessFailure {
        AccessFailure {
            code: RESIDENT_NOT_SYNCED_TO_IPASSAN.into(),
            message: format!(
                "{resident} is not linked to an iPassan person, so the visitor has no access. \
                 The building manager must link {resident} to iPassan."
            ),
            needs_manager: true,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::{Duration, NaiveDateTime, Utc};
    use contracts::{BookingWindow, Building, DoubleBookingPolicy, Resident, Visitor};

    use super::*;
    use ipassan_client::visit::parse_local;

    fn local(text: &str) -> NaiveDateTime {
        parse_local(text).unwrap()
    }

    fn booking(state: BookingState, provide_access: bool) -> VisitorBooking {
        let now = Utc::now();
        VisitorBooking {
            building: Building {
                id: "harbour".into(),
                name: "Harbour View".into(),
                timezone: "Australia/Sydney".into(),
                manager_emails: vec![],
                ipassan_site: Some("site-7".into()),
                double_booking_policy: DoubleBookingPolicy::Auto,
                connection_versions: Default::default(),
            },
            window: BookingWindow {
                starts_at: now,
                ends_at: now + Duration::hours(4),
                local_starts_at: local("2026-12-01T18:00:00"),
                local_ends_at: local("2026-12-01T22:00:00"),
            },
            resident: Resident {
                id: "ana".into(),
                name: "Ana Lee".into(),
                email: "ana@example.com".into(),
                apartment_id: "apt-501".into(),
                ipassan_person_id: Some("p-ana".into()),
            },
            visitor: Visitor {
                name: "Bo Tan".into(),
                email: "bo@example.com".into(),
            },
            provide_access,
            state,
        }
    }

    fn window(from: &str, to: &str) -> VisitWindow {
        VisitWindow {
            from: local(from),
            to: local(to),
        }
    }

    fn applied(version: i64, published: LastPublished) -> Applied {
        Applied {
            version,
            published,
            site: Some("site-7".into()),
            tenant: Tenant::Default,
            visitor_id: Some("v-1".into()),
        }
    }

    const DEFAULT: &BuildingIpassan = &BuildingIpassan::Default;

    #[test]
    fn a_new_booking_with_access_is_granted_for_its_local_window() {
        let action = next_action(&booking(BookingState::Booked, true), 1, None, DEFAULT);
        assert_eq!(
            action,
            NextAction::Grant(GrantVisit {
                tenant: Tenant::Default,
                site: "site-7".into(),
                visitee_id: "p-ana".into(),
                name: VisitorName {
                    first: "Bo".into(),
                    last: "Tan".into()
                },
                email: "bo@example.com".into(),
                window: window("2026-12-01T18:00:00", "2026-12-01T22:00:00"),
            })
        );
    }

    #[test]
    fn a_version_already_applied_changes_nothing() {
        let done = applied(2, LastPublished::Revoked);
        let cancelled = booking(BookingState::Cancelled, true);
        assert_eq!(
            next_action(&cancelled, 2, Some(&done), DEFAULT),
            NextAction::AlreadyApplied
        );
        assert_eq!(
            next_action(&cancelled, 1, Some(&done), DEFAULT),
            NextAction::AlreadyApplied
        );
        assert!(matches!(
            next_action(&cancelled, 3, Some(&done), DEFAULT),
            NextAction::Revoke { .. }
        ));
    }

    #[test]
    fn a_visitor_already_made_is_changed_and_revoked_under_the_site_it_was_made_in() {
        let made = Applied {
            site: Some("old-site".into()),
            ..applied(1, LastPublished::Nothing)
        };
        let mut moved = booking(BookingState::Cancelled, true);
        moved.building.ipassan_site = Some("new-site".into());
        assert_eq!(
            next_action(&moved, 2, Some(&made), DEFAULT),
            NextAction::Revoke {
                tenant: Tenant::Default,
                site: Some("old-site".into())
            }
        );
        moved.state = BookingState::Booked;
        let NextAction::Grant(grant) = next_action(&moved, 2, Some(&made), DEFAULT) else {
            panic!("expected a grant")
        };
        assert_eq!(grant.site, "old-site");
        let never_made = Applied {
            visitor_id: None,
            ..made
        };
        let NextAction::Grant(grant) = next_action(&moved, 2, Some(&never_made), DEFAULT) else {
            panic!("expected a grant")
        };
        assert_eq!(grant.site, "new-site");
    }

    #[test]
    fn a_new_visitor_goes_to_the_buildings_own_tenant_and_a_made_one_stays_where_it_is() {
        let own = BuildingIpassan::Own {
            tenant: "https://bay#c".into(),
            site: "bay-site".into(),
        };
        let NextAction::Grant(grant) =
            next_action(&booking(BookingState::Booked, true), 1, None, &own)
        else {
            panic!("expected a grant")
        };
        assert_eq!(
            (grant.tenant, grant.site.as_str()),
            (Tenant::Own("https://bay#c".into()), "bay-site")
        );
        // Made in the default tenant before the building got its own: changed and revoked there.
        let made = applied(1, LastPublished::Nothing);
        let NextAction::Grant(grant) =
            next_action(&booking(BookingState::Booked, true), 2, Some(&made), &own)
        else {
            panic!("expected a grant")
        };
        assert_eq!(
            (grant.tenant, grant.site.as_str()),
            (Tenant::Default, "site-7")
        );
        assert_eq!(
            next_action(
                &booking(BookingState::Cancelled, true),
                2,
                Some(&made),
                &own
            ),
            NextAction::Revoke {
                tenant: Tenant::Default,
                site: Some("site-7".into())
            }
        );
    }

    #[test]
    fn a_building_connected_to_nothing_fails_and_has_nothing_to_revoke() {
        let nothing = &BuildingIpassan::NotConnected;
        let NextAction::Fail(failure) =
            next_action(&booking(BookingState::Booked, true), 1, None, nothing)
        else {
            panic!("expected a failure")
        };
        assert_eq!(failure.code, failures::IPASSAN_NOT_CONNECTED);
        assert_eq!(
            next_action(&booking(BookingState::Cancelled, true), 2, None, nothing),
            NextAction::Revoke {
                tenant: Tenant::Default,
                site: None
            }
        );
    }

    #[test]
    fn without_provide_access_nothing_is_done() {
        for state in [BookingState::Booked, BookingState::Cancelled] {
            assert_eq!(
                next_action(&booking(state, false), 1, None, DEFAULT),
                NextAction::NothingToDo
            );
        }
    }

    #[test]
    fn a_cancellation_revokes_even_if_nothing_was_granted_yet() {
        // "created v1 still retrying when cancelled v2 arrives": v2 is the stored latest.
        assert_eq!(
            next_action(&booking(BookingState::Cancelled, true), 2, None, DEFAULT),
            NextAction::Revoke {
                tenant: Tenant::Default,
                site: Some("site-7".into())
            }
        );
    }

    #[test]
    fn a_booking_ipassan_cannot_be_asked_about_fails_with_a_reason_for_the_manager() {
        let mut no_site = booking(BookingState::Booked, true);
        no_site.building.ipassan_site = None;
        let NextAction::Fail(failure) = next_action(&no_site, 1, None, DEFAULT) else {
            panic!("expected a failure")
        };
        assert_eq!(failure.code, failures::BUILDING_HAS_NO_IPASSAN_SITE);
        assert!(failure.needs_manager);

        let mut unsynced = booking(BookingState::Booked, true);
        unsynced.resident.ipassan_person_id = None;
        let NextAction::Fail(failure) = next_action(&unsynced, 1, None, DEFAULT) else {
            panic!("expected a failure")
        };
        assert_eq!(failure.code, failures::RESIDENT_NOT_SYNCED_TO_IPASSAN);
        assert!(failure.message.contains("Ana Lee"));
    }

    #[test]
    fn access_is_granted_the_first_time_and_updated_after_that() {
        let evening = window("2026-12-01T18:00:00", "2026-12-01T22:00:00");
        let morning = window("2026-12-02T09:00:00", "2026-12-02T11:00:00");
        let access = |window| Achieved::Access {
            window,
            pin: "012345".into(),
        };
        assert_eq!(
            result_to_publish(&LastPublished::Nothing, &access(evening)),
            Some(ResultKind::Granted)
        );
        assert_eq!(
            result_to_publish(&LastPublished::Access(evening), &access(morning)),
            Some(ResultKind::Updated)
        );
        assert_eq!(
            result_to_publish(&LastPublished::Access(evening), &access(evening)),
            Some(ResultKind::Updated),
            "moved and moved back: the new version still needs its result"
        );
        assert_eq!(
            result_to_publish(
                &LastPublished::Failed("visitee_not_found".into()),
                &access(evening)
            ),
            Some(ResultKind::Granted),
            "access after a failure is the first grant"
        );
    }

    #[test]
    fn every_new_version_gets_its_result_even_the_same_failure_again() {
        let failure = |code: &str| {
            Achieved::Failed(AccessFailure {
                code: code.into(),
                message: "m".into(),
                needs_manager: true,
            })
        };
        assert_eq!(
            result_to_publish(&LastPublished::Nothing, &Achieved::Revoked),
            Some(ResultKind::Revoked)
        );
        assert_eq!(
            result_to_publish(&LastPublished::Nothing, &failure("a")),
            Some(ResultKind::Failed)
        );
        // A rescheduled booking whose visitee still has no access profile: booking-api shows the
        // new version `pending` until this result comes.
        assert_eq!(
            result_to_publish(&LastPublished::Failed("a".into()), &failure("a")),
            Some(ResultKind::Failed)
        );
        assert_eq!(
            result_to_publish(&LastPublished::Failed("a".into()), &failure("b")),
            Some(ResultKind::Failed)
        );
    }

    #[test]
    fn the_record_follows_what_was_published() {
        let evening = window("2026-12-01T18:00:00", "2026-12-01T22:00:00");
        let achieved = Achieved::Access {
            window: evening,
            pin: "1".into(),
        };
        assert_eq!(
            after_publishing(
                &LastPublished::Nothing,
                &achieved,
                Some(ResultKind::Granted)
            ),
            LastPublished::Access(evening)
        );
        assert_eq!(
            after_publishing(&LastPublished::Revoked, &achieved, None),
            LastPublished::Revoked
        );
    }
}
