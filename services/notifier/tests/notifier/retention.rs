//! The notifier keeps PINs and visitors' personal data only as long as needed: in the results it
//! keeps, in dead letters and in the addresses it mailed — erased on its clock (driven here). A
//! dead letter shows its PIN only when asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{MANAGER, amqp, publish, start_notifier, visit};
use contracts::{DEAD_LETTER_EXCHANGE, Envelope, Event, VisitorAccessResult, headers};
use platform::amqp::{Headers, Outgoing, Publisher};
use platform::clock::ManualClock;
use platform::retention::{RetentionSettings, erase_once};
use uuid::Uuid;

fn granted(pin: &str) -> Envelope {
    let Event::VisitorBookingCreated(booking) = visit(&[MANAGER]).event else {
        unreachable!()
    };
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorAccessGranted(VisitorAccessResult {
            booking,
            pin: Some(pin.into()),
            failure: None,
        }),
    )
}

#[tokio::test]
async fn pins_go_a_week_after_the_visit_and_visitors_and_addresses_after_ninety_days() {
    let stack = start_notifier().await;
    let pool = stack.db.pool(notifier::SCHEMA).await;
    let result = granted("562781");
    let ended = match &result.event {
        Event::VisitorAccessGranted(r) => r.booking.window.ends_at,
        _ => unreachable!(),
    };
    publish(&stack, &result).await;
    stack.mail.wait_for(2, Duration::from_secs(15)).await;
    // A result that became a dead letter (booking-api could not apply it) holds the PIN too.
    let letter_id = Uuid::new_v4();
    let mut dead = Headers::default();
    dead.set(headers::DEAD_LETTER_ID, letter_id.to_string());
    dead.set(headers::SERVICE, "booking-api.results");
    dead.set(headers::ORIGINAL_QUEUE, "booking-api.results");
    dead.set(headers::ERROR_KIND, "permanent");
    dead.set(headers::ERROR, "unknown booking");
    let body = result.to_json();
    Publisher::new(&amqp(&stack.broker), "test")
        .publish(Outgoing {
            exchange: DEAD_LETTER_EXCHANGE,
            routing_key: result.routing_key(),
            body: &body,
            message_id: Some(&letter_id.to_string()),
            headers: dead,
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while notifier::cli::show(&pool, letter_id, false).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead letter was never stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let masked = notifier::cli::show(&pool, letter_id, false).await.unwrap();
    assert!(
        !masked.contains("562781") && masked.contains("******"),
        "{masked}"
    );
    let revealed = notifier::cli::show(&pool, letter_id, true).await.unwrap();
    assert!(revealed.contains("562781"), "--reveal shows it: {revealed}");

    let everything = || async {
        let snapshots: Vec<String> =
            sqlx::query_scalar("SELECT envelope::text FROM booking_snapshots")
                .fetch_all(&pool)
                .await
                .unwrap();
        let letters: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM dead_letters")
            .fetch_all(&pool)
            .await
            .unwrap();
        let mailed: Vec<String> = sqlx::query_scalar("SELECT recipient FROM sent_mail")
            .fetch_all(&pool)
            .await
            .unwrap();
        let letters: Vec<String> = letters
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        format!("{snapshots:?} {letters:?} {mailed:?}")
    };
    let settings = RetentionSettings::default();
    let eraser = notifier::retention::NotifierEraser;
    let clock = ManualClock::new(ended + chrono::Duration::days(6));
    erase_once(&pool, &clock, &settings, "notifier", &eraser)
        .await
        .unwrap()
        .unwrap();
    assert!(
        everything().await.contains("562781"),
        "six days after: kept"
    );

    clock.set(ended + chrono::Duration::days(8));
    let erased = erase_once(&pool, &clock, &settings, "notifier", &eraser)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(erased.pins, 2, "the kept result and the dead letter");
    let kept = everything().await;
    assert!(!kept.contains("562781"), "{kept}");
    assert!(
        kept.contains("bo@example.com"),
        "the visitor is kept longer: {kept}"
    );

    clock.set(ended + chrono::Duration::days(91));
    erase_once(&pool, &clock, &settings, "notifier", &eraser)
        .await
        .unwrap()
        .unwrap();
    // The mails went out just now: their records are dated by the real clock, so they stay
    // until ninety days after they were sent. Dated back, they go.
    sqlx::query("UPDATE sent_mail SET at = at - interval '100 days'")
        .execute(&pool)
        .await
        .unwrap();
    erase_once(&pool, &clock, &settings, "notifier", &eraser)
        .await
        .unwrap()
        .unwrap();
    let kept = everything().await;
    assert!(
        !kept.contains("bo@example.com") && !kept.contains("Bo Tan"),
        "{kept}"
    );
}
