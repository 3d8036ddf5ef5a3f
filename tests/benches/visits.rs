//! Visitor-booking benchmark (issue 4). Prints figures; asserts nothing about speed.
//!
//! 1. End to end: N visitor bookings POSTed at a steady rate to booking-api, the whole system
//!    running with a zero-latency iPassan simulator and an in-process SMTP sink. For each booking:
//!    POST → both mails (resident and visitor) accepted by SMTP. Prints bookings/s, p50, p99.
//! 2. ipassan-sync's own throughput on a backlog of M `visitor_booking.created` events, as a ratio
//!    of raw lapin consume+ack of M messages on the same broker in the same run.
//!
//! `cargo bench -p tests --bench visits` (env: BENCH_N=300, BENCH_RATE=50, BENCH_BACKLOG=500).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use contracts::{
    BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope, Event, VisitorBooking,
};
use platform::amqp::Publisher;
use platform::config::{AmqpSettings, DatabaseSettings, RetrySettings};
use testkit::{TestBroker, TestDb};
use tests::{IPASSAN_SITE, Stack, tomorrow_evening};
use tokio_util::sync::CancellationToken;

use common::{
    ana, bench_visitor, consume_and_ack, consume_with_prefetch, declare_quorum_queue, env_number,
    post_json, print_latencies, visitor_booking_body,
};

#[tokio::main]
async fn main() {
    let n = env_number("BENCH_N", 300);
    let rate = env_number("BENCH_RATE", 50);
    let backlog = env_number("BENCH_BACKLOG", 500);
    println!("visitor-booking benchmark: {n} bookings at {rate}/s, backlog {backlog}");
    end_to_end(n, rate).await;
    throughput_ratio(backlog).await;
}

async fn end_to_end(n: usize, rate: usize) {
    let stack = Stack::start().await;
    let (starts_at, ends_at) = tomorrow_evening();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut posts = Vec::with_capacity(n);
    for i in 0..n {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let http = stack.http.clone();
        let url = format!("{}/v1/visitor-bookings", stack.api);
        let token = stack.ana();
        let body = visitor_booking_body(i, &starts_at, &ends_at);
        posts.push(tokio::spawn(async move {
            let posted_at = Utc::now();
            let response = post_json(&http, url, &token, &body).await;
            assert_eq!(response.status().as_u16(), 201);
            posted_at
        }));
    }
    let mut posted_at = Vec::with_capacity(n);
    for post in posts {
        posted_at.push(post.await.unwrap());
    }
    let all = stack.mail.wait_for(2 * n, Duration::from_secs(120)).await;
    assert_eq!(all.len(), 2 * n, "every booking produced its two mails");
    let mut latencies = Vec::with_capacity(n);
    let mut last_done = started;
    for (i, posted) in posted_at.iter().enumerate() {
        let visitor_email = format!("v{i}@bench.example");
        let marker = format!("Visitor {i} ");
        let visitor = all
            .iter()
            .find(|m| m.is_to(&visitor_email))
            .expect("visitor mail");
        let resident = all
            .iter()
            .find(|m| m.is_to("ana@residents.example") && m.text_body.contains(&marker))
            .expect("resident mail");
        let done = visitor.received_at.max(resident.received_at);
        let latency = (done - *posted).to_std().unwrap_or_default();
        latencies.push(latency);
        let done_instant = started + (done - posted_at[0]).to_std().unwrap_or_default();
        last_done = last_done.max(done_instant);
    }
    latencies.sort();
    let elapsed = last_done.duration_since(started).as_secs_f64();
    println!("end to end (POST → both mails accepted by SMTP):");
    println!("  bookings            {n}");
    println!("  offered rate        {rate}/s");
    println!("  achieved            {:.1} bookings/s", n as f64 / elapsed);
    print_latencies("", &latencies);
}

fn created(i: usize) -> Envelope {
    let now = Utc::now();
    let local = now.naive_utc() + chrono::Duration::days(1);
    Envelope::new(
        uuid::Uuid::new_v4(),
        1,
        Event::VisitorBookingCreated(VisitorBooking {
            building: Building {
                id: "harbour".into(),
                name: "Harbour View".into(),
                timezone: "Australia/Sydney".into(),
                manager_emails: vec![],
                ipassan_site: Some(IPASSAN_SITE.into()),
                double_booking_policy: DoubleBookingPolicy::Auto,
                connection_versions: Default::default(),
            },
            window: BookingWindow {
                starts_at: now,
                ends_at: now + chrono::Duration::hours(2),
                local_starts_at: local,
                local_ends_at: local + chrono::Duration::hours(2),
            },
            resident: ana(),
            visitor: bench_visitor(i),
            provide_access: true,
            state: BookingState::Booked,
        }),
    )
}

async fn throughput_ratio(backlog: usize) {
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let amqp = AmqpSettings {
        url: broker.url.clone(),
        prefetch: 16,
        delivery_limit: 5,
        drain_timeout_secs: 30,
    };
    let publisher = Publisher::new(&amqp, "bench");

    // Raw: consume+ack of `backlog` messages on a plain quorum queue, same broker, same run.
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    declare_quorum_queue(&channel, "bench.raw").await;
    let bodies: Vec<Vec<u8>> = (0..backlog).map(|i| created(i).to_json()).collect();
    let messages: Vec<platform::amqp::Outgoing<'_>> = bodies
        .iter()
        .map(|body| platform::amqp::Outgoing {
            exchange: "",
            routing_key: "bench.raw",
            body,
            message_id: None,
            headers: Default::default(),
        })
        .collect();
    publisher.publish_all(&messages).await.unwrap();
    let mut consumer = consume_with_prefetch(&channel, "bench.raw", 16).await;
    let raw_started = Instant::now();
    consume_and_ack(&mut consumer, backlog).await;
    let raw_rate = backlog as f64 / raw_started.elapsed().as_secs_f64();

    // ipassan-sync on the same number of booking events, queued before it starts.
    let sim = ipassan_sim::spawn().await.unwrap();
    sim.control().seed(&tests::ipassan_seed()).await.unwrap();
    broker
        .declare_queue(&contracts::IPASSAN_SYNC_QUEUE, 5)
        .await;
    let mut granted = broker.tap("visitor_access.#").await;
    let events: Vec<Envelope> = (0..backlog).map(created).collect();
    publisher.publish_events(&events).await.unwrap();
    let app = ipassan_sync::Application::build(tests::ipassan_sync_settings(
        DatabaseSettings {
            url: db.url.clone(),
            max_connections: 20,
        },
        amqp.clone(),
        RetrySettings::default(),
        &sim,
    ))
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let sync_started = Instant::now();
    tokio::spawn(app.run_until_stopped(async move { token.cancelled().await }));
    for _ in 0..backlog {
        granted
            .next(Duration::from_secs(60))
            .await
            .expect("a result per booking");
    }
    let sync_rate = backlog as f64 / sync_started.elapsed().as_secs_f64();
    stop.cancel();
    println!("ipassan-sync throughput on a backlog of {backlog} events:");
    println!("  raw consume+ack     {raw_rate:.0} msg/s");
    println!(
        "  ipassan-sync        {sync_rate:.0} bookings/s (create in iPassan + result published)"
    );
    println!(
        "  ratio               {:.1} %",
        100.0 * sync_rate / raw_rate
    );
}
