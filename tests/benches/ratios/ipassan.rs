//! ipassan-sync (`BENCH_ONLY=ipassan`): a backlog of `visitor_booking.created`, until each has
//! its result, against raw consume+ack of the same bodies. Target ≥ 30 %. For information, the
//! floors: the least a worker of its shape does, written straight on the crates, each message
//! alone and in batches as ipassan-sync's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::{Envelope, Event, VisitorAccessResult};
use futures::{FutureExt, StreamExt};
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use platform::batch::BatchSettings;
use sqlx::types::Json;
use testkit::{TestBroker, TestDb};
use tests::{IPASSAN_SITE, json_answer};

use crate::common::consume_with_prefetch;
use crate::cpu::CpuMeter;
use crate::setup::{
    DEFAULT_PREFETCH, bench_batch_settings, bench_worker_overrides, expect_results,
    fill_worker_queue, floor_setup, fresh_with_raw_median, measure_service,
    visitor_booking_created, worker_settings,
};
use crate::table::Row;

pub async fn ipassan_ratio(n: usize) -> Vec<Row> {
    println!("ipassan-sync ({n} visitor_booking.created):");
    let events: Vec<Envelope> = (0..n).map(visitor_booking_created).collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;
    let sim = ipassan_sim::spawn().await.unwrap();
    let batch = bench_batch_settings(BatchSettings::default());
    let batched = ipassan_sync_run(&db, &broker, &sim, &events, batch).await;
    let row = Row::ratio("ipassan-sync", "msg/s", batched, raw, 30.0);

    // The same backlog with each message handled alone, as before batching: a database, broker
    // and simulator of its own, so neither run finds the other's visitors.
    let (alone_db, alone_broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let alone_sim = ipassan_sim::spawn().await.unwrap();
    let alone = BatchSettings {
        max_messages: 1,
        ..BatchSettings::default()
    };
    let alone = ipassan_sync_run(&alone_db, &alone_broker, &alone_sim, &events, alone).await;
    let alone_row = Row::floor("  each message alone (no batching)", alone, raw, "msg/s");

    let floor = run_floor(&db, &broker, &sim, n, &FLOOR).await;
    let floor_row = Row::floor("  floor: 1 POST + 1 write + publish", floor, raw, "msg/s");
    let batched_floor = run_floor(&db, &broker, &sim, n, &FLOOR_IN_BATCHES).await;
    let batched_floor_row = Row::floor(
        "  floor in batches: POSTs, 1 write, publishes, 1 ack",
        batched_floor,
        raw,
        "msg/s",
    );
    vec![row, alone_row, floor_row, batched_floor_row]
}

/// ipassan-sync, batching as `batch` says, on a backlog of `events`: messages per second until
/// each has its `granted`.
async fn ipassan_sync_run(
    db: &TestDb,
    broker: &TestBroker,
    sim: &ipassan_sim::RunningSim,
    events: &[Envelope],
    batch: BatchSettings,
) -> f64 {
    sim.control().seed(&tests::ipassan_seed()).await.unwrap();
    let mut results = broker.tap("visitor_access.#").await;
    fill_worker_queue(broker, &contracts::IPASSAN_SYNC_QUEUE, events).await;
    let (database, amqp, retry) = worker_settings(db, broker);
    let mut settings = tests::ipassan_sync_settings(database, amqp, retry, sim);
    settings.batch = batch;
    bench_worker_overrides(&mut settings.shared.amqp, Some(&mut settings.connections));
    let app = ipassan_sync::Application::build(settings).await.unwrap();
    let n = events.len();
    let done = expect_results(&mut results, n, "visitor_access.granted.v1");
    let run = |stop| app.run_until_stopped(stop);
    let label = if batch.batching() {
        "ipassan-sync"
    } else {
        "ipassan-sync, each message alone"
    };
    measure_service(db, label, n, run, done).await
}

/// The floor: the least any worker of ipassan-sync's kind must do per message, written straight
/// on the crates: consume (prefetch 16, a task per message), one iPassan call (the create), one
/// durable row in PostgreSQL (the snapshot), one confirmed publish (the result), ack. No version
/// rule, no lock, no dedup, no retries: the speed of light for this shape of work on this machine.
const FLOOR: Floor = Floor {
    label: "floor",
    queue: "bench.floor",
    create_table: "CREATE TABLE bench_floor (booking_id uuid PRIMARY KEY,
                                             version bigint NOT NULL, envelope jsonb NOT NULL)",
    prefetch: DEFAULT_PREFETCH,
    work: each_message_alone,
};

