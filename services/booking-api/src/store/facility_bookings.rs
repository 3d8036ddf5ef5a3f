//! `facility_bookings`: the booking, its version, the Salto IDs its latest event carried, and the
//! latest access outcome (granted, deferred behind another booking, failed …).

use sqlx::PgConnection;
use uuid::Uuid;

use super::bookings::{
    BookingRow, BookingTable, NewBooking, booking_columns, lock_for_count, returning,
};
use crate::domain::access::{AccessOutcome, AppliedResult, BookingKind};
use crate::domain::window::BookingWindow;

/// A stored facility booking.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FacilityBookingRow {
    #[sqlx(flatten)]
    pub booking: BookingRow,
    pub facility_id: String,
    pub apartment_id: String,
    pub zone_id: String,
    pub access_level_id: String,
    pub access_held_by: Option<Uuid>,
}

impl BookingTable for FacilityBookingRow {
    const KIND: BookingKind = BookingKind::Facility;
    const COLUMNS: &'static str = concat!(
        booking_columns!(),
        ", facility_id, apartment_id, zone_id, access_level_id, access_held_by"
    );
    const OWNER_COLUMN: &'static str = "apartment_id";

    fn booking(&self) -> &BookingRow {
        &self.booking
    }
}

/// A new facility booking, as the route checked it.
pub struct NewFacilityBooking<'a> {
    pub booking: NewBooking<'a>,
    pub facility_id: &'a str,
    pub apartment_id: &'a str,
    pub zone_id: &'a str,
    pub access_level_id: &'a str,
}

pub async fn insert(
    conn: &mut PgConnection,
    new: &NewFacilityBooking<'_>,
) -> Result<FacilityBookingRow, sqlx::Error> {
    let booking = &new.booking;
    sqlx::query_as(returning::<FacilityBookingRow>(
        "INSERT INTO facility_bookings (id, building_id, facility_id, apartment_id, zone_id,
             access_level_id, starts_at, ends_at, state, version, access_status,
             booked_by_user_id, booked_by_role)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'booked', 1, 'pending', $9, $10)",
    ))
    .bind(booking.id)
    .bind(booking.building_id)
    .bind(new.facility_id)
    .bind(new.apartment_id)
    .bind(new.zone_id)
    .bind(new.access_level_id)
    .bind(booking.window.starts_at())
    .bind(booking.window.ends_at())
    .bind(booking.booked_by_user_id)
    .bind(super::role_to_stored(booking.booked_by_role))
    .fetch_one(conn)
    .await
}

/// Moves the window (with the Salto IDs now in force): a new version, access pending again.
pub async fn reschedule(
    conn: &mut PgConnection,
    id: Uuid,
    window: BookingWindow,
    zone_id: &str,
    access_level_id: &str,
) -> Result<FacilityBookingRow, sqlx::Error> {
    sqlx::query_as(returning::<FacilityBookingRow>(
        "UPDATE facility_bookings SET
             starts_at = $2, ends_at = $3, zone_id = $4, access_level_id = $5, version = version + 1,
             access_status = 'pending', access_reason_code = NULL, access_reason = NULL,
             access_held_by = NULL, updated_at = now()
         WHERE id = $1",
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
    sqlx::query_as(returning::<FacilityBookingRow>(
        "UPDATE facility_bookings SET state = 'cancelled', version = version + 1,
             zone_id = $2, access_level_id = $3, updated_at = now()
         WHERE id = $1",
    ))
    .bind(id)
    .bind(zone_id)
    .bind(access_level_id)
    .fetch_one(conn)
    .await
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

/// The live facility bookings (booked, not yet ended) that resident `user_id` made, up to `up_to`
/// of them (the limit, as for visits), counted under a transaction lock on that resident's
/// facility bookings ([`lock_for_count`]).
pub async fn lock_and_count_live_of_resident(
    conn: &mut PgConnection,
    building_id: &str,
    user_id: &str,
    up_to: u32,
) -> Result<i64, sqlx::Error> {
    lock_for_count(
        conn,
        &format!("live-facility-bookings/{building_id}/{user_id}"),
    )
    .await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT 1 FROM facility_bookings
              WHERE building_id = $1 AND booked_by_user_id = $2 AND booked_by_role = 'resident'
                AND state = 'booked' AND ends_at > now()
              LIMIT $3) AS live",
    )
    .bind(building_id)
    .bind(user_id)
    .bind(i64::from(up_to))
    .fetch_one(&mut *conn)
    .await
}
