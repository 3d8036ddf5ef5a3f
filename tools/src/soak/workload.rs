//! The workload: a seeded-random stream of booking requests sent round-robin to the booking-api
//! replicas at a set rate — visitor bookings (mostly with access), facility bookings across every
//! apartment and facility, reschedules (`PATCH`), cancellations (`DELETE`) and deliberate double
//! bookings (a second booking of a slot its apartment already holds).
//!
//! The driver keeps the client's own record of every booking it was told exists (id, window,
//! state, version as booking-api answered), which the audit holds booking-api to. It behaves like
//! a careful app: a create carries an `Idempotency-Key`, and a request that fails with a 5xx or a
//! broken connection is sent again (the same key), so a database outage costs time, not bookings.
//! Operations on one booking are never in flight at once.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::rng::Rng;
use super::world::{TIMEZONE, World};

/// How often each kind of request is chosen (relative weights).
const WEIGHTS: [(Choice, f64); 5] = [
    (Choice::Visitor, 0.48),
    (Choice::Facility, 0.24),
    (Choice::DoubleBooking, 0.06),
    (Choice::Reschedule, 0.13),
    (Choice::Cancel, 0.09),
];
/// Share of visitor bookings that ask for access (a PIN).
const WITH_ACCESS: f64 = 0.9;
/// Attempts of one request before the driver gives up on it.
const ATTEMPTS: u32 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Visitor,
    Facility,
    DoubleBooking,
    Reschedule,
    Cancel,
}

/// What the driver is asked to do.
#[derive(Debug, Clone)]
pub struct WorkloadSettings {
    /// Bookings to create (reschedules and cancellations come on top).
    pub bookings: usize,
    /// Write requests per second (creates, reschedules, cancellations).
    pub rate: f64,
    /// Requests in flight at most.
    pub concurrency: usize,
}

