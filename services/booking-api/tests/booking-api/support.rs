//! Spawning booking-api for a test (zero2prod's `spawn_app`): a fresh database, a fresh RabbitMQ
//! vhost, a random port, and helpers to seed a building, mint tokens and read what was logged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use booking_api::auth::{TokenClaims, mint_token};
use booking_api::outbox::OutboxSettings;
use booking_api::settings::{DefaultIpassan, DefaultSalto, LimitsSettings};
use booking_api::{Application, AuthSettings, RunError, Settings};
use contracts::Role;
use platform::config::HttpSettings;
use platform::secrets::SecretsSettings;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{TestBroker, TestDb};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// The `CONNECX__SECRETS__KEY` of test apps (32 bytes, base64).
pub const SEALING_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Another key, for rotation.
pub const NEXT_SEALING_KEY: &str = "HxwdGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA=";
pub const BUILDING: &str = "harbour-view";
pub const OTHER_BUILDING: &str = "river-side";

fn init_logs() {
    testkit::logs::capture("info,booking_api=trace,platform=trace,tower_http=debug,sqlx=debug");
}

/// Everything logged in this process so far.
pub fn captured_logs() -> String {
    testkit::logs::captured()
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    database_url: String,
    amqp_url: String,
    broker: Option<TestBroker>,
    /// For apps spawned without a broker: what they try to reach instead.
    _unreachable: Option<BrokerProxy>,
    /// The service's schema, for assertions on what it stored.
    pub pool: PgPool,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<Result<(), RunError>>>,
}

/// booking-api on a fresh database and vhost.
pub async fn spawn_app() -> TestApp {
    let broker = TestBroker::create().await;
    let url = broker.url.clone();
    spawn_app_with_amqp(broker, url).await
}

/// booking-api on a fresh database and no reachable broker, for tests that look only at the
/// HTTP API: they do not need a vhost of the shared RabbitMQ, and they show the API does not
/// depend on the broker being up (the outbox keeps the events).
pub async fn spawn_app_offline() -> TestApp {
    let nowhere = BrokerProxy::start(false).await;
    let mut app = spawn(None, nowhere.url("offline")).await;
    app._unreachable = Some(nowhere);
    app
}

/// booking-api on a fresh database and vhost that it reaches through a [`BrokerProxy`], down
/// until the test brings it up.
pub async fn spawn_app_behind_proxy() -> (TestApp, BrokerProxy) {
    let broker = TestBroker::create().await;
    let proxy = BrokerProxy::start(false).await;
    let url = proxy.url(&broker.vhost);
    (spawn_app_with_amqp(broker, url).await, proxy)
}

/// booking-api on a fresh database, talking to RabbitMQ at `amqp_url` (e.g. through a proxy) as
/// its own user; `broker` is the vhost the test observes.
pub async fn spawn_app_with_amqp(broker: TestBroker, amqp_url: String) -> TestApp {
    // As the service connects in a deployment: as its own RabbitMQ user (through a proxy too).
    let own = broker.url_for(contracts::Service::BookingApi);
    let amqp_url = testkit::broker::with_credentials_of(&amqp_url, &own);
    spawn(Some(broker), amqp_url).await
}

/// booking-api as [`spawn_app`], with its settings changed by `tweak` first.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let broker = TestBroker::create().await;
    let own = broker.url_for(contracts::Service::BookingApi);
    let amqp_url = testkit::broker::with_credentials_of(&broker.url, &own);
    let db = TestDb::create().await;
    let mut settings = settings_for(db.service_url(booking_api::SCHEMA), amqp_url);
    tweak(&mut settings);
    spawn_with(settings, Some(broker)).await
}

/// booking-api as [`spawn_app_offline`], with its settings changed by `tweak` first.
pub async fn spawn_app_offline_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let nowhere = BrokerProxy::start(false).await;
    let db = TestDb::create().await;
    let mut settings = settings_for(db.service_url(booking_api::SCHEMA), nowhere.url("offline"));
    tweak(&mut settings);
    let mut app = spawn_with(settings, None).await;
    app._unreachable = Some(nowhere);
    app
}

