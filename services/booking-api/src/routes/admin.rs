//! Admin upserts (managers only): buildings, apartments, facilities and residents, keyed by
//! connecX's own ids. The building always comes from the manager's token, so a manager can only
//! ever write their own building's records. 201 when created, 200 when updated. A changed ID
//! takes effect for later operations; existing grants keep the ID they were made with.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::{json_response, registered_building};
use crate::auth::Caller;
use crate::domain::ids::{ApartmentId, BuildingId, FacilityId, ResidentId};
use crate::domain::validation::{self, EmailAddress, FieldError, FieldErrors};
use crate::extract::{ApiJson, EntityIdPath};
use crate::problem::{Problem, ProblemDetails};
use crate::state::AppState;
use crate::store::Upsert;
use crate::store::buildings::{self, BuildingRecord};
use crate::store::directory::{self, ResidentRecord};

/// What happens to a second facility booking while the slot is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DoubleBookingPolicy {
    /// The booking waits and is granted when the slot frees.
    #[default]
    Auto,
    /// The manager enables it by hand.
    Manual,
}

impl From<DoubleBookingPolicy> for contracts::DoubleBookingPolicy {
    fn from(policy: DoubleBookingPolicy) -> Self {
        match policy {
            DoubleBookingPolicy::Auto => Self::Auto,
            DoubleBookingPolicy::Manual => Self::Manual,
        }
    }
}

/// A building.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildingRequest {
    /// Not blank; at most 200 characters, none of them control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// IANA time zone name, e.g. `Australia/Sydney` or `UTC`.
    #[schema(min_length = 1, example = "Australia/Sydney")]
    pub timezone: String,
    /// Who is told when a person must act (duplicates, ignoring case, are dropped).
    #[serde(default)]
    #[schema(value_type = Vec<EmailAddress>)]
    pub manager_emails: Vec<String>,
    /// The iPassan site of the building. Not blank; at most 128 characters, no control
    /// characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub ipassan_site: Option<String>,
    /// `auto` (default) or `manual`.
    #[serde(default)]
    pub double_booking_policy: DoubleBookingPolicy,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildingView {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub manager_emails: Vec<String>,
    pub ipassan_site: Option<String>,
    pub double_booking_policy: DoubleBookingPolicy,
}

/// An apartment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApartmentRequest {
    /// Salto access level ExtID ("Access Control ID"); facility bookings need it. Null unsets it.
    /// Not blank; at most 128 characters, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub access_control_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApartmentView {
    pub id: String,
    pub access_control_id: Option<String>,
}

/// A facility.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FacilityRequest {
    /// Not blank; at most 200 characters, none of them control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// Salto Zone ExtID ("Access Control Facility ID"); bookings need it. Null unsets it.
    /// Not blank; at most 128 characters, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub access_control_facility_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FacilityView {
    pub id: String,
    pub name: String,
    pub access_control_facility_id: Option<String>,
}

/// A resident (the id is the `sub` of the resident's token).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResidentRequest {
    /// Not blank; at most 200 characters, none of them control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    #[schema(format = Email)]
    pub email: String,
    /// An apartment of the building, registered first.
    pub apartment_id: ApartmentId,
    /// The iPassan person (visitee) this resident is; visitor access needs it. Null unsets it.
    /// Not blank; at most 128 characters, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub ipassan_person_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResidentView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub apartment_id: String,
    pub ipassan_person_id: Option<String>,
}

/// The answer to an upsert: the record as saved, 201 when it was created, 200 when replaced.
fn saved<V: Serialize>(upsert: Upsert, view: &V) -> Response {
    let status = match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Updated => StatusCode::OK,
    };
    json_response(status, view, HeaderMap::new())
}

/// Saves `entry` `id` ("apartment" …) in the directory of the manager's building and answers
/// with `view`, the entry as saved. `write` runs in one transaction after the check that the
/// building is registered (422 while no manager has), with the building's id; an error from it
/// writes nothing.
async fn save_in_directory<V: Serialize>(
    app: &AppState,
    caller: &Caller,
    entry: &'static str,
    id: &str,
    write: impl AsyncFnOnce(&mut PgConnection, &str) -> Result<Upsert, Problem>,
    view: &V,
) -> Result<Response, Problem> {
    let mut tx = app.pool.begin().await?;
    let building = registered_building(&mut tx, caller.building_id.as_str()).await?;
    let upsert = write(&mut tx, &building.id).await?;
    tx.commit().await?;
    tracing::info!(building_id = %building.id, entry, id, ?upsert, "directory entry saved");
    Ok(saved(upsert, view))
}

