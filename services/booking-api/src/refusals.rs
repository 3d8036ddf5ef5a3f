//! Bookings refused because something only a person can set up is missing (docs/architecture.md):
//! a facility without its Access Control Facility ID, an apartment without its Access Control ID,
//! or a building connected to no Salto / no iPassan (neither its own connection nor a deployment
//! default).
//!
//! The booker gets the 422 at once; the building's managers hear of it by email through the
//! notifier (`facility_request.refused.v1` / `visitor_request.refused.v1` in the outbox), so the
//! booking can work next time. They hear once per missing thing per building-local day: a
//! resident who tries five times must not send five emails.

use chrono::Utc;
use contracts::{
    AccessFailure, BookedBy, Envelope, Event, RefusedFacilityRequest, RefusedVisitorRequest,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::window::BookingWindow;
use crate::outbox::RelayWake;
use crate::problem::Problem;
use crate::store::buildings::{BuildingRow, UnknownZone};
use crate::store::directory::{ApartmentRow, FacilityRow, ResidentRow};

/// What a manager (or, for a connection, an operator) must set before a booking can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingSetup {
    /// The facility's Access Control Facility ID (its Salto Zone ExtID).
    FacilityZone { facility_id: String },
    /// The apartment's Access Control ID (its Salto User Access Level ExtID).
    ApartmentAccessLevel { apartment_id: String },
    /// The building is connected to no Salto SHIP endpoint.
    SaltoConnection { building_id: String },
    /// The building is connected to no iPassan tenant.
    IpassanConnection { building_id: String },
}

/// The Salto IDs a booking of `facility` by `apartment` is made with — (Zone ExtID, access level
/// ExtID) — or what is missing first: a Salto to talk to (`salto_reachable`: the building's own
/// connection or the deployment default), then the facility's ID, then the apartment's.
pub fn facility_access(
    building: &BuildingRow,
    salto_reachable: bool,
    facility: &FacilityRow,
    apartment: &ApartmentRow,
) -> Result<(String, String), MissingSetup> {
    if !salto_reachable {
        return Err(MissingSetup::SaltoConnection {
            building_id: building.id.clone(),
        });
    }
    salto_ids(facility, apartment)
}

/// The Salto IDs a booking of `facility` by `apartment` is made with — (Zone ExtID, access level
/// ExtID) — or the first one missing (the facility's first).
pub fn salto_ids(
    facility: &FacilityRow,
    apartment: &ApartmentRow,
) -> Result<(String, String), MissingSetup> {
    let zone_id =
        facility
            .access_control_facility_id
            .clone()
            .ok_or_else(|| MissingSetup::FacilityZone {
                facility_id: facility.id.clone(),
            })?;
    let access_level_id =
        apartment
            .access_control_id
            .clone()
            .ok_or_else(|| MissingSetup::ApartmentAccessLevel {
                apartment_id: apartment.id.clone(),
            })?;
    Ok((zone_id, access_level_id))
}

impl MissingSetup {
    /// The stable code of the 422 and of the manager's email.
    pub fn code(&self) -> &'static str {
        match self {
            MissingSetup::FacilityZone { .. } => "facility_access_control_id_missing",
            MissingSetup::ApartmentAccessLevel { .. } => "apartment_access_control_id_missing",
            MissingSetup::SaltoConnection { .. } => "salto_not_connected",
            MissingSetup::IpassanConnection { .. } => "ipassan_not_connected",
        }
    }

    /// The facility or apartment that lacks the ID, or the system the building lacks.
    fn subject_id(&self) -> &str {
        match self {
            MissingSetup::FacilityZone { facility_id } => facility_id,
            MissingSetup::ApartmentAccessLevel { apartment_id } => apartment_id,
            MissingSetup::SaltoConnection { .. } => "salto",
            MissingSetup::IpassanConnection { .. } => "ipassan",
        }
    }

    /// What is missing and how a manager sets it.
    pub fn message(&self) -> String {
        match self {
            MissingSetup::FacilityZone { facility_id } => format!(
                "facility {facility_id} has no Access Control Facility ID (Salto Zone ID); a manager must set access_control_facility_id with PUT /v1/facilities/{facility_id}"
            ),
            MissingSetup::ApartmentAccessLevel { apartment_id } => format!(
                "apartment {apartment_id} has no Access Control ID (Salto access level ExtID); a manager must set access_control_id with PUT /v1/apartments/{apartment_id}"
            ),
            MissingSetup::SaltoConnection { building_id } => format!(
                "building {building_id} is connected to no Salto SHIP endpoint and this deployment has no default one, so facility access cannot be given; a connecX operator must connect it with PUT /v1/buildings/{building_id}/connections/salto"
            ),
            MissingSetup::IpassanConnection { building_id } => format!(
                "building {building_id} is connected to no iPassan tenant and this deployment has no default one, so visitor access cannot be given; a connecX operator must connect it with PUT /v1/buildings/{building_id}/connections/ipassan"
            ),
        }
    }

    /// The booker's answer: 422 naming the field that points at what lacks the ID.
    pub fn problem(&self) -> Problem {
        let problem = Problem::unprocessable(self.code(), self.message());
        match self {
            MissingSetup::FacilityZone { .. } => problem.with_field("facility_id"),
            MissingSetup::ApartmentAccessLevel { .. } => problem.with_field("apartment_id"),
            // Nothing in the request is at fault.
            MissingSetup::SaltoConnection { .. } | MissingSetup::IpassanConnection { .. } => {
                problem
            }
        }
    }
}