async fn spawn(broker: Option<TestBroker>, amqp_url: String) -> TestApp {
    let db = TestDb::create().await;
    spawn_on(db.service_url(booking_api::SCHEMA), broker, amqp_url).await
}

async fn spawn_on(database_url: String, broker: Option<TestBroker>, amqp_url: String) -> TestApp {
    spawn_with(settings_for(database_url, amqp_url), broker).await
}

/// The settings of a test app: a deployment with a default iPassan and Salto, and a sealing key.
pub fn settings_for(database_url: String, amqp_url: String) -> Settings {
    Settings {
        batch: Default::default(),
        retention: Default::default(),
        shared: testkit::shared_settings(
            database_url,
            amqp_url,
            &[Duration::from_millis(200), Duration::from_millis(500)],
        ),
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            ..Default::default()
        },
        auth: AuthSettings {
            jwt_secret: SECRET.into(),
            leeway_secs: 0,
            issuer: None,
            audience: None,
        },
        outbox: OutboxSettings {
            poll_interval_ms: 200,
            max_backoff_ms: 500,
            ..OutboxSettings::default()
        },
        secrets: SecretsSettings {
            key: Some(SEALING_KEY.into()),
            previous_keys: None,
        },
        ipassan: DefaultIpassan {
            base_url: Some("https://default-tenant.ipassan.example".into()),
        },
        salto: DefaultSalto {
            url: Some("https://salto.default.example/".into()),
        },
        // The shipped bounds, but no write rate: many tests write quickly as one resident. The
        // rate limit's own tests turn it on.
        limits: LimitsSettings {
            writes_per_minute: 0,
            ..LimitsSettings::default()
        },
    }
}

