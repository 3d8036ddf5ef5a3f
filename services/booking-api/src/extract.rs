//! Reading requests: JSON bodies, `Idempotency-Key`, `Prefer: wait` and ids in the path.
//!
//! axum's own extractors answer bad input with plain text; these answer with problem+json that
//! names the field (415 for a body that is not JSON, 400 for JSON that does not parse, 422 for JSON
//! of the wrong shape), and keep the raw body so idempotent requests can be fingerprinted.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::domain::validation::FieldError;
use crate::problem::Problem;

/// A JSON body of type `T`, plus its raw bytes.
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let raw = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        rejection.status(),
                        "payload_too_large",
                        "the body is too large",
                    )
                } else {
                    Problem::bad_request("unreadable_body", "the body could not be read")
                }
            })?;
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses `raw` as `T`, naming the field at fault.
/// Syntax first (400), then shape (422), so `{} trailing` is malformed rather than incomplete.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Problem> {
    let document: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        Problem::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {}", without_position(&e)),
        )
    })?;
    // Every request body of this API is an object (serde would read a struct from an array).
    if !document.is_object() {
        return Err(Problem::unprocessable(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(document).map_err(json_problem)
}

fn json_problem(error: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    use serde_json::error::Category;
    let path = error.path().to_string();
    let inner = error.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => Problem::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {}", without_position(inner)),
        ),
        Category::Data => {
            let message = without_position(inner);
            let parent = if path == "." { None } else { Some(path) };
            let (field, code) = if let Some(missing) = quoted_after(&message, "missing field `") {
                (join(parent.as_deref(), &missing), "missing_field")
            } else if let Some(unknown) = quoted_after(&message, "unknown field `") {
                let field = match parent {
                    Some(p) if p.ends_with(&unknown) => p,
                    other => join(other.as_deref(), &unknown),
                };
                (field, "unknown_field")
            } else {
                (parent.unwrap_or_default(), "invalid_value")
            };
            if field.is_empty() {
                Problem::unprocessable(
                    "invalid_body",
                    format!("the body has the wrong shape: {message}"),
                )
            } else {
                Problem::validation(vec![FieldError::new(field, code, message)])
            }
        }
    }
}

fn join(parent: Option<&str>, field: &str) -> String {
    match parent {
        Some(parent) => format!("{parent}.{field}"),
        None => field.to_owned(),
    }
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next().map(str::to_owned)
}

/// serde_json appends "at line 1 column 7"; clients need the field, not the column.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

/// The value of an `Idempotency-Key` header, when one was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl IdempotencyKey {
    pub const HEADER: &'static str = "idempotency-key";

    /// Reads the header: absent is fine; present must be 1–255 visible ASCII characters.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Problem> {
        let Some(value) = headers.get(Self::HEADER) else {
            return Ok(None);
        };
        let bad = || {
            Problem::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                ),
            )
        };
        let text = value.to_str().map_err(|_| bad())?;
        let text = text.trim().trim_matches('"');
        if text.is_empty()
            || text.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(bad());
        }
        Ok(Some(Self(text.to_owned())))
    }
}

/// The longest `Prefer: wait` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// `Prefer: wait=N` (RFC 7240), capped at [`MAX_WAIT`]. A preference that cannot be read is
/// ignored, as the RFC asks.
pub fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .filter_map(|token| {
            let (name, value) = token.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .next()
        .map(|seconds| Duration::from_secs(seconds).min(MAX_WAIT))
        .filter(|wait| !wait.is_zero())
}

/// A booking id in the path. Anything that is not a UUID cannot name a booking: 404.
pub struct BookingIdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for BookingIdPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || Problem::not_found("booking_not_found", "there is no such booking");
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found())?;
        Uuid::parse_str(&raw).map(Self).map_err(|_| not_found())
    }
}

/// A connecX id in the path (`[A-Za-z0-9_-]{1,64}`); anything else is a 422 naming `id`.
pub struct EntityIdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for EntityIdPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| Problem::bad_request("invalid_path", "the path could not be read"))?;
        crate::domain::validation::connecx_id(&raw).map_err(|rule| {
            Problem::validation(vec![FieldError::new("id", rule.code, rule.message)])
        })?;
        Ok(Self(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Visit {
        visitor: Visitor,
        starts_at: chrono::DateTime<chrono::FixedOffset>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Visitor {
        name: String,
        email: String,
    }

    fn problem(body: &str) -> Problem {
        parse_json::<Visit>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn broken_json_is_a_400() {
        let p = problem("{\"visitor\":");
        assert_eq!((p.status, p.code.as_str()), (400, "malformed_json"));
        let p = problem("{} trailing");
        assert_eq!(p.status, 400);
    }

    #[test]
    fn a_missing_field_is_named_with_its_path() {
        let p = problem(r#"{"visitor":{"name":"Bo"},"starts_at":"2026-12-01T10:00:00Z"}"#);
        assert_eq!((p.status, p.code.as_str()), (422, "missing_field"));
        assert_eq!(p.field.as_deref(), Some("visitor.email"));
    }

    #[test]
    fn a_wrong_type_is_named() {
        let p = problem(
            r#"{"visitor":{"name":1,"email":"b@x.com"},"starts_at":"2026-12-01T10:00:00Z"}"#,
        );
        assert_eq!((p.status, p.code.as_str()), (422, "invalid_value"));
        assert_eq!(p.field.as_deref(), Some("visitor.name"));
        let p = problem(r#"{"visitor":{"name":"Bo","email":"b@x.com"},"starts_at":"tomorrow"}"#);
        assert_eq!(p.field.as_deref(), Some("starts_at"));
        let p = problem(
            r#"{"visitor":{"name":"Bo","email":"b@x.com"},"starts_at":"2026-12-01T10:00:00"}"#,
        );
        assert_eq!(
            p.field.as_deref(),
            Some("starts_at"),
            "a time without offset is refused"
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let p = problem(
            r#"{"visitor":{"name":"Bo","email":"b@x.com"},"starts_at":"2026-12-01T10:00:00Z","pin":"1"}"#,
        );
        assert_eq!((p.status, p.code.as_str()), (422, "unknown_field"));
        assert_eq!(p.field.as_deref(), Some("pin"));
    }

    #[test]
    fn a_body_of_the_wrong_kind_is_a_422() {
        let p = problem("[]");
        assert_eq!((p.status, p.code.as_str()), (422, "invalid_body"));
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn prefer_wait_is_read_and_capped() {
        assert_eq!(
            preferred_wait(&headers("prefer", "wait=5")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            preferred_wait(&headers("prefer", "respond-async, wait=3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            preferred_wait(&headers("prefer", "wait=600")),
            Some(MAX_WAIT)
        );
        assert_eq!(preferred_wait(&headers("prefer", "wait=soon")), None);
        assert_eq!(preferred_wait(&headers("prefer", "wait=0")), None);
        assert_eq!(preferred_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn idempotency_keys_must_be_visible_ascii() {
        assert_eq!(
            IdempotencyKey::from_headers(&headers("idempotency-key", "abc-123")).unwrap(),
            Some(IdempotencyKey("abc-123".into()))
        );
        assert!(IdempotencyKey::from_headers(&headers("idempotency-key", "")).is_err());
        assert!(
            IdempotencyKey::from_headers(&headers("idempotency-key", &"k".repeat(256))).is_err()
        );
        assert_eq!(
            IdempotencyKey::from_headers(&HeaderMap::new()).unwrap(),
            None
        );
    }
}
