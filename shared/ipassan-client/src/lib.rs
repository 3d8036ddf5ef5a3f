//! The typed client of iPassan's HTTP API (docs/contracts/ipassan.md), and the only code of the
//! workspace that knows its URLs, form fields and JSON shapes. ipassan-sync drives visitors with
//! it; booking-api's connection check makes one harmless call with it ([`IpassanClient::check`]).
//!
//! Every call has a timeout; requests with a body are form-encoded. The bearer token is cached
//! and renewed before it expires, and once more if iPassan answers 401. A 429 whose `Retry-After`
//! is short (≤ [`MAX_RETRY_AFTER_WAIT`]) is waited out and the call made once more; a longer one
//! is reported as transient so the worker's retry tiers wait instead of holding the message.
//! Failures come back as [`IpassanError`], already classified by the contract's table.

mod error;
mod token;
pub mod visit;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use contracts::ConnectionProblem;
use platform::bulkhead::CallObserver;

pub use error::{ErrorKind, IpassanError, Missing, parse_retry_after};

use crate::visit::{VisitWindow, VisitorName, parse_local};
use token::{Token, TokenCache};

/// The longest `Retry-After` a call waits out itself before trying once more.
pub const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(10);

/// A person of a site, as iPassan knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: String,
    pub kind: PersonKind,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub access_profile_id: Option<String>,
}

/// iPassan's person types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonKind {
    Resident,
    Employee,
    Visitor,
    Other(u8),
}

impl From<u8> for PersonKind {
    fn from(code: u8) -> Self {
        match code {
            1 => PersonKind::Resident,
            2 => PersonKind::Employee,
            3 => PersonKind::Visitor,
            other => PersonKind::Other(other),
        }
    }
}

/// A visitor in iPassan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorRecord {
    pub id: String,
    pub visitee_id: String,
    pub window: VisitWindow,
    pub access_profile_id: Option<String>,
    pub external_ref: String,
    /// The PIN, while the credential is live; `None` once revoked.
    pub pin: Option<String>,
}

/// What creating a visitor needs.
#[derive(Debug, Clone)]
pub struct NewVisitor<'a> {
    /// The resident's iPassan person.
    pub visitee_id: &'a str,
    pub name: &'a VisitorName,
    pub email: &'a str,
    pub window: VisitWindow,
    /// Makes the create idempotent: the booking id.
    pub external_ref: &'a str,
}

/// Where an iPassan tenant is and the client credentials it issued to connecX.
#[derive(Clone)]
pub struct TenantSettings {
    /// e.g. `https://tenant.ipassan.com`
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The longest any one HTTP call may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for TenantSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSettings")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The client of one tenant; share one per tenant and process (it holds the token and the
/// connection pool).
pub struct IpassanClient {
    http: reqwest::Client,
    base: Url,
    client_id: String,
    client_secret: String,
    timeout: Duration,
    tokens: TokenCache,
    /// Told of every call (the tenant's bulkhead).
    observer: Option<Arc<dyn CallObserver>>,
}

impl IpassanClient {
    pub fn new(settings: &TenantSettings) -> Result<Self, IpassanError> {
        let mut base = Url::parse(&settings.base_url)
            .map_err(|e| IpassanError::Connection(format!("bad base URL: {e}")))?;
        if base.path_segments_mut().is_err() {
            return Err(IpassanError::Connection(
                "the base URL cannot carry a path".into(),
            ));
        }
        let timeout = settings.timeout;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| IpassanError::Connection(error_chain(&e)))?;
        Ok(Self {
            http,
            base,
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            timeout,
            tokens: TokenCache::default(),
            observer: None,
        })
    }

    /// Tells `observer` whether each call found iPassan working ([`works`]).
    pub fn observed_by(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// One harmless call that proves the tenant is reachable, takes the credentials and serves
    /// `site`: a token, then a person search on the site for an address nobody has. `Err` says
    /// what is wrong, in the connection check's words.
    pub async fn check(&self, site: &str) -> Result<(), (ConnectionProblem, String)> {
        match self
            .persons_by_email(site, "connecx-connection-check@invalid.example")
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => Err((check_problem(&error), error.to_string())),
        }
    }

