//! What the benchmarks share: their env knobs, their latency figures and the visitor booking
//! they POST. Each benchmark uses its part of it.
#![allow(dead_code)]

use std::time::Duration;

use contracts::{Resident, Visitor};
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
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
