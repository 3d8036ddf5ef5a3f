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
//!   raw lapin consume+ack of N messages of the same bodies. Target ≥ 30 %. The simulators answer
//!   at once and the SMTP sink is in-process. For information, ipassan-sync's floor: the least a
//!   worker of its shape does (one iPassan call, one row, one confirmed publish), on the crates.
//! - **end to end**: visitor bookings POSTed at 100/s; POST → `granted` → both mails accepted.
//!   Target p99 < 500 ms.
//! - **idle RSS** of each release binary, ready and idle (`VmRSS`). Target < 30 MiB. The
//!   binaries are not built by `cargo bench`: build them first (`cargo build --release --bins`),
//!   or the rows say they are missing.
//!
//! Each raw limit is measured three times (the median counts), and every measurement prints the
//! CPU it cost per operation in this process, in the database's PostgreSQL backends and in
//! RabbitMQ, with how busy the machine was — other work on a shared machine moves the figures.
//!
//! `cargo bench -p e2e --bench ratios`
//! (env: BENCH_CREATES=2000, BENCH_OUTBOX=20000, BENCH_BACKLOG=2000, BENCH_E2E_N=1000,
//! BENCH_E2E_RATE=100, BENCH_RELAY_BATCH=<booking-api's default>,
//! BENCH_ONLY=create,relay,ipassan,salto,notifier,e2e,rss for a subset).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use booking_api::auth::{TokenClaims, mint_token};
use booking_api::outbox::{OutboxSettings, Relay};
use chrono::{DateTime, Days, TimeZone, Utc};
use contracts::{
    Apartment, BookedBy, BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope,
    Event, Facility, FacilityBooking, Role, VisitorAccessResult, VisitorBooking,
};
use e2e::{IPASSAN_SITE, Stack, tomorrow_evening};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use platform::amqp::{Outgoing, Publisher};
use platform::config::{AmqpSettings, DatabaseSettings, RetrySettings};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use testkit::mail_sink::MailSink;
use testkit::{EventTap, TestBroker, TestDb};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::{
    ana, bench_visitor, declare_quorum_queue, env_number, ms, percentile, post_json,
    visitor_booking_body,
};

const JWT_SECRET: &str = "a ratio-benchmark secret of at least 32 bytes";
const BUILDING: &str = "harbour";
const SYDNEY: chrono_tz::Tz = chrono_tz::Australia::Sydney;
/// Requests or transactions in flight at once, for the create rows.
const CONCURRENCY: usize = 8;
/// What the services use unless configured otherwise (README, configuration).
const DEFAULT_POOL: u32 = 10;
const DEFAULT_PREFETCH: u16 = 16;
/// A worker's pool as the README asks for it: the prefetch + 2 (ipassan-sync and salto-sync hold
/// a connection per message in flight).
const WORKER_POOL: u32 = DEFAULT_PREFETCH as u32 + 2;

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

/// How many times each raw limit is measured; the median is the row's raw figure. The raw runs
/// are short, so one burst of other work on the machine would otherwise decide the ratio.
const RAW_RUNS: usize = 3;

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    println!(
        "    raw runs: {}",
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    rates[rates.len() / 2]
}

/// One line of the table.
struct Row {
    what: String,
    measured: String,
    raw: String,
    ratio: String,
    target: String,
    /// `None`: a figure for information, with no target of its own.
    pass: Option<bool>,
}

impl Row {
    /// A throughput compared with its raw limit.
    fn ratio(what: &str, unit: &str, measured: f64, raw: f64, target_percent: f64) -> Row {
        let ratio = 100.0 * measured / raw;
        let row = Row {
            what: what.into(),
            measured: format!("{measured:.0} {unit}"),
            raw: format!("{raw:.0} {unit}"),
            ratio: format!("{ratio:.1} %"),
            target: format!("≥ {target_percent:.0} %"),
            pass: Some(ratio >= target_percent),
        };
        row.print_now();
        row
    }

    /// The least the row above could reach (see the function that measures it), against the same
    /// raw limit: for information.
    fn floor(what: &str, measured: f64, raw: f64, unit: &str) -> Row {
        let row = Row {
            what: what.into(),
            measured: format!("{measured:.0} {unit}"),
            raw: format!("{raw:.0} {unit}"),
            ratio: format!("{:.1} %", 100.0 * measured / raw),
            target: "—".into(),
            pass: None,
        };
        row.print_now();
        row
    }

    fn print_now(&self) {
        println!(
            "  → {}: {} (raw {}, {}; target {}) {}",
            self.what,
            self.measured,
            self.raw,
            self.ratio,
            self.target,
            verdict(self.pass)
        );
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "info",
    }
}

fn print_table(rows: &[Row]) {
    let widths = [34, 22, 22, 8, 13];
    let line = |cells: [&str; 6]| {
        println!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} | {:<w4$} | {:<4} |",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    };
    line(["what", "measured", "raw", "ratio", "target", ""]);
    println!(
        "|{}|{}|{}|{}|{}|------|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 2),
        "-".repeat(widths[2] + 2),
        "-".repeat(widths[3] + 2),
        "-".repeat(widths[4] + 2)
    );
    for row in rows {
        line([
            &row.what,
            &row.measured,
            &row.raw,
            &row.ratio,
            &row.target,
            verdict(row.pass),
        ]);
    }
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
        rows.extend(create_ratio(creates).await);
    }
    if wanted("relay") {
        rows.push(relay_ratio(outbox).await);
    }
    if wanted("ipassan") {
        rows.extend(ipassan_ratio(backlog).await);
    }
    if wanted("salto") {
        rows.push(salto_ratio(backlog).await);
    }
    if wanted("notifier") {
        rows.push(notifier_ratio(backlog).await);
    }
    if wanted("e2e") {
        rows.push(end_to_end(e2e_n, e2e_rate).await);
    }
    if wanted("rss") {
        rows.extend(idle_rss().await);
    }
    println!();
    println!("load average at the end: {}", load_average());
    print_table(&rows);
}

// ---------------------------------------------------------------------------------------------
// Where the CPU went: this process (the service under test, the simulators and the harness),
// PostgreSQL and RabbitMQ, from /proc, so a ratio comes with the cost that explains it.

