//! End to end at a steady rate (`BENCH_ONLY=e2e`): visitor bookings of 200 residents POSTed to the
//! whole system (every service with its default pool of 10 database connections), POST → `granted` on the
//! broker (target p99 < 50 ms) and POST → both mails accepted (target p99 < 100 ms).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tests::{Stack, tomorrow_evening};
use uuid::Uuid;

use crate::common::{
    env_number, ms, percentile, post_json, seed_residents, visitor_booking_body, watch_grants,
};
use crate::setup::DEFAULT_POOL;
use crate::table::Row;

pub async fn end_to_end(n: usize, rate: usize) -> Vec<Row> {
    let pool = env_number("BENCH_E2E_POOL", DEFAULT_POOL as usize) as u32;
    println!(
        "end to end ({n} visitor bookings at {rate}/s, POST → granted → both mails; {pool} database connections a service):"
    );
    let stack = Stack::start_with_pool(pool).await;
    let granted_watch = watch_grants(
        stack.broker.tap("visitor_access.granted.v1").await,
        n,
        Duration::from_secs(60),
    );
    let (starts_at, ends_at) = tomorrow_evening();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let tokens = seed_residents(&stack).await;
    let started = Instant::now();
    let mut posts = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let http = stack.http.clone();
        let url = format!("{}/v1/visitor-bookings", stack.api);
        let token = tokens[i % tokens.len()].clone();
        let body = visitor_booking_body(i, &starts_at, &ends_at);
        posts.push(tokio::spawn(async move {
            let posted_at = Instant::now();
            let posted_wall = Utc::now();
            let response = post_json(&http, url, &token, &body).await;
            assert_eq!(response.status().as_u16(), 201);
            let booking: Value = response.json().await.unwrap();
            let id: Uuid = booking["id"].as_str().unwrap().parse().unwrap();
            (id, posted_at, posted_wall, posted_at.elapsed())
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
        let Some(to) = mail.recipients.first() else {
            continue;
        };
        if to.ends_with("@residents.example") {
            if let Some(id) = booking_of(&mail.text_body) {
                resident_mail.insert(id, mail.received_at);
            }
        } else {
            visitor_mail.insert(to.clone(), mail.received_at);
        }
    }
    let mut mailed = Vec::with_capacity(n);
    let mut to_granted = Vec::with_capacity(n);
    let mut answered: Vec<Duration> = posted.iter().map(|p| p.3).collect();
    answered.sort();
    println!(
        "  POST answered: p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&answered, 50.0)),
        ms(percentile(&answered, 99.0))
    );
    for (i, (id, posted_at, posted_wall, _)) in posted.iter().enumerate() {
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
    assert_eq!(to_granted.len(), n, "every booking was granted");
    println!(
        "  granted (on the broker): p50 {:.1} ms, p99 {:.1} ms; both mails: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&to_granted, 50.0)),
        ms(percentile(&to_granted, 99.0)),
        ms(percentile(&mailed, 50.0)),
        ms(percentile(&mailed, 99.0)),
        ms(mailed.last().copied().unwrap_or_default())
    );
    vec![
        Row::latency(&format!("end to end at {rate}/s: granted"), &to_granted, 50),
        Row::latency(&format!("end to end at {rate}/s: both mails"), &mailed, 100),
    ]
}

/// The booking a resident's mail is about (its `Booking: <id>` line).
fn booking_of(text: &str) -> Option<Uuid> {
    let rest = &text[text.find("Booking: ")? + "Booking: ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}
