//! The ledger's rules as plain functions of their inputs, tested without a database or Salto:
//! what a booking event asks for, whether a slot can be granted, whether Salto's entry for a zone
//! is ours, what list to write so Salto matches the ledger, and when a night's clearing is due.

use std::collections::BTreeSet;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use contracts::{BookingState, Event, FacilityBooking};
use uuid::Uuid;

use super::{Held, LocalWindow, SlotKey};
use salto_ship::ZonePermission;

/// What the latest snapshot of a booking asks of Salto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Booked: hold this slot for this window.
    Hold { slot: SlotKey, window: LocalWindow },
    /// Cancelled: hold nothing.
    Release,
    /// Booked, but without the IDs Salto needs (booking-api should have refused it).
    MissingIds { missing: &'static str },
    /// Booked, but the building is connected to no Salto server (booking-api refuses these when
    /// it knows; a worker without the default it expected finds out here).
    NotConnected,
}

/// The facility booking an event carries, or `None` for anything else.
pub fn facility_booking(event: &Event) -> Option<&FacilityBooking> {
    match event {
        Event::FacilityBookingCreated(b)
        | Event::FacilityBookingRescheduled(b)
        | Event::FacilityBookingCancelled(b) => Some(b),
        _ => None,
    }
}

/// What the latest snapshot asks of Salto, with the building's server now (`None`: connected to
/// none).
pub fn intent_of(event: &Event, server: Option<&str>) -> Option<Intent> {
    let booking = facility_booking(event)?;
    let cancelled = matches!(event, Event::FacilityBookingCancelled(_))
        || booking.state == BookingState::Cancelled;
    if cancelled {
        return Some(Intent::Release);
    }
    let Some(server) = server else {
        return Some(Intent::NotConnected);
    };
    let slot = SlotKey::of(booking, server);
    if slot.level.access_level.is_empty() {
        return Some(Intent::MissingIds {
            missing: "the apartment's Access Control ID",
        });
    }
    if slot.zone.is_empty() {
        return Some(Intent::MissingIds {
            missing: "the facility's Access Control Facility ID",
        });
    }
    Some(Intent::Hold {
        slot,
        window: LocalWindow::of(booking),
    })
}

/// A version is acted on once: only a snapshot newer than the last outcome is acted on.
pub fn should_act(last_outcome_version: Option<i64>, snapshot_version: i64) -> bool {
    last_outcome_version.is_none_or(|done| done < snapshot_version)
}

/// What to do with a booking that wants a slot, given who holds the slot now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantDecision {
    /// The slot is free: write the permission.
    Grant,
    /// The booking already holds the slot with this window: nothing changes in Salto.
    AlreadyHeld,
    /// The booking holds the slot with another window (rescheduled): rewrite the permission.
    Move,
    /// Another booking holds the slot: a double booking.
    Defer { held_by: Uuid },
}

pub fn decide_grant(slot: Option<&Held>, booking_id: Uuid, window: &LocalWindow) -> GrantDecision {
    match slot {
        None => GrantDecision::Grant,
        Some(held) if held.booking_id != booking_id => GrantDecision::Defer {
            held_by: held.booking_id,
        },
        Some(held) if held.window == *window => GrantDecision::AlreadyHeld,
        Some(_) => GrantDecision::Move,
    }
}

/// What Salto shows for a zone the ledger does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaltoZone {
    /// No permission for the zone: free to write.
    Free,
    /// Exactly the permission we are about to write: an earlier attempt of ours that reached
    /// Salto but not the ledger (a timeout, a lost commit). Writing it again changes nothing.
    AlreadyOurs,
    /// A permission nobody in the ledger holds — made by hand at the console. Not overwritten.
    Unknown(ZonePermission),
}

pub fn salto_zone(salto: &[ZonePermission], wanted: &ZonePermission) -> SaltoZone {
    match salto.iter().find(|p| p.zone == wanted.zone) {
        None => SaltoZone::Free,
        Some(existing) if existing == wanted => SaltoZone::AlreadyOurs,
        Some(existing) => SaltoZone::Unknown(existing.clone()),
    }
}

/// The list to write so that Salto matches the ledger ("converge, don't replay"): every
/// permission the ledger wants in this access level, plus Salto's entries for zones the ledger
/// does not own, untouched. The ledger owns the zones it holds and the ones it just released.
/// `None` when Salto already shows exactly that.
pub fn converge_list(
    salto: &[ZonePermission],
    desired: &[ZonePermission],
    released_zones: &BTreeSet<String>,
) -> Option<Vec<ZonePermission>> {
    let owned: BTreeSet<&str> = desired
        .iter()
        .map(|p| p.zone.as_str())
        .chain(released_zones.iter().map(String::as_str))
        .collect();
    let mut list: Vec<ZonePermission> = salto
        .iter()
        .filter(|p| !owned.contains(p.zone.as_str()))
        .cloned()
        .collect();
    list.extend(desired.iter().cloned());
    let mut wanted = list.clone();
    wanted.sort();
    let mut current = salto.to_vec();
    current.sort();
    (wanted != current).then_some(list)
}

