//! `visitor_bookings`: the booking, its version, and the latest access outcome (with the PIN).

use contracts::Envelope;
use sqlx::PgConnection;
use uuid::Uuid;

use super::bookings::{BookingRow, BookingTable, NewBooking, booking_columns, returning};
use crate::domain::access::{AccessOutcome, AccessStatus, AppliedResult, BookingKind};
use crate::domain::window::BookingWindow;
use crate::outbox::{bind_outbox_row, outbox_columns};

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

impl NewVisitorBooking<'_> {
    /// The row [`insert_within_limit`] stores for this visit, as reading it back would give it:
    /// version 1, booked, its access pending when asked for, no PIN yet.
    pub fn stored_row(&self) -> VisitorBookingRow {
        let booking = &self.booking;
        let access = if self.provide_access {
            AccessStatus::Pending
        } else {
            AccessStatus::NotRequested
        };
        VisitorBookingRow {
            booking: BookingRow {
                id: booking.id,
                building_id: booking.building_id.to_owned(),
                starts_at: booking.window.starts_at(),
                ends_at: booking.window.ends_at(),
                state: super::state_to_stored(contracts::BookingState::Booked).to_owned(),
                version: 1,
                access_status: access.as_str().to_owned(),
                access_reason_code: None,
                access_reason: None,
                booked_by_user_id: booking.booked_by_user_id.to_owned(),
                booked_by_role: super::role_to_stored(booking.booked_by_role).to_owned(),
            },
            resident_id: self.resident_id.to_owned(),
            visitor_name: self.visitor_name.to_owned(),
            visitor_email: self.visitor_email.to_owned(),
            provide_access: self.provide_access,
            access_pin: None,
        }
    }
}

/// Inserts `visit` (a new booking's row, [`NewVisitorBooking::stored_row`]) and the event
/// `announcing` it in the outbox, unless its resident already holds `max_live` live visits
/// (booked, not yet ended): `false` then, and neither is stored.
///
/// The count, the booking and its outbox row are one statement (one round trip of a creation's
/// four). The caller holds [`live_visits_lock`], taken in an earlier statement, so this
/// statement's snapshot already sees every creation that held the lock before. Counting stops at
/// `max_live` (more cannot change the answer), which keeps its cost bounded.
pub async fn insert_within_limit(
    conn: &mut PgConnection,
    visit: &VisitorBookingRow,
    max_live: u32,
    announcing: &Envelope,
) -> Result<bool, sqlx::Error> {
    let booking = &visit.booking;
    let insert = concat!(
        "WITH booked AS (
             INSERT INTO visitor_bookings (id, building_id, resident_id, visitor_name,
                 visitor_email, provide_access, starts_at, ends_at, state, version, access_status,
                 booked_by_user_id, booked_by_role)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
              WHERE (SELECT count(*) FROM (
                         SELECT 1 FROM visitor_bookings
                          WHERE building_id = $2 AND resident_id = $3 AND state = 'booked'
                            AND ends_at > now()
                          LIMIT $14) AS live) < $14
             RETURNING 1)
         INSERT INTO outbox (",
        outbox_columns!(),
        ") SELECT $15, $16, $17, $18, $19 FROM booked"
    );
    let query = sqlx::query(insert)
        .bind(booking.id)
        .bind(&booking.building_id)
        .bind(&visit.resident_id)
        .bind(&visit.visitor_name)
        .bind(&visit.visitor_email)
        .bind(visit.provide_access)
        .bind(booking.starts_at)
        .bind(booking.ends_at)
        .bind(&booking.state)
        .bind(booking.version)
        .bind(&booking.access_status)
        .bind(&booking.booked_by_user_id)
        .bind(&booking.booked_by_role)
        .bind(i64::from(max_live));
    let stored = bind_outbox_row(query, announcing).execute(conn).await?;
    Ok(stored.rows_affected() == 1)
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

/// The name of the transaction lock under which a resident's live visits are counted and a new
/// one inserted ([`insert_within_limit`]), so that two concurrent creations cannot both pass the
/// limit. Taken with the creation's directory look-up (`directory::find_building_and_resident`).
pub fn live_visits_lock(building_id: &str, resident_id: &str) -> String {
    format!("live-visits/{building_id}/{resident_id}")
}
