//! The health port an orchestrator probes: up, ready once consuming, metrics.

use crate::support::{start, until};

#[tokio::test]
async fn the_health_port_answers_and_says_ready_once_the_worker_consumes() {
    let harness = start().await;
    let port = harness.health_port.expect("a health port");
    let get = |path: &'static str| async move {
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap();
        response.status().as_u16()
    };
    assert_eq!(get("/healthz").await, 200);
    until("/readyz to say ready", async || get("/readyz").await == 200).await;
    assert_eq!(get("/metrics").await, 200);
}