/// Clock ticks (USER_HZ, 100 on Linux) spent so far.
#[derive(Debug, Clone, Default)]
struct CpuTicks {
    this_process: u64,
    /// Per backend: only the backends of the benchmark's own database, so other work on the
    /// same server does not count (their process title names the database).
    postgres: HashMap<u32, u64>,
    rabbitmq: u64,
    machine_busy: u64,
    machine_total: u64,
}

/// utime + stime of one /proc/<pid>/stat, and the process's name.
fn stat_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<u64> = text[close + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based, proc(5)).
    Some((comm, fields.get(11)? + fields.get(12)?))
}

impl CpuTicks {
    fn now(database: &str) -> CpuTicks {
        let mut ticks = CpuTicks {
            this_process: stat_ticks(std::path::Path::new("/proc/self/stat")).map_or(0, |(_, t)| t),
            ..CpuTicks::default()
        };
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Some((comm, t)) = stat_ticks(&entry.path().join("stat")) else {
                    continue;
                };
                match comm.as_str() {
                    "postgres" => {
                        let title = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                        if String::from_utf8_lossy(&title).contains(database) {
                            ticks.postgres.insert(pid, t);
                        }
                    }
                    "beam.smp" => ticks.rabbitmq += t,
                    _ => {}
                }
            }
        }
        if let Some(line) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            ticks.machine_total = total;
            ticks.machine_busy = total - idle;
        }
        ticks
    }
}

/// CPU spent between [`CpuMeter::start`] and [`CpuMeter::report`], per operation.
struct CpuMeter {
    database: String,
    started: CpuTicks,
}

impl CpuMeter {
    /// `database`: the benchmark's database, whose backends are counted as PostgreSQL's share.
    fn start(database: &str) -> CpuMeter {
        CpuMeter {
            database: database.to_owned(),
            started: CpuTicks::now(database),
        }
    }

