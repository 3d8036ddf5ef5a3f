//! Buildings' Salto connections as this worker holds them (`building_connections`: the version
//! and the server of each) and the servers' stored settings, secrets sealed (`salto_servers`).
//! Rows from before servers were known carry the empty server and are adopted by the default.

use chrono::{DateTime, Utc};
use contracts::SaltoConnection;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};

/// The building's own connection as this worker holds it: its version, and its server (`None`:
/// back on the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldConnection {
    pub version: i64,
    pub server: Option<String>,
}

/// Stores version `version` of a building's Salto connection — on `server` with `connection`'s
/// settings, or (`None`) back on the default — unless a newer version is held, and the server's
/// settings unless newer ones are held. Returns whether the building's connection changed.
pub async fn record_connection(
    conn: &mut PgConnection,
    building_id: &str,
    version: i64,
    occurred_at: DateTime<Utc>,
    server: Option<&str>,
    connection: Option<&SaltoConnection>,
) -> Result<bool, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let changed = sqlx::query(
        "INSERT INTO building_connections (building_id, version, server) VALUES ($1, $2, $3)
         ON CONFLICT (building_id) DO UPDATE
            SET version = EXCLUDED.version, server = EXCLUDED.server, updated_at = now()
          WHERE building_connections.version < EXCLUDED.version",
    )
    .bind(building_id)
    .bind(version)
    .bind(server)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if let (Some(server), Some(connection)) = (server, connection) {
        sqlx::query(
            "INSERT INTO salto_servers (server, connection, changed_at) VALUES ($1, $2, $3)
             ON CONFLICT (server) DO UPDATE
                SET connection = EXCLUDED.connection, changed_at = EXCLUDED.changed_at,
                    updated_at = now()
              WHERE salto_servers.changed_at <= EXCLUDED.changed_at",
        )
        .bind(server)
        .bind(sqlx::types::Json(connection))
        .bind(occurred_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// A building's own connection, if it ever had one.
pub async fn building_connection(
    db: impl PgExecutor<'_>,
    building_id: &str,
) -> Result<Option<HeldConnection>, sqlx::Error> {
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT version, server FROM building_connections WHERE building_id = $1")
            .bind(building_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(version, server)| HeldConnection { version, server }))
}

/// A server's stored settings (secrets sealed).
pub async fn stored(db: impl PgExecutor<'_>, server: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT connection FROM salto_servers WHERE server = $1")
        .bind(server)
        .fetch_optional(db)
        .await
}

/// Every stored server: key and settings.
pub async fn all_stored(db: impl PgExecutor<'_>) -> Result<Vec<(String, Value)>, sqlx::Error> {
    sqlx::query_as("SELECT server, connection FROM salto_servers ORDER BY server")
        .fetch_all(db)
        .await
}

/// Writes back a server's settings whose secrets were re-sealed, unless they changed meanwhile.
pub async fn reseal_stored(
    db: impl PgExecutor<'_>,
    server: &str,
    before: &Value,
    after: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE salto_servers SET connection = $3 WHERE server = $1 AND connection = $2")
        .bind(server)
        .bind(before)
        .bind(after)
        .execute(db)
        .await
        .map(|_| ())
}

/// Gives the rows written before servers were known (all on the deployment default) the
/// default's key. Returns how many rows it adopted.
pub async fn adopt_rows_of_the_default(pool: &PgPool, default: &str) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut adopted = 0;
    for table in [
        "permissions",
        "waiting_bookings",
        "unrecorded_writes",
        "timetables",
    ] {
        adopted += sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET server = $1 WHERE server = ''"
        )))
        .bind(default)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(adopted)
}

/// Whether rows without a server are left (written before servers were known, and no default
/// to give them).
pub async fn rows_without_server(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM permissions WHERE server = '')
             OR EXISTS (SELECT 1 FROM waiting_bookings WHERE server = '')",
    )
    .fetch_one(pool)
    .await
}
