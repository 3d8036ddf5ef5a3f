//! The HTTP API (docs/architecture.md, "Services and what each owns"): the routes and the layers
//! around them. What visitor and facility bookings share is [`booking_core`].

pub mod admin;
pub mod booking_core;
pub mod connections;
pub mod facility_bookings;
pub mod health;
pub mod visitor_bookings;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::problem::{self, Problem};
use crate::state::AppState;
use crate::store::buildings::{self, BuildingRow};

/// Requests bodies are small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let api = Router::new()
        .route(
            "/v1/visitor-bookings",
            get(visitor_bookings::list).post(visitor_bookings::create),
        )
        .route(
            "/v1/visitor-bookings/{id}",
            get(visitor_bookings::get)
                .patch(visitor_bookings::patch)
                .delete(visitor_bookings::cancel),
        )
        .route(
            "/v1/facility-bookings",
            get(facility_bookings::list).post(facility_bookings::create),
        )
        .route(
            "/v1/facility-bookings/{id}",
            get(facility_bookings::get)
                .patch(facility_bookings::patch)
                .delete(facility_bookings::cancel),
        )
        .route("/v1/buildings/{id}", put(admin::put_building))
        .route("/v1/apartments/{id}", put(admin::put_apartment))
        .route("/v1/facilities/{id}", put(admin::put_facility))
        .route("/v1/residents/{id}", put(admin::put_resident))
        .route(
            "/v1/buildings/{id}/connections/ipassan",
            get(connections::get_ipassan)
                .put(connections::put_ipassan)
                .delete(connections::delete_ipassan),
        )
        .route(
            "/v1/buildings/{id}/connections/salto",
            get(connections::get_salto)
                .put(connections::put_salto)
                .delete(connections::delete_salto),
        )
        .route(
            "/v1/buildings/{id}/connections/ipassan/check",
            post(connections::check_ipassan),
        )
        .route(
            "/v1/buildings/{id}/connections/salto/check",
            post(connections::check_salto),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    Router::new()
        .merge(api)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", crate::openapi::ApiDoc::openapi()))
        .fallback(problem::route_not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(move |request, next| {
            within(request_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn(crate::http_metrics::track_http))
        .layer(TraceLayer::new_for_http().make_span_with(crate::request_trace::request_span))
        .layer(axum::middleware::from_fn(
            crate::request_trace::trace_requests,
        ))
        .layer(CatchPanicLayer::custom(problem::from_panic))
        .with_state(state)
}

/// Answers 408 `request_timeout` when `request` (its body read included) takes longer than
/// `limit`: a client sending its body slowly must not hold a connection and a task for ever.
async fn within(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_secs = limit.as_secs(), "request timed out");
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request took longer than {} s", limit.as_secs()),
            )
            .into_response()
        }
    }
}

/// The caller's building, or 422 when no manager has registered it yet.
pub async fn registered_building(
    conn: &mut sqlx::PgConnection,
    building_id: &str,
) -> Result<BuildingRow, Problem> {
    buildings::find(conn, building_id)
        .await?
        .ok_or_else(|| building_not_registered(building_id))
}

pub fn building_not_registered(building_id: &str) -> Problem {
    Problem::unprocessable(
        "building_not_registered",
        format!(
            "building {building_id} is not set up yet; a manager must PUT /v1/buildings/{building_id} first"
        ),
    )
}

/// A JSON answer with a status and extra headers.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T, headers: HeaderMap) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().extend(headers);
    response
}