/// The local date whose clearing is due at `local_now`: today's once the clearing time has passed,
/// else yesterday's. Comparing wall-clock times makes DST harmless: a clearing time skipped by a
/// spring-forward is passed at the first minute after the gap, and one repeated by a fall-back
/// finds today's run already recorded.
pub fn due_clearing_date(local_now: NaiveDateTime, clearing: NaiveTime) -> NaiveDate {
    if local_now.time() >= clearing {
        local_now.date()
    } else {
        local_now.date().pred_opt().unwrap_or(local_now.date())
    }
}

/// A permission (or a wait) whose Period has ended by `today` (the building's local date).
pub fn has_ended(window: &LocalWindow, today: NaiveDate) -> bool {
    window.date < today
}

/// What the nightly reconciliation reports about an access level (docs/architecture.md,
/// "Facility bookings and the ledger"): a permission the ledger holds that Salto lost or holds
/// differently (changed by hand; the step puts it back), and a permission on a zone connecX
/// manages (`managed_zones`) that no booking holds (left as it is).
pub fn drift_findings(
    held: &[Held],
    salto: &[ZonePermission],
    managed_zones: &BTreeSet<String>,
) -> Vec<contracts::DriftFinding> {
    use contracts::{DriftFinding, DriftKind};
    let on_zone = |zone: &str| salto.iter().find(|p| p.zone == zone);
    let mut findings: Vec<DriftFinding> = held
        .iter()
        .filter(|h| !salto.contains(&h.permission()))
        .map(|h| DriftFinding {
            zone: h.slot.zone.clone(),
            kind: DriftKind::ChangedByHand,
            found: on_zone(&h.slot.zone).map_or_else(|| "none".to_owned(), describe),
            expected: Some(describe(&h.permission())),
        })
        .collect();
    findings.extend(
        salto
            .iter()
            .filter(|p| managed_zones.contains(&p.zone))
            .filter(|p| !held.iter().any(|h| h.slot.zone == p.zone))
            .map(|p| DriftFinding {
                zone: p.zone.clone(),
                kind: DriftKind::UnknownPermission,
                found: describe(p),
                expected: None,
            }),
    );
    findings.sort_by(|a, b| a.zone.cmp(&b.zone));
    findings
}

/// A finding as it is remembered, to report only what is new.
pub fn drift_key(finding: &contracts::DriftFinding) -> String {
    format!("{:?}/{}/{}", finding.kind, finding.zone, finding.found)
}

