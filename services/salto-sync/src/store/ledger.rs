//! `permissions` (the booking holding each slot) and `waiting_bookings` (the bookings waiting
//! for one, first come first served).

use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::ledger::{AccessLevelKey, Held, LocalWindow, SlotKey, Waiting};
use salto_ship::{DaySeconds, Period};

const HELD_COLUMNS: &str = "server, building_id, access_level_id, zone_id, booking_id, version, local_date, starts_secs, ends_secs, timetable_id, period_start, period_end";
const WAITING_COLUMNS: &str = "server, building_id, access_level_id, zone_id, booking_id, version, local_date, starts_secs, ends_secs";

fn secs(value: i32) -> DaySeconds {
    u32::try_from(value).unwrap_or(0)
}

/// The columns both tables share: what [`Waiting`] holds.
fn waiting_from_row(row: &PgRow) -> Result<Waiting, sqlx::Error> {
    Ok(Waiting {
        slot: SlotKey {
            level: AccessLevelKey {
                server: row.try_get("server")?,
                access_level: row.try_get("access_level_id")?,
            },
            zone: row.try_get("zone_id")?,
        },
        building: row.try_get("building_id")?,
        booking_id: row.try_get("booking_id")?,
        version: row.try_get("version")?,
        window: LocalWindow {
            date: row.try_get("local_date")?,
            starts: secs(row.try_get("starts_secs")?),
            ends: secs(row.try_get("ends_secs")?),
        },
    })
}

fn held_from_row(row: &PgRow) -> Result<Held, sqlx::Error> {
    let Waiting {
        slot,
        building,
        booking_id,
        version,
        window,
    } = waiting_from_row(row)?;
    let timetable: i32 = row.try_get("timetable_id")?;
    Ok(Held {
        slot,
        building,
        booking_id,
        version,
        window,
        timetable: u32::try_from(timetable).unwrap_or(0),
        period: Period {
            start: row.try_get("period_start")?,
            end: row.try_get("period_end")?,
        },
    })
}

pub async fn holder_of(
    conn: &mut PgConnection,
    slot: &SlotKey,
) -> Result<Option<Held>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HELD_COLUMNS} FROM permissions WHERE server = $1 AND access_level_id = $2 AND zone_id = $3"
    )))
    .bind(&slot.level.server)
    .bind(&slot.level.access_level)
    .bind(&slot.zone)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(held_from_row).transpose()
}

/// What the ledger holds for `booking_id`: the slot it holds and the one it waits for, read in
/// one statement.
pub async fn entries_of_booking(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<(Option<Held>, Option<Waiting>), sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT true AS holds, {HELD_COLUMNS} FROM permissions WHERE booking_id = $1
         UNION ALL
         SELECT false, {WAITING_COLUMNS}, NULL::integer, NULL::timestamp, NULL::timestamp
           FROM waiting_bookings WHERE booking_id = $1"
    )))
    .bind(booking_id)
    .fetch_all(conn)
    .await?;
    let (mut held, mut waiting) = (None, None);
    for row in &rows {
        if row.try_get::<bool, _>("holds")? {
            held = Some(held_from_row(row)?);
        } else {
            waiting = Some(waiting_from_row(row)?);
        }
    }
    Ok((held, waiting))
}

/// [`entries_of_booking`] for the bookings `ids`, in one statement: the entries of each booking
/// that has any.
pub async fn entries_of_bookings(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (Option<Held>, Option<Waiting>)>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT true AS holds, {HELD_COLUMNS} FROM permissions WHERE booking_id = ANY($1)
         UNION ALL
         SELECT false, {WAITING_COLUMNS}, NULL::integer, NULL::timestamp, NULL::timestamp
           FROM waiting_bookings WHERE booking_id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut entries: HashMap<Uuid, (Option<Held>, Option<Waiting>)> = HashMap::new();
    for row in &rows {
        if row.try_get::<bool, _>("holds")? {
            let held = held_from_row(row)?;
            let id = held.booking_id;
            entries.entry(id).or_default().0 = Some(held);
        } else {
            let waiting = waiting_from_row(row)?;
            let id = waiting.booking_id;
            entries.entry(id).or_default().1 = Some(waiting);
        }
    }
    Ok(entries)
}

