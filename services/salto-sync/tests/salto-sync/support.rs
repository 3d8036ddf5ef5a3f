//! What salto-sync's service tests share: a fresh database and vhost, salto-sim in-process over
//! HTTP, salto-sync replicas built as `main` builds them (with a driven clock, and each
//! replica's cleaner at hand to tick), facility booking events as booking-api would publish them,
//! a tap on the `facility_access.*` results, and probes that wait for what a test must know
//! happened before it goes on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use contracts::{
    Apartment, BookedBy, BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope,
    Event, Facility, FacilityBooking, Role,
};
use platform::config::{
    AmqpSettings, DatabaseSettings, LogSettings, RetrySettings, SharedSettings,
};
use salto_sim::RunningSim;
use salto_sync::cleaner::{Cleaner, Clearing};
use salto_sync::{AuthKind, CleanerSettings, ManualClock, SaltoSettings, Settings};
use serde_json::{Value, json};
use testkit::{EventTap, TestBroker, TestDb};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SYDNEY: Tz = chrono_tz::Australia::Sydney;
/// `CONNECX__SECRETS__KEY` of the harness.
pub const SEALING_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const BUILDING: &str = "harbour";
pub const APARTMENT: &str = "501-56";
pub const GAMES: &str = "GAMES-ROOM";
pub const GYM: &str = "GYM";

/// How long a message already published takes at most to reach a tap. A test that knows the
/// publishing is over (the run that would publish has finished) waits this long to see that
/// nothing more came.
pub const DELIVERED: Duration = Duration::from_millis(300);

