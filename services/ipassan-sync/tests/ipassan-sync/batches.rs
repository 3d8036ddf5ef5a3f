//! A burst of bookings is handled in batches (docs/architecture.md, "Batches"): every booking
//! still gets exactly its outcome, a booking's own failure stays its own, and two versions of a
//! booking in one burst end at the newer one.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use contracts::{ConnectionVersions, Envelope};
use ipassan_sim::model::FaultResponse;
use uuid::Uuid;

use crate::support::*;

/// Holds the first two visitor creates for a while, so the bookings published meanwhile wait
/// in the worker and are gathered into batches.
async fn hold_the_first_creates(harness: &Harness) {
    harness
        .fault(
            "POST",
            VISITOR_PATH,
            FaultResponse {
                delay_ms: Some(2_000),
                ..FaultResponse::default()
            },
            2,
        )
        .await;
}

/// Batches run, and messages handled in them, as the service's `/metrics` shows them.
async fn batch_counts(harness: &Harness) -> (f64, f64) {
    let text = harness.metrics().await;
    let queue = format!("queue=\"{QUEUE}\"");
    (
        metric(&text, "connecx_batches_total", &[&queue]).unwrap_or(0.0),
        metric(&text, "connecx_batched_messages_total", &[&queue]).unwrap_or(0.0),
    )
}

/// The results of the next `count` result events, by booking.
async fn results_by_booking(harness: &mut Harness, count: usize) -> HashMap<Uuid, Vec<Envelope>> {
    let mut by_booking: HashMap<Uuid, Vec<Envelope>> = HashMap::new();
    for _ in 0..count {
        let result = harness.next_result().await;
        by_booking
            .entry(result.booking_id)
            .or_default()
            .push(result);
    }
    by_booking
}

#[tokio::test]
async fn a_burst_of_bookings_is_handled_in_batches_and_each_is_granted_once() {
    let mut harness = start().await;
    hold_the_first_creates(&harness).await;
    let mut ids = HashSet::new();
    for _ in 0..30 {
        ids.insert(harness.publish_created(booking(FROM, TO)).await);
    }

    let results = results_by_booking(&mut harness, 30).await;
    assert_eq!(results.keys().copied().collect::<HashSet<_>>(), ids);
    let mut pins = HashSet::new();
    for (id, results) in &results {
        assert_eq!(results.len(), 1, "one result for {id}");
        assert_eq!(results[0].routing_key(), "visitor_access.granted.v1");
        pins.insert(result_of(&results[0]).pin.clone().expect("a PIN"));
        assert_eq!(
            harness.visitors_for(*id).await.len(),
            1,
            "one visitor for {id}"
        );
    }
    assert_eq!(pins.len(), 30, "every visitor has a PIN of its own");
    harness.no_more_results(Duration::from_millis(500)).await;
    harness.no_dead_letters(Duration::from_millis(100)).await;

    let (batches, messages) = batch_counts(&harness).await;
    assert_eq!(messages, 30.0, "every message went through a batch");
    assert!(
        batches < messages,
        "some batch held several messages: {batches} batches for {messages} messages"
    );
}

#[tokio::test]
async fn a_bookings_own_failure_in_a_batch_is_its_own_and_the_others_are_granted() {
    let mut harness = start().await;
    hold_the_first_creates(&harness).await;
    let mut fine = HashSet::new();
    for _ in 0..4 {
        fine.insert(harness.publish_created(booking(FROM, TO)).await);
    }
    // Made under a version of the building's connection this worker never hears of: its
    // message retries through the tiers, then is given up (a dead letter, and `failed`).
    let mut ahead = booking(FROM, TO);
    ahead.building.connection_versions = ConnectionVersions {
        ipassan: 7,
        salto: 0,
    };
    let stuck = harness.publish_created(ahead).await;
    // iPassan does not know this resident: the booking's outcome is `failed`, with the reason.
    let mut gone = booking(FROM, TO);
    gone.resident.ipassan_person_id = Some("p-deleted".into());
    let refused = harness.publish_created(gone).await;
    for _ in 0..4 {
        fine.insert(harness.publish_created(booking(FROM, TO)).await);
    }

    let results = results_by_booking(&mut harness, 10).await;
    for id in &fine {
        assert_eq!(
            results[id]
                .iter()
                .map(Envelope::routing_key)
                .collect::<Vec<_>>(),
            ["visitor_access.granted.v1"],
            "{id}"
        );
    }
    let failure = |id: &Uuid| {
        let [result] = results[id].as_slice() else {
            panic!("one result for {id}: {:?}", results[id]);
        };
        assert_eq!(result.routing_key(), "visitor_access.failed.v1");
        result_of(result).failure.clone().expect("a reason").code
    };
    assert_eq!(failure(&refused), "visitee_not_found");
    assert_eq!(failure(&stuck), "gave_up");
    let dead = harness
        .dead_letters
        .next_message(Duration::from_secs(15))
        .await
        .expect("the stuck booking's dead letter");
    assert!(
        dead.headers
            .get_str(contracts::headers::ERROR)
            .is_some_and(|error| error.contains(&stuck.to_string())),
        "{:?}",
        dead.headers.get_str(contracts::headers::ERROR)
    );
    assert!(harness.visitors_for(stuck).await.is_empty());
    harness.no_more_results(Duration::from_millis(500)).await;
    let (batches, messages) = batch_counts(&harness).await;
    assert!(
        batches < messages,
        "{batches} batches for {messages} messages"
    );
}

