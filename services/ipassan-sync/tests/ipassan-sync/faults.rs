//! iPassan misbehaving: errors are retried, dead-lettered or (a grant refused for good) the
//! booking's `failed` outcome, as the contract's table says, and
//! the assertion is always the same — nothing lost, nothing granted twice, every failure alerted.

use std::time::{Duration, Instant};

use contracts::{Envelope, headers};
use ipassan_sim::model::FaultResponse;
use uuid::Uuid;

use crate::support::*;

/// The visitor creations iPassan answered: status, and whether a fault answered.
async fn creates_answered(harness: &Harness) -> Vec<(u16, bool)> {
    creates(&harness.requests().await)
        .iter()
        .map(|r| (r.status, r.fault))
        .collect()
}

/// The next dead letter (panics after 15 s).
async fn next_dead_letter(harness: &mut Harness) -> testkit::Tapped {
    harness
        .dead_letters
        .next_message(Duration::from_secs(15))
        .await
        .expect("a dead letter")
}

#[tokio::test]
async fn a_503_is_retried_and_ends_in_one_visitor_and_one_granted_event() {
    let mut harness = start().await;
    harness.fault("POST", VISITOR_PATH, status(503), 2).await;
    let id = harness.publish_created(booking(FROM, TO)).await;

    harness.expect_result("visitor_access.granted.v1").await;
    harness.no_more_results(Duration::from_secs(1)).await;
    assert_eq!(harness.visitors_for(id).await.len(), 1);
    assert_eq!(
        creates_answered(&harness).await,
        [(503, true), (503, true), (201, false)]
    );
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_before_trying_again() {
    let mut harness = start().await;
    let rate_limited = FaultResponse {
        status: Some(429),
        retry_after: Some(1),
        ..Default::default()
    };
    harness.fault("POST", VISITOR_PATH, rate_limited, 1).await;
    let (id, _) = harness.book_granted(booking(FROM, TO)).await;

    let requests = harness.requests().await;
    let posts = creates(&requests);
    assert_eq!(posts.len(), 2);
    assert_eq!((posts[0].status, posts[1].status), (429, 201));
    let waited = posts[1].at - posts[0].at;
    assert!(
        waited >= chrono::Duration::milliseconds(1000),
        "Retry-After: 1 was honoured (waited {waited})"
    );
    assert_eq!(harness.visitors_for(id).await.len(), 1);
}

#[tokio::test]
async fn a_long_retry_after_is_left_to_the_retry_tiers() {
    let mut harness = start_with_tiers("300ms,300ms").await;
    let rate_limited = FaultResponse {
        status: Some(429),
        retry_after: Some(60),
        ..Default::default()
    };
    harness.fault("POST", VISITOR_PATH, rate_limited, 1).await;
    let started = Instant::now();
    harness.book_granted(booking(FROM, TO)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the message was not held for a minute"
    );
    assert_eq!(
        creates_answered(&harness).await,
        [(429, true), (201, false)]
    );
}

#[tokio::test]
async fn a_call_that_times_out_is_retried_without_making_a_second_visitor() {
    let mut harness = start_with(Options {
        timeout_secs: 1,
        ..Options::default()
    })
    .await;
    // The simulator is slow, not broken: the visitor is made, but after the client gave up.
    let slow = FaultResponse {
        delay_ms: Some(1500),
        ..Default::default()
    };
    harness.fault("POST", VISITOR_PATH, slow, 1).await;
    let (id, _) = harness.book_granted(booking(FROM, TO)).await;
    harness.no_more_results(Duration::from_millis(500)).await;
    assert_eq!(harness.visitors_for(id).await.len(), 1);
}

#[tokio::test]
async fn a_token_about_to_expire_is_renewed_and_the_bookings_still_go_through() {
    let mut harness = start().await;
    harness.control.set_token_lifetime(1).await.unwrap();
    let (id, _) = harness.book_granted(booking(FROM, TO)).await;

    // The client renews a token a fifth of its life before iPassan would refuse it: once
    // iPassan counts the 1-second token as expired, the client has long stopped using it.
    until(
        "iPassan to count every token it issued as expired",
        async || {
            let now = std::time::Instant::now();
            let world = harness.sim.state.world();
            !world.tokens.is_empty() && world.tokens.values().all(|t| t.expires_at <= now)
        },
    )
    .await;
    harness
        .publish(&rescheduled(id, 2, booking("2026-12-01T19:00:00", TO)))
        .await;
    harness.expect_result("visitor_access.updated.v1").await;

    let requests = harness.requests().await;
    let tokens = requests
        .iter()
        .filter(|r| r.path == "/api/v1/token")
        .count();
    assert_eq!(tokens, 2, "the token was renewed once");
    assert!(
        requests.iter().all(|r| r.status != 401),
        "renewed before iPassan had to refuse it"
    );
    harness.no_dead_letters(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_token_refused_mid_run_is_renewed_once_and_the_call_retried() {
    let mut harness = start().await;
    let (id, _) = harness.book_granted(booking(FROM, TO)).await;
    harness.control.expire_tokens().await.unwrap();

    harness.publish(&cancelled(id, 2, booking(FROM, TO))).await;
    harness.expect_result("visitor_access.revoked.v1").await;
    let statuses: Vec<(String, u16)> = harness
        .requests()
        .await
        .iter()
        .map(|r| (r.path.clone(), r.status))
        .collect();
    let refused = statuses
        .iter()
        .position(|(_, status)| *status == 401)
        .expect("the expired token was refused");
    assert_eq!(
        statuses[refused + 1],
        ("/api/v1/token".to_owned(), 200),
        "then a new token was fetched: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|(_, s)| *s == 401).count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_site_not_granted_to_connecx_fails_the_visit_with_the_reason_for_the_manager() {
    let mut harness = start().await;
    let mut visit = booking(FROM, TO);
    visit.building.ipassan_site = Some(FOREIGN_SITE.into());
    harness.publish_created(visit).await;

    let failed = harness.expect_result("visitor_access.failed.v1").await;
    let failure = result_of(&failed).failure.clone().expect("a reason");
    assert_eq!(failure.code, "ipassan_refused");
    assert!(failure.needs_manager, "the manager is told");
    assert!(
        failure.message.contains("403") && failure.message.contains(FOREIGN_SITE),
        "{}",
        failure.message
    );
    // An outcome, not a dead letter.
    harness.no_dead_letters(Duration::from_millis(500)).await;
    let refusals = harness
        .requests()
        .await
        .into_iter()
        .filter(|r| r.status == 403)
        .count();
    assert_eq!(refusals, 1, "not retried");
}

#[tokio::test]
async fn a_request_ipassan_refuses_as_malformed_fails_the_visit_and_is_not_retried() {
    let mut harness = start().await;
    harness.fault("POST", VISITOR_PATH, status(400), 1).await;
    let id = harness.publish_created(booking(FROM, TO)).await;

    let failed = harness.expect_result("visitor_access.failed.v1").await;
    let failure = result_of(&failed).failure.clone().expect("a reason");
    assert_eq!(failure.code, "ipassan_refused");
    assert!(failure.message.contains("400"), "{}", failure.message);
    assert_eq!(result_of(&failed).pin, None);
    harness.no_more_results(Duration::from_millis(500)).await;
    assert_eq!(creates_answered(&harness).await, [(400, true)]);
    assert!(harness.visitors_for(id).await.is_empty());
}

#[tokio::test]
async fn ipassan_down_longer_than_every_retry_tier_ends_in_a_dead_letter_and_a_failed_visit() {
    let mut harness = start_with_tiers("100ms,100ms").await;
    for method in ["GET", "POST"] {
        harness
            .fault(method, "/api/v1/access", status(503), 1000)
            .await;
    }
    let id = harness.publish_created(booking(FROM, TO)).await;

    let dead = next_dead_letter(&mut harness).await;
    assert_eq!(
        dead.headers.get_str(headers::ERROR_KIND),
        Some("transient_exhausted")
    );
    assert_eq!(dead.headers.get_i64(headers::RETRY_COUNT), Some(2));
    let error = dead.headers.get_str(headers::ERROR).unwrap();
    assert!(
        error.contains(&id.to_string()) && error.contains("503"),
        "{error}"
    );
    assert_eq!(Envelope::from_json(&dead.body).unwrap().booking_id, id);
    // The booking is not left pending: its access failed, for the resident to see.
    let failed = harness.expect_result("visitor_access.failed.v1").await;
    assert_eq!((failed.booking_id, failed.version), (id, 1));
    let failure = result_of(&failed).failure.clone().expect("a reason");
    assert_eq!(failure.code, "gave_up");
    assert!(
        !failure.needs_manager,
        "the managers have the dead letter's alert: one mail, not two"
    );
    harness.no_more_results(Duration::from_millis(300)).await;
    assert!(harness.visitors_for(id).await.is_empty());
}

#[tokio::test]
async fn a_cancel_arriving_while_the_create_is_still_failing_leaves_no_credential_and_no_grant() {
    let mut harness = start_with_tiers("1s,1s,1s").await;
    // Creating fails for now; looking up and revoking work.
    harness.fault("POST", VISITOR_PATH, status(503), 1000).await;
    let id = harness.publish_created(booking(FROM, TO)).await;
    until("the create to be tried", async || {
        !creates(&harness.requests().await).is_empty()
    })
    .await;

    harness.publish(&cancelled(id, 2, booking(FROM, TO))).await;
    let revoked = harness.expect_result("visitor_access.revoked.v1").await;
    assert_eq!(revoked.version, 2);
    // iPassan recovers; the create's retry then arrives and is skipped as older: the cancel and
    // the create's retry are the two messages handled.
    harness.control.clear_faults().await.unwrap();
    harness.until_handled(2).await;
    harness.no_more_results(Duration::from_millis(300)).await;
    assert!(
        harness.visitors_for(id).await.is_empty(),
        "no visitor, no credential"
    );
    assert!(harness.no_live_credentials().await);
    harness.no_dead_letters(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_stored_snapshot_that_no_longer_decodes_is_a_dead_letter_not_a_silent_ack() {
    let mut harness = start().await;
    let event = created(Uuid::new_v4(), booking(FROM, TO));
    harness.publish(&event).await;
    harness.expect_result("visitor_access.granted.v1").await;
    // What an older release might have stored.
    let pool = harness.db.pool(ipassan_sync::SCHEMA).await;
    sqlx::query(
        "UPDATE booking_snapshots SET envelope = '{\"shape\": \"old\"}' WHERE booking_id = $1",
    )
    .bind(event.booking_id)
    .execute(&pool)
    .await
    .unwrap();
    // The same event, delivered again.
    harness.publish(&event).await;
    let dead = next_dead_letter(&mut harness).await;
    assert_eq!(dead.headers.get_str(headers::ERROR_KIND), Some("permanent"));
    let error = dead.headers.get_str(headers::ERROR).unwrap();
    assert!(error.contains("cannot be read"), "{error}");
    assert_eq!(
        dead.headers.get_i64(headers::RETRY_COUNT),
        Some(0),
        "not retried"
    );
}

fn raw(status: u16, body: &str, repeat: usize) -> FaultResponse {
    FaultResponse {
        status: Some(status),
        raw_body: Some(body.into()),
        repeat: Some(repeat),
        ..FaultResponse::default()
    }
}

#[tokio::test]
async fn a_token_said_to_live_for_ever_is_used_a_while_and_nothing_panics() {
    let mut harness = start().await;
    // u64::MAX seconds: added to the clock as it is, that overflows.
    harness
        .fault(
            "POST",
            "/api/v1/token",
            raw(
                200,
                r#"{"access_token":"from-a-broken-server","token_type":"Bearer","expires_in":18446744073709551615}"#,
                1,
            ),
            1,
        )
        .await;
    // The bogus token is refused, dropped and replaced: the visit is granted.
    harness.book_granted(booking(FROM, TO)).await;
    harness.no_dead_letters(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_answer_of_the_wrong_shape_or_size_is_a_dead_letter_and_a_failed_visit() {
    for (answer, said) in [
        (
            raw(201, r#"{"id": 5, "pin": true}"#, 1),
            "does not follow the contract",
        ),
        (
            raw(201, r#"{"id": "v-1", "visitee"#, 1),
            "does not follow the contract",
        ),
        (raw(201, "0123456789abcdef", 80_000), "larger than"),
    ] {
        let mut harness = start().await;
        harness.fault("POST", VISITOR_PATH, answer, 1).await;
        harness.publish_created(booking(FROM, TO)).await;
        let dead = next_dead_letter(&mut harness).await;
        assert_eq!(dead.headers.get_str(headers::ERROR_KIND), Some("permanent"));
        let error = dead.headers.get_str(headers::ERROR).unwrap();
        assert!(error.contains(said), "{error}");
        let failed = harness.next_result().await;
        assert_eq!(failed.routing_key(), "visitor_access.failed.v1", "{said}");
    }
}
