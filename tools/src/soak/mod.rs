//! The chaos soak: the whole system under a long, mixed, seeded load while faults are injected,
//! then an audit of where everything ended (issue 7).
//!
//! Every service runs as its real binary, `replicas` copies of each (booking-api, ipassan-sync,
//! salto-sync, notifier), as child processes on a fresh database and a fresh RabbitMQ vhost, with
//! the simulators and an SMTP sink in this process. The run:
//! 1. starts and seeds everything ([`world`]), and taps the broker for the audit ([`tap`]);
//! 2. drives the workload round-robin through the booking-api replicas ([`workload`]) while the
//!    injector follows its fault schedule ([`faults`]; replicas are killed and restarted through
//!    [`replicas`]);
//! 3. waits until every queue and outbox is empty ([`drain`]);
//! 4. audits ([`audit`]) and returns a [`SoakReport`] whose `violations` say what went wrong.
//!
//! The `soak` binary is the standalone tool (`cargo run --release -p tools --bin soak`); the CI
//! test `tests/tests/soak.rs` runs a short variant.

pub mod audit;
pub mod drain;
pub mod evidence;
pub mod faults;
pub mod rabbit;
pub mod replicas;
pub mod report;
pub mod rng;
pub mod tap;
pub mod workload;
pub mod world;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::mail_sink::MailSink;
use testkit::{TestBroker, TestDb};
use tokio_util::sync::CancellationToken;

pub use faults::FaultSettings;
pub use report::SoakReport;

use contracts::Service;
use evidence::Evidence;
use rabbit::Management;
use replicas::{ReplicaSpec, Supervisor, WORKERS};
use rng::Rng;
use workload::{Driver, WorkloadSettings};
use world::World;

/// Everything a run can be asked to do.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Bookings to create.
    pub bookings: usize,
    /// Write requests per second the workload asks for.
    pub rate: f64,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Replicas of each service.
    pub replicas: usize,
    pub seed: u64,
    pub buildings: usize,
    /// Apartments per building; `None` scales with `bookings`.
    pub apartments: Option<usize>,
    pub facilities: usize,
    pub faults: FaultSettings,
    /// `CONNECX__RETRY__TIERS` of every service: short, so faults resolve within the run.
    pub retry_tiers: String,
    /// `CONNECX__AMQP__PREFETCH` of the workers.
    pub prefetch: u16,
    /// `CONNECX__DATABASE__MAX_CONNECTIONS` of each replica.
    pub db_connections: u32,
    /// iPassan's and Salto's client timeout in the workers (whole seconds).
    pub client_timeout_secs: u64,
    /// How long the system may take to come to rest after the load.
    pub drain_timeout: Duration,
    /// Where the service binaries are (default: next to this executable).
    pub bin_dir: Option<PathBuf>,
    /// Copy every replica's log lines to stderr.
    pub echo_logs: bool,
    /// Keep every replica's log lines in `<dir>/<replica>.log`.
    pub log_dir: Option<PathBuf>,
}

impl SoakConfig {
    /// The standalone defaults for `bookings` bookings.
    pub fn new(bookings: usize) -> Self {
        Self {
            bookings,
            rate: 40.0,
            concurrency: 32,
            replicas: 2,
            seed: 1,
            buildings: 2,
            apartments: None,
            facilities: 6,
            faults: FaultSettings {
                connection_closes: 4,
                worker_kills: 4,
                smtp_outages: 3,
                smtp_outage: Duration::from_millis(1500),
                pg_terminations: 3,
                sim_fault_windows: 3,
                sim_fault_window: Duration::from_secs(10),
                sim_fault_rate: 0.05,
                sim_slow_answer: Duration::from_secs(3),
                broker_restarts: 0,
                broker_down: Duration::from_secs(5),
                building_outages: 1,
                building_outage: Duration::from_secs(20),
            },
            retry_tiers: "200ms,500ms,1s,2s".to_owned(),
            prefetch: 8,
            db_connections: 10,
            client_timeout_secs: 2,
            drain_timeout: Duration::from_secs(300),
            bin_dir: None,
            echo_logs: false,
            log_dir: None,
        }
    }