    /// `GET /person/{id}`; `None` when iPassan does not know the person.
    pub async fn person(
        &self,
        site: &str,
        person_id: &str,
    ) -> Result<Option<Person>, IpassanError> {
        let url = self.site_url(site, &["person", person_id]);
        match self
            .call(Method::GET, url, None, site, Missing::Person)
            .await
        {
            Ok(response) => Ok(Some(person(read_json(response, self.timeout).await?))),
            Err(IpassanError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /person?email=` (exact, case-insensitive).
    pub async fn persons_by_email(
        &self,
        site: &str,
        email: &str,
    ) -> Result<Vec<Person>, IpassanError> {
        let mut url = self.site_url(site, &["person"]);
        url.query_pairs_mut().append_pair("email", email);
        let response = self
            .call(Method::GET, url, None, site, Missing::Person)
            .await?;
        let found: Vec<wire::Person> = read_json(response, self.timeout).await?;
        Ok(found.into_iter().map(person).collect())
    }

    /// `GET /visitor/{id}`; `None` when iPassan does not know the visitor.
    pub async fn visitor(
        &self,
        site: &str,
        visitor_id: &str,
    ) -> Result<Option<VisitorRecord>, IpassanError> {
        let url = self.site_url(site, &["visitor", visitor_id]);
        match self
            .call(Method::GET, url, None, site, Missing::Visitor)
            .await
        {
            Ok(response) => visitor(read_json(response, self.timeout).await?).map(Some),
            Err(IpassanError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /visitor?externalRef=`: the visitor made for a booking, if any.
    pub async fn visitor_by_external_ref(
        &self,
        site: &str,
        external_ref: &str,
    ) -> Result<Option<VisitorRecord>, IpassanError> {
        let mut url = self.site_url(site, &["visitor"]);
        url.query_pairs_mut()
            .append_pair("externalRef", external_ref);
        let response = self
            .call(Method::GET, url, None, site, Missing::Visitor)
            .await?;
        let found: Vec<wire::Visitor> = read_json(response, self.timeout).await?;
        found.into_iter().next().map(visitor).transpose()
    }

    /// `POST /visitor`: creates the visitor, or answers the one already made for `external_ref`.
    /// A 404 means the visitee is unknown ([`Missing::Visitee`]); a 409 that it has no access
    /// profile.
    pub async fn create_visitor(
        &self,
        site: &str,
        new: &NewVisitor<'_>,
    ) -> Result<VisitorRecord, IpassanError> {
        let url = self.site_url(site, &["visitor"]);
        let form = [
            ("visiteeId", new.visitee_id.to_owned()),
            ("firstName", new.name.first.clone()),
            ("lastName", new.name.last.clone()),
            ("email", new.email.to_owned()),
            ("validFrom", new.window.from_text()),
            ("validTo", new.window.to_text()),
            ("externalRef", new.external_ref.to_owned()),
        ];
        let response = self
            .call(Method::POST, url, Some(&form), site, Missing::Visitee)
            .await?;
        visitor(read_json(response, self.timeout).await?)
    }

    /// `PUT /visitor/{id}`: moves the window; the PIN stays.
    pub async fn update_window(
        &self,
        site: &str,
        visitor_id: &str,
        window: VisitWindow,
    ) -> Result<VisitorRecord, IpassanError> {
        let url = self.site_url(site, &["visitor", visitor_id]);
        let form = [
            ("validFrom", window.from_text()),
            ("validTo", window.to_text()),
        ];
        let response = self
            .call(Method::PUT, url, Some(&form), site, Missing::Visitor)
            .await?;
        visitor(read_json(response, self.timeout).await?)
    }

    /// `DELETE /visitor/{id}/credential`: the PIN stops opening doors at once. Idempotent.
    pub async fn revoke_credential(
        &self,
        site: &str,
        visitor_id: &str,
    ) -> Result<(), IpassanError> {
        let url = self.site_url(site, &["visitor", visitor_id, "credential"]);
        self.call(Method::DELETE, url, None, site, Missing::Visitor)
            .await
            .map(|_| ())
    }

    /// `<base>/api/v1/access/site/{site}/<rest>`, each part percent-encoded.
    fn site_url(&self, site: &str, rest: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["api", "v1", "access", "site", site])
                .extend(rest);
        }
        url
    }

    /// One API call, measured (`platform::metrics::record_external_call`).
    async fn call(
        &self,
        method: Method,
        url: Url,
        form: Option<&[(&str, String)]>,
        site: &str,
        missing: Missing,
    ) -> Result<Response, IpassanError> {
        let operation = match method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            _ => "other",
        };
        let started = std::time::Instant::now();
        let result = self.call_unmeasured(method, url, form, site, missing).await;
        platform::metrics::record_external_call("ipassan", operation, started, result.is_ok());
        if let Some(observer) = &self.observer {
            match &result {
                Err(error) if !works(error) => observer.failed(&error.to_string()),
                _ => observer.answered(),
            }
        }
        result
    }

