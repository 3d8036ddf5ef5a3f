//! The ledger's rules as plain functions of their inputs, tested without a database or Salto:
//! what a booking event asks for; what the ledger should then hold for the booking and what its
//! result is ([`plan_booking`]); who is promoted to a slot that frees ([`judge_waiter`]); whether
//! Salto's entry for a zone is ours; what list to write so Salto matches the ledger; when a
//! night's clearing is due, and what it reports as changed outside connecX.
//!
//! The handler and the cleaner read the ledger under its locks, ask these functions, and carry
//! out the answer on the [`crate::ledger_transaction::LedgerTransaction`].

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use contracts::{
    AccessFailure, BookingState, DoubleBookingPolicy, Envelope, Event, FacilityBooking,
};
use uuid::Uuid;

use crate::ledger::{AccessLevelKey, BookingEntries, Held, LocalWindow, SlotKey, Waiting};
use crate::results::{self, Outcome};
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

/// The access level of the slot a booking names on `server`, when it names one. Every transaction
/// on the booking locks it, a cancellation's too: a grant of it that never committed may have
/// left an entry there to remove.
pub fn own_level(booking: &FacilityBooking, server: Option<&str>) -> Option<AccessLevelKey> {
    let level = SlotKey::of(booking, server?).level;
    (!level.access_level.is_empty()).then_some(level)
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

/// What a booking's latest snapshot does to the ledger, decided from what the ledger holds for it
/// and for the slot it asks for (read under their locks).
#[derive(Debug, Clone, PartialEq)]
pub struct BookingPlan {
    /// The slot the booking holds and gives up (cancelled, connected to no server any more, or
    /// moved to other IDs): its permission goes from Salto, and its first waiter is promoted.
    pub leave: Option<Held>,
    /// The booking's place in a queue goes.
    pub stop_waiting: bool,
    /// Where the booking ends up, and its result.
    pub then: Placement,
}

/// Where a booking ends up once [`BookingPlan::leave`] and [`BookingPlan::stop_waiting`] are
/// done.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// It holds nothing new; its result is `outcome`, with `failure` when it failed.
    Settled {
        outcome: Outcome,
        failure: Option<AccessFailure>,
    },
    /// It holds its own slot with this window (the same, or rescheduled): `granted`.
    Hold { slot: SlotKey, window: LocalWindow },
    /// The slot is free in the ledger: `granted`, unless Salto shows a permission for the zone
    /// that the ledger does not know ([`salto_zone`]); then `failed`, the booking waits no more,
    /// and the manager is told.
    HoldIfSaltoAgrees { slot: SlotKey, window: LocalWindow },
    /// Another booking holds the slot: `deferred`, naming it. With the policy `auto` the booking
    /// waits in the ledger (`queue`); with `manual` it does not, and the manager acts.
    Defer {
        held_by: Uuid,
        queue: Option<Waiting>,
        failure: AccessFailure,
    },
}

/// What `intent` (the latest snapshot, version `version`, of booking `booking_id`) does to the
/// ledger, given what the booking holds or waits for (`entries`) and who holds the slot it asks
/// for (`slot_holder`).
pub fn plan_booking(
    intent: Intent,
    booking_id: Uuid,
    version: i64,
    booking: &FacilityBooking,
    entries: BookingEntries,
    slot_holder: Option<&Held>,
) -> BookingPlan {
    let BookingEntries { held, waiting } = entries;
    let settled = |outcome, failure| Placement::Settled { outcome, failure };
    match intent {
        Intent::Release => BookingPlan {
            leave: held,
            stop_waiting: waiting.is_some(),
            then: settled(Outcome::Revoked, None),
        },
        // Whatever it held before (under a connection since removed) goes.
        Intent::NotConnected => BookingPlan {
            leave: held,
            stop_waiting: waiting.is_some(),
            then: settled(Outcome::Failed, Some(results::not_connected(booking))),
        },
        Intent::MissingIds { missing } => BookingPlan {
            leave: None,
            stop_waiting: false,
            then: settled(
                Outcome::Failed,
                Some(results::missing_ids(booking, missing)),
            ),
        },
        Intent::Hold { slot, window } => {
            // Leaving a slot of other IDs (the manager changed an Access Control ID): the old
            // grant is cleared under the IDs it was made with.
            let leave = held.filter(|h| h.slot != slot);
            let stop_waiting = waiting.is_some_and(|w| w.slot != slot);
            let then = match decide_grant(slot_holder, booking_id, &window) {
                GrantDecision::AlreadyHeld | GrantDecision::Move => {
                    Placement::Hold { slot, window }
                }
                GrantDecision::Grant => Placement::HoldIfSaltoAgrees { slot, window },
                GrantDecision::Defer { held_by } => {
                    let policy = booking.building.double_booking_policy;
                    let queue = (policy == DoubleBookingPolicy::Auto).then(|| Waiting {
                        slot,
                        building: booking.building.id.clone(),
                        booking_id,
                        version,
                        window,
                    });
                    Placement::Defer {
                        held_by,
                        queue,
                        failure: results::double_booking(policy, held_by),
                    }
                }
            };
            BookingPlan {
                leave,
                stop_waiting,
                then,
            }
        }
    }
}

