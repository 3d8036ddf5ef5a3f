//! Facility-booking benchmark (issue 5). Prints figures; asserts nothing about speed.
//!
//! 1. End to end: N facility bookings POSTed by the manager at a steady rate to booking-api, each
//!    for its own (apartment, facility) pair so none is a double booking, the whole system running
//!    with a zero-latency Salto simulator. For each booking: POST sent → `facility_access.granted`
//!    seen on the broker (a tap on `connecx.events`). Prints grants/s, p50, p99, max.
//! 2. The nightly cleaner on a ledger loaded straight into salto-sync's tables (`cleaner.rs`): H
//!    held permissions over many buildings, access levels and zones, E of them dated yesterday,
//!    Salto (the simulator) holding the same lists and every booking's snapshot stored. One
//!    cleaner pass (`Application::cleaner().tick()`, the clock at 00:06 building time on the due
//!    date) is timed per row: 10k/100k one access level at a time (the clearing as it was) and
//!    with the defaults (batches of 32, 8 per server), then 1k/100k and 10k/20k (the time must
//!    follow the expired, not the held), then reconciliation on: every level every night, and
//!    incremental (the night's levels plus a seventh of the rest). A floor row does only what any
//!    clearing must: the SHIP read and write of each touched access level and one published
//!    result per expiry, no database.
//! 3. A fleet's night (`fleet.rs`): 1,000 buildings in 12 time zones, each on its own Salto
//!    server, 100 expired each; each zone's clearing tick timed at its 00:05.
//!
//! `cargo bench -p tests --bench facilities` (env: BENCH_N=300, BENCH_RATE=50, BENCH_HELD=100000,
//! BENCH_EXPIRED=10000, BENCH_RECONCILE=1, BENCH_BEFORE=1, BENCH_FLEET_BUILDINGS=1000, BENCH_FLEET_EXPIRED=100,
//! BENCH_ONLY=grants,cleaner,fleet). `BENCH_PERF_CTL=<fifo>` profiles the cleaner rows' passes
//! alone: `mkfifo /tmp/ctl; perf record -a -g -D -1 --control fifo:/tmp/ctl &` first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cleaner;
#[path = "../common/mod.rs"]
mod common;
mod fleet;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{Stack, tomorrow_evening};
use uuid::Uuid;

use common::{
    BENCH_FACILITIES, env_number, facility_booking_body, ms, percentile, post_json,
    print_latencies, seed_directory,
};

#[tokio::main]
async fn main() {
    let n = env_number("BENCH_N", 300);
    let rate = env_number("BENCH_RATE", 50);
    let held = env_number("BENCH_HELD", 100_000);
    let expired = env_number("BENCH_EXPIRED", 10_000);
    let reconcile = env_number("BENCH_RECONCILE", 1) != 0;
    println!(
        "facility-booking benchmark: {n} bookings at {rate}/s; cleaner on {held} held, {expired} expired"
    );
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |part: &str| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|p| p.trim() == part))
    };
    if wanted("grants") {
        grants(n, rate).await;
    }
    if wanted("cleaner") {
        cleaner::cleaner_scaling(held, expired, reconcile).await;
    }
    if wanted("fleet") {
        fleet::fleet_night().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. POST → granted, end to end.

async fn grants(n: usize, rate: usize) {
    let stack = Stack::start().await;
    let apartments = n.div_ceil(BENCH_FACILITIES);
    seed_directory(&stack, apartments).await;

    // Every result, with when it reached the bench, until all N are granted (or none comes for
    // a minute).
    let mut tap = stack.broker.tap("facility_access.#").await;
    let watcher = tokio::spawn(async move {
        let mut granted: HashMap<Uuid, Instant> = HashMap::new();
        let mut others: Vec<(String, Uuid)> = Vec::new();
        while granted.len() < n {
            let Some(envelope) = tap.next(Duration::from_secs(60)).await else {
                break;
            };
            let at = Instant::now();
            match envelope.routing_key() {
                "facility_access.granted.v1" => {
                    granted.entry(envelope.booking_id).or_insert(at);
                }
                other => others.push((other.to_owned(), envelope.booking_id)),
            }
        }
        (granted, others)
    });

    let (starts_at, ends_at) = tomorrow_evening();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let token = stack.manager();
    let started = Instant::now();
    let mut posts = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let body = facility_booking_body(i, apartments, &starts_at, &ends_at);
        let http = stack.http.clone();
        let url = format!("{}/v1/facility-bookings", stack.api);
        let token = token.clone();
        posts.push(tokio::spawn(async move {
            let posted_at = Instant::now();
            let response = post_json(&http, url, &token, &body).await;
            let answered = posted_at.elapsed();
            let status = response.status().as_u16();
            let booking: Value = response.json().await.unwrap();
            assert_eq!(status, 201, "{booking}");
            let id: Uuid = booking["id"].as_str().unwrap().parse().unwrap();
            (id, posted_at, answered)
        }));
    }
    let mut posted = Vec::with_capacity(n);
    for post in posts {
        posted.push(post.await.unwrap());
    }
    let (granted, others) = watcher.await.unwrap();
    assert!(
        others.is_empty(),
        "only grants were expected: {:?}",
        &others[..others.len().min(5)]
    );
    let mut latencies = Vec::with_capacity(n);
    let mut answers = Vec::with_capacity(n);
    let mut last_grant = started;
    for (id, posted_at, answered) in &posted {
        let at = *granted
            .get(id)
            .unwrap_or_else(|| panic!("booking {id} was never granted"));
        latencies.push(at.duration_since(*posted_at));
        answers.push(*answered);
        last_grant = last_grant.max(at);
    }
    let in_salto: usize = {
        let sim = stack.salto_sim.state.lock();
        sim.db
            .groups
            .values()
            .filter(|g| g.ext_id.starts_with("BENCH-"))
            .map(|g| g.zones.len())
            .sum()
    };
    assert_eq!(in_salto, n, "Salto holds one permission per booking");
    latencies.sort();
    answers.sort();
    let elapsed = last_grant.duration_since(started).as_secs_f64();
    println!(
        "end to end (POST → facility_access.granted on the broker; {apartments} apartments × {BENCH_FACILITIES} facilities):"
    );
    println!("  bookings            {n} (all granted; Salto holds {in_salto} permissions)");
    println!("  offered rate        {rate}/s");
    println!("  achieved            {:.1} grants/s", n as f64 / elapsed);
    println!(
        "  POST answered p50   {:.1} ms",
        ms(percentile(&answers, 50.0))
    );
    print_latencies("granted ", &latencies);
}
