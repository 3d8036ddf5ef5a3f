//! The nightly cleaner with a driven clock: once per building-local date across replicas, right
//! across both Australian DST changes, granting what waited and repairing what Salto lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chrono::NaiveDate;
use common::{APARTMENT, Booking, GAMES, GYM, Harness, sydney};
use salto_sync::CleanerSettings;

/// Long enough for both replicas to tick (every second) after the clock moved.
const SETTLE: Duration = Duration::from_millis(2500);

fn every_second(local_time: &str) -> CleanerSettings {
    CleanerSettings {
        local_time: local_time.into(),
        tick: "*/1 * * * * *".into(),
        reconcile: true,
    }
}

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

/// `(routing key, booking)` of every result until quiet, sorted.
async fn results(h: &mut Harness) -> Vec<(&'static str, uuid::Uuid)> {
    let mut seen: Vec<_> = h
        .results_until_quiet(SETTLE)
        .await
        .iter()
        .map(|e| (e.routing_key(), e.booking_id))
        .collect();
    seen.sort();
    seen
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
    h.next_result(15).await;
    h.next_result(15).await;
    h.publish(&waiting.created()).await;
    assert_eq!(
        h.next_result(15).await.routing_key(),
        "facility_access.deferred.v1"
    );

    // Just before the clearing time nothing happens.
    h.clock.set(sydney("2026-12-02", "00:04:00"));
    assert_eq!(results(&mut h).await, vec![]);
    assert_eq!(h.permissions(APARTMENT).await.len(), 2);

    h.clock.set(sydney("2026-12-02", "00:06:00"));
    let mut expected = vec![
        ("facility_access.expired.v1", games.id),
        ("facility_access.expired.v1", gym.id),
        ("facility_access.granted.v1", waiting.id),
    ];
    expected.sort();
    assert_eq!(results(&mut h).await, expected);
    let left = h.permissions(APARTMENT).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(h.opens(GAMES, APARTMENT, "2026-12-02T19:00:00").await);
    assert!(!h.opens(GYM, APARTMENT, "2026-12-02T19:00:00").await);

    // Later the same night, and with a third replica starting (it catches up at start): nothing
    // runs twice.
    h.clock.set(sydney("2026-12-02", "03:00:00"));
    h.start_replica().await;
    assert_eq!(results(&mut h).await, vec![]);
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
    h.publish(&april.created()).await;
    assert_eq!(
        h.next_result(15).await.routing_key(),
        "facility_access.granted.v1"
    );
    h.clock.set(sydney("2026-04-05", "02:29:00")); // first 02:29 (AEDT)
    assert_eq!(results(&mut h).await, vec![]);
    h.clock.set(sydney("2026-04-05", "02:31:00")); // first 02:31
    assert_eq!(
        results(&mut h).await,
        vec![("facility_access.expired.v1", april.id)]
    );
    let april_next = Booking::games("2026-04-05").zone(GYM);
    h.publish(&april_next.created()).await;
    assert_eq!(
        h.next_result(15).await.routing_key(),
        "facility_access.granted.v1"
    );
    // The second 02:31 of the night, an hour later: the night is done, nothing repeats.
    h.clock
        .set(sydney("2026-04-05", "02:31:00") + chrono::Duration::hours(1));
    assert_eq!(results(&mut h).await, vec![]);
    h.clock.set(sydney("2026-04-06", "02:31:00"));
    assert_eq!(
        results(&mut h).await,
        vec![("facility_access.expired.v1", april_next.id)]
    );

    // Spring: clocks jump from 02:00 to 03:00 on 4 October; 02:30 is skipped.
    h.clock.set(sydney("2026-10-03", "12:00:00"));
    let october = Booking::games("2026-10-03");
    h.publish(&october.created()).await;
    // (The catch-up for 3 October ran as the clock moved; the booking comes after it.)
    let granted = h.next_result(15).await;
    assert_eq!(granted.routing_key(), "facility_access.granted.v1");
    assert_eq!(results(&mut h).await, vec![]);
    h.clock.set(sydney("2026-10-04", "01:59:00"));
    assert_eq!(results(&mut h).await, vec![]);
    h.clock.set(sydney("2026-10-04", "03:00:00")); // the first minute after the gap
    assert_eq!(
        results(&mut h).await,
        vec![("facility_access.expired.v1", october.id)]
    );
    h.clock.set(sydney("2026-10-04", "04:00:00"));
    assert_eq!(results(&mut h).await, vec![]);

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
    let booking = Booking::games("2026-12-03");
    h.publish(&booking.created()).await;
    h.next_result(15).await;

    // Someone empties the apartment's list in Salto.
    let wipe = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestCall><RequestName>SaltoDBGroup.Update</RequestName><Params><SaltoDBGroup><ExtGroupID>501-56</ExtGroupID><GroupZoneList></GroupZoneList></SaltoDBGroup></Params></RequestCall>";
    let answer = h
        .http
        .post(h.sim.url())
        .body(wipe)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!answer.contains("<Exception>"), "{answer}");
    assert!(h.permissions(APARTMENT).await.is_empty());

    h.clock.set(sydney("2026-12-01", "00:06:00"));
    tokio::time::sleep(SETTLE).await;
    assert!(h.opens(GAMES, APARTMENT, "2026-12-03T19:00:00").await);
    assert_eq!(results(&mut h).await, vec![], "a repair is not news");
}

