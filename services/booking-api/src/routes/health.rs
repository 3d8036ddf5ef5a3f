//! `/healthz` (the process answers; with the broker's state as last seen), `/readyz` (PostgreSQL
//! is reachable: bookings are accepted while the broker is down, they wait in the outbox) and
//! `/metrics` (Prometheus text).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::problem::{DATABASE_RETRY_AFTER_SECS, Problem, ProblemDetails};
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok` when the process answers.
    pub status: &'static str,
    /// RabbitMQ as last seen (every 5 s): `up` or `down`. While it is down, bookings wait in the
    /// outbox; it is not a reason to restart.
    pub broker: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process answers", body = Liveness)))]
pub async fn healthz(State(app): State<AppState>) -> axum::Json<Liveness> {
    axum::Json(Liveness {
        status: "ok",
        broker: if app.broker.is_up() { "up" } else { "down" },
    })
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// PostgreSQL is reachable.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "PostgreSQL answers", body = Health),
        (status = 503, description = "`not_ready`: PostgreSQL did not answer within 3 s", body = ProblemDetails, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before asking again"),
        )),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let failure =
        match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&app.pool)).await
        {
            Ok(Ok(_)) => return axum::Json(Health { status: "ready" }).into_response(),
            Ok(Err(error)) => format!("database: {error}"),
            Err(_) => "database: no answer within 3s".to_owned(),
        };
    tracing::warn!(failure, "not ready");
    Problem::unavailable("not_ready", failure)
        .with_retry_after(DATABASE_RETRY_AFTER_SECS)
        .into_response()
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
