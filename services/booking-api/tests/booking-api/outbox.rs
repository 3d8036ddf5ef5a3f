//! The transactional outbox: bookings are accepted while the broker is down, and their events
//! are published once it is back.

use std::time::Duration;

use contracts::Event;

use crate::support::{
    BUILDING, body, booking_path, problem, spawn_app_behind_proxy, spawn_app_with, visit,
};

async fn unsent(app: &crate::support::TestApp) -> Vec<(i32, Option<String>)> {
    sqlx::query_as("SELECT attempts, last_error FROM outbox WHERE sent_at IS NULL ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Waits until the relay has tried the oldest unsent event `attempts` times (it cannot reach
/// the broker), and returns the unsent rows.
async fn after_attempts(
    app: &crate::support::TestApp,
    attempts: i32,
) -> Vec<(i32, Option<String>)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = unsent(app).await;
        if waiting.first().is_some_and(|(tried, _)| *tried >= attempts) {
            return waiting;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never tried {attempts} times: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_the_broker_is_down_and_go_out_when_it_is_back() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let mut tap = app.broker().tap("visitor_booking.#").await;
    app.seed().await;
    let ana = app.resident_ana();

    // The broker is unreachable from the start: the booking is accepted all the same.
    let response = app.post("/v1/visitor-bookings", &ana, visit(true)).await;
    assert_eq!(response.status(), 201);
    let first = body(response).await;
    let waiting = after_attempts(&app, 2).await;
    assert!(tap.next(Duration::from_millis(200)).await.is_none());
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].0 >= 2, "the relay kept trying: {waiting:?}");
    assert!(
        waiting[0].1.as_deref().is_some_and(|e| !e.is_empty()),
        "the failure is recorded: {waiting:?}"
    );

    proxy.come_up();
    let event = tap
        .next(Duration::from_secs(20))
        .await
        .expect("published once the broker is back");
    assert_eq!(event.booking_id.to_string(), first["id"].as_str().unwrap());
    assert!(matches!(event.event, Event::VisitorBookingCreated(_)));
    // The relay records the event as sent once its confirm is in, a moment after the tap sees
    // it: wait for that, or the next outage could catch the first event still unrecorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !unsent(&app).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first event stays unsent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The broker goes away while the service is connected, and comes back.
    proxy.go_down();
    let second = body(app.post("/v1/visitor-bookings", &ana, visit(false)).await).await;
    let waiting = after_attempts(&app, 1).await;
    assert_eq!(waiting.len(), 1, "the second event waits");
    proxy.come_up();
    let event = tap
        .next(Duration::from_secs(20))
        .await
        .expect("second event published after the outage");
    assert_eq!(event.booking_id.to_string(), second["id"].as_str().unwrap());
    assert!(
        tap.next(Duration::from_secs(1)).await.is_none(),
        "nothing published twice"
    );
    assert!(unsent(&app).await.is_empty());
    let logs = crate::support::captured_logs();
    assert!(
        logs.contains("outbox relay cannot publish"),
        "the outage is logged"
    );
    assert!(
        logs.contains("broker reachable again"),
        "the recovery is logged"
    );
    app.stop().await;
}