    fn apartments_per_building(&self) -> usize {
        self.apartments
            .unwrap_or_else(|| (self.bookings / (self.buildings.max(1) * 30)).max(10))
    }
}

const JWT_SECRET: &str = "the soak's secret, at least 32 bytes long";
const SEALING_KEY: &str = "c29hay1zZWFsaW5nLWtleS1sb2NhbC1vbmx5LSEhISE=";
const LOG_FILTER: &str = "info,lapin=warn,sqlx=warn,hyper=warn,reqwest=warn,tower_http=warn";

/// Runs the whole soak and returns its report (`report.violations` empty = passed). An `Err` means
/// the run itself could not be made (a binary missing, a service that never started).
pub async fn run(config: SoakConfig) -> anyhow::Result<SoakReport> {
    let started = Instant::now();
    let bin_dir = replicas::service_bin_dir(config.bin_dir.as_deref())?;
    let mut rng = Rng::new(config.seed);
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    // Every notifier replica pools up to 8 SMTP connections (and a killed one's stay open on the
    // sink's side until it notices), so the sink serves many sessions at once.
    let mail = MailSink::start_with_sessions(16 * config.replicas.max(1) as u32 + 16);
    let world = Arc::new(World::new(
        config.buildings,
        config.apartments_per_building(),
        config.facilities,
        JWT_SECRET,
    ));
    say(&format!(
        "database {}, vhost {}, {} buildings × {} apartments × {} facilities, services from {}",
        db.name,
        broker.vhost,
        config.buildings,
        config.apartments_per_building(),
        config.facilities,
        bin_dir.display()
    ));

    let ipassan = ipassan_sim::spawn().await.context("ipassan-sim starts")?;
    ipassan
        .control()
        .seed(&world.ipassan_seed())
        .await
        .context("seeding ipassan-sim")?;
    let salto = salto_sim::RunningSim::start(0)
        .await
        .context("salto-sim starts")?;
    let http = reqwest::Client::new();
    http.post(format!("{}_sim/seed", salto.url()))
        .json(&world.salto_seed())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("seeding salto-sim")?;
    // With two buildings or more, the last one is on an iPassan tenant and a Salto server of its
    // own (seeded alike), connected by an operator: the target of the building outages.
    let own = if config.buildings >= 2 {
        let ipassan = ipassan_sim::spawn()
            .await
            .context("own ipassan-sim starts")?;
        ipassan
            .control()
            .seed(&world.ipassan_seed())
            .await
            .context("seeding the own ipassan-sim")?;
        let salto = salto_sim::RunningSim::start(0)
            .await
            .context("own salto-sim starts")?;
        http.post(format!("{}_sim/seed", salto.url()))
            .json(&world.salto_seed())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("seeding the own salto-sim")?;
        Some((ipassan, salto))
    } else {
        None
    };
    let own_building = own.as_ref().map(|_| config.buildings - 1);

    let evidence = Evidence::default();
    if let Some(dir) = &config.log_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
    }
    let supervisor = Supervisor::new(
        bin_dir,
        evidence.clone(),
        config.echo_logs,
        config.log_dir.clone(),
    );
    let management = Management::new(&broker.vhost);
    let outcome = async {
        let apis = start_replicas(&config, &supervisor, &db, &broker, &mail, &ipassan, &salto)?;
        wait_until_up(&supervisor, &management, &apis, config.replicas).await?;
        world.register(&http, &apis[0]).await?;
        // Before connecting a building: the connection's events go through the outbox too, and
        // the audit wants to see every sent one on the broker.
        let tap = tap::AuditTap::start(&broker.url).await?;
        if let (Some(building), Some((ipassan, salto))) = (own_building, &own) {
            world
                .connect_own_systems(
                    &http,
                    &apis[0],
                    building,
                    &ipassan.base_url,
                    &salto.url(),
                    config.client_timeout_secs,
                )
                .await?;
            say(&format!(
                "building {} is on its own iPassan tenant and Salto server",
                world.buildings[building].id
            ));
        }
        say(&format!(
            "{} replicas of each service up; load: {} bookings at {} requests/s",
            config.replicas, config.bookings, config.rate
        ));

        let driver = Driver::new(
            apis.clone(),
            Arc::clone(&world),
            WorkloadSettings {
                bookings: config.bookings,
                rate: config.rate,
                concurrency: config.concurrency,
            },
        );
        let injector = faults::Injector::new(
            faults::Targets {
                management: management.clone(),
                supervisor: supervisor.clone(),
                mail: mail.clone(),
                database: db.name.clone(),
                server_url: testkit::db::server_url(),
                ipassan: ipassan.state.clone(),
                ipassan_control: ipassan.control(),
                salto: salto.state.clone(),
                salto_url: salto.url(),
                own: own_building
                    .zip(own.as_ref())
                    .map(|(building, (ipassan, salto))| faults::OwnSystems {
                        building: world.buildings[building].id.clone(),
                        ipassan: ipassan.state.clone(),
                        ipassan_control: ipassan.control(),
                        salto: salto.state.clone(),
                        salto_url: salto.url(),
                    }),
            },
            config.faults.clone(),
        );
        let load_done = CancellationToken::new();
        let fault_rng = rng.fork(2);
        let injecting = tokio::spawn(injector.run(driver.clone(), fault_rng, load_done.clone()));
        let progress = tokio::spawn(report_progress(driver.clone(), load_done.clone()));
        let load = driver.run(rng.fork(1)).await;
        load_done.cancel();
        let _ = progress.await;
        let fault_log = injecting.await.context("the fault injector panicked")?;
        say(&format!(
            "load done in {:.1} s; waiting for queues and outboxes to drain",
            load.stats.elapsed.as_secs_f64()
        ));

        let booking_pool = pool(&db, "booking").await?;
        let notifier_pool = pool(&db, "notifier").await?;
        let drained =
            drain::wait_until_drained(&booking_pool, &management, &evidence, config.drain_timeout)
                .await;
        say(&format!(
            "{} after {:.1} s; auditing",
            if drained.timed_out {
                "drain TIMED OUT"
            } else {
                "drained"
            },
            drained.took.as_secs_f64()
        ));
        tap.finish(Duration::from_secs(60)).await?;
        let parked = management
            .queues()
            .await
            .unwrap_or_default()
            .iter()
            .find(|q| q.name == contracts::PARKING_QUEUE)
            .map_or(0, |q| usize::try_from(q.messages).unwrap_or(0));
        let mails = mail.mails();
        let audited = audit::audit(&audit::Sources {
            world: &world,
            client: &load.bookings,
            booking: &booking_pool,
            notifier: &notifier_pool,
            ipassan: &ipassan.state,
            salto: &salto.state,
            own: own
                .as_ref()
                .map(|(ipassan, salto)| (&ipassan.state, &salto.state)),
            own_building,
            outages: &fault_log.building_outages,
            mails: &mails,
            tap: &tap,
            evidence: &evidence,
            parked,
        })
        .await?;
        if tap.foreign_messages() > 0 {
            say(&format!(
                "{} messages on connecx.events were not events",
                tap.foreign_messages()
            ));
        }
        let logs = evidence.summary();
        let mut report = SoakReport {
            seed: config.seed,
            replicas: config.replicas,
            rate: config.rate,
            load: load.stats,
            drain: drained.took,
            drain_timed_out: drained.timed_out,
            still_busy: drained.still_busy,
            total: Duration::ZERO,
            faults: fault_log,
            crashes: supervisor.crashes(),
            audit: audited,
            error_lines: logs.errors,
            error_samples: logs.error_samples,
            violations: Vec::new(),
        };
        report.judge();
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    supervisor.stop_all(Duration::from_secs(20)).await;
    let mut report = outcome?;
    report.total = started.elapsed();
    Ok(report)
}