fn each_message_alone(
    mut consumer: lapin::Consumer,
    handles: FloorHandles,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..n {
            let delivery = consumer.next().await.unwrap().unwrap();
            let handles = handles.clone();
            tokio::spawn(async move {
                let envelope = Envelope::from_json(&delivery.data).unwrap();
                let result = handles.create_visitor(&envelope).await;
                sqlx::query(
                    "INSERT INTO bench_floor (booking_id, version, envelope)
                     VALUES ($1, $2, $3)",
                )
                .bind(envelope.booking_id)
                .bind(envelope.version)
                .bind(Json(&envelope))
                .execute(&handles.pool)
                .await
                .unwrap();
                let confirm = handles.publish(&result).await;
                assert!(confirm.await.unwrap().is_ack());
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
            });
        }
    })
}

/// The floors' iPassan token (the simulator's client credentials).
async fn floor_token(http: &reqwest::Client, sim: &ipassan_sim::RunningSim) -> String {
    let token = json_answer(http.post(format!("{}/api/v1/token", sim.base_url)).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "connecx"),
        ("client_secret", "connecx-e2e-secret"),
        ("scope", "all"),
    ]))
    .await;
    token["access_token"].as_str().unwrap().to_owned()
}

impl FloorHandles {
    /// The floors' one iPassan call for a visit (the create), and the result event it gives.
    async fn create_visitor(&self, envelope: &Envelope) -> Envelope {
        let Event::VisitorBookingCreated(booking) = &envelope.event else {
            unreachable!()
        };
        let window = |at: chrono::NaiveDateTime| at.format("%Y-%m-%dT%H:%M:%S").to_string();
        let visitor = json_answer(self.http.post(&self.url).bearer_auth(&self.token).form(&[
            ("visiteeId", "p-ana".to_owned()),
            ("firstName", "Visitor".to_owned()),
            ("lastName", booking.visitor.name.clone()),
            ("email", booking.visitor.email.clone()),
            ("validFrom", window(booking.window.local_starts_at)),
            ("validTo", window(booking.window.local_ends_at)),
            ("externalRef", envelope.booking_id.to_string()),
        ]))
        .await;
        Envelope::new(
            envelope.booking_id,
            envelope.version,
            Event::VisitorAccessGranted(VisitorAccessResult {
                booking: booking.clone(),
                pin: visitor["credential"]["pin"].as_str().map(str::to_owned),
                failure: None,
            }),
        )
    }

    /// Publishes a result (mandatory, persistent); the caller waits for its confirm.
    async fn publish(&self, result: &Envelope) -> lapin::PublisherConfirm {
        self.publish_channel
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
            .unwrap()
    }
}

/// Batches ipassan-sync's shape takes: its prefetch, its batches' size and how many run at once.
const BATCH_PREFETCH: u16 = 64;
const BATCH_MESSAGES: usize = 32;
const BATCHES_RUNNING: usize = 2;

/// The least a worker of ipassan-sync's kind must do per message when it batches as
/// ipassan-sync does, written straight on the crates: consume (prefetch 64), take what has
/// arrived (up to 32) as a batch, at most two batches at once; per batch the iPassan creates at
/// once (a call each: iPassan has no batch API), one statement writing every snapshot, the
/// results published back to back with one wait for their confirms, and one `multiple` ack, sent
/// after the batch before it acked so that it never settles another batch's messages. No version
/// rule, lock, dedup, outcome record or retries.
const FLOOR_IN_BATCHES: Floor = Floor {
    label: "floor in batches",
    queue: "bench.floor_batched",
    create_table: "CREATE TABLE bench_floor_batched (booking_id uuid PRIMARY KEY,
                                                     version bigint NOT NULL,
                                                     envelope jsonb NOT NULL)",
    prefetch: BATCH_PREFETCH,
    work: in_batches,
};

