//! `soak`: the chaos soak of the whole connecX system (README, "Reliability").
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p tools --bin soak -- --bookings 10000
//! ```
//!
//! Runs two replicas of every service as real processes against the local PostgreSQL and
//! RabbitMQ, drives a seeded mixed workload while injecting faults, waits for the system to come
//! to rest, audits, prints the table and exits non-zero on any violation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tools::soak::{self, FaultSettings, SoakConfig};

/// Chaos soak: bookings under faults, then an audit of where every booking ended.
#[derive(Parser)]
#[command(long_about = None)]
struct Args {
    /// Bookings to create (reschedules, cancellations and double bookings come on top).
    #[arg(long, default_value_t = 10_000)]
    bookings: usize,
    /// Write requests per second (creates, reschedules, cancellations).
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Replicas of each service (booking-api, ipassan-sync, salto-sync, notifier).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Seed of the workload and the fault schedule [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Buildings (each its own iPassan site).
    #[arg(long, default_value_t = 2)]
    buildings: usize,
    /// Apartments per building [default: scales with --bookings].
    #[arg(long)]
    apartments: Option<usize>,
    /// Facilities (Salto zones) per building.
    #[arg(long, default_value_t = 6)]
    facilities: usize,
    /// Also stop and start the local RabbitMQ (`rabbitmqctl stop_app`/`start_app`) during the
    /// load. Every vhost on the machine goes down with it: never while other tests run.
    #[arg(long)]
    broker_restart: bool,
    /// Broker restarts (with --broker-restart).
    #[arg(long, default_value_t = 1)]
    broker_restarts: usize,
    /// How long the broker stays down, in seconds.
    #[arg(long, default_value_t = 5)]
    broker_down_secs: u64,
    /// Outages of the last building's own iPassan and Salto (with two buildings or more)
    /// [default: one per 5000 bookings, at least 1].
    #[arg(long)]
    building_outages: Option<usize>,
    /// How long each building outage lasts, in seconds.
    #[arg(long, default_value_t = 20)]
    building_outage_secs: u64,
    /// Times the vhost's RabbitMQ connections are force-closed [default: one per 1000 bookings,
    /// at least 4].
    #[arg(long)]
    connection_closes: Option<usize>,
    /// Worker replicas SIGKILLed (and restarted) [default: one per 1000 bookings, at least 4].
    #[arg(long)]
    worker_kills: Option<usize>,
    /// Times the SMTP sink refuses mail [default: one per 2000 bookings, at least 3].
    #[arg(long)]
    smtp_outages: Option<usize>,
    /// How long each SMTP refusal lasts, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    smtp_outage_ms: u64,
    /// Times every PostgreSQL connection of the run's database is terminated [default: one per
    /// 2000 bookings, at least 3].
    #[arg(long)]
    pg_terminations: Option<usize>,
    /// Windows of simulator faults: 503, 429, answers slower than the client timeout
    /// [default: one per 2000 bookings, at least 3].
    #[arg(long)]
    sim_fault_windows: Option<usize>,
    /// Length of each simulator fault window, in seconds.
    #[arg(long, default_value_t = 10)]
    sim_fault_secs: u64,
    /// Share of simulator requests answered with a fault inside a window.
    #[arg(long, default_value_t = 0.05)]
    sim_fault_rate: f64,
    /// No faults at all (a baseline).
    #[arg(long)]
    no_faults: bool,
    /// Retry tiers of every service (CONNECX__RETRY__TIERS).
    #[arg(long, default_value = "200ms,500ms,1s,2s")]
    retry_tiers: String,
    /// Prefetch of each worker replica.
    #[arg(long, default_value_t = 8)]
    prefetch: u16,
    /// Database connections of each replica.
    #[arg(long, default_value_t = 10)]
    db_connections: u32,
    /// Seconds the system may take to drain after the load.
    #[arg(long, default_value_t = 600)]
    drain_timeout_secs: u64,
    /// Where the service binaries are [default: next to this program].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Copy every replica's log lines to stderr.
    #[arg(long)]
    echo_logs: bool,
    /// Keep every replica's log lines in `<dir>/<replica>.log`.
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    eprintln!("[soak] seed {seed} (rerun the same schedule with --seed {seed})");
    let mut config = SoakConfig::new(args.bookings);
    config.rate = args.rate;
    config.concurrency = args.concurrency;
    config.replicas = args.replicas.max(1);
    config.seed = seed;
    config.buildings = args.buildings.max(1);
    config.apartments = args.apartments;
    config.facilities = args.facilities.max(1);
    config.retry_tiers = args.retry_tiers;
    config.prefetch = args.prefetch;
    config.db_connections = args.db_connections;
    config.drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    config.bin_dir = args.bin_dir;
    config.echo_logs = args.echo_logs;
    config.log_dir = args.log_dir;
    config.faults = if args.no_faults {
        FaultSettings::none()
    } else {
        // A longer run gets more faults: the defaults scale with the bookings.
        let per = |bookings: usize, least: usize| (args.bookings / bookings).max(least);
        FaultSettings {
            connection_closes: args.connection_closes.unwrap_or_else(|| per(1000, 4)),
            worker_kills: args.worker_kills.unwrap_or_else(|| per(1000, 4)),
            smtp_outages: args.smtp_outages.unwrap_or_else(|| per(2000, 3)),
            smtp_outage: Duration::from_millis(args.smtp_outage_ms),
            pg_terminations: args.pg_terminations.unwrap_or_else(|| per(2000, 3)),
            sim_fault_windows: args.sim_fault_windows.unwrap_or_else(|| per(2000, 3)),
            sim_fault_window: Duration::from_secs(args.sim_fault_secs),
            sim_fault_rate: args.sim_fault_rate,
            sim_slow_answer: Duration::from_secs(config.client_timeout_secs + 1),
            broker_restarts: if args.broker_restart {
                args.broker_restarts
            } else {
                0
            },
            broker_down: Duration::from_secs(args.broker_down_secs),
            building_outages: args.building_outages.unwrap_or_else(|| per(5000, 1)),
            building_outage: Duration::from_secs(args.building_outage_secs),
        }
    };
    match soak::run(config).await {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("soak: the run could not be made: {error:#}");
            ExitCode::from(2)
        }
    }
}
