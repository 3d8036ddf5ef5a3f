//! Ratio benchmark (issue 7): the system against the raw limits of the crates it is built on,
//! measured in one run on the same machine, PostgreSQL and RabbitMQ. Prints a table; asserts
//! nothing about speed (a missed target is a FAIL line, not a panic).
//!
//! - **booking-api create**: `POST /v1/visitor-bookings` over HTTP, 8 at a time, against a raw
//!   sqlx transaction inserting a booking row and an outbox row (booking-api's tables), 8 at a
//!   time, on a pool of booking-api's size. Target ≥ 60 %. Two rows for information: booking-api's
//!   own statements without HTTP, and the same work in four statements.
//! - **outbox relay**: N rows in the outbox, the relay started, until all are marked sent;
//!   against raw lapin: N confirm-mode publishes pipelined, every confirm awaited. Target ≥ 50 %.
//! - **ipassan-sync, salto-sync, notifier**: N valid events in the worker's queue before it starts,
//!   until each has its result (a result event; for the notifier both mails accepted); against
//!   raw lapin consume+ack of N messages of the same bodies. Target ≥ 30 % (salto-sync ≥ 15 %).
//!   The simulators answer at once and the SMTP sink is in-process. For information, the same
//!   backlog with each message alone (ipassan-sync, salto-sync, notifier), and floors: the least
//!   a worker of the shape does (ipassan-sync: one iPassan call, one row, one confirmed publish;
//!   the notifier: its two mails composed and sent, one row).
//! - **end to end**: visitor bookings POSTed at 100/s; POST → `granted` (target p99 < 50 ms) →
//!   both mails accepted (target p99 < 100 ms).
//! - **sustained load**: visitor and facility bookings alternating at 300/s for 60 s; POST →
//!   `granted` p99 < 250 ms, and the backlog at the end no larger than at 10 s.
//! - **idle RSS** of each release binary, ready and idle (`VmRSS`). Target < 20 MiB. The
//!   binaries are not built by `cargo bench`: build them first (`cargo build --release --bins`),
//!   or the rows say they are missing.
//!
//! Each raw limit is measured three times (the median counts), and every measurement prints the
//! CPU it cost per operation in this process, in the database's PostgreSQL backends and in
//! RabbitMQ, with how busy the machine was — other work on a shared machine moves the figures.
//!
//! `cargo bench -p tests --bench ratios`
//! (env: BENCH_CREATES=2000, BENCH_OUTBOX=20000, BENCH_BACKLOG=2000, BENCH_E2E_N=1000,
//! BENCH_E2E_RATE=100, BENCH_E2E_POOL=10, BENCH_SUSTAINED_RATE=300, BENCH_SUSTAINED_SECS=60,
//! BENCH_RELAY_BATCH=<booking-api's default>,
//! BENCH_ONLY=create,relay,ipassan,salto,notifier,e2e,sustained,rss for a subset).
//!
//! One module a measurement ([`create`], [`relay`], [`ipassan`], [`salto`], [`notifier`],
//! [`end_to_end`], [`sustained`], [`rss`]); what they share: the set-up and the raw limits ([`setup`]), the CPU
//! meter ([`cpu`]) and the table ([`table`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod cpu;
mod create;
mod end_to_end;
mod ipassan;
mod notifier;
mod relay;
mod rss;
mod salto;
mod setup;
mod sustained;
mod table;

use common::env_number;
use table::print_table;

fn wanted(part: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

#[tokio::main]
async fn main() {
    platform::telemetry::init_for_tests();
    let creates = env_number("BENCH_CREATES", 2000);
    let outbox = env_number("BENCH_OUTBOX", 20000);
    let backlog = env_number("BENCH_BACKLOG", 2000);
    let e2e_n = env_number("BENCH_E2E_N", 1000);
    let e2e_rate = env_number("BENCH_E2E_RATE", 100);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "ratio benchmark: {creates} creates, {outbox} outbox rows, worker backlogs of {backlog}, \
         {e2e_n} bookings at {e2e_rate}/s end to end; {cores} cores, load average {} at start",
        load_average()
    );
    let mut rows = Vec::new();
    if wanted("create") {
        rows.extend(create::create_ratio(creates).await);
    }
    if wanted("relay") {
        rows.push(relay::relay_ratio(outbox).await);
    }
    if wanted("ipassan") {
        rows.extend(ipassan::ipassan_ratio(backlog).await);
    }
    if wanted("salto") {
        rows.extend(salto::salto_ratio(backlog).await);
    }
    if wanted("notifier") {
        rows.extend(notifier::notifier_ratio(backlog).await);
    }
    if wanted("e2e") {
        rows.extend(end_to_end::end_to_end(e2e_n, e2e_rate).await);
    }
    if wanted("sustained") {
        let rate = env_number("BENCH_SUSTAINED_RATE", 300);
        let secs = env_number("BENCH_SUSTAINED_SECS", 60);
        rows.extend(sustained::sustained(rate, secs).await);
    }
    if wanted("rss") {
        rows.extend(rss::idle_rss().await);
    }
    println!();
    println!("load average at the end: {}", load_average());
    print_table(&rows);
}
