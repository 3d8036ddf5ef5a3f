//! The dead-letter path end to end on real RabbitMQ, PostgreSQL and SMTP: a worker gives up on a
//! message, the notifier stores it and mails the building's managers; ops can replay it.

use contracts::{DoubleBookingPolicy, Envelope, Event, IPASSAN_SYNC_QUEUE};
use platform::amqp::{EventHandler, HandlerError, Publisher, Worker};
use uuid::Uuid;

use crate::support::{
    DEAD_LETTERS, MANAGER, OPS, PATIENCE, Stack, amqp_as, eventually, facility_booking, html_says,
    publish, says, start_notifier, visit,
};

/// The notifier plus a worker on the ipassan-sync queue whose handler always fails as told.
async fn start(failure: HandlerError) -> Stack {
    let stack = start_notifier().await;
    let failing = Worker::new(
        IPASSAN_SYNC_QUEUE,
        amqp_as(&stack.broker, contracts::Service::IpassanSync),
        "100ms,100ms".parse().unwrap(),
        AlwaysFails(failure),
    );
    let attached = failing.attached();
    tokio::spawn(failing.run(stack.stop.clone()));
    // Consuming, so its queue is declared and bound: a visitor booking published now reaches it.
    eventually("the failing worker consuming", PATIENCE, || async {
        attached.get().then_some(())
    })
    .await;
    stack
}

struct AlwaysFails(HandlerError);

impl EventHandler for AlwaysFails {
    async fn handle(&self, _: Envelope) -> Result<(), HandlerError> {
        Err(self.0.clone())
    }
}

#[tokio::test]
async fn a_permanent_failure_mails_the_building_manager_once_with_the_reason() {
    let stack = start(HandlerError::Permanent(
        "iPassan answered 403 Access Denied for site site-1".into(),
    ))
    .await;
    let event = visit(&[MANAGER]);
    publish(&stack, &event).await;

    let alert = stack.mail_to(MANAGER).await;
    assert!(
        alert.subject.contains(&event.booking_id.to_string()),
        "{}",
        alert.subject
    );
    says(
        &alert,
        &["403 Access Denied", "ipassan-sync", "Attempts:      1"],
    );
    html_says(&alert, &["403 Access Denied"]);
    let stored = stack.stored_dead_letters().await;
    assert_eq!(stored.len(), 1);
    says(&alert, &[&stored[0].0.to_string()]);

    // Nothing else is sent: one failure, one alert.
    stack.wait_until_handled(DEAD_LETTERS, 1).await;
    assert_eq!(stack.mail.mails().len(), 1);
    assert!(stack.mail.mails_to(OPS).is_empty());
}

#[tokio::test]
async fn exhausted_retries_end_in_an_alert_that_counts_the_attempts() {
    let stack = start(HandlerError::Transient("iPassan timed out".into())).await;
    publish(&stack, &visit(&[MANAGER])).await;

    let alert = stack.mail_to(MANAGER).await;
    says(
        &alert,
        &[
            "transient_exhausted",
            "Attempts:      3",
            "iPassan timed out",
        ],
    );
}

#[tokio::test]
async fn a_poison_message_reaches_the_ops_address_and_the_worker_keeps_running() {
    let stack = start(HandlerError::Permanent("unused".into())).await;
    stack
        .broker
        .publish_raw("visitor_booking.created.v1", b"{ definitely not an event")
        .await;

    says(&stack.mail_to(OPS).await, &["malformed"]);
    // The failing worker is still consuming: a real event after the poison also dead-letters.
    publish(&stack, &visit(&[MANAGER])).await;
    stack.mail_to(MANAGER).await;
}

#[tokio::test]
async fn while_smtp_refuses_the_alert_waits_and_then_goes_exactly_once() {
    let stack = start(HandlerError::Permanent("refused".into())).await;
    stack.mail.set_refusing(true);
    publish(&stack, &visit(&[MANAGER, "second@harbour.example"])).await;
    // The dead letter is stored at once even though no mail can go, and the alert is tried
    // and refused for now (a retry) before the server accepts again.
    assert_eq!(stack.wait_for_dead_letters(1).await.len(), 1);
    eventually("the alert refused for now", PATIENCE, || async {
        (stack
            .counter("connecx_messages_retried_total", DEAD_LETTERS)
            .await
            >= 1)
            .then_some(())
    })
    .await;
    stack.mail.set_refusing(false);

    let mails = stack.mail.wait_for(2, PATIENCE).await;
    assert_eq!(mails.len(), 2);
    stack.wait_until_handled(DEAD_LETTERS, 1).await;
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
    stack.mail_to(MANAGER).await;
    let pool = &stack.pool;
    let id = stack.stored_dead_letters().await[0].0;

    let listing = notifier::cli::list(pool, false).await.unwrap();
    assert!(
        listing.contains(&id.to_string()) && listing.contains("zone unknown"),
        "{listing}"
    );
    let shown = notifier::cli::show(pool, id, false).await.unwrap();
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
    notifier::cli::replay(pool, &publisher, id).await.unwrap();
    let mails = stack.mail.wait_for(2, PATIENCE).await;
    assert_eq!(
        mails.len(),
        2,
        "the replayed message failed again and was reported again"
    );
    let stored = stack.stored_dead_letters().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].2, "replayed");
    let replay_error = notifier::cli::replay(pool, &publisher, id)
        .await
        .unwrap_err();
    assert!(
        replay_error.to_string().contains("already replayed"),
        "{replay_error}"
    );

    notifier::cli::discard(pool, stored[1].0).await.unwrap();
    assert!(
        notifier::cli::list(pool, false)
            .await
            .unwrap()
            .contains("no open dead letters")
    );
    assert!(
        notifier::cli::show(pool, Uuid::new_v4(), false)
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
        Event::VisitorBookingCreated(_) => {
            Event::FacilityBookingCreated(facility_booking(DoubleBookingPolicy::Auto))
        }
        other => other,
    };
    publish(&stack, &event).await;
    let deliveries = stack.broker.crash_loop("salto-sync").await;
    assert_eq!(
        deliveries, 3,
        "delivered up to the limit, then dead-lettered by the broker"
    );

    says(
        &stack.mail_to(MANAGER).await,
        &["broker:delivery_limit", "delivered too many times"],
    );
    let stored = stack.stored_dead_letters().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, "broker:delivery_limit");
}
