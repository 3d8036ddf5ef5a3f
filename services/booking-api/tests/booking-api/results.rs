//! The results consumer: workers' access outcomes land on the booking, latest version wins, and
//! `Prefer: wait` answers with the outcome when it arrives in time.

use std::time::Duration;

use contracts::{
    AccessFailure, Envelope, Event, FacilityAccessResult, VisitorAccessResult, VisitorBooking,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{
    TestApp, body, booking_path, captured_logs, local_tomorrow, problem, spawn_app, visit,
};

const PIN: &str = "048213";

/// Creates a visit for Ana and returns its id and the snapshot it was announced with.
async fn announced_visit(app: &TestApp) -> (String, VisitorBooking) {
    let mut tap = app.broker().tap("visitor_booking.#").await;
    let created = body(
        app.post("/v1/visitor-bookings", &app.resident_ana(), visit(true))
            .await,
    )
    .await;
    let event = tap
        .next(Duration::from_secs(15))
        .await
        .expect("created event");
    let Event::VisitorBookingCreated(snapshot) = event.event else {
        panic!("not created")
    };
    (created["id"].as_str().unwrap().to_owned(), snapshot)
}

async fn results_queue_ready(app: &TestApp) {
    app.broker()
        .wait_for_consumer(
            contracts::BOOKING_API_RESULTS_QUEUE.name,
            Duration::from_secs(15),
        )
        .await;
}

fn granted(id: &str, version: i64, snapshot: &VisitorBooking, pin: &str) -> Envelope {
    Envelope::new(
        Uuid::parse_str(id).unwrap(),
        version,
        Event::VisitorAccessGranted(VisitorAccessResult {
            booking: snapshot.clone(),
            pin: Some(pin.into()),
            failure: None,
        }),
    )
}

async fn eventually_status(
    app: &TestApp,
    path: &str,
    token: &str,
    status: &str,
) -> serde_json::Value {
    for _ in 0..100 {
        let seen = body(app.get(path, token).await).await;
        if seen["access"]["status"] == status {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("access never became {status}");
}

#[tokio::test]
async fn a_granted_result_shows_the_pin_to_the_resident_and_managers_only_and_never_in_the_logs() {
    let app = spawn_app().await;
    app.seed().await;
    results_queue_ready(&app).await;
    let (id, snapshot) = announced_visit(&app).await;
    app.broker()
        .publish_event(&granted(&id, 1, &snapshot, PIN))
        .await;

    let path = format!("/v1/visitor-bookings/{id}");
    let seen = eventually_status(&app, &path, &app.resident_ana(), "granted").await;
    assert_eq!(seen["access"]["pin"], PIN, "leading zero kept");
    let listed = body(app.get("/v1/visitor-bookings", &app.resident_ana()).await).await;
    assert_eq!(listed["items"][0]["access"]["pin"], PIN);
    let as_manager = body(app.get(&path, &app.manager()).await).await;
    assert_eq!(as_manager["access"]["pin"], PIN);

    let p = problem(app.get(&path, &app.resident_bo()).await, 403).await;
    assert!(!p.to_string().contains(PIN));
    let stranger = app.token(
        contracts::Role::Manager,
        "m-2",
        crate::support::OTHER_BUILDING,
        None,
    );
    problem(app.get(&path, &stranger).await, 404).await;

    let logs = captured_logs();
    assert!(
        logs.contains(&id),
        "the test did capture the service's logs"
    );
    assert!(!logs.contains(PIN), "the PIN appeared in the logs");
    app.stop().await;
}

#[tokio::test]
async fn a_result_for_an_older_version_is_ignored() {
    let app = spawn_app().await;
    app.seed().await;
    results_queue_ready(&app).await;
    let (id, snapshot) = announced_visit(&app).await;
    let path = format!("/v1/visitor-bookings/{id}");
    let (_, later) = local_tomorrow(18, 23);
    app.patch(&path, &app.resident_ana(), json!({"ends_at": later}))
        .await;
    app.delete(&path, &app.resident_ana()).await;

    let revoked = Envelope::new(
        Uuid::parse_str(&id).unwrap(),
        3,
        Event::VisitorAccessRevoked(VisitorAccessResult {
            booking: snapshot.clone(),
            pin: None,
            failure: None,
        }),
    );
    app.broker().publish_event(&revoked).await;
    eventually_status(&app, &path, &app.resident_ana(), "revoked").await;

    // The late grant of version 1 arrives after the revocation of version 3.
    let mut late = granted(&id, 1, &snapshot, "999999");
    late.occurred_at = revoked.occurred_at + chrono::Duration::seconds(5);
    app.broker().publish_event(&late).await;
    // A later failure of version 3 still applies.
    let failed = Envelope::new(
        Uuid::parse_str(&id).unwrap(),
        3,
        Event::VisitorAccessFailed(VisitorAccessResult {
            booking: snapshot,
            pin: None,
            failure: Some(AccessFailure {
                code: "visitee_not_found".into(),
                message: "Ana is not in iPassan".into(),
                needs_manager: true,
            }),
        }),
    );
    app.broker().publish_event(&failed).await;
    let seen = eventually_status(&app, &path, &app.resident_ana(), "failed").await;
    assert_eq!(seen["access"]["pin"], serde_json::Value::Null);
    assert_eq!(seen["access"]["reason_code"], "visitee_not_found");
    assert_eq!(seen["access"]["reason"], "Ana is not in iPassan");
    assert_eq!(seen["version"], 3);
    app.stop().await;
}

#[tokio::test]
async fn prefer_wait_answers_with_the_pin_when_the_outcome_arrives_in_time() {
    let app = spawn_app().await;
    app.seed().await;
    results_queue_ready(&app).await;
    // Play ipassan-sync: answer the created visit with a grant while the request waits.
    let mut tap = app.broker().tap("visitor_booking.#").await;
    let ipassan_sync = async {
        let event = tap
            .next(Duration::from_secs(15))
            .await
            .expect("created event");
        let Event::VisitorBookingCreated(snapshot) = event.event.clone() else {
            panic!("not created")
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.broker()
            .publish_event(&granted(
                &event.booking_id.to_string(),
                event.version,
                &snapshot,
                PIN,
            ))
            .await;
    };
    let started = std::time::Instant::now();
    let request = app
        .client
        .post(app.url("/v1/visitor-bookings"))
        .bearer_auth(app.resident_ana())
        .header("prefer", "wait=5")
        .json(&visit(true))
        .send();
    let ((), response) = tokio::join!(ipassan_sync, request);
    let response = response.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["preference-applied"], "wait=5");
    let created = body(response).await;
    assert_eq!(created["access"]["status"], "granted", "{created}");
    assert_eq!(created["access"]["pin"], PIN);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered as soon as the outcome was known"
    );

    // Nobody answers: after the wait the booking is still pending.
    let started = std::time::Instant::now();
    let response = app
        .client
        .post(app.url("/v1/visitor-bookings"))
        .bearer_auth(app.resident_bo())
        .header("prefer", "wait=1")
        .json(&visit(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(body(response).await["access"]["status"], "pending");
    assert!(started.elapsed() >= Duration::from_secs(1));
    app.stop().await;
}

#[tokio::test]
async fn a_deferred_facility_booking_names_the_booking_holding_the_slot() {
    let app = spawn_app().await;
    app.seed().await;
    results_queue_ready(&app).await;
    let mut tap = app.broker().tap("facility_booking.#").await;
    let (starts_at, ends_at) = local_tomorrow(19, 21);
    let created = body(
        app.post(
            "/v1/facility-bookings",
            &app.resident_ana(),
            json!({"facility_id": "games-room", "starts_at": starts_at, "ends_at": ends_at}),
        )
        .await,
    )
    .await;
    let event = tap.next(Duration::from_secs(15)).await.expect("created");
    let Event::FacilityBookingCreated(snapshot) = event.event else {
        panic!()
    };
    let holder = Uuid::new_v4();
    let deferred = Envelope::new(
        event.booking_id,
        1,
        Event::FacilityAccessDeferred(FacilityAccessResult {
            booking: snapshot,
            held_by: Some(holder),
            held_by_window: None,
            failure: Some(AccessFailure {
                code: "double_booking".into(),
                message: "The games room is taken".into(),
                needs_manager: false,
            }),
        }),
    );
    app.broker().publish_event(&deferred).await;
    let path = booking_path("/v1/facility-bookings", &created);
    let seen = eventually_status(&app, &path, &app.resident_ana(), "deferred").await;
    assert_eq!(seen["access"]["held_by"], holder.to_string());
    assert_eq!(seen["access"]["reason_code"], "double_booking");
    app.stop().await;
}

/// The value of `/metrics` line `name{…queue="booking-api.results"…}`, 0 when absent.
async fn results_metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let queue = format!("queue=\"{}\"", contracts::BOOKING_API_RESULTS_QUEUE.name);
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(&queue))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn results_in_hand_are_applied_together_and_one_for_an_unknown_booking_fails_alone() {
    let app = spawn_app().await;
    app.seed().await;
    results_queue_ready(&app).await;
    let mut dead_letters = app.tap_dead_letters().await;
    let mut visits = Vec::new();
    for _ in 0..12 {
        visits.push(announced_visit(&app).await);
    }
    // Another transaction holds the first two bookings' rows: the batches with their results
    // wait for them, and the results published meanwhile gather in the consumer.
    let mut holder = app.pool.begin().await.unwrap();
    for (id, _) in &visits[..2] {
        sqlx::query("SELECT 1 FROM visitor_bookings WHERE id = $1::uuid FOR UPDATE")
            .bind(id)
            .execute(&mut *holder)
            .await
            .unwrap();
    }
    for (i, (id, snapshot)) in visits.iter().enumerate() {
        app.broker()
            .publish_event(&granted(id, 1, snapshot, &format!("{i:06}")))
            .await;
    }
    let stranger = Uuid::new_v4().to_string();
    app.broker()
        .publish_event(&granted(&stranger, 1, &visits[0].1, "111111"))
        .await;
    let queue = contracts::BOOKING_API_RESULTS_QUEUE.name;
    for _ in 0..150 {
        if app.broker().queue_depth(queue).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.broker().queue_depth(queue).await,
        0,
        "every result delivered"
    );
    holder.rollback().await.unwrap();

    for (i, (id, _)) in visits.iter().enumerate() {
        let path = format!("/v1/visitor-bookings/{id}");
        let seen = eventually_status(&app, &path, &app.resident_ana(), "granted").await;
        assert_eq!(
            seen["access"]["pin"],
            format!("{i:06}"),
            "{id} has its own PIN"
        );
    }
    let dead = dead_letters
        .next_message(Duration::from_secs(15))
        .await
        .expect("the result for a booking booking-api does not have is a dead letter");
    let error = dead
        .headers
        .get_str(contracts::headers::ERROR)
        .unwrap_or_default();
    assert!(error.contains(&stranger), "{error}");
    assert!(
        dead_letters
            .next_message(Duration::from_millis(500))
            .await
            .is_none(),
        "that result alone"
    );
    let batches = results_metric(&app, "connecx_batches_total").await;
    let messages = results_metric(&app, "connecx_batched_messages_total").await;
    assert_eq!(messages, 13.0, "every result went through a batch");
    assert!(
        batches < messages,
        "some batch held several results: {batches} batches for {messages} results"
    );
    app.stop().await;
}
