//! Bulkheads: a failing iPassan tenant trips its breaker, its bookings wait (through the tiers,
//! without using up their retries, so nothing becomes a dead letter) and complete when it is
//! back; its buildings' managers hear once that it is down and once that it works again; its
//! health is a metric; and another tenant's bookings go on as if nothing happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use contracts::Event;
use platform::bulkhead::ConnectionSettings;
use support::{FROM, Options, TO, VISITOR_PATH, booking, created, status};
use uuid::Uuid;

fn quick_breaker() -> ConnectionSettings {
    ConnectionSettings {
        max_in_flight: 4,
        breaker_failures: 2,
        breaker_open_secs: 1,
        outage_alert_secs: 2,
    }
}

/// The value of a metric line `name{labels} value` (labels in any order).
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn a_failing_tenant_makes_its_bookings_wait_and_its_managers_hear_once_down_and_once_up() {
    let mut h = support::start_with(Options {
        // Two short tiers: without the breaker the bookings would be dead letters in 0.4 s.
        tiers: "200ms,200ms",
        connections: quick_breaker(),
        health_port: true,
        ..Options::default()
    })
    .await;
    let mut health = h.broker.tap("connection.#").await;
    h.fault("POST", VISITOR_PATH, status(503), 100_000).await;
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        h.publish(&created(*id, booking(FROM, TO))).await;
    }

    let down = health
        .next(Duration::from_secs(15))
        .await
        .expect("an outage alert");
    let Event::ConnectionDown(outage) = &down.event else {
        panic!("expected connection.down, got {}", down.routing_key());
    };
    assert_eq!(outage.building.id, "harbour");
    assert_eq!(outage.building.manager_emails, ["manager@harbour.example"]);
    assert_eq!(outage.system, contracts::AccessSystem::Ipassan);
    assert!(outage.last_error.contains("503"), "{}", outage.last_error);
    let metrics = h.metrics().await;
    let labels = ["building=\"harbour\"", "system=\"ipassan\""];
    assert_eq!(
        metric(&metrics, "connecx_connection_up", &labels),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "connecx_connection_breaker_state", &labels).unwrap() >= 1.0,
        "{metrics}"
    );
    // Far beyond the two tiers: still nothing dead-lettered, nothing announced twice.
    if let Some(dead) = h.dead_letters.next_message(Duration::from_secs(2)).await {
        panic!("dead letter: {:?}", dead.headers);
    }
    assert!(health.next(Duration::from_millis(100)).await.is_none());

    // iPassan is back: every booking completes, and the managers hear it once.
    h.control.clear_faults().await.unwrap();
    let mut granted = Vec::new();
    while granted.len() < ids.len() {
        let result = h.next_result().await;
        if result.routing_key() == "visitor_access.granted.v1" {
            granted.push(result.booking_id);
        }
    }
    granted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(granted, expected);
    let up = health
        .next(Duration::from_secs(15))
        .await
        .expect("a recovery notice");
    let Event::ConnectionRecovered(recovered) = &up.event else {
        panic!("expected connection.recovered, got {}", up.routing_key());
    };
    assert_eq!(recovered.failing_since, outage.failing_since);
    assert!(recovered.recovered_at.is_some());
    assert!(
        health.next(Duration::from_millis(500)).await.is_none(),
        "one of each"
    );
    assert_eq!(
        metric(&h.metrics().await, "connecx_connection_up", &labels),
        Some(1.0)
    );
    assert!(
        h.dead_letters
            .next(Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn an_open_breaker_stops_calling_the_failing_tenant() {
    let mut h = support::start_with(Options {
        tiers: "200ms,200ms",
        connections: ConnectionSettings {
            breaker_open_secs: 3600,
            ..quick_breaker()
        },
        ..Options::default()
    })
    .await;
    h.fault("POST", VISITOR_PATH, status(503), 100_000).await;
    for _ in 0..10 {
        h.publish(&created(Uuid::new_v4(), booking(FROM, TO))).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posts = h
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == VISITOR_PATH)
        .count();
    // The two failures that opened it, and at most the calls already under way then.
    assert!(posts <= 2 + 4, "{posts} calls to a tenant known to be down");
    assert!(
        h.dead_letters
            .next(Duration::from_millis(200))
            .await
            .is_none()
    );
    h.no_more_results(Duration::from_millis(100)).await;
}
