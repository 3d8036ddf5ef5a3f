//! The `booking` schema: one module per table, each holding its rows and the SQL that reads and
//! writes them ([`bookings`]: what the two booking tables share). Functions take a connection (`&mut *tx` inside a transaction) or the pool, so
//! routes decide the transaction boundaries and the store stays plain SQL.

pub mod bookings;
pub mod buildings;
pub mod connections;
pub mod directory;
pub mod facility_bookings;
pub mod visitor_bookings;

/// Whether an upsert made a new row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Updated,
}

impl Upsert {
    fn from_inserted(inserted: bool) -> Self {
        if inserted {
            Self::Created
        } else {
            Self::Updated
        }
    }
}

/// Deletes the rows of `table` whose `column` (a time) lies more than `age` in the past, and says
/// how many: the housekeeping of tables that only grow (idempotency keys, sent outbox rows).
pub async fn delete_older_than(
    pool: &sqlx::PgPool,
    table: &str,
    column: &str,
    age: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
    let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE {column} < now() - make_interval(secs => $1::bigint)"
    )))
    .bind(secs)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// A booking's lifecycle state as stored.
pub fn state_from_stored(text: &str) -> contracts::BookingState {
    match text {
        "cancelled" => contracts::BookingState::Cancelled,
        _ => contracts::BookingState::Booked,
    }
}

pub fn state_to_stored(state: contracts::BookingState) -> &'static str {
    match state {
        contracts::BookingState::Booked => "booked",
        contracts::BookingState::Cancelled => "cancelled",
    }
}

pub fn role_to_stored(role: contracts::Role) -> &'static str {
    match role {
        contracts::Role::Resident => "resident",
        contracts::Role::Manager => "manager",
        contracts::Role::Operator => "operator",
    }
}

pub fn role_from_stored(text: &str) -> contracts::Role {
    match text {
        "manager" => contracts::Role::Manager,
        "operator" => contracts::Role::Operator,
        _ => contracts::Role::Resident,
    }
}
