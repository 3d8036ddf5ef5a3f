//! What this service knows of bookings beside the ledger: the last outcome decided for each
//! (`booking_outcomes`), the latest snapshots as it reads them (`booking_snapshots`, written by
//! `platform::snapshots`), and the buildings' time zones for the nightly clearing.

use std::collections::{BTreeSet, HashMap};

use contracts::Envelope;
use platform::snapshots::SnapshotError;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

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

/// [`outcome_version`] of the bookings `ids`, in one statement (a booking without an outcome is
/// absent).
pub async fn outcome_versions(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT booking_id, version FROM booking_outcomes WHERE booking_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Records what was decided for booking versions, in one statement (each booking once); a
/// booking's record never goes back to an older version.
pub async fn record_outcomes(
    conn: &mut PgConnection,
    outcomes: &[(Uuid, i64, &str)],
) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = outcomes.iter().map(|o| o.0).collect();
    let versions: Vec<i64> = outcomes.iter().map(|o| o.1).collect();
    let names: Vec<&str> = outcomes.iter().map(|o| o.2).collect();
    sqlx::query(
        "INSERT INTO booking_outcomes (booking_id, version, outcome)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[])
         ON CONFLICT (booking_id) DO UPDATE
            SET version = EXCLUDED.version, outcome = EXCLUDED.outcome, updated_at = now()
          WHERE booking_outcomes.version <= EXCLUDED.version",
    )
    .bind(ids)
    .bind(versions)
    .bind(names)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The latest snapshots held for the bookings `ids` (a booking without one is absent).
pub async fn snapshots(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Envelope>, SnapshotError> {
    let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT booking_id, envelope FROM booking_snapshots WHERE booking_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for (booking_id, body) in rows {
        if let Some(envelope) = platform::snapshots::decode(booking_id, Some(body))? {
            found.insert(booking_id, envelope);
        }
    }
    Ok(found)
}

/// The latest snapshot held for a booking, read in the caller's transaction.
pub async fn snapshot(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<Envelope>, SnapshotError> {
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
) -> Result<Option<Envelope>, SnapshotError> {
    let found: Option<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT s.booking_id, s.envelope FROM booking_snapshots s
           LEFT JOIN permissions p ON p.booking_id = s.booking_id AND p.access_level_id = $2
          WHERE s.envelope #>> '{data,building,id}' = $1
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

/// The zones connecX manages for the buildings with bookings on each of `access_levels`: every
/// zone any facility booking of theirs named. One statement for all of them (it reads the
/// snapshots twice, whatever their number).
pub async fn managed_zones(
    conn: &mut PgConnection,
    access_levels: &[&str],
) -> Result<HashMap<String, BTreeSet<String>>, sqlx::Error> {
    let pairs: Vec<(String, String)> = sqlx::query_as(
        "WITH on_level AS (
              SELECT DISTINCT envelope #>> '{data,apartment,access_level_id}' AS access_level,
                              envelope #>> '{data,building,id}' AS building
                FROM booking_snapshots
               WHERE envelope #>> '{data,apartment,access_level_id}' = ANY($1)),
              named AS (
              SELECT DISTINCT envelope #>> '{data,building,id}' AS building,
                              envelope #>> '{data,facility,zone_id}' AS zone
                FROM booking_snapshots
               WHERE envelope #>> '{data,facility,zone_id}' IS NOT NULL
                 AND envelope #>> '{data,building,id}' IN (SELECT building FROM on_level))
         SELECT DISTINCT on_level.access_level, named.zone
           FROM on_level JOIN named USING (building)",
    )
    .bind(access_levels)
    .fetch_all(conn)
    .await?;
    let mut zones: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (access_level, zone) in pairs {
        zones.entry(access_level).or_default().insert(zone);
    }
    Ok(zones)
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

/// Every building seen in a booking, with its time zone.
pub async fn buildings(conn: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT building_id, timezone FROM buildings ORDER BY building_id")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("building_id")?, r.try_get("timezone")?)))
        .collect()
}
