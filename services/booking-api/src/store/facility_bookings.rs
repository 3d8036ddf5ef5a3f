//! `facility_bookings`: the booking, its version, the Salto IDs its latest event carried, and the
//! latest access outcome (granted, deferred behind another booking, failed …).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::access::{AccessOutcome, AccessStatus, AppliedResult};
use crate::domain::window::VisitWindow;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FacilityBookingRow {
    pub id: Uuid,
    pub building_id: String,
    pub facility_id: String,
    pub apartment_id: String,
    pub zone_id: String,
    pub access_level_id: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: String,
    pub version: i64,
    pub access_status: String,
    pub access_reason_code: Option<String>,
    pub access_reason: Option<String>,
    pub access_held_by: Option<Uuid>,
    pub booked_by_user_id: String,
    pub booked_by_role: String,
}

impl FacilityBookingRow {
    pub fn window(&self) -> VisitWindow {
        VisitWindow::stored(self.starts_at, self.ends_at)
    }

    pub fn state(&self) -> contracts::BookingState {
        super::state_from_stored(&self.state)
    }

    pub fn access_status(&self) -> AccessStatus {
        AccessStatus::from_stored(&self.access_status)
    }
}

macro_rules! columns {
    () => {
        "id, building_id, facility_id, apartment_id, zone_id, access_level_id, starts_at, ends_at,
         state, version, access_status, access_reason_code, access_reason, access_held_by,
         booked_by_user_id, booked_by_role"
    };
}

/// A new booking, as the route checked it.
pub struct NewFacilityBooking<'a> {
    pub id: Uuid,
    pub building_id: &'a str,
    pub facility_id: &'a str,
    pub apartment_id: &'a str,
    pub zone_id: &'a str,
    pub access_level_id: &'a str,
    pub window: VisitWindow,
    pub booked_by_user_id: &'a str,
    pub booked_by_role: contracts::Role,
}

pub async fn insert(
    conn: &mut PgConnection,
    booking: &NewFacilityBooking<'_>,
) -> Result<FacilityBookingRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO facility_bookings (id, building_id, facility_id, apartment_id, zone_id,
             access_level_id, starts_at, ends_at, state, version, access_status,
             booked_by_user_id, booked_by_role)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'booked', 1, 'pending', $9, $10)
         RETURNING ",
        columns!()
    ))
    .bind(booking.id)
    .bind(booking.building_id)
    .bind(booking.facility_id)
    .bind(booking.apartment_id)
    .bind(booking.zone_id)
    .bind(booking.access_level_id)
    .bind(booking.window.starts_at())
    .bind(booking.window.ends_at())
    .bind(booking.booked_by_user_id)
    .bind(super::role_to_stored(booking.booked_by_role))
    .fetch_one(conn)
    .await
}

pub async fn find(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<FacilityBookingRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM facility_bookings WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Reads and locks the booking for a change in this transaction.
pub async fn find_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<FacilityBookingRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM facility_bookings WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Bookings of a building, optionally only one apartment's, by start time.
pub async fn list(
    db: impl PgExecutor<'_>,
    building_id: &str,
    apartment_id: Option<&str>,
    limit: i64,
) -> Result<Vec<FacilityBookingRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM facility_bookings
         WHERE building_id = $1 AND ($2::text IS NULL OR apartment_id = $2)
         ORDER BY starts_at, id LIMIT $3"
    ))
    .bind(building_id)
    .bind(apartment_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Moves the window (with the Salto IDs now in force): a new version, access pending again.
pub async fn reschedule(
    conn: &mut PgConnection,
    id: Uuid,
    window: VisitWindow,
    zone_id: &str,
    access_level_id: &str,
) -> Result<FacilityBookingRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE facility_bookings SET
             starts_at = $2, ends_at = $3, zone_id = $4, access_level_id = $5, version = version + 1,
             access_status = 'pending', access_reason_code = NULL, access_reason = NULL,
             access_held_by = NULL, updated_at = now()
         WHERE id = $1
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(window.starts_at())
    .bind(window.ends_at())
    .bind(zone_id)
    .bind(access_level_id)
    .fetch_one(conn)
    .await
}

/// Cancels: a new version in state `cancelled`.
pub async fn cancel(
    conn: &mut PgConnection,
    id: Uuid,
    zone_id: &str,
    access_level_id: &str,
) -> Result<FacilityBookingRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE facility_bookings SET state = 'cancelled', version = version + 1,
             zone_id = $2, access_level_id = $3, updated_at = now()
         WHERE id = $1
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(zone_id)
    .bind(access_level_id)
    .fetch_one(conn)
    .await
}

/// The result last applied (see `visitor_bookings::applied_result`).
pub async fn applied_result(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Option<AppliedResult>>, sqlx::Error> {
    let row: Option<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT access_version, access_occurred_at FROM facility_bookings WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(version, occurred_at)| {
        occurred_at.map(|occurred_at| AppliedResult {
            version,
            occurred_at,
        })
    }))
}

/// Records a result's outcome (the caller checked the version rule under the row lock).
pub async fn apply_result(
    conn: &mut PgConnection,
    id: Uuid,
    outcome: &AccessOutcome,
    applied: AppliedResult,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE facility_bookings SET
             access_status = $2, access_reason_code = $3, access_reason = $4, access_held_by = $5,
             access_version = $6, access_occurred_at = $7, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(outcome.status.as_str())
    .bind(outcome.reason_code.as_deref())
    .bind(outcome.reason.as_deref())
    .bind(outcome.held_by)
    .bind(applied.version)
    .bind(applied.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The live facility bookings (booked, not yet ended) that resident `user_id` made, counted after
/// taking a transaction lock on that resident's facility bookings, so that two concurrent
/// creations cannot both pass the limit.
pub async fn lock_and_count_live_of_resident(
    conn: &mut PgConnection,
    building_id: &str,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("live-facility-bookings/{building_id}/{user_id}"))
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM facility_bookings
          WHERE building_id = $1 AND booked_by_user_id = $2 AND booked_by_role = 'resident'
            AND state = 'booked' AND ends_at > now()",
    )
    .bind(building_id)
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await
}
