//! `/v1/facility-bookings`: an apartment books a facility (games room, gym …) for part of one
//! building-local day; salto-sync then puts the facility's zone on the apartment's Salto access
//! level. Residents book and see only their own apartment's bookings; managers act for any
//! apartment of their building. A facility or apartment without its Access Control ID cannot be
//! booked: the 422 names what the manager must set. What every booking shares (idempotency,
//! `Prefer: wait`, the outbox) is in [`super::booking_core`]; this module holds what is a facility
//! booking's own.

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
use super::registered_building;
use crate::auth::{BuildingRole, Caller};
use crate::domain::access::AccessStatus;
use crate::domain::ids::{ApartmentId, FacilityId};
use crate::domain::validation::FieldError;
use crate::domain::window::{BookingWindow, WindowLimits};
use crate::extract::{ApiJson, BookingIdPath};
use crate::problem::{Problem, ProblemDetails};
use crate::refusals::{self, RefusedBooking, RefusedRequest};
use crate::settings::LimitsSettings;
use crate::snapshot::{self, Change};
use crate::state::AppState;
use crate::store::buildings::BuildingRow;
use crate::store::directory::{self, ApartmentRow, FacilityRow, ResidentRow};
use crate::store::facility_bookings::{self as store, FacilityBookingRow, NewFacilityBooking};

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
// The document's shape of a PATCH; the handler reads the body as a
// [`booking_core::WindowPatch`].
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
        id: row.booking.id,
        state: row.booking.state().into(),
        starts_at: row.booking.starts_at,
        ends_at: row.booking.ends_at,
        facility_id: row.facility_id.clone(),
        apartment_id: row.apartment_id.clone(),
        access: FacilityAccessView {
            status: row.booking.access_status(),
            reason: row.booking.access_reason.clone(),
            reason_code: row.booking.access_reason_code.clone(),
            held_by: row.access_held_by,
        },
        version: row.booking.version,
    }
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
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
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

/// The facility and the apartment a booking is of and for, with their building: each registered,
/// read inside the booking's transaction.
struct FacilityAndApartment {
    building: BuildingRow,
    facility: FacilityRow,
    apartment: ApartmentRow,
}

impl FacilityAndApartment {
    /// Reads what a booking of `facility_id` by `apartment_id` is made with, checking on the way
    /// that `window` lies within one day of the building's clock (`blamed` names the field).
    async fn look_up(
        conn: &mut PgConnection,
        building_id: &str,
        (facility_id, apartment_id): (&str, &str),
        window: &BookingWindow,
        blamed: &str,
    ) -> Result<Self, Problem> {
        let building = registered_building(conn, building_id).await?;
        let zone = building.zone()?;
        window
            .check_representable(zone)
            .and_then(|()| window.check_single_local_day(zone))
            .map_err(|e| window_problem(&e, blamed))?;
        Ok(Self {
            facility: registered_facility(conn, building_id, facility_id).await?,
            apartment: registered_apartment(conn, building_id, apartment_id).await?,
            building,
        })
    }

    /// The Salto IDs the booking `reference` is made with now — (Zone ExtID, access level
    /// ExtID) — or the refusal naming what a person must set up first (the IDs now in force apply
    /// to every change: docs/architecture.md, "Services and what each owns").
    async fn salto_ids(
        &self,
        app: &AppState,
        conn: &mut PgConnection,
        caller: &Caller,
        window: &BookingWindow,
        reference: Uuid,
    ) -> Result<(String, String), Refusal> {
        let salto_reachable = self.building.salto_connected || app.defaults.salto;
        let missing = match refusals::facility_access(
            &self.building,
            salto_reachable,
            &self.facility,
            &self.apartment,
        ) {
            Ok(ids) => return Ok(ids),
            Err(missing) => missing,
        };
        let booking = RefusedBooking::Facility {
            facility: self.facility.clone(),
            apartment_id: self.apartment.id.clone(),
            booked_by: booked_by(conn, caller).await?,
        };
        let refused = RefusedRequest::new(reference, &self.building, window, missing, booking)?;
        Err(Refusal::MissingSetup(Box::new(refused)))
    }

