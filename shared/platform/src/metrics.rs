//! The process's Prometheus recorder. A recorder can be installed once per process, and tests run
//! several services in one process, so every service asks here and they share it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// The Prometheus handle, installing the recorder on first call.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is already installed");
            }
            handle
        })
        .clone()
}

/// Folds recorded histogram samples into their buckets now and then, so memory stays flat even
/// when nobody scrapes.
pub async fn upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// Records one call to an outside system (`ipassan`, `salto`, `smtp`): its latency and whether it
/// succeeded, as `connecx_external_call_seconds{system, operation, outcome}` and
/// `connecx_external_call_errors_total{system, operation}`. `operation` must be from a small
/// fixed set (a method or a request name), never an id.
pub fn record_external_call(
    system: &'static str,
    operation: &'static str,
    started: std::time::Instant,
    succeeded: bool,
) {
    let outcome = if succeeded { "ok" } else { "error" };
    metrics::histogram!(
        "connecx_external_call_seconds",
        "system" => system, "operation" => operation, "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
    if !succeeded {
        metrics::counter!(
            "connecx_external_call_errors_total",
            "system" => system, "operation" => operation
        )
        .increment(1);
    }
}
