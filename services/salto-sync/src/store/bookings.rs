//! What this service knows of bookings beside the ledger: the last outcome decided for each
//! (`booking_outcomes`), the latest snapshots as it reads them (`booking_snapshots`, written by
//! `platform::snapshots`), and the buildings' time zones for the nightly clearing.

use std::collections::BTreeSet;

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
) -> Result<BTreeSet<String>, sqlx::Error> {
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
