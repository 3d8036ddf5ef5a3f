//! Salto misbehaving, messages racing, replicas competing: nothing lost, nothing granted twice.
//! Where a race needs one message to be handled at a given point of another's, the test waits
//! for that point in the simulator's log or state, never for a fixed time.

use std::time::Duration;

use contracts::Envelope;
use serde_json::json;

use crate::support::{APARTMENT, Booking, GAMES, Harness, result_of, until};

/// How long nothing more must come after the result a test waits for.
const QUIET: Duration = Duration::from_secs(3);

/// The results, `(routing key, version)`, until one for `version` has come (each within 15 s),
/// and then those that follow until nothing more comes for [`QUIET`].
async fn results_through_version(h: &mut Harness, version: i64) -> Vec<(&'static str, i64)> {
    let mut seen = Vec::new();
    while !seen.iter().any(|(_, v)| *v == version) {
        let result = h.next_result(15).await;
        seen.push((result.routing_key(), result.version));
    }
    let more = h.results_until_quiet(QUIET).await;
    seen.extend(more.iter().map(|e| (e.routing_key(), e.version)));
    seen
}

async fn granted_once_despite(respond: serde_json::Value, times: u32) {
    let mut h = Harness::start().await;
    h.fault("SaltoDBGroup.Update", respond, times).await;
    let booking = Booking::games("2026-12-01");
    h.publish(&booking.created()).await;
    let kinds = results_through_version(&mut h, 1).await;
    assert_eq!(kinds, vec![("facility_access.granted.v1", 1)]);
    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 1, "{permissions:?}");
    assert!(h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
}

#[tokio::test]
async fn salto_busy_then_fine_grants_once() {
    granted_once_despite(json!({"code": 1, "message": "server busy"}), 2).await;
}

#[tokio::test]
async fn salto_unavailable_then_fine_grants_once() {
    granted_once_despite(json!({"http_status": 503}), 2).await;
}

#[tokio::test]
async fn salto_too_slow_then_fine_grants_once() {
    // Longer than the client's 1 s timeout; the slow write still lands in Salto afterwards.
    granted_once_despite(json!({"delay_ms": 1500}), 1).await;
}

#[tokio::test]
async fn a_cancel_arriving_while_the_create_is_still_retrying_leaves_no_permission() {
    let mut h = Harness::start().await;
    h.fault("SaltoDBGroup.Update", json!({"code": 4}), 3).await;
    let mut booking = Booking::games("2026-12-01");
    h.publish(&booking.created()).await;
    // The create fails at least once before the cancellation comes.
    until("Salto to refuse the create's write", async || {
        h.refusals_of("SaltoDBGroup.Update").await >= 1
    })
    .await;
    h.publish(&booking.cancelled()).await;
    let kinds = results_through_version(&mut h, 2).await;
    assert_eq!(kinds, vec![("facility_access.revoked.v1", 2)]);
    assert!(h.permissions(APARTMENT).await.is_empty());
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
}

#[tokio::test]
async fn two_replicas_granting_zones_of_one_apartment_at_once_lose_no_permission() {
    let mut h = Harness::start_replicas(2).await;
    let zones: Vec<String> = (1..=4).map(|n| format!("ZONE-{n}")).collect();
    h.control(
        "seed",
        json!({"zones": zones.iter().map(|z| json!({"ext_id": z, "name": z})).collect::<Vec<_>>()}),
    )
    .await;
    // Another apartment's booking first, so the timetable for these hours exists and the
    // bookings below race on nothing but the apartment's permission list.
    let mut warm_up = Booking::games("2026-12-01");
    warm_up.access_level = "502-57".into();
    h.publish(&warm_up.created()).await;
    assert_eq!(h.next_result(15).await.booking_id, warm_up.id);

    // A slow write widens the read-modify-write window in which an unserialized writer loses
    // another's change.
    h.fault("SaltoDBGroup.Update", json!({"delay_ms": 300}), 100)
        .await;
    let bookings: Vec<Booking> = zones
        .iter()
        .map(|z| Booking::games("2026-12-01").zone(z))
        .collect();
    let created: Vec<Envelope> = bookings.iter().map(Booking::created).collect();
    h.broker.publish_events(&created).await;

    h.granted(bookings.len()).await;
    let mut held: Vec<String> = h
        .permissions(APARTMENT)
        .await
        .iter()
        .map(|p| p["zone"].as_str().unwrap().to_owned())
        .collect();
    held.sort();
    assert_eq!(held, zones);
    for zone in &zones {
        assert!(
            h.opens(zone, APARTMENT, "2026-12-01T19:00:00").await,
            "{zone}"
        );
    }
}