fn in_batches(
    mut consumer: lapin::Consumer,
    handles: FloorHandles,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let running = Arc::new(tokio::sync::Semaphore::new(BATCHES_RUNNING));
        let mut acked_before: Option<tokio::sync::oneshot::Receiver<()>> = None;
        let mut taken = 0;
        while taken < n {
            let turn = Arc::clone(&running).acquire_owned().await.unwrap();
            let mut batch = vec![consumer.next().await.unwrap().unwrap()];
            while batch.len() < BATCH_MESSAGES && taken + batch.len() < n {
                match consumer.next().now_or_never() {
                    Some(Some(delivery)) => batch.push(delivery.unwrap()),
                    _ => break,
                }
            }
            taken += batch.len();
            let (acked, this_acked) = tokio::sync::oneshot::channel();
            let before = acked_before.replace(this_acked);
            let handles = handles.clone();
            tokio::spawn(async move {
                let envelopes: Vec<Envelope> = batch
                    .iter()
                    .map(|delivery| Envelope::from_json(&delivery.data).unwrap())
                    .collect();
                let granted = futures::future::join_all(
                    envelopes
                        .iter()
                        .map(|envelope| handles.create_visitor(envelope)),
                )
                .await;
                let ids: Vec<uuid::Uuid> = envelopes.iter().map(|e| e.booking_id).collect();
                let versions: Vec<i64> = envelopes.iter().map(|e| e.version).collect();
                let bodies: Vec<String> = batch
                    .iter()
                    .map(|delivery| String::from_utf8(delivery.data.clone()).unwrap())
                    .collect();
                sqlx::query(
                        "INSERT INTO bench_floor_batched (booking_id, version, envelope)
                         SELECT id, version, body::jsonb
                           FROM UNNEST($1::uuid[], $2::bigint[], $3::text[]) AS b(id, version, body)",
                    )
                    .bind(ids)
                    .bind(versions)
                    .bind(bodies)
                    .execute(&handles.pool)
                    .await
                    .unwrap();
                let mut confirms = Vec::with_capacity(granted.len());
                for result in &granted {
                    confirms.push(handles.publish(result).await);
                }
                for confirm in confirms {
                    assert!(confirm.await.unwrap().is_ack());
                }
                if let Some(before) = before {
                    let _ = before.await;
                }
                batch
                    .last()
                    .unwrap()
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
                let _ = acked.send(());
                drop(turn);
            });
        }
    })
}

/// A floor: its name in the CPU report, its queue and table, its consumer's prefetch, and the
/// loop that consumes `n` messages.
struct Floor {
    label: &'static str,
    queue: &'static str,
    create_table: &'static str,
    prefetch: u16,
    work: fn(lapin::Consumer, FloorHandles, usize) -> tokio::task::JoinHandle<()>,
}

/// What a floor's handling of a message works with; cheap to clone into each task.
#[derive(Clone)]
struct FloorHandles {
    http: reqwest::Client,
    url: String,
    token: String,
    /// A clone of the floor's pool. Held by the loop until the CPU is counted, it keeps the
    /// pool's connections open: a backend that has exited takes its CPU time out of the count.
    pool: sqlx::PgPool,
    publish_channel: lapin::Channel,
}

/// Runs a floor: `n` created events on its queue, its table made, then its loop,
/// timed until every result is on the broker (messages per second), its CPU printed.
async fn run_floor(
    db: &TestDb,
    broker: &TestBroker,
    sim: &ipassan_sim::RunningSim,
    n: usize,
    floor: &Floor,
) -> f64 {
    let events: Vec<Envelope> = (0..n).map(visitor_booking_created).collect();
    let (connection, channel, pool) =
        floor_setup(db, broker, floor.queue, &events, floor.create_table).await;
    let http = reqwest::Client::new();
    let token = floor_token(&http, sim).await;
    let publish_channel = connection.create_channel().await.unwrap();
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut results = broker.tap("visitor_access.#").await;
    let consumer = consume_with_prefetch(&channel, floor.queue, floor.prefetch).await;
    let cpu = CpuMeter::start(&db.name);
    let started = Instant::now();
    let work = (floor.work)(
        consumer,
        FloorHandles {
            http,
            url: format!("{}/api/v1/access/site/{IPASSAN_SITE}/visitor", sim.base_url),
            token,
            pool: pool.clone(),
            publish_channel,
        },
        n,
    );
    for _ in 0..n {
        results
            .next(Duration::from_secs(60))
            .await
            .expect("a result per message");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("{}", cpu.report(floor.label, n));
    work.await.unwrap();
    pool.close().await;
    let _ = connection.close(200, "bye".into()).await;
    rate
}
