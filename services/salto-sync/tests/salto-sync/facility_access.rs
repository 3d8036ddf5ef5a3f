//! Facility bookings become Salto zone permissions: real RabbitMQ and PostgreSQL, salto-sim over
//! HTTP, results observed on `facility_access.*` as booking-api and the notifier see them.

use std::time::Duration;

use serde_json::json;

use crate::support::{APARTMENT, Booking, GAMES, GYM, Harness, result_of, until};

const QUIET: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_booking_gives_the_apartment_a_permission_that_opens_inside_its_hours_on_its_date_only() {
    let mut h = Harness::start().await;
    let booking = Booking::games("2026-12-01");
    let result = h.publish_for_result(&booking.created()).await;
    assert_eq!(result.routing_key(), "facility_access.granted.v1");
    assert_eq!(result.booking_id, booking.id);
    assert_eq!(result.version, 1);
    assert!(result_of(&result).failure.is_none());

    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 1, "{permissions:?}");
    assert_eq!(permissions[0]["zone"], GAMES);
    assert!(h.opens(GAMES, APARTMENT, "2026-12-01T18:00:00").await);
    assert!(h.opens(GAMES, APARTMENT, "2026-12-01T21:59:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T22:00:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T17:59:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-02T19:00:00").await);
    assert!(!h.opens(GYM, APARTMENT, "2026-12-01T19:00:00").await);
}

#[tokio::test]
async fn a_booking_ending_at_midnight_opens_until_the_end_of_its_own_date() {
    let mut h = Harness::start().await;
    let booking = Booking::games("2026-12-01").hours("20:00:00", "24:00:00");
    assert_eq!(
        h.publish_for_result(&booking.created()).await.routing_key(),
        "facility_access.granted.v1"
    );
    assert!(h.opens(GAMES, APARTMENT, "2026-12-01T23:59:30").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-02T00:30:00").await);
}

#[tokio::test]
async fn a_second_booking_of_the_same_zone_is_deferred_then_granted_when_the_first_is_cancelled() {
    let mut h = Harness::start().await;
    let mut first = Booking::games("2026-12-01");
    let second = Booking::games("2026-12-03");
    assert_eq!(
        h.publish_for_result(&first.created()).await.routing_key(),
        "facility_access.granted.v1"
    );
    let deferred = h.publish_for_result(&second.created()).await;
    assert_eq!(deferred.routing_key(), "facility_access.deferred.v1");
    assert_eq!(deferred.booking_id, second.id);
    let result = result_of(&deferred);
    assert_eq!(result.held_by, Some(first.id));
    let holder_window = result.held_by_window.as_ref().expect("the holder's window");
    assert_eq!(
        holder_window.local_starts_at.date().to_string(),
        "2026-12-01",
        "the holder's date, for the manager's email"
    );
    let failure = result.failure.as_ref().unwrap();
    assert_eq!(failure.code, "double_booking");
    assert!(!failure.needs_manager, "policy auto: no action needed");
    assert!(h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-03T19:00:00").await);

    h.publish(&first.cancelled()).await;
    let mut seen: Vec<_> = h
        .results_until_quiet(QUIET)
        .await
        .iter()
        .map(|e| (e.routing_key(), e.booking_id, e.version))
        .collect();
    seen.sort();
    let mut expected = vec![
        ("facility_access.revoked.v1", first.id, 2),
        ("facility_access.granted.v1", second.id, 1),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
    assert!(h.opens(GAMES, APARTMENT, "2026-12-03T19:00:00").await);
    assert_eq!(h.permissions(APARTMENT).await.len(), 1);
}

#[tokio::test]
async fn with_the_manual_policy_a_deferred_booking_waits_for_the_manager() {
    let mut h = Harness::start().await;
    let mut first = Booking::games("2026-12-01").manual();
    let second = Booking::games("2026-12-03").manual();
    h.publish_for_result(&first.created()).await;
    let deferred = h.publish_for_result(&second.created()).await;
    assert_eq!(deferred.routing_key(), "facility_access.deferred.v1");
    let failure = result_of(&deferred).failure.clone().unwrap();
    assert!(failure.needs_manager, "policy manual: the manager acts");

    h.publish(&first.cancelled()).await;
    let seen: Vec<_> = h
        .results_until_quiet(QUIET)
        .await
        .iter()
        .map(|e| (e.routing_key(), e.booking_id))
        .collect();
    assert_eq!(seen, vec![("facility_access.revoked.v1", first.id)]);
    assert!(h.permissions(APARTMENT).await.is_empty());
}

#[tokio::test]
async fn cancelling_removes_the_permission_and_keeps_other_zones() {
    let mut h = Harness::start().await;
    let mut games = Booking::games("2026-12-01");
    let gym = Booking::games("2026-12-01").zone(GYM);
    h.publish(&games.created()).await;
    h.publish(&gym.created()).await;
    h.results(2).await;
    assert_eq!(h.permissions(APARTMENT).await.len(), 2);

    let revoked = h.publish_for_result(&games.cancelled()).await;
    assert_eq!(revoked.routing_key(), "facility_access.revoked.v1");
    assert_eq!(revoked.version, 2);
    let left = h.permissions(APARTMENT).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["zone"], GYM);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
}

#[tokio::test]
async fn rescheduling_moves_the_permission_to_the_new_date_and_hours() {
    let mut h = Harness::start().await;
    let mut booking = Booking::games("2026-12-01");
    h.publish_for_result(&booking.created()).await;
    booking = booking.hours("09:00:00", "11:00:00");
    let moved = h
        .publish_for_result(&booking.rescheduled("2026-12-04"))
        .await;
    assert_eq!(moved.routing_key(), "facility_access.granted.v1");
    assert_eq!(moved.version, 2);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
    assert!(h.opens(GAMES, APARTMENT, "2026-12-04T10:00:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-04T19:00:00").await);
    assert_eq!(h.permissions(APARTMENT).await.len(), 1);
}

#[tokio::test]
async fn an_access_level_salto_does_not_know_fails_and_the_manager_is_told_salto_s_answer() {
    let mut h = Harness::start().await;
    let mut booking = Booking::games("2026-12-01");
    booking.access_level = "999-00".into();
    let failed = h.publish_for_result(&booking.created()).await;
    assert_eq!(failed.routing_key(), "facility_access.failed.v1");
    let failure = result_of(&failed).failure.clone().unwrap();
    assert_eq!(failure.code, "salto_not_found");
    assert!(failure.needs_manager);
    assert!(failure.message.contains("code 11"), "{}", failure.message);
    assert!(failure.message.contains("999-00"), "{}", failure.message);

    let unknown_zone = Booking::games("2026-12-01").zone("POOL");
    let failed = h.publish_for_result(&unknown_zone.created()).await;
    assert_eq!(failed.routing_key(), "facility_access.failed.v1");
    assert_eq!(
        result_of(&failed).failure.as_ref().unwrap().code,
        "salto_not_found"
    );
    assert!(h.permissions(APARTMENT).await.is_empty());
}

#[tokio::test]
async fn a_permission_changed_by_hand_at_the_console_is_left_untouched_and_the_manager_is_told() {
    let mut h = Harness::start().await;
    h.control(
        "seed",
        json!({"timetables": [{"id": 900, "name": "all day", "intervals": [{"start": "00:00:00", "end": "24:00:00"}]}]}),
    )
    .await;
    h.control(
        "manual",
        json!({"group": APARTMENT, "zone": GAMES, "timetable": 900,
               "period": {"start": "2026-12-05T00:00:00", "end": "2026-12-05T23:59:59"}}),
    )
    .await;
    let booking = Booking::games("2026-12-01");
    let failed = h.publish_for_result(&booking.created()).await;
    assert_eq!(failed.routing_key(), "facility_access.failed.v1");
    let failure = result_of(&failed).failure.clone().unwrap();
    assert_eq!(failure.code, "salto_permission_unknown");
    assert!(failure.needs_manager);

    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 1);
    assert_eq!(permissions[0]["timetable"], 900);
    assert_eq!(permissions[0]["period"]["start"], "2026-12-05T00:00:00");
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);

    // A booking of another zone of the same apartment keeps the hand-made permission as it is.
    let gym = Booking::games("2026-12-01").zone(GYM);
    assert_eq!(
        h.publish_for_result(&gym.created()).await.routing_key(),
        "facility_access.granted.v1"
    );
    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 2);
    assert!(h.opens(GAMES, APARTMENT, "2026-12-05T03:00:00").await);
}

