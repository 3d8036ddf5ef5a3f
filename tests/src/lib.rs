//! Support for the end-to-end tests (`tests/`) and the benchmarks (`benches/`) of this crate: the
//! whole system in one process ([`Stack`]; two buildings on their own systems in [`fleet`]):
//! booking-api, ipassan-sync, salto-sync and notifier, each built exactly as its `main` builds it,
//! on a fresh database, a fresh RabbitMQ vhost and a real SMTP sink. Tests drive it through
//! booking-api's HTTP API like the app does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fleet;

use std::time::Duration;

use booking_api::auth::{TokenClaims, mint_token};
use contracts::{Role, Service};
use platform::config::{
    AmqpSettings, DatabaseSettings, HttpSettings, LogSettings, OpsSettings, RetrySettings,
    SharedSettings, SmtpSettings, SmtpTls,
};
use serde_json::{Value, json};
use testkit::mail_sink::MailSink;
use testkit::{TestBroker, TestDb};
use tokio_util::sync::CancellationToken;

pub const BUILDING: &str = "harbour";
/// The building's iPassan site, and a door of Ana's access profile there.
pub const IPASSAN_SITE: &str = "site-7";
pub const LOBBY: &str = "lobby";
/// Apartment 501's Salto access level and the games room's Salto zone.
pub const ACCESS_LEVEL: &str = "501-56";
pub const ZONE: &str = "GAMES-ROOM";
pub const MANAGER_EMAIL: &str = "manager@harbour.example";
pub const OPS_EMAIL: &str = "ops@connecx.example";
const JWT_SECRET: &str = "an end-to-end secret of at least 32 bytes";
/// `CONNECX__SECRETS__KEY` of every service of the stack.
pub const SEALING_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Everything running; dropped = everything stopped.
pub struct Stack {
    pub ipassan_sim: ipassan_sim::RunningSim,
    pub salto_sim: salto_sim::RunningSim,
    pub db: TestDb,
    pub broker: TestBroker,
    pub mail: MailSink,
    pub api: String,
    pub http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How long a retry tier waits in these tests.
pub const TIERS: &str = "200ms,200ms";

impl Stack {
    /// The stack as the tests run it: 3 database connections a service, so that many stacks
    /// can run side by side.
    pub async fn start() -> Stack {
        Self::start_with_pool(3).await
    }

    /// The stack with `max_connections` database connections a service (the benches run the
    /// services' default, 10).
    pub async fn start_with_pool(max_connections: u32) -> Stack {
        platform::telemetry::init_for_tests();
        let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
        let mail = MailSink::start();
        let stop = CancellationToken::new();
        let database = DatabaseSettings {
            url: db.url.clone(),
            max_connections,
        };
        let amqp = AmqpSettings {
            url: broker.url.clone(),
            prefetch: 16,
            delivery_limit: 5,
            drain_timeout_secs: 30,
        };
        let retry = RetrySettings {
            tiers: TIERS.parse().unwrap(),
        };

        let api = booking_api::Application::build(booking_api_settings(
            database.clone(),
            amqp_as(&amqp, &broker, Service::BookingApi),
            retry.clone(),
            JWT_SECRET,
        ))
        .await
        .expect("booking-api starts");
        let api_url = format!("http://127.0.0.1:{}", api.port());
        spawn(&stop, |s| async move {
            api.run_until_stopped(s).await.map_err(anyhow::Error::from)
        });

        let ipassan_sim = ipassan_sim::spawn().await.expect("ipassan-sim starts");
        ipassan_sim
            .control()
            .seed(&ipassan_seed())
            .await
            .expect("ipassan-sim seeded");
        let ipassan = ipassan_sync::Application::build(ipassan_sync_settings(
            database.clone(),
            amqp_as(&amqp, &broker, Service::IpassanSync),
            retry.clone(),
            &ipassan_sim,
        ))
        .await
        .expect("ipassan-sync starts");
        spawn(&stop, |s| ipassan.run_until_stopped(s));

        let salto_sim = salto_sim::RunningSim::start(0)
            .await
            .expect("salto-sim starts");
        let seeded = reqwest::Client::new()
            .post(format!(
                "{}/_sim/seed",
                salto_sim.url().trim_end_matches('/')
            ))
            .json(&json!({"timezone": "Australia/Sydney",
                          "groups": [{"ext_id": ACCESS_LEVEL, "name": "Apartment 501"},
                                     {"ext_id": "502-56", "name": "Apartment 502"}],
                          "zones": [{"ext_id": ZONE, "name": "Games room"},
                                    {"ext_id": "GYM", "name": "Gym"}]}))
            .send()
            .await
            .expect("salto-sim answers");
        assert!(seeded.status().is_success(), "salto-sim seeded");
        let salto = salto_sync::Application::build(salto_sync_settings(
            database.clone(),
            amqp_as(&amqp, &broker, Service::SaltoSync),
            retry.clone(),
            &salto_sim,
        ))
        .await
        .expect("salto-sync starts");
        spawn(&stop, |s| salto.run_until_stopped(s));

        let notifier = notifier::Application::build(notifier_settings(
            database,
            amqp_as(&amqp, &broker, Service::Notifier),
            retry,
            &mail,
        ))
        .await
        .expect("notifier starts");
        spawn(&stop, |s| notifier.run_until_stopped(s));

        wait_for_consumer_queues(&broker).await;
        let stack = Stack {
            ipassan_sim,
            salto_sim,
            db,
            broker,
            mail,
            api: api_url,
            http: reqwest::Client::new(),
            stop,
        };
        stack.seed().await;
        stack
    }

