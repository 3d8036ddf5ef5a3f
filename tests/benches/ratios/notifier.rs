//! The notifier (`BENCH_ONLY=notifier`): a backlog of `visitor_access.granted`, until both mails
//! of each are accepted, against raw consume+ack of the same bodies. Target ≥ 30 %. For
//! information, the same backlog with each result mailed alone (no batching), and the floor: the
//! least a worker of the notifier's shape does.

use std::time::{Duration, Instant};

use contracts::{Envelope, Event, VisitorAccessResult};
use futures::StreamExt;
use lapin::options::BasicAckOptions;
use platform::batch::BatchSettings;
use testkit::mail_sink::MailSink;
use testkit::{TestBroker, TestDb};
use uuid::Uuid;

use crate::common::consume_with_prefetch;
use crate::cpu::CpuMeter;
use crate::setup::{
    bench_batch_settings, bench_batching, fill_worker_queue, floor_setup, fresh_with_raw_median,
    measure_service, visitor_booking, worker_settings,
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
    let batch = bench_batch_settings(BatchSettings {
        max_running: notifier::settings::DEFAULT_MAX_RUNNING,
        ..BatchSettings::default()
    });
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

    let floor = notifier_floor(&db, &broker, &events).await;
    let floor_row = Row::floor("  floor: 2 mails + 1 write", floor, raw, "msg/s");
    vec![row, alone_row, floor_row]
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
    bench_batching(&mut settings.batch, batch, &mut settings.shared.amqp, None);
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

/// The least any worker of the notifier's kind must do per result: consume (the notifier's
/// prefetch, a task per message), compose its two mails (the notifier's own templates, so
/// the same bytes cross SMTP), send both at once over pooled SMTP connections, one durable row
/// in PostgreSQL (that the mails went), ack. No lock, claim, dedup, order or retries. The mails
/// go through the notifier's `Mailer` rather than lettre's transport: the latter leaves Nagle's
/// algorithm on and so waits 40 ms a mail (README, Performance), which would make this a
/// measure of waiting rather than of work.
async fn notifier_floor(db: &TestDb, broker: &TestBroker, events: &[Envelope]) -> f64 {
    let n = events.len();
    let queue = "bench.notifier.floor";
    let (connection, channel, pool) = floor_setup(
        db,
        broker,
        queue,
        events,
        "CREATE TABLE bench_notifier_floor (booking_id uuid PRIMARY KEY, mails int NOT NULL)",
    )
    .await;
    let mail = MailSink::start();
    let (database, amqp, retry) = worker_settings(db, broker);
    let settings = tests::notifier_settings(database, amqp, retry, &mail);
    let mailer = notifier::mailer::Mailer::new(&settings.smtp).unwrap();
    let ops = settings.ops.alert_email.clone();
    let mut consumer =
        consume_with_prefetch(&channel, queue, notifier::settings::DEFAULT_PREFETCH).await;
    let cpu = CpuMeter::start(&db.name);
    let started = Instant::now();
    let spawner_pool = pool.clone();
    let work = tokio::spawn(async move {
        for _ in 0..n {
            let delivery = consumer.next().await.unwrap().unwrap();
            let (mailer, pool, ops) = (mailer.clone(), spawner_pool.clone(), ops.clone());
            tokio::spawn(async move {
                let envelope = Envelope::from_json(&delivery.data).unwrap();
                let planned = notifier::decision::result_mails(&envelope, &ops, false);
                let mails =
                    notifier::mails::compose_all(&envelope, &planned, chrono::Utc::now()).unwrap();
                let sent = futures::future::join_all(mails.iter().map(|m| mailer.send(m))).await;
                assert!(sent.iter().all(Result::is_ok), "{sent:?}");
                sqlx::query("INSERT INTO bench_notifier_floor (booking_id, mails) VALUES ($1, $2)")
                    .bind(envelope.booking_id)
                    .bind(mails.len() as i32)
                    .execute(&pool)
                    .await
                    .unwrap();
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
            });
        }
    });
    let mails = mail.wait_for(2 * n, Duration::from_secs(300)).await;
    assert_eq!(mails.len(), 2 * n, "two mails per result");
    let rate = n as f64 / started.elapsed().as_secs_f64();
    // The CPU counts every row written too; the pool stays open until then, as a backend that
    // has exited takes its CPU time out of the count.
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bench_notifier_floor")
        .fetch_one(&pool)
        .await
        .unwrap()
        < n as i64
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{}", cpu.report("floor", n));
    work.await.unwrap();
    let _ = connection.close(200, "bye".into()).await;
    rate
}
