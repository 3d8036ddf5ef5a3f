//! Access outcomes of a booking and the rule for applying result events to them.
//!
//! Workers publish `visitor_access.*` / `facility_access.*` results; booking-api keeps the latest
//! outcome on the booking so the app can show it (and the PIN). Results may arrive late, twice or
//! out of order (retries, replicas), so a result is applied only when it describes a booking
//! version at least as new as the one already applied — and, for the same version, only when it
//! happened no earlier (`deferred` then `granted` for v1 ends `granted`, whatever the delivery order).

use chrono::{DateTime, Utc};
use contracts::{AccessFailure, Event};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a booking's physical access stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessStatus {
    /// The booking asked for no access (visitor booking without `provide_access`).
    NotRequested,
    /// Asked for; the outcome is not known yet.
    Pending,
    Granted,
    /// The facility slot is held by another booking; granted when it frees (policy `auto`) or by
    /// the manager (policy `manual`).
    Deferred,
    Failed,
    Revoked,
    Expired,
}

impl AccessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRequested => "not_requested",
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    /// Reads a stored status; unknown text (never written by this service) reads as `pending`.
    pub fn from_stored(text: &str) -> Self {
        match text {
            "not_requested" => Self::NotRequested,
            "granted" => Self::Granted,
            "deferred" => Self::Deferred,
            "failed" => Self::Failed,
            "revoked" => Self::Revoked,
            "expired" => Self::Expired,
            _ => Self::Pending,
        }
    }
}

/// Which kind of booking a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingKind {
    Visitor,
    Facility,
}

/// What a result event says about a booking's access.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessOutcome {
    pub kind: BookingKind,
    pub status: AccessStatus,
    /// The visitor's PIN (granted / updated). Never logged: see the `Debug` impl.
    pub pin: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    /// The booking holding the slot (facility `deferred`).
    pub held_by: Option<Uuid>,
}

impl std::fmt::Debug for AccessOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessOutcome")
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .field("reason_code", &self.reason_code)
            .field("held_by", &self.held_by)
            .finish()
    }
}

/// The access outcome a result event reports, or `None` for events that are not results.
pub fn outcome_of(event: &Event) -> Option<AccessOutcome> {
    let visitor = |status, result: &contracts::VisitorAccessResult, keep_pin: bool| AccessOutcome {
        kind: BookingKind::Visitor,
        status,
        pin: if keep_pin { result.pin.clone() } else { None },
        reason_code: result.failure.as_ref().map(|f| f.code.clone()),
        reason: result.failure.as_ref().map(describe),
        held_by: None,
    };
    let facility = |status, result: &contracts::FacilityAccessResult| AccessOutcome {
        kind: BookingKind::Facility,
        status,
        pin: None,
        reason_code: result.failure.as_ref().map(|f| f.code.clone()),
        reason: result.failure.as_ref().map(describe),
        held_by: if status == AccessStatus::Deferred {
            result.held_by
        } else {
            None
        },
    };
    Some(match event {
        Event::VisitorAccessGranted(r) | Event::VisitorAccessUpdated(r) => {
            visitor(AccessStatus::Granted, r, true)
        }
        Event::VisitorAccessRevoked(r) => visitor(AccessStatus::Revoked, r, false),
        Event::VisitorAccessFailed(r) => visitor(AccessStatus::Failed, r, false),
        Event::FacilityAccessGranted(r) => facility(AccessStatus::Granted, r),
        Event::FacilityAccessDeferred(r) => facility(AccessStatus::Deferred, r),
        Event::FacilityAccessRevoked(r) => facility(AccessStatus::Revoked, r),
        Event::FacilityAccessExpired(r) => facility(AccessStatus::Expired, r),
        Event::FacilityAccessFailed(r) => facility(AccessStatus::Failed, r),
        contracts::booking_events!()
        | Event::FacilityRequestRefused(_)
        | Event::VisitorRequestRefused(_)
        | Event::IpassanConnectionChanged(_)
        | Event::SaltoConnectionChanged(_)
        | Event::ConnectionDown(_)
        | Event::ConnectionRecovered(_)
        | Event::TimetablesExhausted(_)
        | Event::SaltoDriftFound(_) => return None,
    })
}

fn describe(failure: &AccessFailure) -> String {
    failure.message.clone()
}

/// The result already applied to a booking: which booking version it described, and when it
/// happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedResult {
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
}

/// The version rule: apply `incoming` unless the booking already shows a result for a newer
/// version, or a later result for the same version. Applying the same result twice is harmless
/// (it writes the same values), so redelivery needs no special case.
pub fn should_apply(applied: Option<AppliedResult>, incoming: AppliedResult) -> bool {
    match applied {
        None => true,
        Some(applied) => {
            (incoming.version, incoming.occurred_at) >= (applied.version, applied.occurred_at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(version: i64, second: u32) -> AppliedResult {
        AppliedResult {
            version,
            occurred_at: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, second).unwrap(),
        }
    }

    #[test]
    fn the_first_result_is_applied() {
        assert!(should_apply(None, at(1, 0)));
    }

    #[test]
    fn a_result_for_an_older_version_is_ignored() {
        assert!(!should_apply(Some(at(2, 0)), at(1, 30)));
        assert!(should_apply(Some(at(1, 30)), at(2, 0)));
    }

    #[test]
    fn for_the_same_version_the_later_result_wins_and_a_duplicate_is_harmless() {
        assert!(should_apply(Some(at(1, 0)), at(1, 5)));
        assert!(!should_apply(Some(at(1, 5)), at(1, 0)));
        assert!(should_apply(Some(at(1, 5)), at(1, 5)));
    }

    #[test]
    fn stored_statuses_read_back() {
        for status in [
            AccessStatus::NotRequested,
            AccessStatus::Pending,
            AccessStatus::Granted,
            AccessStatus::Deferred,
            AccessStatus::Failed,
            AccessStatus::Revoked,
            AccessStatus::Expired,
        ] {
            assert_eq!(AccessStatus::from_stored(status.as_str()), status);
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
        }
    }

    #[test]
    fn the_pin_never_shows_in_debug_output() {
        let outcome = AccessOutcome {
            kind: BookingKind::Visitor,
            status: AccessStatus::Granted,
            pin: Some("048213".into()),
            reason_code: None,
            reason: None,
            held_by: None,
        };
        assert!(!format!("{outcome:?}").contains("048213"));
    }
}
