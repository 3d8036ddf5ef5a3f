//! `unrecorded_writes`: the permissions a ledger transaction is about to write to Salto, noted on
//! the journal pool and committed at once, then forgotten in the transaction itself. A
//! transaction that wrote Salto but did not commit leaves its notes, so the entries it left in
//! Salto are known to be connecX's own, not permissions made by hand.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};

use super::ledger::level_columns;
use crate::ledger::AccessLevelKey;
use salto_ship::{Period, ZonePermission};

/// Notes, committed at once on a connection of its own (not the transaction's), the permissions
/// a transaction is about to write for each access level: if it then fails to commit, the
/// entries it may have left in Salto are still known to be connecX's. One statement for all.
pub async fn note(
    journal: &PgPool,
    writes: &[(&AccessLevelKey, &[ZonePermission])],
) -> Result<(), sqlx::Error> {
    let mut columns = NoteColumns::default();
    for (level, permissions) in writes {
        for permission in *permissions {
            let (Some(timetable), Some(period)) = (permission.timetable, permission.period) else {
                continue;
            };
            columns.servers.push(&level.server);
            columns.access_levels.push(&level.access_level);
            columns.zones.push(&permission.zone);
            columns.timetables.push(timetable as i32);
            columns.starts.push(period.start);
            columns.ends.push(period.end);
        }
    }
    if columns.servers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO unrecorded_writes (server, access_level_id, zone_id, timetable_id,
                                        period_start, period_end)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[],
                              $5::timestamp[], $6::timestamp[])
         ON CONFLICT DO NOTHING",
    )
    .bind(columns.servers)
    .bind(columns.access_levels)
    .bind(columns.zones)
    .bind(columns.timetables)
    .bind(columns.starts)
    .bind(columns.ends)
    .execute(journal)
    .await
    .map(|_| ())
}

/// The rows of [`note`] as the columns its one statement binds.
#[derive(Default)]
struct NoteColumns<'a> {
    servers: Vec<&'a str>,
    access_levels: Vec<&'a str>,
    zones: Vec<&'a str>,
    timetables: Vec<i32>,
    starts: Vec<chrono::NaiveDateTime>,
    ends: Vec<chrono::NaiveDateTime>,
}

/// The entries of the access levels `levels` written by transactions that did not commit (a
/// level without any is absent).
pub async fn of_levels(
    conn: &mut PgConnection,
    levels: &[AccessLevelKey],
) -> Result<BTreeMap<AccessLevelKey, Vec<ZonePermission>>, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        i32,
        chrono::NaiveDateTime,
        chrono::NaiveDateTime,
    );
    let (servers, access_levels) = level_columns(levels);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT server, access_level_id, zone_id, timetable_id, period_start, period_end
           FROM unrecorded_writes
           JOIN unnest($1::text[], $2::text[]) AS l(s, a) ON server = l.s AND access_level_id = l.a",
    )
    .bind(servers)
    .bind(access_levels)
    .fetch_all(conn)
    .await?;
    let mut found: BTreeMap<AccessLevelKey, Vec<ZonePermission>> = BTreeMap::new();
    for (server, access_level, zone, timetable, start, end) in rows {
        found
            .entry(AccessLevelKey {
                server,
                access_level,
            })
            .or_default()
            .push(ZonePermission {
                zone,
                timetable: u32::try_from(timetable).ok(),
                period: Some(Period { start, end }),
            });
    }
    Ok(found)
}

/// Forgets the notes of the access levels `levels`, in the transaction that writes them: once it
/// commits, the ledger accounts for everything connecX wrote there.
pub async fn forget(conn: &mut PgConnection, levels: &[AccessLevelKey]) -> Result<(), sqlx::Error> {
    let (servers, access_levels) = level_columns(levels);
    sqlx::query(
        "DELETE FROM unrecorded_writes USING unnest($1::text[], $2::text[]) AS l(s, a)
          WHERE server = l.s AND access_level_id = l.a",
    )
    .bind(servers)
    .bind(access_levels)
    .execute(conn)
    .await
    .map(|_| ())
}
