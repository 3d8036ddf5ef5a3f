//! A notifier replica killed in the middle of sending a mail leaves its claim (`sending`) behind.
//! The next delivery must take that claim over at once, not wait for it to age: with short retry
//! tiers the wait outlasted every retry, so a result mail became a dead letter and an alert
//! became a parked message nobody was told of (found by the chaos soak).

use uuid::Uuid;

use crate::support::{DEAD_LETTERS, MANAGER, publish_dead_letter, start_notifier, visit};

#[tokio::test]
async fn an_alert_claimed_by_a_sender_that_died_mid_send_still_goes_out() {
    let stack = start_notifier().await;
    let dead_letter_id = Uuid::new_v4();
    let claim = format!("dead-letter:{dead_letter_id}/dead_letter_alert");
    // What a replica killed between claiming the alert and settling it leaves behind.
    sqlx::query("INSERT INTO sent_mail (dedup_key, recipient, outcome) VALUES ($1, $2, 'sending')")
        .bind(&claim)
        .bind(MANAGER)
        .execute(&stack.pool)
        .await
        .unwrap();

    let event = visit(&[MANAGER]);
    publish_dead_letter(
        &stack,
        &event,
        dead_letter_id,
        "ipassan-sync",
        "iPassan answered 403",
    )
    .await;

    // The tiers (3 × 200 ms) are long gone before a claim would have aged.
    let alert = stack.mail_to(MANAGER).await;
    assert!(alert.text_body.contains(&dead_letter_id.to_string()));
    stack.wait_until_handled(DEAD_LETTERS, 1).await;
    assert_eq!(stack.mail.mails_to(MANAGER).len(), 1, "and only once");
    assert_eq!(
        stack.mail_claim(&claim, MANAGER).await.as_deref(),
        Some("sent")
    );
}
