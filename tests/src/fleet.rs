//! Two buildings, each on its own access-control systems, for the end-to-end tests of
//! connections per building: every service built as its `main` builds it, on a fresh database,
//! vhost and SMTP sink, with two iPassan tenants and two Salto servers (simulators over HTTP).
//!
//! - Harbour View (`harbour`) has no connection of its own: it uses the deployment defaults,
//!   iPassan tenant A and Salto server A.
//! - Bay Towers (`bay`) is connected by an operator ([`Fleet::connect_bay`]) to tenant B and
//!   server B (which wants a SHIP key), through booking-api's API like connecX staff would.
//!
//! Every line the services log is kept ([`captured_logs`]) and every message published on
//! `connecx.events` is tapped from the start ([`Fleet::events`]), so tests can look for secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use contracts::{Role, Service};
use platform::bulkhead::ConnectionSettings;
use platform::config::{AmqpSettings, DatabaseSettings, RetrySettings};
use platform::secrets::SecretsSettings;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::mail_sink::MailSink;
use testkit::{EventTap, TestBroker, TestDb};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{JWT_SECRET, SEALING_KEY, TIERS};

pub const HARBOUR: &str = "harbour";
pub const BAY: &str = "bay";
pub const HARBOUR_MANAGER: &str = "manager@harbour.example";
pub const BAY_MANAGER: &str = "manager@bay.example";
pub const ACCESS_LEVEL: &str = "501-56";
pub const ZONE: &str = "GAMES-ROOM";
/// Secrets of tenant B and server B: they must never show up in an answer, a log or a message.
pub const BAY_CLIENT_SECRET: &str = "bay-tenant-client-secret-4711";
pub const BAY_SHIP_KEY: &str = "bay-ship-key-0815";
const TENANT_A_SECRET: &str = "tenant-a-secret";

/// Every line logged in this process so far (services included), for scans.
pub fn captured_logs() -> String {
    testkit::logs::captured()
}

fn capture_logs() {
    testkit::logs::capture("info,sqlx=warn");
}

/// How the fleet is set up.
#[derive(Clone)]
pub struct FleetOptions {
    /// Tenant A and server A are the deployment's defaults (off: no default at all).
    pub defaults: bool,
    pub connections: ConnectionSettings,
    pub tiers: &'static str,
    pub secrets: SecretsSettings,
    /// Each SHIP call's timeout on server A (seconds).
    pub salto_timeout_secs: u64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            defaults: true,
            connections: ConnectionSettings::default(),
            tiers: TIERS,
            secrets: SecretsSettings {
                key: Some(SEALING_KEY.into()),
                previous_keys: None,
            },
            salto_timeout_secs: 5,
        }
    }
}

pub struct Fleet {
    pub db: TestDb,
    pub broker: TestBroker,
    pub mail: MailSink,
    /// Tenant A (the default) and tenant B (the bay building's own).
    pub ipassan_a: ipassan_sim::RunningSim,
    pub ipassan_b: ipassan_sim::RunningSim,
    /// Server A (the default) and server B (the bay building's own).
    pub salto_a: salto_sim::RunningSim,
    pub salto_b: salto_sim::RunningSim,
    pub api: String,
    pub http: reqwest::Client,
    /// Every message published on `connecx.events` since the start.
    pub events: EventTap,
    options: FleetOptions,
    stop: CancellationToken,
    running: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> Fleet {
        capture_logs();
        let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
        let events = broker.tap("#").await;
        let mail = MailSink::start();
        let ipassan_a = tenant("harbour-site", "p-ana", "connecx", TENANT_A_SECRET).await;
        let ipassan_b = tenant("bay-site", "p-bea", "connecx-bay", BAY_CLIENT_SECRET).await;
        let salto_a = server(None).await;
        let salto_b = server(Some(BAY_SHIP_KEY)).await;
        let mut fleet = Fleet {
            db,
            broker,
            mail,
            ipassan_a,
            ipassan_b,
            salto_a,
            salto_b,
            api: String::new(),
            http: reqwest::Client::new(),
            events,
            options,
            stop: CancellationToken::new(),
            running: Vec::new(),
        };
        fleet.start_services().await;
        fleet.seed().await;
        fleet
    }

    /// Stops every service and starts it again with `options` (on the same database, broker,
    /// simulators and mail sink), as a redeployment would.
    pub async fn restart(&mut self, options: FleetOptions) {
        self.stop.cancel();
        for task in self.running.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        self.stop = CancellationToken::new();
        self.options = options;
        self.start_services().await;
    }

