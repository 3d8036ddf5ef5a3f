//! A visitor booking becomes an iPassan visitor with a PIN, follows reschedules and
//! cancellations, and converges under duplicates and out-of-order versions (docs/architecture.md, "The version rule" and "Visitor bookings and iPassan").

use std::time::Duration;

use contracts::Event;
use uuid::Uuid;

use crate::support::*;

#[tokio::test]
async fn a_visit_with_access_becomes_a_visitor_with_the_residents_profile_and_a_pin() {
    let mut harness = start().await;
    let id = harness.publish_created(booking(FROM, TO)).await;

    let granted = harness.expect_result("visitor_access.granted.v1").await;
    assert_eq!((granted.booking_id, granted.version), (id, 1));
    let pin = result_of(&granted).pin.clone().expect("the PIN");
    assert!(result_of(&granted).failure.is_none());
    assert_eq!(result_of(&granted).booking, booking(FROM, TO));

    let visitors = harness.visitors_for(id).await;
    assert_eq!(visitors.len(), 1);
    let visitor = &visitors[0];
    assert_eq!(visitor.visitee_id, PERSON);
    assert_eq!(visitor.access_profile_id, PROFILE);
    assert_eq!(
        (visitor.valid_from, visitor.valid_to),
        (local(FROM), local(TO))
    );
    assert_eq!(
        (visitor.first_name.as_str(), visitor.last_name.as_str()),
        ("Bo", "van Tan")
    );
    assert_eq!(visitor.email, "bo@visitors.example");
    assert_eq!(visitor.credential.as_ref().unwrap().pin, pin);
    harness.no_more_results(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn the_code_opens_the_door_inside_the_window_not_before_and_not_after() {
    let mut harness = start().await;
    let (_, pin) = harness.book_granted(booking(FROM, TO)).await;

    assert_eq!(
        harness.door_at("2026-12-01T17:59:59", LOBBY, &pin).await,
        (false, "not_yet_valid".into())
    );
    assert!(harness.door_at("2026-12-01T18:00:00", LOBBY, &pin).await.0);
    assert!(harness.door_at("2026-12-01T21:59:59", LOBBY, &pin).await.0);
    assert_eq!(
        harness.door_at("2026-12-01T22:00:00", LOBBY, &pin).await,
        (false, "expired".into())
    );
    assert_eq!(
        harness.door_at("2026-12-01T19:00:00", GYM, &pin).await,
        (false, "door_not_in_profile".into()),
        "only the resident's profile opens"
    );
}

#[tokio::test]
async fn rescheduling_moves_the_window_and_keeps_the_pin() {
    let mut harness = start().await;
    let (id, pin) = harness.book_granted(booking(FROM, TO)).await;

    let (later_from, later_to) = ("2026-12-02T09:30:00", "2026-12-02T11:00:00");
    harness
        .publish(&rescheduled(id, 2, booking(later_from, later_to)))
        .await;
    let updated = harness.expect_result("visitor_access.updated.v1").await;
    assert_eq!(updated.version, 2);
    assert_eq!(result_of(&updated).pin.as_deref(), Some(pin.as_str()));
    assert_eq!(
        result_of(&updated).booking.window.local_starts_at,
        local(later_from)
    );

    let visitors = harness.visitors_for(id).await;
    assert_eq!(visitors.len(), 1, "the same visitor, moved");
    assert_eq!(
        (visitors[0].valid_from, visitors[0].valid_to),
        (local(later_from), local(later_to))
    );
    assert_eq!(visitors[0].credential.as_ref().unwrap().pin, pin);
    assert!(!harness.door_at("2026-12-01T19:00:00", LOBBY, &pin).await.0);
    assert!(harness.door_at("2026-12-02T10:00:00", LOBBY, &pin).await.0);
    harness.no_more_results(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn cancelling_a_visit_stops_the_pin_opening_the_door() {
    let mut harness = start().await;
    let (id, pin) = harness.book_granted(booking(FROM, TO)).await;
    assert!(harness.door_at("2026-12-01T19:00:00", LOBBY, &pin).await.0);

    harness.publish(&cancelled(id, 2, booking(FROM, TO))).await;
    let revoked = harness.expect_result("visitor_access.revoked.v1").await;
    assert_eq!(revoked.version, 2);
    assert_eq!(result_of(&revoked).pin, None);

    assert_eq!(
        harness.door_at("2026-12-01T19:00:00", LOBBY, &pin).await,
        (false, "unknown_pin".into())
    );
    let visitors = harness.visitors_for(id).await;
    assert_eq!(visitors.len(), 1, "the visitor stays listed");
    assert!(visitors[0].credential.is_none(), "without a credential");
    assert!(harness.no_live_credentials().await);
    harness.no_more_results(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_resident_whose_ipassan_person_is_gone_gets_a_failed_result_with_the_reason() {
    let mut harness = start().await;
    let mut visit = booking(FROM, TO);
    visit.resident.ipassan_person_id = Some("p-deleted".into());
    let id = harness.publish_created(visit).await;

    let failed = harness.expect_result("visitor_access.failed.v1").await;
    assert_eq!(failed.version, 1);
    let failure = result_of(&failed).failure.clone().expect("a reason");
    assert_eq!(failure.code, "visitee_not_found");
    assert!(failure.needs_manager);
    assert!(failure.message.contains("p-deleted"), "{}", failure.message);
    assert_eq!(result_of(&failed).pin, None);
    assert!(harness.visitors_for(id).await.is_empty());
    // An outcome, not a dead letter.
    harness.no_dead_letters(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_resident_without_an_access_profile_gets_a_failed_result_with_the_reason() {
    let mut harness = start().await;
    let mut visit = booking(FROM, TO);
    visit.resident.ipassan_person_id = Some(PERSON_WITHOUT_PROFILE.into());
    let id = harness.publish_created(visit.clone()).await;

    let failed = harness.expect_result("visitor_access.failed.v1").await;
    let failure = result_of(&failed).failure.clone().unwrap();
    assert_eq!(failure.code, "visitee_has_no_access_profile");
    assert!(failure.needs_manager);
    assert!(harness.visitors_for(id).await.is_empty());

    // A reschedule still fails, and says so for its own version: booking-api shows the new
    // version `pending` until it hears.
    harness.publish(&rescheduled(id, 2, visit)).await;
    let failed_again = harness.expect_result("visitor_access.failed.v1").await;
    assert_eq!(failed_again.version, 2);
    assert_eq!(
        result_of(&failed_again)
            .failure
            .as_ref()
            .map(|f| f.code.as_str()),
        Some("visitee_has_no_access_profile")
    );
    harness.no_more_results(Duration::from_secs(1)).await;
    assert_eq!(harness.applied_version(id).await, Some(2));
}

#[tokio::test]
async fn without_provide_access_nothing_is_asked_of_ipassan() {
    let mut harness = start().await;
    let mut visit = booking(FROM, TO);
    visit.provide_access = false;
    let id = harness.publish_created(visit).await;
    until("the booking to be applied", async || {
        harness.applied_version(id).await == Some(1)
    })
    .await;
    assert!(harness.requests().await.is_empty());
    harness.no_more_results(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_makes_one_visitor_and_one_granted_event() {
    let mut harness = start().await;
    let id = Uuid::new_v4();
    let event = created(id, booking(FROM, TO));
    harness.publish(&event).await;
    harness.publish(&event).await;

    harness.expect_result("visitor_access.granted.v1").await;
    harness.until_handled(2).await;
    harness.no_more_results(Duration::from_millis(300)).await;
    assert_eq!(harness.visitors_for(id).await.len(), 1);
    assert_eq!(
        creates(&harness.requests().await).len(),
        1,
        "the duplicate changed nothing in iPassan"
    );
}

#[tokio::test]
async fn a_late_older_version_is_skipped_and_the_newer_truth_stands() {
    let mut harness = start().await;
    let id = Uuid::new_v4();
    harness.publish(&cancelled(id, 2, booking(FROM, TO))).await;
    harness.publish(&created(id, booking(FROM, TO))).await;

    let revoked = harness.expect_result("visitor_access.revoked.v1").await;
    assert_eq!(revoked.version, 2);
    harness.until_handled(2).await;
    harness.no_more_results(Duration::from_millis(300)).await;
    assert!(
        harness.visitors_for(id).await.is_empty(),
        "the late create made nothing"
    );
    let pool = harness.db.pool(ipassan_sync::SCHEMA).await;
    let held: (i64, String) =
        sqlx::query_as("SELECT version, event_type FROM booking_snapshots WHERE booking_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(held, (2, "visitor_booking.cancelled.v1".to_owned()));
}

#[tokio::test]
async fn results_are_published_under_the_bookings_id_and_the_version_acted_on() {
    let mut harness = start().await;
    harness.publish_created(booking(FROM, TO)).await;
    let granted = harness.next_result().await;
    assert!(matches!(granted.event, Event::VisitorAccessGranted(_)));
    // A second, unrelated booking does not disturb the first.
    let other = harness
        .publish_created(booking("2026-12-03T10:00:00", "2026-12-03T12:00:00"))
        .await;
    let second = harness.next_result().await;
    assert_eq!((second.booking_id, second.version), (other, 1));
    assert_ne!(
        result_of(&second).pin,
        result_of(&granted).pin,
        "PINs are unique"
    );
}

#[tokio::test]
async fn two_replicas_racing_on_a_create_and_its_cancel_end_with_no_access() {
    let mut harness = start().await;
    harness.add_replica().await;
    for _ in 0..5 {
        let id = harness.publish_created(booking(FROM, TO)).await;
        harness.publish(&cancelled(id, 2, booking(FROM, TO))).await;
        // Either the create was acted on first (granted v1, then revoked v2) or the cancel
        // overtook it (revoked v2 only); never a grant after the revocation.
        let mut seen = Vec::new();
        loop {
            let result = harness.next_result().await;
            assert_eq!(result.booking_id, id);
            seen.push((result.routing_key(), result.version));
            if result.routing_key() == "visitor_access.revoked.v1" {
                break;
            }
        }
        assert!(
            seen == [("visitor_access.revoked.v1", 2)]
                || seen
                    == [
                        ("visitor_access.granted.v1", 1),
                        ("visitor_access.revoked.v1", 2)
                    ],
            "{seen:?}"
        );
        let visitors = harness.visitors_for(id).await;
        assert!(
            visitors.iter().all(|v| v.credential.is_none()),
            "{visitors:?}"
        );
    }
    harness.no_more_results(Duration::from_secs(1)).await;
    assert!(harness.no_live_credentials().await);
}
