//! `/v1/visitor-bookings`: a resident expects a visitor; with `provide_access` the visitor gets a
//! PIN from iPassan (via ipassan-sync). Residents see and change only their own bookings, managers
//! those of their building. What every booking shares (idempotency, `Prefer: wait`, the outbox) is
//! in [`super::booking_core`]; this module holds what is a visit's own: its body and checks, the
//! resident it is for, iPassan's preconditions and the event it announces.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::booking_core::{
    self, Announcement, BookingRoutes, BookingState, Changed, Refusal, window_problem,
};
use super::building_not_registered;
use crate::auth::{BuildingRole, Caller};
use crate::domain::access::AccessStatus;
use crate::domain::ids::ResidentId;
use crate::domain::validation::{self, FieldError, FieldErrors};
use crate::domain::window::{BookingWindow, WindowLimits};
use crate::extract::{ApiJson, BookingIdPath};
use crate::problem::{Problem, ProblemDetails};
use crate::refusals::{MissingSetup, RefusedBooking, RefusedRequest};
use crate::settings::LimitsSettings;
use crate::snapshot::{self, Change};
use crate::state::AppState;
use crate::store::buildings::BuildingRow;
use crate::store::directory::{self, ResidentRow};
use crate::store::visitor_bookings::{self as store, NewVisitorBooking, VisitorBookingRow};

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
// The document's shape of a PATCH; the handler reads the body as a
// [`booking_core::WindowPatch`].
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
    caller.building_id.as_str() == row.booking.building_id
        && match caller.role {
            BuildingRole::Manager => true,
            BuildingRole::Resident => caller.user_id == row.resident_id,
        }
}

fn view(caller: &Caller, row: &VisitorBookingRow) -> VisitorBookingView {
    VisitorBookingView {
        id: row.booking.id,
        state: row.booking.state().into(),
        starts_at: row.booking.starts_at,
        ends_at: row.booking.ends_at,
        visitor: VisitorView {
            name: row.visitor_name.clone(),
            email: row.visitor_email.clone(),
        },
        provide_access: row.provide_access,
        resident_id: row.resident_id.clone(),
        access: VisitorAccessView {
            status: row.booking.access_status(),
            pin: if may_see_pin(caller, row) {
                row.access_pin.clone()
            } else {
                None
            },
            reason: row.booking.access_reason.clone(),
            reason_code: row.booking.access_reason_code.clone(),
        },
        version: row.booking.version,
    }
}

/// What a creation request says once its fields are checked.
pub struct CheckedVisit {
    visitor_name: String,
    visitor_email: String,
    window: BookingWindow,
    provide_access: bool,
    /// The resident the visitor comes to.
    resident_id: String,
}

/// Checks a new visit's fields, naming every one at fault.
fn check_fields(
    request: &NewVisitorBookingRequest,
    limits: &WindowLimits,
    now: DateTime<Utc>,
) -> Result<(String, String, BookingWindow), Problem> {
    let mut errors = FieldErrors::new();
    let visitor_name = errors.check("visitor.name", validation::name(&request.visitor.name));
    let visitor_email = errors.check("visitor.email", validation::email(&request.visitor.email));
    let window = match BookingWindow::within_limits(
        request.starts_at.with_timezone(&Utc),
        request.ends_at.with_timezone(&Utc),
        limits,
        now,
    ) {
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
            Ok((visitor_name, visitor_email, window))
        }
        _ => Err(Problem::validation(errors.into_vec())),
    }
}

/// 422 `window_not_representable` when the building's wall clock runs backwards across the window.
fn representable(
    window: &BookingWindow,
    building: &BuildingRow,
    blamed: &str,
) -> Result<(), Problem> {
    window
        .check_representable(building.zone()?)
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

/// What a visit is, for the check of the access it asks for.
struct Visit<'a> {
    /// The booking's id (or the id it would have had).
    reference: Uuid,
    visitor_name: &'a str,
    window: &'a BookingWindow,
    provide_access: bool,
}

