//! salto-sim: a stand-in for SALTO ProAccess SPACE that speaks SHIP over HTTP exactly as
//! `docs/contracts/salto-ship.md` fixes it, for the service tests, the end-to-end tests and the local
//! run. SHIP requests are `POST`ed to any path outside `/_sim`; `/_sim` is the JSON control API
//! (seed, state, clock, door check, fault injection, a manual "console" change).
//!
//! It never imports salto-sync: a client that drifts from the contract fails against it.

pub mod control;
pub mod model;
pub mod ship;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use model::{Auth, Database, Refusal};

/// The content type of SHIP over HTTP.
pub const SHIP_CONTENT_TYPE: &str = "application/vnd.saltosystems.ship.v1+xml";

/// Everything the simulator holds; one lock, held only while a request is applied.
#[derive(Debug, Default)]
pub struct Sim {
    pub db: Database,
    pub auth: Auth,
    /// The server's local clock when set by a test; otherwise the machine's clock in
    /// [`Sim::timezone`] (UTC when none was seeded).
    pub clock: Option<NaiveDateTime>,
    /// The server's time zone (Salto runs on the building's local time).
    pub timezone: Option<chrono_tz::Tz>,
    pub requests: Vec<LoggedRequest>,
    pub faults: Vec<Fault>,
}

impl Sim {
    pub fn now(&self) -> NaiveDateTime {
        self.clock.unwrap_or_else(|| match self.timezone {
            Some(tz) => Utc::now().with_timezone(&tz).naive_local(),
            None => Utc::now().naive_utc(),
        })
    }
}

/// A SHIP request as received, for `GET /_sim/requests`.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub at: DateTime<Utc>,
    pub request_name: String,
    pub body: String,
    /// HTTP status answered.
    pub http_status: u16,
    /// `<Exception><Code>` answered, if any.
    pub code: Option<u32>,
    /// Whether an injected fault shaped the answer.
    pub fault: bool,
}

