//! What the benchmarks share: their env knobs, their latency figures and the visitor booking
//! they POST. Each benchmark uses its part of it.
#![allow(dead_code)]

use std::time::Duration;

use contracts::{BookedBy, Resident, Role, Visitor};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use serde_json::{Value, json};

/// The number in env `name`, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`th percentile (nearest rank) of `sorted`; zero when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `duration` in milliseconds.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Prints the p50, p99 and max of `sorted` in ms, one row each, named `<label>p50` and so on
/// (`label` "" or, say, "granted "), the figures in one column.
pub fn print_latencies(label: &str, sorted: &[Duration]) {
    let max = sorted.last().copied().unwrap_or_default();
    for (name, latency) in [
        ("p50", percentile(sorted, 50.0)),
        ("p99", percentile(sorted, 99.0)),
        ("max", max),
    ] {
        println!("  {:<20}{:.1} ms", format!("{label}{name}"), ms(latency));
    }
}

/// The body of the `i`th benchmark visitor booking (`POST /v1/visitor-bookings`), with access.
pub fn visitor_booking_body(i: usize, starts_at: &str, ends_at: &str) -> Value {
    json!({"visitor": {"name": format!("Visitor {i}"), "email": format!("v{i}@bench.example")},
           "starts_at": starts_at, "ends_at": ends_at, "provide_access": true})
}

/// POSTs `body` as JSON to `url` with the bearer `token`; the answer, whatever its status.
pub async fn post_json(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Ana, the resident of apartment 501 the visitor bookings are for.
pub fn ana() -> Resident {
    Resident {
        id: "ana".into(),
        name: "Ana Lee".into(),
        email: "ana@residents.example".into(),
        apartment_id: "apt-501".into(),
        ipassan_person_id: Some("p-ana".into()),
    }
}

/// The `i`th benchmark visitor (as [`visitor_booking_body`] books them).
pub fn bench_visitor(i: usize) -> Visitor {
    Visitor {
        name: format!("Visitor {i}"),
        email: format!("v{i}@bench.example"),
    }
}

/// The manager who books the benchmarks' facility bookings.
pub fn booked_by_manager() -> BookedBy {
    BookedBy {
        user_id: "manager-1".into(),
        role: Role::Manager,
        name: None,
        email: None,
    }
}

/// Consumes `queue` on `channel` with `prefetch` (the workers' prefetch, for a raw limit).
pub async fn consume_with_prefetch(channel: &Channel, queue: &str, prefetch: u16) -> Consumer {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// Takes `n` deliveries from `consumer`, acking each: the raw consume+ack the workers are
/// compared with.
pub async fn consume_and_ack(consumer: &mut Consumer, n: usize) {
    for _ in 0..n {
        let delivery = consumer.next().await.unwrap().unwrap();
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
}

/// Declares the durable quorum queue `name` (as production's queues are) on `channel`.
pub async fn declare_quorum_queue(channel: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
}