#[tokio::test]
async fn a_cancel_handled_while_its_own_grant_is_being_written_leaves_no_permission() {
    // The grant's Salto write is slow (within the client's timeout), so the grant is still
    // uncommitted when the cancellation is handled beside it (found by the chaos soak: the
    // cancellation saw nothing to release, and the grant then committed a permission for a
    // cancelled booking that also kept every later booking of the slot waiting).
    let mut h = Harness::start().await;
    h.fault("SaltoDBGroup.Update", json!({"delay_ms": 700}), 1)
        .await;
    let mut booking = Booking::games("2026-12-01");
    h.publish(&booking.created()).await;
    // The slow write has reached Salto when its fault is used up; the cancellation comes while
    // Salto is still answering it.
    until("the grant's write to reach Salto", async || {
        h.faults_pending().await == 0
    })
    .await;
    h.publish(&booking.cancelled()).await;
    let kinds = results_through_version(&mut h, 2).await;
    let last = kinds.iter().max_by_key(|(_, version)| *version);
    assert_eq!(last, Some(&("facility_access.revoked.v1", 2)), "{kinds:?}");
    assert!(
        h.permissions(APARTMENT).await.is_empty(),
        "Salto still holds the cancelled booking's permission"
    );
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);

    // The slot is free for the apartment's next booking.
    let next = Booking::games("2026-12-02");
    h.publish(&next.created()).await;
    let granted = h.next_result(10).await;
    assert_eq!(
        (granted.routing_key(), granted.booking_id),
        ("facility_access.granted.v1", next.id)
    );
}

#[tokio::test]
async fn an_entry_written_by_a_transaction_that_never_committed_is_replaced_not_taken_for_a_hand_made_one()
 {
    // The booking's reschedule must replace the entry its uncommitted grant left, not fail as
    // `salto_permission_unknown` and leave it in Salto.
    let mut h = Harness::start().await;
    let mut booking = Booking::games("2026-12-01");
    let created = booking.created();
    let rescheduled = booking.rescheduled("2026-12-03");
    let kinds = grant_left_uncommitted_then(&mut h, &created, &rescheduled).await;
    assert_eq!(kinds.last(), Some(&("facility_access.granted.v1", 2)));
    assert!(
        !kinds
            .iter()
            .any(|(kind, _)| *kind == "facility_access.failed.v1"),
        "{kinds:?}"
    );
    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 1, "{permissions:?}");
    assert!(h.opens(GAMES, APARTMENT, "2026-12-03T19:00:00").await);
    assert!(!h.opens(GAMES, APARTMENT, "2026-12-01T19:00:00").await);
}

#[tokio::test]
async fn a_cancellation_removes_an_entry_its_uncommitted_grant_left_in_salto() {
    let mut h = Harness::start().await;
    let mut booking = Booking::games("2026-12-01");
    let created = booking.created();
    let cancelled = booking.cancelled();
    let kinds = grant_left_uncommitted_then(&mut h, &created, &cancelled).await;
    assert_eq!(kinds.last(), Some(&("facility_access.revoked.v1", 2)));
    assert!(
        h.permissions(APARTMENT).await.is_empty(),
        "Salto keeps the cancelled booking's permission"
    );
}

