//! `/v1/facility-bookings`: an apartment books a facility (games room, gym …) for part of one
//! building-local day; salto-sync then puts the facility's zone on the apartment's Salto access
//! level. Residents book and see only their own apartment's bookings; managers act for any
//! apartment of their building. A facility or apartment without its Access Control ID cannot be
//! booked: the 422 names what the manager must set.

use crate::auth::BuildingRole;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::visitor_bookings::key_reused;
use super::{
    BookingState, LIST_LIMIT, TimePatch, cancelled_problem, creation_headers, json_response,
    registered_building, too_many_live_bookings, window_problem,
};
use crate::auth::Caller;
use crate::domain::access::{AccessStatus, BookingKind};
use crate::domain::ids::{ApartmentId, FacilityId};
use crate::domain::validation::FieldError;
use crate::domain::window::{VisitWindow, WindowLimits};
use crate::extract::{ApiJson, BookingIdPath, IdempotencyKey, preferred_wait};
use crate::idempotency::{self, Claim};
use crate::problem::{Problem, ProblemDetails};
use crate::refusals::{self, MissingId, RefusedBooking, RefusedRequest};
use crate::snapshot::{self, Change};
use crate::state::AppState;
use crate::store::buildings::BuildingRow;
use crate::store::directory::{self, ApartmentRow, FacilityRow};
use crate::store::facility_bookings::{self as store, FacilityBookingRow, NewFacilityBooking};

const PATH: &str = "/v1/facility-bookings";

/// A new facility booking.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFacilityBookingRequest {
    pub facility_id: FacilityId,
    /// Managers: the apartment booking (required). Residents: omit it (it is yours).
    #[serde(default)]
    pub apartment_id: Option<ApartmentId>,
    /// RFC 3339 with offset.
    pub starts_at: DateTime<FixedOffset>,
    /// RFC 3339 with offset; after `starts_at`, on the same building-local day (or its end).
    pub ends_at: DateTime<FixedOffset>,
}

/// Changeable fields of a facility booking, at least one (anything else is a 422
/// `field_not_patchable` naming the field).
// The document's shape of a PATCH; the handler reads the body as a [`TimePatch`].
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct FacilityBookingPatch {
    /// RFC 3339 with offset.
    #[schema(nullable = false)]
    pub starts_at: Option<DateTime<FixedOffset>>,
    /// RFC 3339 with offset; after `starts_at`, on the same building-local day (or its end).
    #[schema(nullable = false)]
    pub ends_at: Option<DateTime<FixedOffset>>,
}

