//! `building_connections`: a building's own connection to iPassan or Salto, as an operator set it
//! (secrets sealed), and its version.
//!
//! One row per (building, system). Every PUT and DELETE adds one to the version, and the same
//! transaction puts the change in the outbox, so the worker that uses the system learns each
//! version in order. A DELETE keeps the row with no settings: the building is back on the
//! deployment default, and the version still counts on.

use chrono::{DateTime, Utc};
use contracts::AccessSystem;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};

/// A building's connection as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub building_id: String,
    pub system: String,
    pub version: i64,
    /// `contracts::IpassanConnection` / `SaltoConnection` as JSON (secrets sealed); `None` when
    /// the building is back on the default.
    pub settings: Option<Value>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// What saving a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub version: i64,
    /// The building had a connection of its own before this change.
    pub was_connected: bool,
}

pub async fn find(
    db: impl PgExecutor<'_>,
    building_id: &str,
    system: AccessSystem,
) -> Result<Option<ConnectionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT building_id, system, version, settings, updated_by, updated_at
           FROM building_connections WHERE building_id = $1 AND system = $2",
    )
    .bind(building_id)
    .bind(system.as_str())
    .fetch_optional(db)
    .await
}

/// Stores `settings` (`None`: back to the default) as the connection's next version. The row is
/// locked while the transaction lasts, so two operators' changes get two versions, in order.
pub async fn save(
    conn: &mut PgConnection,
    building_id: &str,
    system: AccessSystem,
    settings: Option<&Value>,
    updated_by: &str,
) -> Result<Saved, sqlx::Error> {
    let was_connected: Option<bool> = sqlx::query_scalar(
        "SELECT settings IS NOT NULL FROM building_connections
          WHERE building_id = $1 AND system = $2 FOR UPDATE",
    )
    .bind(building_id)
    .bind(system.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO building_connections (building_id, system, version, settings, updated_by)
         VALUES ($1, $2, 1, $3, $4)
         ON CONFLICT (building_id, system) DO UPDATE
            SET version = building_connections.version + 1, settings = EXCLUDED.settings,
                updated_by = EXCLUDED.updated_by, updated_at = now()
         RETURNING version",
    )
    .bind(building_id)
    .bind(system.as_str())
    .bind(settings)
    .bind(updated_by)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Saved {
        version,
        was_connected: was_connected.unwrap_or(false),
    })
}

/// Every connection that holds settings (and so, maybe, sealed secrets).
pub async fn all_connected(db: impl PgExecutor<'_>) -> Result<Vec<ConnectionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT building_id, system, version, settings, updated_by, updated_at
           FROM building_connections WHERE settings IS NOT NULL ORDER BY building_id, system",
    )
    .fetch_all(db)
    .await
}

/// Writes back settings whose secrets were re-sealed under the current key, unless the row
/// changed meanwhile. The version stays: the connection itself did not change.
pub async fn reseal(
    db: impl PgExecutor<'_>,
    row: &ConnectionRow,
    settings: &Value,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE building_connections SET settings = $4
          WHERE building_id = $1 AND system = $2 AND version = $3",
    )
    .bind(&row.building_id)
    .bind(&row.system)
    .bind(row.version)
    .bind(settings)
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}
