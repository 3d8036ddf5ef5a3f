//! `/v1/visitor-bookings`: a resident expects a visitor; with `provide_access` the visitor gets a
//! PIN from iPassan (via ipassan-sync). Residents see and change only their own bookings, managers
//! those of their building. Every change stores its event in the same transaction (outbox).

use crate::auth::BuildingRole;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    BookingState, LIST_LIMIT, TimePatch, building_not_registered, cancelled_problem,
    creation_headers, json_response, too_many_live_bookings, window_problem,
};
use crate::auth::Caller;
use crate::domain::access::{AccessStatus, BookingKind};
use crate::domain::ids::ResidentId;
use crate::domain::validation::{self, FieldError, FieldErrors};
use crate::domain::window::{VisitWindow, WindowError, WindowLimits};
use crate::extract::{ApiJson, BookingIdPath, IdempotencyKey, preferred_wait};
use crate::idempotency::{self, Claim};
use crate::problem::{Problem, ProblemDetails};
use crate::refusals::{self, MissingId, RefusedBooking, RefusedRequest};
use crate::snapshot::{self, Change};
use crate::state::AppState;
use crate::store::buildings::BuildingRow;
use crate::store::directory::{self, ResidentRow};
use crate::store::visitor_bookings::{self as store, NewVisitorBooking, VisitorBookingRow};

const PATH: &str = "/v1/visitor-bookings";

/// A new visitor booking.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVisitorBookingRequest {
    pub visitor: VisitorInput,
    /// RFC 3339 with offset.
    pub starts_at: DateTime<FixedOffset>,
    /// RFC 3339 with offset; after `starts_at`.
    pub ends_at: DateTime<FixedOffset>,
    /// Give the visitor building and apartment access (a PIN).
    pub provide_access: bool,
    /// Managers: the resident the visitor comes to (required). Residents: omit it (it is you).
    #[serde(default)]
    pub resident_id: Option<ResidentId>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitorInput {
    /// Not blank; at most 200 characters, none of them control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    #[schema(format = Email)]
    pub email: String,
}

/// Changeable fields of a visitor booking, at least one (anything else is a 422
/// `field_not_patchable` naming the field).
// The document's shape of a PATCH; the handler reads the body as a [`TimePatch`].
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct VisitorBookingPatch {
    /// RFC 3339 with offset.
    #[schema(nullable = false)]
    pub starts_at: Option<DateTime<FixedOffset>>,
    /// RFC 3339 with offset; after `starts_at`.
    #[schema(nullable = false)]
    pub ends_at: Option<DateTime<FixedOffset>>,
}