fn say(text: &str) {
    eprintln!("[soak] {text}");
}

async fn report_progress(driver: Driver, done: CancellationToken) {
    let mut last = -1.0;
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let progress = (driver.progress() * 100.0).floor();
        if progress != last {
            say(&format!("{progress:.0}% of the booking requests sent"));
            last = progress;
        }
    }
}

async fn pool(db: &TestDb, schema: &str) -> anyhow::Result<sqlx::PgPool> {
    let options: PgConnectOptions = db.url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema)]))
        .await?)
}

/// `CONNECX__AMQP__URL` of a replica: as its service's own RabbitMQ user, as in a deployment.
fn amqp_url_as(broker: &TestBroker, service: Service) -> (String, String) {
    ("CONNECX__AMQP__URL".to_owned(), broker.url_for(service))
}

/// A free port on 127.0.0.1 for a booking-api replica.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Starts every replica; returns booking-api's base URLs.
fn start_replicas(
    config: &SoakConfig,
    supervisor: &Supervisor,
    db: &TestDb,
    broker: &TestBroker,
    mail: &MailSink,
    ipassan: &ipassan_sim::RunningSim,
    salto: &salto_sim::RunningSim,
) -> anyhow::Result<Vec<String>> {
    // Each service connects as its own PostgreSQL role, as in a deployment.
    let common = |schema: &str, connections: u32| -> Vec<(String, String)> {
        [
            ("CONNECX__DATABASE__URL", db.service_url(schema)),
            (
                "CONNECX__DATABASE__MAX_CONNECTIONS",
                connections.to_string(),
            ),
            ("CONNECX__AMQP__PREFETCH", config.prefetch.to_string()),
            ("CONNECX__RETRY__TIERS", config.retry_tiers.clone()),
            ("CONNECX__LOG__FORMAT", "json".to_owned()),
            ("CONNECX__LOG__LEVEL", "info".to_owned()),
            ("RUST_LOG", LOG_FILTER.to_owned()),
            // A replica that dies shows why in its last lines, not a backtrace that pushes the
            // error out of them.
            ("RUST_BACKTRACE", "0".to_owned()),
            // Seals the own building's connection (booking-api and the workers).
            ("CONNECX__SECRETS__KEY", SEALING_KEY.to_owned()),
            // Short enough that a building outage of the run opens, probes and closes a breaker
            // and produces its outage and recovery mails.
            // The soak books far more, and faster, for one resident than a person would.
            ("CONNECX__LIMITS__WRITES_PER_MINUTE", "0".to_owned()),
            ("CONNECX__LIMITS__MAX_LIVE_BOOKINGS", "1000000".to_owned()),
            ("CONNECX__CONNECTIONS__BREAKER_OPEN_SECS", "2".to_owned()),
            ("CONNECX__CONNECTIONS__BREAKER_FAILURES", "2".to_owned()),
            // Below the prefetch, so that the failing building never holds every message slot
            // of a replica (the services warn otherwise).
            (
                "CONNECX__CONNECTIONS__MAX_IN_FLIGHT",
                (config.prefetch / 2).max(1).to_string(),
            ),
            ("CONNECX__CONNECTIONS__OUTAGE_ALERT_SECS", "3".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let timeout = config.client_timeout_secs.to_string();
    let mut apis = Vec::new();
    let mut specs = Vec::new();
    for index in 1..=config.replicas {
        let port = free_port()?;
        apis.push(format!("http://127.0.0.1:{port}"));
        let mut env = common(booking_api::SCHEMA, config.db_connections);
        env.push(amqp_url_as(broker, Service::BookingApi));
        env.extend(
            [
                ("CONNECX__HTTP__HOST", "127.0.0.1".to_owned()),
                ("CONNECX__HTTP__PORT", port.to_string()),
                ("CONNECX__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
                ("CONNECX__OUTBOX__POLL_INTERVAL_MS", "250".to_owned()),
                ("CONNECX__OUTBOX__MAX_BACKOFF_MS", "2000".to_owned()),
                ("CONNECX__OUTBOX__PUBLISH_TIMEOUT_SECS", "10".to_owned()),
                // The deployment's defaults: booking-api reads only that they exist.
                ("CONNECX__IPASSAN__BASE_URL", ipassan.base_url.clone()),
                ("CONNECX__SALTO__URL", salto.url()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        specs.push(ReplicaSpec {
            service: Service::BookingApi,
            index,
            env,
        });
    }
    for service in WORKERS {
        for index in 1..=config.replicas {
            let schema = match service {
                Service::BookingApi => booking_api::SCHEMA,
                Service::IpassanSync => ipassan_sync::SCHEMA,
                Service::SaltoSync => salto_sync::SCHEMA,
                Service::Notifier => notifier::SCHEMA,
            };
            let mut env = common(schema, config.db_connections);
            env.push(amqp_url_as(broker, service));
            let extra: Vec<(&str, String)> = match service {
                Service::IpassanSync => vec![
                    ("CONNECX__IPASSAN__BASE_URL", ipassan.base_url.clone()),
                    (
                        "CONNECX__IPASSAN__CLIENT_ID",
                        world::IPASSAN_CLIENT_ID.to_owned(),
                    ),
                    (
                        "CONNECX__IPASSAN__CLIENT_SECRET",
                        world::IPASSAN_CLIENT_SECRET.to_owned(),
                    ),
                    ("CONNECX__IPASSAN__TIMEOUT_SECS", timeout.clone()),
                ],
                Service::SaltoSync => vec![
                    ("CONNECX__SALTO__URL", salto.url()),
                    ("CONNECX__SALTO__AUTH_KIND", "none".to_owned()),
                    ("CONNECX__SALTO__TIMEOUT_SECS", timeout.clone()),
                ],
                Service::Notifier => vec![
                    ("CONNECX__SMTP__HOST", mail.host()),
                    ("CONNECX__SMTP__PORT", mail.port().to_string()),
                    ("CONNECX__SMTP__TLS", "none".to_owned()),
                    (
                        "CONNECX__SMTP__FROM",
                        "connecX soak <no-reply@soak.example>".to_owned(),
                    ),
                    ("CONNECX__SMTP__TIMEOUT_SECS", "5".to_owned()),
                    ("CONNECX__OPS__ALERT_EMAIL", "ops@soak.example".to_owned()),
                ],
                Service::BookingApi => Vec::new(),
            };
            env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            specs.push(ReplicaSpec {
                service,
                index,
                env,
            });
        }
    }
    for spec in specs {
        supervisor.start(spec)?;
    }
    Ok(apis)
}

/// Waits until every booking-api replica is ready and every consumer queue has a consumer per
/// replica. Fails with the last lines of a replica that died meanwhile.
async fn wait_until_up(
    supervisor: &Supervisor,
    management: &Management,
    apis: &[String],
    replicas: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut waiting_for = String::new();
    while Instant::now() < deadline {
        if let Some(crash) = supervisor.crashes().first() {
            bail!(
                "{} stopped while starting ({}); its last lines:\n{}",
                crash.replica,
                crash.status,
                crash.last_lines.join("\n")
            );
        }
        let mut ready = true;
        for api in apis {
            let up = http
                .get(format!("{api}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !up {
                ready = false;
                waiting_for = format!("booking-api at {api}/readyz");
            }
        }
        if ready {
            let queues = management.queues().await.unwrap_or_default();
            for spec in contracts::ALL_QUEUES {
                let consumers = queues
                    .iter()
                    .find(|q| q.name == spec.name)
                    .map_or(0, |q| q.consumers);
                if consumers < replicas as u64 {
                    ready = false;
                    waiting_for =
                        format!("{replicas} consumers on {} (has {consumers})", spec.name);
                }
            }
        }
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the services did not come up within 180 s: still waiting for {waiting_for}")
}