/// Starts booking-api with `settings`.
pub async fn spawn_with(settings: Settings, broker: Option<TestBroker>) -> TestApp {
    init_logs();
    let database_url = settings.shared.database.url.clone();
    let amqp_url = settings.shared.amqp.url.clone();
    let application = Application::build(settings)
        .await
        .unwrap_or_else(|e| panic!("booking-api did not start: {e}"));
    let address = format!("http://127.0.0.1:{}", application.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let pool = PgPool::connect_with(
        database_url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("database url")
            .options([("search_path", "booking")]),
    )
    .await
    .expect("test pool");
    TestApp {
        address,
        client: reqwest::Client::new(),
        database_url,
        amqp_url,
        broker,
        _unreachable: None,
        pool,
        stop: Some(stop),
        running: Some(running),
    }
}

impl TestApp {
    /// A second booking-api replica on the same database and broker (its own port and relay).
    pub async fn replica(&self) -> TestApp {
        spawn_on(self.database_url.clone(), None, self.amqp_url.clone()).await
    }

    /// The vhost the app publishes to.
    pub fn broker(&self) -> &TestBroker {
        self.broker
            .as_ref()
            .expect("this test app was spawned without a broker")
    }

    /// Everything sent to `connecx.dead` from now on (nothing else consumes it in these tests).
    pub async fn tap_dead_letters(&self) -> testkit::EventTap {
        self.broker()
            .tap_exchange(
                contracts::DEAD_LETTER_EXCHANGE,
                lapin::ExchangeKind::Fanout,
                "",
            )
            .await
    }

    /// Stops the service and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), running)
                .await
                .expect("booking-api stops within 20s");
            result
                .expect("booking-api task")
                .expect("booking-api stopped cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn token(&self, role: Role, sub: &str, building: &str, apartment: Option<&str>) -> String {
        token_with(SECRET, role, sub, building, apartment, 3600)
    }

    pub fn manager(&self) -> String {
        self.token(Role::Manager, "manager-1", BUILDING, None)
    }

    /// A connecX operator (no building claim).
    pub fn operator(&self) -> String {
        self.token(Role::Operator, "ops-1", "", None)
    }

    pub fn resident_ana(&self) -> String {
        self.token(Role::Resident, "ana", BUILDING, Some("apt-501"))
    }

    pub fn resident_bo(&self) -> String {
        self.token(Role::Resident, "bo", BUILDING, Some("apt-502"))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::PUT, path, Some(token), Some(&body))
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, Some(token), Some(&body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(&body))
            .await
    }

    /// POSTs a new booking to `collection` as `token`, asserts it was created (201), and returns
    /// the booking.
    pub async fn book(&self, collection: &str, token: &str, booking: Value) -> Value {
        let response = self.post(collection, token, booking).await;
        let status = response.status();
        let created = body(response).await;
        assert_eq!(status, 201, "not created: {created}");
        created
    }

    /// POSTs `body` to `path` as `token`, asserts the answer is a problem with `status`, and
    /// returns the problem.
    pub async fn post_refused(&self, path: &str, token: &str, body: Value, status: u16) -> Value {
        problem(self.post(path, token, body).await, status).await
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// Sets up Harbour View (Sydney): apartments 501 (Salto level) and 502, 503 (no Salto level),
    /// the games room (Salto zone) and the gym (no zone), residents Ana (501, synced to iPassan),
    /// Bo (502, synced) and Cy (503, not synced); and River Side with its own manager.
    pub async fn seed(&self) {
        let manager = self.manager();
        let ok = |r: reqwest::Response| async move {
            let status = r.status();
            assert!(
                status.is_success(),
                "seeding failed: {status} {}",
                r.text().await.unwrap_or_default()
            );
        };
        ok(self
            .put(
                &format!("/v1/buildings/{BUILDING}"),
                &manager,
                json!({
                    "name": "Harbour View",
                    "timezone": "Australia/Sydney",
                    "manager_emails": ["manager@harbour.example"],
                    "ipassan_site": "site-7",
                    "double_booking_policy": "auto"
                }),
            )
            .await)
        .await;
        ok(self
            .put(
                "/v1/apartments/apt-501",
                &manager,
                json!({"access_control_id": "501-56"}),
            )
            .await)
        .await;
        ok(self
            .put(
                "/v1/apartments/apt-502",
                &manager,
                json!({"access_control_id": "502-56"}),
            )
            .await)
        .await;
        ok(self
            .put(
                "/v1/apartments/apt-503",
                &manager,
                json!({"access_control_id": null}),
            )
            .await)
        .await;
        ok(self
            .put(
                "/v1/facilities/games-room",
                &manager,
                json!({"name": "Games room", "access_control_facility_id": "GAMES-ROOM"}),
            )
            .await)
        .await;
        ok(self
            .put("/v1/facilities/gym", &manager, json!({"name": "Gym"}))
            .await)
        .await;
        for (id, name, apartment, person) in [
            ("ana", "Ana Lee", "apt-501", Some("p-ana")),
            ("bo", "Bo Tan", "apt-502", Some("p-bo")),
            ("cy", "Cy Ng", "apt-503", None),
        ] {
            ok(self
                .put(
                    &format!("/v1/residents/{id}"),
                    &manager,
                    json!({"name": name, "email": format!("{id}@residents.example"), "apartment_id": apartment, "ipassan_person_id": person}),
                )
                .await)
            .await;
        }
        let other = self.token(Role::Manager, "manager-2", OTHER_BUILDING, None);
        ok(self
            .put(
                &format!("/v1/buildings/{OTHER_BUILDING}"),
                &other,
                json!({"name": "River Side", "timezone": "Europe/London", "manager_emails": ["m@river.example"]}),
            )
            .await)
        .await;
    }

    /// Rows in the outbox (all, sent or not).
    pub async fn outbox_rows(&self) -> i64 {
        self.rows("outbox").await
    }

    /// Rows in `table` of the service's schema.
    pub async fn rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("count of {table}: {e}"))
    }
}

pub fn token_with(
    secret: &str,
    role: Role,
    sub: &str,
    building: &str,
    apartment: Option<&str>,
    expires_in: i64,
) -> String {
    let claims = TokenClaims {
        sub: sub.into(),
        role,
        building_id: building.into(),
        apartment_id: apartment.map(String::from),
        exp: (chrono::Utc::now().timestamp() + expires_in).max(0) as u64,
    };
    mint_token(secret, &claims).expect("token")
}

