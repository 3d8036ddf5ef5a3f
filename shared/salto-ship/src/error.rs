//! What can go wrong talking SHIP, and what each failure means for the caller — decided once,
//! here, from the contract's code table: try again later (transient), give up (permanent: a
//! refusal or our own bug), or give up and tell the building manager (Salto does not know an ID).

use std::time::Duration;

/// A failed SHIP call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipError {
    #[error("Salto did not answer {request} within {timeout:?}")]
    Timeout {
        request: &'static str,
        timeout: Duration,
    },
    #[error("cannot reach Salto for {request}: {detail}")]
    Unreachable {
        request: &'static str,
        detail: String,
    },
    #[error("Salto answered {request} with HTTP {status}")]
    Http { request: &'static str, status: u16 },
    #[error("Salto refused {request} with code {code}: {message}")]
    Refused {
        request: &'static str,
        code: u32,
        message: String,
    },
    #[error("Salto's answer to {request} is not SHIP as the contract has it: {detail}")]
    Protocol {
        request: &'static str,
        detail: String,
    },
}

/// What a caller should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Worth trying again later (busy, database/communication error, licence limit, 5xx, timeout).
    Transient,
    /// Trying again cannot help: a business rule, a bad parameter, or a request we got wrong.
    Permanent,
    /// Trying again cannot help until a person fixes Salto or connecX (an unknown group, zone or
    /// timetable).
    NeedsManager,
}

/// The contract's table: how a SHIP `<Exception><Code>` is treated.
pub fn remedy_for_code(code: u32) -> Remedy {
    match code {
        1 | 4 | 5 | 101 => Remedy::Transient,
        11 => Remedy::NeedsManager,
        // 7 (business rule), 10 (already exists), 12 (invalid parameter), 500–503 (malformed or
        // unknown request: our bug) and anything the contract does not list.
        _ => Remedy::Permanent,
    }
}

/// How an HTTP status other than 200 is treated.
pub fn remedy_for_http_status(status: u16) -> Remedy {
    match status {
        408 | 429 | 500..=599 => Remedy::Transient,
        // 401/403: wrong credentials; other 4xx: the request is wrong. Both need a fix, not a retry.
        _ => Remedy::Permanent,
    }
}

impl ShipError {
    pub fn remedy(&self) -> Remedy {
        match self {
            Self::Timeout { .. } | Self::Unreachable { .. } => Remedy::Transient,
            Self::Http { status, .. } => remedy_for_http_status(*status),
            Self::Refused { code, .. } => remedy_for_code(*code),
            Self::Protocol { .. } => Remedy::Permanent,
        }
    }

    /// Whether the server still works although the call failed: it answered in SHIP, refusing
    /// the request itself (a business rule, an unknown ID, a bad parameter). Timeouts, no
    /// connection, HTTP errors, refused credentials, unreadable answers and "busy" codes say it
    /// does not.
    pub fn shows_server_works(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Unreachable { .. } | Self::Http { .. } => false,
            Self::Protocol { .. } => false,
            Self::Refused { code, .. } => remedy_for_code(*code) != Remedy::Transient,
        }
    }

    /// The SHIP error code, when Salto answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Salto's own words, for the manager's email.
    pub fn salto_answer(&self) -> String {
        match self {
            Self::Refused { code, message, .. } => format!("code {code}: {message}"),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_as_the_contract_says() {
        for code in [1, 4, 5, 101] {
            assert_eq!(remedy_for_code(code), Remedy::Transient, "{code}");
        }
        for code in [7, 10, 12, 500, 501, 502, 503, 99] {
            assert_eq!(remedy_for_code(code), Remedy::Permanent, "{code}");
        }
        assert_eq!(remedy_for_code(11), Remedy::NeedsManager);
    }

    #[test]
    fn transport_failures_are_transient_and_bad_credentials_are_not() {
        let timeout = ShipError::Timeout {
            request: "SaltoDBGroup.Read",
            timeout: Duration::from_secs(1),
        };
        assert_eq!(timeout.remedy(), Remedy::Transient);
        for status in [503, 502, 500, 429] {
            assert_eq!(
                remedy_for_http_status(status),
                Remedy::Transient,
                "{status}"
            );
        }
        for status in [401, 403, 404, 400] {
            assert_eq!(
                remedy_for_http_status(status),
                Remedy::Permanent,
                "{status}"
            );
        }
    }
}
