//! The chaos soak's CI variant (README, "Reliability"): about 500 bookings through two replicas of
//! every service, running as their real binaries, while the cheap faults are injected a few times
//! each — the vhost's connections force-closed, worker replicas SIGKILLed and restarted, the SMTP
//! server refusing, every database connection terminated, and the simulators answering 503, 429
//! or too late; the second building's own iPassan tenant and Salto server go down for a while.
//! (Not a broker restart: the broker is shared with the tests running beside this
//! one.) Then nothing may be lost, nothing stale, no booking in a wrong state, and every dead
//! letter must have produced an alert.
//!
//! The services' binaries must be built (`scripts/test` does it): the test fails naming
//! `cargo build --workspace --bins` when they are not. `CONNECX_SOAK_SEED` replays another
//! schedule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tools::soak::{self, FaultSettings, SoakConfig};

fn ci_config() -> SoakConfig {
    let mut config = SoakConfig::new(500);
    config.seed = std::env::var("CONNECX_SOAK_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(7);
    config.rate = 20.0;
    config.concurrency = 16;
    // PostgreSQL's connections (100) are shared with the tests running beside this one.
    config.prefetch = 2;
    config.db_connections = 4;
    config.faults = FaultSettings {
        connection_closes: 2,
        worker_kills: 3,
        smtp_outages: 2,
        smtp_outage: Duration::from_millis(1500),
        pg_terminations: 2,
        sim_fault_windows: 2,
        sim_fault_window: Duration::from_secs(6),
        sim_fault_rate: 0.05,
        sim_slow_answer: Duration::from_secs(config.client_timeout_secs + 1),
        broker_restarts: 0,
        broker_down: Duration::ZERO,
        // The second building's own iPassan and Salto fail for longer than the retry tiers'
        // first steps (200 ms, 500 ms, 1 s, 2 s).
        building_outages: 1,
        building_outage: Duration::from_secs(8),
    };
    config.drain_timeout = Duration::from_secs(240);
    // Every replica's log lines, to look into a failure.
    config.log_dir = std::env::var_os("CONNECX_SOAK_LOG_DIR").map(std::path::PathBuf::from);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_nothing_is_lost_or_stale_and_every_dead_letter_is_alerted() {
    let config = ci_config();
    let report = soak::run(config.clone())
        .await
        .unwrap_or_else(|error| panic!("the soak could not run: {error:#}"));
    println!("{report}");

    assert!(report.passed(), "the soak found violations:\n{report}");
    let faults = &report.faults;
    assert_eq!(faults.worker_kills.len(), config.faults.worker_kills);
    assert_eq!(faults.connection_closes, config.faults.connection_closes);
    assert_eq!(faults.smtp_outages, config.faults.smtp_outages);
    assert_eq!(faults.pg_terminations, config.faults.pg_terminations);
    assert_eq!(faults.sim_fault_windows, config.faults.sim_fault_windows);
    assert!(
        faults.sim_faults_served.values().sum::<usize>() > 0,
        "the simulators answered some requests with a fault"
    );
    assert_eq!(
        faults.building_outages.len(),
        config.faults.building_outages
    );
    for own in ["ipassan (own)", "salto (own)"] {
        assert!(
            faults.sim_requests.get(own).copied().unwrap_or(0) > 0,
            "the second building's bookings reached its own systems ({own})"
        );
    }
    let audit = &report.audit;
    assert_eq!(
        report.load.visitor_bookings + report.load.facility_bookings,
        config.bookings,
        "every booking request was accepted"
    );
    assert!(report.load.double_bookings > 0 && report.load.reschedules > 0);
    assert!(report.load.cancellations > 0);
    assert_eq!(audit.lost(), 0);
    assert_eq!(audit.wrong_state, audit.wrong_state_explained);
    assert_eq!(
        audit.stale_grants + audit.missing_grants,
        audit.stale_explained
    );
    assert_eq!(audit.dead_letters_alerted, audit.dead_letters);
    let (down, recovered) = audit.outage_mails;
    assert!(
        down >= 1 && recovered >= 1,
        "the second building's managers heard that its systems were down ({down}) and work again ({recovered})"
    );
}
