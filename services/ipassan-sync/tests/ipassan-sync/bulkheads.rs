//! Bulkheads: a failing iPassan tenant trips its breaker, its bookings wait (through the tiers,
//! without using up their retries, so nothing becomes a dead letter) and complete when it is
//! back; its buildings' managers hear once that it is down and once that it works again; its
//! health is a metric; and another tenant's bookings go on as if nothing happened.

use std::time::Duration;

use contracts::Event;
use platform::bulkhead::ConnectionSettings;
use testkit::EventTap;
use uuid::Uuid;

use crate::support::{
    self, FROM, Harness, Options, TO, VISITOR_PATH, WAITED, booking, created, creates, metric,
    status, until,
};

/// The harbour building's iPassan connection, as its metrics are labelled.
const HARBOUR_IPASSAN: [&str; 2] = ["building=\"harbour\"", "system=\"ipassan\""];

fn quick_breaker() -> ConnectionSettings {
    ConnectionSettings {
        max_in_flight: 4,
        breaker_failures: 2,
        breaker_open_secs: 1,
        outage_alert_secs: 2,
        ..ConnectionSettings::default()
    }
}

/// The next `connection.*` event on `health` (panics after 15 s).
async fn next_connection_event(health: &mut EventTap, what: &str) -> Event {
    health
        .next(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("{what} within 15 s"))
        .event
}

/// Waits until the bulkhead has turned bookings away `times` more times, each without a retry
/// used up and without calling iPassan.
async fn until_turned_away(h: &Harness, times: f64) {
    let before = h.queue_counter(WAITED).await;
    until(&format!("{times} more bookings turned away"), async || {
        h.queue_counter(WAITED).await >= before + times
    })
    .await;
}

#[tokio::test]
async fn a_failing_tenant_makes_its_bookings_wait_and_its_managers_hear_once_down_and_once_up() {
    let mut h = support::start_with(Options {
        // Two short tiers: without the breaker the bookings would be dead letters in 0.4 s.
        tiers: "200ms,200ms",
        connections: quick_breaker(),
        ..Options::default()
    })
    .await;
    let mut health = h.broker.tap("connection.#").await;
    h.fault("POST", VISITOR_PATH, status(503), 100_000).await;
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        h.publish(&created(*id, booking(FROM, TO))).await;
    }

    let Event::ConnectionDown(outage) = next_connection_event(&mut health, "an outage alert").await
    else {
        panic!("expected connection.down first");
    };
    assert_eq!(outage.building.id, "harbour");
    assert_eq!(outage.building.manager_emails, ["manager@harbour.example"]);
    assert_eq!(outage.system, contracts::AccessSystem::Ipassan);
    assert!(outage.last_error.contains("503"), "{}", outage.last_error);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(&metrics, "connecx_connection_up", &HARBOUR_IPASSAN),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "connecx_connection_breaker_state",
            &HARBOUR_IPASSAN
        )
        .unwrap()
            >= 1.0,
        "{metrics}"
    );
    // Far beyond the two tiers (every booking turned away three times over, on average): still
    // nothing dead-lettered, nothing announced twice.
    until_turned_away(&h, 3.0 * ids.len() as f64).await;
    h.no_dead_letters(Duration::from_millis(100)).await;
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
    let Event::ConnectionRecovered(recovered) =
        next_connection_event(&mut health, "a recovery notice").await
    else {
        panic!("expected connection.recovered after the outage");
    };
    assert_eq!(recovered.failing_since, outage.failing_since);
    assert!(recovered.recovered_at.is_some());
    assert!(
        health.next(Duration::from_millis(500)).await.is_none(),
        "one of each"
    );
    assert_eq!(
        metric(
            &h.metrics().await,
            "connecx_connection_up",
            &HARBOUR_IPASSAN
        ),
        Some(1.0)
    );
    h.no_dead_letters(Duration::from_millis(200)).await;
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
        h.publish_created(booking(FROM, TO)).await;
    }
    until("the breaker to open", async || {
        let metrics = h.metrics().await;
        metric(
            &metrics,
            "connecx_connection_breaker_state",
            &HARBOUR_IPASSAN,
        ) == Some(2.0)
    })
    .await;
    // Every booking comes back twice over (on average) while it is open.
    until_turned_away(&h, 20.0).await;
    let posts = creates(&h.requests().await).len();
    // The two failures that opened it, and at most the calls already under way then.
    assert!(posts <= 2 + 4, "{posts} calls to a tenant known to be down");
    h.no_dead_letters(Duration::from_millis(200)).await;
    h.no_more_results(Duration::from_millis(100)).await;
}
