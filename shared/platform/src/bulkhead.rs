//! Bulkheads between the outside systems a worker talks to (docs/architecture.md, "Many
//! buildings"): one building's iPassan or Salto failing or hanging must not delay any other.
//!
//! Each connection (an iPassan tenant, a Salto server) gets a [`Bulkhead`]:
//! - a cap on the messages working with it at once ([`ConnectionSettings::max_in_flight`]), so
//!   a hanging system holds a few of the worker's consumer slots, never all of them for longer
//!   than a message waits for one of its slots ([`ConnectionSettings::slot_wait_ms`], short:
//!   the slots of a system that answers free up in milliseconds);
//! - a circuit breaker: after [`ConnectionSettings::breaker_failures`] failed calls in a row
//!   (timeouts, unreachable, 5xx, refused credentials) it opens, and messages for the connection
//!   wait through the retry tiers without calling out ([`crate::amqp::HandlerError::Unavailable`]);
//!   after [`ConnectionSettings::breaker_open_secs`] one message is let through as a probe, and
//!   its calls close the breaker again or keep it open.
//!
//! The clients report every call through [`CallObserver`]; the handler asks [`Bulkhead::admit`]
//! before it starts. Health per building is a metric (`connecx_connection_up`,
//! `connecx_connection_breaker_state`), and [`Bulkhead::health`] says how long a connection has
//! been failing, for the outage alerts ([`crate::outages`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use contracts::{AccessSystem, Building};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{ConfigError, Validate};

/// `CONNECX__CONNECTIONS__*`: the bulkheads' limits.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionSettings {
    /// Messages one worker process works on with one connection at once (default 4).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Failed calls in a row that open the breaker (default 5).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before it lets one probe through (default 30 s).
    #[serde(default = "default_breaker_open_secs")]
    pub breaker_open_secs: u64,
    /// How long a message waits for one of the connection's slots when they are all taken,
    /// before it goes to wait in the retry tiers (default 250 ms; 0: never waits).
    #[serde(default = "default_slot_wait_ms")]
    pub slot_wait_ms: u64,
    /// How long a connection must have been failing before its buildings' managers get one mail
    /// (default 300 s = 5 minutes).
    #[serde(default = "default_outage_alert_secs")]
    pub outage_alert_secs: u64,
}

fn default_max_in_flight() -> usize {
    4
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_open_secs() -> u64 {
    30
}

fn default_slot_wait_ms() -> u64 {
    250
}

fn default_outage_alert_secs() -> u64 {
    300
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            breaker_failures: default_breaker_failures(),
            breaker_open_secs: default_breaker_open_secs(),
            slot_wait_ms: default_slot_wait_ms(),
            outage_alert_secs: default_outage_alert_secs(),
        }
    }
}

