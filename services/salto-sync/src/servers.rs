//! Which Salto server a building's permissions live on, and one SHIP client per server
//! (docs/architecture.md, "Many buildings").
//!
//! A building either has its own SHIP endpoint (an operator connected it:
//! `salto_connection.changed.v1`, stored in `building_connections` and `salto_servers`) or uses
//! the deployment default (`CONNECX__SALTO__*`). A server is known by its key, the normalized
//! endpoint URL ([`server_key`]); the ledger, its locks and the timetable pool are keyed by it,
//! so two buildings on one server share its rules and two servers never collide. What was
//! granted on a server is removed there, even after its building moved on.
//!
//! Clients are built on first use and kept; a server whose stored settings change (a rotated
//! key) gets a new client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::{SaltoAuthKind, SaltoConnection, SaltoConnectionChange, sealed_fields};
use platform::bulkhead::{Bulkhead, Bulkheads};
use platform::secrets::{OpenError, Sealer};
use salto_ship::{ClientBuildError, ShipAuth, ShipClient, ShipSettings};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};

/// A server's key: its SHIP URL with the scheme and host in lower case and no trailing slash.
/// `http://Salto.example:8090/` and `http://salto.example:8090` are one server.
pub fn server_key(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(parsed) => parsed.as_str().trim_end_matches('/').to_owned(),
        Err(_) => url.trim().trim_end_matches('/').to_owned(),
    }
}

/// Why no client could be had for a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("Salto server {0} is not known to this worker (its connection event never arrived)")]
    Unknown(String),
    #[error("the stored settings of Salto server {key} cannot be read: {reason}")]
    Unreadable { key: String, reason: String },
    #[error("a secret of Salto server {key} cannot be opened: {reason}")]
    Secret { key: String, reason: OpenError },
    #[error("cannot set up the SHIP client of Salto server {key}: {reason}")]
    Client {
        key: String,
        reason: ClientBuildError,
    },
}

struct Cached {
    built_from: String,
    ship: ShipClient,
}

/// Every server's client, and its bulkhead (each client reports its calls to it).
pub struct Servers {
    default: Option<(String, ShipClient)>,
    sealer: Option<Arc<Sealer>>,
    own: Mutex<HashMap<String, Cached>>,
    bulkheads: Arc<Bulkheads>,
}

impl Servers {
    pub fn new(
        default: Option<ShipSettings>,
        sealer: Option<Arc<Sealer>>,
        bulkheads: Arc<Bulkheads>,
    ) -> Result<Self, ClientBuildError> {
        let default = default
            .map(|settings| {
                let key = server_key(&settings.url);
                let bulkhead = bulkheads.of(&key, &key);
                ShipClient::new(&settings).map(|ship| (key, ship.observed_by(bulkhead)))
            })
            .transpose()?;
        Ok(Self {
            default,
            sealer,
            own: Mutex::new(HashMap::new()),
            bulkheads,
        })
    }

    /// The bulkhead of server `key` (its calls, its breaker).
    pub fn bulkhead(&self, key: &str) -> Arc<Bulkhead> {
        self.bulkheads.of(key, key)
    }

    /// Every server's bulkhead (for the outage alerts).
    pub fn bulkheads(&self) -> &Arc<Bulkheads> {
        &self.bulkheads
    }

    /// The deployment default's key, when there is one.
    pub fn default_key(&self) -> Option<&str> {
        self.default.as_ref().map(|(key, _)| key.as_str())
    }

