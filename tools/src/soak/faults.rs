//! The fault injector: a seeded schedule of faults, each due at a point of the workload's progress
//! (between 10 % and 85 % of the booking requests sent), so a slow machine sees the same faults at
//! the same moments of the load as a fast one. Every fault is bounded and undone before the load
//! ends:
//!
//! - the vhost's RabbitMQ connections forcibly closed (management API);
//! - the whole broker stopped and started (`rabbitmqctl stop_app`/`start_app`; opt-in, standalone
//!   runs only — other tests share the broker);
//! - a worker replica killed with SIGKILL mid-load and started again;
//! - the SMTP sink refusing every mail (451) for a while;
//! - every PostgreSQL connection to the run's database terminated (`pg_terminate_backend`);
//! - windows in which a set share of the simulators' requests get a 503, a 429 or an answer
//!   slower than the clients' timeout, through the simulators' own `/_sim/faults` APIs;
//! - one building's outage: the building on systems of its own has its Salto server answer every
//!   request later than the clients' timeout and its iPassan answer every request with 503, for
//!   longer than the retry tiers' first steps. The other buildings must not notice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::rabbit::{self, Management};
use super::replicas::{Supervisor, WORKERS};
use super::rng::Rng;
use super::workload::Driver;

/// How many faults of each kind, and how strong.
#[derive(Debug, Clone)]
pub struct FaultSettings {
    pub connection_closes: usize,
    pub worker_kills: usize,
    pub smtp_outages: usize,
    pub smtp_outage: Duration,
    pub pg_terminations: usize,
    pub sim_fault_windows: usize,
    pub sim_fault_window: Duration,
    /// Share of the simulators' requests answered with a fault inside a window.
    pub sim_fault_rate: f64,
    /// How late a "timeout" answer comes (longer than the clients' timeout).
    pub sim_slow_answer: Duration,
    pub broker_restarts: usize,
    pub broker_down: Duration,
    /// Outages of the building on its own systems (needs two buildings or more).
    pub building_outages: usize,
    pub building_outage: Duration,
}

