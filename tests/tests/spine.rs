//! The spine, end to end: a booking posted to booking-api travels through RabbitMQ to the worker
//! that owns it, and a failure in a worker ends as an alert email to the building manager.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tests::{MANAGER_EMAIL, OPS_EMAIL, Stack, assert_contains, eventually, tomorrow_evening};

async fn book_visit(stack: &Stack) -> String {
    let (starts_at, ends_at) = tomorrow_evening();
    let (status, booking) = stack
        .send(
            Method::POST,
            "/v1/visitor-bookings",
            &stack.ana(),
            Some(
                json!({"visitor": {"name": "Bo Tan", "email": "bo@visitors.example"},
                        "starts_at": starts_at, "ends_at": ends_at, "provide_access": true}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{booking}");
    booking["id"].as_str().unwrap().to_owned()
}

/// The version of a booking ipassan-sync holds (its own schema; read as an assertion only).
async fn version_held_by_ipassan_sync(stack: &Stack, booking: &str) -> Option<i64> {
    let pool = stack.db.pool(ipassan_sync::SCHEMA).await;
    let id = uuid::Uuid::parse_str(booking).unwrap();
    sqlx::query_scalar("SELECT version FROM booking_snapshots WHERE booking_id = $1")
        .bind(id)
        .fetch_optional(&pool)
        .await
        .unwrap()
}

/// Waits until ipassan-sync holds `version` of `booking`; `what` names the wait.
async fn until_ipassan_sync_holds(stack: &Stack, booking: &str, version: i64, what: &str) {
    eventually(what, Duration::from_secs(15), || async {
        (version_held_by_ipassan_sync(stack, booking).await == Some(version)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_booking_posted_to_the_api_reaches_its_worker_and_every_change_follows() {
    let stack = Stack::start().await;
    let booking = book_visit(&stack).await;
    until_ipassan_sync_holds(&stack, &booking, 1, "ipassan-sync to receive the booking").await;

    let (status, _) = stack
        .cancel(&format!("/v1/visitor-bookings/{booking}"))
        .await;
    assert_eq!(status, 200);
    until_ipassan_sync_holds(
        &stack,
        &booking,
        2,
        "ipassan-sync to receive the cancellation",
    )
    .await;
    // The visit itself is mailed to the resident and the visitor; alerts go to the manager or
    // the ops address.
    let alerts: Vec<_> = stack
        .mail
        .mails()
        .into_iter()
        .filter(|mail| mail.is_to(MANAGER_EMAIL) || mail.is_to(OPS_EMAIL))
        .map(|mail| mail.subject)
        .collect();
    assert!(
        alerts.is_empty(),
        "nothing failed, so nobody was alerted: {alerts:?}"
    );
}

#[tokio::test]
async fn a_worker_that_keeps_failing_ends_in_an_alert_email_to_the_building_manager() {
    let stack = Stack::start().await;
    // Break ipassan-sync's storage: every attempt now fails with a database error (transient),
    // so the booking climbs the retry tiers and is dead-lettered.
    let pool = stack.db.pool(ipassan_sync::SCHEMA).await;
    sqlx::query("ALTER TABLE booking_snapshots RENAME TO booking_snapshots_gone")
        .execute(&pool)
        .await
        .unwrap();

    let booking = book_visit(&stack).await;
    let alert = stack
        .mail
        .wait_for_mail_to(MANAGER_EMAIL, Duration::from_secs(20))
        .await
        .expect("the manager is alerted");
    assert_contains(&alert.subject, &booking);
    assert_contains(&alert.text_body, "ipassan-sync");
    assert_contains(&alert.text_body, "transient_exhausted");
    assert_contains(&alert.text_body, "Attempts:      3");
    // The database error is quoted.
    assert_contains(&alert.text_body, "booking_snapshots");

    // Once the cause is fixed, ops replay the dead letter and the booking gets through.
    sqlx::query("ALTER TABLE booking_snapshots_gone RENAME TO booking_snapshots")
        .execute(&pool)
        .await
        .unwrap();
    let notifier_pool = stack.db.pool(notifier::SCHEMA).await;
    let dead_letter: uuid::Uuid = sqlx::query_scalar("SELECT id FROM dead_letters")
        .fetch_one(&notifier_pool)
        .await
        .unwrap();
    // As `notifier dead-letters replay` runs: as the notifier's own RabbitMQ user.
    let publisher = platform::amqp::Publisher::new(
        &platform::config::AmqpSettings {
            url: stack.broker.url_for(contracts::Service::Notifier),
            prefetch: 1,
            delivery_limit: 5,
            drain_timeout_secs: 30,
        },
        "ops",
    );
    notifier::cli::replay(&notifier_pool, &publisher, dead_letter)
        .await
        .unwrap();
    until_ipassan_sync_holds(
        &stack,
        &booking,
        1,
        "the replayed booking to reach ipassan-sync",
    )
    .await;
    let alerts = stack.mail.mails_to(MANAGER_EMAIL);
    assert_eq!(alerts.len(), 1, "one failure, one alert");
}

#[tokio::test]
async fn a_message_no_worker_can_read_is_reported_to_ops_and_the_worker_carries_on() {
    let stack = Stack::start().await;
    stack
        .broker
        .publish_raw("facility_booking.created.v1", b"\x00\x01 garbage")
        .await;
    let alert = stack
        .mail
        .wait_for_mail_to(OPS_EMAIL, Duration::from_secs(20))
        .await
        .expect("ops are alerted");
    assert_contains(&alert.text_body, "salto-sync");
    assert_contains(&alert.text_body, "malformed");

    // salto-sync still works: a real facility booking reaches it.
    let (starts_at, ends_at) = tomorrow_evening();
    let (status, booking) = stack
        .send(
            Method::POST,
            "/v1/facility-bookings",
            &stack.ana(),
            Some(json!({"facility_id": "games-room", "starts_at": starts_at, "ends_at": ends_at})),
        )
        .await;
    assert_eq!(status, 201, "{booking}");
    let id = uuid::Uuid::parse_str(booking["id"].as_str().unwrap()).unwrap();
    let pool = stack.db.pool(salto_sync::SCHEMA).await;
    eventually(
        "salto-sync to receive the booking",
        Duration::from_secs(15),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT version FROM booking_snapshots WHERE booking_id = $1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .unwrap()
        },
    )
    .await;
}

#[tokio::test]
async fn one_trace_id_follows_a_booking_from_the_request_through_every_queue() {
    let stack = Stack::start().await;
    let mut bookings = stack
        .broker
        .tap_exchange(
            contracts::EVENTS_EXCHANGE,
            lapin::ExchangeKind::Topic,
            "visitor_booking.#",
        )
        .await;
    let mut results = stack
        .broker
        .tap_exchange(
            contracts::EVENTS_EXCHANGE,
            lapin::ExchangeKind::Topic,
            "visitor_access.#",
        )
        .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (starts_at, ends_at) = tomorrow_evening();
    let response = stack
        .http
        .post(format!("{}/v1/visitor-bookings", stack.api))
        .bearer_auth(stack.ana())
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"visitor": {"name": "Bo Tan", "email": "bo@visitors.example"},
                                  "starts_at": starts_at, "ends_at": ends_at, "provide_access": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answered = response
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        answered.contains(trace),
        "the response names the trace: {answered}"
    );

    // The relay sends the trace with the booking event, and ipassan-sync with its result.
    for (what, tap) in [
        ("booking event", &mut bookings),
        ("result event", &mut results),
    ] {
        let message = tap
            .next_message(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("no {what}"));
        let header = message.headers.get_str("traceparent").unwrap_or_default();
        assert!(
            header.contains(trace),
            "{what} carries the trace: {header:?}"
        );
    }

    // A request without a traceparent starts a trace of its own, carried on just the same.
    let (status, _) = stack
        .send(
            Method::POST,
            "/v1/visitor-bookings",
            &stack.ana(),
            Some(json!({"visitor": {"name": "Cy", "email": "cy@visitors.example"},
                                    "starts_at": starts_at, "ends_at": ends_at, "provide_access": true})),
        )
        .await;
    assert_eq!(status, 201);
    let message = bookings
        .next_message(Duration::from_secs(15))
        .await
        .unwrap();
    let fresh = message.headers.get_str("traceparent").unwrap_or_default();
    assert!(
        platform::trace::TraceId::from_traceparent(fresh).is_some_and(|t| t.to_string() != trace),
        "a fresh trace: {fresh:?}"
    );
}
