//! The nightly cleaner's own tables: `cleaner_runs` (one clearing per building and local date,
//! whichever replica runs it) and `drift_reports` (what was last reported changed outside
//! connecX on each access level, so it is not reported again every night).

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use sqlx::PgConnection;

use super::ledger::level_columns;
use crate::ledger::AccessLevelKey;

/// Which of the clearings `nights` (building, local date) already ran (a cheap look, for every
/// building at once, before claiming).
pub async fn ran(
    conn: &mut PgConnection,
    nights: &[(String, NaiveDate)],
) -> Result<HashSet<(String, NaiveDate)>, sqlx::Error> {
    let (buildings, dates): (Vec<&str>, Vec<NaiveDate>) =
        nights.iter().map(|(b, d)| (b.as_str(), *d)).unzip();
    let rows: Vec<(String, NaiveDate)> = sqlx::query_as(
        "SELECT building_id, local_date FROM cleaner_runs
           JOIN unnest($1::text[], $2::date[]) AS n(b, d) ON building_id = n.b AND local_date = n.d",
    )
    .bind(buildings)
    .bind(dates)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
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

/// The finding keys last reported for each of the access levels `levels` (a level with none is
/// absent).
pub async fn drift_reported(
    conn: &mut PgConnection,
    levels: &[AccessLevelKey],
) -> Result<HashMap<AccessLevelKey, Vec<String>>, sqlx::Error> {
    let (servers, access_levels) = level_columns(levels);
    let rows: Vec<(String, String, sqlx::types::Json<Vec<String>>)> = sqlx::query_as(
        "SELECT server, access_level, findings FROM drift_reports
           JOIN unnest($1::text[], $2::text[]) AS l(s, a) ON server = l.s AND access_level = l.a",
    )
    .bind(servers)
    .bind(access_levels)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(server, access_level, keys)| {
            (
                AccessLevelKey {
                    server,
                    access_level,
                },
                keys.0,
            )
        })
        .collect())
}

/// Forgets what was reported on the access levels `levels` (nothing is found there now).
pub async fn forget_drift(
    conn: &mut PgConnection,
    levels: &[AccessLevelKey],
) -> Result<(), sqlx::Error> {
    let (servers, access_levels) = level_columns(levels);
    sqlx::query(
        "DELETE FROM drift_reports USING unnest($1::text[], $2::text[]) AS l(s, a)
          WHERE server = l.s AND access_level = l.a",
    )
    .bind(servers)
    .bind(access_levels)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Remembers what is found on an access level now.
pub async fn remember_drift(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
    keys: &[String],
) -> Result<(), sqlx::Error> {
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