    /// The client of server `key`. `stored` is its row of `salto_servers`, if any; the
    /// deployment default needs none (a stored row for the same URL wins: it is newer).
    pub fn client(&self, key: &str, stored: Option<&Value>) -> Result<ShipClient, ServerError> {
        let Some(stored) = stored else {
            return match &self.default {
                Some((default, ship)) if default == key => Ok(ship.clone()),
                _ => Err(ServerError::Unknown(key.to_owned())),
            };
        };
        let text = stored.to_string();
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = own.get(key).filter(|c| c.built_from == text) {
            return Ok(cached.ship.clone());
        }
        let connection: SaltoConnection =
            serde_json::from_value(stored.clone()).map_err(|e| ServerError::Unreadable {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        let settings = ship_settings(self.sealer.as_deref(), &connection).map_err(|reason| {
            ServerError::Secret {
                key: key.to_owned(),
                reason,
            }
        })?;
        let ship = ShipClient::new(&settings)
            .map_err(|reason| ServerError::Client {
                key: key.to_owned(),
                reason,
            })?
            .observed_by(self.bulkhead(key));
        tracing::info!(server = key, "SHIP client ready");
        own.insert(
            key.to_owned(),
            Cached {
                built_from: text,
                ship: ship.clone(),
            },
        );
        Ok(ship)
    }
}

/// A stored connection as the SHIP client wants it, its secrets opened.
fn ship_settings(
    sealer: Option<&Sealer>,
    connection: &SaltoConnection,
) -> Result<ShipSettings, OpenError> {
    let open = |sealed: &Option<contracts::SealedSecret>, field: &str| match sealed {
        Some(sealed) => platform::secrets::open_with(sealer, sealed, field)
            .map(|opened| opened.secret.expose().to_owned()),
        None => Ok(String::new()),
    };
    let auth = match connection.auth_kind {
        SaltoAuthKind::None => ShipAuth::None,
        SaltoAuthKind::Basic => ShipAuth::Basic {
            username: connection.username.clone().unwrap_or_default(),
            password: open(&connection.password, sealed_fields::SALTO_PASSWORD)?,
        },
        SaltoAuthKind::Key => ShipAuth::Key(open(&connection.key, sealed_fields::SALTO_KEY)?),
    };
    Ok(ShipSettings {
        url: connection.url.trim().to_owned(),
        auth,
        timeout: Duration::from_secs(connection.timeout_secs),
    })
}

/// Opens the secrets of a stored server connection: `Ok(Some(settings))` with them re-sealed
/// under the current key when one was sealed under a previous key.
pub fn reseal(sealer: Option<&Sealer>, stored: &Value) -> Result<Option<Value>, String> {
    let mut connection: SaltoConnection =
        serde_json::from_value(stored.clone()).map_err(|e| e.to_string())?;
    let mut resealed_any = false;
    for (secret, field) in [
        (&mut connection.password, sealed_fields::SALTO_PASSWORD),
        (&mut connection.key, sealed_fields::SALTO_KEY),
    ] {
        let Some(sealed) = secret.as_ref() else {
            continue;
        };
        let opened =
            platform::secrets::open_with(sealer, sealed, field).map_err(|e| e.to_string())?;
        if let Some(resealed) = opened.resealed {
            *secret = Some(resealed);
            resealed_any = true;
        }
    }
    if !resealed_any {
        return Ok(None);
    }
    serde_json::to_value(&connection)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The building's own connection as this worker holds it: its version, and its server (`None`:
/// back on the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldConnection {
    pub version: i64,
    pub server: Option<String>,
}

/// Stores a building's Salto connection change unless a newer version is held, and the server's
/// settings unless newer ones are held. Returns whether the building's connection changed.
pub async fn record_connection(
    conn: &mut PgConnection,
    version: i64,
    occurred_at: DateTime<Utc>,
    change: &SaltoConnectionChange,
) -> Result<bool, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let server = change.connection.as_ref().map(|c| server_key(&c.url));
    let changed = sqlx::query(
        "INSERT INTO building_connections (building_id, version, server) VALUES ($1, $2, $3)
         ON CONFLICT (building_id) DO UPDATE
            SET version = EXCLUDED.version, server = EXCLUDED.server, updated_at = now()
          WHERE building_connections.version < EXCLUDED.version",
    )
    .bind(&change.building_id)
    .bind(version)
    .bind(server.as_deref())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if let (Some(server), Some(connection)) = (&server, &change.connection) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_its_normalized_url() {
        assert_eq!(
            server_key(" http://Salto.Example:8090/ "),
            "http://salto.example:8090"
        );
        assert_eq!(
            server_key("http://salto.example:8090"),
            "http://salto.example:8090"
        );
        assert_eq!(
            server_key("https://salto.example/ship/"),
            "https://salto.example/ship"
        );
        assert_ne!(
            server_key("http://a.example/"),
            server_key("http://b.example/")
        );
    }
}
