//! Every way a call to iPassan can fail, classified once, here, exactly as the contract's error
//! table says: 400 / 403 / 409 / other 4xx are permanent; 401 (after one token renewal), 429,
//! 5xx, timeouts and connection errors are transient. What a 404 means depends on the call, so
//! the call says it ([`Missing`]).

use std::time::Duration;

use reqwest::StatusCode;

/// Whether trying again later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Transient,
    Permanent,
}

/// What a 404 from a given call says is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Creating a visitor: the visitee (the resident's iPassan person).
    Visitee,
    /// Reading, moving or revoking a visitor: the visitor.
    Visitor,
    /// Reading a person.
    Person,
}

impl Missing {
    fn noun(self) -> &'static str {
        match self {
            Missing::Visitee => "visitee",
            Missing::Visitor => "visitor",
            Missing::Person => "person",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpassanError {
    #[error("iPassan refused the request as malformed (400 invalid_request): {message}")]
    InvalidRequest { message: String },
    #[error("iPassan refused the client credentials (401 at the token endpoint): {message}")]
    BadCredentials { message: String },
    #[error("iPassan refused a freshly issued token (401 invalid_token): {message}")]
    Unauthorized { message: String },
    #[error(
        "iPassan denied access to site `{site}` for these credentials (403 Access Denied): {message}"
    )]
    AccessDenied { site: String, message: String },
    #[error("iPassan does not know the {} (404 not_found): {message}", .missing.noun())]
    NotFound { missing: Missing, message: String },
    #[error("iPassan refused in the current state (409 conflict): {message}")]
    Conflict { message: String },
    #[error("iPassan is rate limiting (429{})", retry_after_text(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("iPassan failed with {status}: {message}")]
    Server { status: u16, message: String },
    #[error("iPassan answered {status} unexpectedly: {message}")]
    Refused { status: u16, message: String },
    #[error("iPassan did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach iPassan: {0}")]
    Connection(String),
    #[error("iPassan's answer does not follow the contract: {0}")]
    UnreadableAnswer(String),
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(after) => format!(", retry after {}s", after.as_secs()),
        None => String::new(),
    }
}

impl IpassanError {
    /// The contract's "client treats as" column.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IpassanError::BadCredentials { .. }
            | IpassanError::Unauthorized { .. }
            | IpassanError::RateLimited { .. }
            | IpassanError::Server { .. }
            | IpassanError::Timeout(_)
            | IpassanError::Connection(_) => ErrorKind::Transient,
            IpassanError::InvalidRequest { .. }
            | IpassanError::AccessDenied { .. }
            | IpassanError::NotFound { .. }
            | IpassanError::Conflict { .. }
            | IpassanError::Refused { .. }
            | IpassanError::UnreadableAnswer(_) => ErrorKind::Permanent,
        }
    }

    /// The error for a non-success answer of an API call (the token endpoint has its own).
    /// 401 and 429 reach this only once the client has already renewed or waited.
    pub fn from_status(
        status: StatusCode,
        message: String,
        site: &str,
        missing: Missing,
        retry_after: Option<Duration>,
    ) -> Self {
        match status.as_u16() {
            400 => IpassanError::InvalidRequest { message },
            401 => IpassanError::Unauthorized { message },
            403 => IpassanError::AccessDenied {
                site: site.to_owned(),
                message,
            },
            404 => IpassanError::NotFound { missing, message },
            409 => IpassanError::Conflict { message },
            429 => IpassanError::RateLimited { retry_after },
            500..=599 => IpassanError::Server {
                status: status.as_u16(),
                message,
            },
            other => IpassanError::Refused {
                status: other,
                message,
            },
        }
    }
}

/// `Retry-After` in seconds (the contract's form). An HTTP date or garbage reads as absent.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16) -> (ErrorKind, IpassanError) {
        let error = IpassanError::from_status(
            StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
            "m".into(),
            "site-1",
            Missing::Visitee,
            None,
        );
        (error.kind(), error)
    }

    #[test]
    fn statuses_are_classified_exactly_as_the_contracts_table_says() {
        use ErrorKind::{Permanent, Transient};
        for (status, kind) in [
            (400, Permanent),
            (401, Transient),
            (403, Permanent),
            (404, Permanent),
            (409, Permanent),
            (410, Permanent),
            (422, Permanent),
            (429, Transient),
            (500, Transient),
            (502, Transient),
            (503, Transient),
            (504, Transient),
        ] {
            assert_eq!(classify(status).0, kind, "{status}");
        }
        assert_eq!(
            IpassanError::Timeout(Duration::from_secs(10)).kind(),
            Transient
        );
        assert_eq!(IpassanError::Connection("refused".into()).kind(), Transient);
        assert_eq!(
            IpassanError::BadCredentials {
                message: "m".into()
            }
            .kind(),
            Transient,
            "401: a new token once, then transient"
        );
        assert_eq!(IpassanError::UnreadableAnswer("x".into()).kind(), Permanent);
    }

    #[test]
    fn a_404_says_what_the_call_was_missing() {
        let error = classify(404).1;
        assert_eq!(
            error,
            IpassanError::NotFound {
                missing: Missing::Visitee,
                message: "m".into()
            }
        );
        assert!(error.to_string().contains("visitee"), "{error}");
        assert!(classify(403).1.to_string().contains("site-1"));
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(parse_retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some(" 120 ")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2026 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
