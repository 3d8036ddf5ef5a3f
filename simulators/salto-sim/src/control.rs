//! The `/_sim` control API (JSON): what tests and the local run use to arrange the server (seed,
//! reset, clock, faults), to look at it (state, requests) and to ask what a person would observe
//! (does this card open that door now?). `manual` plays a change made by hand at the Salto
//! console — something no SHIP client knows about — so drift handling can be tested.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::{Auth, DoorVerdict, Group, GroupZone, Period, Timetable, Zone};
use crate::{Fault, SimState};

pub fn router() -> Router<SimState> {
    Router::new()
        .route("/reset", post(reset))
        .route("/seed", post(seed))
        .route("/state", get(state))
        .route("/requests", get(requests))
        .route("/clock", post(clock))
        .route("/doors/{zone}/card", post(door))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/manual", post(manual))
}

async fn reset(State(sim): State<SimState>) -> StatusCode {
    *sim.lock() = crate::Sim::default();
    StatusCode::NO_CONTENT
}

/// `POST /_sim/seed`: adds (or replaces, by ID) groups, zones and timetables; sets the auth mode.
#[derive(Debug, Default, Deserialize)]
pub struct Seed {
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub zones: Vec<Zone>,
    #[serde(default)]
    pub timetables: Vec<Timetable>,
    pub auth: Option<Auth>,
    /// IANA name of the server's time zone (the door clock follows it), e.g. `Australia/Sydney`.
    pub timezone: Option<String>,
}

async fn seed(State(sim): State<SimState>, Json(seed): Json<Seed>) -> Response {
    let timezone = match seed.timezone.as_deref().map(str::parse::<chrono_tz::Tz>) {
        Some(Err(_)) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": "timezone must be an IANA name like Australia/Sydney"})),
            )
                .into_response();
        }
        Some(Ok(tz)) => Some(tz),
        None => None,
    };
    let mut sim = sim.lock();
    if timezone.is_some() {
        sim.timezone = timezone;
    }
    for zone in seed.zones {
        sim.db.zones.insert(zone.ext_id.clone(), zone);
    }
    for timetable in seed.timetables {
        sim.db.timetables.insert(timetable.id, timetable);
    }
    for group in seed.groups {
        sim.db.groups.insert(group.ext_id.clone(), group);
    }
    if let Some(auth) = seed.auth {
        sim.auth = auth;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_sim/state`.
#[derive(Debug, Serialize)]
pub struct StateView {
    pub groups: Vec<Group>,
    pub zones: Vec<Zone>,
    pub timetables: Vec<Timetable>,
    pub clock: NaiveDateTime,
    pub faults: Vec<Fault>,
}

async fn state(State(sim): State<SimState>) -> Json<StateView> {
    let sim = sim.lock();
    Json(StateView {
        groups: sim.db.groups.values().cloned().collect(),
        zones: sim.db.zones.values().cloned().collect(),
        timetables: sim.db.timetables.values().cloned().collect(),
        clock: sim.now(),
        faults: sim.faults.clone(),
    })
}

async fn requests(State(sim): State<SimState>) -> Response {
    Json(sim.lock().requests.clone()).into_response()
}

#[derive(Debug, Deserialize)]
struct Clock {
    /// Local wall-clock time of the Salto server; `null` returns to the machine's clock.
    now: Option<NaiveDateTime>,
}

async fn clock(State(sim): State<SimState>, Json(clock): Json<Clock>) -> Response {
    let mut sim = sim.lock();
    sim.clock = clock.now;
    Json(json!({"now": sim.now()})).into_response()
}

#[derive(Debug, Deserialize)]
struct Card {
    group: String,
}

async fn door(
    State(sim): State<SimState>,
    Path(zone): Path<String>,
    Json(card): Json<Card>,
) -> Response {
    let sim = sim.lock();
    let at = sim.now();
    let verdict = sim.db.door(&zone, &card.group, at);
    Json(json!({
        "opens": verdict == DoorVerdict::Opens,
        "reason": verdict,
        "at": at,
    }))
    .into_response()
}

async fn add_fault(State(sim): State<SimState>, Json(fault): Json<Fault>) -> StatusCode {
    if fault.times > 0 {
        sim.lock().faults.push(fault);
    }
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(sim): State<SimState>) -> StatusCode {
    sim.lock().faults.clear();
    StatusCode::NO_CONTENT
}

/// `POST /_sim/manual`: sets the group's permission for a zone as a person at the console would,
/// replacing any permission the group had for that zone.
#[derive(Debug, Deserialize)]
struct Manual {
    group: String,
    zone: String,
    period: Option<Period>,
    timetable: Option<u32>,
}

async fn manual(State(sim): State<SimState>, Json(change): Json<Manual>) -> Response {
    let mut sim = sim.lock();
    let Some(group) = sim.db.groups.get_mut(&change.group) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no group {}", change.group)})),
        )
            .into_response();
    };
    group.zones.retain(|z| z.zone != change.zone);
    group.zones.push(GroupZone {
        zone: change.zone,
        timetable: change.timetable,
        use_period: change.period.is_some(),
        period: change.period,
    });
    StatusCode::NO_CONTENT.into_response()
}
