//! The booking core: what visitor and facility bookings share, written once.
//!
//! Both kinds live alike over HTTP. A creation claims its `Idempotency-Key` in the creating
//! transaction (the same request again answers with the first booking) and may hold its answer
//! until the access outcome is known (`Prefer: wait`). A change locks the booking, checks that the
//! caller may touch it and that it is not cancelled, and commits the new version together with its
//! event (outbox). A kind ([`BookingRoutes`]) brings only what differs: its bodies and their
//! checks, what it looks up and stores, and the event it announces. It makes each change inside
//! the transaction, or says why not ([`Refusal`]); the core commits the change with its event, or
//! rolls the transaction back, and only then are the managers told of a refusal.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, FixedOffset, Utc};
use contracts::Envelope;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::json_response;
use crate::auth::{BuildingRole, Caller};
use crate::domain::access::AccessStatus;
use crate::domain::validation::FieldError;
use crate::domain::window::{BookingWindow, WindowError, WindowLimits, whole_seconds};
use crate::extract::{ApiJson, IdempotencyKey, preferred_wait};
use crate::idempotency::{self, Claim};
use crate::problem::Problem;
use crate::refusals::{self, RefusedRequest};
use crate::settings::LimitsSettings;
use crate::snapshot::Change;
use crate::state::AppState;
use crate::store::bookings::{self, BookingTable, NewBooking};

/// The most bookings one list answer holds.
pub const LIST_LIMIT: i64 = 500;

/// What one kind of booking brings to the shared routes.
pub trait BookingRoutes: Send + Sync + 'static {
    type Row: BookingTable;
    /// The booking as the API shows it.
    type View: Serialize;
    /// A list answer.
    type List: Serialize;
    /// The body of a creation.
    type NewRequest: Send;
    /// A creation's body once its fields are checked.
    type CheckedRequest: Send;

    /// The collection, e.g. `/v1/visitor-bookings`; a booking is at `{PATH}/{id}`.
    const PATH: &'static str;
    /// The kind in words: `visitor`, `facility`.
    const NAME: &'static str;
    /// The 403's detail when a resident asks for a booking that is not theirs.
    const NOT_YOURS: &'static str;

    /// Whether `row` is the resident caller's own.
    fn is_residents_own(caller: &Caller, row: &Self::Row) -> bool;
    fn view(caller: &Caller, row: &Self::Row) -> Self::View;
    fn list(items: Vec<Self::View>) -> Self::List;
    /// Whose bookings the caller lists: residents their own (the owner column's value), managers
    /// the whole building (`None`).
    fn listed_owner(caller: &Caller) -> Option<String>;
    fn window_limits(limits: &LimitsSettings) -> WindowLimits;

    /// Checks a creation's body without the database: every field rule, and who it is for.
    fn check_request(
        caller: &Caller,
        request: Self::NewRequest,
        limits: &WindowLimits,
        now: DateTime<Utc>,
    ) -> Result<Self::CheckedRequest, Problem>;

    /// Inside the creating transaction, its key claimed: the new booking `booking_id` and its
    /// event. A refusal stores nothing, not even the key's claim.
    fn create(
        app: &AppState,
        conn: &mut PgConnection,
        caller: &Caller,
        request: Self::CheckedRequest,
        booking_id: Uuid,
    ) -> impl Future<Output = Result<Changed<Self::Row>, Refusal>> + Send;

    /// Inside the changing transaction: `row` moved to `window` (already checked against the
    /// limits; `blamed` names the field a further window rule blames), and its event.
    fn reschedule(
        app: &AppState,
        conn: &mut PgConnection,
        caller: &Caller,
        row: Self::Row,
        window: BookingWindow,
        blamed: &'static str,
    ) -> impl Future<Output = Result<Changed<Self::Row>, Refusal>> + Send;

    /// Inside the changing transaction: `row` cancelled. A cancellation is never refused.
    fn cancel(
        conn: &mut PgConnection,
        row: Self::Row,
    ) -> impl Future<Output = Result<Changed<Self::Row>, Problem>> + Send;

    /// Logs a committed change, with what an operator looks for in this kind.
    fn log_committed(change: Change, row: &Self::Row);
}

