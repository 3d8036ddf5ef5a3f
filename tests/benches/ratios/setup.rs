//! What the measurements share: the services' settings as deployed, the events they are fed, and
//! the raw limits they are compared with (lapin consume+ack on a quorum queue), each measured
//! [`RAW_RUNS`] times.

use std::time::{Duration, Instant};

use booking_api::auth::{TokenClaims, mint_token};
use chrono::{DateTime, Days, TimeZone, Utc};
use contracts::{
    BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope, Event, Role,
    VisitorBooking,
};
use lapin::Channel;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use platform::amqp::{Outgoing, Publisher};
use platform::config::{AmqpSettings, DatabaseSettings, RetrySettings};
use sqlx::PgPool;
use testkit::{EventTap, TestBroker, TestDb};
use tests::IPASSAN_SITE;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use crate::common::{
    ana, bench_visitor, consume_and_ack, consume_with_prefetch, declare_quorum_queue,
};
use crate::cpu::CpuMeter;

pub const JWT_SECRET: &str = "a ratio-benchmark secret of at least 32 bytes";
pub const BUILDING: &str = "harbour";
pub const SYDNEY: chrono_tz::Tz = chrono_tz::Australia::Sydney;
/// What the services use unless configured otherwise (README, configuration).
pub const DEFAULT_POOL: u32 = 10;
pub const DEFAULT_PREFETCH: u16 = 16;
/// A worker's pool as the README asks for it: the prefetch + 2 (ipassan-sync and salto-sync hold
/// a connection per message in flight).
pub const WORKER_POOL: u32 = DEFAULT_PREFETCH as u32 + 2;

/// How many times each raw limit is measured; the median is the row's raw figure. The raw runs
/// are short, so one burst of other work on the machine would otherwise decide the ratio.
pub const RAW_RUNS: usize = 3;