/// What becomes of a booking waiting for a slot that is free. Waiters are judged in queue order
/// until one is promoted; those after it keep their place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaiterVerdict {
    /// Its snapshot is gone, or is not a facility booking: its wait goes.
    Drop,
    /// A newer version of the booking is on its way through the handler, which will place it;
    /// granting the old one here would act on an old truth. It keeps its place.
    PassOver,
    /// Its date has passed: its wait goes, and it is `expired`.
    Expire(FacilityBooking),
    /// It gets the slot: `granted`.
    Promote(FacilityBooking),
}

/// Judges `waiter` by its booking's latest snapshot, on the building's local date `today`.
pub fn judge_waiter(
    waiter: &Waiting,
    latest: Option<&Envelope>,
    today: NaiveDate,
) -> WaiterVerdict {
    let Some(envelope) = latest else {
        return WaiterVerdict::Drop;
    };
    if envelope.version != waiter.version {
        return WaiterVerdict::PassOver;
    }
    match facility_booking(&envelope.event) {
        None => WaiterVerdict::Drop,
        Some(booking) if has_ended(&waiter.window, today) => WaiterVerdict::Expire(booking.clone()),
        Some(booking) => WaiterVerdict::Promote(booking.clone()),
    }
}

/// Salto's entry for `zone`, if it shows one.
pub fn salto_entry<'a>(salto: &'a [ZonePermission], zone: &str) -> Option<&'a ZonePermission> {
    salto.iter().find(|p| p.zone == zone)
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
    match salto_entry(salto, &wanted.zone) {
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

/// Of the entries a write is about to leave in an access level (`wanted`, the ledger's), the
/// ones Salto does not show already (`salto`, its list as read under the lock): only these must
/// be noted before the write. Should the transaction then not commit, an entry Salto showed
/// before is still explained by whatever explained it before (the ledger as it was, or an
/// earlier note); a new one is explained only by its note. A write that only removes entries
/// (most of a night's clearing) notes nothing.
pub fn entries_new_to_salto(
    wanted: &[ZonePermission],
    salto: &[ZonePermission],
) -> Vec<ZonePermission> {
    wanted
        .iter()
        .filter(|entry| !salto.contains(entry))
        .cloned()
        .collect()
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

/// Whether the nightly reconciliation of `night` compares `level` although the night did not
/// touch it: the access levels are cut into `days` slices by a stable hash of their key, and
/// night after night the next slice is compared, so each level is compared once in every `days`
/// consecutive nights (every night when `days` is 1).
pub fn reconciled_tonight(level: &AccessLevelKey, night: NaiveDate, days: u32) -> bool {
    let days = u128::from(days.max(1));
    // UUID v5 is SHA-1 of the name: the same slice on every replica and every release.
    let hash = Uuid::new_v5(&Uuid::NAMESPACE_URL, level.lock_name().as_bytes()).as_u128();
    let night = u128::try_from(night.num_days_from_ce()).unwrap_or(0);
    hash % days == night % days
}

/// A permission (or a wait) whose Period has ended by `today` (the building's local date).
pub fn has_ended(window: &LocalWindow, today: NaiveDate) -> bool {
    window.date < today
}

/// The grants the ledger holds that Salto does not show as written: lost, or changed by hand.
/// Writing the access level puts them back.
pub fn grants_salto_lost<'a>(held: &'a [Held], salto: &[ZonePermission]) -> Vec<&'a Held> {
    held.iter()
        .filter(|h| !salto.contains(&h.permission()))
        .collect()
}

