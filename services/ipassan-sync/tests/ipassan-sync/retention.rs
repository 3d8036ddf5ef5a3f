//! ipassan-sync keeps a visitor's name and email only as long as needed: erased from its
//! snapshots ninety days after the visit, on its clock (driven here).

use platform::clock::ManualClock;
use platform::retention::{RetentionSettings, erase_once};

use crate::support::{FROM, TO, booking, start};

#[tokio::test]
async fn a_visitor_leaves_the_snapshots_ninety_days_after_the_visit() {
    let mut harness = start().await;
    let visit = booking(FROM, TO);
    let ended = visit.window.ends_at;
    let email = visit.visitor.email.clone();
    let (id, _) = harness.book_granted(visit).await;
    let pool = harness.db.pool(ipassan_sync::SCHEMA).await;
    let snapshot = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT envelope::text FROM booking_snapshots WHERE booking_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let settings = RetentionSettings::default();
    let eraser = ipassan_sync::retention::SnapshotEraser;
    let clock = ManualClock::new(ended + chrono::Duration::days(89));
    erase_once(&pool, &clock, &settings, ipassan_sync::SERVICE, &eraser)
        .await
        .unwrap()
        .unwrap();
    assert!(snapshot().await.contains(&email), "89 days after: kept");

    clock.set(ended + chrono::Duration::days(91));
    let erased = erase_once(&pool, &clock, &settings, ipassan_sync::SERVICE, &eraser)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(erased.personal, 1);
    let kept = snapshot().await;
    assert!(!kept.contains(&email), "{kept}");
    assert!(
        kept.contains("\"visitor\":{\"name\":\"\",\"email\":\"\"}")
            || kept.contains("\"visitor\": {\"name\": \"\", \"email\": \"\"}"),
        "{kept}"
    );
    let decoded: contracts::Envelope = serde_json::from_str(&kept).unwrap();
    assert_eq!(decoded.booking_id, id, "still a snapshot the worker reads");
}
