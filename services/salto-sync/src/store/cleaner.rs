//! The nightly cleaner's own tables: `cleaner_runs` (one clearing per building and local date,
//! whichever replica runs it) and `drift_reports` (what was last reported changed outside
//! connecX on each access level, so it is not reported again every night).

use chrono::NaiveDate;
use sqlx::PgConnection;

use crate::ledger::AccessLevelKey;

/// Whether the clearing of `(building, local_date)` already ran (a cheap look before claiming).
pub async fn ran(
    conn: &mut PgConnection,
    building: &str,
    local_date: NaiveDate,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM cleaner_runs WHERE building_id = $1 AND local_date = $2)",
    )
    .bind(building)
    .bind(local_date)
    .fetch_one(conn)
    .await
}

/// Claims the clearing of `(building, local_date)`; `false` when it already ran (or runs).
pub async fn claim_run(
    conn: &mut PgConnection,
    building: &str,
    local_date: NaiveDate,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO cleaner_runs (building_id, local_date) VALUES ($1, $2)
         ON CONFLICT (building_id, local_date) DO NOTHING",
    )
    .bind(building)
    .bind(local_date)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Marks a claimed clearing done, with what it did.
pub async fn finish_run(
    conn: &mut PgConnection,
    building: &str,
    local_date: NaiveDate,
    expired: usize,
    granted: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE cleaner_runs SET finished_at = now(), expired = $3, granted = $4
          WHERE building_id = $1 AND local_date = $2",
    )
    .bind(building)
    .bind(local_date)
    .bind(i32::try_from(expired).unwrap_or(i32::MAX))
    .bind(i32::try_from(granted).unwrap_or(i32::MAX))
    .execute(conn)
    .await
    .map(|_| ())
}

/// The finding keys last reported for an access level.
pub async fn drift_reported(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
) -> Result<Vec<String>, sqlx::Error> {
    let keys: Option<sqlx::types::Json<Vec<String>>> = sqlx::query_scalar(
        "SELECT findings FROM drift_reports WHERE server = $1 AND access_level = $2",
    )
    .bind(&level.server)
    .bind(&level.access_level)
    .fetch_optional(conn)
    .await?;
    Ok(keys.map(|k| k.0).unwrap_or_default())
}

/// Remembers what is found on an access level now (nothing: forgets it).
pub async fn remember_drift(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
    keys: &[String],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        sqlx::query("DELETE FROM drift_reports WHERE server = $1 AND access_level = $2")
            .bind(&level.server)
            .bind(&level.access_level)
            .execute(conn)
            .await?;
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO drift_reports (server, access_level, findings) VALUES ($1, $2, $3)
         ON CONFLICT (server, access_level) DO UPDATE
            SET findings = EXCLUDED.findings, reported_at = now()",
    )
    .bind(&level.server)
    .bind(&level.access_level)
    .bind(sqlx::types::Json(keys))
    .execute(conn)
    .await?;
    Ok(())
}