/// An injected fault: for the next `times` requests matching `match`, answer as `respond` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    #[serde(rename = "match", default)]
    pub matches: FaultMatch,
    pub respond: FaultResponse,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultMatch {
    /// The request name to match; absent matches every request.
    pub request_name: Option<String>,
    /// Text the request's body must contain, e.g. `<ExtGroupID>501-56</ExtGroupID>` for the
    /// calls on one access level; absent matches every body.
    #[serde(default)]
    pub body_contains: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FaultResponse {
    /// A SHIP error in an HTTP 200 answer.
    Code {
        code: u32,
        #[serde(default)]
        message: String,
    },
    /// A bare HTTP status (e.g. 503 from a proxy in front of Salto).
    HttpStatus { http_status: u16 },
    /// Answer after a delay (the request is then applied as usual, like a slow server would).
    Delay { delay_ms: u64 },
    /// Answer HTTP 200 with exactly this body (truncated XML, wrong types, a huge answer),
    /// `repeat` times over (default once). The request is not applied.
    Body {
        body: String,
        #[serde(default)]
        repeat: Option<usize>,
    },
}

/// Shared handle to the simulator's state.
#[derive(Debug, Clone, Default)]
pub struct SimState(Arc<Mutex<Sim>>);

impl SimState {
    /// The state; a poisoned lock (a panic while applying) is still usable: each change is whole.
    pub fn lock(&self) -> MutexGuard<'_, Sim> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The whole HTTP app: SHIP on every path outside `/_sim`, the control API under it.
pub fn app(state: SimState) -> Router {
    Router::new()
        .nest("/_sim", control::router())
        .fallback(ship_endpoint)
        .with_state(state)
}

/// A simulator listening on a local port, stopped when dropped.
pub struct RunningSim {
    pub addr: SocketAddr,
    pub state: SimState,
    task: JoinHandle<()>,
}

impl RunningSim {
    /// Starts on `127.0.0.1:port` (0 = any free port).
    pub async fn start(port: u16) -> std::io::Result<RunningSim> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        Self::serve(listener).await
    }

    /// Serves on an already bound listener.
    pub async fn serve(listener: TcpListener) -> std::io::Result<RunningSim> {
        let addr = listener.local_addr()?;
        let state = SimState::default();
        let router = app(state.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "salto-sim stopped");
            }
        });
        Ok(RunningSim { addr, state, task })
    }

    /// The SHIP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ship_endpoint(
    State(state): State<SimState>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != axum::http::Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "SHIP requests are POSTed; the control API is under /_sim",
        )
            .into_response();
    }
    if !authorised(&state.lock().auth, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"SHIP\"")],
            "",
        )
            .into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let parsed = ship::parse(&text);
    let name = parsed
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_else(|_| "Unknown".to_owned());

    let fault = take_fault(&state, &name, &text);
    let faulted = fault.is_some();
    if let Some(FaultResponse::Delay { delay_ms }) = &fault {
        tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
    }
    if let Some(FaultResponse::Body { body, repeat }) = &fault {
        state.lock().requests.push(LoggedRequest {
            at: Utc::now(),
            request_name: name.clone(),
            body: text,
            http_status: 200,
            code: None,
            fault: true,
        });
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, SHIP_CONTENT_TYPE)],
            body.repeat(repeat.unwrap_or(1)),
        )
            .into_response();
    }
    let mut sim = state.lock();
    let (http_status, outcome) = match fault {
        Some(FaultResponse::HttpStatus { http_status }) => (http_status, None),
        Some(FaultResponse::Code { code, message }) => {
            let message = if message.is_empty() {
                format!("injected fault {code}")
            } else {
                message
            };
            (200, Some(Err(Refusal::new(code, message))))
        }
        Some(FaultResponse::Delay { .. } | FaultResponse::Body { .. }) | None => {
            let outcome = match &parsed {
                Ok(request) => ship::apply(&mut sim.db, request),
                Err(refusal) => Err(refusal.clone()),
            };
            (200, Some(outcome))
        }
    };
    let code = match &outcome {
        Some(Err(refusal)) => Some(refusal.code),
        _ => None,
    };
    sim.requests.push(LoggedRequest {
        at: Utc::now(),
        request_name: name.clone(),
        body: text,
        http_status,
        code,
        fault: faulted,
    });
    drop(sim);
    match outcome {
        Some(outcome) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, SHIP_CONTENT_TYPE)],
            ship::response(&name, &outcome),
        )
            .into_response(),
        None => StatusCode::from_u16(http_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            .into_response(),
    }
}

/// Takes one use of the first fault matching `request_name` and `body`.
fn take_fault(state: &SimState, request_name: &str, body: &str) -> Option<FaultResponse> {
    let mut sim = state.lock();
    let index = sim.faults.iter().position(|f| {
        f.times > 0
            && f.matches
                .request_name
                .as_deref()
                .is_none_or(|n| n == request_name)
            && f.matches
                .body_contains
                .as_deref()
                .is_none_or(|text| body.contains(text))
    })?;
    let fault = &mut sim.faults[index];
    fault.times -= 1;
    let respond = fault.respond.clone();
    if fault.times == 0 {
        sim.faults.remove(index);
    }
    Some(respond)
}

fn authorised(auth: &Auth, headers: &HeaderMap) -> bool {
    match auth {
        Auth::None => true,
        Auth::Key { key } => headers
            .get("Salto-SHIP-Key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == key),
        Auth::Basic { username, password } => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|encoded| base64_decode(encoded.trim()))
            .is_some_and(|decoded| decoded == format!("{username}:{password}")),
    }
}

/// Standard base64 (the simulator needs only this one decode, not a crate for it).
fn base64_decode(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|c| *c == byte)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(
            base64_decode("c2hpcDpzZWNyZXQ=").as_deref(),
            Some("ship:secret")
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some("a"));
    }
}