impl Validate for ConnectionSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "connections.max_in_flight",
                "must be at least 1",
            ));
        }
        if self.breaker_failures == 0 {
            return Err(ConfigError::invalid(
                "connections.breaker_failures",
                "must be at least 1",
            ));
        }
        if self.breaker_open_secs == 0 {
            return Err(ConfigError::invalid(
                "connections.breaker_open_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What a client tells about each call it made.
pub trait CallObserver: Send + Sync {
    /// The system answered (even with a refusal of the request itself: it works).
    fn answered(&self);
    /// The system did not work: a timeout, no connection, a server error, refused credentials.
    fn failed(&self, error: &str);
}

/// The breaker's state, as the metric shows it (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

#[derive(Debug)]
enum Circuit {
    Closed { failures_in_a_row: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    circuit: Circuit,
    /// When the calls began to fail (the first failure after the last answer).
    failing_since: Option<DateTime<Utc>>,
    last_error: String,
    last_failure: Option<Instant>,
    /// When the connection last answered.
    last_answer: Option<DateTime<Utc>>,
    /// Every building whose messages used this connection, as their latest snapshot had it.
    buildings: BTreeMap<String, Building>,
}

/// One connection's cap and breaker.
pub struct Bulkhead {
    system: AccessSystem,
    endpoint: String,
    settings: ConnectionSettings,
    slots: Arc<Semaphore>,
    inner: Mutex<Inner>,
}

/// Why a message may not work with a connection now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{system} at {endpoint} is failing ({last_error}); the breaker is open")]
    BreakerOpen {
        system: AccessSystem,
        endpoint: String,
        last_error: String,
    },
    #[error("{system} at {endpoint} already has {max} messages in flight")]
    Busy {
        system: AccessSystem,
        endpoint: String,
        max: usize,
    },
}

/// A message's leave to work with a connection; dropped when the message is done.
pub struct Admission {
    /// The message slot held (none for work that bounds its own calls: [`Bulkhead::admit_background`]).
    _slot: Option<OwnedSemaphorePermit>,
    probe: bool,
    bulkhead: Arc<Bulkhead>,
}

impl Admission {
    /// Whether the connection's breaker is open (or probing) now. A message whose call failed
    /// while it is waits instead of using up a retry: the failure says the system is down, not
    /// that anything is wrong with the message (a lone booking would otherwise be the probe of
    /// every attempt and end as a dead letter during a long outage).
    pub fn breaker_open(&self) -> bool {
        self.bulkhead.state() != BreakerState::Closed
    }

    /// `error` as the worker should treat it, given the breaker's state now.
    pub fn judge(&self, error: crate::amqp::HandlerError) -> crate::amqp::HandlerError {
        match error {
            crate::amqp::HandlerError::Transient(text) if self.breaker_open() => {
                crate::amqp::HandlerError::Unavailable(text)
            }
            other => other,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.probe {
            // A probe that made no call (its message failed before) proves nothing: the next
            // message may probe.
            let mut inner = self.bulkhead.lock();
            if let Circuit::HalfOpen { probing } = &mut inner.circuit {
                *probing = false;
            }
        }
    }
}

/// What [`Bulkhead::health`] reports.
#[derive(Debug, Clone)]
pub struct Health {
    pub system: AccessSystem,
    pub endpoint: String,
    /// `Some` while the connection is failing: since when.
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: String,
    /// How long ago the last call failed.
    pub last_failure_ago: Option<Duration>,
    /// When the connection last answered (this replica's calls).
    pub last_answer: Option<DateTime<Utc>>,
    pub buildings: Vec<Building>,
}

impl Bulkhead {
    pub fn new(system: AccessSystem, endpoint: &str, settings: &ConnectionSettings) -> Self {
        Self {
            system,
            endpoint: endpoint.to_owned(),
            settings: settings.clone(),
            slots: Arc::new(Semaphore::new(settings.max_in_flight)),
            inner: Mutex::new(Inner {
                circuit: Circuit::Closed {
                    failures_in_a_row: 0,
                },
                failing_since: None,
                last_error: String::new(),
                last_failure: None,
                last_answer: None,
                buildings: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Lets a message of `building` work with the connection, or says why not now. Waits only
    /// for a slot, and only while the breaker is closed, for at most
    /// [`ConnectionSettings::slot_wait_ms`]: the slots of a connection that answers free up in
    /// milliseconds, so a burst of one building's messages flows at the system's pace instead of
    /// being sent through a retry tier (a second at least, longer each time) message by message;
    /// a hanging system's slots do not free up, and its messages wait no longer than that before
    /// they go to the tiers, so they hold the worker's other consumer slots only briefly.
    /// The building (as its latest snapshot has it) is remembered for its health metric and its
    /// managers' outage mails; work for no one building (the nightly clearing) passes `None`.
    pub async fn admit(
        self: &Arc<Self>,
        building: Option<&Building>,
    ) -> Result<Admission, Refusal> {
        let probe = self.pass_breaker(building)?;
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(self.admission(Some(slot), probe));
        }
        if probe {
            // The probe goes now or not at all: the next message may probe instead.
            let mut inner = self.lock();
            if let Circuit::HalfOpen { probing } = &mut inner.circuit {
                *probing = false;
            }
            return Err(self.busy());
        }
        let wait = Duration::from_millis(self.settings.slot_wait_ms);
        // The semaphore is fair: the waiting messages get the slots in the order they came.
        match tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(slot)) if self.state() == BreakerState::Closed => {
                Ok(self.admission(Some(slot), false))
            }
            // The breaker opened while this message waited: it waits in the tiers instead.
            Ok(Ok(_slot)) => Err(self.open_refusal(&self.lock().last_error)),
            // Timed out, or the semaphore closed (it never is).
            Ok(Err(_)) | Err(_) => Err(self.busy()),
        }
    }

    fn admission(self: &Arc<Self>, slot: Option<OwnedSemaphorePermit>, probe: bool) -> Admission {
        Admission {
            _slot: slot,
            probe,
            bulkhead: Arc::clone(self),
        }
    }

    fn busy(&self) -> Refusal {
        Refusal::Busy {
            system: self.system,
            endpoint: self.endpoint.clone(),
            max: self.settings.max_in_flight,
        }
    }

    /// Lets work outside the consumed messages (the nightly clearing) work with the connection
    /// when the breaker allows it. Such work bounds its calls itself, so it takes none of the
    /// messages' slots: a night of clearing never makes bookings wait for a slot.
    pub fn admit_background(self: &Arc<Self>) -> Result<Admission, Refusal> {
        let probe = self.pass_breaker(None)?;
        Ok(self.admission(None, probe))
    }

    /// The breaker's answer: refused while open, or `Ok(true)` for the one probe it lets
    /// through.
    fn pass_breaker(self: &Arc<Self>, building: Option<&Building>) -> Result<bool, Refusal> {
        let mut inner = self.lock();
        if let Some(building) = building {
            if !inner.buildings.contains_key(&building.id) {
                self.publish_building(&building.id, &inner.circuit, inner.failing_since.is_none());
            }
            inner
                .buildings
                .insert(building.id.clone(), building.clone());
        }
        match &mut inner.circuit {
            Circuit::Closed { .. } => Ok(false),
            Circuit::Open { until } if Instant::now() < *until => {
                Err(self.open_refusal(&inner.last_error))
            }
            Circuit::Open { .. } => {
                inner.circuit = Circuit::HalfOpen { probing: true };
                self.publish_state(&inner);
                Ok(true)
            }
            Circuit::HalfOpen { probing: true } => Err(self.open_refusal(&inner.last_error)),
            Circuit::HalfOpen { probing } => {
                *probing = true;
                Ok(true)
            }
        }
    }

    fn open_refusal(&self, last_error: &str) -> Refusal {
        Refusal::BreakerOpen {
            system: self.system,
            endpoint: self.endpoint.clone(),
            last_error: last_error.to_owned(),
        }
    }

    /// Where the connection stands, for the outage alerts.
    pub fn health(&self) -> Health {
        let inner = self.lock();
        Health {
            system: self.system,
            endpoint: self.endpoint.clone(),
            failing_since: inner.failing_since,
            last_error: inner.last_error.clone(),
            last_failure_ago: inner.last_failure.map(|at| at.elapsed()),
            last_answer: inner.last_answer,
            buildings: inner.buildings.values().cloned().collect(),
        }
    }

    pub fn state(&self) -> BreakerState {
        breaker_state(&self.lock().circuit)
    }

    fn publish_state(&self, inner: &Inner) {
        for building in inner.buildings.keys() {
            self.publish_building(building, &inner.circuit, inner.failing_since.is_none());
        }
    }

    fn publish_building(&self, building: &str, circuit: &Circuit, up: bool) {
        let labels = [
            ("building", building.to_owned()),
            ("system", self.system.as_str().to_owned()),
        ];
        metrics::gauge!("connecx_connection_up", &labels).set(if up { 1.0 } else { 0.0 });
        metrics::gauge!("connecx_connection_breaker_state", &labels)
            .set(f64::from(breaker_state(circuit) as u8));
    }
}

fn breaker_state(circuit: &Circuit) -> BreakerState {
    match circuit {
        Circuit::Closed { .. } => BreakerState::Closed,
        Circuit::HalfOpen { .. } => BreakerState::HalfOpen,
        Circuit::Open { .. } => BreakerState::Open,
    }
}

impl CallObserver for Bulkhead {
    fn answered(&self) {
        let mut inner = self.lock();
        let changed = !matches!(
            inner.circuit,
            Circuit::Closed {
                failures_in_a_row: 0
            }
        ) || inner.failing_since.is_some();
        if matches!(
            inner.circuit,
            Circuit::HalfOpen { .. } | Circuit::Open { .. }
        ) {
            tracing::info!(system = %self.system, endpoint = self.endpoint, "answers again; breaker closed");
        }
        inner.circuit = Circuit::Closed {
            failures_in_a_row: 0,
        };
        inner.failing_since = None;
        inner.last_answer = Some(Utc::now());
        if changed {
            self.publish_state(&inner);
        }
    }

    fn failed(&self, error: &str) {
        let mut inner = self.lock();
        inner.last_error = error.chars().take(500).collect();
        inner.last_failure = Some(Instant::now());
        let first = inner.failing_since.is_none();
        inner.failing_since.get_or_insert_with(Utc::now);
        let open_for = Duration::from_secs(self.settings.breaker_open_secs);
        let opens = match &mut inner.circuit {
            Circuit::Closed { failures_in_a_row } => {
                *failures_in_a_row += 1;
                *failures_in_a_row >= self.settings.breaker_failures
            }
            // The probe failed (or a call still in flight from before): stay open.
            Circuit::HalfOpen { .. } | Circuit::Open { .. } => true,
        };
        if opens {
            if !matches!(inner.circuit, Circuit::Open { .. }) {
                tracing::warn!(system = %self.system, endpoint = self.endpoint, error, "failing; breaker open");
            }
            inner.circuit = Circuit::Open {
                until: Instant::now() + open_for,
            };
        }
        if opens || first {
            self.publish_state(&inner);
        }
    }
}

/// One bulkhead per connection of a worker, made on first use.
pub struct Bulkheads {
    settings: ConnectionSettings,
    system: AccessSystem,
    by_connection: Mutex<HashMap<String, Arc<Bulkhead>>>,
}

impl Bulkheads {
    pub fn new(system: AccessSystem, settings: &ConnectionSettings) -> Self {
        Self {
            settings: settings.clone(),
            system,
            by_connection: Mutex::new(HashMap::new()),
        }
    }

    pub fn system(&self) -> AccessSystem {
        self.system
    }

    /// Says so in the log when one connection may hold every message a worker process has
    /// fetched (`CONNECX__AMQP__PREFETCH`): then a hanging building's calls can still hold up
    /// the others until its breaker opens. The cap must be below the prefetch to isolate.
    pub fn warn_unless_below(&self, prefetch: u16) {
        if self.settings.max_in_flight >= usize::from(prefetch) {
            tracing::warn!(
                max_in_flight = self.settings.max_in_flight,
                prefetch,
                "CONNECX__CONNECTIONS__MAX_IN_FLIGHT is not below CONNECX__AMQP__PREFETCH: one \
                 failing building's calls can take every message slot of this process"
            );
        }
    }

    pub fn settings(&self) -> &ConnectionSettings {
        &self.settings
    }

    /// The bulkhead of `connection` (a tenant or server key), reached at `endpoint`.
    pub fn of(&self, connection: &str, endpoint: &str) -> Arc<Bulkhead> {
        let mut all = self.by_connection.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(connection.to_owned())
            .or_insert_with(|| Arc::new(Bulkhead::new(self.system, endpoint, &self.settings)))
            .clone()
    }

    /// Every bulkhead made so far.
    pub fn all(&self) -> Vec<Arc<Bulkhead>> {
        self.by_connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn building(id: &str) -> Building {
        Building {
            id: id.into(),
            name: id.into(),
            timezone: "UTC".into(),
            manager_emails: vec![],
            ipassan_site: None,
            double_booking_policy: contracts::DoubleBookingPolicy::Auto,
            connection_versions: Default::default(),
        }
    }

    fn bulkhead(max: usize, failures: u32, open_secs: u64) -> Arc<Bulkhead> {
        Arc::new(Bulkhead::new(
            AccessSystem::Salto,
            "http://salto.example",
            &ConnectionSettings {
                max_in_flight: max,
                breaker_failures: failures,
                breaker_open_secs: open_secs,
                slot_wait_ms: 0,
                outage_alert_secs: 300,
            },
        ))
    }

    #[tokio::test]
    async fn only_so_many_messages_work_with_one_connection_at_once() {
        let bulkhead = bulkhead(2, 5, 30);
        let a = bulkhead.admit(Some(&building("a"))).await.unwrap();
        let _b = bulkhead.admit(Some(&building("a"))).await.unwrap();
        assert!(matches!(
            bulkhead.admit(Some(&building("a"))).await,
            Err(Refusal::Busy { max: 2, .. })
        ));
        drop(a);
        assert!(bulkhead.admit(Some(&building("a"))).await.is_ok());
    }

    fn bulkhead_that_waits(max: usize, slot_wait_ms: u64) -> Arc<Bulkhead> {
        Arc::new(Bulkhead::new(
            AccessSystem::Salto,
            "http://salto.example",
            &ConnectionSettings {
                max_in_flight: max,
                breaker_failures: 1,
                slot_wait_ms,
                ..ConnectionSettings::default()
            },
        ))
    }

    #[tokio::test]
    async fn a_message_waits_for_a_slot_that_frees_up() {
        let bulkhead = bulkhead_that_waits(1, 60_000);
        let first = bulkhead.admit(Some(&building("a"))).await.unwrap();
        let a = building("a");
        let mut waiting = std::pin::pin!(bulkhead.admit(Some(&a)));
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "waits while the slot is taken"
        );
        drop(first);
        assert!(waiting.await.is_ok(), "admitted once the slot was free");
    }

    #[tokio::test]
    async fn a_message_waits_no_longer_than_the_slot_wait() {
        let bulkhead = bulkhead_that_waits(1, 50);
        let _hanging = bulkhead.admit(Some(&building("a"))).await.unwrap();
        let started = Instant::now();
        assert!(matches!(
            bulkhead.admit(Some(&building("a"))).await,
            Err(Refusal::Busy { max: 1, .. })
        ));
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
    }

    #[tokio::test]
    async fn a_message_that_waited_while_the_breaker_opened_is_not_let_through() {
        let bulkhead = bulkhead_that_waits(1, 60_000);
        let hanging = bulkhead.admit(Some(&building("a"))).await.unwrap();
        let a = building("a");
        let mut waiting = std::pin::pin!(bulkhead.admit(Some(&a)));
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "past the breaker, waiting for the slot"
        );
        bulkhead.failed("timeout");
        drop(hanging);
        assert!(matches!(waiting.await, Err(Refusal::BreakerOpen { .. })));
    }

    #[tokio::test]
    async fn background_work_takes_no_message_slot_but_waits_behind_an_open_breaker() {
        let bulkhead = bulkhead(1, 1, 3600);
        let message = bulkhead.admit(Some(&building("a"))).await.unwrap();
        let night = bulkhead.admit_background().unwrap();
        let _another_night = bulkhead.admit_background().unwrap();
        drop(message);
        let _next_message = bulkhead
            .admit(Some(&building("a")))
            .await
            .expect("the clearing held no message slot");
        drop(night);
        bulkhead.failed("timeout");
        assert!(matches!(
            bulkhead.admit_background(),
            Err(Refusal::BreakerOpen { .. })
        ));
    }

    #[tokio::test]
    async fn failures_in_a_row_open_the_breaker_and_an_answer_closes_it() {
        let bulkhead = bulkhead(4, 3, 3600);
        bulkhead.failed("timeout");
        bulkhead.answered();
        bulkhead.failed("timeout");
        bulkhead.failed("timeout");
        assert_eq!(
            bulkhead.state(),
            BreakerState::Closed,
            "not three in a row yet"
        );
        bulkhead.failed("timeout");
        assert_eq!(bulkhead.state(), BreakerState::Open);
        assert!(matches!(
            bulkhead.admit(Some(&building("a"))).await,
            Err(Refusal::BreakerOpen { .. })
        ));
        let health = bulkhead.health();
        assert!(health.failing_since.is_some());
        assert_eq!(health.last_error, "timeout");
        bulkhead.answered();
        assert_eq!(bulkhead.state(), BreakerState::Closed);
        assert!(bulkhead.health().failing_since.is_none());
    }

    #[tokio::test]
    async fn after_the_open_time_one_probe_goes_through_and_decides() {
        let bulkhead = bulkhead(4, 1, 0);
        bulkhead.failed("503");
        // Open for zero seconds: the next message is the probe, the one after it waits.
        let probe = bulkhead.admit(Some(&building("a"))).await.unwrap();
        assert_eq!(bulkhead.state(), BreakerState::HalfOpen);
        assert!(matches!(
            bulkhead.admit(Some(&building("a"))).await,
            Err(Refusal::BreakerOpen { .. })
        ));
        bulkhead.failed("503 again");
        assert_eq!(bulkhead.state(), BreakerState::Open);
        drop(probe);
        let probe = bulkhead.admit(Some(&building("a"))).await.unwrap();
        bulkhead.answered();
        assert_eq!(bulkhead.state(), BreakerState::Closed);
        drop(probe);
        assert!(bulkhead.admit(Some(&building("a"))).await.is_ok());
    }

    #[tokio::test]
    async fn a_probe_that_made_no_call_lets_the_next_message_probe() {
        let bulkhead = bulkhead(4, 1, 0);
        bulkhead.failed("503");
        let probe = bulkhead.admit(Some(&building("a"))).await.unwrap();
        drop(probe);
        assert!(bulkhead.admit(Some(&building("a"))).await.is_ok());
    }

    #[tokio::test]
    async fn the_buildings_of_a_connection_are_remembered_for_their_alerts() {
        let bulkhead = bulkhead(4, 1, 30);
        drop(bulkhead.admit(Some(&building("a"))).await);
        drop(bulkhead.admit(Some(&building("b"))).await);
        let ids: Vec<String> = bulkhead
            .health()
            .buildings
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
