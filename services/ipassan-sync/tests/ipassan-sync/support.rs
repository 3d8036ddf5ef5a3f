//! ipassan-sync as it runs in production, on a fresh database and RabbitMQ vhost, talking over
//! HTTP to an in-process ipassan-sim seeded with one building's site. Tests publish booking
//! events and observe what a user would: the simulator's visitors and doors, the result events,
//! the dead letters and the service's `/metrics`.
//!
//! Waiting is on a condition, never on the clock: [`until`] polls a probe (the simulator's
//! request log or state, the service's counters, the database) with a deadline, so a slow
//! machine makes a test slower, not red.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeZone, Utc};
use contracts::{
    BookingState, BookingWindow, Building, DEAD_LETTER_EXCHANGE, DoubleBookingPolicy, Envelope,
    Event, Resident, Visitor, VisitorBooking, headers,
};
use ipassan_sim::model::{Fault, FaultMatch, FaultResponse, LoggedRequest};
use ipassan_sim::{ClientSeed, Person, RunningSim, Seed, SimControl, SiteSeed};
use platform::config::{
    AmqpSettings, DatabaseSettings, LogSettings, RetrySettings, SharedSettings,
};
use testkit::{EventTap, TestBroker, TestDb};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SITE: &str = "harbour-site";
/// Seeded in the simulator but not granted to connecX's client.
pub const FOREIGN_SITE: &str = "other-site";
pub const PERSON: &str = "p-ana";
pub const PERSON_WITHOUT_PROFILE: &str = "p-noprofile";
pub const PROFILE: &str = "ap-7";
pub const LOBBY: &str = "lobby";
/// A door of another profile.
pub const GYM: &str = "gym";
pub const VISITOR_PATH: &str = "/api/v1/access/site/harbour-site/visitor";
/// `CONNECX__SECRETS__KEY` of the harness.
pub const SEALING_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The visit of [`booking`]`(FROM, TO)`, Sydney time.
pub const FROM: &str = "2026-12-01T18:00:00";
pub const TO: &str = "2026-12-01T22:00:00";

/// The service's queue (contracts' `ipassan-sync`).
pub const QUEUE: &str = contracts::IPASSAN_SYNC_QUEUE.name;
/// Messages the worker finished with (acknowledged), per process.
pub const HANDLED: &str = "connecx_messages_handled_total";
/// Transient failures sent to a retry tier.
pub const RETRIED: &str = "connecx_messages_retried_total";
/// Messages turned away by a tenant's bulkhead (breaker open, or too many in flight), waiting
/// without using up a retry.
pub const WAITED: &str = "connecx_messages_waited_total";

/// How a test wants the service set up.
pub struct Options {
    pub tiers: &'static str,
    pub timeout_secs: u64,
    /// Run one replica of the service in this process (off: the test starts the binary itself).
    pub in_process: bool,
    /// The simulator is the deployment's default tenant (off: no default at all).
    pub default_tenant: bool,
    /// Each tenant's bulkhead.
    pub connections: platform::bulkhead::ConnectionSettings,
    /// How bookings are batched (the default: as deployed).
    pub batch: platform::batch::BatchSettings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tiers: "200ms,200ms,200ms",
            timeout_secs: 5,
            in_process: true,
            default_tenant: true,
            connections: Default::default(),
            batch: Default::default(),
        }
    }
}

