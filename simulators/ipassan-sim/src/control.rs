//! The simulator's control API under `/_sim` (contract, last section): reset, seed, state, the
//! request log, the clock, the door check, fault injection and token lifetime. Tests and the
//! local run drive the simulator only through these, over HTTP (JSON bodies):
//!
//! | endpoint | body → answer |
//! |---|---|
//! | `POST /_sim/reset` | → 204; forgets sites, clients, tokens, faults, the log; real clock |
//! | `POST /_sim/seed` | `{sites: {site: {timezone?, persons, profiles: {id: [doors]}}}, clients: [{client_id, client_secret, sites}]}` → 204 (additive) |
//! | `GET /_sim/state` | → `{sites: {site: {timezone, persons, profiles, visitors}}, credentials: [{site, visitor_id, external_ref, pin}]}` |
//! | `GET /_sim/requests`, `DELETE` | → the request log `[{at, method, path, query, body, status, fault}]` / clears it |
//! | `POST /_sim/clock` | `{now: RFC 3339 or site-local YYYY-MM-DDTHH:MM:SS}` or `{real: true}` → 204 |
//! | `POST /_sim/doors/{door}/pin` | `{site, pin}` → `{opens, reason}` (`valid`, `unknown_site`, `unknown_pin`, `not_yet_valid`, `expired`, `door_not_in_profile`) |
//! | `POST /_sim/faults`, `DELETE` | `{match: {method?, path_prefix?}, respond: {status?, body?, retry_after?, delay_ms?}, times: n}` → 204 / clears |
//! | `POST /_sim/tokens/lifetime` | `{seconds}` → 204; tokens issued from now on live that long |
//! | `POST /_sim/tokens/expire` | → 204; every token issued so far is expired now |
//! | `GET /_sim/health` | → 204 |
//!
//! Beyond the contract's text: a site's `timezone` (the real clock needs it), an RFC 3339 clock
//! (read on each site's own clock), and a fault without `status` (only delayed, then answered
//! normally — a slow server).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::SimState;
use crate::error::{ApiError, json};
use crate::model::{Clock, Fault, Person, Seed, Visitor, World};

pub fn routes() -> Router<SimState> {
    Router::new()
        .route("/_sim/reset", post(reset))
        .route("/_sim/seed", post(seed))
        .route("/_sim/state", get(state))
        .route("/_sim/requests", get(requests).delete(clear_requests))
        .route("/_sim/clock", post(set_clock))
        .route("/_sim/doors/{door}/pin", post(door_pin))
        .route("/_sim/faults", post(add_fault).delete(clear_faults))
        .route("/_sim/tokens/lifetime", post(set_token_lifetime))
        .route("/_sim/tokens/expire", post(expire_tokens))
        .route("/_sim/health", get(|| async { StatusCode::NO_CONTENT }))
}

async fn reset(State(state): State<SimState>) -> StatusCode {
    *state.world() = World::default();
    StatusCode::NO_CONTENT
}

async fn seed(State(state): State<SimState>, Json(seed): Json<Seed>) -> Response {
    match state.world().seed(seed) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::invalid_request(e.to_string()).into_response(),
    }
}

/// `GET /_sim/state`: every site's persons, profiles and visitors, and the live credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateView {
    pub sites: BTreeMap<String, SiteView>,
    pub credentials: Vec<CredentialView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteView {
    pub timezone: String,
    pub persons: Vec<Person>,
    pub profiles: BTreeMap<String, Vec<String>>,
    pub visitors: Vec<Visitor>,
}

/// A live PIN credential and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub site: String,
    pub visitor_id: String,
    pub external_ref: String,
    pub pin: String,
}

async fn state(State(state): State<SimState>) -> Response {
    let world = state.world();
    let sites = world
        .sites
        .iter()
        .map(|(name, site)| {
            (
                name.clone(),
                SiteView {
                    timezone: site.timezone.name().to_owned(),
                    persons: site.persons.values().cloned().collect(),
                    profiles: site.profiles.clone(),
                    visitors: site.visitors.values().cloned().collect(),
                },
            )
        })
        .collect();
    let credentials = world
        .sites
        .iter()
        .flat_map(|(name, site)| {
            site.visitors.values().filter_map(move |v| {
                v.credential.as_ref().map(|c| CredentialView {
                    site: name.clone(),
                    visitor_id: v.id.clone(),
                    external_ref: v.external_ref.clone(),
                    pin: c.pin.clone(),
                })
            })
        })
        .collect();
    json(StatusCode::OK, &StateView { sites, credentials })
}

async fn requests(State(state): State<SimState>) -> Response {
    json(StatusCode::OK, &state.world().requests)
}

async fn clear_requests(State(state): State<SimState>) -> StatusCode {
    state.world().requests.clear();
    StatusCode::NO_CONTENT
}

/// `{"now": "..."}` (RFC 3339 instant, or site-local `YYYY-MM-DDTHH:MM:SS`) or `{"real": true}`.
#[derive(Debug, Deserialize)]
struct ClockRequest {
    now: Option<String>,
    #[serde(default)]
    real: bool,
}

async fn set_clock(State(state): State<SimState>, Json(request): Json<ClockRequest>) -> Response {
    let clock = match (request.now, request.real) {
        (None, true) => Clock::Real,
        (Some(now), false) => match Clock::parse(&now) {
            Some(clock) => clock,
            None => {
                return ApiError::invalid_request(format!(
                    "`{now}` is neither RFC 3339 nor YYYY-MM-DDTHH:MM:SS"
                ))
                .into_response();
            }
        },
        _ => {
            return ApiError::invalid_request("give either `now` or `real: true`").into_response();
        }
    };
    state.world().clock = clock;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct DoorRequest {
    site: String,
    pin: String,
}

async fn door_pin(
    State(state): State<SimState>,
    Path(door): Path<String>,
    Json(request): Json<DoorRequest>,
) -> Response {
    let check = state.world().check_door(&request.site, &door, &request.pin);
    json(StatusCode::OK, &check)
}

async fn add_fault(State(state): State<SimState>, Json(fault): Json<Fault>) -> StatusCode {
    state.world().faults.push(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(state): State<SimState>) -> StatusCode {
    state.world().faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct LifetimeRequest {
    seconds: u64,
}

/// Tokens issued from now on live `seconds` (the token answer's `expires_in`).
async fn set_token_lifetime(
    State(state): State<SimState>,
    Json(request): Json<LifetimeRequest>,
) -> StatusCode {
    state.world().token_lifetime = Duration::from_secs(request.seconds);
    StatusCode::NO_CONTENT
}

/// Every token issued so far expires now, as if its lifetime had run out.
async fn expire_tokens(State(state): State<SimState>) -> StatusCode {
    let now = Instant::now();
    for token in state.world().tokens.values_mut() {
        token.expires_at = now;
    }
    StatusCode::NO_CONTENT
}