    pub fn token(&self, role: Role, sub: &str, apartment: Option<&str>) -> String {
        token_for(role, sub, BUILDING, apartment)
    }

    pub fn manager(&self) -> String {
        self.token(Role::Manager, "manager-1", None)
    }

    /// Ana, resident of apartment 501, synced to iPassan person p-ana.
    pub fn ana(&self) -> String {
        self.token(Role::Resident, "ana", Some("apt-501"))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        send_to_api(&self.http, &self.api, method, path, token, body).await
    }

    /// Cancels the booking at `path` (`/v1/visitor-bookings/{id}`, `/v1/facility-bookings/{id}`)
    /// as Ana: booking-api's answer.
    pub async fn cancel(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, &self.ana(), None)
            .await
    }

    /// Waits until the booking at `path` shows Ana access `status` (e.g. `granted`); the booking.
    pub async fn access_becomes(&self, path: &str, status: &str) -> Value {
        let token = self.ana();
        eventually(
            &format!("{path} to be {status}"),
            Duration::from_secs(15),
            || async {
                let (_, booking) = self.send(reqwest::Method::GET, path, &token, None).await;
                (booking["access"]["status"] == status).then_some(booking)
            },
        )
        .await
    }

    async fn seed(&self) {
        let manager = self.manager();
        let puts = [
            (
                format!("/v1/buildings/{BUILDING}"),
                json!({"name": "Harbour View", "timezone": "Australia/Sydney", "manager_emails": [MANAGER_EMAIL],
                       "ipassan_site": "site-7", "double_booking_policy": "auto"}),
            ),
            (
                "/v1/apartments/apt-501".into(),
                json!({"access_control_id": "501-56"}),
            ),
            (
                "/v1/facilities/games-room".into(),
                json!({"name": "Games room", "access_control_facility_id": ZONE}),
            ),
            (
                "/v1/residents/ana".into(),
                json!({"name": "Ana Lee", "email": "ana@residents.example", "apartment_id": "apt-501", "ipassan_person_id": "p-ana"}),
            ),
        ];
        for (path, body) in puts {
            let (status, answer) = self
                .send(reqwest::Method::PUT, &path, &manager, Some(body))
                .await;
            assert!(
                (200..300).contains(&status),
                "seeding {path} failed: {status} {answer}"
            );
        }
    }
}

/// A token booking-api (signing with [`JWT_SECRET`]) accepts for an hour.
fn token_for(role: Role, sub: &str, building: &str, apartment: Option<&str>) -> String {
    let claims = TokenClaims {
        sub: sub.into(),
        role,
        building_id: building.into(),
        apartment_id: apartment.map(String::from),
        exp: (chrono::Utc::now().timestamp() + 3600) as u64,
    };
    mint_token(JWT_SECRET, &claims).expect("a token")
}