#[tokio::test]
async fn one_bookings_events_leave_in_version_order_after_an_outage() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let mut tap = app.broker().tap("visitor_booking.#").await;
    app.seed().await;
    let ana = app.resident_ana();
    let created = body(app.post("/v1/visitor-bookings", &ana, visit(true)).await).await;
    let path = booking_path("/v1/visitor-bookings", &created);
    let (_, later) = crate::support::local_tomorrow(18, 23);
    app.patch(&path, &ana, serde_json::json!({"ends_at": later}))
        .await;
    app.delete(&path, &ana).await;
    proxy.come_up();
    let mut versions = Vec::new();
    for _ in 0..3 {
        versions.push(
            tap.next(Duration::from_secs(20))
                .await
                .expect("event")
                .version,
        );
    }
    assert_eq!(versions, [1, 2, 3]);
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_publish_every_event_once_and_each_bookings_events_in_version_order() {
    let first = crate::support::spawn_app().await;
    let second = first.replica().await;
    let mut tap = first.broker().tap("visitor_booking.#").await;
    first.seed().await;
    let ana = first.resident_ana();
    let (_, later) = crate::support::local_tomorrow(18, 23);

    // 40 bookings at once, each created, moved and (every other one) cancelled, every request
    // going to whichever replica comes next: both relays publish, racing each other.
    let replicas = [&first, &second];
    let bookings = (0..40usize).map(|n| {
        let (ana, later) = (ana.clone(), later.clone());
        async move {
            let on = |step: usize| replicas[(n + step) % 2];
            let created = body(on(0).post("/v1/visitor-bookings", &ana, visit(true)).await).await;
            let id = created["id"].as_str().unwrap().to_owned();
            let path = format!("/v1/visitor-bookings/{id}");
            let moved = on(1)
                .patch(&path, &ana, serde_json::json!({"ends_at": later}))
                .await;
            assert_eq!(moved.status(), 200);
            let mut versions = 2;
            if n % 2 == 0 {
                assert_eq!(on(2).delete(&path, &ana).await.status(), 200);
                versions = 3;
            }
            (id, versions)
        }
    });
    let expected: std::collections::BTreeMap<String, i64> = futures::future::join_all(bookings)
        .await
        .into_iter()
        .collect();
    let total: i64 = expected.values().sum();

    let mut seen: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for _ in 0..total {
        let event = tap.next(Duration::from_secs(20)).await.unwrap_or_else(|| {
            panic!(
                "only {} of {total} events arrived",
                seen.values().map(Vec::len).sum::<usize>()
            )
        });
        seen.entry(event.booking_id.to_string())
            .or_default()
            .push(event.version);
    }
    assert!(
        tap.next(Duration::from_secs(2)).await.is_none(),
        "no event is published twice"
    );
    for (id, versions) in &expected {
        assert_eq!(
            seen.get(id).cloned().unwrap_or_default(),
            (1..=*versions).collect::<Vec<_>>(),
            "booking {id}: every version once, in order"
        );
    }
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&first.pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn an_outbox_row_that_no_longer_decodes_is_set_aside_and_a_person_is_told() {
    let app = crate::support::spawn_app().await;
    let mut dead = app.tap_dead_letters().await;
    let mut events = app.broker().tap("visitor_booking.#").await;
    // What an older release might have left: an envelope this one cannot read.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (event_id, booking_id, event_type, envelope)
         VALUES (gen_random_uuid(), gen_random_uuid(), 'visitor_booking.created.v1', '{\"shape\": \"old\"}')
         RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    app.seed().await;
    let booking = body(
        app.post("/v1/visitor-bookings", &app.resident_ana(), visit(false))
            .await,
    )
    .await;

    let letter = dead
        .next_message(Duration::from_secs(15))
        .await
        .expect("a dead letter for the row");
    use contracts::headers;
    assert_eq!(
        letter.headers.get_str(headers::SERVICE),
        Some("booking-api")
    );
    assert_eq!(
        letter.headers.get_str(headers::ERROR_KIND),
        Some("permanent")
    );
    let error = letter.headers.get_str(headers::ERROR).unwrap();
    assert!(error.contains(&format!("outbox row {id}")), "{error}");
    assert_eq!(
        String::from_utf8_lossy(&letter.body),
        "{\"shape\": \"old\"}"
    );
    // The row is set aside, not lost, and holds nothing else up.
    let event = events
        .next(Duration::from_secs(15))
        .await
        .expect("the good event goes out");
    assert_eq!(
        event.booking_id.to_string(),
        booking["id"].as_str().unwrap()
    );
    // Parked with the round's commit, just after its messages went out.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let parked: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT parked_at FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if parked.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the row was never parked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dead.next_message(Duration::from_millis(500))
            .await
            .is_none(),
        "told once"
    );
}

#[tokio::test]
async fn every_committed_event_goes_out_at_once_not_at_the_relays_next_poll() {
    // The relay would look on its own only every ten minutes: each event below reaches the
    // broker within seconds only because its transaction woke the relay when it committed.
    let app = spawn_app_with(|settings| {
        settings.outbox.poll_interval_ms = 600_000;
        settings.ipassan.base_url = None;
    })
    .await;
    let mut tap = app.broker().tap("#").await;
    app.seed().await;
    let ana = app.resident_ana();
    let soon = Duration::from_secs(5);
    let mut next_event = async || {
        tap.next(soon)
            .await
            .expect("the event is published at once")
            .routing_key()
            .to_owned()
    };

    // A refused request: the managers' note is committed in a transaction of its own.
    let refused = problem(
        app.post("/v1/visitor-bookings", &ana, visit(true)).await,
        422,
    )
    .await;
    assert_eq!(refused["code"], "ipassan_not_connected");
    assert_eq!(next_event().await, "visitor_request.refused.v1");

    // A building's connection changed by an operator.
    let connected = app
        .put(
            &format!("/v1/buildings/{BUILDING}/connections/ipassan"),
            &app.operator(),
            serde_json::json!({"base_url": "https://harbour.ipassan.example",
                               "client_id": "connecx-harbour", "client_secret": "s3cret-harbour",
                               "site": "harbour-site"}),
        )
        .await;
    assert_eq!(connected.status(), 201);
    assert_eq!(next_event().await, "ipassan_connection.changed.v1");

    // A booking created, then cancelled.
    let created = body(app.post("/v1/visitor-bookings", &ana, visit(true)).await).await;
    assert_eq!(next_event().await, "visitor_booking.created.v1");
    let cancelled = app
        .delete(&booking_path("/v1/visitor-bookings", &created), &ana)
        .await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(next_event().await, "visitor_booking.cancelled.v1");
    app.stop().await;
}
