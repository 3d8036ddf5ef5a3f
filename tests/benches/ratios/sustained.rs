//! Sustained load (`BENCH_ONLY=sustained`): visitor bookings (of 200 residents) and facility
//! bookings (by the manager) alternating at a steady rate (300/s) for a minute against the whole
//! system, every service with its default pool of 10 database connections; each facility
//! booking for its own (apartment, facility) pair, so Salto refuses none. Two targets: POST → `granted` on the broker p99 < 250 ms, and no
//! backlog growth — what waits at the end of the minute (events ready in the services' queues
//! plus outbox rows not yet published) is no more than what waited at 10 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::Service;
use serde_json::Value;
use tests::{Stack, tomorrow_evening};
use uuid::Uuid;

use crate::common::{
    BENCH_FACILITIES, facility_booking_body, ms, percentile, post_json, seed_directory,
    seed_residents, visitor_booking_body, watch_grants,
};
use crate::setup::DEFAULT_POOL;
use crate::table::Row;

/// When the first backlog is read, after the start.
const EARLY_SAMPLE: Duration = Duration::from_secs(10);

pub async fn sustained(rate: usize, secs: usize) -> Vec<Row> {
    let n = rate * secs;
    println!(
        "sustained load ({n} bookings at {rate}/s for {secs} s, visitor and facility alternating):"
    );
    let stack = Arc::new(Stack::start_with_pool(DEFAULT_POOL).await);
    let facility_bookings = n.div_ceil(2);
    let apartments = facility_bookings.div_ceil(BENCH_FACILITIES);
    seed_directory(&stack, apartments).await;

    let watcher = watch_grants(
        stack.broker.tap("*.granted.v1").await,
        n,
        Duration::from_secs(20),
    );
    let (starts_at, ends_at) = tomorrow_evening();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (residents, manager) = (seed_residents(&stack).await, stack.manager());
    let started = Instant::now();
    // Read beside the posting, so that the reading does not hold a booking back.
    let early_backlog = {
        let stack = Arc::clone(&stack);
        tokio::spawn(async move {
            tokio::time::sleep_until((started + EARLY_SAMPLE).into()).await;
            let backlog = Backlog::read(&stack).await;
            println!(
                "  backlog at {:.1} s: {backlog}",
                started.elapsed().as_secs_f64()
            );
            backlog
        })
    };
    let mut posts = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let (path, token, body) = if i % 2 == 0 {
            let body = visitor_booking_body(i, &starts_at, &ends_at);
            let resident = residents[(i / 2) % residents.len()].clone();
            ("visitor-bookings", resident, body)
        } else {
            let body = facility_booking_body(i / 2, apartments, &starts_at, &ends_at);
            ("facility-bookings", manager.clone(), body)
        };
        let http = stack.http.clone();
        let url = format!("{}/v1/{path}", stack.api);
        posts.push(tokio::spawn(async move {
            let posted_at = Instant::now();
            let response = post_json(&http, url, &token, &body).await;
            let status = response.status().as_u16();
            let booking: Value = response.json().await.unwrap();
            // booking-api out of database connections for 10 s answers 503: an overload,
            // counted against the run; anything else is a fault of the bench.
            if status == 503 {
                return None;
            }
            assert_eq!(status, 201, "{booking}");
            let id: Uuid = booking["id"].as_str().unwrap().parse().unwrap();
            Some((id, posted_at))
        }));
    }
    let offered_for = started.elapsed();
    let final_backlog = Backlog::read(&stack).await;
    println!(
        "  backlog at {:.0} s (the last booking posted): {final_backlog}",
        offered_for.as_secs_f64()
    );
    let mut posted = Vec::with_capacity(n);
    for post in posts {
        posted.extend(post.await.unwrap());
    }
    let overloaded = n - posted.len();
    let granted = watcher.await.unwrap();
    let mut latencies: Vec<Duration> = posted
        .iter()
        .map(|(id, posted_at)| {
            granted
                .get(id)
                .unwrap_or_else(|| panic!("booking {id} was never granted"))
                .duration_since(*posted_at)
        })
        .collect();
    latencies.sort();
    let last_grant = granted.values().max().copied().unwrap_or(started);
    println!(
        "  offered {:.1}/s for {:.1} s; {overloaded} answered 503; the other {} granted after {:.1} s; granted p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / offered_for.as_secs_f64(),
        offered_for.as_secs_f64(),
        posted.len(),
        last_grant.duration_since(started).as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let early_backlog = early_backlog.await.unwrap();
    let growth = Row {
        what: format!("{rate}/s for {secs} s: backlog end vs 10 s"),
        measured: format!("{} / {}", final_backlog.total(), early_backlog.total()),
        raw: "—".into(),
        ratio: "—".into(),
        target: "end ≤ at 10 s".into(),
        pass: Some(final_backlog.total() <= early_backlog.total()),
    };
    growth.print_now();
    let what = format!("{rate}/s for {secs} s: granted");
    let granted = if overloaded == 0 {
        Row::latency(&what, &latencies, 250)
    } else {
        let row = Row {
            what,
            measured: format!(
                "{overloaded} of {n} answered 503; p99 {:.0} ms",
                ms(percentile(&latencies, 99.0))
            ),
            raw: "—".into(),
            ratio: "—".into(),
            target: "p99 < 250 ms".into(),
            pass: Some(false),
        };
        row.print_now();
        row
    };
    vec![granted, growth]
}

/// What waits in the system at one moment: events ready (not yet taken) in each service's
/// queues, and outbox rows booking-api has not published yet.
struct Backlog {
    queued: Vec<(&'static str, u32)>,
    outbox: i64,
}

impl Backlog {
    async fn read(stack: &Stack) -> Backlog {
        let mut queued = Vec::new();
        for queue in Service::ALL.iter().flat_map(|service| service.consumes()) {
            queued.push((queue.name, stack.broker.queue_depth(queue.name).await));
        }
        let pool = stack.db.pool("booking").await;
        let outbox = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        Backlog { queued, outbox }
    }

    fn total(&self) -> i64 {
        self.outbox + self.queued.iter().map(|(_, n)| i64::from(*n)).sum::<i64>()
    }
}

impl std::fmt::Display for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} waiting (outbox {}", self.total(), self.outbox)?;
        for (queue, n) in &self.queued {
            write!(f, ", {queue} {n}")?;
        }
        write!(f, ")")
    }
}