#[tokio::test]
async fn the_same_event_twice_gives_one_permission_and_one_result() {
    let mut h = Harness::start().await;
    let booking = Booking::games("2026-12-01");
    let created = booking.created();
    h.publish(&created).await;
    h.publish(&created).await;
    let seen = h.results_until_quiet(Duration::from_secs(3)).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].routing_key(), "facility_access.granted.v1");
    assert_eq!(h.permissions(APARTMENT).await.len(), 1);
    assert_eq!(h.requests_named("SaltoDBGroup.Update").await, 1);
}

#[tokio::test]
async fn a_changed_access_control_id_clears_the_grant_under_the_old_id_and_grants_under_the_new() {
    let mut h = Harness::start().await;
    let mut booking = Booking::games("2026-12-01");
    h.publish_for_result(&booking.created()).await;
    // The manager changes the facility's Access Control Facility ID; the booking's next version
    // carries the new zone.
    booking = booking.zone(GYM);
    let moved = h
        .publish_for_result(&booking.rescheduled("2026-12-01"))
        .await;
    assert_eq!(moved.routing_key(), "facility_access.granted.v1");
    assert_eq!(moved.version, 2);
    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 1, "{permissions:?}");
    assert_eq!(permissions[0]["zone"], GYM);
    assert!(h.opens(GYM, APARTMENT, "2026-12-01T19:00:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
}

/// One booking's transactions never overlap: while another transaction holds the booking's lock
/// (`salto_sync/booking/<id>`, as a replica acting on the same booking would), the booking is not
/// acted on; once it is released, it is.
#[tokio::test]
async fn a_booking_is_acted_on_only_when_no_other_transaction_holds_its_lock() {
    let mut h = Harness::start().await;
    let pool = h.db.pool(salto_sync::SCHEMA).await;
    let booking = Booking::games("2026-12-01");
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("salto_sync/booking/{}", booking.id))
        .execute(&mut *other)
        .await
        .unwrap();

    h.publish(&booking.created()).await;
    h.snapshot_recorded(booking.id, 1).await;
    until("salto-sync waiting for the booking's lock", async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks
              WHERE locktype = 'advisory' AND NOT granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    assert!(
        h.permissions(APARTMENT).await.is_empty(),
        "nothing granted while the lock is held"
    );

    other.commit().await.unwrap();
    let result = h.next_result(15).await;
    assert_eq!(result.routing_key(), "facility_access.granted.v1");
    assert_eq!(result.booking_id, booking.id);
}
