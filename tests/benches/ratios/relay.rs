//! The outbox relay (`BENCH_ONLY=relay`): a pre-filled outbox, until every row is sent, against
//! raw pipelined confirm-publish of the same events. Target ≥ 50 %.

use std::time::{Duration, Instant};

use booking_api::outbox::{OutboxSettings, Relay, RelayWake};
use contracts::Envelope;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use platform::amqp::Publisher;
use serde_json::Value;
use testkit::{TestBroker, TestDb};
use uuid::Uuid;

use crate::common::declare_quorum_queue;
use crate::cpu::CpuMeter;
use crate::setup::{
    RAW_RUNS, amqp, bind_to_every_event, booking_api_settings, measure_worker, median,
    visitor_booking_created, wait_for_none,
};
use crate::table::Row;

pub async fn relay_ratio(n: usize) -> Row {
    println!("outbox relay ({n} events):");
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    // Where the events land, as in production: a durable quorum queue.
    declare_quorum_queue(&channel, "bench.events").await;
    bind_to_every_event(&channel, "bench.events").await;
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
    let relay = Relay::new(pool.clone(), publisher, RelayWake::default(), settings);
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
