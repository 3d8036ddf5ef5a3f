//! This worker's records in its `ipassan_sync` schema: the booking snapshots of the version rule
//! (written by `platform::snapshots`) and `visitor_access`, what was last applied and published
//! for each booking.
//!
//! A booking is handled under a transaction-scoped advisory lock, so two messages of one booking
//! (a retry and a newer version, on one replica or two) never talk to iPassan at the same time:
//! the second waits, then reads the stored latest snapshot and what the first did. The lock goes
//! with the transaction, so a handler that dies cannot leave it held.

use chrono::NaiveDateTime;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use contracts::Envelope;

use crate::decision::{Applied, LastPublished};
use crate::visit::VisitWindow;

/// Why the records could not be read or written (always worth retrying).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored snapshot of booking {booking_id} cannot be read: {reason}")]
    Snapshot { booking_id: Uuid, reason: String },
}

/// Begins the transaction that handles `booking_id` on `conn`, holding its lock. `BEGIN` and the
/// lock go to the server as one simple query: one round trip instead of two, for every message.
pub async fn lock_booking(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Transaction<'_, Postgres>, StoreError> {
    // The key is a UUID's canonical text (hex digits and hyphens only), so the literal is safe;
    // it is the same key as `hashtextextended($1, 0)` with a bound parameter.
    let statement = format!(
        "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('ipassan-sync:{}', 0))",
        booking_id.hyphenated()
    );
    Ok(conn.begin_with(sqlx::AssertSqlSafe(statement)).await?)
}

/// What the locked step starts from: the latest snapshot held for the booking (as
/// `platform::snapshots::latest`, on the locked connection) and what was applied and published
/// for it so far — read in one query.
pub async fn held_state(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<(Envelope, Option<Applied>)>, StoreError> {
    let row: Option<HeldRow> = sqlx::query_as(
        "SELECT s.envelope::text, a.applied_version, a.site, a.visitor_id, a.published, a.valid_from,
                a.valid_to, a.failure_code
           FROM booking_snapshots s
           LEFT JOIN visitor_access a ON a.booking_id = s.booking_id
          WHERE s.booking_id = $1",
    )
    .bind(booking_id)
    .fetch_optional(conn)
    .await?;
    let Some((body, version, site, visitor_id, published, valid_from, valid_to, failure_code)) =
        row
    else {
        return Ok(None);
    };
    let envelope = serde_json::from_str(&body).map_err(|e| StoreError::Snapshot {
        booking_id,
        reason: e.to_string(),
    })?;
    // `applied_version` is NOT NULL in the table: NULL here means no row yet.
    let applied = version.map(|version| Applied {
        version,
        site,
        visitor_id,
        published: match (published.as_deref(), valid_from, valid_to) {
            (Some("granted" | "updated"), Some(from), Some(to)) => {
                LastPublished::Access(VisitWindow { from, to })
            }
            (Some("revoked"), _, _) => LastPublished::Revoked,
            (Some("failed"), _, _) => LastPublished::Failed(failure_code.unwrap_or_default()),
            _ => LastPublished::Nothing,
        },
    });
    Ok(Some((envelope, applied)))
}

type HeldRow = (
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<String>,
);

/// Records that `applied.version` is settled, with the result now on record. `published_now` is
/// the result type published by this step (`granted`, `updated`, …), if any. Returns the version
/// of the snapshot held now (a newer one may have arrived while the handler worked), read by the
/// same statement.
pub async fn save_applied(
    conn: &mut PgConnection,
    booking_id: Uuid,
    applied: &Applied,
    published_now: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let (window, failure_code) = match &applied.published {
        LastPublished::Access(window) => (Some(*window), None),
        LastPublished::Failed(code) => (None, Some(code.as_str())),
        LastPublished::Nothing | LastPublished::Revoked => (None, None),
    };
    let held: Option<i64> = sqlx::query_scalar(
        "INSERT INTO visitor_access
                (booking_id, applied_version, site, visitor_id, published, valid_from, valid_to,
                 failure_code)
         VALUES ($1, $2, $3, $4, COALESCE($5, 'none'), $6, $7, $8)
         ON CONFLICT (booking_id) DO UPDATE
            SET applied_version = EXCLUDED.applied_version,
                site = COALESCE(EXCLUDED.site, visitor_access.site),
                visitor_id = COALESCE(EXCLUDED.visitor_id, visitor_access.visitor_id),
                published = COALESCE($5, visitor_access.published), valid_from = EXCLUDED.valid_from,
                valid_to = EXCLUDED.valid_to, failure_code = EXCLUDED.failure_code,
                updated_at = now()
         RETURNING (SELECT version FROM booking_snapshots WHERE booking_id = $1)",
    )
    .bind(booking_id)
    .bind(applied.version)
    .bind(applied.site.as_deref())
    .bind(applied.visitor_id.as_deref())
    .bind(published_now)
    .bind(window.map(|w| w.from))
    .bind(window.map(|w| w.to))
    .bind(failure_code)
    .fetch_one(conn)
    .await?;
    Ok(held)
}
