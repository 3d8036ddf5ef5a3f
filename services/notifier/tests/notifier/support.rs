//! What the notifier's tests share: the notifier on a fresh database, vhost and SMTP sink, and
//! event builders.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

use contracts::{
    BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope, Event, Resident, Visitor,
    VisitorBooking,
};
use platform::amqp::Publisher;
use platform::config::{
    AmqpSettings, DatabaseSettings, LogSettings, OpsSettings, RetrySettings, SmtpSettings, SmtpTls,
};
use testkit::mail_sink::MailSink;
use testkit::{TestBroker, TestDb};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const MANAGER: &str = "manager@harbour.example";
pub const OPS: &str = "ops@connecx.example";

pub struct Stack {
    /// The notifier's health/metrics port (None when the test runs no notifier itself).
    pub health_port: Option<u16>,
    pub db: TestDb,
    pub broker: TestBroker,
    pub mail: MailSink,
    pub stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Broker settings as the admin, for test code that publishes as another service would.
pub fn amqp(broker: &TestBroker) -> AmqpSettings {
    AmqpSettings {
        url: broker.url.clone(),
        prefetch: 8,
        delivery_limit: 5,
        drain_timeout_secs: 30,
    }
}

/// Broker settings as `service` connects in a deployment: as its own RabbitMQ user.
pub fn amqp_as(broker: &TestBroker, service: contracts::Service) -> AmqpSettings {
    AmqpSettings {
        url: broker.url_for(service),
        ..amqp(broker)
    }
}

pub fn settings(db: &TestDb, broker: &TestBroker, mail: &MailSink) -> notifier::Settings {
    notifier::Settings {
        retention: Default::default(),
        database: DatabaseSettings {
            url: db.service_url(notifier::SCHEMA),
            max_connections: 5,
        },
        amqp: amqp_as(broker, contracts::Service::Notifier),
        smtp: SmtpSettings {
            host: mail.host(),
            port: mail.port(),
            username: None,
            password: None,
            tls: SmtpTls::None,
            from: "connecX <no-reply@connecx.example>".into(),
            timeout_secs: 5,
            allow_plain_auth: false,
        },
        ops: OpsSettings {
            alert_email: OPS.into(),
        },
        retry: RetrySettings {
            tiers: "200ms,200ms,200ms".parse().unwrap(),
        },
        log: LogSettings::default(),
        health: platform::health::HealthSettings {
            port: Some(0),
            host: "127.0.0.1".into(),
        },
    }
}

/// The notifier alone, running until the stack is dropped.
pub async fn start_notifier() -> Stack {
    platform::telemetry::init_for_tests();
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let mail = MailSink::start();
    let stop = CancellationToken::new();
    let app = notifier::Application::build(settings(&db, &broker, &mail))
        .await
        .unwrap();
    let health_port = app.health_port();
    let token = stop.clone();
    tokio::spawn(async move {
        app.run_until_stopped(async move { token.cancelled().await })
            .await
            .unwrap()
    });
    for queue in ["notifier", "notifier.dead-letters"] {
        broker.wait_for_queue(queue, Duration::from_secs(10)).await;
    }
    Stack {
        health_port,
        db,
        broker,
        mail,
        stop,
    }
}

pub fn visit(managers: &[&str]) -> Envelope {
    let now = chrono::Utc::now();
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorBookingCreated(VisitorBooking {
            building: Building {
                id: "harbour".into(),
                name: "Harbour View".into(),
                timezone: "Australia/Sydney".into(),
                manager_emails: managers.iter().map(|m| m.to_string()).collect(),
                ipassan_site: Some("site-1".into()),
                double_booking_policy: DoubleBookingPolicy::Auto,
                connection_versions: Default::default(),
            },
            window: BookingWindow {
                starts_at: now,
                ends_at: now,
                local_starts_at: now.naive_utc(),
                local_ends_at: now.naive_utc(),
            },
            resident: Resident {
                id: "r-1".into(),
                name: "Ana Lee".into(),
                email: "ana@example.com".into(),
                apartment_id: "a-501".into(),
                ipassan_person_id: Some("p-123".into()),
            },
            visitor: Visitor {
                name: "Bo Tan".into(),
                email: "bo@example.com".into(),
            },
            provide_access: true,
            state: BookingState::Booked,
        }),
    )
}

pub async fn publish(stack: &Stack, envelope: &Envelope) {
    Publisher::new(&amqp(&stack.broker), "test")
        .publish_event(envelope)
        .await
        .unwrap();
}
