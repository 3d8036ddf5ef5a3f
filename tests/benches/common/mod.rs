//! What the benchmarks share: their env knobs, their latency figures, and the visitor and
//! facility bookings they POST. Each benchmark uses its part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use contracts::{BookedBy, Resident, Role, Visitor};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use serde_json::{Value, json};
use testkit::EventTap;
use tests::Stack;
use tokio::task::JoinHandle;
use uuid::Uuid;

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

// ---------------------------------------------------------------------------------------------
// Facility bookings: apartments and facilities enough for every booking to have its own pair.

/// Facilities (Salto zones) registered for the bench; apartments are added until every booking
/// has its own (apartment, facility) pair.
pub const BENCH_FACILITIES: usize = 10;

pub fn bench_apartment(a: usize) -> (String, String) {
    (format!("apt-bench-{a:04}"), format!("BENCH-{a:04}"))
}

pub fn bench_facility(f: usize) -> (String, String) {
    (format!("bench-room-{f:02}"), format!("BENCH-ZONE-{f:02}"))
}

/// Registers the bench's apartments and facilities in booking-api (as the manager) and the matching
/// access levels and zones in Salto (one seed: the simulator's seed adds, by ID).
pub async fn seed_directory(stack: &Stack, apartments: usize) {
    let manager = stack.manager();
    let mut puts = Vec::new();
    for a in 0..apartments {
        let (id, level) = bench_apartment(a);
        puts.push((
            format!("/v1/apartments/{id}"),
            json!({"access_control_id": level}),
        ));
    }
    for f in 0..BENCH_FACILITIES {
        let (id, zone) = bench_facility(f);
        puts.push((
            format!("/v1/facilities/{id}"),
            json!({"name": format!("Bench room {f}"), "access_control_facility_id": zone}),
        ));
    }
    for (path, body) in puts {
        let (status, answer) = stack
            .send(reqwest::Method::PUT, &path, &manager, Some(body))
            .await;
        assert!(
            (200..300).contains(&status),
            "seeding {path}: {status} {answer}"
        );
    }
    let groups: Vec<Value> = (0..apartments)
        .map(|a| json!({"ext_id": bench_apartment(a).1, "name": format!("Bench apartment {a}")}))
        .collect();
    let zones: Vec<Value> = (0..BENCH_FACILITIES)
        .map(|f| json!({"ext_id": bench_facility(f).1, "name": format!("Bench room {f}")}))
        .collect();
    let seeded = stack
        .http
        .post(format!(
            "{}/_sim/seed",
            stack.salto_sim.url().trim_end_matches('/')
        ))
        .json(&json!({"groups": groups, "zones": zones}))
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success(), "salto-sim seeded");
}

/// The body of the `i`th benchmark facility booking (`POST /v1/facility-bookings`, as the
/// manager) among bookings spread over `apartments` apartments: consecutive bookings go to
/// different apartments (access levels), as real traffic does, and the pair
/// (i mod apartments, i div apartments) is unique for i < apartments × [`BENCH_FACILITIES`], so
/// none is a double booking.
pub fn facility_booking_body(i: usize, apartments: usize, starts_at: &str, ends_at: &str) -> Value {
    let (apartment, _) = bench_apartment(i % apartments);
    let (facility, _) = bench_facility(i / apartments);
    json!({"facility_id": facility, "apartment_id": apartment,
           "starts_at": starts_at, "ends_at": ends_at})
}

/// When each booking's first `*.granted.v1` event came off `tap` (bound to the grants, or to
/// more), watched beside the run until `n` bookings have one or none comes for `quiet`.
pub fn watch_grants(
    mut tap: EventTap,
    n: usize,
    quiet: Duration,
) -> JoinHandle<HashMap<Uuid, Instant>> {
    tokio::spawn(async move {
        let mut granted: HashMap<Uuid, Instant> = HashMap::with_capacity(n);
        while granted.len() < n {
            let Some(envelope) = tap.next(quiet).await else {
                break;
            };
            if envelope.routing_key().ends_with(".granted.v1") {
                granted
                    .entry(envelope.booking_id)
                    .or_insert_with(Instant::now);
            }
        }
        granted
    })
}

// ---------------------------------------------------------------------------------------------
// Visitor bookings by many residents.

/// Residents of apartment 501 the benches' visitor bookings spread over, as a morning's bookings
/// come from many residents: a creation counts its resident's live bookings under that resident's
/// lock, so one resident's bookings are created one at a time.
pub const BENCH_RESIDENTS: usize = 200;

/// The `k`th bench resident's id (`bench-000` …), also their iPassan person (`p-bench-000` …).
pub fn bench_resident(k: usize) -> String {
    format!("bench-{k:03}")
}

/// The body of `PUT /v1/residents/{bench_resident(k)}`: in apartment 501, synced to iPassan.
pub fn bench_resident_body(k: usize) -> Value {
    let id = bench_resident(k);
    json!({"name": format!("Resident {k}"), "email": format!("{id}@residents.example"),
           "apartment_id": "apt-501", "ipassan_person_id": format!("p-{id}")})
}

/// Registers the [`BENCH_RESIDENTS`] in `stack`'s booking-api and, as persons with Ana's access
/// profile, in its iPassan; their tokens, in order.
pub async fn seed_residents(stack: &Stack) -> Vec<String> {
    let mut seed = tests::ipassan_seed();
    let site = seed
        .sites
        .get_mut(tests::IPASSAN_SITE)
        .expect("the e2e iPassan seed has the building's site");
    let ana = site.persons[0].clone();
    site.persons = (0..BENCH_RESIDENTS)
        .map(|k| ipassan_sim::Person {
            id: format!("p-{}", bench_resident(k)),
            email: format!("{}@residents.example", bench_resident(k)),
            ..ana.clone()
        })
        .collect();
    stack
        .ipassan_sim
        .control()
        .seed(&seed)
        .await
        .expect("ipassan-sim seeded");
    let manager = stack.manager();
    let mut tokens = Vec::with_capacity(BENCH_RESIDENTS);
    for k in 0..BENCH_RESIDENTS {
        let path = format!("/v1/residents/{}", bench_resident(k));
        let (status, answer) = stack
            .send(
                reqwest::Method::PUT,
                &path,
                &manager,
                Some(bench_resident_body(k)),
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "seeding {path}: {status} {answer}"
        );
        tokens.push(stack.token(Role::Resident, &bench_resident(k), Some("apt-501")));
    }
    tokens
}
