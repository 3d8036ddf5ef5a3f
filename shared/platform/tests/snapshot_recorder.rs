//! The snapshot recorder: the snapshots of the messages in hand written together, each message
//! answered as if its snapshot had been written alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use contracts::{Envelope, Event};
use futures::future::join_all;
use platform::snapshots::{Recorded, SnapshotRecorder};
use sqlx::PgPool;
use testkit::TestDb;
use uuid::Uuid;

async fn snapshot_table(db: &TestDb) -> PgPool {
    let pool = db.pool("public").await;
    // As every worker's migration makes it (platform::snapshots).
    sqlx::query(
        "CREATE TABLE booking_snapshots (
            booking_id uuid PRIMARY KEY, version bigint NOT NULL, event_type text NOT NULL,
            envelope jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

fn version(booking_id: Uuid, version: i64) -> Envelope {
    let mut envelope = common::visitor_booking_created(booking_id);
    envelope.version = version;
    envelope
}

async fn held(pool: &PgPool, booking_id: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT version, (envelope ->> 'version')::bigint FROM booking_snapshots
          WHERE booking_id = $1",
    )
    .bind(booking_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

// The test's runtime has one thread: every record below is queued before the recorder's task
// runs, so they meet in its queue as a busy worker's messages do.
#[tokio::test]
async fn snapshots_in_hand_are_written_together_and_each_answered_as_alone() {
    let db = TestDb::create().await;
    let pool = snapshot_table(&db).await;
    let recorder = SnapshotRecorder::start(pool.clone(), 128);
    let bookings: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
    // Per booking, in this order: version 2, an older 1, a newer 3, and 3 again (a redelivery).
    let envelopes: Vec<(Uuid, Envelope)> = [2, 1, 3, 3]
        .into_iter()
        .flat_map(|v| bookings.iter().map(move |&b| (b, version(b, v))))
        .collect();

    let answers = join_all(envelopes.iter().map(|(_, e)| recorder.record(e))).await;

    let expected = [
        Recorded::Newer,
        Recorded::Older,
        Recorded::Newer,
        Recorded::Same,
    ];
    for (i, ((booking_id, envelope), answer)) in envelopes.iter().zip(answers).enumerate() {
        assert_eq!(
            answer.unwrap(),
            expected[i / bookings.len()],
            "booking {booking_id} version {}",
            envelope.version
        );
    }
    for booking_id in &bookings {
        assert_eq!(held(&pool, *booking_id).await, (3, 3), "the newest is held");
    }
    assert_eq!(
        recorder.statements(),
        4,
        "120 snapshots of 30 bookings in four statements, one per version in hand"
    );
}

#[tokio::test]
async fn a_snapshot_the_database_refuses_fails_alone() {
    let db = TestDb::create().await;
    let pool = snapshot_table(&db).await;
    let recorder = SnapshotRecorder::start(pool.clone(), 64);
    let fine: Vec<Envelope> = (0..9).map(|_| version(Uuid::new_v4(), 1)).collect();
    // PostgreSQL's jsonb has no NUL character: the batch's statement fails on this one.
    let mut refused = version(Uuid::new_v4(), 1);
    let Event::VisitorBookingCreated(booking) = &mut refused.event else {
        unreachable!()
    };
    booking.visitor.name = "Nul\u{0}".into();

    let mut all: Vec<&Envelope> = fine.iter().collect();
    all.insert(4, &refused);
    let answers = join_all(all.iter().map(|e| recorder.record(e))).await;

    for (envelope, answer) in all.iter().zip(&answers) {
        if envelope.booking_id == refused.booking_id {
            let error = answer.as_ref().unwrap_err().to_string();
            assert!(error.contains("unsupported Unicode escape"), "{error}");
        } else {
            assert_eq!(*answer.as_ref().unwrap(), Recorded::Newer);
        }
    }
    for envelope in &fine {
        assert_eq!(held(&pool, envelope.booking_id).await, (1, 1));
    }
    assert_eq!(
        recorder.statements(),
        1,
        "one batch, written row by row once it failed"
    );
}