impl FaultSettings {
    /// No faults at all (a baseline run).
    pub fn none() -> Self {
        Self {
            connection_closes: 0,
            worker_kills: 0,
            smtp_outages: 0,
            smtp_outage: Duration::ZERO,
            pg_terminations: 0,
            sim_fault_windows: 0,
            sim_fault_window: Duration::ZERO,
            sim_fault_rate: 0.0,
            sim_slow_answer: Duration::from_secs(3),
            broker_restarts: 0,
            broker_down: Duration::ZERO,
            building_outages: 0,
            building_outage: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    CloseConnections,
    KillWorker,
    SmtpOutage,
    TerminateDatabaseConnections,
    SimulatorFaults,
    BrokerRestart,
    BuildingOutage,
}

/// What was injected, for the report.
#[derive(Debug, Clone, Default)]
pub struct FaultLog {
    pub connection_closes: usize,
    pub connections_closed: usize,
    pub worker_kills: Vec<String>,
    pub smtp_outages: usize,
    pub smtp_refusing: Duration,
    pub pg_terminations: usize,
    pub backends_terminated: usize,
    pub sim_fault_windows: usize,
    /// (simulator, kind) → faults injected.
    pub sim_faults_injected: BTreeMap<(String, String), usize>,
    /// simulator → requests answered by a fault, as the simulators logged them.
    pub sim_faults_served: BTreeMap<String, usize>,
    /// simulator → requests seen during the whole run.
    pub sim_requests: BTreeMap<String, usize>,
    pub broker_restarts: usize,
    /// When each outage of the building on its own systems began and ended.
    pub building_outages: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
    /// Faults that could not be injected (e.g. the management API did not answer).
    pub failures: Vec<String>,
    /// `+12.3s  kind  detail`, in order.
    pub timeline: Vec<String>,
}

/// What the injector acts on.
#[derive(Clone)]
pub struct Targets {
    pub management: Management,
    pub supervisor: Supervisor,
    pub mail: testkit::mail_sink::MailSink,
    pub database: String,
    pub server_url: String,
    pub ipassan: ipassan_sim::SimState,
    pub ipassan_control: ipassan_sim::SimControl,
    pub salto: salto_sim::SimState,
    pub salto_url: String,
    /// The systems of the building that has its own (its outages' target).
    pub own: Option<OwnSystems>,
}

/// The iPassan tenant and Salto server of the building on systems of its own.
#[derive(Clone)]
pub struct OwnSystems {
    pub building: String,
    pub ipassan: ipassan_sim::SimState,
    pub ipassan_control: ipassan_sim::SimControl,
    pub salto: salto_sim::SimState,
    pub salto_url: String,
}

#[derive(Clone)]
pub struct Injector {
    targets: Targets,
    settings: FaultSettings,
    log: Arc<Mutex<FaultLog>>,
    started: Instant,
    /// Inside a simulator-fault window.
    sim_window_open: Arc<std::sync::atomic::AtomicUsize>,
    /// Held while the broker is stopped: faults that need it wait until it is back.
    broker: Arc<tokio::sync::Mutex<()>>,
    http: reqwest::Client,
}

impl Injector {
    pub fn new(targets: Targets, settings: FaultSettings) -> Self {
        Self {
            targets,
            settings,
            log: Arc::default(),
            started: Instant::now(),
            sim_window_open: Arc::default(),
            broker: Arc::default(),
            http: reqwest::Client::new(),
        }
    }

    fn log(&self) -> MutexGuard<'_, FaultLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, kind: &str, detail: String) {
        let line = format!(
            "+{:>7.1}s  {kind:<22} {detail}",
            self.started.elapsed().as_secs_f64()
        );
        eprintln!("[soak] {line}");
        self.log().timeline.push(line);
    }

    fn plan(&self, rng: &mut Rng) -> Vec<(f64, FaultKind)> {
        let s = &self.settings;
        let mut plan = Vec::new();
        for (count, kind) in [
            (s.connection_closes, FaultKind::CloseConnections),
            (s.worker_kills, FaultKind::KillWorker),
            (s.smtp_outages, FaultKind::SmtpOutage),
            (s.pg_terminations, FaultKind::TerminateDatabaseConnections),
            (s.sim_fault_windows, FaultKind::SimulatorFaults),
            (s.broker_restarts, FaultKind::BrokerRestart),
            (
                if self.targets.own.is_some() {
                    s.building_outages
                } else {
                    0
                },
                FaultKind::BuildingOutage,
            ),
        ] {
            for n in 0..count {
                // Spread evenly over 10–85 % of the load, with a little seeded jitter.
                let slot = 0.1 + 0.75 * (n as f64 + rng.unit()) / count as f64;
                plan.push((slot, kind));
            }
        }
        plan.sort_by(|a, b| a.0.total_cmp(&b.0));
        plan
    }

    /// Injects the planned faults as the workload progresses, until `load_done`; then lets the
    /// running ones end and undoes everything.
    pub async fn run(self, driver: Driver, mut rng: Rng, load_done: CancellationToken) -> FaultLog {
        let plan = self.plan(&mut rng);
        let mut next = 0;
        let mut running = JoinSet::new();
        let counter = self.clone();
        let count_stop = CancellationToken::new();
        let counting = tokio::spawn({
            let stop = count_stop.clone();
            let mut rng = rng.fork(7);
            async move { counter.count_sim_traffic(&mut rng, stop).await }
        });
        loop {
            let progress = driver.progress();
            while next < plan.len() && plan[next].0 <= progress {
                let kind = plan[next].1;
                next += 1;
                let injector = self.clone();
                let mut rng = rng.fork(next as u64);
                running.spawn(async move { injector.inject(kind, &mut rng).await });
            }
            tokio::select! {
                () = load_done.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
        count_stop.cancel();
        let _ = counting.await;
        self.undo_all().await;
        self.log().clone()
    }

    async fn inject(&self, kind: FaultKind, rng: &mut Rng) {
        let outcome = match kind {
            FaultKind::CloseConnections => self.close_connections().await,
            FaultKind::KillWorker => self.kill_worker(rng).await,
            FaultKind::SmtpOutage => {
                self.smtp_outage().await;
                Ok(())
            }
            FaultKind::TerminateDatabaseConnections => self.terminate_database_connections().await,
            FaultKind::SimulatorFaults => {
                self.simulator_window().await;
                Ok(())
            }
            FaultKind::BrokerRestart => self.broker_restart().await,
            FaultKind::BuildingOutage => self.building_outage().await,
        };
        if let Err(error) = outcome {
            let text = format!("{kind:?}: {error:#}");
            self.note("FAULT NOT INJECTED", text.clone());
            self.log().failures.push(text);
        }
    }

    async fn close_connections(&self) -> anyhow::Result<()> {
        let _broker_up = self.broker.lock().await;
        // Right after a broker restart the management API takes a moment to answer again.
        let mut attempts = 0;
        let closed = loop {
            match self.targets.management.close_connections().await {
                Ok(closed) => break closed,
                Err(_) if attempts < 30 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(error),
            }
        };
        self.note("close connections", format!("{closed} closed"));
        let mut log = self.log();
        log.connection_closes += 1;
        log.connections_closed += closed;
        Ok(())
    }

    async fn kill_worker(&self, rng: &mut Rng) -> anyhow::Result<()> {
        // A random worker service with a replica running (one killed a moment ago may still be
        // down), and a random replica of it.
        let first = rng.below(WORKERS.len());
        let replicas = (0..WORKERS.len())
            .map(|n| WORKERS[(first + n) % WORKERS.len()])
            .map(|service| self.targets.supervisor.running(service))
            .find(|running| !running.is_empty())
            .unwrap_or_default();
        let Some(label) = replicas.get(rng.below(replicas.len())).cloned() else {
            anyhow::bail!("no worker replica is running");
        };
        let down_for = Duration::from_millis(rng.between(500, 3000) as u64);
        self.note(
            "SIGKILL worker",
            format!("{label}, restarted after {down_for:?}"),
        );
        self.log().worker_kills.push(label.clone());
        self.targets
            .supervisor
            .kill_and_restart(&label, down_for)
            .await
    }

    async fn smtp_outage(&self) {
        let outage = self.settings.smtp_outage;
        self.note("SMTP refusing", format!("for {outage:?}"));
        self.targets.mail.set_refusing(true);
        tokio::time::sleep(outage).await;
        self.targets.mail.set_refusing(false);
        let mut log = self.log();
        log.smtp_outages += 1;
        log.smtp_refusing += outage;
    }

    async fn terminate_database_connections(&self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.targets.server_url).await?;
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = $1 AND pid <> pg_backend_pid()) AS ended",
        )
        .bind(&self.targets.database)
        .fetch_one(&mut admin)
        .await?;
        let _ = admin.close().await;
        self.note(
            "pg_terminate_backend",
            format!("{terminated} connections of the run's database"),
        );
        let mut log = self.log();
        log.pg_terminations += 1;
        log.backends_terminated += usize::try_from(terminated).unwrap_or(0);
        Ok(())
    }

