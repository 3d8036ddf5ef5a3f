//! The dead-letter path end to end on real RabbitMQ, PostgreSQL and SMTP: a worker gives up on a
//! message, the notifier stores it and mails the building's managers; ops can replay it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{MANAGER, OPS, Stack, amqp_as, publish, start_notifier, visit};

use std::time::Duration;

use contracts::{BookingState, Envelope, Event, IPASSAN_SYNC_QUEUE};
use platform::amqp::{EventHandler, HandlerError, Publisher, Worker};
use uuid::Uuid;

/// The notifier plus a worker on the ipassan-sync queue whose handler always fails as told.
async fn start(failure: HandlerError) -> Stack {
    let stack = start_notifier().await;
    let failing = Worker::new(
        IPASSAN_SYNC_QUEUE,
        amqp_as(&stack.broker, contracts::Service::IpassanSync),
        "100ms,100ms".parse().unwrap(),
        AlwaysFails(failure),
    );
    tokio::spawn(failing.run(stack.stop.clone()));
    stack
        .broker
        .wait_for_queue("ipassan-sync", Duration::from_secs(10))
        .await;
    stack
}

struct AlwaysFails(HandlerError);

impl EventHandler for AlwaysFails {
    async fn handle(&self, _: Envelope) -> Result<(), HandlerError> {
        Err(self.0.clone())
    }
}

async fn stored_dead_letters(stack: &Stack) -> Vec<(Uuid, String, String)> {
    let pool = stack.db.pool(notifier::SCHEMA).await;
    sqlx::query_as("SELECT id, error_kind, status FROM dead_letters ORDER BY received_at")
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_permanent_failure_mails_the_building_manager_once_with_the_reason() {
    let stack = start(HandlerError::Permanent(
        "iPassan answered 403 Access Denied for site site-1".into(),
    ))
    .await;
    let event = visit(&[MANAGER]);
    publish(&stack, &event).await;

    let alert = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("an alert to the manager");
    assert!(
        alert.subject.contains(&event.booking_id.to_string()),
        "{}",
        alert.subject
    );
    assert!(
        alert.text_body.contains("403 Access Denied"),
        "{}",
        alert.text_body
    );
    assert!(alert.text_body.contains("ipassan-sync"));
    assert!(alert.text_body.contains("Attempts:      1"));
    assert!(
        alert
            .html_body
            .as_deref()
            .unwrap_or_default()
            .contains("403 Access Denied")
    );
    let stored = stored_dead_letters(&stack).await;
    assert_eq!(stored.len(), 1);
    assert!(
        alert.text_body.contains(&stored[0].0.to_string()),
        "the mail names the dead letter id"
    );

    // Nothing else is sent: one failure, one alert.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.mail.mails().len(), 1);
    assert!(stack.mail.mails_to(OPS).is_empty());
}

#[tokio::test]
async fn exhausted_retries_end_in_an_alert_that_counts_the_attempts() {
    let stack = start(HandlerError::Transient("iPassan timed out".into())).await;
    let event = visit(&[MANAGER]);
    publish(&stack, &event).await;

    let alert = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("an alert");
    assert!(
        alert.text_body.contains("transient_exhausted"),
        "{}",
        alert.text_body
    );
    assert!(
        alert.text_body.contains("Attempts:      3"),
        "{}",
        alert.text_body
    );
    assert!(alert.text_body.contains("iPassan timed out"));
}

#[tokio::test]
async fn a_poison_message_reaches_the_ops_address_and_the_worker_keeps_running() {
    let stack = start(HandlerError::Permanent("unused".into())).await;
    stack
        .broker
        .publish_raw("visitor_booking.created.v1", b"{ definitely not an event")
        .await;

    let alert = stack
        .mail
        .wait_for_mail_to(OPS, Duration::from_secs(15))
        .await
        .expect("an alert to ops");
    assert!(alert.text_body.contains("malformed"), "{}", alert.text_body);
    // The failing worker is still consuming: a real event after the poison also dead-letters.
    publish(&stack, &visit(&[MANAGER])).await;
    stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("the next message is handled");
}

#[tokio::test]
async fn while_smtp_refuses_the_alert_waits_and_then_goes_exactly_once() {
    let stack = start(HandlerError::Permanent("refused".into())).await;
    stack.mail.set_refusing(true);
    publish(&stack, &visit(&[MANAGER, "second@harbour.example"])).await;
    // The dead letter is stored at once even though no mail can go.
    for _ in 0..100 {
        if !stored_dead_letters(&stack).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_dead_letters(&stack).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.mail.set_refusing(false);

    let mails = stack.mail.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stack.mail.mails_to(MANAGER).len(),
        1,
        "no duplicate after the retries"
    );
    assert_eq!(stack.mail.mails_to("second@harbour.example").len(), 1);
}

#[tokio::test]
async fn a_dead_letter_can_be_listed_shown_replayed_and_discarded() {
    let stack = start(HandlerError::Permanent("zone unknown".into())).await;
    let event = visit(&[MANAGER]);
    publish(&stack, &event).await;
    stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("first alert");
    let pool = stack.db.pool(notifier::SCHEMA).await;
    let id = stored_dead_letters(&stack).await[0].0;

    let listing = notifier::cli::list(&pool, false).await.unwrap();
    assert!(
        listing.contains(&id.to_string()) && listing.contains("zone unknown"),
        "{listing}"
    );
    let shown = notifier::cli::show(&pool, id, false).await.unwrap();
    assert!(
        shown.contains(&event.booking_id.to_string())
            && shown.contains("visitor_booking.created.v1"),
        "{shown}"
    );

    // Replay sends it back to ipassan-sync, which fails again: a new dead letter, a new alert.
    // As the notifier's CLI runs: as the notifier's user.
    let publisher = Publisher::new(
        &amqp_as(&stack.broker, contracts::Service::Notifier),
        "notifier-cli",
    );
    notifier::cli::replay(&pool, &publisher, id).await.unwrap();
    let mails = stack.mail.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(
        mails.len(),
        2,
        "the replayed message failed again and was reported again"
    );
    let stored = stored_dead_letters(&stack).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].2, "replayed");
    let replay_error = notifier::cli::replay(&pool, &publisher, id)
        .await
        .unwrap_err();
    assert!(
        replay_error.to_string().contains("already replayed"),
        "{replay_error}"
    );

    notifier::cli::discard(&pool, stored[1].0).await.unwrap();
    assert!(
        notifier::cli::list(&pool, false)
            .await
            .unwrap()
            .contains("no open dead letters")
    );
    assert!(
        notifier::cli::show(&pool, Uuid::new_v4(), false)
            .await
            .unwrap_err()
            .to_string()
            .contains("no dead letter")
    );
}

