//! What the notifier's tests share: the notifier on a fresh database, vhost and SMTP sink;
//! event builders; and probes for what a test waits on — mails in the sink, rows in the
//! notifier's tables, and the messages the notifier has finished with (its `/metrics`), so that
//! no test sleeps and hopes.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use contracts::{
    AccessFailure, BookingWindow, DEAD_LETTER_EXCHANGE, DoubleBookingPolicy, Envelope, Event,
    FacilityBooking, VisitorAccessResult, VisitorBooking, headers,
};
use platform::amqp::{Headers, Outgoing, Publisher};
use platform::config::{
    AmqpSettings, DatabaseSettings, LogSettings, OpsSettings, RetrySettings, SharedSettings,
    SmtpSettings, SmtpTls,
};
use sqlx::PgPool;
use testkit::mail_sink::{MailSink, ReceivedMail};
use testkit::{TestBroker, TestDb};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bookings;
pub use crate::bookings::{RESIDENT, VISITOR};

pub const MANAGER: &str = "manager@harbour.example";
pub const OPS: &str = "ops@connecx.example";

/// The queue of result events, and the queue of dead letters.
pub const RESULTS: &str = contracts::NOTIFIER_QUEUE.name;
pub const DEAD_LETTERS: &str = contracts::NOTIFIER_DEAD_LETTERS_QUEUE.name;

