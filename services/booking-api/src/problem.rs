//! The API's error type: RFC 9457 `application/problem+json` with a stable `code`.
//!
//! Every failure a client can see goes through [`Problem`], including axum's own rejections (bad
//! JSON, wrong content type, unknown route), so a client never gets plain text or a 500 for bad
//! input. Internal errors are logged with their cause and answered with a generic 500 that says
//! nothing about the internals. A database that cannot be reached, or that dropped the request's
//! connection, is not an internal error but an outage the client can wait out: 503
//! `database_unavailable` with `Retry-After` ([`platform::db::connection_lost`] decides which is which).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::validation::FieldError;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem (boxed: it travels in every handler's `Result`).
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemDetails>);

impl std::ops::Deref for Problem {
    type Target = ProblemDetails;

    fn deref(&self) -> &ProblemDetails {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDetails {
        &mut self.0
    }
}

/// The body of an RFC 9457 problem. `code` is the stable, machine-readable part; `detail` is for
/// people.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// A URI naming the problem type (`urn:connecx:problem:<code>`).
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:connecx:problem:[a-z0-9_]+$")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// Stable machine code, e.g. `resident_not_synced_to_ipassan`.
    #[schema(pattern = "^[a-z0-9_]+$")]
    pub code: String,
    /// What happened, in words.
    pub detail: String,
    /// The request field at fault, when there is exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// Every field at fault (validation problems).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    #[schema(ignore)]
    www_authenticate: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429, 503).
    #[serde(skip)]
    #[schema(ignore)]
    retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        let code = code.into();
        Self(Box::new(ProblemDetails {
            type_uri: format!("urn:connecx:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            code,
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            www_authenticate: None,
            retry_after_secs: None,
        }))
    }

    /// Names the one field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if self.errors.is_empty() {
            let error = FieldError::new(field.clone(), self.code.clone(), self.detail.clone());
            self.errors.push(error);
        }
        self.field = Some(field);
        self
    }

    /// 401: no usable token. Carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized(code: &str, detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, code, detail);
        problem.www_authenticate = Some(match code {
            "missing_token" => "Bearer",
            "token_expired" => "Bearer error=\"invalid_token\", error_description=\"expired\"",
            _ => "Bearer error=\"invalid_token\"",
        });
        problem
    }

    /// 403: a valid token acting out of its scope.
    pub fn forbidden(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    /// 404: not there, or not in the caller's building (which must not be revealed).
    pub fn not_found(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 409: the resource's state does not allow the change.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// 422: well-formed, but a rule of the domain says no.
    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 400: the request could not be read.
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422 naming every field that is wrong. With one field, `code` and `field` are that
    /// field's; with several, `code` is `validation_failed` and `errors` lists them.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        match errors.as_slice() {
            [one] => {
                let mut problem =
                    Self::unprocessable(&one.code, format!("{}: {}", one.field, one.message));
                problem.field = Some(one.field.clone());
                problem.errors = errors;
                problem
            }
            _ => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                let mut problem = Self::unprocessable(
                    "validation_failed",
                    format!("these fields are not valid: {}", fields.join(", ")),
                );
                problem.errors = errors;
                problem
            }
        }
    }

    /// 500 for a failure of ours. The cause is logged here, not shown to the client.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request could not be completed; it is safe to retry",
        )
    }

    /// 429: too many requests; try again after `retry_after_secs`.
    pub fn too_many_requests(code: &str, detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut problem = Self::new(StatusCode::TOO_MANY_REQUESTS, code, detail);
        problem.retry_after_secs = Some(retry_after_secs);
        problem
    }

    /// Adds a `Retry-After` header.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 503: a dependency is down.
    pub fn unavailable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }

    /// 503 `database_unavailable`: PostgreSQL could not be reached, or dropped the connection
    /// the request was using. Nothing the request meant to change was committed unless the
    /// connection died during the commit itself, so the answer invites a retry (with the same
    /// `Idempotency-Key`, a creation is never made twice).
    pub fn database_unavailable(error: &sqlx::Error) -> Self {
        tracing::warn!(%error, "request failed: the database is unavailable");
        Self::unavailable(
            "database_unavailable",
            "the database is unavailable for a moment; retry after the time in Retry-After",
        )
        .with_retry_after(DATABASE_RETRY_AFTER_SECS)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The `Retry-After` of a 503 for an unavailable database: long enough for a pool to reconnect
/// or a failover to finish, short enough that a person waiting on the app does not give up.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        if platform::db::connection_lost(&error) {
            Self::database_unavailable(&error)
        } else {
            Self::internal(&error)
        }
    }
}

/// A stored building whose time zone no longer parses is a failure of ours.
impl From<crate::store::buildings::UnknownZone> for Problem {
    fn from(error: crate::store::buildings::UnknownZone) -> Self {
        Self::internal(&error)
    }
}

impl From<crate::snapshot::SnapshotError> for Problem {
    fn from(error: crate::snapshot::SnapshotError) -> Self {
        Self::internal(&error)
    }
}

/// The answer for any route that does not exist.
pub async fn route_not_found() -> Problem {
    Problem::not_found("route_not_found", "there is no such resource")
}

/// The answer for a method a route does not support.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not supported here",
    )
}

/// Turns a panic in a handler into a problem answer (the panic is logged by the layer's caller).
pub fn from_panic(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the request could not be completed",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_field_error_names_its_field_and_code() {
        let problem = Problem::validation(vec![FieldError::new(
            "ends_at",
            "ends_not_after_starts",
            "must be after",
        )]);
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "ends_not_after_starts");
        assert_eq!(problem.field.as_deref(), Some("ends_at"));
        let json = serde_json::to_value(&*problem).unwrap();
        assert_eq!(json["type"], "urn:connecx:problem:ends_not_after_starts");
        assert_eq!(json["errors"][0]["field"], "ends_at");
    }

    #[test]
    fn several_field_errors_are_listed() {
        let problem = Problem::validation(vec![
            FieldError::new("name", "required", "must not be empty"),
            FieldError::new("timezone", "invalid_timezone", "not a zone"),
        ]);
        assert_eq!(problem.code, "validation_failed");
        assert_eq!(problem.field, None);
        assert_eq!(problem.errors.len(), 2);
    }

    #[test]
    fn an_unavailable_database_answers_503_with_retry_after() {
        let response = Problem::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            response.headers()[header::RETRY_AFTER],
            DATABASE_RETRY_AFTER_SECS.to_string().as_str()
        );
        let internal = Problem::from(sqlx::Error::RowNotFound);
        assert_eq!(
            (internal.status, internal.code.as_str()),
            (500, "internal_error")
        );
    }

    #[test]
    fn a_problem_is_served_as_problem_json() {
        let response = Problem::unauthorized("missing_token", "no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
