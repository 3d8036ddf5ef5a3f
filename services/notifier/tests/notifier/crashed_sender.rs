//! A notifier replica killed in the middle of sending a mail leaves its claim (`sending`) behind.
//! The next delivery must take that claim over at once, not wait for it to age: with short retry
//! tiers the wait outlasted every retry, so a result mail became a dead letter and an alert
//! became a parked message nobody was told of (found by the chaos soak).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{MANAGER, amqp, start_notifier, visit};

use std::time::Duration;

use contracts::{DEAD_LETTER_EXCHANGE, headers};
use platform::amqp::{Headers, Outgoing, Publisher};
use uuid::Uuid;

#[tokio::test]
async fn an_alert_claimed_by_a_sender_that_died_mid_send_still_goes_out() {
    let stack = start_notifier().await;
    let dead_letter_id = Uuid::new_v4();
    // What a replica killed between claiming the alert and settling it leaves behind.
    let pool = stack.db.pool(notifier::SCHEMA).await;
    sqlx::query("INSERT INTO sent_mail (dedup_key, recipient, outcome) VALUES ($1, $2, 'sending')")
        .bind(format!("dead-letter:{dead_letter_id}/dead_letter_alert"))
        .bind(MANAGER)
        .execute(&pool)
        .await
        .unwrap();

    let event = visit(&[MANAGER]);
    let mut dead = Headers::default();
    dead.set(headers::DEAD_LETTER_ID, dead_letter_id.to_string());
    dead.set(headers::SERVICE, "ipassan-sync");
    dead.set(headers::ORIGINAL_QUEUE, "ipassan-sync");
    dead.set(headers::ERROR_KIND, "permanent");
    dead.set(headers::ERROR, "iPassan answered 403");
    let body = event.to_json();
    let message_id = event.event_id.to_string();
    Publisher::new(&amqp(&stack.broker), "test")
        .publish(Outgoing {
            exchange: DEAD_LETTER_EXCHANGE,
            routing_key: event.routing_key(),
            body: &body,
            message_id: Some(&message_id),
            headers: dead,
        })
        .await
        .unwrap();

    // The tiers (3 × 200 ms) are long gone before a claim would have aged.
    let alert = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(10))
        .await
        .expect("the alert goes out although a dead sender had claimed it");
    assert!(alert.text_body.contains(&dead_letter_id.to_string()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.mail.mails_to(MANAGER).len(), 1, "and only once");
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM sent_mail WHERE dedup_key = $1 AND recipient = $2")
            .bind(format!("dead-letter:{dead_letter_id}/dead_letter_alert"))
            .bind(MANAGER)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(outcome, "sent");
}