/// An outside system's ID that may be left out (or null, which unsets it).
fn optional_external_id(
    errors: &mut FieldErrors,
    field: &str,
    value: Option<&str>,
) -> Option<String> {
    value.and_then(|v| errors.check(field, validation::external_id(v)))
}

/// Creates or replaces the manager's own building.
#[utoipa::path(
    put, path = "/v1/buildings/{id}", tag = "admin",
    params(("id" = BuildingId, Path, description = "connecX building id: the manager's own")),
    request_body = BuildingRequest,
    responses(
        (status = 200, description = "Updated", body = BuildingView),
        (status = 201, description = "Created", body = BuildingView),
        (status = 403, description = "`not_your_building`: not the token's building", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks its rule: `required`, `too_long`, `invalid_characters`, `invalid_timezone`, `invalid_email`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["manager"]))
)]
pub async fn put_building(
    State(app): State<AppState>,
    caller: Caller,
    EntityIdPath(id): EntityIdPath,
    body: ApiJson<BuildingRequest>,
) -> Result<Response, Problem> {
    caller.require_manager()?;
    if caller.building_id.as_str() != id {
        return Err(Problem::forbidden(
            "not_your_building",
            "a manager may only set up their own building",
        ));
    }
    let request = body.value;
    let mut errors = FieldErrors::new();
    let name = errors.check("name", validation::name(&request.name));
    let zone = errors.check("timezone", validation::timezone(&request.timezone));
    let mut manager_emails: Vec<String> = Vec::new();
    for (index, email) in request.manager_emails.iter().enumerate() {
        if let Some(email) = errors.check(
            &format!("manager_emails[{index}]"),
            validation::email(email),
        ) && !manager_emails
            .iter()
            .any(|e| e.eq_ignore_ascii_case(&email))
        {
            manager_emails.push(email);
        }
    }
    let ipassan_site =
        optional_external_id(&mut errors, "ipassan_site", request.ipassan_site.as_deref());
    let (name, zone) = errors.finish(name.zip(zone)).map_err(Problem::validation)?;
    let upsert = buildings::upsert(
        &app.pool,
        &BuildingRecord {
            id: &id,
            name: &name,
            timezone: zone.name(),
            manager_emails: &manager_emails,
            ipassan_site: ipassan_site.as_deref(),
            double_booking_policy: request.double_booking_policy.into(),
        },
    )
    .await?;
    tracing::info!(building_id = %id, ?upsert, "building saved");
    let view = BuildingView {
        id,
        name,
        timezone: zone.name().to_owned(),
        manager_emails,
        ipassan_site,
        double_booking_policy: request.double_booking_policy,
    };
    Ok(saved(upsert, &view))
}

/// Creates or replaces an apartment of the manager's building.
#[utoipa::path(
    put, path = "/v1/apartments/{id}", tag = "admin",
    params(("id" = ApartmentId, Path, description = "connecX apartment id")),
    request_body = ApartmentRequest,
    responses(
        (status = 200, description = "Updated", body = ApartmentView),
        (status = 201, description = "Created", body = ApartmentView),
        (status = 422, description = "`building_not_registered`, or a field breaks its rule: `required`, `too_long`, `invalid_characters`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["manager"]))
)]
pub async fn put_apartment(
    State(app): State<AppState>,
    caller: Caller,
    EntityIdPath(id): EntityIdPath,
    body: ApiJson<ApartmentRequest>,
) -> Result<Response, Problem> {
    caller.require_manager()?;
    let mut errors = FieldErrors::new();
    let access_control_id = optional_external_id(
        &mut errors,
        "access_control_id",
        body.value.access_control_id.as_deref(),
    );
    let access_control_id = errors
        .finish(Some(access_control_id))
        .map_err(Problem::validation)?;
    let view = ApartmentView {
        id,
        access_control_id,
    };
    let write = async |tx: &mut PgConnection, building_id: &str| {
        let access_control_id = view.access_control_id.as_deref();
        Ok(directory::upsert_apartment(tx, building_id, &view.id, access_control_id).await?)
    };
    save_in_directory(&app, &caller, "apartment", &view.id, write, &view).await
}