/// `method` on booking-api at `api` (its base URL) and `path`, with the bearer `token` and a JSON
/// `body`: the status, and the JSON answer (null when there is none).
async fn send_to_api(
    http: &reqwest::Client,
    api: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http
        .request(method, format!("{api}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("booking-api answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Waits until every queue the services consume has its consumer on `broker`: the services are
/// up, their queues bound (a queue that merely exists may not be bound yet, and an event
/// published then would be routed nowhere).
async fn wait_for_consumer_queues(broker: &TestBroker) {
    for queue in Service::ALL.iter().flat_map(|service| service.consumes()) {
        broker
            .wait_for_consumer(queue.name, Duration::from_secs(20))
            .await;
    }
}

/// The sections every service reads, as the service connects in a deployment: to PostgreSQL as
/// its own role (the broker URL is the caller's); no health port.
fn shared_settings(
    database: DatabaseSettings,
    amqp: AmqpSettings,
    retry: RetrySettings,
    schema: &str,
) -> SharedSettings {
    SharedSettings {
        database: testkit::db::as_service(&database, schema),
        amqp,
        log: LogSettings::default(),
        health: Default::default(),
        retry,
    }
}

/// booking-api's settings: HTTP on a free port of 127.0.0.1, tokens signed with `jwt_secret`.
pub fn booking_api_settings(
    database: DatabaseSettings,
    amqp: AmqpSettings,
    retry: RetrySettings,
    jwt_secret: &str,
) -> booking_api::Settings {
    let mut shared = shared_settings(database, amqp, retry, booking_api::SCHEMA);
    // As deployed: the results consumer's results wait for their batch without a connection.
    shared.amqp.prefetch = booking_api::settings::DEFAULT_PREFETCH;
    booking_api::Settings {
        retention: Default::default(),
        batch: Default::default(),
        shared,
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            ..Default::default()
        },
        auth: booking_api::AuthSettings {
            jwt_secret: jwt_secret.into(),
            leeway_secs: 0,
            issuer: None,
            audience: None,
        },
        outbox: Default::default(),
        secrets: platform::secrets::SecretsSettings {
            key: Some(SEALING_KEY.into()),
            previous_keys: None,
        },
        ipassan: booking_api::settings::DefaultIpassan {
            base_url: Some("http://default-ipassan.invalid".into()),
        },
        salto: booking_api::settings::DefaultSalto {
            url: Some("http://default-salto.invalid".into()),
        },
        // The shipped bounds on windows; the benches book far more, and faster, for one
        // resident than a person would.
        limits: booking_api::settings::LimitsSettings {
            max_live_bookings: 1_000_000,
            writes_per_minute: 0,
            ..Default::default()
        },
    }
}

/// ipassan-sync's settings for the iPassan simulator `sim` (its e2e client credentials).
pub fn ipassan_sync_settings(
    database: DatabaseSettings,
    amqp: AmqpSettings,
    retry: RetrySettings,
    sim: &ipassan_sim::RunningSim,
) -> ipassan_sync::Settings {
    let mut shared = shared_settings(database, amqp, retry, ipassan_sync::SCHEMA);
    // As deployed: ipassan-sync's messages wait for their batch without a database connection.
    shared.amqp.prefetch = ipassan_sync::settings::DEFAULT_PREFETCH;
    ipassan_sync::Settings {
        retention: Default::default(),
        batch: Default::default(),
        shared,
        connections: Default::default(),
        ipassan: Some(ipassan_sync::IpassanSettings {
            base_url: sim.base_url.clone(),
            client_id: "connecx".into(),
            client_secret: "connecx-e2e-secret".into(),
            timeout_secs: 5,
        }),
        secrets: platform::secrets::SecretsSettings {
            key: Some(SEALING_KEY.into()),
            previous_keys: None,
        },
    }
}

/// salto-sync's settings for the Salto simulator `sim` (no authentication, default cleaner).
pub fn salto_sync_settings(
    database: DatabaseSettings,
    amqp: AmqpSettings,
    retry: RetrySettings,
    sim: &salto_sim::RunningSim,
) -> salto_sync::Settings {
    let mut shared = shared_settings(database, amqp, retry, salto_sync::SCHEMA);
    // As deployed: salto-sync's messages wait for their batch without a database connection.
    shared.amqp.prefetch = salto_sync::settings::DEFAULT_PREFETCH;
    salto_sync::Settings {
        shared,
        salto: Some(salto_sync::SaltoSettings {
            url: sim.url(),
            auth_kind: salto_sync::AuthKind::None,
            key: None,
            username: None,
            password: None,
            timeout_secs: 5,
        }),
        secrets: platform::secrets::SecretsSettings {
            key: Some(SEALING_KEY.into()),
            previous_keys: None,
        },
        cleaner: salto_sync::CleanerSettings::default(),
        connections: Default::default(),
        batch: Default::default(),
    }
}

/// notifier's settings for the SMTP sink `mail` (no TLS, alerts to [`OPS_EMAIL`]).
pub fn notifier_settings(
    database: DatabaseSettings,
    amqp: AmqpSettings,
    retry: RetrySettings,
    mail: &MailSink,
) -> notifier::Settings {
    let mut shared = shared_settings(database, amqp, retry, notifier::SCHEMA);
    // As deployed: the results in hand wait for their batch without a database connection, and
    // the notifier runs more batches at once than the shared default.
    shared.amqp.prefetch = notifier::settings::DEFAULT_PREFETCH;
    notifier::Settings {
        retention: Default::default(),
        batch: platform::batch::BatchSettings {
            max_running: notifier::settings::DEFAULT_MAX_RUNNING,
            ..Default::default()
        },
        shared,
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
            alert_email: OPS_EMAIL.into(),
        },
    }
}

fn spawn<F, Fut, E>(stop: &CancellationToken, run: F)
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Into<anyhow::Error>,
{
    let token = stop.clone();
    let future = run(Box::pin(async move { token.cancelled().await }));
    tokio::spawn(async move {
        if let Err(error) = future.await {
            let error: anyhow::Error = error.into();
            panic!("a service stopped with an error: {error:#}");
        }
    });
}

/// Sends `request` and reads its JSON answer, whatever the status: for the simulators' control
/// APIs and the benchmarks' own calls.
pub async fn json_answer(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("an answer");
    response.json().await.expect("a JSON answer")
}

/// Asserts that `text` (a mail's subject or body, say) contains `expected`, showing the text when
/// it does not.
#[track_caller]
pub fn assert_contains(text: &str, expected: &str) {
    assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
}

/// `rfc3339` moved by `days`, as RFC 3339.
pub fn days_later(rfc3339: &str, days: i64) -> String {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    (time + chrono::Duration::days(days)).to_rfc3339()
}

/// Tomorrow 18:00–22:00 in Sydney, as RFC 3339 with offset.
pub fn tomorrow_evening() -> (String, String) {
    use chrono::{Days, TimeZone};
    let tz: chrono_tz::Tz = "Australia/Sydney".parse().unwrap();
    let day = chrono::Utc::now()
        .with_timezone(&tz)
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap();
    let at = |h| {
        tz.from_local_datetime(&day.and_hms_opt(h, 0, 0).unwrap())
            .single()
            .unwrap()
            .to_rfc3339()
    };
    (at(18), at(22))
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// iPassan as the building has it: Ana (p-ana) with the access profile of apartment 501, and the
/// credentials ipassan-sync uses.
pub fn ipassan_seed() -> ipassan_sim::Seed {
    use std::collections::BTreeMap;
    ipassan_sim::Seed {
        sites: BTreeMap::from([(
            IPASSAN_SITE.to_owned(),
            ipassan_sim::SiteSeed {
                timezone: Some("Australia/Sydney".into()),
                persons: vec![ipassan_sim::Person {
                    id: "p-ana".into(),
                    kind: 1,
                    first_name: "Ana".into(),
                    last_name: "Lee".into(),
                    email: "ana@residents.example".into(),
                    access_profile_id: Some("ap-501".into()),
                }],
                profiles: BTreeMap::from([(
                    "ap-501".to_owned(),
                    vec![LOBBY.to_owned(), "apt-501".to_owned()],
                )]),
            },
        )]),
        clients: vec![ipassan_sim::ClientSeed {
            client_id: "connecx".into(),
            client_secret: "connecx-e2e-secret".into(),
            sites: vec![IPASSAN_SITE.into()],
        }],
    }
}

/// `amqp` as `service` connects in a deployment: as its own RabbitMQ user, allowed on `broker`'s
/// vhost only its part of the topology. Test code that looks at queues or publishes as another
/// service would keeps the admin `broker.url`.
pub fn amqp_as(amqp: &AmqpSettings, broker: &TestBroker, service: Service) -> AmqpSettings {
    AmqpSettings {
        url: broker.url_for(service),
        ..amqp.clone()
    }
}
