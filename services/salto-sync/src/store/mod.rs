//! salto-sync's SQL, one repository function per query, grouped by the tables they keep. Every
//! function runs on the connection it is given — for the ledger, the transaction that holds the
//! access level's advisory lock — so the reads and writes of one operation see and commit one
//! state; the journal's notes ([`unrecorded::note`]) are the exception, committed on their own.
//!
//! - [`ledger`]: `permissions` and `waiting_bookings`, who holds and who waits;
//! - [`bookings`]: `booking_outcomes`, the booking snapshots as this service reads them, and the
//!   buildings' time zones;
//! - [`unrecorded`]: `unrecorded_writes`, what a transaction wrote to Salto before it committed;
//! - [`cleaner`]: `cleaner_runs` and `drift_reports`;
//! - [`timetables`]: each server's timetable pool and its alerts;
//! - [`servers`]: buildings' connections and the servers' stored settings.
//!
//! The advisory locks that serialize writers are here too.

pub mod bookings;
pub mod cleaner;
pub mod ledger;
pub mod servers;
pub mod timetables;
pub mod unrecorded;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Begins a ledger transaction that waits at most 30 s for another replica's lock before it is
/// retried later, holding the locks of `bookings` ([`booking_lock_name`]) from the start, taken
/// in booking order (so two batches never wait for each other's). `BEGIN`, the lock timeout and
/// the locks go to the server as one simple query: one round trip instead of three, for every
/// booking.
pub async fn begin(
    pool: &PgPool,
    bookings: &[Uuid],
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut statement = String::from("BEGIN; SET LOCAL lock_timeout = '30s'");
    let mut bookings = bookings.to_vec();
    bookings.sort_unstable();
    bookings.dedup();
    for booking in bookings {
        // A UUID's canonical text is hex digits and hyphens only, so the literal is safe; it is
        // the same key as `hashtextextended($1, 0)` with the name bound.
        statement.push_str(&format!(
            "; SELECT pg_advisory_xact_lock(hashtextextended('{}', 0))",
            booking_lock_name(booking)
        ));
    }
    pool.begin_with(sqlx::AssertSqlSafe(statement)).await
}

/// The lock that keeps one booking's transactions from overlapping.
pub fn booking_lock_name(booking: Uuid) -> String {
    format!("salto_sync/booking/{}", booking.hyphenated())
}

/// Takes a transaction-scoped advisory lock (released at commit or rollback, or when the
/// connection drops — which is why writes are computed from the ledger, never replayed).
pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Takes the advisory locks of `names` in one statement, in the order given (callers sort them,
/// so that two transactions never wait for each other's locks).
pub async fn lock_all(conn: &mut PgConnection, names: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(name, 0)) FROM unnest($1::text[]) AS name",
    )
    .bind(names)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Like [`lock`], but gives up at once when another session holds it.
pub async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .fetch_one(conn)
        .await
}