#[tokio::test]
async fn two_versions_of_a_booking_in_one_burst_end_at_the_newer() {
    let mut harness = start().await;
    hold_the_first_creates(&harness).await;
    let mut others = HashSet::new();
    for _ in 0..3 {
        others.insert(harness.publish_created(booking(FROM, TO)).await);
    }
    let id = Uuid::new_v4();
    let (later_from, later_to) = ("2026-12-02T09:30:00", "2026-12-02T11:00:00");
    harness.publish(&created(id, booking(FROM, TO))).await;
    harness
        .publish(&rescheduled(id, 2, booking(later_from, later_to)))
        .await;
    for _ in 0..3 {
        others.insert(harness.publish_created(booking(FROM, TO)).await);
    }

    let mut seen = 0;
    let mut last_for_booking = None;
    until(
        "every other booking granted and the booking at version 2",
        async || {
            if let Some(result) = harness.results.next(Duration::from_millis(100)).await {
                if result.booking_id == id {
                    last_for_booking = Some(result);
                } else {
                    assert!(others.contains(&result.booking_id));
                    assert_eq!(result.routing_key(), "visitor_access.granted.v1");
                    seen += 1;
                }
            }
            seen == 6 && last_for_booking.as_ref().is_some_and(|r| r.version == 2)
        },
    )
    .await;
    let last = last_for_booking.unwrap();
    assert!(
        ["visitor_access.granted.v1", "visitor_access.updated.v1"].contains(&last.routing_key()),
        "{}",
        last.routing_key()
    );
    let visitors = harness.visitors_for(id).await;
    assert_eq!(visitors.len(), 1, "one visitor, at the newer window");
    assert_eq!(
        (visitors[0].valid_from, visitors[0].valid_to),
        (local(later_from), local(later_to))
    );
    assert_eq!(harness.applied_version(id).await, Some(2));
    harness.no_more_results(Duration::from_millis(500)).await;
    harness.no_dead_letters(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_step_waits_for_the_step_holding_one_of_its_bookings_and_for_no_other() {
    let db = testkit::TestDb::create().await;
    let pool = db.pool(ipassan_sync::SCHEMA).await;
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut first = pool.acquire().await.unwrap();
    let held = ipassan_sync::store::lock_bookings(&mut first, &ids[..3])
        .await
        .unwrap();

    // Bookings nobody holds: taken at once.
    let mut other = pool.acquire().await.unwrap();
    let free = tokio::time::timeout(
        Duration::from_secs(5),
        ipassan_sync::store::lock_bookings(&mut other, &ids[3..]),
    )
    .await
    .expect("bookings nobody holds are locked at once")
    .unwrap();
    free.commit().await.unwrap();
    drop(other);

    // One booking of the first step's among others: the step waits until the first one ends.
    let (connected, connected_seen) = tokio::sync::oneshot::channel();
    let (locked, mut locked_seen) = tokio::sync::oneshot::channel();
    let overlapping = vec![ids[4], ids[1]];
    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            let _ = connected.send(());
            let tx = ipassan_sync::store::lock_bookings(&mut conn, &overlapping)
                .await
                .unwrap();
            let _ = locked.send(());
            tx.commit().await.unwrap();
        }
    });
    connected_seen.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        locked_seen.try_recv().is_err(),
        "a booking held by another step was locked again"
    );
    held.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the waiting step goes on once the first one ends")
        .unwrap();
}
