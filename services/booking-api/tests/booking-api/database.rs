//! A database that goes away is an outage a client can wait out, not a failure of ours: the
//! request answers 503 `database_unavailable` with `Retry-After`, never 500, and the requests
//! after the database is back are served as usual.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{BrokerProxy, TestApp, problem, settings_for, spawn_app_offline, spawn_with};

/// Asserts `response` is the 503 of an unavailable database.
async fn assert_database_unavailable(response: reqwest::Response) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = problem(response, 503).await;
    assert_eq!(body["code"], "database_unavailable", "{body}");
    let retry_after = retry_after.expect("a 503 for the database says when to retry");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|secs| secs >= 1),
        "Retry-After: {retry_after}"
    );
}

/// Sends `GET /v1/visitor-bookings` as Ana until it answers 200 (the pool reconnects).
async fn until_served(app: &TestApp, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = app.get("/v1/visitor-bookings", token).await;
        if response.status() == StatusCode::OK {
            return;
        }
        assert_ne!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            response.text().await.unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_request_whose_database_connection_is_terminated_answers_503_and_the_next_is_served() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    assert_eq!(app.get("/v1/visitor-bookings", &ana).await.status(), 200);

    // Hold the request in the middle of its statement: it waits for this lock.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE visitor_bookings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let request = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/visitor-bookings");
        let ana = ana.clone();
        async move { client.get(url).bearer_auth(ana).send().await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *lock)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What an administrator or a failover does to the service's sessions.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND backend_type = 'client backend'",
    )
    .execute(&mut *lock)
    .await
    .unwrap();
    let response = request.await.unwrap().unwrap();
    assert_database_unavailable(response).await;

    lock.rollback().await.unwrap();
    until_served(&app, &ana).await;
    app.stop().await;
}

#[tokio::test]
async fn while_the_database_is_unreachable_requests_answer_503_and_are_served_once_it_is_back() {
    let db = testkit::TestDb::create().await;
    let proxy = BrokerProxy::start_to("127.0.0.1:5432".into(), true).await;
    let url = db.service_url(booking_api::SCHEMA);
    let through_proxy = url.replace("127.0.0.1:5432", &proxy.address.to_string());
    assert_ne!(through_proxy, url, "the test database is on 127.0.0.1:5432");
    let nowhere = BrokerProxy::start(false).await;
    let app = spawn_with(settings_for(through_proxy, nowhere.url("offline")), None).await;
    app.seed().await;
    let ana = app.resident_ana();
    let manager = app.manager();

    proxy.go_down();
    let started = Instant::now();
    assert_database_unavailable(app.get("/v1/visitor-bookings", &ana).await).await;
    assert_database_unavailable(
        app.post("/v1/visitor-bookings", &ana, crate::support::visit(false))
            .await,
    )
    .await;
    assert_database_unavailable(
        app.put(
            "/v1/facilities/gym",
            &manager,
            serde_json::json!({"name": "Gym"}),
        )
        .await,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered within the pool's acquire timeout: {:?}",
        started.elapsed()
    );

    proxy.come_up();
    until_served(&app, &ana).await;
    let created = app
        .post("/v1/visitor-bookings", &ana, crate::support::visit(false))
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    app.stop().await;
    drop(db);
}