    /// One API call with the token rules and the short-`Retry-After` rule; `Ok` only for 2xx.
    async fn call_unmeasured(
        &self,
        method: Method,
        url: Url,
        form: Option<&[(&str, String)]>,
        site: &str,
        missing: Missing,
    ) -> Result<Response, IpassanError> {
        let mut renewed = false;
        let mut waited = false;
        loop {
            let token = self.tokens.get(|| self.fetch_token()).await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&token);
            if let Some(form) = form {
                request = request.form(form);
            }
            let response = request
                .send()
                .await
                .map_err(|e| transport(&e, self.timeout))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && !renewed {
                tracing::info!("iPassan refused the token; fetching a new one");
                self.tokens.refused(&token).await;
                renewed = true;
                continue;
            }
            let retry_after = parse_retry_after(
                response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            );
            if status == StatusCode::TOO_MANY_REQUESTS
                && !waited
                && let Some(wait) = retry_after.filter(|w| *w <= MAX_RETRY_AFTER_WAIT)
            {
                tracing::info!(
                    wait_secs = wait.as_secs(),
                    "iPassan is rate limiting; waiting"
                );
                tokio::time::sleep(wait).await;
                waited = true;
                continue;
            }
            let message = error_message(response).await;
            return Err(IpassanError::from_status(
                status,
                message,
                site,
                missing,
                retry_after,
            ));
        }
    }

    /// `POST /api/v1/token` (client credentials).
    async fn fetch_token(&self) -> Result<Token, IpassanError> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["api", "v1", "token"]);
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("scope", "all"),
        ];
        let issued_at = Instant::now();
        let response = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| transport(&e, self.timeout))?;
        let status = response.status();
        if status.is_success() {
            let answer: wire::TokenAnswer = read_json(response, self.timeout).await?;
            if answer
                .token_type
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
            {
                return Err(IpassanError::UnreadableAnswer(format!(
                    "token type {:?} is not Bearer",
                    answer.token_type
                )));
            }
            return Ok(Token::new(
                answer.access_token,
                Duration::from_secs(answer.expires_in),
                issued_at,
            ));
        }
        let retry_after = parse_retry_after(
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let message = error_message(response).await;
        Err(match status.as_u16() {
            400 => IpassanError::InvalidRequest { message },
            401 => IpassanError::BadCredentials { message },
            429 => IpassanError::RateLimited { retry_after },
            500..=599 => IpassanError::Server {
                status: status.as_u16(),
                message,
            },
            other => IpassanError::Refused {
                status: other,
                message,
            },
        })
    }
}

/// Whether iPassan still works although the call failed: it answered, refusing the request itself
/// (a missing visitee, a conflict, a bad request). Timeouts, no connection, server errors, rate
/// limits and refused credentials say it does not.
pub fn works(error: &IpassanError) -> bool {
    match error {
        IpassanError::Connection(_)
        | IpassanError::Timeout(_)
        | IpassanError::Server { .. }
        | IpassanError::RateLimited { .. }
        | IpassanError::BadCredentials { .. }
        | IpassanError::Unauthorized { .. } => false,
        IpassanError::InvalidRequest { .. }
        | IpassanError::AccessDenied { .. }
        | IpassanError::NotFound { .. }
        | IpassanError::Conflict { .. }
        | IpassanError::Refused { .. }
        | IpassanError::UnreadableAnswer(_) => true,
    }
}

