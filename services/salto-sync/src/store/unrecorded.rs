//! `unrecorded_writes`: the permissions a ledger transaction is about to write to Salto, noted on
//! the journal pool and committed at once, then forgotten in the transaction itself. A
//! transaction that wrote Salto but did not commit leaves its notes, so the entries it left in
//! Salto are known to be connecX's own, not permissions made by hand.

use sqlx::{PgConnection, PgPool};

use crate::ledger::AccessLevelKey;
use salto_ship::{Period, ZonePermission};

/// Notes, committed at once on a connection of its own (not the transaction's), the permissions
/// a transaction is about to write for an access level: if it then fails to commit, the entries
/// it may have left in Salto are still known to be connecX's.
pub async fn note(
    journal: &PgPool,
    level: &AccessLevelKey,
    permissions: &[ZonePermission],
) -> Result<(), sqlx::Error> {
    let mut conn = journal.acquire().await?;
    for permission in permissions {
        let (Some(timetable), Some(period)) = (permission.timetable, permission.period) else {
            continue;
        };
        sqlx::query(
            "INSERT INTO unrecorded_writes (server, access_level_id, zone_id, timetable_id,
                                            period_start, period_end)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(&level.server)
        .bind(&level.access_level)
        .bind(&permission.zone)
        .bind(timetable as i32)
        .bind(period.start)
        .bind(period.end)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The entries of an access level written by transactions that did not commit.
pub async fn of_level(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
) -> Result<Vec<ZonePermission>, sqlx::Error> {
    let rows: Vec<(String, i32, chrono::NaiveDateTime, chrono::NaiveDateTime)> = sqlx::query_as(
        "SELECT zone_id, timetable_id, period_start, period_end FROM unrecorded_writes
          WHERE server = $1 AND access_level_id = $2",
    )
    .bind(&level.server)
    .bind(&level.access_level)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(zone, timetable, start, end)| ZonePermission {
            zone,
            timetable: u32::try_from(timetable).ok(),
            period: Some(Period { start, end }),
        })
        .collect())
}

/// Forgets an access level's notes, in the transaction that writes it: once that commits, the
/// ledger accounts for everything connecX wrote there.
pub async fn forget(conn: &mut PgConnection, level: &AccessLevelKey) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM unrecorded_writes WHERE server = $1 AND access_level_id = $2")
        .bind(&level.server)
        .bind(&level.access_level)
        .execute(conn)
        .await?;
    Ok(())
}
