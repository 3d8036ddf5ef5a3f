//! `visitor_bookings`: the booking, its version, and the latest access outcome (with the PIN).

use sqlx::PgConnection;
use uuid::Uuid;

use super::bookings::{
    BookingRow, BookingTable, NewBooking, booking_columns, lock_for_count, returning,
};
use crate::domain::access::{AccessOutcome, AccessStatus, AppliedResult, BookingKind};
use crate::domain::window::BookingWindow;

/// A stored visitor booking. No `Debug`: the row holds the PIN, which must never be logged.
#[derive(Clone, sqlx::FromRow)]
pub struct VisitorBookingRow {
    #[sqlx(flatten)]
    pub booking: BookingRow,
    pub resident_id: String,
    pub visitor_name: String,
    pub visitor_email: String,
    pub provide_access: bool,
    pub access_pin: Option<String>,
}

impl BookingTable for VisitorBookingRow {
    const KIND: BookingKind = BookingKind::Visitor;
    const COLUMNS: &'static str = concat!(
        booking_columns!(),
        ", resident_id, visitor_name, visitor_email, provide_access, access_pin"
    );
    const OWNER_COLUMN: &'static str = "resident_id";

    fn booking(&self) -> &BookingRow {
        &self.booking
    }
}

/// A new visit, as the route checked it.
pub struct NewVisitorBooking<'a> {
    pub booking: NewBooking<'a>,
    pub resident_id: &'a str,
    pub visitor_name: &'a str,
    pub visitor_email: &'a str,
    pub provide_access: bool,
}

pub async fn insert(
    conn: &mut PgConnection,
    visit: &NewVisitorBooking<'_>,
) -> Result<VisitorBookingRow, sqlx::Error> {
    let booking = &visit.booking;
    let status = if visit.provide_access {
        AccessStatus::Pending
    } else {
        AccessStatus::NotRequested
    };
    sqlx::query_as(returning::<VisitorBookingRow>(
        "INSERT INTO visitor_bookings (id, building_id, resident_id, visitor_name, visitor_email,
             provide_access, starts_at, ends_at, state, version, access_status,
             booked_by_user_id, booked_by_role)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'booked', 1, $9, $10, $11)",
    ))
    .bind(booking.id)
    .bind(booking.building_id)
    .bind(visit.resident_id)
    .bind(visit.visitor_name)
    .bind(visit.visitor_email)
    .bind(visit.provide_access)
    .bind(booking.window.starts_at())
    .bind(booking.window.ends_at())
    .bind(status.as_str())
    .bind(booking.booked_by_user_id)
    .bind(super::role_to_stored(booking.booked_by_role))
    .fetch_one(conn)
    .await
}

/// Moves the window: a new version whose access (if asked for) is pending again. The PIN stays:
/// the visitor keeps it unless iPassan says otherwise.
pub async fn reschedule(
    conn: &mut PgConnection,
    id: Uuid,
    window: BookingWindow,
) -> Result<VisitorBookingRow, sqlx::Error> {
    sqlx::query_as(returning::<VisitorBookingRow>(
        "UPDATE visitor_bookings SET
             starts_at = $2, ends_at = $3, version = version + 1,
             access_status = CASE WHEN provide_access THEN 'pending' ELSE access_status END,
             access_reason_code = NULL, access_reason = NULL,
             updated_at = now()
         WHERE id = $1",
    ))
    .bind(id)
    .bind(window.starts_at())
    .bind(window.ends_at())
    .fetch_one(conn)
    .await
}

/// Cancels: a new version in state `cancelled`. Access stays as it is until the revocation result.
pub async fn cancel(conn: &mut PgConnection, id: Uuid) -> Result<VisitorBookingRow, sqlx::Error> {
    sqlx::query_as(returning::<VisitorBookingRow>(
        "UPDATE visitor_bookings SET state = 'cancelled', version = version + 1, updated_at = now()
         WHERE id = $1",
    ))
    .bind(id)
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
        "UPDATE visitor_bookings SET
             access_status = $2, access_pin = $3, access_reason_code = $4, access_reason = $5,
             access_version = $6, access_occurred_at = $7, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(outcome.status.as_str())
    .bind(outcome.pin.as_deref())
    .bind(outcome.reason_code.as_deref())
    .bind(outcome.reason.as_deref())
    .bind(applied.version)
    .bind(applied.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The live visitor bookings (booked, not yet ended) of `resident_id`, counted under a
/// transaction lock on that resident's visits ([`lock_for_count`]).
pub async fn lock_and_count_live(
    conn: &mut PgConnection,
    building_id: &str,
    resident_id: &str,
) -> Result<i64, sqlx::Error> {
    lock_for_count(conn, &format!("live-visits/{building_id}/{resident_id}")).await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM visitor_bookings
          WHERE building_id = $1 AND resident_id = $2 AND state = 'booked' AND ends_at > now()",
    )
    .bind(building_id)
    .bind(resident_id)
    .fetch_one(&mut *conn)
    .await
}