/// A permission in words, e.g. `timetable 42, 2026-12-03T00:00:00 to 2026-12-03T23:59:59`.
pub fn describe(permission: &ZonePermission) -> String {
    let timetable = permission
        .timetable
        .map_or_else(|| "no timetable".to_owned(), |t| format!("timetable {t}"));
    match permission.period {
        Some(period) => format!(
            "{timetable}, {} to {}",
            salto_ship::format_date_time(period.start),
            salto_ship::format_date_time(period.end)
        ),
        None => format!("{timetable}, at any date"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::AccessLevelKey;
    use salto_ship::Period;

    fn slot(zone: &str) -> SlotKey {
        SlotKey {
            level: AccessLevelKey {
                server: "http://salto.example".into(),
                access_level: "501-56".into(),
            },
            zone: zone.into(),
        }
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    fn window(d: u32, from: u32, to: u32) -> LocalWindow {
        LocalWindow {
            date: day(d),
            starts: from * 3600,
            ends: to * 3600,
        }
    }

    fn held(booking: Uuid, w: LocalWindow) -> Held {
        Held {
            slot: slot("GAMES"),
            building: "b".into(),
            booking_id: booking,
            version: 1,
            window: w,
            timetable: 1,
            period: Period::whole_day(w.date),
        }
    }

    fn permission(zone: &str, d: u32, timetable: u32) -> ZonePermission {
        ZonePermission {
            zone: zone.into(),
            timetable: Some(timetable),
            period: Some(Period::whole_day(day(d))),
        }
    }

    #[test]
    fn a_free_slot_is_granted_and_a_held_one_is_deferred_naming_its_holder() {
        let first = Uuid::new_v4();
        let second = Uuid::new_v4();
        let w = window(1, 18, 22);
        assert_eq!(decide_grant(None, first, &w), GrantDecision::Grant);
        assert_eq!(
            decide_grant(Some(&held(first, w)), second, &w),
            GrantDecision::Defer { held_by: first }
        );
    }

    #[test]
    fn the_holder_asking_again_changes_nothing_and_a_new_window_moves_the_permission() {
        let booking = Uuid::new_v4();
        let w = window(1, 18, 22);
        assert_eq!(
            decide_grant(Some(&held(booking, w)), booking, &w),
            GrantDecision::AlreadyHeld
        );
        assert_eq!(
            decide_grant(Some(&held(booking, w)), booking, &window(2, 18, 22)),
            GrantDecision::Move
        );
    }

    #[test]
    fn a_version_is_acted_on_once() {
        assert!(should_act(None, 1));
        assert!(should_act(Some(1), 2));
        assert!(!should_act(Some(2), 2));
        assert!(!should_act(Some(3), 2));
    }

    #[test]
    fn salto_entries_for_a_free_zone_are_ours_only_when_identical() {
        let wanted = permission("GAMES", 1, 7);
        assert_eq!(salto_zone(&[], &wanted), SaltoZone::Free);
        assert_eq!(
            salto_zone(&[permission("GYM", 1, 7), wanted.clone()], &wanted),
            SaltoZone::AlreadyOurs
        );
        let by_hand = permission("GAMES", 5, 7);
        assert_eq!(
            salto_zone(std::slice::from_ref(&by_hand), &wanted),
            SaltoZone::Unknown(by_hand)
        );
    }

    #[test]
    fn converging_keeps_foreign_zones_and_rewrites_only_what_the_ledger_owns() {
        let lobby = ZonePermission {
            zone: "LOBBY".into(),
            timetable: None,
            period: None,
        };
        let old_games = permission("GAMES", 1, 7);
        let gym = permission("GYM", 2, 8);
        let salto = vec![lobby.clone(), old_games.clone()];
        let released: BTreeSet<String> = ["GAMES".to_owned()].into();
        let list = converge_list(&salto, std::slice::from_ref(&gym), &released).unwrap();
        assert_eq!(list, vec![lobby.clone(), gym.clone()]);
        // Already converged: nothing to write (in any order).
        assert_eq!(
            converge_list(
                &[gym.clone(), lobby.clone()],
                std::slice::from_ref(&gym),
                &BTreeSet::new()
            ),
            None
        );
        // A grant the ledger holds but Salto lost is written again.
        assert_eq!(
            converge_list(
                std::slice::from_ref(&lobby),
                std::slice::from_ref(&gym),
                &BTreeSet::new()
            ),
            Some(vec![lobby, gym])
        );
    }

    #[test]
    fn a_booking_ending_at_the_next_midnight_ends_at_24_00_of_its_own_date() {
        use contracts::*;
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap();
        let booking = FacilityBooking {
            building: Building {
                id: "b".into(),
                name: "B".into(),
                timezone: "Australia/Sydney".into(),
                manager_emails: vec![],
                ipassan_site: None,
                double_booking_policy: DoubleBookingPolicy::Auto,
                connection_versions: Default::default(),
            },
            window: BookingWindow {
                starts_at: chrono::Utc::now(),
                ends_at: chrono::Utc::now(),
                local_starts_at: at("2026-12-01T20:00:00"),
                local_ends_at: at("2026-12-02T00:00:00"),
            },
            facility: Facility {
                id: "f".into(),
                name: "Games".into(),
                zone_id: "GAMES".into(),
            },
            apartment: Apartment {
                id: "a".into(),
                access_level_id: "501-56".into(),
            },
            booked_by: BookedBy {
                user_id: "u".into(),
                role: Role::Resident,
                name: None,
                email: None,
            },
            state: BookingState::Booked,
        };
        assert_eq!(
            LocalWindow::of(&booking),
            LocalWindow {
                date: day(1),
                starts: 20 * 3600,
                ends: 24 * 3600
            }
        );
        let mut no_zone = booking.clone();
        no_zone.facility.zone_id = " ".into();
        let server = Some("http://salto.example");
        assert!(matches!(
            intent_of(&Event::FacilityBookingCreated(no_zone), server),
            Some(Intent::MissingIds { .. })
        ));
        assert_eq!(
            intent_of(&Event::FacilityBookingCreated(booking.clone()), None),
            Some(Intent::NotConnected),
            "a booking of a building connected to no Salto"
        );
        assert_eq!(
            intent_of(&Event::FacilityBookingCancelled(booking), None),
            Some(Intent::Release),
            "a cancellation needs no server to say what it wants"
        );
    }

    #[test]
    fn the_clearing_is_due_for_today_only_after_the_clearing_time() {
        let clearing = NaiveTime::from_hms_opt(0, 5, 0).unwrap();
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap();
        assert_eq!(
            due_clearing_date(at("2026-12-02T00:04:59"), clearing),
            day(1)
        );
        assert_eq!(
            due_clearing_date(at("2026-12-02T00:05:00"), clearing),
            day(2)
        );
        assert_eq!(
            due_clearing_date(at("2026-12-02T15:00:00"), clearing),
            day(2)
        );
        assert!(has_ended(&window(1, 18, 24), day(2)));
        assert!(!has_ended(&window(2, 0, 1), day(2)));
    }
}