    /// One line: µs of CPU per operation in this process (service, simulators, harness), in the
    /// database's backends and in RabbitMQ (the whole broker: other vhosts' work counts too), and
    /// how busy the machine was.
    fn report(&self, label: &str, operations: usize) -> String {
        let end = CpuTicks::now(&self.database);
        let us = |ticks: u64| ticks as f64 * 10_000.0 / operations.max(1) as f64;
        let ours = end.this_process - self.started.this_process;
        let postgres: u64 = end
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.started.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        let rabbitmq = end.rabbitmq.saturating_sub(self.started.rabbitmq);
        let busy = end.machine_busy - self.started.machine_busy;
        let total = (end.machine_total - self.started.machine_total).max(1);
        let others = busy.saturating_sub(ours + postgres + rabbitmq);
        format!(
            "    cpu {label}: {:.0} µs/op = this process {:.0} + PostgreSQL {:.0} + RabbitMQ {:.0}; \
             machine {:.0} % busy, {:.0} % of that other work",
            us(ours + postgres + rabbitmq),
            us(ours),
            us(postgres),
            us(rabbitmq),
            100.0 * busy as f64 / total as f64,
            100.0 * others as f64 / busy.max(1) as f64,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Shared set-up.

fn amqp(broker: &TestBroker) -> AmqpSettings {
    AmqpSettings {
        url: broker.url.clone(),
        prefetch: DEFAULT_PREFETCH,
        delivery_limit: 5,
        drain_timeout_secs: 30,
    }
}

fn database(db: &TestDb) -> DatabaseSettings {
    DatabaseSettings {
        url: db.url.clone(),
        max_connections: DEFAULT_POOL,
    }
}

fn worker_database(db: &TestDb) -> DatabaseSettings {
    DatabaseSettings {
        url: db.url.clone(),
        max_connections: WORKER_POOL,
    }
}

fn booking_api_settings(db: &TestDb, broker: &TestBroker) -> booking_api::Settings {
    e2e::booking_api_settings(
        database(db),
        amqp(broker),
        RetrySettings::default(),
        JWT_SECRET,
    )
}

fn token(role: Role, sub: &str, apartment: Option<&str>) -> String {
    let claims = TokenClaims {
        sub: sub.into(),
        role,
        building_id: BUILDING.into(),
        apartment_id: apartment.map(String::from),
        exp: (Utc::now().timestamp() + 3600) as u64,
    };
    mint_token(JWT_SECRET, &claims).unwrap()
}

/// Declares a queue bound to `connecx.events` for everything that keeps nothing: published
/// events are routed (publishing is mandatory) and dropped at once, so the sink costs the broker
/// next to nothing.
async fn declare_event_sink(channel: &Channel) {
    channel
        .exchange_declare(
            contracts::EVENTS_EXCHANGE.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    channel
        .queue_declare("bench.sink".into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    channel
        .queue_bind(
            "bench.sink".into(),
            contracts::EVENTS_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

fn building() -> Building {
    Building {
        id: BUILDING.into(),
        name: "Harbour View".into(),
        timezone: "Australia/Sydney".into(),
        manager_emails: vec!["manager@harbour.example".into()],
        ipassan_site: Some(IPASSAN_SITE.into()),
        double_booking_policy: DoubleBookingPolicy::Auto,
        connection_versions: Default::default(),
    }
}

/// Tomorrow 18:00–22:00 in Sydney.
fn evening_window() -> BookingWindow {
    let day = Utc::now()
        .with_timezone(&SYDNEY)
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap();
    let local_starts_at = day.and_hms_opt(18, 0, 0).unwrap();
    let local_ends_at = day.and_hms_opt(22, 0, 0).unwrap();
    let utc = |local| -> DateTime<Utc> {
        SYDNEY
            .from_local_datetime(&local)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    };
    BookingWindow {
        starts_at: utc(local_starts_at),
        ends_at: utc(local_ends_at),
        local_starts_at,
        local_ends_at,
    }
}

fn visitor_booking(i: usize) -> VisitorBooking {
    VisitorBooking {
        building: building(),
        window: evening_window(),
        resident: ana(),
        visitor: bench_visitor(i),
        provide_access: true,
        state: BookingState::Booked,
    }
}

fn visitor_booking_created(i: usize) -> Envelope {
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorBookingCreated(visitor_booking(i)),
    )
}

/// Raw lapin consume+ack of `bodies` on a fresh quorum queue (prefetch as the workers), in
/// messages per second. The queue is filled first, untimed.
async fn raw_consume_ack_median(db: &TestDb, broker: &TestBroker, bodies: &[Vec<u8>]) -> f64 {
    let mut rates = Vec::new();
    for run in 0..RAW_RUNS {
        rates.push(raw_consume_ack(db, broker, &format!("bench.raw.{run}"), bodies).await);
    }
    median(rates)
}

async fn raw_consume_ack(db: &TestDb, broker: &TestBroker, queue: &str, bodies: &[Vec<u8>]) -> f64 {
    let (connection, channel) = fill_quorum_queue(broker, "bench.raw", queue, bodies).await;
    let mut consumer = consume_with_prefetch(&channel, queue).await;
    let cpu = CpuMeter::start(&db.name);
    let started = Instant::now();
    for _ in 0..bodies.len() {
        let delivery = consumer.next().await.unwrap().unwrap();
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    let rate = bodies.len() as f64 / started.elapsed().as_secs_f64();
    println!("{}", cpu.report("raw consume+ack", bodies.len()));
    let _ = connection.close(200, "bye".into()).await;
    rate
}

/// A fresh durable quorum `queue` filled with `bodies` (published as `publisher_name`), untimed;
/// the connection and a channel on it for consuming them.
async fn fill_quorum_queue(
    broker: &TestBroker,
    publisher_name: &str,
    queue: &str,
    bodies: &[Vec<u8>],
) -> (lapin::Connection, Channel) {
    let publisher = Publisher::new(&amqp(broker), publisher_name);
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    declare_quorum_queue(&channel, queue).await;
    let messages: Vec<Outgoing<'_>> = bodies
        .iter()
        .map(|body| Outgoing {
            exchange: "",
            routing_key: queue,
            body,
            message_id: None,
            headers: Default::default(),
        })
        .collect();
    for chunk in messages.chunks(500) {
        publisher.publish_all(chunk).await.unwrap();
    }
    (connection, channel)
}

/// Consumes `queue` on `channel` with the workers' prefetch.
async fn consume_with_prefetch(channel: &Channel, queue: &str) -> lapin::Consumer {
    channel
        .basic_qos(DEFAULT_PREFETCH, BasicQosOptions::default())
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

/// Runs `future` (a service's `run_until_stopped`) until the returned token is cancelled.
fn run_service<F>(
    run: impl FnOnce(CancellationToken) -> F,
) -> (CancellationToken, tokio::task::JoinHandle<()>)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let running = tokio::spawn(run(stop.clone()));
    (stop, running)
}

/// A fresh database and vhost, and there the median raw consume+ack rate of `events`' bodies.
async fn fresh_with_raw_median(events: &[Envelope]) -> (TestDb, TestBroker, f64) {
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let bodies: Vec<Vec<u8>> = events.iter().map(Envelope::to_json).collect();
    let raw = raw_consume_ack_median(&db, &broker, &bodies).await;
    (db, broker, raw)
}

/// Starts a worker (`run`, as for [`run_service`]) on its filled queue and times it until `done`:
/// `n` messages per that time, with its CPU printed under `label`. The worker is stopped after.
async fn measure_worker<F>(
    db: &TestDb,
    label: &str,
    n: usize,
    run: impl FnOnce(CancellationToken) -> F,
    done: impl std::future::Future<Output = ()>,
) -> f64
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let cpu = CpuMeter::start(&db.name);
    let started = Instant::now();
    let (stop, _running) = run_service(run);
    done.await;
    let measured = n as f64 / started.elapsed().as_secs_f64();
    println!("{}", cpu.report(label, n));
    stop.cancel();
    measured
}

/// Polls `count_sql` (a `count(*)`) every `every` until it is 0; after `within`, panics saying
/// `left(count)`.
async fn wait_for_none(
    pool: &PgPool,
    count_sql: &'static str,
    within: Duration,
    every: Duration,
    left: impl Fn(i64) -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        let count: i64 = sqlx::query_scalar(count_sql).fetch_one(pool).await.unwrap();
        if count == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", left(count));
        tokio::time::sleep(every).await;
    }
}

/// Waits for `n` results on `results`, each `routing_key`.
async fn expect_results(results: &mut EventTap, n: usize, routing_key: &str) {
    for _ in 0..n {
        let result = results
            .next(Duration::from_secs(60))
            .await
            .expect("a result per booking");
        assert_eq!(result.routing_key(), routing_key);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. booking-api create vs the raw transaction.

async fn create_ratio(n: usize) -> Vec<Row> {
    println!("booking-api create ({n} visitor bookings, {CONCURRENCY} at a time):");
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    {
        let connection = broker.connect().await;
        let channel = connection.create_channel().await.unwrap();
        declare_event_sink(&channel).await;
        let _ = connection.close(200, "bye".into()).await;
    }
    // The directory is registered through booking-api itself; then booking-api stops, so that
    // its relay does not publish the raw runs' outbox rows while they are timed.
    let app = booking_api::Application::build(booking_api_settings(&db, &broker))
        .await
        .expect("booking-api builds");
    let api = format!("http://127.0.0.1:{}", app.port());
    let (stop, running) = run_service(|stop| async move {
        app.run_until_stopped(async move { stop.cancelled().await })
            .await
            .expect("booking-api runs");
    });
    let http = reqwest::Client::new();
    seed_booking_api(&http, &api).await;
    stop.cancel();
    running.await.unwrap();

    // Raw: the same two rows booking-api writes for a booking, in one transaction, on a pool as
    // large as booking-api's, with booking-api's schema and indexes.
    let options: PgConnectOptions = db.url.parse().unwrap();
    let raw_pool = PgPoolOptions::new()
        .max_connections(DEFAULT_POOL)
        .connect_with(options.options([("search_path", "booking")]))
        .await
        .unwrap();
    let mut rates = Vec::new();
    for _ in 0..RAW_RUNS {
        let cpu = CpuMeter::start(&db.name);
        rates.push(
            run_concurrently(n, {
                let raw_pool = raw_pool.clone();
                move |i| {
                    let pool = raw_pool.clone();
                    async move { raw_booking_transaction(&pool, i).await }
                }
            })
            .await,
        );
        println!("{}", cpu.report("raw transaction", n));
    }
    let raw = median(rates);
    // What booking-api's create asks of PostgreSQL, without HTTP around it: where the time goes.
    let cpu = CpuMeter::start(&db.name);
    let api_sql = run_concurrently(n, {
        let raw_pool = raw_pool.clone();
        move |i| {
            let pool = raw_pool.clone();
            async move { api_create_statements(&pool, i).await }
        }
    })
    .await;
    println!("{}", cpu.report("booking-api's statements", n));
    let cpu = CpuMeter::start(&db.name);
    let fewer_sql = run_concurrently(n, {
        let raw_pool = raw_pool.clone();
        move |i| {
            let pool = raw_pool.clone();
            async move { fewer_create_statements(&pool, i).await }
        }
    })
    .await;
    println!("{}", cpu.report("the same in fewer statements", n));
    // The raw runs' rows would make booking-api's run slower than a fresh one.
    sqlx::query("TRUNCATE visitor_bookings, outbox")
        .execute(&raw_pool)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE")
        .execute(&raw_pool)
        .await
        .unwrap();
    raw_pool.close().await;

    let app = booking_api::Application::build(booking_api_settings(&db, &broker))
        .await
        .expect("booking-api builds");
    let api = format!("http://127.0.0.1:{}", app.port());
    let (stop, running) = run_service(|stop| async move {
        app.run_until_stopped(async move { stop.cancelled().await })
            .await
            .expect("booking-api runs");
    });
    let resident = token(Role::Resident, "ana", Some("apt-501"));
    let (starts_at, ends_at) = tomorrow_evening();
    let cpu = CpuMeter::start(&db.name);
    let measured = run_concurrently(n, move |i| {
        let http = http.clone();
        let url = format!("{api}/v1/visitor-bookings");
        let body = visitor_booking_body(i, &starts_at, &ends_at);
        let resident = resident.clone();
        async move {
            let response = post_json(&http, url, &resident, &body).await;
            assert_eq!(response.status().as_u16(), 201);
            let _ = response.bytes().await.unwrap();
        }
    })
    .await;
    println!("{}", cpu.report("booking-api create", n));
    // The relay published every event meanwhile (into a sink queue): nothing was refused.
    let check = db.pool("booking").await;
    wait_for_none(
        &check,
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL OR attempts > 1",
        Duration::from_secs(30),
        Duration::from_millis(100),
        |unsent| format!("{unsent} events not published once"),
    )
    .await;
    check.close().await;
    stop.cancel();
    running.await.unwrap();
    let row = Row::ratio(
        "booking-api create (HTTP, 8 conc.)",
        "/s",
        measured,
        raw,
        60.0,
    );
    let statements = Row::floor("  its SQL alone (no HTTP, no relay)", api_sql, raw, "/s");
    let fewer = Row::floor("  that SQL in 4 round trips", fewer_sql, raw, "/s");
    vec![row, statements, fewer]
}

/// [`api_create_statements`]' work in four statements instead of seven (and no read-back): the
/// building and the resident in one query, the outbox row and the relay's wake-up in one, and
/// the answer from the insert's `RETURNING`.
async fn fewer_create_statements(pool: &PgPool, i: usize) {
    let envelope = visitor_booking_created(i);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT b.id, b.name, b.timezone, b.manager_emails, b.ipassan_site,
                b.double_booking_policy, r.id, r.name, r.email, r.apartment_id,
                r.ipassan_person_id
           FROM buildings b LEFT JOIN residents r ON r.building_id = b.id AND r.id = $2
          WHERE b.id = $1",
    )
    .bind(BUILDING)
    .bind("ana")
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    insert_visitor_booking(&mut tx, &envelope, Returning::Row).await;
    sqlx::query(
        "WITH stored AS (
            INSERT INTO outbox (event_id, booking_id, event_type, envelope)
            VALUES ($1, $2, $3, $4) RETURNING id)
         SELECT pg_notify('booking_outbox', '') FROM stored",
    )
    .bind(envelope.event_id)
    .bind(envelope.booking_id)
    .bind(envelope.routing_key())
    .bind(Json(&envelope))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// The statements booking-api's `POST /v1/visitor-bookings` runs (no Idempotency-Key, no
/// `Prefer: wait`), in its order: look up the building and the resident, insert the booking
/// (returning it) and its outbox row, wake the relay, commit; then read the booking back for the
/// answer.
async fn api_create_statements(pool: &PgPool, i: usize) {
    let envelope = visitor_booking_created(i);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT id, name, timezone, manager_emails, ipassan_site, double_booking_policy
           FROM buildings WHERE id = $1",
    )
    .bind(BUILDING)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "SELECT id, name, email, apartment_id, ipassan_person_id
           FROM residents WHERE building_id = $1 AND id = $2",
    )
    .bind(BUILDING)
    .bind("ana")
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    insert_visitor_booking(&mut tx, &envelope, Returning::Row).await;
    insert_outbox_row(&mut tx, &envelope).await;
    sqlx::query("SELECT pg_notify('booking_outbox', '')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("SELECT * FROM visitor_bookings WHERE id = $1")
        .bind(envelope.booking_id)
        .fetch_one(pool)
        .await
        .unwrap();
}

/// The visitor-booking insert of booking-api's create, with its `RETURNING *` or without.
macro_rules! insert_visitor_booking_sql {
    () => {
        "INSERT INTO visitor_bookings (id, building_id, resident_id, visitor_name, visitor_email,
             provide_access, starts_at, ends_at, state, version, access_status,
             booked_by_user_id, booked_by_role)
         VALUES ($1, $2, 'ana', $3, $4, true, $5, $6, 'booked', 1, 'pending', 'ana', 'resident')"
    };
}

/// Whether [`insert_visitor_booking`] reads the row back (`RETURNING *`, as booking-api does).
#[derive(Clone, Copy)]
enum Returning {
    Row,
    Nothing,
}

/// Inserts the booking of `envelope` (a `visitor_booking.created`) in `tx`, for Ana.
async fn insert_visitor_booking(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    envelope: &Envelope,
    returning: Returning,
) {
    let Event::VisitorBookingCreated(booking) = &envelope.event else {
        unreachable!()
    };
    let sql = match returning {
        Returning::Row => concat!(insert_visitor_booking_sql!(), "\n         RETURNING *"),
        Returning::Nothing => insert_visitor_booking_sql!(),
    };
    let query = sqlx::query(sql)
        .bind(envelope.booking_id)
        .bind(BUILDING)
        .bind(&booking.visitor.name)
        .bind(&booking.visitor.email)
        .bind(booking.window.starts_at)
        .bind(booking.window.ends_at);
    match returning {
        Returning::Row => {
            query.fetch_one(&mut **tx).await.unwrap();
        }
        Returning::Nothing => {
            query.execute(&mut **tx).await.unwrap();
        }
    }
}

/// Inserts `envelope`'s outbox row in `tx` (no wake-up of the relay).
async fn insert_outbox_row(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, envelope: &Envelope) {
    sqlx::query(
        "INSERT INTO outbox (event_id, booking_id, event_type, envelope) VALUES ($1, $2, $3, $4)",
    )
    .bind(envelope.event_id)
    .bind(envelope.booking_id)
    .bind(envelope.routing_key())
    .bind(Json(envelope))
    .execute(&mut **tx)
    .await
    .unwrap();
}

/// Registers the building, apartment and resident the bookings are for.
async fn seed_booking_api(http: &reqwest::Client, api: &str) {
    let manager = token(Role::Manager, "manager-1", None);
    let puts = [
        (
            format!("/v1/buildings/{BUILDING}"),
            json!({"name": "Harbour View", "timezone": "Australia/Sydney",
                   "manager_emails": ["manager@harbour.example"],
                   "ipassan_site": IPASSAN_SITE, "double_booking_policy": "auto"}),
        ),
        (
            "/v1/apartments/apt-501".into(),
            json!({"access_control_id": "501-56"}),
        ),
        (
            "/v1/residents/ana".into(),
            json!({"name": "Ana Lee", "email": "ana@residents.example",
                   "apartment_id": "apt-501", "ipassan_person_id": "p-ana"}),
        ),
    ];
    for (path, body) in puts {
        let response = http
            .put(format!("{api}{path}"))
            .bearer_auth(&manager)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "seeding {path}: {}",
            response.status()
        );
    }
}

/// What booking-api stores for a new visitor booking, without the API around it.
async fn raw_booking_transaction(pool: &PgPool, i: usize) {
    let envelope = visitor_booking_created(i);
    let mut tx = pool.begin().await.unwrap();
    insert_visitor_booking(&mut tx, &envelope, Returning::Nothing).await;
    insert_outbox_row(&mut tx, &envelope).await;
    tx.commit().await.unwrap();
}

/// Runs `op(0..n)` with [`CONCURRENCY`] in flight; operations per second.
async fn run_concurrently<F, Fut>(n: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut lanes = Vec::new();
    for _ in 0..CONCURRENCY {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        lanes.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                op(i).await;
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// 2. The outbox relay vs raw pipelined confirm-publish.

async fn relay_ratio(n: usize) -> Row {
    println!("outbox relay ({n} events):");
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            contracts::EVENTS_EXCHANGE.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Where the events land, as in production: a durable quorum queue.
    declare_quorum_queue(&channel, "bench.events").await;
    channel
        .queue_bind(
            "bench.events".into(),
            contracts::EVENTS_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let envelopes: Vec<Envelope> = (0..n).map(visitor_booking_created).collect();

    // Raw: the same bodies, published with confirms, all sent before any confirm is awaited.
    let confirm_channel = connection.create_channel().await.unwrap();
    confirm_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let bodies: Vec<(Vec<u8>, String)> = envelopes
        .iter()
        .map(|e| (e.to_json(), e.event_id.to_string()))
        .collect();
    let mut rates = Vec::new();
    for _ in 0..RAW_RUNS {
        let cpu = CpuMeter::start(&db.name);
        let started = Instant::now();
        let mut confirms = Vec::with_capacity(n);
        for (envelope, (body, id)) in envelopes.iter().zip(&bodies) {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into());
            confirms.push(
                confirm_channel
                    .basic_publish(
                        contracts::EVENTS_EXCHANGE.into(),
                        envelope.routing_key().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body,
                        properties,
                    )
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
        rates.push(n as f64 / started.elapsed().as_secs_f64());
        println!("{}", cpu.report("raw confirm-publish", n));
        channel
            .queue_purge("bench.events".into(), QueuePurgeOptions::default())
            .await
            .unwrap();
    }
    let raw = median(rates);

    // The relay on a pre-filled outbox (booking-api's schema; built for its migrations only).
    let app = booking_api::Application::build(booking_api_settings(&db, &broker))
        .await
        .expect("booking-api builds");
    let pool = app.pool().clone();
    drop(app);
    for chunk in envelopes.chunks(1000) {
        let event_ids: Vec<Uuid> = chunk.iter().map(|e| e.event_id).collect();
        let booking_ids: Vec<Uuid> = chunk.iter().map(|e| e.booking_id).collect();
        let types: Vec<String> = chunk.iter().map(|e| e.routing_key().to_owned()).collect();
        let bodies: Vec<Value> = chunk
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        sqlx::query(
            "INSERT INTO outbox (event_id, booking_id, event_type, envelope)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[])",
        )
        .bind(&event_ids)
        .bind(&booking_ids)
        .bind(&types)
        .bind(&bodies)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("VACUUM ANALYZE outbox")
        .execute(&pool)
        .await
        .unwrap();
    let publisher = Publisher::new(&amqp(&broker), "bench.relay");
    publisher.check().await.unwrap();
    // booking-api's default batch unless BENCH_RELAY_BATCH says otherwise (to show its effect).
    let mut settings = OutboxSettings::default();
    if let Some(batch) = std::env::var("BENCH_RELAY_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        println!("    relay batch size {batch} (BENCH_RELAY_BATCH)");
        settings.batch_size = batch;
    }
    let relay = Relay::new(pool.clone(), publisher, Arc::new(Notify::new()), settings);
    let done = wait_for_none(
        &pool,
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
        Duration::from_secs(300),
        Duration::from_millis(5),
        |unsent| format!("the relay left {unsent} rows unsent"),
    );
    let measured = measure_worker(&db, "relay", n, |stop| relay.run(stop), done).await;
    let routed = broker.queue_depth("bench.events").await;
    assert_eq!(routed as usize, n, "every event reached the queue");
    let _ = connection.close(200, "bye".into()).await;
    Row::ratio("outbox relay publish", "msg/s", measured, raw, 50.0)
}

// ---------------------------------------------------------------------------------------------
// 3. The workers vs raw consume+ack.

async fn ipassan_ratio(n: usize) -> Vec<Row> {
    println!("ipassan-sync ({n} visitor_booking.created):");
    let events: Vec<Envelope> = (0..n).map(visitor_booking_created).collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;

    let sim = ipassan_sim::spawn().await.unwrap();
    sim.control().seed(&e2e::ipassan_seed()).await.unwrap();
    let mut results = broker.tap("visitor_access.#").await;
    fill_worker_queue(&broker, &contracts::IPASSAN_SYNC_QUEUE, &events).await;
    let app = ipassan_sync::Application::build(e2e::ipassan_sync_settings(
        worker_database(&db),
        amqp(&broker),
        RetrySettings::default(),
        &sim,
    ))
    .await
    .unwrap();
    let run = |stop: CancellationToken| async move {
        app.run_until_stopped(stop.cancelled_owned()).await.unwrap();
    };
    let done = expect_results(&mut results, n, "visitor_access.granted.v1");
    let measured = measure_worker(&db, "ipassan-sync", n, run, done).await;
    let row = Row::ratio("ipassan-sync", "msg/s", measured, raw, 30.0);
    let floor = ipassan_floor(&db, &broker, &sim, n).await;
    let floor_row = Row::floor("  floor: 1 POST + 1 write + publish", floor, raw, "msg/s");
    vec![row, floor_row]
}

/// The least any worker of ipassan-sync's kind must do per message, written straight on the
/// crates: consume (prefetch 16, a task per message), one iPassan call (the create), one durable
/// row in PostgreSQL (the snapshot), one confirmed publish (the result), ack. No version rule, no
/// lock, no dedup, no retries: the speed of light for this shape of work on this machine.
async fn ipassan_floor(
    db: &TestDb,
    broker: &TestBroker,
    sim: &ipassan_sim::RunningSim,
    n: usize,
) -> f64 {
    let queue = "bench.floor";
    let events: Vec<Envelope> = (0..n).map(visitor_booking_created).collect();
    let bodies: Vec<Vec<u8>> = events.iter().map(Envelope::to_json).collect();
    let (connection, channel) = fill_quorum_queue(broker, "bench.floor.fill", queue, &bodies).await;
    let options: PgConnectOptions = db.url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(WORKER_POOL)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE bench_floor (booking_id uuid PRIMARY KEY, version bigint NOT NULL,
                                   envelope jsonb NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/api/v1/token", sim.base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "connecx"),
            ("client_secret", "connecx-e2e-secret"),
            ("scope", "all"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let publish_channel = connection.create_channel().await.unwrap();
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut results = broker.tap("visitor_access.#").await;
    let mut consumer = consume_with_prefetch(&channel, queue).await;
    let cpu = CpuMeter::start(&db.name);
    let started = Instant::now();
    let url = format!("{}/api/v1/access/site/{IPASSAN_SITE}/visitor", sim.base_url);
    let work = tokio::spawn(async move {
        for _ in 0..n {
            let delivery = consumer.next().await.unwrap().unwrap();
            let (http, url, token, pool, publish_channel) = (
                http.clone(),
                url.clone(),
                token.clone(),
                pool.clone(),
                publish_channel.clone(),
            );
            tokio::spawn(async move {
                let envelope = Envelope::from_json(&delivery.data).unwrap();
                let Event::VisitorBookingCreated(booking) = &envelope.event else {
                    unreachable!()
                };
                let window = |at: chrono::NaiveDateTime| at.format("%Y-%m-%dT%H:%M:%S").to_string();
                let visitor: Value = http
                    .post(&url)
                    .bearer_auth(&token)
                    .form(&[
                        ("visiteeId", "p-ana".to_owned()),
                        ("firstName", "Visitor".to_owned()),
                        ("lastName", booking.visitor.name.clone()),
                        ("email", booking.visitor.email.clone()),
                        ("validFrom", window(booking.window.local_starts_at)),
                        ("validTo", window(booking.window.local_ends_at)),
                        ("externalRef", envelope.booking_id.to_string()),
                    ])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO bench_floor (booking_id, version, envelope) VALUES ($1, $2, $3)",
                )
                .bind(envelope.booking_id)
                .bind(envelope.version)
                .bind(Json(&envelope))
                .execute(&pool)
                .await
                .unwrap();
                let result = Envelope::new(
                    envelope.booking_id,
                    envelope.version,
                    Event::VisitorAccessGranted(VisitorAccessResult {
                        booking: booking.clone(),
                        pin: visitor["credential"]["pin"].as_str().map(str::to_owned),
                        failure: None,
                    }),
                );
                let confirm = publish_channel
                    .basic_publish(
                        contracts::EVENTS_EXCHANGE.into(),
                        result.routing_key().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &result.to_json(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap();
                assert!(confirm.await.unwrap().is_ack());
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
            });
        }
    });
    for _ in 0..n {
        results
            .next(Duration::from_secs(60))
            .await
            .expect("a result per message");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("{}", cpu.report("floor", n));
    work.await.unwrap();
    let _ = connection.close(200, "bye".into()).await;
    rate
}

/// Declares a worker's `queue` (as the worker would) and publishes its backlog `events` there.
async fn fill_worker_queue(broker: &TestBroker, queue: &contracts::QueueSpec, events: &[Envelope]) {
    broker.declare_queue(queue, 5).await;
    let publisher = Publisher::new(&amqp(broker), "bench.fill");
    for chunk in events.chunks(500) {
        publisher.publish_events(chunk).await.unwrap();
    }
}

/// Access levels (apartments) × zones the facility bookings spread over, so none is a double
/// booking and consecutive bookings are for different access levels, as real traffic is.
const SALTO_ZONES: usize = 10;

fn salto_level(a: usize) -> String {
    format!("BENCH-{a:04}")
}

fn salto_zone(z: usize) -> String {
    format!("BENCH-ZONE-{z:02}")
}

fn facility_booking_created(i: usize, levels: usize) -> Envelope {
    let (a, z) = (i % levels, i / levels);
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityBookingCreated(FacilityBooking {
            building: building(),
            window: evening_window(),
            facility: Facility {
                id: format!("bench-room-{z:02}"),
                name: format!("Bench room {z}"),
                zone_id: salto_zone(z),
            },
            apartment: Apartment {
                id: format!("apt-bench-{a:04}"),
                access_level_id: salto_level(a),
            },
            booked_by: BookedBy {
                user_id: "manager-1".into(),
                role: Role::Manager,
                name: None,
                email: None,
            },
            state: BookingState::Booked,
        }),
    )
}

async fn salto_ratio(n: usize) -> Row {
    println!("salto-sync ({n} facility_booking.created):");
    let levels = n.div_ceil(SALTO_ZONES);
    let events: Vec<Envelope> = (0..n)
        .map(|i| facility_booking_created(i, levels))
        .collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;

    let sim = salto_sim::RunningSim::start(0).await.unwrap();
    let groups: Vec<Value> = (0..levels)
        .map(|a| json!({"ext_id": salto_level(a), "name": format!("Bench apartment {a}")}))
        .collect();
    let zones: Vec<Value> = (0..SALTO_ZONES)
        .map(|z| json!({"ext_id": salto_zone(z), "name": format!("Bench room {z}")}))
        .collect();
    let seeded = reqwest::Client::new()
        .post(format!("http://{}/_sim/seed", sim.addr))
        .json(&json!({"timezone": "Australia/Sydney", "groups": groups, "zones": zones}))
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success(), "salto-sim seeded");
    let mut results = broker.tap("facility_access.#").await;
    fill_worker_queue(&broker, &contracts::SALTO_SYNC_QUEUE, &events).await;
    let app = salto_sync::Application::build(e2e::salto_sync_settings(
        worker_database(&db),
        amqp(&broker),
        RetrySettings::default(),
        &sim,
    ))
    .await
    .unwrap();
    let run = |stop: CancellationToken| async move {
        app.run_until_stopped(stop.cancelled_owned()).await.unwrap();
    };
    let done = expect_results(&mut results, n, "facility_access.granted.v1");
    let measured = measure_worker(&db, "salto-sync", n, run, done).await;
    Row::ratio("salto-sync", "msg/s", measured, raw, 30.0)
}

fn visitor_access_granted(i: usize) -> Envelope {
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorAccessGranted(VisitorAccessResult {
            booking: visitor_booking(i),
            pin: Some(format!("{:06}", i % 1_000_000)),
            failure: None,
        }),
    )
}

async fn notifier_ratio(n: usize) -> Row {
    println!("notifier ({n} visitor_access.granted, two mails each):");
    let events: Vec<Envelope> = (0..n).map(visitor_access_granted).collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;

    let mail = MailSink::start();
    fill_worker_queue(&broker, &contracts::NOTIFIER_QUEUE, &events).await;
    let app = notifier::Application::build(e2e::notifier_settings(
        worker_database(&db),
        amqp(&broker),
        RetrySettings::default(),
        &mail,
    ))
    .await
    .unwrap();
    let run = |stop: CancellationToken| async move {
        app.run_until_stopped(stop.cancelled_owned()).await.unwrap();
    };
    let done = async {
        let mails = mail.wait_for(2 * n, Duration::from_secs(300)).await;
        assert_eq!(mails.len(), 2 * n, "two mails per result");
    };
    let measured = measure_worker(&db, "notifier", n, run, done).await;
    Row::ratio("notifier", "msg/s", measured, raw, 30.0)
}

// ---------------------------------------------------------------------------------------------
// 4. End to end at a steady rate.

async fn end_to_end(n: usize, rate: usize) -> Row {
    println!("end to end ({n} visitor bookings at {rate}/s, POST → granted → both mails):");
    let stack = Stack::start().await;
    let mut granted_tap = stack.broker.tap("visitor_access.#").await;
    let granted_watch = tokio::spawn(async move {
        let mut granted: HashMap<Uuid, Instant> = HashMap::new();
        while granted.len() < n {
            let Some(envelope) = granted_tap.next(Duration::from_secs(60)).await else {
                break;
            };
            if envelope.routing_key() == "visitor_access.granted.v1" {
                granted
                    .entry(envelope.booking_id)
                    .or_insert_with(Instant::now);
            }
        }
        granted
    });
    let (starts_at, ends_at) = tomorrow_evening();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let token = stack.ana();
    let started = Instant::now();
    let mut posts = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let http = stack.http.clone();
        let url = format!("{}/v1/visitor-bookings", stack.api);
        let token = token.clone();
        let body = visitor_booking_body(i, &starts_at, &ends_at);
        posts.push(tokio::spawn(async move {
            let posted_at = Instant::now();
            let posted_wall = Utc::now();
            let response = post_json(&http, url, &token, &body).await;
            assert_eq!(response.status().as_u16(), 201);
            let booking: Value = response.json().await.unwrap();
            let id: Uuid = booking["id"].as_str().unwrap().parse().unwrap();
            (id, posted_at, posted_wall)
        }));
    }
    let mut posted = Vec::with_capacity(n);
    for post in posts {
        posted.push(post.await.unwrap());
    }
    let all = stack.mail.wait_for(2 * n, Duration::from_secs(120)).await;
    assert_eq!(all.len(), 2 * n, "every booking produced its two mails");
    let granted = granted_watch.await.unwrap();
    // The mail sink stamps wall-clock times; the latency is from the POST's wall-clock time.
    let mut resident_mail: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    let mut visitor_mail: HashMap<String, DateTime<Utc>> = HashMap::new();
    for mail in &all {
        if mail.is_to("ana@residents.example") {
            if let Some(id) = booking_of(&mail.text_body) {
                resident_mail.insert(id, mail.received_at);
            }
        } else if let Some(to) = mail.recipients.first() {
            visitor_mail.insert(to.clone(), mail.received_at);
        }
    }
    let mut mailed = Vec::with_capacity(n);
    let mut to_granted = Vec::with_capacity(n);
    for (i, (id, posted_at, posted_wall)) in posted.iter().enumerate() {
        let resident = resident_mail
            .get(id)
            .unwrap_or_else(|| panic!("no resident mail for booking {id}"));
        let visitor = visitor_mail
            .get(&format!("v{i}@bench.example"))
            .unwrap_or_else(|| panic!("no mail to visitor {i}"));
        let done = (*resident).max(*visitor);
        mailed.push((done - *posted_wall).to_std().unwrap_or_default());
        if let Some(at) = granted.get(id) {
            to_granted.push(at.duration_since(*posted_at));
        }
    }
    mailed.sort();
    to_granted.sort();
    let (p50, p99) = (percentile(&mailed, 50.0), percentile(&mailed, 99.0));
    println!(
        "  granted (on the broker): p50 {:.1} ms, p99 {:.1} ms; both mails: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&to_granted, 50.0)),
        ms(percentile(&to_granted, 99.0)),
        ms(p50),
        ms(p99),
        ms(mailed.last().copied().unwrap_or_default())
    );
    let row = Row {
        what: format!("end to end at {rate}/s (both mails)"),
        measured: format!("p50 {:.0} / p99 {:.0} ms", ms(p50), ms(p99)),
        raw: "—".into(),
        ratio: "—".into(),
        target: "p99 < 500 ms".into(),
        pass: Some(p99 < Duration::from_millis(500)),
    };
    row.print_now();
    row
}

/// The booking a resident's mail is about (its `Booking: <id>` line).
fn booking_of(text: &str) -> Option<Uuid> {
    let rest = &text[text.find("Booking: ")? + "Booking: ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// 5. Idle RSS of the release binaries.

const SERVICES: [&str; 4] = ["booking-api", "ipassan-sync", "salto-sync", "notifier"];

/// `target/release`: the bench runs from `target/release/deps/`.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_row(name: &str, measured: String, pass: Option<bool>) -> Row {
    let row = Row {
        what: format!("idle RSS {name}"),
        measured,
        raw: "—".into(),
        ratio: "—".into(),
        target: "< 30 MiB".into(),
        pass,
    };
    row.print_now();
    row
}

async fn idle_rss() -> Vec<Row> {
    let dir = release_dir();
    println!("idle RSS of the release binaries in {}:", dir.display());
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        println!(
            "  {} not built in {}: run `cargo build --release --bins` first",
            missing.join(", "),
            dir.display()
        );
        return missing
            .iter()
            .map(|name| rss_row(name, "not built".into(), Some(false)))
            .collect();
    }
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let ipassan = ipassan_sim::spawn().await.unwrap();
    let salto = salto_sim::RunningSim::start(0).await.unwrap();
    let mail = MailSink::start();
    let mut children = Vec::new();
    for name in SERVICES {
        let port = free_port();
        let mut env: Vec<(&str, String)> = vec![
            ("CONNECX__DATABASE__URL", db.url.clone()),
            ("CONNECX__AMQP__URL", broker.url.clone()),
            ("CONNECX__LOG__FORMAT", "json".into()),
        ];
        match name {
            "booking-api" => {
                env.push(("CONNECX__HTTP__HOST", "127.0.0.1".into()));
                env.push(("CONNECX__HTTP__PORT", port.to_string()));
                env.push(("CONNECX__AUTH__JWT_SECRET", JWT_SECRET.into()));
                // The bench books far more, and faster, for one resident than a person would.
                env.push(("CONNECX__LIMITS__WRITES_PER_MINUTE", "0".into()));
                env.push(("CONNECX__LIMITS__MAX_LIVE_BOOKINGS", "1000000".into()));
            }
            "ipassan-sync" => {
                env.push(("CONNECX__IPASSAN__BASE_URL", ipassan.base_url.clone()));
                env.push(("CONNECX__IPASSAN__CLIENT_ID", "connecx".into()));
                env.push(("CONNECX__IPASSAN__CLIENT_SECRET", "secret".into()));
            }
            "salto-sync" => {
                env.push(("CONNECX__SALTO__URL", salto.url()));
                env.push(("CONNECX__SALTO__AUTH_KIND", "none".into()));
            }
            _ => {
                env.push(("CONNECX__SMTP__HOST", mail.host()));
                env.push(("CONNECX__SMTP__PORT", mail.port().to_string()));
                env.push(("CONNECX__SMTP__TLS", "none".into()));
                env.push((
                    "CONNECX__SMTP__FROM",
                    "connecX <no-reply@bench.example>".into(),
                ));
                env.push(("CONNECX__OPS__ALERT_EMAIL", "ops@bench.example".into()));
            }
        }
        if name != "booking-api" {
            env.push(("CONNECX__HEALTH__HOST", "127.0.0.1".into()));
            env.push(("CONNECX__HEALTH__PORT", port.to_string()));
        }
        let log = std::env::temp_dir().join(format!("connecx-ratios-{name}.log"));
        let child = tokio::process::Command::new(dir.join(name))
            .envs(env)
            .env_remove("RUST_LOG")
            .current_dir(std::env::temp_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        children.push((name, port, child, log));
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut ready = Vec::new();
    for (name, port, child, log) in &mut children {
        let deadline = Instant::now() + Duration::from_secs(60);
        let up = loop {
            if let Ok(Some(status)) = child.try_wait() {
                println!("  {name} exited ({status}); see {}", log.display());
                break false;
            }
            let answer = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                break true;
            }
            if Instant::now() > deadline {
                println!("  {name} not ready within 60 s; see {}", log.display());
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ready.push(up);
    }
    // Idle: nothing to do for a while (the relay polls, the cleaner ticks).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut rows = Vec::new();
    for ((name, _, child, _), up) in children.iter_mut().zip(ready) {
        let rss = child.id().and_then(rss_kib);
        let row = match (up, rss) {
            (true, Some((kib, anon, file))) => {
                let mib = kib as f64 / 1024.0;
                println!(
                    "    {name}: {mib:.1} MiB resident = {:.1} MiB heap/stacks (RssAnon) + {:.1} MiB \
                     of the binary and libraries (RssFile)",
                    anon as f64 / 1024.0,
                    file as f64 / 1024.0
                );
                rss_row(name, format!("{mib:.1} MiB"), Some(mib < 30.0))
            }
            _ => rss_row(name, "not ready".into(), Some(false)),
        };
        rows.push(row);
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    rows
}

/// `VmRSS`, `RssAnon` and `RssFile` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?, field("RssFile:")?))
}