#[tokio::test]
async fn an_access_level_the_cleaner_cannot_clear_reaches_the_managers_and_the_night_still_ends() {
    let mut h =
        Harness::start_with(every_second("00:05"), sydney("2026-11-30", "12:00:00"), 1).await;
    let mut dead = h
        .broker
        .tap_exchange(
            contracts::DEAD_LETTER_EXCHANGE,
            lapin::ExchangeKind::Fanout,
            "",
        )
        .await;
    let booking = Booking::games("2026-12-01");
    h.publish(&booking.created()).await;
    h.next_result(15).await;

    // Salto no longer knows the apartment's access level: nothing a retry can change.
    h.fault("SaltoDBGroup.Read", serde_json::json!({"code": 11}), 1000)
        .await;
    h.clock.set(sydney("2026-12-02", "00:06:00"));
    let letter = dead
        .next_message(Duration::from_secs(15))
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

    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        runs(&h).await,
        vec![date("2026-12-02")],
        "the night is done"
    );
    assert!(
        dead.next_message(Duration::from_millis(500))
            .await
            .is_none(),
        "told once"
    );
}

/// Replaces the apartment's list in Salto, as someone at the Salto console would.
async fn set_by_hand(h: &Harness, entries: &str) {
    let update = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestCall><RequestName>SaltoDBGroup.Update</RequestName><Params><SaltoDBGroup><ExtGroupID>{APARTMENT}</ExtGroupID><GroupZoneList>{entries}</GroupZoneList></SaltoDBGroup></Params></RequestCall>"
    );
    let answer = h
        .http
        .post(h.sim.url())
        .body(update)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!answer.contains("<Exception>"), "{answer}");
}

#[tokio::test]
async fn permissions_changed_at_the_console_reach_the_managers_once() {
    let mut h =
        Harness::start_with(every_second("00:05"), sydney("2026-11-30", "12:00:00"), 1).await;
    let mut drift = h.broker.tap("salto_server.#").await;
    // The gym is a zone connecX manages: it was booked once.
    let gym = Booking::games("2026-12-01").zone(GYM);
    let games = Booking::games("2026-12-03");
    h.publish(&gym.created()).await;
    h.next_result(15).await;
    h.publish(&games.created()).await;
    h.next_result(15).await;
    h.clock.set(sydney("2026-12-02", "00:06:00"));
    tokio::time::sleep(SETTLE).await;
    assert!(
        drift.next(Duration::from_millis(200)).await.is_none(),
        "nothing changed by hand yet"
    );

    // At the console: the games permission loses its period, and the gym gets one for good.
    let always = |zone: &str| {
        format!(
            "<SaltoDB.AccessPermission.Group_Zone><ExtZoneID>{zone}</ExtZoneID><UsePeriod>0</UsePeriod></SaltoDB.AccessPermission.Group_Zone>"
        )
    };
    set_by_hand(&h, &format!("{}{}", always(GAMES), always(GYM))).await;
    h.clock.set(sydney("2026-12-03", "00:06:00"));
    let found = drift
        .next(Duration::from_secs(15))
        .await
        .expect("the managers hear of it");
    let contracts::Event::SaltoDriftFound(report) = &found.event else {
        panic!("{found:?}")
    };
    assert_eq!(report.access_level, APARTMENT);
    assert_eq!(report.building.manager_emails.len(), 1);
    let kinds: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.zone.as_str(), f.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (GAMES, contracts::DriftKind::ChangedByHand),
            (GYM, contracts::DriftKind::UnknownPermission)
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
        h.clock.set(sydney(night, "00:06:00"));
        tokio::time::sleep(SETTLE).await;
        assert!(
            drift.next(Duration::from_millis(300)).await.is_none(),
            "{night}: reported again"
        );
    }
    assert!(
        h.opens(GYM, APARTMENT, "2026-12-06T07:00:00").await,
        "left as it is"
    );
}
