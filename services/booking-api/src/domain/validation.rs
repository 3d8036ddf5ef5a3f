//! Field rules for what clients send: names, email addresses, time zones and the IDs of the
//! outside systems. Each rule is a plain function returning the reason in words; [`FieldErrors`]
//! collects them per field so one answer can name every field that is wrong.
//!
//! Lengths and characters are judged on the value as sent, surrounding spaces included, so that
//! the OpenAPI document can state them (`maxLength`, a `pattern` without control characters) and
//! the API refuses exactly what the document calls invalid. Only then is the value trimmed.

use std::str::FromStr;

use chrono_tz::Tz;
use serde::Serialize;

/// One field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `visitor.email`.
    pub field: String,
    /// Stable machine code, e.g. `invalid_email`.
    pub code: String,
    /// What is wrong, in words.
    pub message: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Collects field errors while a request is checked.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Records `result`'s error under `field`, passing its value through.
    pub fn check<T>(&mut self, field: &str, result: Result<T, Rule>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(rule) => {
                self.0.push(FieldError::new(field, rule.code, rule.message));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// `checked` (the values the checks passed through) when no field broke its rule, else every
    /// field that did.
    pub fn finish<T>(self, checked: Option<T>) -> Result<T, Vec<FieldError>> {
        match checked {
            Some(checked) if self.is_empty() => Ok(checked),
            _ => Err(self.0),
        }
    }
}

/// An email address a mail can be sent to.
// The OpenAPI document's name for it; the API reads text and checks it with [`email`].
#[derive(Debug, Clone, utoipa::ToSchema)]
#[schema(value_type = String, format = Email)]
pub struct EmailAddress(pub String);

/// A broken rule: a code and a message, before it is attached to a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub code: &'static str,
    pub message: String,
}