    async fn start_services(&mut self) {
        let options = self.options.clone();
        let database = DatabaseSettings {
            url: self.db.url.clone(),
            max_connections: 12,
        };
        let amqp = AmqpSettings {
            url: self.broker.url.clone(),
            prefetch: 16,
            delivery_limit: 5,
            drain_timeout_secs: 10,
        };
        let retry = RetrySettings {
            tiers: options.tiers.parse().expect("retry tiers"),
        };

        let mut api_settings = crate::booking_api_settings(
            database.clone(),
            self.amqp_as(&amqp, Service::BookingApi),
            retry.clone(),
            JWT_SECRET,
        );
        api_settings.secrets = options.secrets.clone();
        if !options.defaults {
            api_settings.ipassan.base_url = None;
            api_settings.salto.url = None;
        }
        let api = booking_api::Application::build(api_settings)
            .await
            .expect("booking-api starts");
        self.api = format!("http://127.0.0.1:{}", api.port());
        self.spawn(|stop| async move {
            api.run_until_stopped(stop)
                .await
                .map_err(anyhow::Error::from)
        });

        let mut ipassan_settings = crate::ipassan_sync_settings(
            database.clone(),
            self.amqp_as(&amqp, Service::IpassanSync),
            retry.clone(),
            &self.ipassan_a,
        );
        if let Some(default) = ipassan_settings.ipassan.as_mut() {
            default.client_secret = TENANT_A_SECRET.into();
        }
        ipassan_settings.secrets = options.secrets.clone();
        ipassan_settings.connections = options.connections.clone();
        if !options.defaults {
            ipassan_settings.ipassan = None;
        }
        let ipassan = ipassan_sync::Application::build(ipassan_settings)
            .await
            .expect("ipassan-sync starts");
        self.spawn(|stop| ipassan.run_until_stopped(stop));

        let mut salto_settings = crate::salto_sync_settings(
            database.clone(),
            self.amqp_as(&amqp, Service::SaltoSync),
            retry.clone(),
            &self.salto_a,
        );
        salto_settings.secrets = options.secrets.clone();
        salto_settings.connections = options.connections.clone();
        if let Some(default) = salto_settings.salto.as_mut() {
            default.timeout_secs = options.salto_timeout_secs;
        }
        if !options.defaults {
            salto_settings.salto = None;
        }
        let salto = salto_sync::Application::build(salto_settings)
            .await
            .expect("salto-sync starts");
        self.spawn(|stop| salto.run_until_stopped(stop));

        let notifier = notifier::Application::build(crate::notifier_settings(
            database,
            self.amqp_as(&amqp, Service::Notifier),
            retry,
            &self.mail,
        ))
        .await
        .expect("notifier starts");
        self.spawn(|stop| notifier.run_until_stopped(stop));

        crate::wait_for_consumer_queues(&self.broker).await;
    }

    /// As each service connects in a deployment: as its own RabbitMQ user.
    fn amqp_as(&self, amqp: &AmqpSettings, service: Service) -> AmqpSettings {
        crate::amqp_as(amqp, &self.broker, service)
    }

    fn spawn<F, Fut, E>(&mut self, run: F)
    where
        F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error>,
    {
        let token = self.stop.clone();
        let future = run(Box::pin(async move { token.cancelled().await }));
        self.running.push(tokio::spawn(async move {
            if let Err(error) = future.await {
                let error: anyhow::Error = error.into();
                panic!("a service stopped with an error: {error:#}");
            }
        }));
    }

    pub fn token(&self, role: Role, sub: &str, building: &str, apartment: Option<&str>) -> String {
        crate::token_for(role, sub, building, apartment)
    }

    pub fn operator(&self) -> String {
        self.token(Role::Operator, "ops-1", "", None)
    }

    pub fn manager(&self, building: &str) -> String {
        self.token(
            Role::Manager,
            &format!("manager-{building}"),
            building,
            None,
        )
    }

    /// The building's resident: Ana at harbour, Bea at bay (both of apartment apt-501).
    pub fn resident(&self, building: &str) -> String {
        let sub = if building == HARBOUR { "ana" } else { "bea" };
        self.token(Role::Resident, sub, building, Some("apt-501"))
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        crate::send_to_api(&self.http, &self.api, method, path, token, body).await
    }

