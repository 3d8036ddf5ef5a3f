//! This worker's records in its `ipassan_sync` schema: the booking snapshots of the version rule
//! (written by `platform::snapshots`) and `visitor_access`, what was last applied and published
//! for each booking.
//!
//! A booking is handled under a transaction-scoped advisory lock, so two messages of one booking
//! (a retry and a newer version, on one replica or two) never talk to iPassan at the same time:
//! the second waits, then reads the stored latest snapshot and what the first did. The lock goes
//! with the transaction, so a handler that dies cannot leave it held.

use chrono::NaiveDateTime;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
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

/// Begins the transaction that handles `booking_id`, holding its lock.
pub async fn lock_booking(
    pool: &PgPool,
    booking_id: Uuid,
) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("ipassan-sync:{booking_id}"))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The latest snapshot held for the booking (as `platform::snapshots::latest`, on the locked
/// connection, so reading it takes no second connection from the pool).
pub async fn latest_snapshot(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<Envelope>, StoreError> {
    let body: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT envelope FROM booking_snapshots WHERE booking_id = $1")
            .bind(booking_id)
            .fetch_optional(conn)
            .await?;
    body.map(|b| {
        serde_json::from_value(b).map_err(|e| StoreError::Snapshot {
            booking_id,
            reason: e.to_string(),
        })
    })
    .transpose()
}

/// The version of the snapshot held now (a newer one may arrive while a handler works).
pub async fn held_version(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT version FROM booking_snapshots WHERE booking_id = $1")
            .bind(booking_id)
            .fetch_optional(conn)
            .await?,
    )
}

type AppliedRow = (
    i64,
    Option<String>,
    Option<String>,
    String,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<String>,
);

/// What was applied and published for the booking so far.
pub async fn applied(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<Applied>, StoreError> {
    let row: Option<AppliedRow> = sqlx::query_as(
        "SELECT applied_version, site, visitor_id, published, valid_from, valid_to, failure_code
           FROM visitor_access WHERE booking_id = $1",
    )
    .bind(booking_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(version, site, visitor_id, published, valid_from, valid_to, failure_code)| Applied {
            version,
            site,
            visitor_id,
            published: match (published.as_str(), valid_from, valid_to) {
                ("granted" | "updated", Some(from), Some(to)) => {
                    LastPublished::Access(VisitWindow { from, to })
                }
                ("revoked", _, _) => LastPublished::Revoked,
                ("failed", _, _) => LastPublished::Failed(failure_code.unwrap_or_default()),
                _ => LastPublished::Nothing,
            },
        },
    ))
}

/// Records that `applied.version` is settled, with the result now on record. `published_now` is
/// the result type published by this step (`granted`, `updated`, …), if any.
pub async fn save_applied(
    conn: &mut PgConnection,
    booking_id: Uuid,
    applied: &Applied,
    published_now: Option<&str>,
) -> Result<(), StoreError> {
    let (window, failure_code) = match &applied.published {
        LastPublished::Access(window) => (Some(*window), None),
        LastPublished::Failed(code) => (None, Some(code.as_str())),
        LastPublished::Nothing | LastPublished::Revoked => (None, None),
    };
    sqlx::query(
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
                updated_at = now()",
    )
    .bind(booking_id)
    .bind(applied.version)
    .bind(applied.site.as_deref())
    .bind(applied.visitor_id.as_deref())
    .bind(published_now)
    .bind(window.map(|w| w.from))
    .bind(window.map(|w| w.to))
    .bind(failure_code)
    .execute(conn)
    .await?;
    Ok(())
}
