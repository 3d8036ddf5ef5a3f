//! The skeleton worker applies the version rule on the real broker and database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use contracts::{
    BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope, Event, Resident, Visitor,
    VisitorBooking,
};
use platform::amqp::Publisher;
use platform::config::{AmqpSettings, DatabaseSettings, LogSettings, RetrySettings};
use testkit::{TestBroker, TestDb};
use tokio_util::sync::CancellationToken;

fn event(booking_id: uuid::Uuid, version: i64, cancelled: bool) -> Envelope {
    let now = chrono::Utc::now();
    let booking = VisitorBooking {
        building: Building {
            id: "b".into(),
            name: "B".into(),
            timezone: "Australia/Sydney".into(),
            manager_emails: vec![],
            ipassan_site: Some("s".into()),
            double_booking_policy: DoubleBookingPolicy::Auto,
        },
        window: BookingWindow {
            starts_at: now,
            ends_at: now,
            local_starts_at: now.naive_utc(),
            local_ends_at: now.naive_utc(),
        },
        resident: Resident {
            id: "r".into(),
            name: "R".into(),
            email: "r@example.com".into(),
            apartment_id: "a".into(),
            ipassan_person_id: Some("p".into()),
        },
        visitor: Visitor {
            name: "V".into(),
            email: "v@example.com".into(),
        },
        provide_access: true,
        state: if cancelled {
            BookingState::Cancelled
        } else {
            BookingState::Booked
        },
    };
    let event = if cancelled {
        Event::VisitorBookingCancelled(booking)
    } else {
        Event::VisitorBookingCreated(booking)
    };
    Envelope::new(booking_id, version, event)
}

#[tokio::test]
async fn a_late_older_version_is_acknowledged_without_replacing_the_newer_one() {
    platform::telemetry::init_for_tests();
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let amqp = AmqpSettings {
        url: broker.url.clone(),
        prefetch: 4,
        delivery_limit: 5,
    };
    let app = ipassan_sync::Application::build(ipassan_sync::Settings {
        database: DatabaseSettings {
            url: db.url.clone(),
            max_connections: 4,
        },
        amqp: amqp.clone(),
        retry: RetrySettings::default(),
        log: LogSettings::default(),
    })
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
    broker
        .wait_for_queue("ipassan-sync", Duration::from_secs(10))
        .await;

    let booking = uuid::Uuid::new_v4();
    let publisher = Publisher::new(&amqp, "test");
    publisher
        .publish_event(&event(booking, 2, true))
        .await
        .unwrap();
    publisher
        .publish_event(&event(booking, 1, false))
        .await
        .unwrap();

    let pool = db.pool(ipassan_sync::SCHEMA).await;
    for _ in 0..100 {
        let held: Option<i64> =
            sqlx::query_scalar("SELECT version FROM booking_snapshots WHERE booking_id = $1")
                .bind(booking)
                .fetch_optional(&pool)
                .await
                .unwrap();
        if held.is_some() && broker.queue_depth("ipassan-sync").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = sqlx::query_as::<_, (i64, String)>(
        "SELECT version, event_type FROM booking_snapshots WHERE booking_id = $1",
    )
    .bind(booking)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, (2, "visitor_booking.cancelled.v1".to_owned()));
    assert_eq!(
        broker.queue_depth("ipassan-sync").await,
        0,
        "both versions were acknowledged"
    );
}