    async fn seed(&self) {
        for (building, name, manager, resident, person) in [
            (HARBOUR, "Harbour View", HARBOUR_MANAGER, "ana", "p-ana"),
            (BAY, "Bay Towers", BAY_MANAGER, "bea", "p-bea"),
        ] {
            let token = self.manager(building);
            let puts = [
                (
                    format!("/v1/buildings/{building}"),
                    json!({"name": name, "timezone": "Australia/Sydney", "manager_emails": [manager],
                           "ipassan_site": "harbour-site", "double_booking_policy": "auto"}),
                ),
                (
                    "/v1/apartments/apt-501".to_owned(),
                    json!({"access_control_id": ACCESS_LEVEL}),
                ),
                (
                    "/v1/facilities/games-room".to_owned(),
                    json!({"name": "Games room", "access_control_facility_id": ZONE}),
                ),
                (
                    format!("/v1/residents/{resident}"),
                    json!({"name": format!("{resident} of {name}"), "email": format!("{resident}@{building}.example"),
                           "apartment_id": "apt-501", "ipassan_person_id": person}),
                ),
            ];
            for (path, body) in puts {
                let (status, answer) = self.send(Method::PUT, &path, &token, Some(body)).await;
                assert!(
                    (200..300).contains(&status),
                    "seeding {path}: {status} {answer}"
                );
            }
        }
    }