/// A facility booking as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FacilityBookingView {
    pub id: Uuid,
    pub state: BookingState,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub facility_id: String,
    pub apartment_id: String,
    pub access: FacilityAccessView,
    /// +1 with every change.
    pub version: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FacilityAccessView {
    pub status: AccessStatus,
    /// Why access failed or is deferred, in words.
    pub reason: Option<String>,
    /// Why access failed, as a stable code.
    pub reason_code: Option<String>,
    /// For `deferred`: the booking holding the slot.
    pub held_by: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FacilityBookingList {
    pub items: Vec<FacilityBookingView>,
}

fn view(row: &FacilityBookingRow) -> FacilityBookingView {
    FacilityBookingView {
        id: row.id,
        state: row.state().into(),
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        facility_id: row.facility_id.clone(),
        apartment_id: row.apartment_id.clone(),
        access: FacilityAccessView {
            status: row.access_status(),
            reason: row.access_reason.clone(),
            reason_code: row.access_reason_code.clone(),
            held_by: row.access_held_by,
        },
        version: row.version,
    }
}

/// 404 for another building's booking, 403 for another apartment's booking in the same building.
fn check_scope(caller: &Caller, row: &FacilityBookingRow) -> Result<(), Problem> {
    if caller.building_id.as_str() != row.building_id {
        return Err(not_found());
    }
    if caller.role == BuildingRole::Resident
        && caller.apartment_id.as_ref().map(ApartmentId::as_str) != Some(row.apartment_id.as_str())
    {
        return Err(Problem::forbidden(
            "not_your_booking",
            "residents can see and change only their apartment's bookings",
        ));
    }
    Ok(())
}

fn not_found() -> Problem {
    Problem::not_found("booking_not_found", "there is no such booking")
}

/// The apartment a new booking is for: residents book for their own, managers name one.
fn booking_apartment(
    caller: &Caller,
    requested: Option<&ApartmentId>,
) -> Result<ApartmentId, Problem> {
    match (caller.role, &caller.apartment_id) {
        (BuildingRole::Resident, Some(own)) => match requested {
            Some(other) if other != own => Err(Problem::forbidden(
                "not_your_apartment",
                "residents book facilities only for their own apartment",
            )),
            _ => Ok(own.clone()),
        },
        (BuildingRole::Resident, None) => Err(Problem::forbidden(
            "not_your_apartment",
            "the token names no apartment",
        )),
        (BuildingRole::Manager, _) => requested.cloned().ok_or_else(|| {
            Problem::validation(vec![FieldError::new(
                "apartment_id",
                "missing_field",
                "managers must name the apartment the booking is for",
            )])
        }),
    }
}

/// The facility of a new booking, or 422 when the building has no such facility.
async fn registered_facility(
    conn: &mut sqlx::PgConnection,
    building_id: &str,
    facility_id: &str,
) -> Result<FacilityRow, Problem> {
    directory::find_facility(&mut *conn, building_id, facility_id)
        .await?
        .ok_or_else(|| {
            Problem::unprocessable(
                "unknown_facility",
                format!("facility {facility_id} is not registered in this building"),
            )
            .with_field("facility_id")
        })
}

/// The apartment of a new booking, or 422 when the building has no such apartment.
async fn registered_apartment(
    conn: &mut sqlx::PgConnection,
    building_id: &str,
    apartment_id: &str,
) -> Result<ApartmentRow, Problem> {
    directory::find_apartment(&mut *conn, building_id, apartment_id)
        .await?
        .ok_or_else(|| {
            Problem::unprocessable(
                "unknown_apartment",
                format!("apartment {apartment_id} is not registered in this building"),
            )
            .with_field("apartment_id")
        })
}

/// Checks a window for a facility booking of `building`: ends after it starts, in the future, not
/// too far ahead, and within one building-local day.
fn facility_window(
    building: &BuildingRow,
    (starts_at, ends_at): (DateTime<Utc>, DateTime<Utc>),
    limits: &WindowLimits,
    blamed: &str,
) -> Result<VisitWindow, Problem> {
    let now = Utc::now();
    let window = VisitWindow::new(starts_at, ends_at, now)
        .and_then(|window| window.check_limits(limits, now).map(|()| window))
        .map_err(|e| window_problem(&e, blamed))?;
    let zone = building.zone().map_err(|e| Problem::internal(&e))?;
    window
        .check_representable(zone)
        .and_then(|()| window.check_single_local_day(zone))
        .map_err(|e| window_problem(&e, blamed))?;
    Ok(window)
}

/// The resident row of a resident caller, for `booked_by` (managers have none).
async fn booker(
    conn: &mut sqlx::PgConnection,
    row: &FacilityBookingRow,
) -> Result<Option<directory::ResidentRow>, Problem> {
    if row.booked_by_role != "resident" {
        return Ok(None);
    }
    Ok(directory::find_resident(conn, &row.building_id, &row.booked_by_user_id).await?)
}

/// Creates a facility booking.
#[utoipa::path(
    post, path = "/v1/facility-bookings", tag = "facility bookings", operation_id = "create_facility_booking",
    request_body = NewFacilityBookingRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r#"^"?[!-~]{1,255}"?$"#, description = "1 to 255 visible ASCII characters (optionally in double quotes). The same key and body within 24 h answers with the first booking (`Idempotent-Replayed: true`); the same key with another body is a 422 `idempotency_key_reused`"),
        ("Prefer" = Option<String>, Header, nullable = false, description = "`wait=N` (N ≤ 10): wait up to N seconds for the access outcome; anything else is ignored"),
    ),
    responses(
        (status = 201, description = "Booked (or the booking this key made before)", body = FacilityBookingView, headers(
            ("Location" = String, description = "The booking: `/v1/facility-bookings/{id}`"),
            ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same `Idempotency-Key`"),
            ("Preference-Applied" = String, description = "`wait=N` when `Prefer: wait` was honoured"),
        )),
        (status = 403, description = "`not_your_apartment`: a resident booking for another apartment", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Refused: a window rule (`ends_not_after_starts`, `ends_in_past`, `too_far_ahead`, `spans_several_local_days`, `window_not_representable`), `building_not_registered`, `unknown_facility`, `unknown_apartment`, `facility_access_control_id_missing`, `apartment_access_control_id_missing`, `salto_not_connected`, `too_many_live_bookings`, `idempotency_key_reused`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_requests`: a resident sent too many booking writes in a short time", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["resident", "manager"]))
)]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: ApiJson<NewFacilityBookingRequest>,
) -> Result<Response, Problem> {
    app.write_limiter.admit(&caller)?;
    let idempotency_key = IdempotencyKey::from_headers(&headers)?;
    let wait = preferred_wait(&headers);
    let request = body.value;
    let (starts_at, ends_at) = (
        request.starts_at.with_timezone(&Utc),
        request.ends_at.with_timezone(&Utc),
    );
    let now = Utc::now();
    VisitWindow::new(starts_at, ends_at, now)
        .and_then(|window| window.check_limits(&app.limits.facilities(), now))
        .map_err(|e| window_problem(&e, "ends_at"))?;
    let apartment_id = booking_apartment(&caller, request.apartment_id.as_ref())?;
    let building_id = caller.building_id.as_str();
    let booking_id = Uuid::new_v4();

    let mut tx = app.pool.begin().await?;
    if let Some(key) = &idempotency_key {
        let hash = idempotency::fingerprint("POST", PATH, &body.raw);
        match idempotency::claim(
            &mut tx,
            &caller,
            key,
            &hash,
            BookingKind::Facility,
            booking_id,
        )
        .await?
        {
            Claim::Fresh => {}
            Claim::Replay {
                kind: BookingKind::Facility,
                booking_id,
            } => {
                tx.rollback().await?;
                return respond(&app, booking_id, true, wait).await;
            }
            Claim::Replay { .. } | Claim::Mismatch => return Err(key_reused()),
        }
    }
    let building = registered_building(&mut tx, building_id).await?;
    let window = facility_window(
        &building,
        (starts_at, ends_at),
        &app.limits.facilities(),
        "ends_at",
    )?;
    let facility = registered_facility(&mut tx, building_id, request.facility_id.as_str()).await?;
    let apartment = registered_apartment(&mut tx, building_id, apartment_id.as_str()).await?;
    if caller.role == BuildingRole::Resident {
        let live =
            store::lock_and_count_live_of_resident(&mut tx, building_id, &caller.user_id).await?;
        if live >= i64::from(app.limits.max_live_bookings) {
            return Err(too_many_live_bookings(
                "facility",
                app.limits.max_live_bookings,
            ));
        }
    }
    let salto_reachable = building.salto_connected || app.defaults.salto;
    let (zone_id, access_level_id) =
        match refusals::facility_access(&building, salto_reachable, &facility, &apartment) {
            Ok(ids) => ids,
            Err(missing) => {
                let problem = refuse(
                    &app, tx, &caller, &building, &facility, &apartment, &window, booking_id,
                    missing,
                );
                return Err(problem.await);
            }
        };
    let row = store::insert(
        &mut tx,
        &NewFacilityBooking {
            id: booking_id,
            building_id,
            facility_id: &facility.id,
            apartment_id: &apartment.id,
            zone_id: &zone_id,
            access_level_id: &access_level_id,
            window,
            booked_by_user_id: &caller.user_id,
            booked_by_role: caller.role.into(),
        },
    )
    .await?;
    let booked_by = booker(&mut tx, &row).await?;
    let envelope = snapshot::facility_envelope(
        Change::Created,
        &building,
        &facility,
        &row,
        booked_by.as_ref(),
    )
    .map_err(|e| Problem::internal(&e))?;
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    tracing::info!(booking_id = %row.id, version = row.version, facility_id = %row.facility_id, "facility booking created");
    respond(&app, row.id, false, wait).await
}

/// Who is booking, as the manager's email names them.
async fn booked_by(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
) -> Result<contracts::BookedBy, Problem> {
    let resident = match caller.role {
        BuildingRole::Resident => {
            directory::find_resident(conn, caller.building_id.as_str(), &caller.user_id).await?
        }
        BuildingRole::Manager => None,
    };
    Ok(contracts::BookedBy {
        user_id: caller.user_id.clone(),
        role: caller.role.into(),
        name: resident.as_ref().map(|r| r.name.clone()),
        email: resident.map(|r| r.email),
    })
}

/// The answer to a booking refused because `missing` is not set: the request's transaction is
/// rolled back (nothing of the booking is written, and its connection is free before the
/// managers' note takes one), the managers are told (once a day per missing ID), and the booker
/// gets the 422 naming what is missing.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    app: &AppState,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    caller: &Caller,
    building: &BuildingRow,
    facility: &FacilityRow,
    apartment: &ApartmentRow,
    window: &VisitWindow,
    reference: Uuid,
    missing: MissingId,
) -> Problem {
    let booked_by = match booked_by(&mut tx, caller).await {
        Ok(booked_by) => booked_by,
        Err(problem) => return problem,
    };
    if let Err(error) = tx.rollback().await {
        return Problem::from(error);
    }
    let zone = match building.zone() {
        Ok(zone) => zone,
        Err(error) => return Problem::internal(&error),
    };
    refusals::refuse_and_tell(
        &app.pool,
        RefusedRequest {
            reference,
            building,
            window: window.in_zone(zone),
            missing: &missing,
            booking: RefusedBooking::Facility {
                facility,
                apartment_id: &apartment.id,
                booked_by,
            },
        },
    )
    .await;
    missing.problem()
}

async fn respond(
    app: &AppState,
    booking_id: Uuid,
    replayed: bool,
    wait: Option<std::time::Duration>,
) -> Result<Response, Problem> {
    let load = || async {
        store::find(&app.pool, booking_id)
            .await?
            .ok_or_else(|| sqlx::Error::RowNotFound)
    };
    let row = match wait {
        Some(wait) => {
            crate::waiting::while_pending(
                &app.notifications,
                &app.shutdown,
                booking_id,
                wait,
                load,
                |row: &FacilityBookingRow| row.access_status() == AccessStatus::Pending,
            )
            .await?
        }
        None => load().await?,
    };
    let headers = creation_headers(&format!("{PATH}/{}", row.id), replayed, wait);
    Ok(json_response(StatusCode::CREATED, &view(&row), headers))
}

/// Lists facility bookings: a resident's apartment's, or all of the manager's building.
#[utoipa::path(
    get, path = "/v1/facility-bookings", tag = "facility bookings", operation_id = "list_facility_bookings",
    responses(
        (status = 200, description = "At most 500 bookings, by start time: a resident's apartment's, or all of the manager's building", body = FacilityBookingList),
    ),
    security(("bearer" = ["resident", "manager"]))
)]
pub async fn list(State(app): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    let apartment = match caller.role {
        BuildingRole::Resident => caller.apartment_id.as_ref().map(ApartmentId::as_str),
        BuildingRole::Manager => None,
    };
    let rows = store::list(
        &app.pool,
        caller.building_id.as_str(),
        apartment,
        LIST_LIMIT,
    )
    .await?;
    let items = rows.iter().map(view).collect();
    Ok(json_response(
        StatusCode::OK,
        &FacilityBookingList { items },
        HeaderMap::new(),
    ))
}

/// Shows one facility booking.
#[utoipa::path(
    get, path = "/v1/facility-bookings/{id}", tag = "facility bookings", operation_id = "get_facility_booking",
    params(("id" = Uuid, Path, description = "The booking's id")),
    responses(
        (status = 200, description = "The booking", body = FacilityBookingView),
        (status = 403, description = "`not_your_booking`: another apartment's booking", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["resident", "manager"]))
)]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    BookingIdPath(id): BookingIdPath,
) -> Result<Response, Problem> {
    let row = store::find(&app.pool, id).await?.ok_or_else(not_found)?;
    check_scope(&caller, &row)?;
    Ok(json_response(StatusCode::OK, &view(&row), HeaderMap::new()))
}

/// Moves a facility booking's window; only `starts_at` and `ends_at` may change.
#[utoipa::path(
    patch, path = "/v1/facility-bookings/{id}", tag = "facility bookings", operation_id = "reschedule_facility_booking",
    params(("id" = Uuid, Path, description = "The booking's id")),
    request_body = FacilityBookingPatch,
    responses(
        (status = 200, description = "Rescheduled (a new version), or unchanged when the window is the same", body = FacilityBookingView),
        (status = 403, description = "`not_your_booking`: another apartment's booking", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "`booking_cancelled`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Refused: `field_not_patchable`, `empty_patch`, a window rule (`ends_not_after_starts`, `ends_in_past`, `too_far_ahead`, `spans_several_local_days`, `window_not_representable`), `building_not_registered`, `unknown_facility`, `unknown_apartment`, `facility_access_control_id_missing`, `apartment_access_control_id_missing`, `salto_not_connected`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_requests`: a resident sent too many booking writes in a short time", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["resident", "manager"]))
)]
pub async fn patch(
    State(app): State<AppState>,
    caller: Caller,
    BookingIdPath(id): BookingIdPath,
    body: ApiJson<Value>,
) -> Result<Response, Problem> {
    app.write_limiter.admit(&caller)?;
    let patch = TimePatch::from_body(&body.value)?;
    let mut tx = app.pool.begin().await?;
    let row = store::find_for_update(&mut tx, id)
        .await?
        .ok_or_else(not_found)?;
    check_scope(&caller, &row)?;
    if row.state() == contracts::BookingState::Cancelled {
        return Err(cancelled_problem());
    }
    let starts_at = patch.starts_at.unwrap_or(row.starts_at);
    let ends_at = patch.ends_at.unwrap_or(row.ends_at);
    if (starts_at, ends_at) == (row.starts_at, row.ends_at) {
        tx.rollback().await?;
        return Ok(json_response(StatusCode::OK, &view(&row), HeaderMap::new()));
    }
    let building = registered_building(&mut tx, &row.building_id).await?;
    let window = facility_window(
        &building,
        (starts_at, ends_at),
        &app.limits.facilities(),
        patch.blamed_field(),
    )?;
    // The IDs now in force apply to this change (docs/architecture.md, "Services and what each owns": a changed ID affects later operations).
    let facility = registered_facility(&mut tx, &row.building_id, &row.facility_id).await?;
    let apartment = registered_apartment(&mut tx, &row.building_id, &row.apartment_id).await?;
    let salto_reachable = building.salto_connected || app.defaults.salto;
    let (zone_id, access_level_id) =
        match refusals::facility_access(&building, salto_reachable, &facility, &apartment) {
            Ok(ids) => ids,
            Err(missing) => {
                let problem = refuse(
                    &app, tx, &caller, &building, &facility, &apartment, &window, id, missing,
                );
                return Err(problem.await);
            }
        };
    let updated = store::reschedule(&mut tx, id, window, &zone_id, &access_level_id).await?;
    let booked_by = booker(&mut tx, &updated).await?;
    let envelope = snapshot::facility_envelope(
        Change::Rescheduled,
        &building,
        &facility,
        &updated,
        booked_by.as_ref(),
    )
    .map_err(|e| Problem::internal(&e))?;
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    tracing::info!(booking_id = %id, version = updated.version, "facility booking rescheduled");
    Ok(json_response(
        StatusCode::OK,
        &view(&updated),
        HeaderMap::new(),
    ))
}