#[tokio::test]
async fn a_message_the_broker_itself_dead_letters_is_stored_and_reported() {
    let stack = start(HandlerError::Permanent("unused".into())).await;
    // salto-sync's queue with a delivery limit of 2, and no salto-sync running: a consumer that
    // keeps crashing on the message makes the broker give up on it.
    stack
        .broker
        .declare_queue(&contracts::SALTO_SYNC_QUEUE, 2)
        .await;
    let mut event = visit(&[MANAGER]);
    event.event = match event.event {
        Event::VisitorBookingCreated(_) => Event::FacilityBookingCreated(facility()),
        other => other,
    };
    publish(&stack, &event).await;
    let deliveries = stack.broker.crash_loop("salto-sync").await;
    assert_eq!(
        deliveries, 3,
        "delivered up to the limit, then dead-lettered by the broker"
    );

    let alert = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("the manager is alerted");
    assert!(
        alert.text_body.contains("broker:delivery_limit"),
        "{}",
        alert.text_body
    );
    assert!(
        alert.text_body.contains("delivered too many times"),
        "{}",
        alert.text_body
    );
    let stored = stored_dead_letters(&stack).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, "broker:delivery_limit");
}

fn facility() -> contracts::FacilityBooking {
    let Event::VisitorBookingCreated(visit) = visit(&[MANAGER]).event else {
        unreachable!()
    };
    contracts::FacilityBooking {
        building: visit.building,
        window: visit.window,
        facility: contracts::Facility {
            id: "games-room".into(),
            name: "Games room".into(),
            zone_id: "GAMES-ROOM".into(),
        },
        apartment: contracts::Apartment {
            id: "a-501".into(),
            access_level_id: "501-56".into(),
        },
        booked_by: contracts::BookedBy {
            user_id: "r-1".into(),
            role: contracts::Role::Resident,
            name: None,
            email: None,
        },
        state: BookingState::Booked,
    }
}