/// A booking as a change left it, and the event that announces the change.
pub struct Changed<R> {
    pub row: R,
    pub event: Announcement,
}

/// The event of a change, as the change leaves it to the core.
pub enum Announcement {
    /// The core stores it in the outbox, in the change's transaction.
    ToStore(Box<Envelope>),
    /// The change's own statement stored it already (a visit's creation: one round trip fewer).
    Stored,
}

/// Why a change of a booking is not made. Either way nothing is stored.
pub enum Refusal {
    /// The request is answered with this problem.
    Answer(Problem),
    /// Something only a person can set up is missing: the managers are told (once a day), the
    /// booker gets the 422. (Boxed: it travels in every step's `Result`.)
    MissingSetup(Box<RefusedRequest>),
}

impl<E> From<E> for Refusal
where
    E: Into<Problem>,
{
    fn from(error: E) -> Self {
        Self::Answer(error.into())
    }
}

/// The headers a creation reads (documented once, for both kinds).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CreationHeaders {
    /// 1 to 255 visible ASCII characters (optionally in double quotes). The same key and body within 24 h answers with the first booking (`Idempotent-Replayed: true`); the same key with another body is a 422 `idempotency_key_reused`
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        pattern = r#"^"?[!-~]{1,255}"?$"#
    )]
    pub idempotency_key: Option<String>,
    /// `wait=N` (N ≤ 10): wait up to N seconds for the access outcome; anything else is ignored
    #[param(rename = "Prefer", nullable = false)]
    pub prefer: Option<String>,
}

/// `POST {PATH}`: creates a booking (or answers with the one its `Idempotency-Key` made).
pub async fn create<K: BookingRoutes>(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: ApiJson<K::NewRequest>,
) -> Result<Response, Problem> {
    app.write_limiter.admit(caller)?;
    let idempotency_key = IdempotencyKey::from_headers(headers)?;
    let wait = preferred_wait(headers);
    let limits = K::window_limits(&app.limits);
    let request = K::check_request(caller, body.value, &limits, Utc::now())?;
    let booking_id = Uuid::new_v4();

    let mut tx = app.pool.begin().await?;
    if let Some(key) = &idempotency_key {
        let fingerprint = idempotency::fingerprint("POST", K::PATH, &body.raw);
        let kind = K::Row::KIND;
        match idempotency::claim(&mut tx, caller, key, &fingerprint, kind, booking_id).await? {
            Claim::Fresh => {}
            Claim::Replay {
                kind: replayed,
                booking_id,
            } if replayed == kind => {
                tx.rollback().await?;
                return answer_created::<K>(app, caller, booking_id, None, true, wait).await;
            }
            Claim::Replay { .. } | Claim::Mismatch => return Err(key_reused()),
        }
    }
    let created = K::create(app, &mut tx, caller, request, booking_id).await;
    let row = commit::<K>(app, tx, created, Change::Created).await?;
    answer_created::<K>(app, caller, booking_id, Some(row), false, wait).await
}

/// `GET {PATH}`: at most [`LIST_LIMIT`] bookings by start time, a resident's own or all of the
/// manager's building.
pub async fn list<K: BookingRoutes>(app: &AppState, caller: &Caller) -> Result<Response, Problem> {
    let owner = K::listed_owner(caller);
    let rows = bookings::list::<K::Row>(
        &app.pool,
        caller.building_id.as_str(),
        owner.as_deref(),
        LIST_LIMIT,
    )
    .await?;
    let items = rows.iter().map(|row| K::view(caller, row)).collect();
    Ok(json_response(
        StatusCode::OK,
        &K::list(items),
        HeaderMap::new(),
    ))
}