/// Cancels a facility booking (cancelling again changes nothing).
#[utoipa::path(
    delete, path = "/v1/facility-bookings/{id}", tag = "facility bookings", operation_id = "cancel_facility_booking",
    params(("id" = Uuid, Path, description = "The booking's id")),
    responses(
        (status = 200, description = "Cancelled (cancelling again changes nothing)", body = FacilityBookingView),
        (status = 403, description = "`not_your_booking`: another apartment's booking", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_requests`: a resident sent too many booking writes in a short time", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["resident", "manager"]))
)]
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    BookingIdPath(id): BookingIdPath,
) -> Result<Response, Problem> {
    app.write_limiter.admit(&caller)?;
    let mut tx = app.pool.begin().await?;
    let row = store::find_for_update(&mut tx, id)
        .await?
        .ok_or_else(not_found)?;
    check_scope(&caller, &row)?;
    if row.state() == contracts::BookingState::Cancelled {
        tx.rollback().await?;
        return Ok(json_response(StatusCode::OK, &view(&row), HeaderMap::new()));
    }
    let building = registered_building(&mut tx, &row.building_id).await?;
    let facility = directory::find_facility(&mut *tx, &row.building_id, &row.facility_id)
        .await?
        .ok_or_else(|| Problem::internal(&sqlx::Error::RowNotFound))?;
    let apartment = directory::find_apartment(&mut *tx, &row.building_id, &row.apartment_id)
        .await?
        .ok_or_else(|| Problem::internal(&sqlx::Error::RowNotFound))?;
    // A cancellation must always go through: when a manager has since unset an ID, the one the
    // booking was last announced with is used.
    let zone_id = facility
        .access_control_facility_id
        .clone()
        .unwrap_or_else(|| row.zone_id.clone());
    let access_level_id = apartment
        .access_control_id
        .clone()
        .unwrap_or_else(|| row.access_level_id.clone());
    let cancelled = store::cancel(&mut tx, id, &zone_id, &access_level_id).await?;
    let booked_by = booker(&mut tx, &cancelled).await?;
    let envelope = snapshot::facility_envelope(
        Change::Cancelled,
        &building,
        &facility,
        &cancelled,
        booked_by.as_ref(),
    )
    .map_err(|e| Problem::internal(&e))?;
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    tracing::info!(booking_id = %id, version = cancelled.version, "facility booking cancelled");
    Ok(json_response(
        StatusCode::OK,
        &view(&cancelled),
        HeaderMap::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::BuildingId;

    fn caller(role: BuildingRole, apartment: Option<&str>) -> Caller {
        Caller {
            user_id: "u-1".into(),
            role,
            building_id: BuildingId::parse("b-1").unwrap(),
            apartment_id: apartment.map(|a| ApartmentId::parse(a).unwrap()),
        }
    }

    #[test]
    fn residents_book_only_for_their_own_apartment() {
        let resident = caller(BuildingRole::Resident, Some("a-1"));
        assert_eq!(booking_apartment(&resident, None).unwrap().as_str(), "a-1");
        let own = ApartmentId::parse("a-1").unwrap();
        assert_eq!(
            booking_apartment(&resident, Some(&own)).unwrap().as_str(),
            "a-1"
        );
        let other = ApartmentId::parse("a-2").unwrap();
        let problem = booking_apartment(&resident, Some(&other)).unwrap_err();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (403, "not_your_apartment")
        );
    }

    #[test]
    fn managers_must_name_the_apartment() {
        let manager = caller(BuildingRole::Manager, None);
        let other = ApartmentId::parse("a-2").unwrap();
        assert_eq!(
            booking_apartment(&manager, Some(&other)).unwrap().as_str(),
            "a-2"
        );
        assert_eq!(
            booking_apartment(&manager, None)
                .unwrap_err()
                .field
                .as_deref(),
            Some("apartment_id")
        );
    }
}
