//! The small HTTP port a worker opens for its orchestrator: `/healthz` (the process answers),
//! `/readyz` (its database answers and every consumer is attached to its queue) and `/metrics`
//! (Prometheus). Off unless `CONNECX__HEALTH__PORT` is set, so several workers can run on one
//! machine without port clashes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// `CONNECX__HEALTH__*`
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HealthSettings {
    /// Port of the health/metrics listener; none = no listener.
    #[serde(default, deserialize_with = "crate::config::health_port")]
    pub port: Option<u16>,
    #[serde(default = "default_host")]
    pub host: String,
}

fn default_host() -> String {
    "0.0.0.0".to_owned()
}

/// Whether a consumer is attached to its queue right now (set by the worker runtime).
#[derive(Debug, Clone, Default)]
pub struct Attached(Arc<AtomicBool>);

impl Attached {
    pub fn set(&self, attached: bool) {
        self.0.store(attached, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What `/readyz` checks for a worker: its database, and that each consumer is attached.
pub fn worker_readiness(pool: PgPool, consumers: Vec<(&'static str, Attached)>) -> Check {
    Arc::new(move || {
        let pool = pool.clone();
        let consumers = consumers.clone();
        Box::pin(async move {
            let mut problems = Vec::new();
            match tokio::time::timeout(
                Duration::from_secs(3),
                sqlx::query("SELECT 1").execute(&pool),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => problems.push(format!("database: {error}")),
                Err(_) => problems.push("database: no answer within 3s".to_owned()),
            }
            for (queue, attached) in consumers {
                if !attached.get() {
                    problems.push(format!("not consuming {queue}"));
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
    })
}

/// The health listener, bound at build time (so tests can use port 0 and read the port).
pub struct HealthServer {
    listener: Option<tokio::net::TcpListener>,
}

impl HealthServer {
    pub async fn bind(settings: &HealthSettings) -> std::io::Result<Self> {
        let listener = match settings.port {
            Some(port) => {
                Some(tokio::net::TcpListener::bind((settings.host.as_str(), port)).await?)
            }
            None => None,
        };
        Ok(Self { listener })
    }

    /// The bound port, when there is a listener.
    pub fn port(&self) -> Option<u16> {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// Serves in the background until `shutdown`.
    pub fn serve(self, readiness: Check, shutdown: CancellationToken) {
        let Some(listener) = self.listener else {
            return;
        };
        let prometheus = crate::metrics::prometheus();
        tokio::spawn(crate::metrics::upkeep(prometheus.clone(), shutdown.clone()));
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route(
                "/metrics",
                get(move || {
                    let prometheus = prometheus.clone();
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            prometheus.render(),
                        )
                    }
                }),
            )
            .with_state(readiness);
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "health and metrics listening");
        }
        tokio::spawn(async move {
            let stopped = async move { shutdown.cancelled().await };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!(%error, "health listener failed");
            }
        });
    }
}

async fn readyz(State(check): State<Check>) -> Response {
    match check().await {
        Ok(()) => "ready".into_response(),
        Err(problem) => {
            tracing::warn!(%problem, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, problem).into_response()
        }
    }
}
