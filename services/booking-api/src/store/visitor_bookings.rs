//! `visitor_bookings`: the booking, its version, and the latest access outcome (with the PIN).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::access::{AccessOutcome, AccessStatus, AppliedResult};
use crate::domain::window::VisitWindow;

/// A stored visitor booking. No `Debug`: the row holds the PIN, which must never be logged.
#[derive(Clone, sqlx::FromRow)]
pub struct VisitorBookingRow {
    pub id: Uuid,
    pub building_id: String,
    pub resident_id: String,
    pub visitor_name: String,
    pub visitor_email: String,
    pub provide_access: bool,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: String,
    pub version: i64,
    pub access_status: String,
    pub access_pin: Option<String>,
    pub access_reason_code: Option<String>,
    pub access_reason: Option<String>,
    pub booked_by_user_id: String,
    pub booked_by_role: String,
}

impl VisitorBookingRow {
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
        "id, building_id, resident_id, visitor_name, visitor_email, provide_access, starts_at, ends_at,
         state, version, access_status, access_pin, access_reason_code, access_reason,
         booked_by_user_id, booked_by_role"
    };
}

/// A new booking, as the route checked it.
pub struct NewVisitorBooking<'a> {
    pub id: Uuid,
    pub building_id: &'a str,
    pub resident_id: &'a str,
    pub visitor_name: &'a str,
    pub visitor_email: &'a str,
    pub provide_access: bool,
    pub window: VisitWindow,
    pub booked_by_user_id: &'a str,
    pub booked_by_role: contracts::Role,
}

pub async fn insert(
    conn: &mut PgConnection,
    booking: &NewVisitorBooking<'_>,
) -> Result<VisitorBookingRow, sqlx::Error> {
    let status = if booking.provide_access {
        AccessStatus::Pending
    } else {
        AccessStatus::NotRequested
    };
    sqlx::query_as(concat!(
        "INSERT INTO visitor_bookings (id, building_id, resident_id, visitor_name, visitor_email,
             provide_access, starts_at, ends_at, state, version, access_status,
             booked_by_user_id, booked_by_role)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'booked', 1, $9, $10, $11)
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(booking.id)
    .bind(booking.building_id)
    .bind(booking.resident_id)
    .bind(booking.visitor_name)
    .bind(booking.visitor_email)
    .bind(booking.provide_access)
    .bind(booking.window.starts_at())
    .bind(booking.window.ends_at())
    .bind(status.as_str())
    .bind(booking.booked_by_user_id)
    .bind(super::role_to_stored(booking.booked_by_role))
    .fetch_one(conn)
    .await
}

pub async fn find(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<VisitorBookingRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM visitor_bookings WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Reads and locks the booking for a change in this transaction.
pub async fn find_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<VisitorBookingRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM visitor_bookings WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Bookings of a building, optionally only one resident's, by start time.
pub async fn list(
    db: impl PgExecutor<'_>,
    building_id: &str,
    resident_id: Option<&str>,
    limit: i64,
) -> Result<Vec<VisitorBookingRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM visitor_bookings
         WHERE building_id = $1 AND ($2::text IS NULL OR resident_id = $2)
         ORDER BY starts_at, id LIMIT $3"
    ))
    .bind(building_id)
    .bind(resident_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Moves the window: a new version whose access (if asked for) is pending again. The PIN stays:
/// the visitor keeps it unless iPassan says otherwise.
pub async fn reschedule(
    conn: &mut PgConnection,
    id: Uuid,
    window: VisitWindow,
) -> Result<VisitorBookingRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE visitor_bookings SET
             starts_at = $2, ends_at = $3, version = version + 1,
             access_status = CASE WHEN provide_access THEN 'pending' ELSE access_status END,
             access_reason_code = NULL, access_reason = NULL,
             updated_at = now()
         WHERE id = $1
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(id)
    .bind(window.starts_at())
    .bind(window.ends_at())
    .fetch_one(conn)
    .await
}

/// Cancels: a new version in state `cancelled`. Access stays as it is until the revocation result.
pub async fn cancel(conn: &mut PgConnection, id: Uuid) -> Result<VisitorBookingRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE visitor_bookings SET state = 'cancelled', version = version + 1, updated_at = now()
         WHERE id = $1
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// The result last applied, for the version rule; `None` inside when none was, `None` outside
/// when the booking does not exist.
pub async fn applied_result(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Option<AppliedResult>>, sqlx::Error> {
    let row: Option<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT access_version, access_occurred_at FROM visitor_bookings WHERE id = $1 FOR UPDATE",
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

/// The live visitor bookings (booked, not yet ended) of `resident_id`, counted after taking a
/// transaction lock on that resident's visits, so that two concurrent creations cannot both pass
/// the limit.
pub async fn lock_and_count_live(
    conn: &mut PgConnection,
    building_id: &str,
    resident_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("live-visits/{building_id}/{resident_id}"))
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM visitor_bookings
          WHERE building_id = $1 AND resident_id = $2 AND state = 'booked' AND ends_at > now()",
    )
    .bind(building_id)
    .bind(resident_id)
    .fetch_one(&mut *conn)
    .await
}