/// The holders of `slots`, in one statement (a free slot has none).
pub async fn holders_of(
    conn: &mut PgConnection,
    slots: &[SlotKey],
) -> Result<Vec<Held>, sqlx::Error> {
    let servers: Vec<&str> = slots.iter().map(|s| s.level.server.as_str()).collect();
    let levels: Vec<&str> = slots
        .iter()
        .map(|s| s.level.access_level.as_str())
        .collect();
    let zones: Vec<&str> = slots.iter().map(|s| s.zone.as_str()).collect();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HELD_COLUMNS} FROM permissions
           JOIN unnest($1::text[], $2::text[], $3::text[]) AS s(sv, a, z)
             ON server = s.sv AND access_level_id = s.a AND zone_id = s.z"
    )))
    .bind(servers)
    .bind(levels)
    .bind(zones)
    .fetch_all(conn)
    .await?;
    rows.iter().map(held_from_row).collect()
}

/// Every permission the ledger holds in the access levels `levels` (what Salto must show for
/// them), ordered by access level and zone.
pub async fn held_in_levels(
    conn: &mut PgConnection,
    levels: &[AccessLevelKey],
) -> Result<Vec<Held>, sqlx::Error> {
    let (servers, access_levels) = level_columns(levels);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HELD_COLUMNS} FROM permissions
           JOIN unnest($1::text[], $2::text[]) AS l(s, a) ON server = l.s AND access_level_id = l.a
          ORDER BY server, access_level_id, zone_id"
    )))
    .bind(servers)
    .bind(access_levels)
    .fetch_all(conn)
    .await?;
    rows.iter().map(held_from_row).collect()
}

pub async fn insert_held(conn: &mut PgConnection, held: &Held) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO permissions (building_id, access_level_id, zone_id, booking_id, version, local_date,
                                  starts_secs, ends_secs, timetable_id, period_start, period_end,
                                  server)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (server, access_level_id, zone_id) DO UPDATE
            SET booking_id = EXCLUDED.booking_id, version = EXCLUDED.version,
                building_id = EXCLUDED.building_id,
                local_date = EXCLUDED.local_date, starts_secs = EXCLUDED.starts_secs,
                ends_secs = EXCLUDED.ends_secs, timetable_id = EXCLUDED.timetable_id,
                period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
                granted_at = now()",
    )
    .bind(&held.building)
    .bind(&held.slot.level.access_level)
    .bind(&held.slot.zone)
    .bind(held.booking_id)
    .bind(held.version)
    .bind(held.window.date)
    .bind(held.window.starts as i32)
    .bind(held.window.ends as i32)
    .bind(held.timetable as i32)
    .bind(held.period.start)
    .bind(held.period.end)
    .bind(&held.slot.level.server)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn delete_held(conn: &mut PgConnection, booking_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM permissions WHERE booking_id = $1")
        .bind(booking_id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Queues a booking for a slot; a booking already waiting keeps its place (and gets its newer
/// version and window).
pub async fn upsert_waiting(conn: &mut PgConnection, waiting: &Waiting) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO waiting_bookings (booking_id, building_id, access_level_id, zone_id, version,
                                       local_date, starts_secs, ends_secs, server)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (booking_id) DO UPDATE
            SET version = EXCLUDED.version, local_date = EXCLUDED.local_date,
                starts_secs = EXCLUDED.starts_secs, ends_secs = EXCLUDED.ends_secs,
                building_id = EXCLUDED.building_id, access_level_id = EXCLUDED.access_level_id,
                zone_id = EXCLUDED.zone_id, server = EXCLUDED.server",
    )
    .bind(waiting.booking_id)
    .bind(&waiting.building)
    .bind(&waiting.slot.level.access_level)
    .bind(&waiting.slot.zone)
    .bind(waiting.version)
    .bind(waiting.window.date)
    .bind(waiting.window.starts as i32)
    .bind(waiting.window.ends as i32)
    .bind(&waiting.slot.level.server)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn delete_waiting(conn: &mut PgConnection, booking_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM waiting_bookings WHERE booking_id = $1")
        .bind(booking_id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The bookings waiting for a slot, first come first.
pub async fn waiters_for(
    conn: &mut PgConnection,
    slot: &SlotKey,
) -> Result<Vec<Waiting>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {WAITING_COLUMNS} FROM waiting_bookings
          WHERE server = $1 AND access_level_id = $2 AND zone_id = $3
          ORDER BY queued_at, booking_id"
    )))
    .bind(&slot.level.server)
    .bind(&slot.level.access_level)
    .bind(&slot.zone)
    .fetch_all(conn)
    .await?;
    rows.iter().map(waiting_from_row).collect()
}