    async fn simulator_window(&self) {
        let window = self.settings.sim_fault_window;
        self.note(
            "simulator faults",
            format!(
                "{:.0}% of requests for {window:?}",
                self.settings.sim_fault_rate * 100.0
            ),
        );
        self.sim_window_open
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(window).await;
        self.sim_window_open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.log().sim_fault_windows += 1;
    }

    /// The building on its own systems loses them: its Salto answers later than the clients'
    /// timeout, its iPassan 503, until the outage ends.
    async fn building_outage(&self) -> anyhow::Result<()> {
        let Some(own) = &self.targets.own else {
            anyhow::bail!("no building has systems of its own");
        };
        let outage = self.settings.building_outage;
        let slow = u64::try_from(self.settings.sim_slow_answer.as_millis()).unwrap_or(3000);
        self.note(
            "building outage",
            format!(
                "{}: Salto answers after {slow} ms, iPassan 503, for {outage:?}",
                own.building
            ),
        );
        let began = chrono::Utc::now();
        let fault: ipassan_sim::model::Fault = serde_json::from_value(
            json!({"match": {}, "respond": {"status": 503}, "times": 10_000_000}),
        )?;
        own.ipassan_control.add_fault(&fault).await?;
        self.http
            .post(format!("{}_sim/faults", own.salto_url))
            .json(&json!({"match": {}, "respond": {"delay_ms": slow}, "times": 10_000_000}))
            .send()
            .await?
            .error_for_status()?;
        tokio::time::sleep(outage).await;
        let ended = self.clear_own_faults(own).await;
        self.note("building outage over", own.building.clone());
        self.log()
            .building_outages
            .push((began, chrono::Utc::now()));
        ended
    }