/// A visitor booking body for tomorrow evening, Sydney time.
pub fn visit(provide_access: bool) -> Value {
    let (starts_at, ends_at) = tomorrow_evening();
    json!({
        "visitor": {"name": "Dee Visitor", "email": "dee@visitors.example"},
        "starts_at": starts_at,
        "ends_at": ends_at,
        "provide_access": provide_access
    })
}

/// A visitor booking body (no access asked for) from `starts_at` to `ends_at`.
pub fn visit_between(starts_at: &str, ends_at: &str) -> Value {
    json!({
        "visitor": {"name": "Dee Visitor", "email": "dee@visitors.example"},
        "starts_at": starts_at, "ends_at": ends_at, "provide_access": false
    })
}

/// A facility booking body: `facility_id` for the window `(starts_at, ends_at)`.
pub fn facility_booking(facility_id: &str, (starts_at, ends_at): &(String, String)) -> Value {
    json!({"facility_id": facility_id, "starts_at": starts_at, "ends_at": ends_at})
}

/// Where the booking an answer shows lives: `{collection}/{id}`.
pub fn booking_path(collection: &str, booking: &Value) -> String {
    let id = booking["id"].as_str().expect("the booking has an id");
    format!("{collection}/{id}")
}

/// A problem's `code` and `field`, to check both at once.
pub fn code_and_field(problem: &Value) -> (Option<&str>, Option<&str>) {
    (problem["code"].as_str(), problem["field"].as_str())
}

/// 18:00–22:00 tomorrow in Sydney, as RFC 3339 with the Sydney offset.
pub fn tomorrow_evening() -> (String, String) {
    local_tomorrow(18, 22)
}

/// `from`:00–`to`:00 tomorrow in Sydney.
pub fn local_tomorrow(from: u32, to: u32) -> (String, String) {
    use chrono::TimeZone;
    let zone = chrono_tz::Australia::Sydney;
    let day = chrono::Utc::now().with_timezone(&zone).date_naive() + chrono::Duration::days(1);
    let at = |hour: u32| {
        zone.from_local_datetime(&day.and_hms_opt(hour, 0, 0).expect("valid hour"))
            .earliest()
            .expect("hour exists")
            .to_rfc3339()
    };
    (at(from), at(to))
}

pub async fn body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts `response` is a problem+json with `status` and returns its body.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "expected {status}, got {actual}: {text}");
    assert_eq!(content_type, "application/problem+json", "for {text}");
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(json["status"], status);
    assert!(json["code"].is_string(), "problem without a code: {json}");
    json
}

/// A TCP proxy in front of RabbitMQ that a test can take down and bring back, as a broker
/// outage looks to a client (connections refused and existing ones cut), without touching the
/// real broker other tests share.
pub struct BrokerProxy {
    pub address: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl BrokerProxy {
    pub async fn start(up: bool) -> Self {
        let target =
            std::env::var("CONNECX_TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".into());
        Self::start_to(target, up).await
    }

    /// A proxy to any TCP server at `target` (`host:port`), e.g. PostgreSQL.
    pub async fn start_to(target: String, up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let address = listener.local_addr().expect("proxy address");
        let is_up = Arc::new(AtomicBool::new(up));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let is_up = is_up.clone();
            let links = links.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !is_up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let target = target.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    if let Ok(mut links) = links.lock() {
                        links.push(link.abort_handle());
                    }
                }
            })
            .abort_handle()
        };
        Self {
            address,
            up: is_up,
            links,
            accept,
        }
    }

    /// The AMQP URL of `vhost` through this proxy.
    pub fn url(&self, vhost: &str) -> String {
        format!("amqp://guest:guest@{}/{vhost}", self.address)
    }

    /// Refuses new connections and cuts the open ones.
    pub fn go_down(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut links) = self.links.lock() {
            for link in links.drain(..) {
                link.abort();
            }
        }
    }

    pub fn come_up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.go_down();
        self.accept.abort();
    }
}
