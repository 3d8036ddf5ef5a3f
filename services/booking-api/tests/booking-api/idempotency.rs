//! `Idempotency-Key`: a retried creation answers with the first booking; a reused key with another
//! body is refused.

use std::time::Duration;

use serde_json::json;

use crate::support::{body, problem, spawn_app, spawn_app_offline, visit};

async fn create(
    app: &crate::support::TestApp,
    token: &str,
    key: &str,
    request: &serde_json::Value,
) -> reqwest::Response {
    app.client
        .post(app.url("/v1/visitor-bookings"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(request)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_same_key_and_body_answer_with_the_first_booking() {
    let app = spawn_app().await;
    let mut tap = app.broker().tap("visitor_booking.#").await;
    app.seed().await;
    let ana = app.resident_ana();
    let request = visit(true);

    let first = create(&app, &ana, "key-1", &request).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = body(first).await;

    // The same JSON with its keys in another order is the same request.
    let reordered: serde_json::Value = serde_json::from_str(&{
        let mut fields: Vec<(String, serde_json::Value)> =
            request.as_object().unwrap().clone().into_iter().collect();
        fields.reverse();
        format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{:?}:{}", k, v))
                .collect::<Vec<_>>()
                .join(",")
        )
    })
    .unwrap();
    let second = create(&app, &ana, "key-1", &reordered).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second = body(second).await;
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second, first);

    let bookings: i64 = sqlx::query_scalar("SELECT count(*) FROM visitor_bookings")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(bookings, 1);
    assert_eq!(app.outbox_rows().await, 1);
    assert!(tap.next(Duration::from_secs(15)).await.is_some());
    assert!(
        tap.next(Duration::from_secs(1)).await.is_none(),
        "announced once"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    assert_eq!(
        create(&app, &ana, "key-2", &visit(true)).await.status(),
        201
    );
    let p = problem(create(&app, &ana, "key-2", &visit(false)).await, 422).await;
    assert_eq!(p["code"], "idempotency_key_reused");
    // On another endpoint too.
    let (starts_at, ends_at) = crate::support::local_tomorrow(9, 10);
    let response = app
        .client
        .post(app.url("/v1/facility-bookings"))
        .bearer_auth(&ana)
        .header("idempotency-key", "key-2")
        .json(&json!({"facility_id": "games-room", "starts_at": starts_at, "ends_at": ends_at}))
        .send()
        .await
        .unwrap();
    problem(response, 422).await;
    // Keys are per caller: Bo's key-2 is his own.
    assert_eq!(
        create(&app, &app.resident_bo(), "key-2", &visit(false))
            .await
            .status(),
        201
    );
    assert_eq!(app.outbox_rows().await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_request_does_not_use_up_its_key_and_a_bad_key_is_400() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let mut broken = visit(true);
    broken["ends_at"] = broken["starts_at"].clone();
    problem(create(&app, &ana, "key-3", &broken).await, 422).await;
    assert_eq!(
        create(&app, &ana, "key-3", &visit(true)).await.status(),
        201
    );
    let p = problem(
        create(&app, &ana, &"k".repeat(300), &visit(true)).await,
        400,
    )
    .await;
    assert_eq!(p["code"], "invalid_idempotency_key");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_one_booking() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let request = visit(false);
    let (a, b, c) = tokio::join!(
        create(&app, &ana, "key-4", &request),
        create(&app, &ana, "key-4", &request),
        create(&app, &ana, "key-4", &request)
    );
    let ids: Vec<serde_json::Value> = vec![
        body(a).await["id"].clone(),
        body(b).await["id"].clone(),
        body(c).await["id"].clone(),
    ];
    assert!(
        ids.iter().all(|id| id == &ids[0] && id.is_string()),
        "{ids:?}"
    );
    assert_eq!(app.outbox_rows().await, 1);
    app.stop().await;
}