#[tokio::test]
async fn more_transactions_at_once_than_database_connections_all_finish() {
    // 5 connections (the harness's pool), 16 messages at once: every ledger transaction holds a
    // connection while it writes Salto and notes that write on the side; none may wait for
    // another's.
    let mut h = Harness::start().await;
    let levels: Vec<String> = (1..=20).map(|n| format!("L-{n}")).collect();
    h.control(
        "seed",
        json!({"groups": levels.iter().map(|l| json!({"ext_id": l, "name": l})).collect::<Vec<_>>()}),
    )
    .await;
    h.fault("SaltoDBGroup.Update", json!({"delay_ms": 200}), 100)
        .await;
    let bookings: Vec<Booking> = levels
        .iter()
        .map(|level| {
            let mut booking = Booking::games("2026-12-01");
            booking.access_level = level.clone();
            booking
        })
        .collect();
    let created: Vec<Envelope> = bookings.iter().map(Booking::created).collect();
    h.broker.publish_events(&created).await;

    let started = std::time::Instant::now();
    h.granted(bookings.len()).await;
    // Waiting for connections would show as the pool's 10 s acquire timeout.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

/// Publishes `created` while nothing is bound to `facility_access.#`: its transaction writes
/// Salto, then cannot publish its result and rolls back, again and again, so Salto shows the
/// grant and the ledger does not (the chaos soak found this after a broker outage). Once Salto
/// shows it, publishes `next` (the booking's next version) and binds the results again after it
/// is recorded: the results then published, `(routing key, version)`.
async fn grant_left_uncommitted_then(
    h: &mut Harness,
    created: &Envelope,
    next: &Envelope,
) -> Vec<(&'static str, i64)> {
    h.tap = h.broker.tap("nothing.bound.here").await;
    h.publish(created).await;
    until("the grant's entry in Salto", async || {
        !h.permissions(APARTMENT).await.is_empty()
    })
    .await;
    h.publish(next).await;
    h.snapshot_recorded(next.booking_id, next.version).await;
    h.tap = h.broker.tap("facility_access.#").await;
    results_through_version(h, next.version).await
}

#[tokio::test]
async fn a_stored_snapshot_that_no_longer_decodes_is_a_dead_letter_not_a_silent_ack() {
    let mut h = Harness::start().await;
    let mut dead = h.dead_letters().await;
    let booking = Booking::games("2026-12-01");
    h.publish_for_result(&booking.created()).await;
    // What an older release might have stored.
    let pool = h.db.pool(salto_sync::SCHEMA).await;
    sqlx::query(
        "UPDATE booking_snapshots SET envelope = '{\"shape\": \"old\"}' WHERE booking_id = $1",
    )
    .bind(booking.id)
    .execute(&pool)
    .await
    .unwrap();
    h.publish(&booking.created()).await;
    let letter = dead
        .next_message(Duration::from_secs(15))
        .await
        .expect("a dead letter");
    use contracts::headers;
    assert_eq!(
        letter.headers.get_str(headers::ERROR_KIND),
        Some("permanent")
    );
    let error = letter.headers.get_str(headers::ERROR).unwrap();
    assert!(error.contains("no longer decodes"), "{error}");
}

#[tokio::test]
async fn a_booking_given_up_ends_failed_not_pending() {
    let mut h = Harness::start().await;
    let mut dead = h.dead_letters().await;
    // An answer no retry can change, and that no person can fix by setting an ID.
    h.fault("SaltoDBGroup.Update", json!({"code": 12}), 1000)
        .await;
    let booking = Booking::games("2026-12-01");
    h.publish(&booking.created()).await;
    dead.next_message(Duration::from_secs(15))
        .await
        .expect("a dead letter");
    let failed = h.next_result(15).await;
    assert_eq!(failed.routing_key(), "facility_access.failed.v1");
    assert_eq!((failed.booking_id, failed.version), (booking.id, 1));
    let failure = result_of(&failed).failure.clone().expect("a reason");
    assert_eq!(failure.code, "gave_up");
}