/// Creates or replaces a facility of the manager's building.
#[utoipa::path(
    put, path = "/v1/facilities/{id}", tag = "admin",
    params(("id" = FacilityId, Path, description = "connecX facility id")),
    request_body = FacilityRequest,
    responses(
        (status = 200, description = "Updated", body = FacilityView),
        (status = 201, description = "Created", body = FacilityView),
        (status = 422, description = "`building_not_registered`, or a field breaks its rule: `required`, `too_long`, `invalid_characters`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["manager"]))
)]
pub async fn put_facility(
    State(app): State<AppState>,
    caller: Caller,
    EntityIdPath(id): EntityIdPath,
    body: ApiJson<FacilityRequest>,
) -> Result<Response, Problem> {
    caller.require_manager()?;
    let request = body.value;
    let mut errors = FieldErrors::new();
    let name = errors.check("name", validation::name(&request.name));
    let zone_id = optional_external_id(
        &mut errors,
        "access_control_facility_id",
        request.access_control_facility_id.as_deref(),
    );
    let name = errors.finish(name).map_err(Problem::validation)?;
    let view = FacilityView {
        id,
        name,
        access_control_facility_id: zone_id,
    };
    let write = async |tx: &mut PgConnection, building_id: &str| {
        let zone_id = view.access_control_facility_id.as_deref();
        Ok(directory::upsert_facility(tx, building_id, &view.id, &view.name, zone_id).await?)
    };
    save_in_directory(&app, &caller, "facility", &view.id, write, &view).await
}

/// Creates or replaces a resident of the manager's building.
#[utoipa::path(
    put, path = "/v1/residents/{id}", tag = "admin",
    params(("id" = ResidentId, Path, description = "connecX user id of the resident (the `sub` of their token)")),
    request_body = ResidentRequest,
    responses(
        (status = 200, description = "Updated", body = ResidentView),
        (status = 201, description = "Created", body = ResidentView),
        (status = 422, description = "`building_not_registered`, `unknown_apartment`, or a field breaks its rule: `required`, `too_long`, `invalid_characters`, `invalid_email`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["manager"]))
)]
pub async fn put_resident(
    State(app): State<AppState>,
    caller: Caller,
    EntityIdPath(id): EntityIdPath,
    body: ApiJson<ResidentRequest>,
) -> Result<Response, Problem> {
    caller.require_manager()?;
    let request = body.value;
    let mut errors = FieldErrors::new();
    let name = errors.check("name", validation::name(&request.name));
    let email = errors.check("email", validation::email(&request.email));
    let person = optional_external_id(
        &mut errors,
        "ipassan_person_id",
        request.ipassan_person_id.as_deref(),
    );
    let (name, email) = errors
        .finish(name.zip(email))
        .map_err(Problem::validation)?;
    let view = ResidentView {
        id,
        name,
        email,
        apartment_id: request.apartment_id.to_string(),
        ipassan_person_id: person,
    };
    let write = async |tx: &mut PgConnection, building_id: &str| {
        if directory::find_apartment(&mut *tx, building_id, &view.apartment_id)
            .await?
            .is_none()
        {
            return Err(Problem::validation(vec![FieldError::new(
                "apartment_id",
                "unknown_apartment",
                format!(
                    "apartment {0} is not registered in this building; PUT /v1/apartments/{0} first",
                    view.apartment_id
                ),
            )]));
        }
        let resident = ResidentRecord {
            building_id,
            id: &view.id,
            name: &view.name,
            email: &view.email,
            apartment_id: &view.apartment_id,
            ipassan_person_id: view.ipassan_person_id.as_deref(),
        };
        Ok(directory::upsert_resident(tx, &resident).await?)
    };
    save_in_directory(&app, &caller, "resident", &view.id, write, &view).await
}
