//! A burst of facility bookings is handled in batches of their server's bookings
//! (docs/architecture.md, "Batches"): every booking still gets exactly its outcome, one that
//! Salto refuses fails alone, and bookings of one slot in one batch see each other as they
//! would have one after the other.

use std::collections::{HashMap, HashSet};

use contracts::Envelope;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

/// Holds the first two group writes for a while (below the client's 1 s timeout), so the
/// bookings published meanwhile wait in the worker and are gathered into batches.
async fn hold_the_first_writes(h: &Harness) {
    h.fault("SaltoDBGroup.Update", json!({"delay_ms": 700}), 2)
        .await;
}

/// Access levels `BATCH-0`.. in Salto, one per booking of a burst.
async fn seed_access_levels(h: &Harness, count: usize) -> Vec<String> {
    let levels: Vec<String> = (0..count).map(|i| format!("BATCH-{i}")).collect();
    let groups: Vec<_> = levels
        .iter()
        .map(|level| json!({"ext_id": level, "name": format!("Apartment {level}")}))
        .collect();
    h.control("seed", json!({"groups": groups})).await;
    levels
}

/// A booking of the games room on 1 December for access level `level`.
fn for_level(level: &str) -> Booking {
    let mut booking = Booking::games("2026-12-01");
    booking.access_level = level.into();
    booking
}

/// Batches run, and messages handled in them, as the first replica's `/metrics` shows them.
async fn batch_counts(h: &Harness) -> (f64, f64) {
    (
        h.counter("connecx_batches_total").await,
        h.counter("connecx_batched_messages_total").await,
    )
}

#[tokio::test]
async fn a_burst_of_bookings_is_handled_in_batches_and_each_is_granted_once() {
    let mut h = Harness::start().await;
    let levels = seed_access_levels(&h, 24).await;
    hold_the_first_writes(&h).await;
    let mut ids = HashSet::new();
    for level in &levels {
        let booking = for_level(level);
        ids.insert(booking.id);
        h.publish(&booking.created()).await;
    }

    let granted = h.granted(levels.len()).await;
    assert_eq!(granted.iter().copied().collect::<HashSet<_>>(), ids);
    h.no_more_results().await;
    for level in &levels {
        let permissions = h.permissions(level).await;
        assert_eq!(permissions.len(), 1, "one permission for {level}");
        assert!(h.opens(GAMES, level, "2026-12-01T19:00:00").await);
    }
    let (batches, messages) = batch_counts(&h).await;
    assert_eq!(messages, 24.0, "every message went through a batch");
    assert!(
        batches < messages,
        "messages were gathered: {batches} batches for {messages} messages"
    );
    // Each access level was read and written once, whatever batch it was in.
    assert_eq!(h.requests_named("SaltoDBGroup.Update").await, 24);
}

#[tokio::test]
async fn a_booking_salto_refuses_fails_alone_and_the_rest_of_its_batch_is_granted() {
    let mut h = Harness::start().await;
    let levels = seed_access_levels(&h, 10).await;
    hold_the_first_writes(&h).await;
    let mut ids = HashSet::new();
    for (i, level) in levels.iter().enumerate() {
        let booking = for_level(level);
        ids.insert(booking.id);
        h.publish(&booking.created()).await;
        if i == 4 {
            // Among them, an access level Salto does not know (SHIP code 11).
            let unknown = for_level("999-00");
            h.publish(&unknown.created()).await;
        }
    }

    let mut outcomes: HashMap<Uuid, Vec<Envelope>> = HashMap::new();
    for _ in 0..11 {
        let result = h.next_result(30).await;
        outcomes.entry(result.booking_id).or_default().push(result);
    }
    h.no_more_results().await;
    let mut failed = Vec::new();
    for (id, results) in &outcomes {
        assert_eq!(results.len(), 1, "one result for {id}");
        if ids.contains(id) {
            assert_eq!(results[0].routing_key(), "facility_access.granted.v1");
        } else {
            failed.push(&results[0]);
        }
    }
    assert_eq!(failed.len(), 1, "only the unknown access level failed");
    assert_eq!(failed[0].routing_key(), "facility_access.failed.v1");
    let failure = result_of(failed[0]).failure.clone().unwrap();
    assert_eq!(failure.code, "salto_not_found");
    assert!(failure.message.contains("999-00"), "{}", failure.message);
    for level in &levels {
        assert_eq!(h.permissions(level).await.len(), 1, "{level} granted");
    }
}

#[tokio::test]
async fn a_slot_given_up_and_asked_for_in_one_batch_goes_to_the_new_booking() {
    let mut h = Harness::start().await;
    let levels = seed_access_levels(&h, 2).await;
    let mut leaving = Booking::games("2026-12-01");
    assert_eq!(
        h.publish_for_result(&leaving.created()).await.routing_key(),
        "facility_access.granted.v1"
    );

    // Two bookings of other access levels take both running batches, their writes held; the
    // holder's cancellation and a new booking of the same slot gather behind them.
    hold_the_first_writes(&h).await;
    for level in &levels {
        h.publish(&for_level(level).created()).await;
    }
    let taking = Booking::games("2026-12-01").hours("19:00:00", "21:00:00");
    h.publish(&leaving.cancelled()).await;
    h.publish(&taking.created()).await;

    let results = h.results_until_quiet(DELIVERED * 4).await;
    let of = |id: Uuid| -> Vec<&'static str> {
        results
            .iter()
            .filter(|r| r.booking_id == id)
            .map(|r| r.routing_key())
            .collect()
    };
    assert_eq!(of(leaving.id), vec!["facility_access.revoked.v1"]);
    // Gathered after the cancellation, the new booking is granted at once; before it, it is
    // deferred, then granted when the cancellation frees the slot. Never failed: the entry
    // Salto still shows for the slot is the one the batch itself gave up.
    let taken = of(taking.id);
    assert_eq!(
        taken.last(),
        Some(&"facility_access.granted.v1"),
        "{taken:?}"
    );
    assert!(!taken.contains(&"facility_access.failed.v1"), "{taken:?}");
    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 1, "{permissions:?}");
    assert!(h.opens(GAMES, APARTMENT, "2026-12-01T20:00:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T18:30:00").await);
}

#[tokio::test]
async fn a_create_and_its_cancellation_in_one_burst_leave_no_permission() {
    let mut h = Harness::start().await;
    let levels = seed_access_levels(&h, 2).await;
    hold_the_first_writes(&h).await;
    for level in &levels {
        h.publish(&for_level(level).created()).await;
    }
    let mut booking = Booking::games("2026-12-01");
    h.publish(&booking.created()).await;
    h.publish(&booking.cancelled()).await;

    let results = h.results_until_quiet(DELIVERED * 4).await;
    let last = results
        .iter()
        .filter(|r| r.booking_id == booking.id)
        .max_by_key(|r| r.version)
        .expect("a result for the booking");
    assert_eq!(last.version, 2);
    assert_eq!(last.routing_key(), "facility_access.revoked.v1");
    assert!(h.permissions(APARTMENT).await.is_empty());
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
}