/// A (building, apartment, facility) slot: Salto holds one permission per apartment and zone.
pub type Slot = (usize, usize, usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingKind {
    Visitor { provide_access: bool },
    Facility { facility: usize },
}

/// A booking as the client knows it from booking-api's answers.
#[derive(Debug, Clone)]
pub struct ClientBooking {
    pub id: Uuid,
    pub kind: BookingKind,
    pub building: usize,
    pub apartment: usize,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub cancelled: bool,
    pub version: i64,
    /// When booking-api's 201 arrived (for the latency until its first access outcome).
    pub created_at: DateTime<Utc>,
}

impl ClientBooking {
    pub fn slot(&self) -> Option<Slot> {
        match self.kind {
            BookingKind::Facility { facility } => Some((self.building, self.apartment, facility)),
            BookingKind::Visitor { .. } => None,
        }
    }
}

/// What the driver did.
#[derive(Debug, Clone, Default)]
pub struct DriverStats {
    pub visitor_bookings: usize,
    pub facility_bookings: usize,
    /// Facility bookings made for a slot the apartment already held (part of `facility_bookings`).
    pub double_bookings: usize,
    pub reschedules: usize,
    pub cancellations: usize,
    /// Requests sent again after a 5xx or a broken connection.
    pub retried: usize,
    pub server_errors: usize,
    pub transport_errors: usize,
    /// Answers the workload never expects (a 4xx for a valid request, or giving up).
    pub unexpected: usize,
    pub unexpected_samples: Vec<String>,
    pub elapsed: Duration,
}

impl DriverStats {
    pub fn requests(&self) -> usize {
        self.visitor_bookings + self.facility_bookings + self.reschedules + self.cancellations
    }
}

/// The client's record after the load.
pub struct WorkloadOutcome {
    pub bookings: HashMap<Uuid, ClientBooking>,
    pub stats: DriverStats,
}

/// Runs the workload; [`Driver::progress`] tells the fault injector how far it is.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

struct Inner {
    apis: Vec<String>,
    http: reqwest::Client,
    world: Arc<World>,
    settings: WorkloadSettings,
    model: Mutex<Model>,
    stats: Mutex<DriverStats>,
    next_api: AtomicUsize,
    next_visitor: AtomicUsize,
    creations_issued: AtomicUsize,
}

#[derive(Default)]
struct Model {
    bookings: HashMap<Uuid, ClientBooking>,
    live: Pool<Uuid>,
    busy: HashSet<Uuid>,
    /// Live (or being created) facility bookings per slot.
    slot_load: HashMap<Slot, usize>,
    occupied: Pool<Slot>,
}

impl Model {
    fn reserve_slot(&mut self, slot: Slot) {
        let load = self.slot_load.entry(slot).or_default();
        *load += 1;
        if *load == 1 {
            self.occupied.insert(slot);
        }
    }

    fn release_slot(&mut self, slot: Slot) {
        if let Some(load) = self.slot_load.get_mut(&slot) {
            *load = load.saturating_sub(1);
            if *load == 0 {
                self.slot_load.remove(&slot);
                self.occupied.remove(&slot);
            }
        }
    }
}

/// A set with O(1) insert, remove and random pick.
struct Pool<T> {
    items: Vec<T>,
    index: HashMap<T, usize>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Pool<T> {
    fn insert(&mut self, item: T) {
        if !self.index.contains_key(&item) {
            self.index.insert(item.clone(), self.items.len());
            self.items.push(item);
        }
    }

    fn remove(&mut self, item: &T) {
        if let Some(at) = self.index.remove(item) {
            self.items.swap_remove(at);
            if let Some(moved) = self.items.get(at) {
                self.index.insert(moved.clone(), at);
            }
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<&T> {
        self.items.get(rng.below(self.items.len()))
    }
}

/// One planned request.
#[derive(Debug, Clone)]
enum Op {
    CreateVisitor {
        building: usize,
        apartment: usize,
        provide_access: bool,
        window: (DateTime<Tz>, DateTime<Tz>),
    },
    CreateFacility {
        slot: Slot,
        window: (DateTime<Tz>, DateTime<Tz>),
        double: bool,
    },
    Reschedule {
        booking: ClientBooking,
        window: (DateTime<Tz>, DateTime<Tz>),
    },
    Cancel {
        booking: ClientBooking,
    },
}

impl Driver {
    pub fn new(apis: Vec<String>, world: Arc<World>, settings: WorkloadSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                apis,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(64)
                    .build()
                    .unwrap_or_default(),
                world,
                settings,
                model: Mutex::default(),
                stats: Mutex::default(),
                next_api: AtomicUsize::new(0),
                next_visitor: AtomicUsize::new(1),
                creations_issued: AtomicUsize::new(0),
            }),
        }
    }

    /// How far the workload is, from 0 (nothing sent) to 1 (every booking request sent).
    pub fn progress(&self) -> f64 {
        let target = self.inner.settings.bookings.max(1);
        self.inner.creations_issued.load(Ordering::Relaxed) as f64 / target as f64
    }

    /// Sends the whole workload and waits for every answer.
    pub async fn run(&self, mut rng: Rng) -> WorkloadOutcome {
        let started = Instant::now();
        let settings = &self.inner.settings;
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let mut ticker =
            tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate.max(0.01)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight = JoinSet::new();
        let mut creations = 0;
        while creations < settings.bookings {
            ticker.tick().await;
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let op = self.inner.plan(&mut rng);
            if matches!(op, Op::CreateVisitor { .. } | Op::CreateFacility { .. }) {
                creations += 1;
                self.inner
                    .creations_issued
                    .store(creations, Ordering::Relaxed);
            }
            let inner = Arc::clone(&self.inner);
            in_flight.spawn(async move {
                inner.execute(op).await;
                drop(permit);
            });
            while in_flight.try_join_next().is_some() {}
        }
        while in_flight.join_next().await.is_some() {}
        let mut stats = self.inner.stats().clone();
        stats.elapsed = started.elapsed();
        WorkloadOutcome {
            bookings: self.inner.model().bookings.clone(),
            stats,
        }
    }
}

impl Inner {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> MutexGuard<'_, DriverStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unexpected(&self, what: String) {
        let mut stats = self.stats();
        stats.unexpected += 1;
        if stats.unexpected_samples.len() < 20 {
            stats.unexpected_samples.push(what);
        }
    }

    /// Chooses the next request and reserves what it touches in the model.
    fn plan(&self, rng: &mut Rng) -> Op {
        let weights: Vec<f64> = WEIGHTS.iter().map(|(_, w)| *w).collect();
        let choice = WEIGHTS[rng.weighted(&weights)].0;
        let buildings = self.world.buildings.len();
        let mut model = self.model();
        let existing = match choice {
            Choice::Reschedule | Choice::Cancel => (0..5).find_map(|_| {
                let id = *model.live.pick(rng)?;
                (!model.busy.contains(&id)).then(|| model.bookings.get(&id).cloned())?
            }),
            _ => None,
        };
        if let Some(booking) = existing {
            model.busy.insert(booking.id);
            return match choice {
                Choice::Cancel => Op::Cancel { booking },
                _ => {
                    let window = match booking.kind {
                        BookingKind::Visitor { .. } => visitor_window(rng),
                        BookingKind::Facility { .. } => facility_window(rng),
                    };
                    Op::Reschedule { booking, window }
                }
            };
        }
        if choice == Choice::DoubleBooking
            && let Some(slot) = model.occupied.pick(rng).copied()
        {
            model.reserve_slot(slot);
            return Op::CreateFacility {
                slot,
                window: facility_window(rng),
                double: true,
            };
        }
        let building = rng.below(buildings);
        let b = &self.world.buildings[building];
        if choice == Choice::Facility {
            // A free slot, so that most facility bookings are granted; double bookings are
            // made on purpose above.
            let free = (0..20).find_map(|_| {
                let slot = (
                    building,
                    rng.below(b.apartments.len()),
                    rng.below(b.facilities.len()),
                );
                (!model.slot_load.contains_key(&slot)).then_some(slot)
            });
            if let Some(slot) = free {
                model.reserve_slot(slot);
                return Op::CreateFacility {
                    slot,
                    window: facility_window(rng),
                    double: false,
                };
            }
        }
        Op::CreateVisitor {
            building,
            apartment: rng.below(b.apartments.len()),
            provide_access: rng.chance(WITH_ACCESS),
            window: visitor_window(rng),
        }
    }

    async fn execute(&self, op: Op) {
        match op {
            Op::CreateVisitor {
                building,
                apartment,
                provide_access,
                window,
            } => {
                let n = self.next_visitor.fetch_add(1, Ordering::Relaxed);
                let body = json!({
                    "visitor": {"name": format!("Visitor {n}"), "email": format!("visitor-{n}@visitors.soak.example")},
                    "starts_at": window.0.to_rfc3339(), "ends_at": window.1.to_rfc3339(),
                    "provide_access": provide_access,
                });
                let token = self.world.resident_token(building, apartment);
                let kind = BookingKind::Visitor { provide_access };
                if let Some(booking) = self
                    .create(
                        "/v1/visitor-bookings",
                        &token,
                        body,
                        kind,
                        building,
                        apartment,
                    )
                    .await
                {
                    self.stats().visitor_bookings += 1;
                    let mut model = self.model();
                    model.live.insert(booking.id);
                    model.bookings.insert(booking.id, booking);
                }
            }
            Op::CreateFacility {
                slot,
                window,
                double,
            } => {
                let (building, apartment, facility) = slot;
                let body = json!({
                    "facility_id": self.world.buildings[building].facilities[facility].id,
                    "starts_at": window.0.to_rfc3339(), "ends_at": window.1.to_rfc3339(),
                });
                let token = self.world.resident_token(building, apartment);
                let kind = BookingKind::Facility { facility };
                match self
                    .create(
                        "/v1/facility-bookings",
                        &token,
                        body,
                        kind,
                        building,
                        apartment,
                    )
                    .await
                {
                    Some(booking) => {
                        let mut stats = self.stats();
                        stats.facility_bookings += 1;
                        stats.double_bookings += usize::from(double);
                        drop(stats);
                        let mut model = self.model();
                        model.live.insert(booking.id);
                        model.bookings.insert(booking.id, booking);
                    }
                    None => self.model().release_slot(slot),
                }
            }
            Op::Reschedule { booking, window } => {
                let body =
                    json!({"starts_at": window.0.to_rfc3339(), "ends_at": window.1.to_rfc3339()});
                let answer = self
                    .change(&booking, Method::PATCH, Some(body), "reschedule")
                    .await;
                let mut model = self.model();
                model.busy.remove(&booking.id);
                if let Some(answer) = answer
                    && let Some(known) = model.bookings.get_mut(&booking.id)
                {
                    known.starts_at = window.0.with_timezone(&Utc);
                    known.ends_at = window.1.with_timezone(&Utc);
                    known.version = answer["version"].as_i64().unwrap_or(known.version);
                    drop(model);
                    self.stats().reschedules += 1;
                }
            }
            Op::Cancel { booking } => {
                let answer = self.change(&booking, Method::DELETE, None, "cancel").await;
                let mut model = self.model();
                model.busy.remove(&booking.id);
                if let Some(answer) = answer
                    && let Some(known) = model.bookings.get_mut(&booking.id)
                {
                    known.cancelled = true;
                    known.version = answer["version"].as_i64().unwrap_or(known.version);
                    model.live.remove(&booking.id);
                    if let Some(slot) = booking.slot() {
                        model.release_slot(slot);
                    }
                    drop(model);
                    self.stats().cancellations += 1;
                }
            }
        }
    }

    async fn create(
        &self,
        path: &str,
        token: &str,
        body: Value,
        kind: BookingKind,
        building: usize,
        apartment: usize,
    ) -> Option<ClientBooking> {
        let key = Uuid::new_v4().to_string();
        let (status, answer) = self
            .call(Method::POST, path, token, Some(&body), Some(&key))
            .await?;
        if status != 201 {
            self.unexpected(format!("POST {path} answered {status}: {answer}"));
            return None;
        }
        let parsed = || {
            Some(ClientBooking {
                id: answer["id"].as_str()?.parse().ok()?,
                kind,
                building,
                apartment,
                starts_at: answer["starts_at"].as_str()?.parse().ok()?,
                ends_at: answer["ends_at"].as_str()?.parse().ok()?,
                cancelled: answer["state"].as_str()? == "cancelled",
                version: answer["version"].as_i64()?,
                created_at: Utc::now(),
            })
        };
        let booking = parsed();
        if booking.is_none() {
            self.unexpected(format!(
                "POST {path} answered a body without a booking: {answer}"
            ));
        }
        booking
    }

    async fn change(
        &self,
        booking: &ClientBooking,
        method: Method,
        body: Option<Value>,
        what: &str,
    ) -> Option<Value> {
        let path = match booking.kind {
            BookingKind::Visitor { .. } => format!("/v1/visitor-bookings/{}", booking.id),
            BookingKind::Facility { .. } => format!("/v1/facility-bookings/{}", booking.id),
        };
        let token = self
            .world
            .resident_token(booking.building, booking.apartment);
        let (status, answer) = self
            .call(method, &path, &token, body.as_ref(), None)
            .await?;
        if status != 200 {
            self.unexpected(format!("{what} {path} answered {status}: {answer}"));
            return None;
        }
        Some(answer)
    }

    /// Sends a request to the next booking-api replica, again after a 5xx or a broken
    /// connection (with the same idempotency key). `None` when it never got a real answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Option<(u16, Value)> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                self.stats().retried += 1;
                let backoff = Duration::from_millis(200u64 << attempt.min(4));
                tokio::time::sleep(backoff).await;
            }
            let api = &self.apis[self.next_api.fetch_add(1, Ordering::Relaxed) % self.apis.len()];
            let mut request = self
                .http
                .request(method.clone(), format!("{api}{path}"))
                .bearer_auth(token);
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let answer: Value = response.json().await.unwrap_or(Value::Null);
                    if status >= 500 {
                        self.stats().server_errors += 1;
                        last = format!("{status} {answer}");
                        continue;
                    }
                    return Some((status, answer));
                }
                Err(error) => {
                    self.stats().transport_errors += 1;
                    last = error.to_string();
                }
            }
        }
        self.unexpected(format!(
            "{method} {path}: no answer after {ATTEMPTS} attempts (last: {last})"
        ));
        None
    }
}

