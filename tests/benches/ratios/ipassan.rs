//! ipassan-sync (`BENCH_ONLY=ipassan`): a backlog of `visitor_booking.created`, until each has
//! its result, against raw consume+ack of the same bodies. Target ≥ 30 %. For information, the
//! floor: the least a worker of its shape does, written straight on the crates.

use std::time::{Duration, Instant};

use contracts::{Envelope, Event, VisitorAccessResult};
use futures::StreamExt;
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

    let floor = ipassan_floor(&db, &broker, &sim, n).await;
    let floor_row = Row::floor("  floor: 1 POST + 1 write + publish", floor, raw, "msg/s");
    vec![row, alone_row, floor_row]
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
    let (connection, channel, pool) = floor_setup(
        db,
        broker,
        queue,
        &events,
        "CREATE TABLE bench_floor (booking_id uuid PRIMARY KEY, version bigint NOT NULL,
                                   envelope jsonb NOT NULL)",
    )
    .await;
    let http = reqwest::Client::new();
    let token = json_answer(http.post(format!("{}/api/v1/token", sim.base_url)).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "connecx"),
        ("client_secret", "connecx-e2e-secret"),
        ("scope", "all"),
    ]))
    .await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let publish_channel = connection.create_channel().await.unwrap();
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut results = broker.tap("visitor_access.#").await;
    let mut consumer = consume_with_prefetch(&channel, queue, DEFAULT_PREFETCH).await;
    let cpu = CpuMeter::start(&db.name);
    let started = Instant::now();
    let url = format!("{}/api/v1/access/site/{IPASSAN_SITE}/visitor", sim.base_url);
    // A clone kept here holds the pool's connections open until the CPU is counted: a backend
    // that has exited takes its CPU time out of the count.
    let spawner_pool = pool.clone();
    let work = tokio::spawn(async move {
        for _ in 0..n {
            let delivery = consumer.next().await.unwrap().unwrap();
            let (http, url, token, pool, publish_channel) = (
                http.clone(),
                url.clone(),
                token.clone(),
                spawner_pool.clone(),
                publish_channel.clone(),
            );
            tokio::spawn(async move {
                let envelope = Envelope::from_json(&delivery.data).unwrap();
                let Event::VisitorBookingCreated(booking) = &envelope.event else {
                    unreachable!()
                };
                let window = |at: chrono::NaiveDateTime| at.format("%Y-%m-%dT%H:%M:%S").to_string();
                let visitor = json_answer(http.post(&url).bearer_auth(&token).form(&[
                    ("visiteeId", "p-ana".to_owned()),
                    ("firstName", "Visitor".to_owned()),
                    ("lastName", booking.visitor.name.clone()),
                    ("email", booking.visitor.email.clone()),
                    ("validFrom", window(booking.window.local_starts_at)),
                    ("validTo", window(booking.window.local_ends_at)),
                    ("externalRef", envelope.booking_id.to_string()),
                ]))
                .await;
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
    pool.close().await;
    let _ = connection.close(200, "bye".into()).await;
    rate
}