pub struct Harness {
    pub db: TestDb,
    pub broker: TestBroker,
    pub sim: RunningSim,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub tap: EventTap,
    pub cleaner: CleanerSettings,
    /// The simulator is the deployment's default server (off: no default at all).
    pub default_server: bool,
    /// Each server's bulkhead (change before starting more replicas).
    pub connections: platform::bulkhead::ConnectionSettings,
    /// Every replica's cleaner, to tick by hand.
    cleaners: Mutex<Vec<Arc<Cleaner>>>,
    /// Every replica's health and metrics port.
    health_ports: Mutex<Vec<u16>>,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A local wall-clock time in Sydney.
pub fn sydney(date: &str, time: &str) -> DateTime<Utc> {
    let local = NaiveDateTime::new(
        NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
        NaiveTime::parse_from_str(time, "%H:%M:%S").unwrap(),
    );
    SYDNEY
        .from_local_datetime(&local)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

impl Harness {
    /// Everything, with one salto-sync replica running, the clock at 2026-11-30 12:00 Sydney.
    pub async fn start() -> Harness {
        Self::start_with(
            CleanerSettings::default(),
            sydney("2026-11-30", "12:00:00"),
            1,
        )
        .await
    }

    /// As [`Harness::start`], with no default server: only buildings with a connection of their
    /// own reach Salto.
    pub async fn start_without_default() -> Harness {
        Self::start_configured(
            CleanerSettings::default(),
            sydney("2026-11-30", "12:00:00"),
            1,
            false,
        )
        .await
    }

    /// As [`Harness::start`], with `replicas` salto-sync replicas (none: the test starts them).
    pub async fn start_replicas(replicas: usize) -> Harness {
        Self::start_with(
            CleanerSettings::default(),
            sydney("2026-11-30", "12:00:00"),
            replicas,
        )
        .await
    }

    pub async fn start_with(
        cleaner: CleanerSettings,
        now: DateTime<Utc>,
        replicas: usize,
    ) -> Harness {
        Self::start_configured(cleaner, now, replicas, true).await
    }

    async fn start_configured(
        cleaner: CleanerSettings,
        now: DateTime<Utc>,
        replicas: usize,
        default_server: bool,
    ) -> Harness {
        platform::telemetry::init_for_tests();
        let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
        let sim = RunningSim::start(0).await.unwrap();
        let tap = broker.tap("facility_access.#").await;
        let harness = Harness {
            db,
            broker,
            sim,
            http: reqwest::Client::new(),
            clock: ManualClock::new(now),
            tap,
            cleaner,
            default_server,
            connections: platform::bulkhead::ConnectionSettings::default(),
            cleaners: Mutex::new(Vec::new()),
            health_ports: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
        };
        harness
            .control(
                "seed",
                json!({
                    "groups": [{"ext_id": APARTMENT, "name": "Apartment 501"}, {"ext_id": "502-57", "name": "Apartment 502"}],
                    "zones": [{"ext_id": GAMES, "name": "Games room"}, {"ext_id": GYM, "name": "Gym"}],
                }),
            )
            .await;
        for _ in 0..replicas {
            harness.start_replica().await;
        }
        harness
    }

    pub fn settings(&self) -> Settings {
        Settings {
            shared: SharedSettings {
                database: DatabaseSettings {
                    url: self.db.service_url(salto_sync::SCHEMA),
                    max_connections: 5,
                },
                amqp: AmqpSettings {
                    // As the service connects in a deployment: as its own RabbitMQ user.
                    url: self.broker.url_for(contracts::Service::SaltoSync),
                    // As deployed: messages wait for their batch without a connection.
                    prefetch: salto_sync::settings::DEFAULT_PREFETCH,
                    delivery_limit: 5,
                    drain_timeout_secs: 30,
                },
                retry: RetrySettings {
                    tiers: "200ms,200ms,200ms,200ms".parse().unwrap(),
                },
                log: LogSettings::default(),
                health: platform::health::HealthSettings {
                    port: Some(0),
                    host: "127.0.0.1".into(),
                },
            },
            salto: self.default_server.then(|| SaltoSettings {
                url: self.sim.url(),
                auth_kind: AuthKind::None,
                key: None,
                username: None,
                password: None,
                timeout_secs: 1,
            }),
            connections: self.connections.clone(),
            secrets: platform::secrets::SecretsSettings {
                key: Some(SEALING_KEY.into()),
                previous_keys: None,
            },
            cleaner: self.cleaner.clone(),
            batch: Default::default(),
        }
    }

    /// Starts one more salto-sync replica on the same database, broker, Salto and clock.
    pub async fn start_replica(&self) {
        let app = salto_sync::Application::build_with_clock(
            self.settings(),
            Arc::new(self.clock.clone()),
        )
        .await
        .expect("salto-sync starts");
        self.cleaners.lock().unwrap().push(Arc::new(app.cleaner()));
        self.health_ports
            .lock()
            .unwrap()
            .push(app.health_port().expect("a health port"));
        let token = self.stop.clone();
        tokio::spawn(async move {
            app.run_until_stopped(async move { token.cancelled().await })
                .await
                .expect("salto-sync stops cleanly");
        });
        self.broker
            .wait_for_consumer("salto-sync", Duration::from_secs(20))
            .await;
    }

    /// Runs one tick of every replica's cleaner now, all at once (as their own ticks would run
    /// beside each other): what each ran.
    pub async fn tick_every_replica(&self) -> Vec<Clearing> {
        let cleaners = self.cleaners.lock().unwrap().clone();
        let ticks = cleaners.iter().map(|cleaner| cleaner.tick());
        futures::future::join_all(ticks)
            .await
            .into_iter()
            .flat_map(|ran| ran.expect("a tick of the cleaner"))
            .collect()
    }

    /// How many messages salto-sync sent back to wait for a retry, as the first replica's
    /// `/metrics` counts them.
    pub async fn messages_retried(&self) -> f64 {
        self.counter("connecx_messages_retried_total").await
    }

    /// Messages the first replica sent to wait in the retry tiers without using a retry.
    pub async fn messages_waited(&self) -> f64 {
        self.counter("connecx_messages_waited_total").await
    }

    /// The first replica's `counter`, summed over its labels.
    pub async fn counter(&self, counter: &str) -> f64 {
        let port = self.health_ports.lock().unwrap()[0];
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with(counter))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("http://{}/_sim/{path}", self.sim.addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    pub async fn fault(&self, request_name: &str, respond: Value, times: u32) {
        self.control(
            "faults",
            json!({"match": {"request_name": request_name}, "respond": respond, "times": times}),
        )
        .await;
    }

    /// What the simulator answers to `GET /_sim/{path}`.
    async fn look(&self, path: &str) -> Value {
        self.http
            .get(format!("http://{}/_sim/{path}", self.sim.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The permissions Salto holds for a group: `(zone, period start date)`.
    pub async fn permissions(&self, group: &str) -> Vec<Value> {
        let state = self.look("state").await;
        state["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["ext_id"] == group)
            .map(|g| g["zones"].as_array().unwrap().clone())
            .unwrap_or_default()
    }

    /// Whether a card of `group` opens `zone` at a Sydney wall-clock time (on the sim's clock).
    pub async fn opens(&self, zone: &str, group: &str, local: &str) -> bool {
        self.control("clock", json!({"now": local})).await;
        let answer = self
            .control(&format!("doors/{zone}/card"), json!({"group": group}))
            .await;
        answer["opens"].as_bool().unwrap()
    }

    pub async fn publish(&self, envelope: &Envelope) {
        self.broker.publish_event(envelope).await;
    }

    /// Publishes `envelope` and returns the next result (within 15 s).
    pub async fn publish_for_result(&mut self, envelope: &Envelope) -> Envelope {
        self.publish(envelope).await;
        self.next_result(15).await
    }

    /// A tap on the dead letters (`connecx.dead`, a fanout).
    pub async fn dead_letters(&self) -> EventTap {
        self.broker
            .tap_exchange(
                contracts::DEAD_LETTER_EXCHANGE,
                lapin::ExchangeKind::Fanout,
                "",
            )
            .await
    }

    /// The next result event, failing the test after `secs`.
    pub async fn next_result(&mut self, secs: u64) -> Envelope {
        self.tap
            .next(Duration::from_secs(secs))
            .await
            .expect("a facility_access result within the time")
    }

    /// The next `count` results, each within 15 s, then nothing more: `(routing key, booking)`,
    /// sorted. Call it once what publishes them is known to be done.
    pub async fn results(&mut self, count: usize) -> Vec<(&'static str, Uuid)> {
        let mut seen = Vec::new();
        for _ in 0..count {
            let result = self.next_result(15).await;
            seen.push((result.routing_key(), result.booking_id));
        }
        self.no_more_results().await;
        seen.sort();
        seen
    }

    /// The next `count` results, each within 30 s, every one `granted` (a failure fails the test
    /// with its reason): the bookings granted.
    pub async fn granted(&mut self, count: usize) -> Vec<Uuid> {
        let mut granted = Vec::new();
        while granted.len() < count {
            let result = self.next_result(30).await;
            assert_eq!(
                result.routing_key(),
                "facility_access.granted.v1",
                "{:?}",
                result_of(&result).failure
            );
            granted.push(result.booking_id);
        }
        granted
    }

    /// Results come until every one of `expected` (`(routing key, booking)`) was seen, each within
    /// 15 s of the one before; the others seen meanwhile are returned with them.
    pub async fn results_including(
        &mut self,
        expected: &[(&str, Uuid)],
    ) -> Vec<(&'static str, Uuid)> {
        let mut seen = Vec::new();
        while !expected.iter().all(|e| seen.contains(e)) {
            let result = self.next_result(15).await;
            seen.push((result.routing_key(), result.booking_id));
        }
        seen
    }

    /// Asserts that no result arrives: to be asked once what would publish one is known to be
    /// done, so that only the delivery of what was already published is waited for.
    pub async fn no_more_results(&mut self) {
        if let Some(stray) = self.tap.next(DELIVERED).await {
            panic!(
                "no more results expected, got {} for {}",
                stray.routing_key(),
                stray.booking_id
            );
        }
    }

    /// Every result published until nothing more comes for `quiet`.
    pub async fn results_until_quiet(&mut self, quiet: Duration) -> Vec<Envelope> {
        let mut seen = Vec::new();
        while let Some(envelope) = self.tap.next(quiet).await {
            seen.push(envelope);
        }
        seen
    }

    /// The SHIP requests of a name Salto received and answered, in its request log.
    async fn requests(&self, name: &str) -> Vec<Value> {
        let logged = self.look("requests").await;
        logged
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["request_name"] == name)
            .cloned()
            .collect()
    }

    /// Number of SHIP requests of a name Salto received.
    pub async fn requests_named(&self, name: &str) -> usize {
        self.requests(name).await.len()
    }

    /// Number of SHIP requests of a name Salto refused: answered with a SHIP error, or with an
    /// HTTP error.
    pub async fn refusals_of(&self, name: &str) -> usize {
        self.requests(name)
            .await
            .iter()
            .filter(|r| !r["code"].is_null() || r["http_status"] != 200)
            .count()
    }

    /// Number of injected faults Salto has yet to apply. A fault is used up as its request
    /// arrives, so a delayed request is being answered once its fault is gone.
    pub async fn faults_pending(&self) -> usize {
        self.look("state").await["faults"].as_array().unwrap().len()
    }

    /// Waits until salto-sync has recorded `version` of `booking` (its snapshot, not yet acted
    /// on).
    pub async fn snapshot_recorded(&self, booking: Uuid, version: i64) {
        let snapshots = self.db.pool(salto_sync::SCHEMA).await;
        until(
            &format!("version {version} of {booking} recorded"),
            async || {
                sqlx::query_scalar::<_, i64>(
                    "SELECT version FROM booking_snapshots WHERE booking_id = $1",
                )
                .bind(booking)
                .fetch_optional(&snapshots)
                .await
                .unwrap()
                    == Some(version)
            },
        )
        .await;
    }

    /// Replaces a group's list in Salto over SHIP itself, as someone at the Salto console would
    /// (`entries`: `Group_Zone` elements; none empties it).
    pub async fn set_by_hand(&self, group: &str, entries: &str) {
        let update = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestCall><RequestName>SaltoDBGroup.Update</RequestName><Params><SaltoDBGroup><ExtGroupID>{group}</ExtGroupID><GroupZoneList>{entries}</GroupZoneList></SaltoDBGroup></Params></RequestCall>"
        );
        let answer = self
            .http
            .post(self.sim.url())
            .body(update)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!answer.contains("<Exception>"), "{answer}");
    }
}

/// Polls `probe` every 50 ms until it holds, failing the test after 10 s.
pub async fn until(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A facility booking as booking-api publishes it.
#[derive(Debug, Clone)]
pub struct Booking {
    pub id: Uuid,
    pub version: i64,
    pub building: String,
    /// The version of the building's Salto connection the snapshot is made under.
    pub salto_connection: i64,
    pub zone: String,
    pub access_level: String,
    pub date: String,
    pub from: String,
    pub to: String,
    pub policy: DoubleBookingPolicy,
}

impl Booking {
    /// 18:00–22:00 on `date` in the games room, for apartment 501.
    pub fn games(date: &str) -> Booking {
        Booking {
            id: Uuid::new_v4(),
            version: 1,
            building: BUILDING.into(),
            salto_connection: 0,
            zone: GAMES.into(),
            access_level: APARTMENT.into(),
            date: date.into(),
            from: "18:00:00".into(),
            to: "22:00:00".into(),
            policy: DoubleBookingPolicy::Auto,
        }
    }

    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = zone.into();
        self
    }

    pub fn hours(mut self, from: &str, to: &str) -> Self {
        self.from = from.into();
        self.to = to.into();
        self
    }

    pub fn manual(mut self) -> Self {
        self.policy = DoubleBookingPolicy::Manual;
        self
    }

    /// Of `building`, made under version `connection` of its Salto connection.
    pub fn of_building(mut self, building: &str, connection: i64) -> Self {
        self.building = building.into();
        self.salto_connection = connection;
        self
    }

    /// The next version, moved to other hours (and made under connection version `connection`).
    pub fn moved_to(&mut self, from: &str, to: &str, connection: i64) -> Envelope {
        self.version += 1;
        self.from = from.into();
        self.to = to.into();
        self.salto_connection = connection;
        Envelope::new(
            self.id,
            self.version,
            Event::FacilityBookingRescheduled(self.snapshot(BookingState::Booked)),
        )
    }

    /// The next version, cancelled, made under connection version `connection`.
    pub fn cancelled_under(&mut self, connection: i64) -> Envelope {
        self.salto_connection = connection;
        self.cancelled()
    }

    fn snapshot(&self, state: BookingState) -> FacilityBooking {
        let starts = sydney(&self.date, &self.from);
        let ends = if self.to == "24:00:00" {
            let next = NaiveDate::parse_from_str(&self.date, "%Y-%m-%d")
                .unwrap()
                .succ_opt()
                .unwrap();
            sydney(&next.to_string(), "00:00:00")
        } else {
            sydney(&self.date, &self.to)
        };
        FacilityBooking {
            building: Building {
                id: self.building.clone(),
                name: format!("Building {}", self.building),
                timezone: "Australia/Sydney".into(),
                manager_emails: vec!["manager@harbour.example".into()],
                ipassan_site: None,
                double_booking_policy: self.policy,
                connection_versions: contracts::ConnectionVersions {
                    ipassan: 0,
                    salto: self.salto_connection,
                },
            },
            window: BookingWindow {
                starts_at: starts,
                ends_at: ends,
                local_starts_at: starts.with_timezone(&SYDNEY).naive_local(),
                local_ends_at: ends.with_timezone(&SYDNEY).naive_local(),
            },
            facility: Facility {
                id: format!("facility-{}", self.zone.to_lowercase()),
                name: self.zone.clone(),
                zone_id: self.zone.clone(),
            },
            apartment: Apartment {
                id: "apt-501".into(),
                access_level_id: self.access_level.clone(),
            },
            booked_by: BookedBy {
                user_id: "ana".into(),
                role: Role::Resident,
                name: Some("Ana Lee".into()),
                email: Some("ana@residents.example".into()),
            },
            state,
        }
    }

    pub fn created(&self) -> Envelope {
        Envelope::new(
            self.id,
            self.version,
            Event::FacilityBookingCreated(self.snapshot(BookingState::Booked)),
        )
    }

    /// The next version, moved to `date`.
    pub fn rescheduled(&mut self, date: &str) -> Envelope {
        self.version += 1;
        self.date = date.into();
        Envelope::new(
            self.id,
            self.version,
            Event::FacilityBookingRescheduled(self.snapshot(BookingState::Booked)),
        )
    }

    /// The next version, cancelled.
    pub fn cancelled(&mut self) -> Envelope {
        self.version += 1;
        Envelope::new(
            self.id,
            self.version,
            Event::FacilityBookingCancelled(self.snapshot(BookingState::Cancelled)),
        )
    }
}

/// The result's `held_by` and failure, for assertions.
pub fn result_of(envelope: &Envelope) -> &contracts::FacilityAccessResult {
    match &envelope.event {
        Event::FacilityAccessGranted(r)
        | Event::FacilityAccessDeferred(r)
        | Event::FacilityAccessRevoked(r)
        | Event::FacilityAccessExpired(r)
        | Event::FacilityAccessFailed(r) => r,
        other => panic!("not a facility access result: {other:?}"),
    }
}