/// A refused request, as the managers are told of it. It owns what it tells: it is decided
/// inside the request's transaction and told after that transaction is rolled back.
pub struct RefusedRequest {
    /// The id the booking would have had, quoted to the manager as a reference.
    pub reference: Uuid,
    pub building: BuildingRow,
    pub window: contracts::BookingWindow,
    pub missing: MissingSetup,
    pub booking: RefusedBooking,
}

/// What was asked for.
pub enum RefusedBooking {
    Facility {
        facility: FacilityRow,
        apartment_id: String,
        booked_by: BookedBy,
    },
    Visit {
        resident: ResidentRow,
        visitor_name: String,
    },
}

impl RefusedRequest {
    /// The request `reference` for `window` in `building`, refused for want of `missing`.
    pub fn new(
        reference: Uuid,
        building: &BuildingRow,
        window: &BookingWindow,
        missing: MissingSetup,
        booking: RefusedBooking,
    ) -> Result<Self, UnknownZone> {
        Ok(Self {
            reference,
            window: window.in_zone(building.zone()?),
            building: building.clone(),
            missing,
            booking,
        })
    }

    /// The event that tells the managers.
    fn into_event(self) -> Event {
        let failure = AccessFailure {
            code: self.missing.code().to_owned(),
            message: self.missing.message(),
            needs_manager: true,
        };
        let building = self.building.to_contract();
        match self.booking {
            RefusedBooking::Facility {
                facility,
                apartment_id,
                booked_by,
            } => Event::FacilityRequestRefused(RefusedFacilityRequest {
                building,
                window: self.window,
                facility_id: facility.id,
                facility_name: facility.name,
                apartment_id,
                booked_by,
                failure,
            }),
            RefusedBooking::Visit {
                resident,
                visitor_name,
            } => Event::VisitorRequestRefused(RefusedVisitorRequest {
                building,
                window: self.window,
                resident_id: resident.id,
                resident_name: resident.name,
                visitor_name,
                failure,
            }),
        }
    }
}

/// Puts the managers' email about `request` in the outbox, unless they were told of the same
/// missing thing today (building-local) already. Returns whether it was queued (the caller then
/// wakes the relay). Its own transaction: the refused booking itself was rolled back.
pub async fn tell_managers(pool: &PgPool, request: RefusedRequest) -> Result<bool, TellError> {
    let zone = request.building.zone().map_err(TellError::Zone)?;
    let today = Utc::now().with_timezone(&zone).date_naive();
    let mut tx = pool.begin().await?;
    let first_today = sqlx::query(
        "INSERT INTO refusal_alerts (building_id, code, subject_id, local_date, reference)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&request.building.id)
    .bind(request.missing.code())
    .bind(request.missing.subject_id())
    .bind(today)
    .bind(request.reference)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first_today {
        return Ok(false);
    }
    let envelope = Envelope::new(request.reference, 1, request.into_event());
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    Ok(true)
}

/// Tells the managers of a refusal (once a day per missing thing). The booker's 422 does not
/// depend on it: a failure here is logged, not answered.
pub async fn refuse_and_tell(pool: &PgPool, relay_wake: &RelayWake, request: RefusedRequest) {
    let code = request.missing.code();
    let reference = request.reference;
    match tell_managers(pool, request).await {
        Ok(true) => {
            relay_wake.committed();
            tracing::warn!(%reference, code, "booking refused; managers will be told")
        }
        Ok(false) => {
            tracing::info!(%reference, code, "booking refused; managers were told today already")
        }
        Err(error) => {
            tracing::error!(%reference, code, error = %error, "booking refused; telling the managers failed")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TellError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Zone(crate::store::buildings::UnknownZone),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facility(zone: Option<&str>) -> FacilityRow {
        FacilityRow {
            id: "gym".into(),
            name: "Gym".into(),
            access_control_facility_id: zone.map(String::from),
        }
    }

    fn apartment(level: Option<&str>) -> ApartmentRow {
        ApartmentRow {
            id: "apt-7".into(),
            access_control_id: level.map(String::from),
        }
    }

    #[test]
    fn the_facility_is_named_first_then_the_apartment() {
        assert_eq!(
            salto_ids(&facility(None), &apartment(None)),
            Err(MissingSetup::FacilityZone {
                facility_id: "gym".into()
            })
        );
        let missing = salto_ids(&facility(Some("GYM")), &apartment(None)).unwrap_err();
        assert_eq!(missing.code(), "apartment_access_control_id_missing");
        assert!(missing.message().contains("PUT /v1/apartments/apt-7"));
        assert_eq!(
            salto_ids(&facility(Some("GYM")), &apartment(Some("7-1"))),
            Ok(("GYM".into(), "7-1".into()))
        );
    }
}
