//! The erasing job: one round at a time across replicas, on the clock it is given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::clock::ManualClock;
use platform::retention::{Cutoffs, Erased, Eraser, RetentionSettings, erase_once};
use sqlx::PgConnection;
use testkit::TestDb;

/// Counts its rounds, takes its time, and remembers the cutoffs it was given.
#[derive(Clone, Default)]
struct Slow {
    rounds: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Cutoffs>>>,
}

impl Eraser for Slow {
    async fn erase(&self, _tx: &mut PgConnection, cutoffs: Cutoffs) -> Result<Erased, sqlx::Error> {
        self.rounds.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(cutoffs);
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Erased {
            pins: 1,
            personal: 0,
        })
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn two_replicas_erasing_at_once_run_one_round_on_their_clock() {
    let db = TestDb::create().await;
    let (one, two) = (db.pool("public").await, db.pool("public").await);
    let clock = ManualClock::new(at("2026-12-06T10:00:00Z"));
    let eraser = Slow::default();
    let settings = RetentionSettings::default();
    let (a, b) = tokio::join!(
        erase_once(&one, &clock, &settings, "svc", &eraser),
        erase_once(&two, &clock, &settings, "svc", &eraser),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.is_some(), b.is_some()]
            .iter()
            .filter(|ran| **ran)
            .count(),
        1,
        "one ran, the other found the round taken: {a:?} {b:?}"
    );
    assert_eq!(eraser.rounds.load(Ordering::SeqCst), 1);
    assert_eq!(
        eraser.seen.lock().unwrap()[0],
        Cutoffs {
            pins_before: at("2026-11-29T10:00:00Z"),
            personal_before: at("2026-09-07T10:00:00Z"),
        },
        "counted back from the clock"
    );
    // Another service's round is its own.
    let other = erase_once(&two, &clock, &settings, "other", &eraser)
        .await
        .unwrap();
    assert!(other.is_some());
    // The next round, a week later by the clock.
    clock.set(at("2026-12-13T10:00:00Z"));
    erase_once(&one, &clock, &settings, "svc", &eraser)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        eraser.seen.lock().unwrap()[2].pins_before,
        at("2026-12-06T10:00:00Z")
    );
}