/// A visitor booking as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VisitorBookingView {
    pub id: Uuid,
    pub state: BookingState,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub visitor: VisitorView,
    pub provide_access: bool,
    pub resident_id: String,
    pub access: VisitorAccessView,
    /// +1 with every change.
    pub version: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VisitorView {
    pub name: String,
    pub email: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VisitorAccessView {
    pub status: AccessStatus,
    /// The visitor's PIN (a string: leading zeros matter). Shown only to the booking's resident
    /// and the building's managers.
    pub pin: Option<String>,
    /// Why access failed, in words.
    pub reason: Option<String>,
    /// Why access failed, as a stable code.
    pub reason_code: Option<String>,
}

impl std::fmt::Debug for VisitorAccessView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisitorAccessView")
            .field("status", &self.status)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .field("reason_code", &self.reason_code)
            .finish()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VisitorBookingList {
    pub items: Vec<VisitorBookingView>,
}

/// The PIN is for the booking's resident and the building's managers only.
fn may_see_pin(caller: &Caller, row: &VisitorBookingRow) -> bool {
    caller.building_id.as_str() == row.building_id
        && match caller.role {
            BuildingRole::Manager => true,
            BuildingRole::Resident => caller.user_id == row.resident_id,
        }
}

fn view(caller: &Caller, row: &VisitorBookingRow) -> VisitorBookingView {
    VisitorBookingView {
        id: row.id,
        state: row.state().into(),
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        visitor: VisitorView {
            name: row.visitor_name.clone(),
            email: row.visitor_email.clone(),
        },
        provide_access: row.provide_access,
        resident_id: row.resident_id.clone(),
        access: VisitorAccessView {
            status: row.access_status(),
            pin: if may_see_pin(caller, row) {
                row.access_pin.clone()
            } else {
                None
            },
            reason: row.access_reason.clone(),
            reason_code: row.access_reason_code.clone(),
        },
        version: row.version,
    }
}

/// 404 for another building's booking (its existence is not revealed), 403 for another
/// resident's booking in the same building.
fn check_scope(caller: &Caller, row: &VisitorBookingRow) -> Result<(), Problem> {
    if caller.building_id.as_str() != row.building_id {
        return Err(Problem::not_found(
            "booking_not_found",
            "there is no such booking",
        ));
    }
    if caller.role == BuildingRole::Resident && caller.user_id != row.resident_id {
        return Err(Problem::forbidden(
            "not_your_booking",
            "residents can see and change only their own bookings",
        ));
    }
    Ok(())
}

/// What a creation request says once its fields are checked.
struct CheckedVisit {
    visitor_name: String,
    visitor_email: String,
    window: VisitWindow,
}

fn check_new(
    request: &NewVisitorBookingRequest,
    limits: &WindowLimits,
    now: DateTime<Utc>,
) -> Result<CheckedVisit, Problem> {
    let mut errors = FieldErrors::new();
    let visitor_name = errors.check("visitor.name", validation::name(&request.visitor.name));
    let visitor_email = errors.check("visitor.email", validation::email(&request.visitor.email));
    let window = match VisitWindow::new(
        request.starts_at.with_timezone(&Utc),
        request.ends_at.with_timezone(&Utc),
        now,
    )
    .and_then(|window| window.check_limits(limits, now).map(|()| window))
    {
        Ok(window) => Some(window),
        Err(error) => {
            errors.push(FieldError::new(
                error.field(),
                error.code(),
                error.to_string(),
            ));
            None
        }
    };
    match (visitor_name, visitor_email, window) {
        (Some(visitor_name), Some(visitor_email), Some(window)) if errors.is_empty() => {
            Ok(CheckedVisit {
                visitor_name,
                visitor_email,
                window,
            })
        }
        _ => Err(Problem::validation(errors.into_vec())),
    }
}

/// 422 `window_not_representable` when the building's wall clock runs backwards across the window.
fn representable(
    window: &VisitWindow,
    building: &BuildingRow,
    blamed: &str,
) -> Result<(), Problem> {
    let zone = building.zone().map_err(|e| Problem::internal(&e))?;
    window
        .check_representable(zone)
        .map_err(|e| window_problem(&e, blamed))
}

/// The resident a new booking is for: residents book for themselves, managers name the resident.
fn booking_resident(caller: &Caller, requested: Option<&ResidentId>) -> Result<String, Problem> {
    match caller.role {
        BuildingRole::Resident => match requested {
            Some(other) if other.as_str() != caller.user_id => Err(Problem::forbidden(
                "not_your_resident_id",
                "residents book visitors only for themselves",
            )),
            _ => Ok(caller.user_id.clone()),
        },
        BuildingRole::Manager => requested.map(|r| r.as_str().to_owned()).ok_or_else(|| {
            Problem::validation(vec![FieldError::new(
                "resident_id",
                "missing_field",
                "managers must name the resident the visitor comes to",
            )])
        }),
    }
}

fn not_synced(resident: &ResidentRow) -> Problem {
    Problem::unprocessable(
        "resident_not_synced_to_ipassan",
        format!(
            "resident {} has no iPassan person linked, so no access can be given; a manager must set their ipassan_person_id",
            resident.id
        ),
    )
}

/// Whether visitor access can be given at all: the building has its own iPassan connection, or
/// the deployment has a default one.
fn ipassan_reachable(app: &AppState, building: &BuildingRow) -> bool {
    building.ipassan_connected || app.defaults.ipassan
}

/// A visit with access refused because the building is connected to no iPassan.
struct RefusedVisit<'a> {
    reference: Uuid,
    building: &'a BuildingRow,
    resident: &'a ResidentRow,
    visitor_name: &'a str,
    window: VisitWindow,
}

/// The answer to a visit refused for want of an iPassan: the request's transaction is rolled back
/// (nothing is written), the managers are told (once a day), and the resident gets the 422.
async fn refuse_unconnected(
    app: &AppState,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    refused: RefusedVisit<'_>,
) -> Problem {
    let missing = MissingId::IpassanConnection {
        building_id: refused.building.id.clone(),
    };
    if let Err(error) = tx.rollback().await {
        return Problem::from(error);
    }
    let zone = match refused.building.zone() {
        Ok(zone) => zone,
        Err(error) => return Problem::internal(&error),
    };
    refusals::refuse_and_tell(
        &app.pool,
        RefusedRequest {
            reference: refused.reference,
            building: refused.building,
            window: refused.window.in_zone(zone),
            missing: &missing,
            booking: RefusedBooking::Visit {
                resident: refused.resident,
                visitor_name: refused.visitor_name,
            },
        },
    )
    .await;
    missing.problem()
}