    /// The change committed with the event that announces it.
    async fn announce(
        &self,
        conn: &mut PgConnection,
        change: Change,
        row: FacilityBookingRow,
    ) -> Result<Changed<FacilityBookingRow>, Problem> {
        let booker = booker_resident(conn, &row).await?;
        let event = snapshot::facility_envelope(
            change,
            &self.building,
            &self.facility,
            &row,
            booker.as_ref(),
        )?;
        Ok(Changed {
            row,
            event: Announcement::ToStore(Box::new(event)),
        })
    }
}

/// The resident who made the booking, for `booked_by` (a manager's booking has none).
async fn booker_resident(
    conn: &mut PgConnection,
    row: &FacilityBookingRow,
) -> Result<Option<ResidentRow>, Problem> {
    if row.booking.booked_by_role != "resident" {
        return Ok(None);
    }
    Ok(directory::find_resident(
        conn,
        &row.booking.building_id,
        &row.booking.booked_by_user_id,
    )
    .await?)
}

/// Who is booking, as the manager's email names them.
async fn booked_by(
    conn: &mut PgConnection,
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

/// A creation request once its fields are checked.
pub struct CheckedFacilityBooking {
    facility_id: FacilityId,
    apartment_id: ApartmentId,
    window: BookingWindow,
}

/// Facility bookings in the shared booking core.
pub struct FacilityBookings;

impl BookingRoutes for FacilityBookings {
    type Row = FacilityBookingRow;
    type View = FacilityBookingView;
    type List = FacilityBookingList;
    type NewRequest = NewFacilityBookingRequest;
    type CheckedRequest = CheckedFacilityBooking;

    const PATH: &'static str = "/v1/facility-bookings";
    const NAME: &'static str = "facility";
    const NOT_YOURS: &'static str = "residents can see and change only their apartment's bookings";

    fn is_residents_own(caller: &Caller, row: &FacilityBookingRow) -> bool {
        caller.apartment_id.as_ref().map(ApartmentId::as_str) == Some(row.apartment_id.as_str())
    }

    fn view(_caller: &Caller, row: &FacilityBookingRow) -> FacilityBookingView {
        view(row)
    }

    fn list(items: Vec<FacilityBookingView>) -> FacilityBookingList {
        FacilityBookingList { items }
    }

    fn listed_owner(caller: &Caller) -> Option<String> {
        match caller.role {
            BuildingRole::Resident => caller.apartment_id.as_ref().map(|a| a.as_str().to_owned()),
            BuildingRole::Manager => None,
        }
    }

    fn window_limits(limits: &LimitsSettings) -> WindowLimits {
        limits.facilities()
    }

    fn check_request(
        caller: &Caller,
        request: NewFacilityBookingRequest,
        limits: &WindowLimits,
        now: DateTime<Utc>,
    ) -> Result<CheckedFacilityBooking, Problem> {
        let window = BookingWindow::within_limits(
            request.starts_at.with_timezone(&Utc),
            request.ends_at.with_timezone(&Utc),
            limits,
            now,
        )
        .map_err(|e| window_problem(&e, "ends_at"))?;
        let apartment_id = booking_apartment(caller, request.apartment_id.as_ref())?;
        Ok(CheckedFacilityBooking {
            facility_id: request.facility_id,
            apartment_id,
            window,
        })
    }

    async fn create(
        app: &AppState,
        conn: &mut PgConnection,
        caller: &Caller,
        request: CheckedFacilityBooking,
        booking_id: Uuid,
    ) -> Result<Changed<FacilityBookingRow>, Refusal> {
        let building_id = caller.building_id.as_str();
        let target = FacilityAndApartment::look_up(
            conn,
            building_id,
            (request.facility_id.as_str(), request.apartment_id.as_str()),
            &request.window,
            "ends_at",
        )
        .await?;
        if caller.role == BuildingRole::Resident {
            let max = app.limits.max_live_bookings;
            let live =
                store::lock_and_count_live_of_resident(conn, building_id, &caller.user_id, max)
                    .await?;
            booking_core::check_live_bookings::<Self>(live, &app.limits)?;
        }
        let (zone_id, access_level_id) = target
            .salto_ids(app, conn, caller, &request.window, booking_id)
            .await?;
        let new = NewFacilityBooking {
            booking: booking_core::new_booking(caller, booking_id, request.window),
            facility_id: &target.facility.id,
            apartment_id: &target.apartment.id,
            zone_id: &zone_id,
            access_level_id: &access_level_id,
        };
        let row = store::insert(conn, &new).await?;
        Ok(target.announce(conn, Change::Created, row).await?)
    }

    async fn reschedule(
        app: &AppState,
        conn: &mut PgConnection,
        caller: &Caller,
        row: FacilityBookingRow,
        window: BookingWindow,
        blamed: &'static str,
    ) -> Result<Changed<FacilityBookingRow>, Refusal> {
        let ids = (row.facility_id.as_str(), row.apartment_id.as_str());
        let target =
            FacilityAndApartment::look_up(conn, &row.booking.building_id, ids, &window, blamed)
                .await?;
        let (zone_id, access_level_id) = target
            .salto_ids(app, conn, caller, &window, row.booking.id)
            .await?;
        let rescheduled =
            store::reschedule(conn, row.booking.id, window, &zone_id, &access_level_id).await?;
        Ok(target
            .announce(conn, Change::Rescheduled, rescheduled)
            .await?)
    }

    async fn cancel(
        conn: &mut PgConnection,
        row: FacilityBookingRow,
    ) -> Result<Changed<FacilityBookingRow>, Problem> {
        let stored = || Problem::internal(&sqlx::Error::RowNotFound);
        let target = FacilityAndApartment {
            building: registered_building(conn, &row.booking.building_id).await?,
            facility: directory::find_facility(
                &mut *conn,
                &row.booking.building_id,
                &row.facility_id,
            )
            .await?
            .ok_or_else(stored)?,
            apartment: directory::find_apartment(
                &mut *conn,
                &row.booking.building_id,
                &row.apartment_id,
            )
            .await?
            .ok_or_else(stored)?,
        };
        // A cancellation must always go through: when a manager has since unset an ID, the one
        // the booking was last announced with is used.
        let zone_id = target
            .facility
            .access_control_facility_id
            .clone()
            .unwrap_or_else(|| row.zone_id.clone());
        let access_level_id = target
            .apartment
            .access_control_id
            .clone()
            .unwrap_or_else(|| row.access_level_id.clone());
        let cancelled = store::cancel(conn, row.booking.id, &zone_id, &access_level_id).await?;
        target.announce(conn, Change::Cancelled, cancelled).await
    }

    fn log_committed(change: Change, row: &FacilityBookingRow) {
        tracing::info!(
            booking_id = %row.booking.id, version = row.booking.version, facility_id = %row.facility_id,
            "facility booking {change}"
        );
    }
}

booking_core::booking_handlers! {
    kind: FacilityBookings,
    path: "/v1/facility-bookings",
    item_path: "/v1/facility-bookings/{id}",
    tag: "facility bookings",
    request: NewFacilityBookingRequest,
    view: FacilityBookingView,
    list: FacilityBookingList,
    patch: FacilityBookingPatch,
    operation_ids: [
        "create_facility_booking",
        "list_facility_bookings",
        "get_facility_booking",
        "reschedule_facility_booking",
        "cancel_facility_booking",
    ],
    summaries: [
        "Creates a facility booking.",
        "Lists facility bookings: a resident's apartment's, or all of the manager's building.",
        "Shows one facility booking.",
        "Moves a facility booking's window; only `starts_at` and `ends_at` may change.",
        "Cancels a facility booking (cancelling again changes nothing).",
    ],
    location: "The booking: `/v1/facility-bookings/{id}`",
    listed: "At most 500 bookings, by start time: a resident's apartment's, or all of the manager's building",
    create_forbidden: "`not_your_apartment`: a resident booking for another apartment",
    create_refused: "Refused: a window rule (`ends_not_after_starts`, `ends_in_past`, `too_far_ahead`, `spans_several_local_days`, `window_not_representable`), `building_not_registered`, `unknown_facility`, `unknown_apartment`, `facility_access_control_id_missing`, `apartment_access_control_id_missing`, `salto_not_connected`, `too_many_live_bookings`, `idempotency_key_reused`",
    not_yours: "`not_your_booking`: another apartment's booking",
    patch_refused: "Refused: `field_not_patchable`, `empty_patch`, a window rule (`ends_not_after_starts`, `ends_in_past`, `too_far_ahead`, `spans_several_local_days`, `window_not_representable`), `building_not_registered`, `unknown_facility`, `unknown_apartment`, `facility_access_control_id_missing`, `apartment_access_control_id_missing`, `salto_not_connected`",
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