pub struct Harness {
    pub db: TestDb,
    pub broker: TestBroker,
    pub sim: RunningSim,
    pub control: SimControl,
    /// Everything published under `visitor_access.#`.
    pub results: EventTap,
    /// Everything published to `connecx.dead`.
    pub dead_letters: EventTap,
    /// The first in-process replica's health and metrics port (none without one).
    pub health_port: Option<u16>,
    settings: ipassan_sync::Settings,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start() -> Harness {
    start_with(Options::default()).await
}

/// The default harness with retry tiers `tiers` (e.g. `"1s,1s,1s"`).
pub async fn start_with_tiers(tiers: &'static str) -> Harness {
    start_with(Options {
        tiers,
        ..Options::default()
    })
    .await
}

pub async fn start_with(options: Options) -> Harness {
    platform::telemetry::init_for_tests();
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let sim = ipassan_sim::spawn().await.unwrap();
    let control = sim.control();
    control.seed(&seed()).await.unwrap();
    let results = broker.tap("visitor_access.#").await;
    let dead_letters = broker
        .tap_exchange(DEAD_LETTER_EXCHANGE, lapin::ExchangeKind::Fanout, "")
        .await;

    let settings = ipassan_sync::Settings {
        shared: SharedSettings {
            database: DatabaseSettings {
                url: db.service_url(ipassan_sync::SCHEMA),
                max_connections: 8,
            },
            amqp: AmqpSettings {
                // As the service connects in a deployment: as its own RabbitMQ user.
                url: broker.url_for(contracts::Service::IpassanSync),
                prefetch: 8,
                delivery_limit: 5,
                drain_timeout_secs: 30,
            },
            log: LogSettings::default(),
            // Each in-process replica serves `/healthz`, `/readyz` and `/metrics` on a free port.
            health: platform::health::HealthSettings {
                port: Some(0),
                host: "127.0.0.1".into(),
            },
            retry: RetrySettings {
                tiers: options.tiers.parse().unwrap(),
            },
        },
        ipassan: options
            .default_tenant
            .then(|| ipassan_sync::IpassanSettings {
                base_url: sim.base_url.clone(),
                client_id: "connecx".into(),
                client_secret: "connecx-secret".into(),
                timeout_secs: options.timeout_secs,
            }),
        secrets: platform::secrets::SecretsSettings {
            key: Some(SEALING_KEY.into()),
            previous_keys: None,
        },
        connections: options.connections,
        retention: Default::default(),
        batch: options.batch,
    };
    let stop = CancellationToken::new();
    let mut health_port = None;
    if options.in_process {
        health_port = spawn_service(settings.clone(), &stop).await;
        broker
            .wait_for_consumer(QUEUE, Duration::from_secs(10))
            .await;
    }
    Harness {
        db,
        broker,
        sim,
        control,
        results,
        dead_letters,
        health_port,
        settings,
        stop,
    }
}

async fn spawn_service(settings: ipassan_sync::Settings, stop: &CancellationToken) -> Option<u16> {
    let app = ipassan_sync::Application::build(settings).await.unwrap();
    let port = app.health_port();
    let token = stop.clone();
    tokio::spawn(async move {
        app.run_until_stopped(async move { token.cancelled().await })
            .await
            .unwrap()
    });
    port
}

/// A resident of the simulated sites (Ana Lee), with `profile` as their access profile.
pub fn resident(id: &str, profile: Option<&str>) -> Person {
    Person {
        id: id.into(),
        kind: 1,
        first_name: "Ana".into(),
        last_name: "Lee".into(),
        email: "ana@residents.example".into(),
        access_profile_id: profile.map(String::from),
    }
}

fn seed() -> Seed {
    Seed {
        sites: BTreeMap::from([
            (
                SITE.to_owned(),
                SiteSeed {
                    timezone: Some("Australia/Sydney".into()),
                    persons: vec![
                        resident(PERSON, Some(PROFILE)),
                        resident(PERSON_WITHOUT_PROFILE, None),
                    ],
                    profiles: BTreeMap::from([
                        (
                            PROFILE.to_owned(),
                            vec![LOBBY.to_owned(), "apartment-501".to_owned()],
                        ),
                        ("ap-gym".to_owned(), vec![GYM.to_owned()]),
                    ]),
                },
            ),
            (
                FOREIGN_SITE.to_owned(),
                SiteSeed {
                    persons: vec![resident(PERSON, Some(PROFILE))],
                    ..Default::default()
                },
            ),
        ]),
        clients: vec![ClientSeed {
            client_id: "connecx".into(),
            client_secret: "connecx-secret".into(),
            sites: vec![SITE.into()],
        }],
    }
}

/// `2026-12-01T18:00:00`
pub fn local(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").unwrap()
}

/// A visitor booking of Ana's at the harbour building, Sydney time.
pub fn booking(from: &str, to: &str) -> VisitorBooking {
    let tz = chrono_tz::Australia::Sydney;
    let utc = |text: &str| {
        tz.from_local_datetime(&local(text))
            .single()
            .unwrap()
            .with_timezone(&Utc)
    };
    VisitorBooking {
        building: Building {
            id: "harbour".into(),
            name: "Harbour View".into(),
            timezone: "Australia/Sydney".into(),
            manager_emails: vec!["manager@harbour.example".into()],
            ipassan_site: Some(SITE.into()),
            double_booking_policy: DoubleBookingPolicy::Auto,
            connection_versions: Default::default(),
        },
        window: BookingWindow {
            starts_at: utc(from),
            ends_at: utc(to),
            local_starts_at: local(from),
            local_ends_at: local(to),
        },
        resident: Resident {
            id: "ana".into(),
            name: "Ana Lee".into(),
            email: "ana@residents.example".into(),
            apartment_id: "apt-501".into(),
            ipassan_person_id: Some(PERSON.into()),
        },
        visitor: Visitor {
            name: "Bo van Tan".into(),
            email: "bo@visitors.example".into(),
        },
        provide_access: true,
        state: BookingState::Booked,
    }
}

pub fn created(id: Uuid, booking: VisitorBooking) -> Envelope {
    Envelope::new(id, 1, Event::VisitorBookingCreated(booking))
}

pub fn rescheduled(id: Uuid, version: i64, booking: VisitorBooking) -> Envelope {
    Envelope::new(id, version, Event::VisitorBookingRescheduled(booking))
}

pub fn cancelled(id: Uuid, version: i64, mut booking: VisitorBooking) -> Envelope {
    booking.state = BookingState::Cancelled;
    Envelope::new(id, version, Event::VisitorBookingCancelled(booking))
}

/// The PIN, failure and version a result event carries.
pub fn result_of(envelope: &Envelope) -> &contracts::VisitorAccessResult {
    match &envelope.event {
        Event::VisitorAccessGranted(r)
        | Event::VisitorAccessUpdated(r)
        | Event::VisitorAccessRevoked(r)
        | Event::VisitorAccessFailed(r) => r,
        other => panic!("not a visitor access result: {}", other.event_type()),
    }
}

/// A status-only fault answer.
pub fn status(code: u16) -> FaultResponse {
    FaultResponse {
        status: Some(code),
        ..Default::default()
    }
}

/// The visitor creations among `requests`.
pub fn creates(requests: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == VISITOR_PATH)
        .collect()
}

