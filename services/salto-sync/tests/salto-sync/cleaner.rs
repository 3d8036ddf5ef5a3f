//! The nightly cleaner with a driven clock: once per building-local date across replicas, right
//! across both Australian DST changes, granting what waited and repairing what Salto lost.
//!
//! After moving the clock a test does not wait a while for the replicas' own ticks: it has every
//! replica's cleaner tick once at the new time, then waits until the night that is due has
//! finished (its row in `cleaner_runs`), whichever replica ran it. What the run published was
//! published before that row was committed.

use chrono::{DateTime, NaiveDate, Utc};
use contracts::{DriftKind, Event, SaltoDrift};
use testkit::EventTap;
use uuid::Uuid;

use crate::support::{APARTMENT, Booking, DELIVERED, GAMES, GYM, Harness, sydney, until};
use salto_sync::CleanerSettings;

fn every_second(local_time: &str) -> CleanerSettings {
    CleanerSettings {
        local_time: local_time.into(),
        tick: "*/1 * * * * *".into(),
        reconcile: true,
        // Every access level every night: these nights are about what reconciliation finds.
        reconcile_days: 1,
        ..CleanerSettings::default()
    }
}

/// The nights cleared so far.
async fn runs(h: &Harness) -> Vec<NaiveDate> {
    let pool = h.db.pool(salto_sync::SCHEMA).await;
    sqlx::query_scalar(
        "SELECT local_date FROM cleaner_runs WHERE finished_at IS NOT NULL ORDER BY local_date",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// What a night's clearing did, as its run records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Night {
    expired: i32,
    granted: i32,
}

/// A night that found nothing ended.
const NOTHING: Night = Night {
    expired: 0,
    granted: 0,
};

/// Waits until the clearing of `night` has finished: what it did.
async fn cleared(h: &Harness, night: &str) -> Night {
    let pool = h.db.pool(salto_sync::SCHEMA).await;
    let finished = || {
        sqlx::query_as::<_, (i32, i32)>(
            "SELECT expired, granted FROM cleaner_runs
              WHERE local_date = $1 AND finished_at IS NOT NULL",
        )
        .bind(date(night))
        .fetch_optional(&pool)
    };
    until(&format!("the clearing of {night}"), async || {
        finished().await.unwrap().is_some()
    })
    .await;
    let (expired, granted) = finished().await.unwrap().unwrap();
    Night { expired, granted }
}

/// Moves the clock to `now`, has every replica's cleaner tick there, and waits until the clearing
/// of `night` (the night due at `now`) has finished, now or before: what it did.
async fn cleared_at(h: &Harness, now: DateTime<Utc>, night: &str) -> Night {
    h.clock.set(now);
    h.tick_every_replica().await;
    cleared(h, night).await
}

/// Moves the clock to `now`, where `night` is due, and sees its clearing expire `booking` and
/// nothing else.
async fn expired_at(h: &mut Harness, now: DateTime<Utc>, night: &str, booking: Uuid) {
    let expired_one = Night {
        expired: 1,
        granted: 0,
    };
    assert_eq!(cleared_at(h, now, night).await, expired_one, "{night}");
    assert_eq!(
        h.results(1).await,
        vec![("facility_access.expired.v1", booking)]
    );
}

/// Moves the clock to `now`, where the night due is done already, and sees every replica's
/// cleaner run nothing there.
async fn nothing_runs_at(h: &mut Harness, now: DateTime<Utc>) {
    h.clock.set(now);
    assert_eq!(h.tick_every_replica().await, vec![]);
    h.no_more_results().await;
}

#[tokio::test]
async fn after_midnight_two_replicas_clear_ended_permissions_once_and_grant_the_waiting_booking() {
    let mut h =
        Harness::start_with(every_second("00:05"), sydney("2026-11-30", "12:00:00"), 2).await;
    let games = Booking::games("2026-12-01");
    let gym = Booking::games("2026-12-01").zone(GYM);
    let waiting = Booking::games("2026-12-02");
    h.publish(&games.created()).await;
    h.publish(&gym.created()).await;
    h.results(2).await;
    assert_eq!(
        h.publish_for_result(&waiting.created()).await.routing_key(),
        "facility_access.deferred.v1"
    );

    // Just before the clearing time only the night before is cleared, and nothing had ended by
    // then.
    let night_before = cleared_at(&h, sydney("2026-12-02", "00:04:00"), "2026-12-01").await;
    assert_eq!(night_before, NOTHING);
    h.no_more_results().await;
    assert_eq!(h.permissions(APARTMENT).await.len(), 2);

    let night = cleared_at(&h, sydney("2026-12-02", "00:06:00"), "2026-12-02").await;
    assert_eq!(
        night,
        Night {
            expired: 2,
            granted: 1
        }
    );
    let mut expected = vec![
        ("facility_access.expired.v1", games.id),
        ("facility_access.expired.v1", gym.id),
        ("facility_access.granted.v1", waiting.id),
    ];
    expected.sort();
    assert_eq!(h.results(3).await, expected);
    let left = h.permissions(APARTMENT).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(h.opens(GAMES, APARTMENT, "2026-12-02T19:00:00").await);
    assert!(!h.opens(GYM, APARTMENT, "2026-12-02T19:00:00").await);

    // Later the same night, and with a third replica starting (it catches up at start): nothing
    // runs twice.
    let later = sydney("2026-12-02", "03:00:00");
    h.clock.set(later);
    h.start_replica().await;
    nothing_runs_at(&mut h, later).await;
    let runs = runs(&h).await;
    assert!(
        runs.ends_with(&[date("2026-12-01"), date("2026-12-02")]),
        "{runs:?}"
    );
}

#[tokio::test]
async fn the_clearing_runs_once_per_night_across_both_daylight_saving_changes() {
    // 02:30 does not exist in Sydney on 4 October 2026 and happens twice on 5 April 2026.
    let mut h =
        Harness::start_with(every_second("02:30"), sydney("2026-04-04", "12:00:00"), 2).await;

    // Autumn: clocks go back from 03:00 to 02:00 on 5 April.
    let april = Booking::games("2026-04-04");
    assert_eq!(
        h.publish_for_result(&april.created()).await.routing_key(),
        "facility_access.granted.v1"
    );
    // The first 02:29 (AEDT): still the night of the 4th.
    let first_0229 = sydney("2026-04-05", "02:29:00");
    assert_eq!(cleared_at(&h, first_0229, "2026-04-04").await, NOTHING);
    h.no_more_results().await;
    let first_0231 = sydney("2026-04-05", "02:31:00");
    expired_at(&mut h, first_0231, "2026-04-05", april.id).await;
    let april_next = Booking::games("2026-04-05").zone(GYM);
    let granted = h.publish_for_result(&april_next.created()).await;
    assert_eq!(granted.routing_key(), "facility_access.granted.v1");
    // The second 02:31 of the night, an hour later: the night is done, nothing repeats.
    nothing_runs_at(&mut h, first_0231 + chrono::Duration::hours(1)).await;
    let next_night = sydney("2026-04-06", "02:31:00");
    expired_at(&mut h, next_night, "2026-04-06", april_next.id).await;

    // Spring: clocks jump from 02:00 to 03:00 on 4 October; 02:30 is skipped. The night of 3
    // October is cleared as the clock moves there, before the booking.
    let october_day = sydney("2026-10-03", "12:00:00");
    assert_eq!(cleared_at(&h, october_day, "2026-10-03").await, NOTHING);
    let october = Booking::games("2026-10-03");
    let granted = h.publish_for_result(&october.created()).await;
    assert_eq!(granted.routing_key(), "facility_access.granted.v1");
    nothing_runs_at(&mut h, sydney("2026-10-04", "01:59:00")).await;
    // The first minute after the gap.
    let after_the_gap = sydney("2026-10-04", "03:00:00");
    expired_at(&mut h, after_the_gap, "2026-10-04", october.id).await;
    nothing_runs_at(&mut h, sydney("2026-10-04", "04:00:00")).await;

    assert_eq!(
        runs(&h).await,
        vec![
            date("2026-04-04"),
            date("2026-04-05"),
            date("2026-04-06"),
            date("2026-10-03"),
            date("2026-10-04"),
        ]
    );
    assert!(h.permissions(APARTMENT).await.is_empty());
}

#[tokio::test]
async fn the_nightly_reconciliation_re_applies_a_grant_salto_lost() {
    let mut h =
        Harness::start_with(every_second("00:05"), sydney("2026-11-30", "12:00:00"), 1).await;
    // The managers' reports, bound as the notifier's queue binds them.
    let mut reports = h.broker.tap("salto_server.#").await;
    let booking = Booking::games("2026-12-03");
    h.publish_for_result(&booking.created()).await;
    // The building's first night is cleared as soon as the booking made it known.
    cleared(&h, "2026-11-30").await;

    // Someone empties the apartment's list in Salto.
    h.set_by_hand(APARTMENT, "").await;
    assert!(h.permissions(APARTMENT).await.is_empty());

    let night = cleared_at(&h, sydney("2026-12-01", "00:06:00"), "2026-12-01").await;
    assert_eq!(night, NOTHING, "a repair expires and grants nothing");
    // A repair is not news to the resident, only to the managers.
    assert!(h.opens(GAMES, APARTMENT, "2026-12-03T19:00:00").await);
    h.no_more_results().await;
    let report = next_drift_report(&mut reports).await;
    assert_eq!(finding_kinds(&report), [(GAMES, DriftKind::ChangedByHand)]);
}

#[tokio::test]
async fn an_access_level_the_cleaner_cannot_clear_reaches_the_managers_and_the_night_still_ends() {
    let mut h =
        Harness::start_with(every_second("00:05"), sydney("2026-11-30", "12:00:00"), 1).await;
    let mut dead = h.dead_letters().await;
    let booking = Booking::games("2026-12-01");
    h.publish_for_result(&booking.created()).await;
    // The building's first night is cleared before Salto goes wrong.
    cleared(&h, "2026-11-30").await;

    // Salto no longer knows the apartment's access level: nothing a retry can change.
    h.fault("SaltoDBGroup.Read", serde_json::json!({"code": 11}), 1000)
        .await;
    h.clock.set(sydney("2026-12-02", "00:06:00"));
    let letter = dead
        .next_message(std::time::Duration::from_secs(15))
        .await
        .expect("the problem is a dead letter, and so an alert");
    use contracts::headers;
    assert_eq!(letter.headers.get_str(headers::SERVICE), Some("salto-sync"));
    assert_eq!(
        letter.headers.get_str(headers::ERROR_KIND),
        Some("permanent")
    );
    let error = letter.headers.get_str(headers::ERROR).unwrap();
    assert!(
        error.contains(APARTMENT) && error.contains("2026-12-02"),
        "{error}"
    );
    let envelope = contracts::Envelope::from_json(&letter.body).unwrap();
    assert_eq!(envelope.booking_id, booking.id, "it names the managers");
    assert_eq!(
        envelope.building().unwrap().manager_emails.len(),
        1,
        "{envelope:?}"
    );

    cleared(&h, "2026-12-02").await;
    assert_eq!(
        runs(&h).await,
        vec![date("2026-11-30"), date("2026-12-02")],
        "the night is done"
    );
    assert!(dead.next_message(DELIVERED).await.is_none(), "told once");
}

/// The managers' next report of what changed outside connecX, published by a clearing that has
/// finished.
async fn next_drift_report(reports: &mut EventTap) -> SaltoDrift {
    let found = reports
        .next(DELIVERED)
        .await
        .expect("the managers hear of it");
    match found.event {
        Event::SaltoDriftFound(report) => report,
        other => panic!("not a drift report: {other:?}"),
    }
}

/// `(zone, kind)` of each finding of a report.
fn finding_kinds(report: &SaltoDrift) -> Vec<(&str, DriftKind)> {
    report
        .findings
        .iter()
        .map(|f| (f.zone.as_str(), f.kind))
        .collect()
}

/// A permission at the console on `zone` without a period: valid at any date.
fn always(zone: &str) -> String {
    format!(
        "<SaltoDB.AccessPermission.Group_Zone><ExtZoneID>{zone}</ExtZoneID><UsePeriod>0</UsePeriod></SaltoDB.AccessPermission.Group_Zone>"
    )
}

#[tokio::test]
async fn permissions_changed_at_the_console_reach_the_managers_once() {
    let mut h =
        Harness::start_with(every_second("00:05"), sydney("2026-11-30", "12:00:00"), 1).await;
    let mut drift = h.broker.tap("salto_server.#").await;
    // The gym is a zone connecX manages: it was booked once.
    let gym = Booking::games("2026-12-01").zone(GYM);
    let games = Booking::games("2026-12-03");
    h.publish_for_result(&gym.created()).await;
    h.publish_for_result(&games.created()).await;
    cleared_at(&h, sydney("2026-12-02", "00:06:00"), "2026-12-02").await;
    assert!(
        drift.next(DELIVERED).await.is_none(),
        "nothing changed by hand yet"
    );

    // At the console: the games permission loses its period, and the gym gets one for good.
    h.set_by_hand(APARTMENT, &format!("{}{}", always(GAMES), always(GYM)))
        .await;
    cleared_at(&h, sydney("2026-12-03", "00:06:00"), "2026-12-03").await;
    let report = next_drift_report(&mut drift).await;
    assert_eq!(report.access_level, APARTMENT);
    assert_eq!(report.building.manager_emails.len(), 1);
    assert_eq!(
        finding_kinds(&report),
        [
            (GAMES, DriftKind::ChangedByHand),
            (GYM, DriftKind::UnknownPermission)
        ]
    );
    assert!(
        h.opens(GAMES, APARTMENT, "2026-12-03T19:00:00").await,
        "the grant was put back"
    );
    assert!(
        !h.opens(GAMES, APARTMENT, "2026-12-05T19:00:00").await,
        "with its own period again"
    );

    // The hand-made gym permission stays; night after night it is not reported again.
    for night in ["2026-12-04", "2026-12-05"] {
        cleared_at(&h, sydney(night, "00:06:00"), night).await;
        assert!(
            drift.next(DELIVERED).await.is_none(),
            "{night}: reported again"
        );
    }
    assert!(
        h.opens(GYM, APARTMENT, "2026-12-06T07:00:00").await,
        "left as it is"
    );
}

/// Apartment 502's access level, beside [`APARTMENT`] in the simulator.
const OTHER_APARTMENT: &str = "502-57";

#[tokio::test]
async fn an_access_level_salto_refuses_is_reported_alone_and_the_rest_of_its_batch_is_cleared() {
    let mut h =
        Harness::start_with(every_second("00:05"), sydney("2026-11-30", "12:00:00"), 1).await;
    let mut dead = h.dead_letters().await;
    let ours = Booking::games("2026-12-01");
    let mut theirs = Booking::games("2026-12-01");
    theirs.access_level = OTHER_APARTMENT.into();
    h.publish_for_result(&ours.created()).await;
    h.publish_for_result(&theirs.created()).await;
    cleared(&h, "2026-11-30").await;

    // Salto refuses every call on apartment 501's access level; 502's works. Both ended
    // permissions are in the same batch of the night.
    h.control(
        "faults",
        serde_json::json!({
            "match": {"request_name": "SaltoDBGroup.Read",
                      "body_contains": format!("<ExtGroupID>{APARTMENT}</ExtGroupID>")},
            "respond": {"code": 11}, "times": 1000}),
    )
    .await;
    let night = cleared_at(&h, sydney("2026-12-02", "00:06:00"), "2026-12-02").await;
    assert_eq!(
        night,
        Night {
            expired: 1,
            granted: 0
        },
        "502's permission is cleared"
    );
    assert_eq!(
        h.results(1).await,
        vec![("facility_access.expired.v1", theirs.id)]
    );
    assert!(h.permissions(OTHER_APARTMENT).await.is_empty());
    assert_eq!(h.permissions(APARTMENT).await.len(), 1, "501's stays");

    let letter = dead
        .next_message(DELIVERED)
        .await
        .expect("501's problem is a dead letter, and so an alert");
    let error = letter
        .headers
        .get_str(contracts::headers::ERROR)
        .unwrap()
        .to_owned();
    assert!(
        error.contains(APARTMENT) && !error.contains(OTHER_APARTMENT),
        "{error}"
    );
    assert!(dead.next_message(DELIVERED).await.is_none(), "told once");
}

#[tokio::test]
async fn an_access_level_the_night_does_not_touch_is_compared_with_salto_once_in_reconcile_days() {
    let settings = CleanerSettings {
        reconcile_days: 7,
        ..every_second("00:05")
    };
    let mut h = Harness::start_with(settings, sydney("2026-11-30", "12:00:00"), 1).await;
    let mut reports = h.broker.tap("salto_server.#").await;
    // Granted for three weeks on: no night of the week below touches the access level.
    let booking = Booking::games("2026-12-21");
    h.publish_for_result(&booking.created()).await;
    cleared(&h, "2026-11-30").await;
    h.set_by_hand(APARTMENT, "").await;

    let level = salto_sync::ledger::AccessLevelKey {
        server: salto_sync::servers::server_key(&h.sim.url()),
        access_level: APARTMENT.into(),
    };
    // The week after the level's night: six nights that leave it alone, then its night.
    let nights_from = |first: NaiveDate| -> Vec<NaiveDate> {
        (0..7).map(|day| first + chrono::Days::new(day)).collect()
    };
    let its_night = nights_from(date("2026-12-01"))
        .into_iter()
        .find(|night| salto_sync::decision::reconciled_tonight(&level, *night, 7))
        .expect("one night in any seven");
    let week = nights_from(its_night + chrono::Days::new(1));
    for night in week {
        let text = night.to_string();
        cleared_at(&h, sydney(&text, "00:06:00"), &text).await;
        let repaired = h.opens(GAMES, APARTMENT, "2026-12-21T19:00:00").await;
        let compared = night == its_night + chrono::Days::new(7);
        assert_eq!(
            repaired, compared,
            "{night}: the level's nights are {its_night} + 7n"
        );
    }
    let report = next_drift_report(&mut reports).await;
    assert_eq!(finding_kinds(&report), [(GAMES, DriftKind::ChangedByHand)]);
    assert!(reports.next(DELIVERED).await.is_none(), "reported once");
    h.no_more_results().await;
}

#[tokio::test]
async fn a_booking_is_granted_while_a_nights_batches_hold_their_connections() {
    // The night's eight batches, one access level each, all at once on the one server, each
    // holding a database connection while Salto answers its write after 0.9 s (the harness's
    // pool holds 5). A booking arriving meanwhile must not wait for them.
    let settings = CleanerSettings {
        batch_levels: 1,
        concurrency_per_server: 8,
        ..every_second("00:05")
    };
    let mut h = Harness::start_with(settings, sydney("2026-11-30", "12:00:00"), 1).await;
    let levels: Vec<String> = (1..=8).map(|n| format!("L-{n}")).collect();
    h.control(
        "seed",
        serde_json::json!({"groups": levels.iter().map(|l| serde_json::json!({"ext_id": l, "name": l})).collect::<Vec<_>>()}),
    )
    .await;
    for level in &levels {
        let mut booking = Booking::games("2026-12-01");
        booking.access_level = level.clone();
        h.publish(&booking.created()).await;
    }
    h.granted(levels.len()).await;
    cleared(&h, "2026-11-30").await;

    let mut granted = h.broker.tap("facility_access.granted.#").await;
    // Requests are logged once answered: a batch whose read is logged holds its connection and
    // is writing; none of the night's writes is answered before 0.9 s.
    let reads_before = h.requests_named("SaltoDBGroup.Read").await;
    let writes_before = h.requests_named("SaltoDBGroup.Update").await;
    h.fault(
        "SaltoDBGroup.Update",
        serde_json::json!({"delay_ms": 900}),
        levels.len() as u32,
    )
    .await;
    h.clock.set(sydney("2026-12-02", "00:06:00"));
    let booking = Booking::games("2026-12-05");
    let night = async {
        h.tick_every_replica().await;
        cleared(&h, "2026-12-02").await
    };
    let meanwhile = async {
        until("the night's batches all writing", async || {
            h.requests_named("SaltoDBGroup.Read").await >= reads_before + levels.len()
        })
        .await;
        h.publish(&booking.created()).await;
        let result = granted
            .next(std::time::Duration::from_secs(15))
            .await
            .expect("the booking is granted");
        let writes_answered = h.requests_named("SaltoDBGroup.Update").await - writes_before;
        (result.booking_id, writes_answered)
    };
    let (night, (granted_id, writes_answered)) = tokio::join!(night, meanwhile);
    assert_eq!(granted_id, booking.id);
    assert_eq!(
        writes_answered, 1,
        "only the booking's own write was answered when it was granted; more means it waited \
         for batches of the night"
    );
    assert_eq!(night.expired, levels.len() as i32);
}
