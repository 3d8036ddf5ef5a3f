//! Logging setup: pretty lines locally, JSON in production (`CONNECX__LOG__FORMAT=json`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so
/// tests that build several services in one process can all call it.
pub fn init(service: &'static str, settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE);
    let installed = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    if installed.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}

/// For tests: logs only when `TEST_LOG` is set, so a failing test can be rerun with logs.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("test", &LogSettings::default());
    }
}
