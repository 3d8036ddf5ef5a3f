//! One building's outage must not slow another: with the bay building's Salto server never
//! answering (its calls time out) and its iPassan answering 503, the harbour building's visitor
//! and facility bookings arrive at `BENCH_RATE` per second (default 20, alternating) for
//! `BENCH_SECS` seconds (default 30), while bay books at half that rate (all of it waits). Printed
//! per run: harbour's POST → granted latency (p50, p99,
//! max; `Prefer: wait=10`), harbour bookings not granted within the wait, dead letters of either
//! building, and how long bay's waiting bookings take to complete once its systems are back.
//!
//! Two runs, same machine, same load: the bulkheads as shipped (defaults), and "off" (no cap on
//! messages in flight, a breaker that never opens) to show what they buy.
//!
//! `cargo bench -p tests --bench bulkheads` (a release build of the workspace first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{env_number, ms, percentile};
use platform::bulkhead::ConnectionSettings;
use reqwest::Method;
use serde_json::{Value, json};
use tests::fleet::{BAY, BAY_SHIP_KEY, Fleet, FleetOptions, HARBOUR};

/// Apartments of the harbour building, each its own Salto access level, so that every facility
/// booking is a slot of its own (Salto holds one permission per access level and zone) up to
/// 800 harbour bookings (every second one is a facility booking).
const APARTMENTS: usize = 400;

#[tokio::main]
async fn main() {
    let rate = env_number("BENCH_RATE", 20);
    let secs = env_number("BENCH_SECS", 30);
    println!(
        "bulkheads: harbour books at {rate}/s for {secs} s while bay's Salto never answers (10 s timeout) and its iPassan answers 503"
    );
    println!();
    println!(
        "| run | harbour POST → granted p50 / p99 / max | harbour not granted in 10 s | dead letters (harbour / bay) | bay bookings waiting → all settled (granted, or deferred behind bay's one games-room grant) after recovery |"
    );
    println!("|---|---|---|---|---|");
    let shipped = ConnectionSettings::default();
    let off = ConnectionSettings {
        max_in_flight: 100_000,
        breaker_failures: u32::MAX,
        breaker_open_secs: 1,
        outage_alert_secs: 3600,
        ..ConnectionSettings::default()
    };
    for (label, connections) in [
        ("bulkheads on (shipped defaults)", shipped),
        ("bulkheads off", off),
    ] {
        run(label, connections, rate, secs).await;
    }
}

