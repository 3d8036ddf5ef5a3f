//! The notifier keeps PINs and visitors' personal data only as long as needed: in the results it
//! keeps, in dead letters and in the addresses it mailed — erased on its clock (driven here). A
//! dead letter shows its PIN only when asked.

use contracts::Event;
use platform::clock::ManualClock;
use platform::retention::{RetentionSettings, erase_once};
use uuid::Uuid;

use crate::support::{
    PATIENCE, RESULTS, eventually, publish, publish_dead_letter, start_notifier, visitor_result,
};

#[tokio::test]
async fn pins_go_a_week_after_the_visit_and_visitors_and_addresses_after_ninety_days() {
    let stack = start_notifier().await;
    let pool = &stack.pool;
    let result = visitor_result(
        Uuid::new_v4(),
        1,
        Event::VisitorAccessGranted,
        Some("562781"),
    );
    let Event::VisitorAccessGranted(granted) = &result.event else {
        unreachable!()
    };
    let ended = granted.booking.window.ends_at;
    publish(&stack, &result).await;
    stack.wait_until_handled(RESULTS, 1).await;
    // A result that became a dead letter (booking-api could not apply it) holds the PIN too.
    let letter_id = Uuid::new_v4();
    publish_dead_letter(
        &stack,
        &result,
        letter_id,
        "booking-api.results",
        "unknown booking",
    )
    .await;
    let masked = eventually("the dead letter stored", PATIENCE, || async {
        notifier::cli::show(pool, letter_id, false).await.ok()
    })
    .await;
    assert!(
        !masked.contains("562781") && masked.contains("******"),
        "{masked}"
    );
    let revealed = notifier::cli::show(pool, letter_id, true).await.unwrap();
    assert!(revealed.contains("562781"), "--reveal shows it: {revealed}");

    let everything = || async {
        let snapshots: Vec<String> =
            sqlx::query_scalar("SELECT envelope::text FROM booking_snapshots")
                .fetch_all(pool)
                .await
                .unwrap();
        let letters: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM dead_letters")
            .fetch_all(pool)
            .await
            .unwrap();
        let mailed: Vec<String> = sqlx::query_scalar("SELECT recipient FROM sent_mail")
            .fetch_all(pool)
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
    let erase = || async {
        erase_once(pool, &clock, &settings, "notifier", &eraser)
            .await
            .unwrap()
            .unwrap()
    };
    erase().await;
    assert!(
        everything().await.contains("562781"),
        "six days after: kept"
    );

    clock.set(ended + chrono::Duration::days(8));
    let erased = erase().await;
    assert_eq!(erased.pins, 2, "the kept result and the dead letter");
    let kept = everything().await;
    assert!(!kept.contains("562781"), "{kept}");
    assert!(
        kept.contains("bo@example.com"),
        "the visitor is kept longer: {kept}"
    );

    clock.set(ended + chrono::Duration::days(91));
    erase().await;
    // The mails went out just now: their records are dated by the real clock, so they stay
    // until ninety days after they were sent. Dated back, they go.
    sqlx::query("UPDATE sent_mail SET at = at - interval '100 days'")
        .execute(pool)
        .await
        .unwrap();
    erase().await;
    let kept = everything().await;
    assert!(
        !kept.contains("bo@example.com") && !kept.contains("Bo Tan"),
        "{kept}"
    );
}
