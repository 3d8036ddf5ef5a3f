//! `/healthz` (the process answers), `/readyz` (PostgreSQL and RabbitMQ are reachable) and
//! `/metrics` (Prometheus text).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::problem::{Problem, ProblemDetails};
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// PostgreSQL and RabbitMQ are reachable.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "A dependency is down", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let database = async {
        match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&app.pool)).await
        {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(format!("database: {error}")),
            Err(_) => Some("database: no answer within 3s".to_owned()),
        }
    };
    let broker = async {
        match tokio::time::timeout(CHECK_TIMEOUT, app.publisher.check()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("broker: {error}")),
            Err(_) => Some("broker: no answer within 3s".to_owned()),
        }
    };
    let (database, broker) = tokio::join!(database, broker);
    let failures: Vec<String> = [database, broker].into_iter().flatten().collect();
    if failures.is_empty() {
        axum::Json(Health { status: "ready" }).into_response()
    } else {
        tracing::warn!(failures = ?failures, "not ready");
        Problem::unavailable("not_ready", failures.join("; ")).into_response()
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let mut response = (StatusCode::OK, app.prometheus.render()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