async fn run(label: &str, connections: ConnectionSettings, rate: usize, secs: usize) {
    let fleet = Fleet::start(FleetOptions {
        connections,
        // Production's shape, shortened so a run ends: retries 1 s … 30 s.
        tiers: "1s,2s,5s,10s,30s",
        ..FleetOptions::default()
    })
    .await;
    fleet.connect_bay().await;
    fleet
        .connect_bay_salto_with_timeout(&fleet.salto_b.url(), Some(BAY_SHIP_KEY), 10)
        .await;
    seed_apartments(&fleet).await;
    let mut dead = fleet
        .broker
        .tap_exchange(
            contracts::DEAD_LETTER_EXCHANGE,
            lapin::ExchangeKind::Fanout,
            "",
        )
        .await;
    fail_bay(&fleet).await;

    let (starts, ends) = tests::tomorrow_evening();
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut harbour = Vec::with_capacity(total);
    let mut bay = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        harbour.push(tokio::spawn(book_harbour(
            fleet.http.clone(),
            fleet.api.clone(),
            tokens(&fleet),
            i,
            starts.clone(),
            ends.clone(),
        )));
        // The bay building keeps booking too, at half the rate: all of it waits.
        if i.is_multiple_of(2) {
            let fleet_http = (fleet.http.clone(), fleet.api.clone(), fleet.resident(BAY));
            bay.push(tokio::spawn(book_bay(
                fleet_http,
                i / 2,
                starts.clone(),
                ends.clone(),
            )));
        }
    }
    let mut latencies = Vec::with_capacity(total);
    let mut not_granted = 0;
    for booking in harbour {
        match booking.await.expect("a harbour booking task") {
            Some(latency) => latencies.push(latency),
            None => not_granted += 1,
        }
    }
    latencies.sort();
    let mut waiting = Vec::with_capacity(bay.len());
    for booking in bay {
        waiting.push(booking.await.expect("a bay booking task"));
    }
    let bay = waiting;

    // Back: how long until bay's waiting bookings are all granted.
    fleet.bays_systems_recover().await;
    let recovered_at = Instant::now();
    let resident = fleet.resident(BAY);
    let mut bay_done = true;
    for path in &bay {
        let deadline = recovered_at + Duration::from_secs(180);
        loop {
            let (_, booking) = fleet.send(Method::GET, path, &resident, None).await;
            // One games-room booking holds the slot; the others wait for it (deferred).
            if matches!(
                booking["access"]["status"].as_str(),
                Some("granted" | "deferred")
            ) {
                break;
            }
            if Instant::now() > deadline {
                bay_done = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let recovery = recovered_at.elapsed();
    let (mut dead_harbour, mut dead_bay) = (0, 0);
    while let Some(letter) = dead.next_message(Duration::from_millis(500)).await {
        let body = String::from_utf8_lossy(&letter.body);
        if body.contains(&format!("\"id\":\"{BAY}\"")) {
            dead_bay += 1;
        } else {
            dead_harbour += 1;
        }
    }
    println!(
        "| {label} | {:.0} / {:.0} / {:.0} ms | {not_granted} of {total} | {dead_harbour} / {dead_bay} | {} → {} |",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
        bay.len(),
        if bay_done {
            format!("{:.1} s", recovery.as_secs_f64())
        } else {
            "not all within 180 s".to_owned()
        },
    );
}

/// Tokens of harbour's resident (visits) and manager (facility bookings for any apartment).
fn tokens(fleet: &Fleet) -> (String, String) {
    (fleet.resident(HARBOUR), fleet.manager(HARBOUR))
}

/// Books the `i`th harbour booking (even: a visit, odd: the games room for apartment i); the
/// latency until the answer says granted, or `None`.
async fn book_harbour(
    http: reqwest::Client,
    api: String,
    (resident, manager): (String, String),
    i: usize,
    starts: String,
    ends: String,
) -> Option<Duration> {
    let (path, token, body) = if i.is_multiple_of(2) {
        (
            "/v1/visitor-bookings",
            resident,
            json!({"visitor": {"name": format!("Guest {i}"), "email": format!("g{i}@bench.example")},
                   "starts_at": starts, "ends_at": ends, "provide_access": true}),
        )
    } else {
        (
            "/v1/facility-bookings",
            manager,
            json!({"facility_id": "games-room", "apartment_id": format!("apt-{}", (i / 2) % APARTMENTS),
                   "starts_at": starts, "ends_at": ends}),
        )
    };
    let posted = Instant::now();
    let response = http
        .post(format!("{api}{path}"))
        .bearer_auth(token)
        .header("Prefer", "wait=10")
        .json(&body)
        .send()
        .await
        .ok()?;
    let booking: Value = response.json().await.ok()?;
    (booking["access"]["status"] == "granted").then(|| posted.elapsed())
}

/// Books the `n`th booking of bay's resident (even: a visit, odd: the games room); it waits
/// while bay's systems fail. The games-room bookings all want one slot, and each of them calls
/// the hanging server while nobody holds it. Returns the booking's path.
async fn book_bay(
    (http, api, token): (reqwest::Client, String, String),
    n: usize,
    starts: String,
    ends: String,
) -> String {
    let (path, body) = if n.is_multiple_of(2) {
        (
            "/v1/visitor-bookings",
            json!({"visitor": {"name": format!("Bay guest {n}"), "email": format!("b{n}@bench.example")},
                   "starts_at": starts, "ends_at": ends, "provide_access": true}),
        )
    } else {
        (
            "/v1/facility-bookings",
            json!({"facility_id": "games-room", "starts_at": starts, "ends_at": ends}),
        )
    };
    let response = http
        .post(format!("{api}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("booking-api answers");
    assert_eq!(response.status().as_u16(), 201);
    let booking: Value = response.json().await.expect("a booking");
    format!("{path}/{}", booking["id"].as_str().unwrap())
}

/// Apartments apt-0 … apt-{APARTMENTS-1} of harbour, each its own access level on server A.
async fn seed_apartments(fleet: &Fleet) {
    let manager = fleet.manager(HARBOUR);
    let mut groups = Vec::with_capacity(APARTMENTS);
    for n in 0..APARTMENTS {
        let (status, answer) = fleet
            .send(
                Method::PUT,
                &format!("/v1/apartments/apt-{n}"),
                &manager,
                Some(json!({"access_control_id": format!("AL-{n}")})),
            )
            .await;
        assert!((200..300).contains(&status), "{answer}");
        groups.push(json!({"ext_id": format!("AL-{n}"), "name": format!("Apartment {n}")}));
    }
    let seeded = fleet
        .http
        .post(format!("http://{}/_sim/seed", fleet.salto_a.addr))
        .json(&json!({"groups": groups}))
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success());
}

async fn fail_bay(fleet: &Fleet) {
    fleet
        .fail_bays_systems(Duration::from_secs(600), 1_000_000)
        .await;
    // A facility booking of bay's, so its Salto server is called too.
    let (starts, ends) = tests::tomorrow_evening();
    let (status, _) = fleet
        .send(
            Method::POST,
            "/v1/facility-bookings",
            &fleet.resident(BAY),
            Some(json!({"facility_id": "games-room", "starts_at": starts, "ends_at": ends})),
        )
        .await;
    assert_eq!(status, 201);
}