/// The visitors `sim` holds at `site` for `booking`.
pub async fn visitors_in(
    sim: &SimControl,
    site: &str,
    booking: Uuid,
) -> Vec<ipassan_sim::model::Visitor> {
    sim.state()
        .await
        .unwrap()
        .sites
        .get(site)
        .map(|s| s.visitors.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.external_ref == booking.to_string())
        .collect()
}

/// The value of a metric line `name{labels} value` (labels in any order).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls `probe` every 50 ms until it holds; panics naming `what` after 15 s.
pub async fn until(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Harness {
    /// The `CONNECX__*` environment that runs the service binary as this harness's replica.
    pub fn process_env(&self) -> Vec<(String, String)> {
        let s = &self.settings.shared;
        let ipassan = self
            .settings
            .ipassan
            .as_ref()
            .expect("the harness has a default tenant");
        [
            ("CONNECX__DATABASE__URL", s.database.url.clone()),
            (
                "CONNECX__DATABASE__MAX_CONNECTIONS",
                s.database.max_connections.to_string(),
            ),
            ("CONNECX__AMQP__URL", s.amqp.url.clone()),
            ("CONNECX__AMQP__PREFETCH", s.amqp.prefetch.to_string()),
            (
                "CONNECX__RETRY__TIERS",
                s.retry
                    .tiers
                    .0
                    .iter()
                    .map(|tier| format!("{}ms", tier.as_millis()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("CONNECX__IPASSAN__BASE_URL", ipassan.base_url.clone()),
            ("CONNECX__IPASSAN__CLIENT_ID", ipassan.client_id.clone()),
            (
                "CONNECX__IPASSAN__CLIENT_SECRET",
                ipassan.client_secret.clone(),
            ),
            (
                "CONNECX__IPASSAN__TIMEOUT_SECS",
                ipassan.timeout_secs.to_string(),
            ),
            ("CONNECX__SECRETS__KEY", SEALING_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The broker settings the service runs with (for publishing as a producer would).
    pub fn amqp_settings(&self) -> AmqpSettings {
        self.settings.shared.amqp.clone()
    }

    /// Starts one more replica of the service on the same database and queue.
    pub async fn add_replica(&self) {
        spawn_service(self.settings.clone(), &self.stop).await;
    }

    /// The settings the service runs with.
    pub fn settings(&self) -> &ipassan_sync::Settings {
        &self.settings
    }

    /// Stops the in-process replicas.
    pub fn stop_service(&self) {
        self.stop.cancel();
    }

    pub async fn publish(&self, envelope: &Envelope) {
        self.broker.publish_event(envelope).await;
    }

    /// Publishes `visit` as a new booking (`created`, version 1); returns its id.
    pub async fn publish_created(&self, visit: VisitorBooking) -> Uuid {
        let id = Uuid::new_v4();
        self.publish(&created(id, visit)).await;
        id
    }

    /// Books `visit` as a new booking and waits for its grant: the booking's id and its PIN.
    pub async fn book_granted(&mut self, visit: VisitorBooking) -> (Uuid, String) {
        let id = self.publish_created(visit).await;
        let granted = self.expect_result("visitor_access.granted.v1").await;
        assert_eq!(granted.booking_id, id);
        (id, result_of(&granted).pin.clone().expect("the PIN"))
    }

    /// The next result event (panics after 15 s).
    pub async fn next_result(&mut self) -> Envelope {
        self.results
            .next(Duration::from_secs(15))
            .await
            .expect("a visitor_access result within 15 s")
    }

    /// The next result event, which must be a `routing_key` one.
    pub async fn expect_result(&mut self, routing_key: &str) -> Envelope {
        let result = self.next_result().await;
        assert_eq!(result.routing_key(), routing_key, "{result:?}");
        result
    }

    /// Asserts no further result event comes within `quiet`.
    pub async fn no_more_results(&mut self, quiet: Duration) {
        if let Some(extra) = self.results.next(quiet).await {
            panic!(
                "unexpected result {} v{} for {}",
                extra.routing_key(),
                extra.version,
                extra.booking_id
            );
        }
    }

    /// Asserts no dead letter comes within `quiet`.
    pub async fn no_dead_letters(&mut self, quiet: Duration) {
        if let Some(dead) = self.dead_letters.next_message(quiet).await {
            panic!(
                "unexpected dead letter ({:?}): {:?}",
                dead.headers.get_str(headers::ERROR_KIND),
                dead.headers.get_str(headers::ERROR)
            );
        }
    }

    /// The simulator's visitors made for `booking`.
    pub async fn visitors_for(&self, booking: Uuid) -> Vec<ipassan_sim::model::Visitor> {
        visitors_in(&self.control, SITE, booking).await
    }

    /// Whether the simulator holds no live credential at all.
    pub async fn no_live_credentials(&self) -> bool {
        self.control.state().await.unwrap().credentials.is_empty()
    }

    /// Tries `pin` at `door` with the simulator's clock at site-local `now`.
    pub async fn door_at(&self, now: &str, door: &str, pin: &str) -> (bool, String) {
        self.control.set_clock(now).await.unwrap();
        let check = self.control.try_door(SITE, door, pin).await.unwrap();
        (check.opens, check.reason)
    }

    /// Makes the next `times` requests matching `method` and `path_prefix` answer `respond`.
    pub async fn fault(&self, method: &str, path_prefix: &str, respond: FaultResponse, times: u32) {
        self.control
            .add_fault(&Fault {
                matches: FaultMatch {
                    method: Some(method.into()),
                    path_prefix: Some(path_prefix.into()),
                },
                respond,
                times,
            })
            .await
            .unwrap();
    }

    /// Requests the simulator answered, in order.
    pub async fn requests(&self) -> Vec<LoggedRequest> {
        self.control.requests().await.unwrap()
    }

    /// The version ipassan-sync last applied for `booking` (its own schema; an assertion only).
    pub async fn applied_version(&self, booking: Uuid) -> Option<i64> {
        let pool = self.db.pool(ipassan_sync::SCHEMA).await;
        let version =
            sqlx::query_scalar("SELECT applied_version FROM visitor_access WHERE booking_id = $1")
                .bind(booking)
                .fetch_optional(&pool)
                .await
                .unwrap();
        pool.close().await;
        version
    }

    /// The first replica's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let port = self.health_port.expect("an in-process replica");
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A counter of the worker's queue, as `/metrics` shows it (0 before its first count). Every
    /// in-process replica counts into it; nextest runs each test in a process of its own, so it
    /// is this test's.
    pub async fn queue_counter(&self, name: &str) -> f64 {
        let queue = format!("queue=\"{QUEUE}\"");
        metric(&self.metrics().await, name, &[&queue]).unwrap_or(0.0)
    }

    /// Waits until the worker has finished with `messages` messages (acknowledged them), so
    /// whatever a message could have done has been done.
    pub async fn until_handled(&self, messages: u32) {
        until(&format!("{messages} messages handled"), async || {
            self.queue_counter(HANDLED).await >= f64::from(messages)
        })
        .await;
    }
}