    async fn clear_own_faults(&self, own: &OwnSystems) -> anyhow::Result<()> {
        own.ipassan_control.clear_faults().await?;
        self.http
            .delete(format!("{}_sim/faults", own.salto_url))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn broker_restart(&self) -> anyhow::Result<()> {
        let _stopping = self.broker.lock().await;
        let down = self.settings.broker_down;
        self.note("broker stop_app", format!("down for {down:?}"));
        rabbit::stop_app().await?;
        tokio::time::sleep(down).await;
        let started = rabbit::start_app().await;
        self.note("broker start_app", format!("{started:?}"));
        started?;
        self.log().broker_restarts += 1;
        Ok(())
    }

    /// Every 250 ms: takes the simulators' request logs (so they do not grow for hours), counts
    /// them, and inside a fault window injects faults for the next requests in proportion to the
    /// traffic just seen.
    async fn count_sim_traffic(&self, rng: &mut Rng, stop: CancellationToken) {
        let mut owed = (0.0f64, 0.0f64);
        loop {
            let stopping = stop.is_cancelled();
            let (ipassan_seen, ipassan_faulted) = {
                let mut world = self.targets.ipassan.world();
                let taken = std::mem::take(&mut world.requests);
                (taken.len(), taken.iter().filter(|r| r.fault).count())
            };
            let (salto_seen, salto_faulted) = {
                let mut sim = self.targets.salto.lock();
                let taken = std::mem::take(&mut sim.requests);
                (taken.len(), taken.iter().filter(|r| r.fault).count())
            };
            if let Some(own) = &self.targets.own {
                let ipassan_own = std::mem::take(&mut own.ipassan.world().requests);
                let salto_own = std::mem::take(&mut own.salto.lock().requests);
                let mut log = self.log();
                *log.sim_requests.entry("ipassan (own)".into()).or_default() += ipassan_own.len();
                *log.sim_requests.entry("salto (own)".into()).or_default() += salto_own.len();
                *log.sim_faults_served
                    .entry("ipassan (own)".into())
                    .or_default() += ipassan_own.iter().filter(|r| r.fault).count();
                *log.sim_faults_served
                    .entry("salto (own)".into())
                    .or_default() += salto_own.iter().filter(|r| r.fault).count();
            }
            {
                let mut log = self.log();
                *log.sim_requests.entry("ipassan".into()).or_default() += ipassan_seen;
                *log.sim_requests.entry("salto".into()).or_default() += salto_seen;
                *log.sim_faults_served.entry("ipassan".into()).or_default() += ipassan_faulted;
                *log.sim_faults_served.entry("salto".into()).or_default() += salto_faulted;
            }
            if stopping {
                return;
            }
            if self
                .sim_window_open
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
            {
                let rate = self.settings.sim_fault_rate;
                // At least one request's worth, so a quiet moment still sees a fault.
                owed.0 += rate * ipassan_seen.max(1) as f64;
                owed.1 += rate * salto_seen.max(1) as f64;
                while owed.0 >= 1.0 {
                    owed.0 -= 1.0;
                    self.ipassan_fault(rng).await;
                }
                while owed.1 >= 1.0 {
                    owed.1 -= 1.0;
                    self.salto_fault(rng).await;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    async fn ipassan_fault(&self, rng: &mut Rng) {
        let slow = u64::try_from(self.settings.sim_slow_answer.as_millis()).unwrap_or(3000);
        let (kind, respond) = match rng.below(3) {
            0 => ("503", json!({"status": 503})),
            1 => ("429", json!({"status": 429, "retry_after": 1})),
            _ => ("timeout", json!({"delay_ms": slow})),
        };
        let fault: Result<ipassan_sim::model::Fault, _> =
            serde_json::from_value(json!({"match": {}, "respond": respond, "times": 1}));
        let added = match fault {
            Ok(fault) => self
                .targets
                .ipassan_control
                .add_fault(&fault)
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        self.count_injected("ipassan", kind, added);
    }

    async fn salto_fault(&self, rng: &mut Rng) {
        let slow = u64::try_from(self.settings.sim_slow_answer.as_millis()).unwrap_or(3000);
        let (kind, respond) = match rng.below(3) {
            0 => ("503", json!({"http_status": 503})),
            1 => ("429", json!({"http_status": 429})),
            _ => ("timeout", json!({"delay_ms": slow})),
        };
        let added = self
            .http
            .post(format!("{}_sim/faults", self.targets.salto_url))
            .json(&json!({"match": {}, "respond": respond, "times": 1}))
            .send()
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| {
                r.error_for_status()
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            });
        self.count_injected("salto", kind, added);
    }

    fn count_injected(&self, sim: &str, kind: &str, added: anyhow::Result<()>) {
        let mut log = self.log();
        match added {
            Ok(()) => {
                *log.sim_faults_injected
                    .entry((sim.to_owned(), kind.to_owned()))
                    .or_default() += 1;
            }
            Err(error) => {
                if log.failures.len() < 20 {
                    log.failures.push(format!("{sim} fault: {error:#}"));
                }
            }
        }
    }

    /// Nothing injected may outlive the load: faults not used up are removed, SMTP accepts mail.
    async fn undo_all(&self) {
        self.targets.mail.set_refusing(false);
        if let Some(own) = &self.targets.own {
            let _ = self.clear_own_faults(own).await;
        }
        let _ = self.targets.ipassan_control.clear_faults().await;
        let _ = self
            .http
            .delete(format!("{}_sim/faults", self.targets.salto_url))
            .send()
            .await;
    }
}