/// A failure as the connection check names it.
fn check_problem(error: &IpassanError) -> ConnectionProblem {
    match error {
        IpassanError::Connection(_)
        | IpassanError::Server { .. }
        | IpassanError::RateLimited { .. } => ConnectionProblem::Unreachable,
        IpassanError::Timeout(_) => ConnectionProblem::Timeout,
        IpassanError::BadCredentials { .. } | IpassanError::Unauthorized { .. } => {
            ConnectionProblem::CredentialsRefused
        }
        IpassanError::AccessDenied { .. } | IpassanError::NotFound { .. } => {
            ConnectionProblem::SiteNotFound
        }
        IpassanError::InvalidRequest { .. }
        | IpassanError::Conflict { .. }
        | IpassanError::Refused { .. }
        | IpassanError::UnreadableAnswer(_) => ConnectionProblem::ProtocolError,
    }
}

fn person(wire: wire::Person) -> Person {
    Person {
        id: wire.id,
        kind: wire.kind.into(),
        first_name: wire.first_name,
        last_name: wire.last_name,
        email: wire.email,
        access_profile_id: wire.access_profile_id,
    }
}

fn visitor(wire: wire::Visitor) -> Result<VisitorRecord, IpassanError> {
    let time = |text: &str| {
        parse_local(text).ok_or_else(|| {
            IpassanError::UnreadableAnswer(format!(
                "visitor {} has a time `{text}` not in YYYY-MM-DDTHH:MM:SS",
                wire.id
            ))
        })
    };
    let window = VisitWindow {
        from: time(&wire.valid_from)?,
        to: time(&wire.valid_to)?,
    };
    Ok(VisitorRecord {
        pin: wire
            .credential
            .filter(|c| c.kind.eq_ignore_ascii_case("pin"))
            .map(|c| c.pin),
        id: wire.id,
        visitee_id: wire.visitee_id,
        window,
        access_profile_id: wire.access_profile_id,
        external_ref: wire.external_ref,
    })
}

/// Reads a 2xx JSON body. A body cut off in transit is transient; one that does not follow the
/// contract is permanent.
async fn read_json<T: DeserializeOwned>(
    response: Response,
    timeout: Duration,
) -> Result<T, IpassanError> {
    let bytes = read_limited(response, timeout).await?;
    serde_json::from_slice(&bytes).map_err(|e| IpassanError::UnreadableAnswer(e.to_string()))
}

/// The most an answer may hold. iPassan's answers are a few hundred bytes (a list of a site's
/// visitors for one booking at most); anything bigger is not an answer this client reads, and
/// reading it whole would let one tenant fill a worker's memory.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A body, read up to [`MAX_ANSWER_BYTES`] (more is an unreadable answer, read no further).
async fn read_limited(mut response: Response, timeout: Duration) -> Result<Vec<u8>, IpassanError> {
    let too_big = || {
        IpassanError::UnreadableAnswer(format!(
            "the answer is larger than {MAX_ANSWER_BYTES} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e, timeout))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `message` (and `error` code) of an error answer, or its first bytes.
async fn error_message(response: Response) -> String {
    let text = match read_limited(response, Duration::from_secs(10)).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => error.to_string(),
    };
    match serde_json::from_str::<wire::ErrorAnswer>(&text) {
        Ok(answer) if !answer.error.is_empty() => format!("{}: {}", answer.error, answer.message),
        Ok(answer) if !answer.message.is_empty() => answer.message,
        _ => text.chars().take(200).collect(),
    }
}

fn transport(error: &reqwest::Error, timeout: Duration) -> IpassanError {
    if error.is_timeout() {
        IpassanError::Timeout(timeout)
    } else {
        IpassanError::Connection(error_chain(error))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
