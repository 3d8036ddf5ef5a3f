//! The ledger's SQL. Every function runs on the caller's connection — in practice the
//! transaction that holds the access level's advisory lock — so reads and writes of one operation
//! see and commit one state; all but [`note_unrecorded`], which must commit on its own.

use chrono::NaiveDate;
use contracts::Envelope;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{AccessLevelKey, Held, LocalWindow, SlotKey, Waiting};
use salto_ship::{DaySeconds, Period, ZonePermission};

/// Waits at most this long for another replica's lock before the step is retried later.
pub async fn set_lock_timeout(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL lock_timeout = '30s'")
        .execute(conn)
        .await
        .map(|_| ())
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

/// Like [`lock`], but gives up at once when another session holds it.
pub async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .fetch_one(conn)
        .await
}

fn secs(value: i32) -> DaySeconds {
    u32::try_from(value).unwrap_or(0)
}

fn held_from_row(row: &PgRow) -> Result<Held, sqlx::Error> {
    let timetable: i32 = row.try_get("timetable_id")?;
    Ok(Held {
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
        timetable: u32::try_from(timetable).unwrap_or(0),
        period: Period {
            start: row.try_get("period_start")?,
            end: row.try_get("period_end")?,
        },
    })
}

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

const HELD_COLUMNS: &str = "server, building_id, access_level_id, zone_id, booking_id, version, local_date, starts_secs, ends_secs, timetable_id, period_start, period_end";
const WAITING_COLUMNS: &str = "server, building_id, access_level_id, zone_id, booking_id, version, local_date, starts_secs, ends_secs";

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

pub async fn held_by_booking(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<Held>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HELD_COLUMNS} FROM permissions WHERE booking_id = $1"
    )))
    .bind(booking_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(held_from_row).transpose()
}

pub async fn waiting_booking(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<Waiting>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {WAITING_COLUMNS} FROM waiting_bookings WHERE booking_id = $1"
    )))
    .bind(booking_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(waiting_from_row).transpose()
}

/// Every permission the ledger holds in an access level (what Salto must show for it).
pub async fn held_in_level(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
) -> Result<Vec<Held>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HELD_COLUMNS} FROM permissions WHERE server = $1 AND access_level_id = $2 ORDER BY zone_id"
    )))
    .bind(&level.server)
    .bind(&level.access_level)
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

/// Slots of an access level that have waiters but no holder (left over by a crash or a failure).
pub async fn free_slots_with_waiters(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
) -> Result<Vec<SlotKey>, sqlx::Error> {
    let zones: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT w.zone_id FROM waiting_bookings w
          WHERE w.server = $1 AND w.access_level_id = $2
            AND NOT EXISTS (SELECT 1 FROM permissions p
                             WHERE p.server = w.server
                               AND p.access_level_id = w.access_level_id
                               AND p.zone_id = w.zone_id)
          ORDER BY 1",
    )
    .bind(&level.server)
    .bind(&level.access_level)
    .fetch_all(conn)
    .await?;
    Ok(zones
        .into_iter()
        .map(|zone| SlotKey {
            level: level.clone(),
            zone,
        })
        .collect())
}

/// Removes and returns `building`'s permissions of an access level whose date is before `today`
/// (the building's local date: another building on the same server clears on its own clock).
pub async fn take_ended_permissions(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
    building: &str,
    today: NaiveDate,
) -> Result<Vec<Held>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM permissions
          WHERE server = $1 AND access_level_id = $2 AND building_id = $3 AND local_date < $4
         RETURNING {HELD_COLUMNS}"
    )))
    .bind(&level.server)
    .bind(&level.access_level)
    .bind(building)
    .bind(today)
    .fetch_all(conn)
    .await?;
    rows.iter().map(held_from_row).collect()
}

/// Removes and returns `building`'s waits of an access level whose date is before `today`.
pub async fn take_ended_waits(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
    building: &str,
    today: NaiveDate,
) -> Result<Vec<Waiting>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM waiting_bookings
          WHERE server = $1 AND access_level_id = $2 AND building_id = $3 AND local_date < $4
         RETURNING {WAITING_COLUMNS}"
    )))
    .bind(&level.server)
    .bind(&level.access_level)
    .bind(building)
    .bind(today)
    .fetch_all(conn)
    .await?;
    rows.iter().map(waiting_from_row).collect()
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