/// The median of the raw runs' `rates`, printed with them all.
pub fn median(mut rates: Vec<f64>) -> f64 {
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

pub fn amqp(broker: &TestBroker) -> AmqpSettings {
    AmqpSettings {
        url: broker.url.clone(),
        prefetch: DEFAULT_PREFETCH,
        delivery_limit: 5,
        drain_timeout_secs: 30,
    }
}

pub fn database(db: &TestDb) -> DatabaseSettings {
    DatabaseSettings {
        url: db.url.clone(),
        max_connections: DEFAULT_POOL,
    }
}

/// What a worker runs with here: a worker's pool on `db`, the services' prefetch on `broker`,
/// and the default retry tiers.
pub fn worker_settings(
    db: &TestDb,
    broker: &TestBroker,
) -> (DatabaseSettings, AmqpSettings, RetrySettings) {
    let database = DatabaseSettings {
        url: db.url.clone(),
        max_connections: WORKER_POOL,
    };
    (database, amqp(broker), RetrySettings::default())
}

/// The batch settings of a worker row: the service's `defaults`, or `BENCH_BATCH_MESSAGES` /
/// `BENCH_BATCH_RUNNING`.
pub fn bench_batch_settings(
    defaults: platform::batch::BatchSettings,
) -> platform::batch::BatchSettings {
    platform::batch::BatchSettings {
        max_messages: env_parsed("BENCH_BATCH_MESSAGES").unwrap_or(defaults.max_messages),
        max_running: env_parsed("BENCH_BATCH_RUNNING").unwrap_or(defaults.max_running),
    }
}

/// `BENCH_WORKER_PREFETCH`, `BENCH_MAX_IN_FLIGHT`: a worker's prefetch and its connections'
/// slots, when set, instead of the service's (the raw consume+ack keeps the default prefetch).
pub fn bench_worker_overrides(
    amqp: &mut AmqpSettings,
    connections: Option<&mut platform::bulkhead::ConnectionSettings>,
) {
    if let Some(prefetch) = env_parsed("BENCH_WORKER_PREFETCH") {
        amqp.prefetch = prefetch;
    }
    if let (Some(connections), Some(slots)) = (connections, env_parsed("BENCH_MAX_IN_FLIGHT")) {
        connections.max_in_flight = slots;
    }
}

/// A worker row batching as `batch` says, into the worker's `batching` settings: a row without
/// batching runs at the shared prefetch, as before batching (each message in flight holding a
/// database connection: the pool is the prefetch + 2); then [`bench_worker_overrides`].
pub fn bench_batching(
    batching: &mut platform::batch::BatchSettings,
    batch: platform::batch::BatchSettings,
    amqp: &mut AmqpSettings,
    connections: Option<&mut platform::bulkhead::ConnectionSettings>,
) {
    *batching = batch;
    if !batch.batching() {
        amqp.prefetch = DEFAULT_PREFETCH;
    }
    bench_worker_overrides(amqp, connections);
}

fn env_parsed<T: std::str::FromStr>(key: &str) -> Option<T> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

pub fn booking_api_settings(db: &TestDb, broker: &TestBroker) -> booking_api::Settings {
    tests::booking_api_settings(
        database(db),
        amqp(broker),
        RetrySettings::default(),
        JWT_SECRET,
    )
}

pub fn token(role: Role, sub: &str, apartment: Option<&str>) -> String {
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
pub async fn declare_event_sink(channel: &Channel) {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    channel
        .queue_declare("bench.sink".into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    bind_to_every_event(channel, "bench.sink").await;
}

/// Declares `connecx.events` as the services do and binds `queue` to every event published there.
pub async fn bind_to_every_event(channel: &Channel, queue: &str) {
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
    channel
        .queue_bind(
            queue.into(),
            contracts::EVENTS_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

pub fn building() -> Building {
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
pub fn evening_window() -> BookingWindow {
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

pub fn visitor_booking(i: usize) -> VisitorBooking {
    VisitorBooking {
        building: building(),
        window: evening_window(),
        resident: ana(),
        visitor: bench_visitor(i),
        provide_access: true,
        state: BookingState::Booked,
    }
}

pub fn visitor_booking_created(i: usize) -> Envelope {
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorBookingCreated(visitor_booking(i)),
    )
}

/// Raw lapin consume+ack of `bodies` on a fresh quorum queue (prefetch as the workers), in
/// messages per second. The queue is filled first, untimed.
pub async fn raw_consume_ack_median(db: &TestDb, broker: &TestBroker, bodies: &[Vec<u8>]) -> f64 {
    let mut rates = Vec::new();
    for run in 0..RAW_RUNS {
        rates.push(raw_consume_ack(db, broker, &format!("bench.raw.{run}"), bodies).await);
    }
    median(rates)
}

pub async fn raw_consume_ack(
    db: &TestDb,
    broker: &TestBroker,
    queue: &str,
    bodies: &[Vec<u8>],
) -> f64 {
    let (connection, channel) = fill_quorum_queue(broker, "bench.raw", queue, bodies).await;
    let mut consumer = consume_with_prefetch(&channel, queue, DEFAULT_PREFETCH).await;
    let cpu = CpuMeter::start(&db.name);
    let started = Instant::now();
    consume_and_ack(&mut consumer, bodies.len()).await;
    let rate = bodies.len() as f64 / started.elapsed().as_secs_f64();
    println!("{}", cpu.report("raw consume+ack", bodies.len()));
    let _ = connection.close(200, "bye".into()).await;
    rate
}

/// A fresh durable quorum `queue` filled with `bodies` (published as `publisher_name`), untimed;
/// the connection and a channel on it for consuming them.
pub async fn fill_quorum_queue(
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

/// What a floor row starts from, untimed: `events` in a fresh quorum `queue` (the connection and
/// a channel to consume them), and a pool of a worker's size on `db` where `create_table` made
/// the floor's one table.
pub async fn floor_setup(
    db: &TestDb,
    broker: &TestBroker,
    queue: &str,
    events: &[Envelope],
    create_table: &'static str,
) -> (lapin::Connection, Channel, PgPool) {
    let bodies: Vec<Vec<u8>> = events.iter().map(Envelope::to_json).collect();
    let (connection, channel) = fill_quorum_queue(broker, "bench.floor.fill", queue, &bodies).await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(WORKER_POOL)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query(create_table).execute(&pool).await.unwrap();
    (connection, channel, pool)
}

/// Runs `future` (a service's `run_until_stopped`) until the returned token is cancelled.
pub fn run_service<F>(
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
pub async fn fresh_with_raw_median(events: &[Envelope]) -> (TestDb, TestBroker, f64) {
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let bodies: Vec<Vec<u8>> = events.iter().map(Envelope::to_json).collect();
    let raw = raw_consume_ack_median(&db, &broker, &bodies).await;
    (db, broker, raw)
}

/// Starts a worker (`run`, as for [`run_service`]) on its filled queue and times it until `done`:
/// `n` messages per that time, with its CPU printed under `label`. The worker is stopped after.
pub async fn measure_worker<F>(
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

/// [`measure_worker`] for a service: `run` is its `run_until_stopped`, given the shutdown.
pub async fn measure_service<F, E>(
    db: &TestDb,
    label: &str,
    n: usize,
    run: impl FnOnce(WaitForCancellationFutureOwned) -> F,
    done: impl Future<Output = ()>,
) -> f64
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let run = |stop: CancellationToken| {
        let running = run(stop.cancelled_owned());
        async move { running.await.unwrap() }
    };
    measure_worker(db, label, n, run, done).await
}

/// Polls `count_sql` (a `count(*)`) every `every` until it is 0; after `within`, panics saying
/// `left(count)`.
pub async fn wait_for_none(
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
pub async fn expect_results(results: &mut EventTap, n: usize, routing_key: &str) {
    for _ in 0..n {
        let result = results
            .next(Duration::from_secs(60))
            .await
            .expect("a result per booking");
        assert_eq!(result.routing_key(), routing_key);
    }
}

/// Declares a worker's `queue` (as the worker would) and publishes its backlog `events` there.
pub async fn fill_worker_queue(
    broker: &TestBroker,
    queue: &contracts::QueueSpec,
    events: &[Envelope],
) {
    broker.declare_queue(queue, 5).await;
    let publisher = Publisher::new(&amqp(broker), "bench.fill");
    for chunk in events.chunks(500) {
        publisher.publish_events(chunk).await.unwrap();
    }
}