/// `GET {PATH}/{id}`.
pub async fn get<K: BookingRoutes>(
    app: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Response, Problem> {
    let row = bookings::find::<K::Row>(&app.pool, id)
        .await?
        .ok_or_else(not_found)?;
    check_scope::<K>(caller, &row)?;
    Ok(shown::<K>(caller, &row))
}

/// `PATCH {PATH}/{id}`: a new window, a new version and its event; the same window changes
/// nothing.
pub async fn reschedule<K: BookingRoutes>(
    app: &AppState,
    caller: &Caller,
    id: Uuid,
    body: &Value,
) -> Result<Response, Problem> {
    app.write_limiter.admit(caller)?;
    let patch = WindowPatch::from_body(body)?;
    let (mut tx, row) = lock_for_change::<K>(app, caller, id).await?;
    if row.booking().state() == contracts::BookingState::Cancelled {
        return Err(cancelled_problem());
    }
    let current = row.booking().window();
    let starts_at = patch.starts_at.unwrap_or(current.starts_at());
    let ends_at = patch.ends_at.unwrap_or(current.ends_at());
    if (starts_at, ends_at) == (current.starts_at(), current.ends_at()) {
        // Nothing changes: no new version, no event.
        tx.rollback().await?;
        return Ok(shown::<K>(caller, &row));
    }
    let blamed = patch.blamed_field();
    let limits = K::window_limits(&app.limits);
    let window = BookingWindow::within_limits(starts_at, ends_at, &limits, Utc::now())
        .map_err(|e| window_problem(&e, blamed))?;
    let rescheduled = K::reschedule(app, &mut tx, caller, row, window, blamed).await;
    let rescheduled = commit::<K>(app, tx, rescheduled, Change::Rescheduled).await?;
    Ok(shown::<K>(caller, &rescheduled))
}

/// `DELETE {PATH}/{id}`: cancels; cancelling again changes nothing.
pub async fn cancel<K: BookingRoutes>(
    app: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Response, Problem> {
    app.write_limiter.admit(caller)?;
    let (mut tx, row) = lock_for_change::<K>(app, caller, id).await?;
    if row.booking().state() == contracts::BookingState::Cancelled {
        tx.rollback().await?;
        return Ok(shown::<K>(caller, &row));
    }
    let cancelled = K::cancel(&mut tx, row).await.map_err(Refusal::Answer);
    let cancelled = commit::<K>(app, tx, cancelled, Change::Cancelled).await?;
    Ok(shown::<K>(caller, &cancelled))
}

/// The booking `id`, read and locked in a new transaction, once the caller may change it.
async fn lock_for_change<K: BookingRoutes>(
    app: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(Transaction<'static, Postgres>, K::Row), Problem> {
    let mut tx = app.pool.begin().await?;
    let row = bookings::find_for_update::<K::Row>(&mut tx, id)
        .await?
        .ok_or_else(not_found)?;
    check_scope::<K>(caller, &row)?;
    Ok((tx, row))
}

/// Ends a change's transaction: commits the change with its event, or rolls it back and answers
/// the refusal.
async fn commit<K: BookingRoutes>(
    app: &AppState,
    mut tx: Transaction<'static, Postgres>,
    changed: Result<Changed<K::Row>, Refusal>,
    change: Change,
) -> Result<K::Row, Problem> {
    match changed {
        Ok(Changed { row, event }) => {
            if let Announcement::ToStore(event) = event {
                crate::outbox::enqueue(&mut tx, &event).await?;
            }
            tx.commit().await?;
            app.relay_wake.committed();
            K::log_committed(change, &row);
            Ok(row)
        }
        // Dropping the transaction rolls it back.
        Err(Refusal::Answer(problem)) => Err(problem),
        Err(Refusal::MissingSetup(refused)) => {
            // Rolled back first: nothing of the booking is written, and the request's connection
            // is free before the managers' note takes one.
            tx.rollback().await?;
            let problem = refused.missing.problem();
            refusals::refuse_and_tell(&app.pool, &app.relay_wake, *refused).await;
            Err(problem)
        }
    }
}

/// A creation's answer (201): the booking, after waiting for its access outcome when asked to.
/// Without `Prefer: wait` a new booking is answered as it was created (its `RETURNING` row).
async fn answer_created<K: BookingRoutes>(
    app: &AppState,
    caller: &Caller,
    booking_id: Uuid,
    created: Option<K::Row>,
    replayed: bool,
    wait: Option<Duration>,
) -> Result<Response, Problem> {
    let load = || async {
        bookings::find::<K::Row>(&app.pool, booking_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    };
    let row = match (wait, created) {
        (None, Some(row)) => row,
        (None, None) => load().await?,
        (Some(wait), _) => {
            crate::waiting::while_pending(
                &app.pg_notify,
                &app.shutdown,
                booking_id,
                wait,
                load,
                |row: &K::Row| row.booking().access_status() == AccessStatus::Pending,
            )
            .await?
        }
    };
    let location = format!("{}/{booking_id}", K::PATH);
    let headers = creation_headers(&location, replayed, wait);
    Ok(json_response(
        StatusCode::CREATED,
        &K::view(caller, &row),
        headers,
    ))
}

/// A booking as the answer to a read or a change (200).
fn shown<K: BookingRoutes>(caller: &Caller, row: &K::Row) -> Response {
    json_response(StatusCode::OK, &K::view(caller, row), HeaderMap::new())
}

/// What every new booking made by `caller` in their building is stored with.
pub fn new_booking(caller: &Caller, id: Uuid, window: BookingWindow) -> NewBooking<'_> {
    NewBooking {
        id,
        building_id: caller.building_id.as_str(),
        window,
        booked_by_user_id: &caller.user_id,
        booked_by_role: caller.role.into(),
    }
}

/// 404 for another building's booking (its existence is not revealed), 403 for a resident's
/// request on a booking that is not theirs.
fn check_scope<K: BookingRoutes>(caller: &Caller, row: &K::Row) -> Result<(), Problem> {
    if caller.building_id.as_str() != row.booking().building_id {
        return Err(not_found());
    }
    if caller.role == BuildingRole::Resident && !K::is_residents_own(caller, row) {
        return Err(Problem::forbidden("not_your_booking", K::NOT_YOURS));
    }
    Ok(())
}

fn not_found() -> Problem {
    Problem::not_found("booking_not_found", "there is no such booking")
}

fn key_reused() -> Problem {
    Problem::unprocessable(
        "idempotency_key_reused",
        "this Idempotency-Key was already used for a different request; use a new key",
    )
}

/// 409 for a change to a cancelled booking.
fn cancelled_problem() -> Problem {
    Problem::conflict(
        "booking_cancelled",
        "the booking is cancelled and can no longer be changed",
    )
}

/// Headers of a creation's answer: where the booking lives, whether this is a replay, and
/// whether `Prefer: wait` was honoured.
fn creation_headers(location: &str, replayed: bool, waited: Option<Duration>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(wait) = waited
        && let Ok(value) = HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
    {
        headers.insert("preference-applied", value);
    }
    headers
}

/// 422 for a window rule, naming the field to change.
pub fn window_problem(error: &WindowError, field: &str) -> Problem {
    Problem::validation(vec![FieldError::new(
        error.field_or(field),
        error.code(),
        error.to_string(),
    )])
}

/// 422 `too_many_live_bookings` when a resident already holds `live` bookings of kind `K`, the most
/// `CONNECX__LIMITS__MAX_LIVE_BOOKINGS` allows of each kind.
pub fn check_live_bookings<K: BookingRoutes>(
    live: i64,
    limits: &LimitsSettings,
) -> Result<(), Problem> {
    if live < i64::from(limits.max_live_bookings) {
        return Ok(());
    }
    Err(too_many_live_bookings::<K>(limits))
}

/// 422 `too_many_live_bookings`: the resident holds the most live bookings of kind `K` allowed.
pub fn too_many_live_bookings<K: BookingRoutes>(limits: &LimitsSettings) -> Problem {
    let max = limits.max_live_bookings;
    Problem::unprocessable(
        "too_many_live_bookings",
        format!(
            "a resident may hold {max} live {} bookings at most (booked and not yet ended); cancel one first",
            K::NAME
        ),
    )
}

/// A booking's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BookingState {
    Booked,
    Cancelled,
}

impl From<contracts::BookingState> for BookingState {
    fn from(state: contracts::BookingState) -> Self {
        match state {
            contracts::BookingState::Booked => Self::Booked,
            contracts::BookingState::Cancelled => Self::Cancelled,
        }
    }
}

/// A PATCH of a booking: only the window may change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowPatch {
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

/// Fields a PATCH may carry.
pub const PATCHABLE: [&str; 2] = ["starts_at", "ends_at"];

impl WindowPatch {
    /// Reads a PATCH body: any field but `starts_at`/`ends_at` is a 422 naming it.
    pub fn from_body(body: &Value) -> Result<Self, Problem> {
        let Some(fields) = body.as_object() else {
            return Err(Problem::unprocessable(
                "invalid_body",
                "the body must be a JSON object",
            ));
        };
        let mut errors: Vec<FieldError> = fields
            .keys()
            .filter(|k| !PATCHABLE.contains(&k.as_str()))
            .map(|k| {
                FieldError::new(
                    k.clone(),
                    "field_not_patchable",
                    "only starts_at and ends_at can be changed",
                )
            })
            .collect();
        let mut read = |name: &str| -> Option<DateTime<Utc>> {
            let value = fields.get(name)?;
            match serde_json::from_value::<DateTime<FixedOffset>>(value.clone()) {
                Ok(time) => Some(whole_seconds(time.with_timezone(&Utc))),
                Err(_) => {
                    errors.push(FieldError::new(
                        name,
                        "invalid_value",
                        "must be an RFC 3339 time with an offset, e.g. 2026-12-01T18:00:00+11:00",
                    ));
                    None
                }
            }
        };
        let patch = Self {
            starts_at: read("starts_at"),
            ends_at: read("ends_at"),
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        if patch.starts_at.is_none() && patch.ends_at.is_none() {
            return Err(Problem::unprocessable(
                "empty_patch",
                "send starts_at and/or ends_at",
            ));
        }
        Ok(patch)
    }

    /// The field a window error is blamed on: the end when it was sent, else the start.
    pub fn blamed_field(&self) -> &'static str {
        if self.ends_at.is_some() {
            "ends_at"
        } else {
            "starts_at"
        }
    }
}

/// The five HTTP handlers of a booking kind (create, list, get, patch, cancel) with their OpenAPI
/// descriptions. Every kind's handlers only hand the request to this core; what the kinds'
/// documents say differently (paths, bodies, who may book, which codes refuse) is given, the rest
/// is written here once.
macro_rules! booking_handlers {
    (
        kind: $kind:ident,
        path: $path:literal,
        item_path: $item_path:literal,
        tag: $tag:literal,
        request: $request:ident,
        view: $view:ident,
        list: $list:ident,
        patch: $patch:ident,
        operation_ids: [$create_id:literal, $list_id:literal, $get_id:literal, $patch_id:literal, $cancel_id:literal $(,)?],
        summaries: [$create_doc:literal, $list_doc:literal, $get_doc:literal, $patch_doc:literal, $cancel_doc:literal $(,)?],
        location: $location:literal,
        listed: $listed:literal,
        create_forbidden: $create_forbidden:literal,
        create_refused: $create_refused:literal,
        not_yours: $not_yours:literal,
        patch_refused: $patch_refused:literal $(,)?
    ) => {
        #[doc = $create_doc]
        #[utoipa::path(
            post, path = $path, tag = $tag, operation_id = $create_id,
            request_body = $request,
            params(booking_core::CreationHeaders),
            responses(
                (status = 201, description = "Booked (or the booking this key made before)", body = $view, headers(
                    ("Location" = String, description = $location),
                    ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same `Idempotency-Key`"),
                    ("Preference-Applied" = String, description = "`wait=N` when `Prefer: wait` was honoured"),
                )),
                (status = 403, description = $create_forbidden, body = ProblemDetails, content_type = "application/problem+json"),
                (status = 422, description = $create_refused, body = ProblemDetails, content_type = "application/problem+json"),
            ),
            security(("bearer" = ["resident", "manager"]))
        )]
        pub async fn create(
            State(app): State<AppState>,
            caller: Caller,
            headers: HeaderMap,
            body: ApiJson<$request>,
        ) -> Result<Response, Problem> {
            booking_core::create::<$kind>(&app, &caller, &headers, body).await
        }

        #[doc = $list_doc]
        #[utoipa::path(
            get, path = $path, tag = $tag, operation_id = $list_id,
            responses(
                (status = 200, description = $listed, body = $list),
            ),
            security(("bearer" = ["resident", "manager"]))
        )]
        pub async fn list(State(app): State<AppState>, caller: Caller) -> Result<Response, Problem> {
            booking_core::list::<$kind>(&app, &caller).await
        }

        #[doc = $get_doc]
        #[utoipa::path(
            get, path = $item_path, tag = $tag, operation_id = $get_id,
            params(("id" = Uuid, Path, description = "The booking's id")),
            responses(
                (status = 200, description = "The booking", body = $view),
                (status = 403, description = $not_yours, body = ProblemDetails, content_type = "application/problem+json"),
            ),
            security(("bearer" = ["resident", "manager"]))
        )]
        pub async fn get(
            State(app): State<AppState>,
            caller: Caller,
            BookingIdPath(id): BookingIdPath,
        ) -> Result<Response, Problem> {
            booking_core::get::<$kind>(&app, &caller, id).await
        }

        #[doc = $patch_doc]
        #[utoipa::path(
            patch, path = $item_path, tag = $tag, operation_id = $patch_id,
            params(("id" = Uuid, Path, description = "The booking's id")),
            request_body = $patch,
            responses(
                (status = 200, description = "Rescheduled (a new version), or unchanged when the window is the same", body = $view),
                (status = 403, description = $not_yours, body = ProblemDetails, content_type = "application/problem+json"),
                (status = 409, description = "`booking_cancelled`", body = ProblemDetails, content_type = "application/problem+json"),
                (status = 422, description = $patch_refused, body = ProblemDetails, content_type = "application/problem+json"),
            ),
            security(("bearer" = ["resident", "manager"]))
        )]
        pub async fn patch(
            State(app): State<AppState>,
            caller: Caller,
            BookingIdPath(id): BookingIdPath,
            body: ApiJson<Value>,
        ) -> Result<Response, Problem> {
            booking_core::reschedule::<$kind>(&app, &caller, id, &body.value).await
        }

        #[doc = $cancel_doc]
        #[utoipa::path(
            delete, path = $item_path, tag = $tag, operation_id = $cancel_id,
            params(("id" = Uuid, Path, description = "The booking's id")),
            responses(
                (status = 200, description = "Cancelled (cancelling again changes nothing)", body = $view),
                (status = 403, description = $not_yours, body = ProblemDetails, content_type = "application/problem+json"),
            ),
            security(("bearer" = ["resident", "manager"]))
        )]
        pub async fn cancel(
            State(app): State<AppState>,
            caller: Caller,
            BookingIdPath(id): BookingIdPath,
        ) -> Result<Response, Problem> {
            booking_core::cancel::<$kind>(&app, &caller, id).await
        }
    };
}
pub(crate) use booking_handlers;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_may_change_only_the_window() {
        let problem = WindowPatch::from_body(
            &json!({"ends_at": "2026-12-01T22:00:00+11:00", "visitor": {"name": "x"}}),
        )
        .unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, "field_not_patchable");
        assert_eq!(problem.field.as_deref(), Some("visitor"));
    }

    #[test]
    fn every_unpatchable_field_is_named() {
        let problem = WindowPatch::from_body(&json!({"provide_access": true, "state": "booked"}))
            .unwrap_err();
        let mut fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["provide_access", "state"]);
    }

    #[test]
    fn times_are_read_with_their_offset() {
        let patch =
            WindowPatch::from_body(&json!({"starts_at": "2026-12-01T18:00:00+11:00"})).unwrap();
        assert_eq!(
            patch.starts_at.unwrap().to_rfc3339(),
            "2026-12-01T07:00:00+00:00"
        );
        assert_eq!(patch.ends_at, None);
        assert_eq!(patch.blamed_field(), "starts_at");
        let problem =
            WindowPatch::from_body(&json!({"starts_at": "2026-12-01 18:00"})).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("starts_at"));
        assert_eq!(
            WindowPatch::from_body(&json!({})).unwrap_err().code,
            "empty_patch"
        );
        assert_eq!(WindowPatch::from_body(&json!([])).unwrap_err().status, 422);
    }
}