/// Slots of the access levels `levels` that have waiters but no holder (freed in this
/// transaction, or left over by a crash or a failure).
pub async fn free_slots_with_waiters(
    conn: &mut PgConnection,
    levels: &[AccessLevelKey],
) -> Result<Vec<SlotKey>, sqlx::Error> {
    let (servers, access_levels) = level_columns(levels);
    let slots: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT DISTINCT w.server, w.access_level_id, w.zone_id FROM waiting_bookings w
           JOIN unnest($1::text[], $2::text[]) AS l(s, a)
             ON w.server = l.s AND w.access_level_id = l.a
          WHERE NOT EXISTS (SELECT 1 FROM permissions p
                             WHERE p.server = w.server
                               AND p.access_level_id = w.access_level_id
                               AND p.zone_id = w.zone_id)
          ORDER BY 1, 2, 3",
    )
    .bind(servers)
    .bind(access_levels)
    .fetch_all(conn)
    .await?;
    Ok(slots
        .into_iter()
        .map(|(server, access_level, zone)| SlotKey {
            level: AccessLevelKey {
                server,
                access_level,
            },
            zone,
        })
        .collect())
}

/// Removes and returns `building`'s permissions of the access levels `levels` whose date is
/// before `today` (the building's local date: another building on the same server clears on its
/// own clock).
pub async fn take_ended_permissions(
    conn: &mut PgConnection,
    levels: &[AccessLevelKey],
    building: &str,
    today: NaiveDate,
) -> Result<Vec<Held>, sqlx::Error> {
    let rows = take_ended(conn, "permissions", HELD_COLUMNS, levels, building, today).await?;
    rows.iter().map(held_from_row).collect()
}

/// Removes and returns `building`'s waits of the access levels `levels` whose date is before
/// `today`.
pub async fn take_ended_waits(
    conn: &mut PgConnection,
    levels: &[AccessLevelKey],
    building: &str,
    today: NaiveDate,
) -> Result<Vec<Waiting>, sqlx::Error> {
    let rows = take_ended(
        conn,
        "waiting_bookings",
        WAITING_COLUMNS,
        levels,
        building,
        today,
    )
    .await?;
    rows.iter().map(waiting_from_row).collect()
}

/// The one statement of [`take_ended_permissions`] and [`take_ended_waits`]: both tables date
/// their rows the same way.
async fn take_ended(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    levels: &[AccessLevelKey],
    building: &str,
    today: NaiveDate,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let (servers, access_levels) = level_columns(levels);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} USING unnest($1::text[], $2::text[]) AS l(s, a)
          WHERE server = l.s AND access_level_id = l.a AND building_id = $3 AND local_date < $4
         RETURNING {columns}"
    )))
    .bind(servers)
    .bind(access_levels)
    .bind(building)
    .bind(today)
    .fetch_all(conn)
    .await
}

/// Access levels of a building with a permission or a wait dated before `today` (uses the date
/// indexes: the clearing's cost follows the expired rows, not all rows).
pub async fn levels_with_ended(
    conn: &mut PgConnection,
    building: &str,
    today: NaiveDate,
) -> Result<Vec<AccessLevelKey>, sqlx::Error> {
    let levels: Vec<(String, String)> = sqlx::query_as(
        "SELECT server, access_level_id FROM permissions WHERE building_id = $1 AND local_date < $2
         UNION
         SELECT server, access_level_id FROM waiting_bookings WHERE building_id = $1 AND local_date < $2
         ORDER BY 1, 2",
    )
    .bind(building)
    .bind(today)
    .fetch_all(conn)
    .await?;
    Ok(levels.into_iter().map(level_key).collect())
}

/// Access levels a building's bookings hold or wait for (for reconciliation).
pub async fn levels_of_building(
    conn: &mut PgConnection,
    building: &str,
) -> Result<Vec<AccessLevelKey>, sqlx::Error> {
    let levels: Vec<(String, String)> = sqlx::query_as(
        "SELECT server, access_level_id FROM permissions WHERE building_id = $1
         UNION
         SELECT server, access_level_id FROM waiting_bookings WHERE building_id = $1
         ORDER BY 1, 2",
    )
    .bind(building)
    .fetch_all(conn)
    .await?;
    Ok(levels.into_iter().map(level_key).collect())
}

/// `levels` as the two array parameters (servers, access levels) the batched statements join
/// with `unnest`.
pub(crate) fn level_columns(levels: &[AccessLevelKey]) -> (Vec<&str>, Vec<&str>) {
    levels
        .iter()
        .map(|l| (l.server.as_str(), l.access_level.as_str()))
        .unzip()
}

fn level_key((server, access_level): (String, String)) -> AccessLevelKey {
    AccessLevelKey {
        server,
        access_level,
    }
}