fn zone() -> Tz {
    TIMEZONE.parse().unwrap_or(chrono_tz::UTC)
}

/// `hour`:00 on the building's clock, `days` after today (hour 24 = the next midnight).
fn local_at(days: i64, hour: u32) -> DateTime<Tz> {
    let tz = zone();
    let today = Utc::now().with_timezone(&tz).date_naive();
    let day = today
        .checked_add_days(Days::new(u64::try_from(days).unwrap_or(1)))
        .unwrap_or(today);
    let (day, hour) = if hour >= 24 {
        (day.succ_opt().unwrap_or(day), 0)
    } else {
        (day, hour)
    };
    let wall = day.and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or(NaiveTime::MIN));
    tz.from_local_datetime(&wall)
        .earliest()
        .unwrap_or_else(|| Utc::now().with_timezone(&tz))
}

/// A visit 1–21 days ahead, starting between 08:00 and 20:00, 1–4 hours long.
fn visitor_window(rng: &mut Rng) -> (DateTime<Tz>, DateTime<Tz>) {
    let day = rng.between(1, 21);
    let start = rng.between(8, 20) as u32;
    let hours = rng.between(1, 4) as u32;
    (local_at(day, start), local_at(day, (start + hours).min(24)))
}

/// A facility slot 1–21 days ahead, within one local day (ending at midnight at the latest).
fn facility_window(rng: &mut Rng) -> (DateTime<Tz>, DateTime<Tz>) {
    let day = rng.between(1, 21);
    let start = rng.between(7, 21) as u32;
    let hours = rng.between(1, 3) as u32;
    (local_at(day, start), local_at(day, (start + hours).min(24)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_in_the_future_and_facility_ones_stay_within_a_local_day() {
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let (start, end) = facility_window(&mut rng);
            assert!(start < end && start > Utc::now());
            let next_midnight = local_at(0, 0).timezone().from_local_datetime(
                &start
                    .date_naive()
                    .succ_opt()
                    .unwrap()
                    .and_time(NaiveTime::MIN),
            );
            assert!(end <= next_midnight.earliest().unwrap());
            let (start, end) = visitor_window(&mut rng);
            assert!(start < end && start > Utc::now());
        }
    }

    #[test]
    fn a_pool_picks_only_what_it_holds() {
        let mut pool = Pool::default();
        let mut rng = Rng::new(1);
        for n in 0..10 {
            pool.insert(n);
        }
        for n in 0..9 {
            pool.remove(&n);
        }
        assert_eq!(pool.pick(&mut rng), Some(&9));
        pool.remove(&9);
        assert_eq!(pool.pick(&mut rng), None);
    }
}