/// The caller's building (422 `building_not_registered`) and the booking's resident in it (422
/// `unknown_resident`), in one query.
async fn building_and_resident(
    conn: &mut sqlx::PgConnection,
    building_id: &str,
    resident_id: &str,
) -> Result<(BuildingRow, ResidentRow), Problem> {
    let Some((building, resident)) =
        directory::find_building_and_resident(conn, building_id, resident_id).await?
    else {
        return Err(building_not_registered(building_id));
    };
    let resident = resident.ok_or_else(|| unknown_resident(resident_id))?;
    Ok((building, resident))
}

fn unknown_resident(resident_id: &str) -> Problem {
    Problem::unprocessable(
        "unknown_resident",
        format!("resident {resident_id} is not registered in this building; a manager must PUT /v1/residents/{resident_id} first"),
    )
    .with_field("resident_id")
}

/// Creates a visitor booking.
#[utoipa::path(
    post, path = "/v1/visitor-bookings", tag = "visitor bookings", operation_id = "create_visitor_booking",
    request_body = NewVisitorBookingRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r#"^"?[!-~]{1,255}"?$"#, description = "1 to 255 visible ASCII characters (optionally in double quotes). The same key and body within 24 h answers with the first booking (`Idempotent-Replayed: true`); the same key with another body is a 422 `idempotency_key_reused`"),
        ("Prefer" = Option<String>, Header, nullable = false, description = "`wait=N` (N ≤ 10): wait up to N seconds for the access outcome; anything else is ignored"),
    ),
    responses(
        (status = 201, description = "Booked (or the booking this key made before)", body = VisitorBookingView, headers(
            ("Location" = String, description = "The booking: `/v1/visitor-bookings/{id}`"),
            ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same `Idempotency-Key`"),
            ("Preference-Applied" = String, description = "`wait=N` when `Prefer: wait` was honoured"),
        )),
        (status = 403, description = "`not_your_resident_id`: a resident booking for another resident", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Refused: a window rule (`ends_not_after_starts`, `ends_in_past`, `window_too_long`, `too_far_ahead`, `window_not_representable`), `invalid_email`, `required`, `too_long`, `invalid_characters`, `building_not_registered`, `unknown_resident`, `resident_not_synced_to_ipassan`, `ipassan_not_connected`, `too_many_live_bookings`, `idempotency_key_reused`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_requests`: a resident sent too many booking writes in a short time", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["resident", "manager"]))
)]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: ApiJson<NewVisitorBookingRequest>,
) -> Result<Response, Problem> {
    app.write_limiter.admit(&caller)?;
    let idempotency_key = IdempotencyKey::from_headers(&headers)?;
    let wait = preferred_wait(&headers);
    let request = body.value;
    let checked = check_new(&request, &app.limits.visits(), Utc::now())?;
    let resident_id = booking_resident(&caller, request.resident_id.as_ref())?;
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
            BookingKind::Visitor,
            booking_id,
        )
        .await?
        {
            Claim::Fresh => {}
            Claim::Replay {
                kind: BookingKind::Visitor,
                booking_id,
            } => {
                tx.rollback().await?;
                return respond(&app, &caller, booking_id, StatusCode::CREATED, true, wait).await;
            }
            Claim::Replay { .. } | Claim::Mismatch => return Err(key_reused()),
        }
    }
    let (building, resident) = building_and_resident(&mut tx, building_id, &resident_id).await?;
    representable(&checked.window, &building, "ends_at")?;
    if request.provide_access && !ipassan_reachable(&app, &building) {
        let refused = RefusedVisit {
            reference: booking_id,
            building: &building,
            resident: &resident,
            visitor_name: &checked.visitor_name,
            window: checked.window,
        };
        return Err(refuse_unconnected(&app, tx, refused).await);
    }
    if request.provide_access && resident.ipassan_person_id.is_none() {
        // Dropping the transaction rolls back the idempotency claim too: nothing is stored.
        return Err(not_synced(&resident));
    }
    let live = store::lock_and_count_live(&mut tx, building_id, &resident.id).await?;
    if live >= i64::from(app.limits.max_live_bookings) {
        return Err(too_many_live_bookings(
            "visitor",
            app.limits.max_live_bookings,
        ));
    }
    let row = store::insert(
        &mut tx,
        &NewVisitorBooking {
            id: booking_id,
            building_id,
            resident_id: &resident.id,
            visitor_name: &checked.visitor_name,
            visitor_email: &checked.visitor_email,
            provide_access: request.provide_access,
            window: checked.window,
            booked_by_user_id: &caller.user_id,
            booked_by_role: caller.role.into(),
        },
    )
    .await?;
    let envelope = snapshot::visitor_envelope(Change::Created, &building, &resident, &row)
        .map_err(|e| Problem::internal(&e))?;
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    tracing::info!(booking_id = %row.id, version = row.version, provide_access = row.provide_access, "visitor booking created");
    match wait {
        // Without `Prefer: wait` the answer is the booking as created (its RETURNING row).
        None => Ok(answer(&caller, &row, StatusCode::CREATED, false, None)),
        Some(_) => respond(&app, &caller, row.id, StatusCode::CREATED, false, wait).await,
    }
}

pub(super) fn key_reused() -> Problem {
    Problem::unprocessable(
        "idempotency_key_reused",
        "this Idempotency-Key was already used for a different request; use a new key",
    )
}

/// Answers with the booking, after waiting for its access outcome when asked to.
async fn respond(
    app: &AppState,
    caller: &Caller,
    booking_id: Uuid,
    status: StatusCode,
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
                |row: &VisitorBookingRow| row.access_status() == AccessStatus::Pending,
            )
            .await?
        }
        None => load().await?,
    };
    Ok(answer(caller, &row, status, replayed, wait))
}

fn answer(
    caller: &Caller,
    row: &VisitorBookingRow,
    status: StatusCode,
    replayed: bool,
    wait: Option<std::time::Duration>,
) -> Response {
    let headers = creation_headers(&format!("{PATH}/{}", row.id), replayed, wait);
    json_response(status, &view(caller, row), headers)
}

/// Lists visitor bookings: a resident's own, or all of the manager's building.
#[utoipa::path(
    get, path = "/v1/visitor-bookings", tag = "visitor bookings", operation_id = "list_visitor_bookings",
    responses(
        (status = 200, description = "At most 500 bookings, by start time: a resident's own, or all of the manager's building", body = VisitorBookingList),
    ),
    security(("bearer" = ["resident", "manager"]))
)]
pub async fn list(State(app): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    let resident = caller.resident_id();
    let rows = store::list(
        &app.pool,
        caller.building_id.as_str(),
        resident.as_ref().map(|r| r.as_str()),
        LIST_LIMIT,
    )
    .await?;
    let items = rows.iter().map(|row| view(&caller, row)).collect();
    Ok(json_response(
        StatusCode::OK,
        &VisitorBookingList { items },
        HeaderMap::new(),
    ))
}

/// Shows one visitor booking.
#[utoipa::path(
    get, path = "/v1/visitor-bookings/{id}", tag = "visitor bookings", operation_id = "get_visitor_booking",
    params(("id" = Uuid, Path, description = "The booking's id")),
    responses(
        (status = 200, description = "The booking", body = VisitorBookingView),
        (status = 403, description = "`not_your_booking`: another resident's booking", body = ProblemDetails, content_type = "application/problem+json"),
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
    Ok(json_response(
        StatusCode::OK,
        &view(&caller, &row),
        HeaderMap::new(),
    ))
}

fn not_found() -> Problem {
    Problem::not_found("booking_not_found", "there is no such booking")
}

/// Moves a visitor booking's window; only `starts_at` and `ends_at` may change.
#[utoipa::path(
    patch, path = "/v1/visitor-bookings/{id}", tag = "visitor bookings", operation_id = "reschedule_visitor_booking",
    params(("id" = Uuid, Path, description = "The booking's id")),
    request_body = VisitorBookingPatch,
    responses(
        (status = 200, description = "Rescheduled (a new version), or unchanged when the window is the same", body = VisitorBookingView),
        (status = 403, description = "`not_your_booking`: another resident's booking", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "`booking_cancelled`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Refused: `field_not_patchable`, `empty_patch`, a window rule (`ends_not_after_starts`, `ends_in_past`, `window_too_long`, `too_far_ahead`, `window_not_representable`), `resident_not_synced_to_ipassan`, `ipassan_not_connected`", body = ProblemDetails, content_type = "application/problem+json"),
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
        // Nothing changes: no new version, no event.
        tx.rollback().await?;
        return Ok(json_response(
            StatusCode::OK,
            &view(&caller, &row),
            HeaderMap::new(),
        ));
    }
    let now = Utc::now();
    let window = VisitWindow::new(starts_at, ends_at, now)
        .and_then(|window| {
            window
                .check_limits(&app.limits.visits(), now)
                .map(|()| window)
        })
        .map_err(|e: WindowError| window_problem(&e, patch.blamed_field()))?;
    let (building, resident) =
        building_and_resident(&mut tx, &row.building_id, &row.resident_id).await?;
    representable(&window, &building, patch.blamed_field())?;
    if row.provide_access && !ipassan_reachable(&app, &building) {
        let refused = RefusedVisit {
            reference: id,
            building: &building,
            resident: &resident,
            visitor_name: &row.visitor_name,
            window,
        };
        return Err(refuse_unconnected(&app, tx, refused).await);
    }
    if row.provide_access && resident.ipassan_person_id.is_none() {
        return Err(not_synced(&resident));
    }
    let updated = store::reschedule(&mut tx, id, window).await?;
    let envelope = snapshot::visitor_envelope(Change::Rescheduled, &building, &resident, &updated)
        .map_err(|e| Problem::internal(&e))?;
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    tracing::info!(booking_id = %id, version = updated.version, "visitor booking rescheduled");
    Ok(json_response(
        StatusCode::OK,
        &view(&caller, &updated),
        HeaderMap::new(),
    ))
}

/// Cancels a visitor booking (cancelling again changes nothing).
#[utoipa::path(
    delete, path = "/v1/visitor-bookings/{id}", tag = "visitor bookings", operation_id = "cancel_visitor_booking",
    params(("id" = Uuid, Path, description = "The booking's id")),
    responses(
        (status = 200, description = "Cancelled (cancelling again changes nothing)", body = VisitorBookingView),
        (status = 403, description = "`not_your_booking`: another resident's booking", body = ProblemDetails, content_type = "application/problem+json"),
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
        return Ok(json_response(
            StatusCode::OK,
            &view(&caller, &row),
            HeaderMap::new(),
        ));
    }
    let (building, resident) =
        building_and_resident(&mut tx, &row.building_id, &row.resident_id).await?;
    let cancelled = store::cancel(&mut tx, id).await?;
    let envelope = snapshot::visitor_envelope(Change::Cancelled, &building, &resident, &cancelled)
        .map_err(|e| Problem::internal(&e))?;
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    tracing::info!(booking_id = %id, version = cancelled.version, "visitor booking cancelled");
    Ok(json_response(
        StatusCode::OK,
        &view(&caller, &cancelled),
        HeaderMap::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: BuildingRole, user: &str, building: &str) -> Caller {
        Caller {
            user_id: user.into(),
            role,
            building_id: crate::domain::ids::BuildingId::parse(building).unwrap(),
            apartment_id: None,
        }
    }

    fn request(body: serde_json::Value) -> NewVisitorBookingRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_new_booking_names_every_bad_field() {
        let now = Utc::now();
        let problem = match check_new(
            &request(serde_json::json!({
                "visitor": {"name": " ", "email": "nope"},
                "starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T09:00:00Z",
                "provide_access": true
            })),
            &crate::settings::LimitsSettings::default().visits(),
            now,
        ) {
            Err(problem) => problem,
            Ok(_) => panic!("accepted"),
        };
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["visitor.name", "visitor.email", "ends_at"]);
    }

    #[test]
    fn residents_book_for_themselves_and_managers_name_the_resident() {
        let resident = caller(BuildingRole::Resident, "r-1", "b-1");
        assert_eq!(booking_resident(&resident, None).unwrap(), "r-1");
        let other = ResidentId::parse("r-2").unwrap();
        assert_eq!(
            booking_resident(&resident, Some(&other))
                .unwrap_err()
                .status,
            403
        );
        let manager = caller(BuildingRole::Manager, "m-1", "b-1");
        assert_eq!(booking_resident(&manager, Some(&other)).unwrap(), "r-2");
        assert_eq!(
            booking_resident(&manager, None)
                .unwrap_err()
                .field
                .as_deref(),
            Some("resident_id")
        );
    }
}