fn level_key((server, access_level): (String, String)) -> AccessLevelKey {
    AccessLevelKey {
        server,
        access_level,
    }
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

/// The last outcome's version for a booking.
pub async fn outcome_version(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM booking_outcomes WHERE booking_id = $1")
        .bind(booking_id)
        .fetch_optional(conn)
        .await
}

/// Records what was decided for a booking version (never goes back to an older version).
pub async fn record_outcome(
    conn: &mut PgConnection,
    booking_id: Uuid,
    version: i64,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO booking_outcomes (booking_id, version, outcome) VALUES ($1, $2, $3)
         ON CONFLICT (booking_id) DO UPDATE
            SET version = EXCLUDED.version, outcome = EXCLUDED.outcome, updated_at = now()
          WHERE booking_outcomes.version <= EXCLUDED.version",
    )
    .bind(booking_id)
    .bind(version)
    .bind(outcome)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The latest snapshot held for a booking, read in the caller's transaction.
pub async fn snapshot(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<Envelope>, platform::snapshots::SnapshotError> {
    let body: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT envelope FROM booking_snapshots WHERE booking_id = $1")
            .bind(booking_id)
            .fetch_optional(conn)
            .await?;
    platform::snapshots::decode(booking_id, body)
}

/// The latest snapshot of a booking holding `access_level` of `building`, or else of any booking
/// of the building: what an alert about the access level is sent with (it names the managers).
pub async fn snapshot_for_alert(
    conn: &mut PgConnection,
    building: &str,
    access_level: &str,
) -> Result<Option<Envelope>, platform::snapshots::SnapshotError> {
    let found: Option<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT s.booking_id, s.envelope FROM booking_snapshots s
           LEFT JOIN permissions p ON p.booking_id = s.booking_id AND p.access_level_id = $2
          WHERE s.envelope->'data'->'building'->>'id' = $1
          ORDER BY (p.booking_id IS NOT NULL) DESC, s.updated_at DESC
          LIMIT 1",
    )
    .bind(building)
    .bind(access_level)
    .fetch_optional(conn)
    .await?;
    match found {
        Some((booking_id, body)) => platform::snapshots::decode(booking_id, Some(body)),
        None => Ok(None),
    }
}

/// The zones connecX manages for the buildings with bookings on `access_level`: every zone any
/// facility booking of theirs named.
pub async fn managed_zones(
    conn: &mut PgConnection,
    access_level: &str,
) -> Result<std::collections::BTreeSet<String>, sqlx::Error> {
    let zones: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT s.envelope #>> '{data,facility,zone_id}' FROM booking_snapshots s
          WHERE s.envelope #>> '{data,building,id}' IN (
                SELECT DISTINCT envelope #>> '{data,building,id}' FROM booking_snapshots
                 WHERE envelope #>> '{data,apartment,access_level_id}' = $1)
            AND s.envelope #>> '{data,facility,zone_id}' IS NOT NULL",
    )
    .bind(access_level)
    .fetch_all(conn)
    .await?;
    Ok(zones.into_iter().collect())
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

/// Remembers a building's time zone for the nightly clearing.
pub async fn remember_building(
    conn: &mut PgConnection,
    building: &str,
    timezone: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO buildings (building_id, timezone) VALUES ($1, $2)
         ON CONFLICT (building_id) DO UPDATE SET timezone = EXCLUDED.timezone, updated_at = now()
          WHERE buildings.timezone <> EXCLUDED.timezone",
    )
    .bind(building)
    .bind(timezone)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn buildings(conn: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT building_id, timezone FROM buildings ORDER BY building_id")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("building_id")?, r.try_get("timezone")?)))
        .collect()
}

/// Whether the clearing of `(building, local_date)` already ran (a cheap look before claiming).
pub async fn cleaner_ran(
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
pub async fn claim_cleaner_run(
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

pub async fn finish_cleaner_run(
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

/// The timetable a server's pool holds for an interval set, share-locked until the caller's
/// transaction ends: the pool's clean-up (which locks rows `FOR UPDATE SKIP LOCKED`) then leaves
/// it alone while a step is about to use it.
pub async fn timetable_for_key(
    conn: &mut PgConnection,
    server: &str,
    key: &str,
) -> Result<Option<u32>, sqlx::Error> {
    let id: Option<i32> = sqlx::query_scalar(
        "SELECT timetable_id FROM timetables WHERE server = $1 AND interval_key = $2 FOR SHARE",
    )
    .bind(server)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(id.and_then(|id| u32::try_from(id).ok()))
}

/// Every timetable ID a server's pool knows is taken (ours or someone else's).
pub async fn taken_timetable_ids(
    conn: &mut PgConnection,
    server: &str,
) -> Result<Vec<u32>, sqlx::Error> {
    let ids: Vec<i32> =
        sqlx::query_scalar("SELECT timetable_id FROM timetables WHERE server = $1 ORDER BY 1")
            .bind(server)
            .fetch_all(conn)
            .await?;
    Ok(ids
        .into_iter()
        .filter_map(|id| u32::try_from(id).ok())
        .collect())
}

/// How many of a server's timetable IDs are connecX's, and how many someone else's.
pub async fn pool_counts(conn: &mut PgConnection, server: &str) -> Result<(u32, u32), sqlx::Error> {
    let (ours, others): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE interval_key IS NOT NULL),
                count(*) FILTER (WHERE interval_key IS NULL)
           FROM timetables WHERE server = $1",
    )
    .bind(server)
    .fetch_one(conn)
    .await?;
    Ok((
        u32::try_from(ours).unwrap_or(u32::MAX),
        u32::try_from(others).unwrap_or(u32::MAX),
    ))
}

/// Records a timetable ID of a server: ours for `key`, or (`None`) taken in Salto by someone
/// else.
pub async fn record_timetable(
    conn: &mut PgConnection,
    server: &str,
    id: u32,
    key: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO timetables (server, timetable_id, interval_key) VALUES ($1, $2, $3)
         ON CONFLICT (server, timetable_id) DO UPDATE SET interval_key = EXCLUDED.interval_key",
    )
    .bind(server)
    .bind(id as i32)
    .bind(key)
    .execute(conn)
    .await
    .map(|_| ())
}

/// connecX's timetables of a server that no permission of the ledger (nor a write a failed step
/// may have left in Salto) uses, locked for deletion. Rows a step has share-locked are skipped:
/// that step is about to use them. A delete Salto refused is not tried again for an hour.
pub async fn lock_unused_timetables(
    conn: &mut PgConnection,
    server: &str,
) -> Result<Vec<u32>, sqlx::Error> {
    let ids: Vec<i32> = sqlx::query_scalar(
        "SELECT t.timetable_id FROM timetables t
          WHERE t.server = $1 AND t.interval_key IS NOT NULL
            AND (t.delete_refused_at IS NULL OR t.delete_refused_at < now() - interval '1 hour')
            AND NOT EXISTS (SELECT 1 FROM permissions p
                             WHERE p.server = t.server AND p.timetable_id = t.timetable_id)
            AND NOT EXISTS (SELECT 1 FROM unrecorded_writes u
                             WHERE u.server = t.server AND u.timetable_id = t.timetable_id)
          ORDER BY t.timetable_id
          FOR UPDATE SKIP LOCKED",
    )
    .bind(server)
    .fetch_all(&mut *conn)
    .await?;
    // Looked at again by a new statement, which sees everything committed until now: a step that
    // took one of these rows before the lock above has committed since, and its permission is
    // visible here.
    let ids: Vec<i32> = sqlx::query_scalar(
        "SELECT id FROM unnest($2::int[]) AS id
          WHERE NOT EXISTS (SELECT 1 FROM permissions p WHERE p.server = $1 AND p.timetable_id = id)
            AND NOT EXISTS (SELECT 1 FROM unrecorded_writes u
                             WHERE u.server = $1 AND u.timetable_id = id)
          ORDER BY id",
    )
    .bind(server)
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(ids
        .into_iter()
        .filter_map(|id| u32::try_from(id).ok())
        .collect())
}

/// Removes a timetable from a server's pool (it was deleted in Salto).
pub async fn forget_timetable(
    conn: &mut PgConnection,
    server: &str,
    id: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM timetables WHERE server = $1 AND timetable_id = $2")
        .bind(server)
        .bind(id as i32)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Notes that Salto refused to delete a timetable (a permission connecX does not own uses it).
pub async fn delete_refused(
    conn: &mut PgConnection,
    server: &str,
    id: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE timetables SET delete_refused_at = now() WHERE server = $1 AND timetable_id = $2",
    )
    .bind(server)
    .bind(id as i32)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records that a server's pool ran out; `true` the first time since it last had room (ops are
/// told once per exhaustion).
pub async fn pool_exhausted(conn: &mut PgConnection, server: &str) -> Result<bool, sqlx::Error> {
    let alerted = sqlx::query(
        "INSERT INTO pool_alerts (server) VALUES ($1)
         ON CONFLICT (server) DO UPDATE SET alerted_at = now(), cleared_at = NULL
          WHERE pool_alerts.cleared_at IS NOT NULL",
    )
    .bind(server)
    .execute(conn)
    .await?;
    Ok(alerted.rows_affected() == 1)
}

/// A server's pool has room again: the next exhaustion alerts again.
pub async fn pool_has_room(conn: &mut PgConnection, server: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE pool_alerts SET cleared_at = now() WHERE server = $1 AND cleared_at IS NULL",
    )
    .bind(server)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Notes, committed at once on a connection of its own (not the step's transaction), the
/// permissions a step is about to write for an access level: if the step then fails to commit,
/// the entries it may have left in Salto are still known to be connecX's.
pub async fn note_unrecorded(
    pool: &PgPool,
    level: &AccessLevelKey,
    permissions: &[ZonePermission],
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
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

/// The entries of an access level written by steps that did not commit.
pub async fn unrecorded(
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

/// Forgets an access level's noted writes, in the step's transaction: once it commits, the ledger
/// accounts for everything connecX wrote there.
pub async fn forget_unrecorded(
    conn: &mut PgConnection,
    level: &AccessLevelKey,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM unrecorded_writes WHERE server = $1 AND access_level_id = $2")
        .bind(&level.server)
        .bind(&level.access_level)
        .execute(conn)
        .await?;
    Ok(())
}