impl Rule {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The longest display name accepted (people, buildings, facilities).
pub const MAX_NAME_LEN: usize = 200;
/// The longest ID of an outside system accepted (Salto ExtIDs, iPassan ids and sites).
pub const MAX_EXTERNAL_ID_LEN: usize = 128;

/// A human-readable name: at most 200 characters and no control characters as sent, not blank;
/// kept trimmed.
pub fn name(candidate: &str) -> Result<String, Rule> {
    short_text(candidate, MAX_NAME_LEN, "must not be empty")
}

/// Text a person types or copies from another system's screens: not blank (`when_blank` says
/// what to do instead), at most `max` characters and no control characters as sent; kept
/// trimmed.
fn short_text(candidate: &str, max: usize, when_blank: &str) -> Result<String, Rule> {
    let trimmed = candidate.trim();
    if trimmed.is_empty() {
        return Err(Rule::new("required", when_blank));
    }
    at_most(candidate.chars().count(), max, "characters")?;
    printable(candidate)?;
    Ok(trimmed.to_owned())
}

/// `too_long` when `length` (counted in `unit`) is over `max`.
fn at_most(length: usize, max: usize, unit: &str) -> Result<(), Rule> {
    if length > max {
        return Err(Rule::new(
            "too_long",
            format!("must be at most {max} {unit}"),
        ));
    }
    Ok(())
}

/// `invalid_characters` when `candidate` holds a control character.
fn printable(candidate: &str) -> Result<(), Rule> {
    if candidate.chars().any(char::is_control) {
        return Err(Rule::new(
            "invalid_characters",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// An email address a mail can be sent to (parsed as the notifier's mailer will parse it).
pub fn email(candidate: &str) -> Result<String, Rule> {
    let trimmed = candidate.trim();
    match trimmed.parse::<lettre::Address>() {
        Ok(address) => Ok(address.to_string()),
        Err(_) => Err(Rule::new(
            "invalid_email",
            format!("`{trimmed}` is not an email address"),
        )),
    }
}

/// An IANA time zone name such as `Australia/Sydney`.
pub fn timezone(candidate: &str) -> Result<Tz, Rule> {
    Tz::from_str(candidate.trim()).map_err(|_| {
        Rule::new(
            "invalid_timezone",
            format!("`{candidate}` is not an IANA time zone name (e.g. `Australia/Sydney`)"),
        )
    })
}

/// An identifier of an outside system (Salto ExtID, iPassan person id or site): at most 128
/// characters and no control characters as sent, not blank; kept trimmed. These are set by a
/// manager from another system's screens, so the rule is only what every system can store.
pub fn external_id(candidate: &str) -> Result<String, Rule> {
    short_text(
        candidate,
        MAX_EXTERNAL_ID_LEN,
        "must not be empty (send null to unset it)",
    )
}

/// The longest URL of an outside system accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The longest secret accepted (client secrets, SHIP passwords and keys).
pub const MAX_SECRET_LEN: usize = 4096;

/// The URL of an outside system's API: `http://` or `https://` with a host, and no credentials
/// in it (they would be stored and shown in clear; they go in the secret fields). At most 2048
/// bytes and no control characters as sent (a URL parser would drop a tab or a line break
/// silently, and the text is stored as sent).
pub fn endpoint_url(candidate: &str) -> Result<String, Rule> {
    let trimmed = candidate.trim();
    if trimmed.is_empty() {
        return Err(Rule::new("required", "must not be empty"));
    }
    at_most(candidate.len(), MAX_URL_LEN, "bytes")?;
    printable(candidate)?;
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| Rule::new("invalid_url", format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(Rule::new(
            "invalid_url",
            "must be an http:// or https:// URL with a host, e.g. https://tenant.ipassan.com",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Rule::new(
            "credentials_in_url",
            "must not carry credentials; send them in the secret fields, which are sealed",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A secret (client secret, password, key): present, not blank, of reasonable size. Kept exactly
/// as sent: spaces may be part of it.
pub fn secret(candidate: Option<&str>) -> Result<String, Rule> {
    let Some(text) = candidate.filter(|t| !t.trim().is_empty()) else {
        return Err(Rule::new("required", "must be given"));
    };
    at_most(text.len(), MAX_SECRET_LEN, "bytes")?;
    printable(text)?;
    Ok(text.to_owned())
}

/// A connecX identifier (`[A-Za-z0-9_-]{1,64}`).
pub fn connecx_id(candidate: &str) -> Result<(), Rule> {
    super::ids::check_id(candidate).map_err(|e| Rule::new("invalid_id", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_an_http_url_with_a_host_and_no_credentials() {
        assert_eq!(
            endpoint_url(" https://tenant.ipassan.com ").unwrap(),
            "https://tenant.ipassan.com"
        );
        assert!(endpoint_url("http://127.0.0.1:8091/ship").is_ok());
        assert_eq!(
            endpoint_url("tenant.ipassan.com").unwrap_err().code,
            "invalid_url"
        );
        assert_eq!(
            endpoint_url("ftp://tenant").unwrap_err().code,
            "invalid_url"
        );
        assert_eq!(
            endpoint_url("https://user:pw@tenant").unwrap_err().code,
            "credentials_in_url"
        );
        assert_eq!(endpoint_url("").unwrap_err().code, "required");
    }

    #[test]
    fn a_secret_must_be_given_and_is_kept_as_sent() {
        assert_eq!(secret(Some(" a b ")).unwrap(), " a b ");
        assert_eq!(secret(None).unwrap_err().code, "required");
        assert_eq!(secret(Some("  ")).unwrap_err().code, "required");
        assert_eq!(secret(Some("a\nb")).unwrap_err().code, "invalid_characters");
    }

    #[test]
    fn names_are_trimmed_and_must_not_be_empty() {
        assert_eq!(name("  Ana Lee ").unwrap(), "Ana Lee");
        assert_eq!(name("   ").unwrap_err().code, "required");
        assert_eq!(name(&"x".repeat(201)).unwrap_err().code, "too_long");
        assert_eq!(name("a\u{0}b").unwrap_err().code, "invalid_characters");
    }

    #[test]
    fn lengths_and_characters_are_judged_as_sent() {
        // What the OpenAPI document states (`maxLength`, no control characters) holds for the
        // value as sent: spaces that trimming would remove still count, and a trailing line
        // break is refused, not trimmed away.
        let padded = format!(" {} ", "x".repeat(MAX_NAME_LEN - 1));
        assert_eq!(name(&padded).unwrap_err().code, "too_long");
        assert_eq!(name("Ana\n").unwrap_err().code, "invalid_characters");
        assert_eq!(name("\n").unwrap_err().code, "required");
        let padded = format!(" {} ", "z".repeat(MAX_EXTERNAL_ID_LEN - 1));
        assert_eq!(external_id(&padded).unwrap_err().code, "too_long");
        assert_eq!(external_id("501\t").unwrap_err().code, "invalid_characters");
        assert_eq!(
            endpoint_url("https://tenant\t.ipassan.com")
                .unwrap_err()
                .code,
            "invalid_characters"
        );
        let long = format!(" https://tenant.example/{}", "p".repeat(MAX_URL_LEN - 23));
        assert_eq!(endpoint_url(&long).unwrap_err().code, "too_long");
    }

    #[test]
    fn emails_must_be_addresses() {
        assert_eq!(email(" bo@example.com ").unwrap(), "bo@example.com");
        for bad in [
            "",
            "bo",
            "bo@",
            "@example.com",
            "bo example@x.com",
            "<bo@x.com>",
        ] {
            assert_eq!(email(bad).unwrap_err().code, "invalid_email", "{bad:?}");
        }
    }

    #[test]
    fn time_zones_must_be_iana_names() {
        assert_eq!(
            timezone("Australia/Sydney").unwrap(),
            chrono_tz::Australia::Sydney
        );
        assert_eq!(timezone("UTC").unwrap(), chrono_tz::UTC);
        for bad in ["", "Mars/Olympus", "+10:00", "AEST "] {
            assert!(timezone(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn external_ids_are_printable_and_bounded() {
        assert_eq!(external_id(" 501-56 ").unwrap(), "501-56");
        assert_eq!(external_id("").unwrap_err().code, "required");
        assert_eq!(external_id(&"z".repeat(129)).unwrap_err().code, "too_long");
        assert_eq!(external_id("a\tb").unwrap_err().code, "invalid_characters");
    }

    #[test]
    fn errors_are_collected_per_field() {
        let mut errors = FieldErrors::new();
        assert_eq!(errors.check("name", name("Ana")), Some("Ana".to_owned()));
        assert_eq!(errors.check("visitor.email", email("nope")), None);
        let errors = errors.into_vec();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "visitor.email");
        assert_eq!(errors[0].code, "invalid_email");
    }
}
