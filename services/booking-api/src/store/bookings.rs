//! What `visitor_bookings` and `facility_bookings` share. The two kinds are stored apart (their
//! columns differ), but a booking of either is read, locked for a change, listed and versioned the
//! same way; those queries are written once here, over the table a [`BookingTable`] names.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::access::{AccessStatus, AppliedResult, BookingKind};
use crate::domain::window::BookingWindow;

/// The columns every booking has, whatever its kind: its building and window, its version, its
/// lifecycle and access state, and who made it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BookingRow {
    pub id: Uuid,
    pub building_id: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: String,
    /// +1 with every change.
    pub version: i64,
    pub access_status: String,
    pub access_reason_code: Option<String>,
    pub access_reason: Option<String>,
    pub booked_by_user_id: String,
    pub booked_by_role: String,
}

impl BookingRow {
    pub fn window(&self) -> BookingWindow {
        BookingWindow::stored(self.starts_at, self.ends_at)
    }

    pub fn state(&self) -> contracts::BookingState {
        super::state_from_stored(&self.state)
    }

    pub fn access_status(&self) -> AccessStatus {
        AccessStatus::from_stored(&self.access_status)
    }
}

/// The columns of a [`BookingRow`], for a kind's own column list.
macro_rules! booking_columns {
    () => {
        "id, building_id, starts_at, ends_at, state, version, access_status, access_reason_code,
         access_reason, booked_by_user_id, booked_by_role"
    };
}
pub(crate) use booking_columns;

/// A stored booking of one kind, and the table it is kept in.
pub trait BookingTable: for<'r> sqlx::FromRow<'r, PgRow> + Send + Sync + Unpin + 'static {
    const KIND: BookingKind;
    /// The columns the row reads, for `SELECT` and `RETURNING`.
    const COLUMNS: &'static str;
    /// The column naming whose booking it is: the resident a visitor comes to, the apartment that
    /// booked a facility.
    const OWNER_COLUMN: &'static str;

    /// What the booking has in common with every other.
    fn booking(&self) -> &BookingRow;
}

/// What every new booking is stored with, whatever its kind.
pub struct NewBooking<'a> {
    pub id: Uuid,
    pub building_id: &'a str,
    pub window: BookingWindow,
    pub booked_by_user_id: &'a str,
    pub booked_by_role: contracts::Role,
}

/// The table bookings of `kind` are kept in.
pub const fn table(kind: BookingKind) -> &'static str {
    match kind {
        BookingKind::Visitor => "visitor_bookings",
        BookingKind::Facility => "facility_bookings",
    }
}

/// `statement` (an `INSERT` or `UPDATE` of `B`'s table) answering with the row it wrote.
pub fn returning<B: BookingTable>(statement: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("{statement} RETURNING {}", B::COLUMNS))
}

/// Takes the transaction lock named `key` before live bookings are counted against a limit, so
/// that two concurrent creations cannot both pass it.
pub async fn lock_for_count(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

fn select<B: BookingTable>(filter: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {} {filter}",
        B::COLUMNS,
        table(B::KIND)
    ))
}

pub async fn find<B: BookingTable>(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<B>, sqlx::Error> {
    sqlx::query_as(select::<B>("WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Reads and locks the booking for a change in this transaction.
pub async fn find_for_update<B: BookingTable>(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<B>, sqlx::Error> {
    sqlx::query_as(select::<B>("WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Bookings of a building, optionally only one owner's, by start time.
pub async fn list<B: BookingTable>(
    db: impl PgExecutor<'_>,
    building_id: &str,
    owner: Option<&str>,
    limit: i64,
) -> Result<Vec<B>, sqlx::Error> {
    let filter = format!(
        "WHERE building_id = $1 AND ($2::text IS NULL OR {} = $2) ORDER BY starts_at, id LIMIT $3",
        B::OWNER_COLUMN
    );
    sqlx::query_as(select::<B>(&filter))
        .bind(building_id)
        .bind(owner)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The result last applied to a booking of `kind`, for the version rule, read under the row's
/// lock; `None` inside when none was, `None` outside when the booking does not exist.
pub async fn applied_result(
    conn: &mut PgConnection,
    kind: BookingKind,
    id: Uuid,
) -> Result<Option<Option<AppliedResult>>, sqlx::Error> {
    Ok(applied_results(conn, kind, &[id]).await?.remove(&id))
}

/// [`applied_result`] for several bookings of one kind in one statement, their rows locked in
/// id order (so two batches lock in one order): by id, the bookings that exist.
pub async fn applied_results(
    conn: &mut PgConnection,
    kind: BookingKind,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Option<AppliedResult>>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, Option<DateTime<Utc>>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, access_version, access_occurred_at FROM {} WHERE id = ANY($1)
              ORDER BY id FOR UPDATE",
            table(kind)
        )))
        .bind(ids)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, version, occurred_at)| {
            let applied = occurred_at.map(|occurred_at| AppliedResult {
                version,
                occurred_at,
            });
            (id, applied)
        })
        .collect())
}
