//! The health port an orchestrator probes: up, ready once consuming, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use platform::config::{AmqpSettings, DatabaseSettings, LogSettings, RetrySettings};
use testkit::{TestBroker, TestDb};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_health_port_answers_and_says_ready_once_the_worker_consumes() {
    platform::telemetry::init_for_tests();
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let sim = ipassan_sim::spawn().await.unwrap();
    let app = ipassan_sync::Application::build(ipassan_sync::Settings {
        retention: Default::default(),
        database: DatabaseSettings {
            url: db.service_url(ipassan_sync::SCHEMA),
            max_connections: 4,
        },
        amqp: AmqpSettings {
            url: broker.url_for(contracts::Service::IpassanSync),
            prefetch: 4,
            delivery_limit: 5,
            drain_timeout_secs: 30,
        },
        ipassan: Some(ipassan_sync::IpassanSettings {
            base_url: sim.base_url.clone(),
            client_id: "connecx".into(),
            client_secret: "unused".into(),
            timeout_secs: 5,
        }),
        connections: Default::default(),
        secrets: Default::default(),
        retry: RetrySettings::default(),
        log: LogSettings::default(),
        health: platform::health::HealthSettings {
            port: Some(0),
            host: "127.0.0.1".into(),
        },
    })
    .await
    .unwrap();
    let port = app.health_port().expect("a health port");
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));

    let get = |path: &'static str| async move {
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap();
        response.status().as_u16()
    };
    assert_eq!(get("/healthz").await, 200);
    let mut ready = get("/readyz").await;
    for _ in 0..100 {
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = get("/readyz").await;
    }
    assert_eq!(ready, 200, "ready once consuming");
    assert_eq!(get("/metrics").await, 200);
}
