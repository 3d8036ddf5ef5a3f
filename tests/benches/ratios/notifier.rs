//! The notifier (`BENCH_ONLY=notifier`): a backlog of `visitor_access.granted`, until both mails
//! of each are accepted, against raw consume+ack of the same bodies. Target ≥ 30 %. For
//! information, the same backlog with each result mailed alone (no batching).

use std::time::Duration;

use contracts::{Envelope, Event, VisitorAccessResult};
use platform::batch::BatchSettings;
use testkit::mail_sink::MailSink;
use testkit::{TestBroker, TestDb};
use uuid::Uuid;

use crate::setup::{
    DEFAULT_PREFETCH, bench_batch_settings, bench_worker_overrides, fill_worker_queue,
    fresh_with_raw_median, measure_service, visitor_booking, worker_settings,
};
use crate::table::Row;

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

pub async fn notifier_ratio(n: usize) -> Vec<Row> {
    println!("notifier ({n} visitor_access.granted, two mails each):");
    let events: Vec<Envelope> = (0..n).map(visitor_access_granted).collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;
    let batch = bench_batch_settings();
    let batched = notifier_run(&db, &broker, &events, batch).await;
    let row = Row::ratio("notifier", "msg/s", batched, raw, 30.0);

    // The same backlog with each result mailed alone, as before batching: a database, broker
    // and sink of their own.
    let (alone_db, alone_broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let alone = BatchSettings {
        max_messages: 1,
        ..BatchSettings::default()
    };
    let alone = notifier_run(&alone_db, &alone_broker, &events, alone).await;
    let alone_row = Row::floor("  each result alone (no batching)", alone, raw, "msg/s");
    vec![row, alone_row]
}

/// The notifier, batching as `batch` says, on a backlog of `events` (a sink of its own):
/// results per second until both mails of each are accepted.
async fn notifier_run(
    db: &TestDb,
    broker: &TestBroker,
    events: &[Envelope],
    batch: BatchSettings,
) -> f64 {
    let n = events.len();
    let mail = MailSink::start();
    fill_worker_queue(broker, &contracts::NOTIFIER_QUEUE, events).await;
    let (database, amqp, retry) = worker_settings(db, broker);
    let mut settings = tests::notifier_settings(database, amqp, retry, &mail);
    settings.batch = batch;
    if !batch.batching() {
        // Alone, as before batching: the shared prefetch, each message in flight holding a
        // database connection (the pool is the prefetch + 2).
        settings.shared.amqp.prefetch = DEFAULT_PREFETCH;
    }
    bench_worker_overrides(&mut settings.shared.amqp, None);
    let app = notifier::Application::build(settings).await.unwrap();
    let done = async {
        let mails = mail.wait_for(2 * n, Duration::from_secs(300)).await;
        assert_eq!(mails.len(), 2 * n, "two mails per result");
    };
    let run = |stop| app.run_until_stopped(stop);
    let label = if batch.batching() {
        "notifier"
    } else {
        "notifier, each result alone"
    };
    measure_service(db, label, n, run, done).await
}