    /// The operator connects the bay building to tenant B and server B.
    pub async fn connect_bay(&self) {
        let operator = self.operator();
        let (status, answer) = self
            .send(
                Method::PUT,
                &format!("/v1/buildings/{BAY}/connections/ipassan"),
                &operator,
                Some(
                    json!({"base_url": self.ipassan_b.base_url, "client_id": "connecx-bay",
                            "client_secret": BAY_CLIENT_SECRET, "site": "bay-site"}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        self.connect_bay_salto(&self.salto_b.url(), Some(BAY_SHIP_KEY))
            .await;
    }

    /// The operator points the bay building's Salto at `url` (with a SHIP key, or none), with a
    /// timeout of 2 s per SHIP call.
    pub async fn connect_bay_salto(&self, url: &str, key: Option<&str>) {
        self.connect_bay_salto_with_timeout(url, key, 2).await;
    }

    /// As [`Fleet::connect_bay_salto`], with `timeout_secs` per SHIP call.
    pub async fn connect_bay_salto_with_timeout(
        &self,
        url: &str,
        key: Option<&str>,
        timeout_secs: u64,
    ) {
        let body = match key {
            Some(key) => {
                json!({"url": url, "auth_kind": "key", "key": key, "timeout_secs": timeout_secs})
            }
            None => json!({"url": url, "auth_kind": "none", "timeout_secs": timeout_secs}),
        };
        let (status, answer) = self
            .send(
                Method::PUT,
                &format!("/v1/buildings/{BAY}/connections/salto"),
                &self.operator(),
                Some(body),
            )
            .await;
        assert!((200..300).contains(&status), "{answer}");
    }

    /// Books a visitor with access for the building's resident, waiting for the outcome.
    pub async fn book_visit(&self, building: &str, starts_at: &str, ends_at: &str) -> Value {
        let body = json!({"visitor": {"name": "Dee Visitor", "email": format!("dee@{building}-visitors.example")},
                          "starts_at": starts_at, "ends_at": ends_at, "provide_access": true});
        self.book("/v1/visitor-bookings", building, body).await
    }

    /// Books the games room for the building's resident, waiting for the outcome.
    pub async fn book_games_room(&self, building: &str, starts_at: &str, ends_at: &str) -> Value {
        let body = json!({"facility_id": "games-room", "starts_at": starts_at, "ends_at": ends_at});
        self.book("/v1/facility-bookings", building, body).await
    }

    async fn book(&self, path: &str, building: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.api))
            .bearer_auth(self.resident(building))
            .header("Prefer", "wait=5")
            .json(&body)
            .send()
            .await
            .expect("booking-api answers");
        let status = response.status().as_u16();
        let booking: Value = response.json().await.expect("a JSON answer");
        assert_eq!(status, 201, "{booking}");
        booking
    }

    /// Bay's own systems fail, `times` calls each: its Salto server answers only after
    /// `salto_delay` (longer than the connection's timeout) and its iPassan answers visitor calls
    /// with 503.
    pub async fn fail_bays_systems(&self, salto_delay: Duration, times: u32) {
        let faulted = self
            .http
            .post(format!("http://{}/_sim/faults", self.salto_b.addr))
            .json(&json!({"respond": {"delay_ms": salto_delay.as_millis() as u64}, "times": times}))
            .send()
            .await
            .expect("salto-sim answers");
        assert!(faulted.status().is_success(), "bay's Salto server faulted");
        self.ipassan_b
            .control()
            .add_fault(&ipassan_sim::model::Fault {
                matches: ipassan_sim::model::FaultMatch {
                    method: Some("POST".into()),
                    path_prefix: Some("/api/v1/access/site/".into()),
                },
                respond: ipassan_sim::model::FaultResponse {
                    status: Some(503),
                    ..Default::default()
                },
                times,
            })
            .await
            .expect("bay's iPassan faulted");
    }

    /// Bay's own systems answer again (undoes [`Fleet::fail_bays_systems`]).
    pub async fn bays_systems_recover(&self) {
        let cleared = self
            .http
            .delete(format!("http://{}/_sim/faults", self.salto_b.addr))
            .send()
            .await
            .expect("salto-sim answers");
        assert!(cleared.status().is_success(), "bay's Salto server cleared");
        self.ipassan_b
            .control()
            .clear_faults()
            .await
            .expect("bay's iPassan cleared");
    }

    /// Waits until the booking at `path` has access `status` (e.g. `granted`).
    pub async fn access_becomes(&self, path: &str, building: &str, status: &str) -> Value {
        let token = self.resident(building);
        crate::eventually(
            &format!("{path} to be {status}"),
            Duration::from_secs(30),
            || async {
                let (_, booking) = self.send(Method::GET, path, &token, None).await;
                (booking["access"]["status"] == status).then_some(booking)
            },
        )
        .await
    }

    /// The zones Salto server `sim` holds for the access level.
    pub async fn zones_on(&self, sim: &salto_sim::RunningSim) -> Vec<String> {
        let state =
            crate::json_answer(self.http.get(format!("http://{}/_sim/state", sim.addr))).await;
        state["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["ext_id"] == ACCESS_LEVEL)
            .flat_map(|g| g["zones"].as_array().cloned().unwrap_or_default())
            .filter_map(|z| z["zone"].as_str().map(str::to_owned))
            .collect()
    }

    /// The visitors tenant `sim` holds on `site`: (external ref, has a live PIN).
    pub async fn visitors_on(
        &self,
        sim: &ipassan_sim::RunningSim,
        site: &str,
    ) -> Vec<(String, bool)> {
        let state = sim.control().state().await.expect("ipassan-sim state");
        state
            .sites
            .get(site)
            .map(|s| {
                s.visitors
                    .iter()
                    .map(|v| (v.external_ref.clone(), v.credential.is_some()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An iPassan tenant: one site with one resident (access profile with the lobby door).
async fn tenant(site: &str, person: &str, client: &str, secret: &str) -> ipassan_sim::RunningSim {
    let sim = ipassan_sim::spawn().await.expect("ipassan-sim starts");
    sim.control()
        .seed(&ipassan_sim::Seed {
            sites: BTreeMap::from([(
                site.to_owned(),
                ipassan_sim::SiteSeed {
                    timezone: Some("Australia/Sydney".into()),
                    persons: vec![ipassan_sim::Person {
                        id: person.into(),
                        kind: 1,
                        first_name: "Resident".into(),
                        last_name: person.into(),
                        email: format!("{person}@residents.example"),
                        access_profile_id: Some("ap-501".into()),
                    }],
                    profiles: BTreeMap::from([("ap-501".to_owned(), vec!["lobby".to_owned()])]),
                },
            )]),
            clients: vec![ipassan_sim::ClientSeed {
                client_id: client.into(),
                client_secret: secret.into(),
                sites: vec![site.into()],
            }],
        })
        .await
        .expect("ipassan-sim seeded");
    sim
}

/// A Salto server with the access level and the games room (and a SHIP key, when given).
async fn server(key: Option<&str>) -> salto_sim::RunningSim {
    let sim = salto_sim::RunningSim::start(0)
        .await
        .expect("salto-sim starts");
    let mut seed = json!({"timezone": "Australia/Sydney",
                          "groups": [{"ext_id": ACCESS_LEVEL, "name": "Apartment 501"}],
                          "zones": [{"ext_id": ZONE, "name": "Games room"}]});
    if let Some(key) = key {
        seed["auth"] = json!({"kind": "key", "key": key});
    }
    let seeded = reqwest::Client::new()
        .post(format!("http://{}/_sim/seed", sim.addr))
        .json(&seed)
        .send()
        .await
        .expect("salto-sim answers");
    assert!(seeded.status().is_success(), "salto-sim seeded");
    sim
}
