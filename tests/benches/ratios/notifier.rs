//! The notifier (`BENCH_ONLY=notifier`): a backlog of `visitor_access.granted`, until both mails
//! of each are accepted, against raw consume+ack of the same bodies. Target ≥ 30 %.

use std::time::Duration;

use contracts::{Envelope, Event, VisitorAccessResult};
use testkit::mail_sink::MailSink;
use uuid::Uuid;

use crate::setup::{
    fill_worker_queue, fresh_with_raw_median, measure_service, visitor_booking, worker_settings,
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

pub async fn notifier_ratio(n: usize) -> Row {
    println!("notifier ({n} visitor_access.granted, two mails each):");
    let events: Vec<Envelope> = (0..n).map(visitor_access_granted).collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;

    let mail = MailSink::start();
    fill_worker_queue(&broker, &contracts::NOTIFIER_QUEUE, &events).await;
    let (database, amqp, retry) = worker_settings(&db, &broker);
    let app = notifier::Application::build(tests::notifier_settings(database, amqp, retry, &mail))
        .await
        .unwrap();
    let done = async {
        let mails = mail.wait_for(2 * n, Duration::from_secs(300)).await;
        assert_eq!(mails.len(), 2 * n, "two mails per result");
    };
    let run = |stop| app.run_until_stopped(stop);
    let measured = measure_service(&db, "notifier", n, run, done).await;
    Row::ratio("notifier", "msg/s", measured, raw, 30.0)
}
