//! The HTTP API (docs/architecture.md, "Services and what each owns"): routes, the layers around them, and what booking routes share.

pub mod admin;
pub mod connections;
pub mod facility_bookings;
pub mod health;
pub mod visitor_bookings;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;
use serde_json::Value;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::domain::validation::FieldError;
use crate::domain::window::{WindowError, whole_seconds};
use crate::problem::{self, Problem};
use crate::state::AppState;
use crate::store::buildings::{self, BuildingRow};

/// Requests bodies are small JSON documents.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most bookings one list answer holds.
pub const LIST_LIMIT: i64 = 500;

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
        .layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .layer(TraceLayer::new_for_http().make_span_with(crate::telemetry::request_span))
        .layer(axum::middleware::from_fn(crate::telemetry::trace_requests))
        .layer(CatchPanicLayer::custom(problem::from_panic))
        .with_state(state)
}

/// A booking's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BookingState {
    Booked,
    Cancelled,
}

impl From<contracts::BookingState> for BookingState {
    fn from(state: contracts::BookingState) -> Self {
        match state {
            contracts::BookingState::Booked => Self::Booked,
            contracts::BookingState::Cancelled => Self::Cancelled,
        }
    }
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

/// 422 for a window rule, naming the field to change.
pub fn window_problem(error: &WindowError, field: &str) -> Problem {
    Problem::validation(vec![FieldError::new(
        error.field_or(field),
        error.code(),
        error.to_string(),
    )])
}

/// 422 `too_many_live_bookings`: a resident already holds `CONNECX__LIMITS__MAX_LIVE_BOOKINGS` live
/// bookings of a kind.
pub fn too_many_live_bookings(kind: &str, max: u32) -> Problem {
    Problem::unprocessable(
        "too_many_live_bookings",
        format!(
            "a resident may hold {max} live {kind} bookings at most (booked and not yet ended); cancel one first"
        ),
    )
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

/// A PATCH of a booking: only the window may change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimePatch {
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

/// Fields a PATCH may carry.
pub const PATCHABLE: [&str; 2] = ["starts_at", "ends_at"];

impl TimePatch {
    /// Reads a PATCH body: any field but `starts_at`/`ends_at` is a 422 naming it.
    pub fn from_body(body: &Value) -> Result<Self, Problem> {
        let Some(fields) = body.as_object() else {
            return Err(Problem::unprocessable(
                "invalid_body",
                "the body must be a JSON object",
            ));
        };
        let mut errors: Vec<FieldError> = fields
            .keys()
            .filter(|k| !PATCHABLE.contains(&k.as_str()))
            .map(|k| {
                FieldError::new(
                    k.clone(),
                    "field_not_patchable",
                    "only starts_at and ends_at can be changed",
                )
            })
            .collect();
        let mut read = |name: &str| -> Option<DateTime<Utc>> {
            let value = fields.get(name)?;
            match serde_json::from_value::<DateTime<FixedOffset>>(value.clone()) {
                Ok(time) => Some(whole_seconds(time.with_timezone(&Utc))),
                Err(_) => {
                    errors.push(FieldError::new(
                        name,
                        "invalid_value",
                        "must be an RFC 3339 time with an offset, e.g. 2026-12-01T18:00:00+11:00",
                    ));
                    None
                }
            }
        };
        let patch = Self {
            starts_at: read("starts_at"),
            ends_at: read("ends_at"),
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        if patch.starts_at.is_none() && patch.ends_at.is_none() {
            return Err(Problem::unprocessable(
                "empty_patch",
                "send starts_at and/or ends_at",
            ));
        }
        Ok(patch)
    }

    /// The field a window error is blamed on: the end when it was sent, else the start.
    pub fn blamed_field(&self) -> &'static str {
        if self.ends_at.is_some() {
            "ends_at"
        } else {
            "starts_at"
        }
    }
}

/// 409 for a change to a cancelled booking.
pub fn cancelled_problem() -> Problem {
    Problem::conflict(
        "booking_cancelled",
        "the booking is cancelled and can no longer be changed",
    )
}

/// A JSON answer with a status and extra headers.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T, headers: HeaderMap) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().extend(headers);
    response
}

/// Headers of a creation's answer: where the booking lives, whether this is a replay, and
/// whether `Prefer: wait` was honoured.
pub fn creation_headers(location: &str, replayed: bool, waited: Option<Duration>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(wait) = waited
        && let Ok(value) = HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
    {
        headers.insert("preference-applied", value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_may_change_only_the_window() {
        let problem = TimePatch::from_body(
            &json!({"ends_at": "2026-12-01T22:00:00+11:00", "visitor": {"name": "x"}}),
        )
        .unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "field_not_patchable");
        assert_eq!(problem.field.as_deref(), Some("visitor"));
    }

    #[test]
    fn every_unpatchable_field_is_named() {
        let problem =
            TimePatch::from_body(&json!({"provide_access": true, "state": "booked"})).unwrap_err();
        let mut fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["provide_access", "state"]);
    }

    #[test]
    fn times_are_read_with_their_offset() {
        let patch =
            TimePatch::from_body(&json!({"starts_at": "2026-12-01T18:00:00+11:00"})).unwrap();
        assert_eq!(
            patch.starts_at.unwrap().to_rfc3339(),
            "2026-12-01T07:00:00+00:00"
        );
        assert_eq!(patch.ends_at, None);
        assert_eq!(patch.blamed_field(), "starts_at");
        let problem = TimePatch::from_body(&json!({"starts_at": "2026-12-01 18:00"})).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("starts_at"));
        assert_eq!(
            TimePatch::from_body(&json!({})).unwrap_err().code,
            "empty_patch"
        );
        assert_eq!(TimePatch::from_body(&json!([])).unwrap_err().status, 422);
    }
}
