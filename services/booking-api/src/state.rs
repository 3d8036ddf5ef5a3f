//! What every request handler shares.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::pg_notify::PgNotifyHub;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub authenticator: Arc<Authenticator>,
    /// The broker as last seen, for `/healthz`.
    pub broker: crate::broker_health::BrokerHealth,
    /// Wakes `Prefer: wait` requests when a result lands (PostgreSQL NOTIFY).
    pub pg_notify: PgNotifyHub,
    /// Wakes this process's outbox relay after a transaction that stored an event commits.
    pub relay_wake: crate::outbox::RelayWake,
    /// Cancelled at shutdown: `Prefer: wait` stops waiting.
    pub shutdown: CancellationToken,
    pub prometheus: PrometheusHandle,
    /// Seals connection secrets (`CONNECX__SECRETS__KEY`); `None` when no key is set.
    pub sealer: Option<Arc<platform::secrets::Sealer>>,
    /// Whether the deployment has a default iPassan / Salto for unconnected buildings.
    pub defaults: crate::settings::DeploymentDefaults,
    /// `CONNECX__LIMITS__*`.
    pub limits: crate::settings::LimitsSettings,
    /// Residents' booking writes a minute.
    pub write_limiter: Arc<crate::rate_limit::WriteLimiter>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.authenticator.clone()
    }
}