/// Checks that the building can give the access a visit asks for: it must be connected to an
/// iPassan (its own or the deployment's default), else the visit is refused and the managers are
/// told. A resident with no iPassan person is a plain 422: only a manager's change of the
/// resident helps.
fn check_access(
    app: &AppState,
    building: &BuildingRow,
    resident: &ResidentRow,
    visit: Visit<'_>,
) -> Result<(), Refusal> {
    if !visit.provide_access {
        return Ok(());
    }
    if !(building.ipassan_connected || app.defaults.ipassan) {
        let missing = MissingSetup::IpassanConnection {
            building_id: building.id.clone(),
        };
        let booking = RefusedBooking::Visit {
            resident: resident.clone(),
            visitor_name: visit.visitor_name.to_owned(),
        };
        let refused =
            RefusedRequest::new(visit.reference, building, visit.window, missing, booking)?;
        return Err(Refusal::MissingSetup(Box::new(refused)));
    }
    if resident.ipassan_person_id.is_none() {
        return Err(not_synced(resident).into());
    }
    Ok(())
}

/// The caller's building (422 `building_not_registered`) and the booking's resident in it (422
/// `unknown_resident`), in one query; with `lock`, the same query takes that transaction lock.
async fn building_and_resident(
    conn: &mut PgConnection,
    building_id: &str,
    resident_id: &str,
    lock: Option<&str>,
) -> Result<(BuildingRow, ResidentRow), Problem> {
    let Some((building, resident)) =
        directory::find_building_and_resident(conn, building_id, resident_id, lock).await?
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

/// The change committed with the event that announces it.
fn announced(
    change: Change,
    building: &BuildingRow,
    resident: &ResidentRow,
    row: VisitorBookingRow,
) -> Result<Changed<VisitorBookingRow>, Problem> {
    let event = snapshot::visitor_envelope(change, building, resident, &row)?;
    Ok(Changed {
        row,
        event: Announcement::ToStore(Box::new(event)),
    })
}

/// Visitor bookings in the shared booking core.
pub struct VisitorBookings;

impl BookingRoutes for VisitorBookings {
    type Row = VisitorBookingRow;
    type View = VisitorBookingView;
    type List = VisitorBookingList;
    type NewRequest = NewVisitorBookingRequest;
    type CheckedRequest = CheckedVisit;

    const PATH: &'static str = "/v1/visitor-bookings";
    const NAME: &'static str = "visitor";
    const NOT_YOURS: &'static str = "residents can see and change only their own bookings";

    fn is_residents_own(caller: &Caller, row: &VisitorBookingRow) -> bool {
        caller.user_id == row.resident_id
    }

    fn view(caller: &Caller, row: &VisitorBookingRow) -> VisitorBookingView {
        view(caller, row)
    }

    fn list(items: Vec<VisitorBookingView>) -> VisitorBookingList {
        VisitorBookingList { items }
    }

    fn listed_owner(caller: &Caller) -> Option<String> {
        caller.resident_id().map(|r| r.as_str().to_owned())
    }

    fn window_limits(limits: &LimitsSettings) -> WindowLimits {
        limits.visits()
    }

    fn check_request(
        caller: &Caller,
        request: NewVisitorBookingRequest,
        limits: &WindowLimits,
        now: DateTime<Utc>,
    ) -> Result<CheckedVisit, Problem> {
        let (visitor_name, visitor_email, window) = check_fields(&request, limits, now)?;
        let resident_id = booking_resident(caller, request.resident_id.as_ref())?;
        Ok(CheckedVisit {
            visitor_name,
            visitor_email,
            window,
            provide_access: request.provide_access,
            resident_id,
        })
    }

    async fn create(
        app: &AppState,
        conn: &mut PgConnection,
        caller: &Caller,
        request: CheckedVisit,
        booking_id: Uuid,
    ) -> Result<Changed<VisitorBookingRow>, Refusal> {
        let building_id = caller.building_id.as_str();
        // The resident's live visits are counted under this lock (taken with the look-up, one
        // round trip), in the insert's own statement.
        let lock = store::live_visits_lock(building_id, &request.resident_id);
        let (building, resident) =
            building_and_resident(conn, building_id, &request.resident_id, Some(&lock)).await?;
        representable(&request.window, &building, "ends_at")?;
        let visit = Visit {
            reference: booking_id,
            visitor_name: &request.visitor_name,
            window: &request.window,
            provide_access: request.provide_access,
        };
        check_access(app, &building, &resident, visit)?;
        let new = NewVisitorBooking {
            booking: booking_core::new_booking(caller, booking_id, request.window),
            resident_id: &resident.id,
            visitor_name: &request.visitor_name,
            visitor_email: &request.visitor_email,
            provide_access: request.provide_access,
        };
        // The event is made before the row is stored: the row is known in full (a new visit's
        // version, state and access), and one statement then stores both.
        let row = new.stored_row();
        let event = snapshot::visitor_envelope(Change::Created, &building, &resident, &row)?;
        let max_live = app.limits.max_live_bookings;
        if !store::insert_within_limit(conn, &row, max_live, &event).await? {
            return Err(booking_core::too_many_live_bookings::<Self>(&app.limits).into());
        }
        Ok(Changed {
            row,
            event: Announcement::Stored,
        })
    }

    async fn reschedule(
        app: &AppState,
        conn: &mut PgConnection,
        _caller: &Caller,
        row: VisitorBookingRow,
        window: BookingWindow,
        blamed: &'static str,
    ) -> Result<Changed<VisitorBookingRow>, Refusal> {
        let (building, resident) =
            building_and_resident(conn, &row.booking.building_id, &row.resident_id, None).await?;
        representable(&window, &building, blamed)?;
        let visit = Visit {
            reference: row.booking.id,
            visitor_name: &row.visitor_name,
            window: &window,
            provide_access: row.provide_access,
        };
        check_access(app, &building, &resident, visit)?;
        let rescheduled = store::reschedule(conn, row.booking.id, window).await?;
        Ok(announced(
            Change::Rescheduled,
            &building,
            &resident,
            rescheduled,
        )?)
    }

    async fn cancel(
        conn: &mut PgConnection,
        row: VisitorBookingRow,
    ) -> Result<Changed<VisitorBookingRow>, Problem> {
        let (building, resident) =
            building_and_resident(conn, &row.booking.building_id, &row.resident_id, None).await?;
        let cancelled = store::cancel(conn, row.booking.id).await?;
        announced(Change::Cancelled, &building, &resident, cancelled)
    }

    fn log_committed(change: Change, row: &VisitorBookingRow) {
        tracing::info!(
            booking_id = %row.booking.id, version = row.booking.version, provide_access = row.provide_access,
            "visitor booking {change}"
        );
    }
}

booking_core::booking_handlers! {
    kind: VisitorBookings,
    path: "/v1/visitor-bookings",
    item_path: "/v1/visitor-bookings/{id}",
    tag: "visitor bookings",
    request: NewVisitorBookingRequest,
    view: VisitorBookingView,
    list: VisitorBookingList,
    patch: VisitorBookingPatch,
    operation_ids: [
        "create_visitor_booking",
        "list_visitor_bookings",
        "get_visitor_booking",
        "reschedule_visitor_booking",
        "cancel_visitor_booking",
    ],
    summaries: [
        "Creates a visitor booking.",
        "Lists visitor bookings: a resident's own, or all of the manager's building.",
        "Shows one visitor booking.",
        "Moves a visitor booking's window; only `starts_at` and `ends_at` may change.",
        "Cancels a visitor booking (cancelling again changes nothing).",
    ],
    location: "The booking: `/v1/visitor-bookings/{id}`",
    listed: "At most 500 bookings, by start time: a resident's own, or all of the manager's building",
    create_forbidden: "`not_your_resident_id`: a resident booking for another resident",
    create_refused: "Refused: a window rule (`ends_not_after_starts`, `ends_in_past`, `window_too_long`, `too_far_ahead`, `window_not_representable`), `invalid_email`, `required`, `too_long`, `invalid_characters`, `building_not_registered`, `unknown_resident`, `resident_not_synced_to_ipassan`, `ipassan_not_connected`, `too_many_live_bookings`, `idempotency_key_reused`",
    not_yours: "`not_your_booking`: another resident's booking",
    patch_refused: "Refused: `field_not_patchable`, `empty_patch`, a window rule (`ends_not_after_starts`, `ends_in_past`, `window_too_long`, `too_far_ahead`, `window_not_representable`), `resident_not_synced_to_ipassan`, `ipassan_not_connected`",
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
        let problem = match check_fields(
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