/// How long a test waits at most for what the notifier does on its own (a deadline: a test
/// goes on as soon as what it waits for has happened).
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Stack {
    /// The notifier's health/metrics port (None when the test runs no notifier itself).
    pub health_port: Option<u16>,
    pub db: TestDb,
    /// The notifier's schema, for what a test arranges there or reads back.
    pub pool: PgPool,
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

/// A plain SMTP connection to `host:port`, giving up after `timeout_secs`.
pub fn smtp(host: String, port: u16, timeout_secs: u64) -> SmtpSettings {
    SmtpSettings {
        host,
        port,
        username: None,
        password: None,
        tls: SmtpTls::None,
        from: "connecX <no-reply@connecx.example>".into(),
        timeout_secs,
        allow_plain_auth: false,
    }
}

pub fn settings(db: &TestDb, broker: &TestBroker, mail: &MailSink) -> notifier::Settings {
    notifier::Settings {
        shared: SharedSettings {
            database: DatabaseSettings {
                url: db.service_url(notifier::SCHEMA),
                max_connections: 5,
            },
            amqp: amqp_as(broker, contracts::Service::Notifier),
            log: LogSettings::default(),
            health: platform::health::HealthSettings {
                port: Some(0),
                host: "127.0.0.1".into(),
            },
            retry: RetrySettings {
                tiers: "200ms,200ms,200ms".parse().unwrap(),
            },
        },
        smtp: smtp(mail.host(), mail.port(), 5),
        ops: OpsSettings {
            alert_email: OPS.into(),
        },
        retention: Default::default(),
        batch: Default::default(),
    }
}

/// Runs `app` until the stack is dropped.
pub fn run(stack: &Stack, app: notifier::Application) {
    let token = stack.stop.clone();
    tokio::spawn(async move {
        app.run_until_stopped(async move { token.cancelled().await })
            .await
            .unwrap()
    });
}

/// The notifier alone, running until the stack is dropped.
pub async fn start_notifier() -> Stack {
    platform::telemetry::init_for_tests();
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let mail = MailSink::start();
    let app = notifier::Application::build(settings(&db, &broker, &mail))
        .await
        .unwrap();
    let stack = Stack {
        health_port: app.health_port(),
        pool: db.pool(notifier::SCHEMA).await,
        db,
        broker,
        mail,
        stop: CancellationToken::new(),
    };
    run(&stack, app);
    // Ready once both consumers are attached: their queues are declared and bound, so what a
    // test publishes next is routed to them.
    eventually("the notifier ready", PATIENCE, || async {
        (stack.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    stack
}

/// Polls `probe` until it finds something, for at most `within`; fails the test naming `what`
/// otherwise.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Stack {
    /// GET on the notifier's health port: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let port = self.health_port.expect("a health port");
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The counter `name` of the worker on `queue`, as `/metrics` shows it (0 before its first
    /// count). Every worker of this test's process counts into it, a second replica's too.
    pub async fn counter(&self, name: &str, queue: &str) -> u64 {
        let label = format!("queue=\"{queue}\"");
        self.get("/metrics")
            .await
            .1
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until the notifier has acknowledged `count` messages of `queue` as done: whatever
    /// they were to mail has been mailed, so the sink holds every mail they will ever send.
    pub async fn wait_until_handled(&self, queue: &str, count: u64) {
        eventually(
            &format!("{count} messages of {queue} handled"),
            PATIENCE,
            || async {
                (self.counter("connecx_messages_handled_total", queue).await >= count).then_some(())
            },
        )
        .await;
    }

    /// The first mail to `recipient`, waiting for it.
    pub async fn mail_to(&self, recipient: &str) -> ReceivedMail {
        self.mail
            .wait_for_mail_to(recipient, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no mail to {recipient}"))
    }

    /// Every dead letter the notifier stored: id, kind and status, oldest first.
    pub async fn stored_dead_letters(&self) -> Vec<(Uuid, String, String)> {
        sqlx::query_as("SELECT id, error_kind, status FROM dead_letters ORDER BY received_at")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until the notifier has stored `count` dead letters, and returns them.
    pub async fn wait_for_dead_letters(&self, count: usize) -> Vec<(Uuid, String, String)> {
        eventually(
            &format!("{count} dead letters stored"),
            PATIENCE,
            || async {
                let stored = self.stored_dead_letters().await;
                (stored.len() >= count).then_some(stored)
            },
        )
        .await
    }

    /// What the sent-mail ledger says of the mail about `dedup_key` to `recipient`.
    pub async fn mail_claim(&self, dedup_key: &str, recipient: &str) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM sent_mail WHERE dedup_key = $1 AND recipient = $2")
            .bind(dedup_key)
            .bind(recipient)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }
}

/// The text of `mail` says each of `facts`.
#[track_caller]
pub fn says(mail: &ReceivedMail, facts: &[&str]) {
    for fact in facts {
        assert!(
            mail.text_body.contains(fact),
            "{fact:?} missing from {:?}:\n{}",
            mail.subject,
            mail.text_body
        );
    }
}

/// The HTML of `mail` says each of `facts`.
#[track_caller]
pub fn html_says(mail: &ReceivedMail, facts: &[&str]) {
    let html = mail.html_body.as_deref().unwrap_or_default();
    for fact in facts {
        assert!(html.contains(fact), "{fact:?} missing from:\n{html}");
    }
}

/// A window from now to now: the tests that need hours build their own.
fn now() -> BookingWindow {
    let now = chrono::Utc::now();
    BookingWindow {
        starts_at: now,
        ends_at: now,
        local_starts_at: now.naive_utc(),
        local_ends_at: now.naive_utc(),
    }
}

pub fn visitor_booking(managers: &[&str]) -> VisitorBooking {
    bookings::visitor_booking(managers, now())
}

/// A new visitor booking of the building managed by `managers`.
pub fn visit(managers: &[&str]) -> Envelope {
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorBookingCreated(visitor_booking(managers)),
    )
}

/// A result of a visit of [`MANAGER`]'s building.
pub fn visitor_result(
    booking_id: Uuid,
    version: i64,
    make: fn(VisitorAccessResult) -> Event,
    pin: Option<&str>,
) -> Envelope {
    Envelope::new(
        booking_id,
        version,
        make(VisitorAccessResult {
            booking: visitor_booking(&[MANAGER]),
            pin: pin.map(String::from),
            failure: None,
        }),
    )
}

/// A failure only a manager can remedy.
pub fn needing_a_manager(code: &str, message: &str) -> AccessFailure {
    AccessFailure {
        code: code.into(),
        message: message.into(),
        needs_manager: true,
    }
}

/// Ana's booking of the games room in [`MANAGER`]'s building, run under `policy`.
pub fn facility_booking(policy: DoubleBookingPolicy) -> FacilityBooking {
    bookings::facility_booking(&[MANAGER], policy, now())
}

pub async fn publish(stack: &Stack, envelope: &Envelope) {
    Publisher::new(&amqp(&stack.broker), "test")
        .publish_event(envelope)
        .await
        .unwrap();
}

/// Publishes `envelopes` at once (pipelined, one wait for their confirms): a burst.
pub async fn publish_all(stack: &Stack, envelopes: &[Envelope]) {
    Publisher::new(&amqp(&stack.broker), "test")
        .publish_events(envelopes)
        .await
        .unwrap();
}

/// Puts `envelope` on `connecx.dead` as `service` gives up on it for good with `error`, as dead
/// letter `id`.
pub async fn publish_dead_letter(
    stack: &Stack,
    envelope: &Envelope,
    id: Uuid,
    service: &str,
    error: &str,
) {
    let mut dead = Headers::default();
    dead.set(headers::DEAD_LETTER_ID, id.to_string());
    dead.set(headers::SERVICE, service);
    dead.set(headers::ORIGINAL_QUEUE, service);
    dead.set(headers::ERROR_KIND, "permanent");
    dead.set(headers::ERROR, error);
    let body = envelope.to_json();
    let message_id = envelope.event_id.to_string();
    Publisher::new(&amqp(&stack.broker), "test")
        .publish(Outgoing {
            exchange: DEAD_LETTER_EXCHANGE,
            routing_key: envelope.routing_key(),
            body: &body,
            message_id: Some(&message_id),
            headers: dead,
        })
        .await
        .unwrap();
}