/// What the nightly reconciliation reports about an access level (docs/architecture.md,
/// "Facility bookings and the ledger"): a permission the ledger holds that Salto lost or holds
/// differently (changed by hand; the reconciliation puts it back), and a permission on a zone
/// connecX manages (`managed_zones`) that no booking holds (left as it is).
pub fn drift_findings(
    held: &[Held],
    salto: &[ZonePermission],
    managed_zones: &BTreeSet<String>,
) -> Vec<contracts::DriftFinding> {
    use contracts::{DriftFinding, DriftKind};
    let mut findings: Vec<DriftFinding> = grants_salto_lost(held, salto)
        .into_iter()
        .map(|h| DriftFinding {
            zone: h.slot.zone.clone(),
            kind: DriftKind::ChangedByHand,
            found: salto_entry(salto, &h.slot.zone).map_or_else(|| "none".to_owned(), describe),
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
    use salto_ship::Period;

    const SERVER: &str = "http://salto.example";

    fn slot(zone: &str) -> SlotKey {
        SlotKey {
            level: AccessLevelKey {
                server: SERVER.into(),
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

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    /// Apartment 501-56's booking of the games room, in building-local time.
    fn games_booking(starts: &str, ends: &str) -> FacilityBooking {
        use contracts::*;
        FacilityBooking {
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
                local_starts_at: at(starts),
                local_ends_at: at(ends),
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
    fn only_entries_salto_does_not_show_yet_are_noted_before_a_write() {
        let games = permission("GAMES", 1, 7);
        let gym = permission("GYM", 2, 8);
        let moved_gym = permission("GYM", 3, 8);
        // A clearing removing an ended entry: what stays is in Salto already.
        assert!(
            entries_new_to_salto(std::slice::from_ref(&gym), &[games.clone(), gym.clone()])
                .is_empty()
        );
        // A new grant, and an entry whose period changes, are new to Salto.
        assert_eq!(
            entries_new_to_salto(&[games.clone(), moved_gym.clone()], &[gym, games]),
            vec![moved_gym]
        );
    }

    #[test]
    fn a_booking_ending_at_the_next_midnight_ends_at_24_00_of_its_own_date() {
        let booking = games_booking("2026-12-01T20:00:00", "2026-12-02T00:00:00");
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
        let server = Some(SERVER);
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

    const ID: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    /// What the ledger does for version 2 of booking [`ID`] (`event` carries it), on `server`,
    /// holding or waiting as `entries` say, while `holder` holds the slot it asks for.
    fn plan(
        event: Event,
        server: Option<&str>,
        entries: BookingEntries,
        holder: Option<&Held>,
    ) -> BookingPlan {
        let booking = facility_booking(&event).unwrap().clone();
        let intent = intent_of(&event, server).unwrap();
        plan_booking(intent, ID, 2, &booking, entries, holder)
    }

    fn entries(held: Option<&Held>, waiting: Option<&Waiting>) -> BookingEntries {
        BookingEntries {
            held: held.cloned(),
            waiting: waiting.cloned(),
        }
    }

    /// The failure's code of a plan that settles the booking as failed.
    fn failure_code(then: Placement) -> String {
        match then {
            Placement::Settled {
                outcome: Outcome::Failed,
                failure: Some(failure),
            } => failure.code,
            other => panic!("not a failure: {other:?}"),
        }
    }

    fn evening() -> FacilityBooking {
        games_booking("2026-12-01T18:00:00", "2026-12-01T22:00:00")
    }

    fn waiting_for(zone: &str) -> Waiting {
        Waiting {
            slot: slot(zone),
            building: "b".into(),
            booking_id: ID,
            version: 1,
            window: window(1, 18, 22),
        }
    }

    #[test]
    fn a_cancellation_gives_up_the_held_slot_and_any_wait_and_is_revoked() {
        let held = held(ID, window(1, 18, 22));
        let cancelled = Event::FacilityBookingCancelled(evening());
        let both = entries(Some(&held), Some(&waiting_for("GYM")));
        let plan = plan(cancelled, Some(SERVER), both, None);
        assert_eq!((plan.leave, plan.stop_waiting), (Some(held), true));
        assert_eq!(
            plan.then,
            Placement::Settled {
                outcome: Outcome::Revoked,
                failure: None
            }
        );
    }

    #[test]
    fn a_booking_connected_to_no_server_gives_up_what_it_held_and_fails_for_the_manager() {
        let held = held(ID, window(1, 18, 22));
        let created = Event::FacilityBookingCreated(evening());
        let plan = plan(created, None, entries(Some(&held), None), None);
        assert_eq!((plan.leave, plan.stop_waiting), (Some(held), false));
        assert_eq!(failure_code(plan.then), "salto_not_connected");
    }

    #[test]
    fn a_booking_without_a_zone_fails_and_keeps_what_the_ledger_holds() {
        let mut booking = evening();
        booking.facility.zone_id = String::new();
        let held = held(ID, window(1, 18, 22));
        let rescheduled = Event::FacilityBookingRescheduled(booking);
        let plan = plan(rescheduled, Some(SERVER), entries(Some(&held), None), None);
        assert_eq!((plan.leave, plan.stop_waiting), (None, false));
        assert_eq!(failure_code(plan.then), "access_control_id_missing");
    }

    #[test]
    fn a_free_slot_is_held_if_salto_agrees_and_a_wait_elsewhere_ends() {
        let created = Event::FacilityBookingCreated(evening());
        let waiting = entries(None, Some(&waiting_for("GYM")));
        let plan = plan(created, Some(SERVER), waiting, None);
        assert_eq!((plan.leave, plan.stop_waiting), (None, true));
        let (slot, window) = (slot("GAMES"), window(1, 18, 22));
        assert_eq!(plan.then, Placement::HoldIfSaltoAgrees { slot, window });
    }

    #[test]
    fn the_holder_rescheduled_keeps_its_slot_with_the_new_window_without_asking_salto() {
        let held = held(ID, window(1, 18, 22));
        let booking = games_booking("2026-12-02T09:00:00", "2026-12-02T11:00:00");
        let rescheduled = Event::FacilityBookingRescheduled(booking);
        let plan = plan(
            rescheduled,
            Some(SERVER),
            entries(Some(&held), None),
            Some(&held),
        );
        assert_eq!((plan.leave, plan.stop_waiting), (None, false));
        let (slot, window) = (slot("GAMES"), window(2, 9, 11));
        assert_eq!(plan.then, Placement::Hold { slot, window });
    }

    #[test]
    fn a_booking_moved_to_another_zone_leaves_its_old_slot() {
        let mut in_the_gym = held(ID, window(1, 18, 22));
        in_the_gym.slot = slot("GYM");
        let rescheduled = Event::FacilityBookingRescheduled(evening());
        let plan = plan(
            rescheduled,
            Some(SERVER),
            entries(Some(&in_the_gym), None),
            None,
        );
        assert_eq!(plan.leave, Some(in_the_gym));
        assert!(matches!(plan.then, Placement::HoldIfSaltoAgrees { .. }));
    }

    #[test]
    fn a_slot_held_by_another_booking_defers_and_queues_only_under_the_auto_policy() {
        let holder = held(OTHER, window(1, 9, 10));
        let deferred = |policy| {
            let mut booking = evening();
            booking.building.double_booking_policy = policy;
            let created = Event::FacilityBookingCreated(booking);
            match plan(created, Some(SERVER), entries(None, None), Some(&holder)).then {
                Placement::Defer {
                    held_by,
                    queue,
                    failure,
                } => (held_by, queue, failure.needs_manager),
                other => panic!("not deferred: {other:?}"),
            }
        };
        let queued = Waiting {
            version: 2,
            ..waiting_for("GAMES")
        };
        assert_eq!(
            deferred(DoubleBookingPolicy::Auto),
            (OTHER, Some(queued), false)
        );
        assert_eq!(
            deferred(DoubleBookingPolicy::Manual),
            (OTHER, None, true),
            "the manager acts; nothing waits in the ledger"
        );
    }

    #[test]
    fn waiters_are_promoted_only_on_their_current_version_and_before_their_date_passes() {
        let waiter = waiting_for("GAMES");
        let booking = evening();
        let snapshot =
            |version| Envelope::new(ID, version, Event::FacilityBookingCreated(booking.clone()));
        assert_eq!(judge_waiter(&waiter, None, day(1)), WaiterVerdict::Drop);
        assert_eq!(
            judge_waiter(&waiter, Some(&snapshot(2)), day(1)),
            WaiterVerdict::PassOver,
            "a newer version is on its way"
        );
        assert_eq!(
            judge_waiter(&waiter, Some(&snapshot(1)), day(1)),
            WaiterVerdict::Promote(booking.clone())
        );
        assert_eq!(
            judge_waiter(&waiter, Some(&snapshot(1)), day(2)),
            WaiterVerdict::Expire(booking.clone())
        );
        let not_a_facility_booking = Envelope::new(
            ID,
            1,
            Event::FacilityAccessGranted(contracts::FacilityAccessResult {
                booking,
                held_by: None,
                held_by_window: None,
                failure: None,
            }),
        );
        assert_eq!(
            judge_waiter(&waiter, Some(&not_a_facility_booking), day(1)),
            WaiterVerdict::Drop
        );
    }

    #[test]
    fn a_grant_salto_lost_or_holds_otherwise_is_found_and_a_hand_made_one_on_a_managed_zone_too() {
        let games = held(ID, window(1, 18, 22));
        let lobby = permission("LOBBY", 1, 9);
        let gym = permission("GYM", 1, 9);
        let managed: BTreeSet<String> = ["GAMES".to_owned(), "GYM".to_owned()].into();
        assert!(grants_salto_lost(std::slice::from_ref(&games), &[games.permission()]).is_empty());
        let salto = [lobby, gym];
        assert_eq!(
            grants_salto_lost(std::slice::from_ref(&games), &salto),
            vec![&games]
        );
        let findings = drift_findings(std::slice::from_ref(&games), &salto, &managed);
        let kinds: Vec<_> = findings.iter().map(|f| (f.zone.as_str(), f.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("GAMES", contracts::DriftKind::ChangedByHand),
                ("GYM", contracts::DriftKind::UnknownPermission)
            ]
        );
        assert_eq!(findings[0].found, "none");
        assert_eq!(own_level(&evening(), None), None);
        assert_eq!(
            own_level(&evening(), Some(SERVER)),
            Some(slot("GAMES").level)
        );
    }

    #[test]
    fn every_access_level_is_reconciled_once_in_any_run_of_reconcile_days_nights() {
        let levels: Vec<AccessLevelKey> = (0..200)
            .map(|n| AccessLevelKey {
                server: SERVER.into(),
                access_level: format!("AL-{n}"),
            })
            .collect();
        let first = NaiveDate::from_ymd_opt(2026, 12, 28).unwrap();
        for start in 0..10 {
            let week: Vec<NaiveDate> = (0..7)
                .map(|d| first + chrono::Days::new(start + d))
                .collect();
            for level in &levels {
                let nights = week
                    .iter()
                    .filter(|night| reconciled_tonight(level, **night, 7))
                    .count();
                assert_eq!(nights, 1, "{level:?} from {}", week[0]);
            }
        }
        // The slices share the levels out: no night takes them all.
        let tonight = levels
            .iter()
            .filter(|level| reconciled_tonight(level, first, 7))
            .count();
        assert!((10..60).contains(&tonight), "{tonight} of 200");
        assert!(
            levels
                .iter()
                .all(|level| reconciled_tonight(level, first, 1)),
            "every level every night"
        );
    }
}
