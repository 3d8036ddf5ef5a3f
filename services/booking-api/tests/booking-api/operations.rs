//! What operators and client developers use: health, readiness, metrics and the API description.

use crate::support::{body, spawn_app, spawn_app_offline};

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    app.client
        .get(app.url("/v1/visitor-bookings"))
        .send()
        .await
        .unwrap();
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains("route=\"/v1/visitor-bookings\""), "{text}");
    app.stop().await;
}

/// The value of the metric line `name value` (no labels), if any.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn while_the_broker_is_unreachable_it_stays_ready_and_says_so_in_healthz_and_a_metric() {
    let (app, proxy) = crate::support::spawn_app_behind_proxy().await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "bookings are accepted (into the outbox) while the broker is down"
    );
    let health = |app: &crate::support::TestApp| {
        let request = app.client.get(app.url("/healthz")).send();
        async move { body(request.await.unwrap()).await }
    };
    let metrics = |app: &crate::support::TestApp| {
        let request = app.client.get(app.url("/metrics")).send();
        async move { request.await.unwrap().text().await.unwrap() }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while health(&app).await["broker"] != "down" {
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never said the broker is down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(health(&app).await["status"], "ok");
    assert_eq!(metric(&metrics(&app).await, "connecx_broker_up"), Some(0.0));

    proxy.come_up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while health(&app).await["broker"] != "up" {
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never saw the broker back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&metrics(&app).await, "connecx_broker_up"), Some(1.0));
    app.stop().await;
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_unreachable() {
    let db = testkit::TestDb::create().await;
    let proxy = crate::support::BrokerProxy::start_to("127.0.0.1:5432".into(), true).await;
    let url = db.service_url(booking_api::SCHEMA);
    let through_proxy = url.replace("127.0.0.1:5432", &proxy.address.to_string());
    assert_ne!(through_proxy, url, "the test database is on 127.0.0.1:5432");
    let nowhere = crate::support::BrokerProxy::start(false).await;
    let settings = crate::support::settings_for(through_proxy, nowhere.url("offline"));
    let app = crate::support::spawn_with(settings, None).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    proxy.go_down();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let problem = body(ready).await;
    assert_eq!(problem["code"], "not_ready");
    assert!(
        problem["detail"].as_str().unwrap().contains("database"),
        "{problem}"
    );

    proxy.come_up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    app.stop().await;
    drop(db);
}

#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let app = spawn_app_offline().await;
    let doc = body(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/visitor-bookings",
        "/v1/visitor-bookings/{id}",
        "/v1/facility-bookings",
        "/v1/buildings/{id}",
        "/v1/residents/{id}",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let ui = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), 200);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "Swagger UI page"
    );
    app.stop().await;
}
