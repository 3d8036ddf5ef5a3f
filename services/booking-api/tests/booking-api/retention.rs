//! PINs and visitors' personal data are kept only as long as needed: erased by a scheduled job
//! on the service's clock (driven here), a week and ninety days after the visit ended.

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::clock::ManualClock;
use platform::retention::{RetentionSettings, erase_once};

use crate::support::{body, spawn_app_offline, spawn_app_offline_with, visit};

/// A visit of Ana's that ended at `ended`, with a PIN (as if iPassan had granted it).
async fn ended_visit(app: &crate::support::TestApp, ended: DateTime<Utc>) -> String {
    let created = body(
        app.post("/v1/visitor-bookings", &app.resident_ana(), visit(false))
            .await,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE visitor_bookings
            SET starts_at = $2 - interval '2 hours', ends_at = $2, access_pin = '834211'
          WHERE id = $1::uuid",
    )
    .bind(&id)
    .bind(ended)
    .execute(&app.pool)
    .await
    .unwrap();
    // Its event, still in the outbox (the broker is away), says the same window.
    sqlx::query(
        "UPDATE outbox SET envelope = jsonb_set(envelope, '{data,window,ends_at}', to_jsonb($2::timestamptz))
          WHERE booking_id = $1::uuid",
    )
    .bind(&id)
    .bind(ended)
    .execute(&app.pool)
    .await
    .unwrap();
    id
}

async fn stored(app: &crate::support::TestApp, id: &str) -> (Option<String>, String, String) {
    sqlx::query_as(
        "SELECT access_pin, visitor_name, visitor_email FROM visitor_bookings WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_pin_goes_a_week_after_the_visit_and_the_visitor_after_ninety_days() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ended = Utc::now() - chrono::Duration::days(1);
    let id = ended_visit(&app, ended).await;
    let settings = RetentionSettings::default();
    let clock = ManualClock::new(ended + chrono::Duration::days(6));
    let erase = |clock: &ManualClock| {
        let (pool, clock, settings) = (app.pool.clone(), clock.clone(), settings);
        async move {
            erase_once(
                &pool,
                &clock,
                &settings,
                "booking-api",
                &booking_api::retention::BookingEraser,
            )
            .await
            .unwrap()
            .expect("the round ran")
        }
    };

    erase(&clock).await;
    let (pin, name, _) = stored(&app, &id).await;
    assert_eq!(pin.as_deref(), Some("834211"), "six days after: kept");
    assert_eq!(name, "Dee Visitor");

    clock.set(ended + chrono::Duration::days(8));
    let erased = erase(&clock).await;
    assert_eq!(erased.pins, 1);
    let (pin, name, email) = stored(&app, &id).await;
    assert_eq!(pin, None, "eight days after: gone");
    assert_eq!(
        (name.as_str(), email.as_str()),
        ("Dee Visitor", "dee@visitors.example")
    );

    clock.set(ended + chrono::Duration::days(91));
    let erased = erase(&clock).await;
    assert!(
        erased.personal >= 2,
        "the booking and its event in the outbox: {erased:?}"
    );
    let (_, name, email) = stored(&app, &id).await;
    assert_eq!((name.as_str(), email.as_str()), ("", ""));
    let shown = body(
        app.get(&format!("/v1/visitor-bookings/{id}"), &app.resident_ana())
            .await,
    )
    .await;
    assert_eq!(
        shown["visitor"],
        serde_json::json!({"name": "", "email": ""}),
        "{shown}"
    );
    let outbox: Vec<String> = sqlx::query_scalar("SELECT envelope::text FROM outbox")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        outbox.iter().all(|e| !e.contains("dee@visitors.example")),
        "{outbox:?}"
    );
    assert_eq!(
        erase(&clock).await,
        Default::default(),
        "nothing left to erase"
    );
}

#[tokio::test]
async fn the_service_erases_on_its_own_schedule() {
    let app = spawn_app_offline_with(|settings| {
        settings.retention.every_secs = 1;
        settings.retention.pin_days = 0;
    })
    .await;
    app.seed().await;
    let id = ended_visit(&app, Utc::now() - chrono::Duration::minutes(5)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stored(&app, &id).await.0.is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the PIN was never erased"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
