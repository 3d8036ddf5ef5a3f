//! What operators and client developers use: health, readiness, metrics and the API description.

use crate::helpers::{body, spawn_app, spawn_app_offline};

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

#[tokio::test]
async fn readiness_fails_while_the_broker_is_unreachable() {
    let broker = testkit::TestBroker::create().await;
    let proxy = crate::helpers::BrokerProxy::start(false).await;
    let url = proxy.url(&broker.vhost);
    let app = crate::helpers::spawn_app_with_amqp(broker, url).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let problem = body(ready).await;
    assert_eq!(problem["code"], "not_ready");
    assert!(
        problem["detail"].as_str().unwrap().contains("broker"),
        "{problem}"
    );
    proxy.come_up();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
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
