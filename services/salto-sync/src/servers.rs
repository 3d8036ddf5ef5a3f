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
//! Clients are built on first use and kept, and built again when a server's stored settings
//! change (a rotated key): [`platform::stored_clients`]. The rows behind all this are kept by [`crate::store::servers`].

use std::sync::Arc;
use std::time::Duration;

use contracts::{SaltoAuthKind, SaltoConnection, sealed_fields};
use platform::bulkhead::{Bulkhead, Bulkheads};
use platform::secrets::{OpenError, Sealer};
use platform::stored_clients::{StoredClientError, StoredClients};
use salto_ship::{ClientBuildError, ShipAuth, ShipClient, ShipSettings};
use serde_json::Value;
use sqlx::PgConnection;

use crate::store;

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

/// Every server's client, and its bulkhead (each client reports its calls to it).
pub struct Servers {
    default: Option<(String, ShipClient)>,
    sealer: Option<Arc<Sealer>>,
    own: StoredClients<ShipClient>,
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
            own: StoredClients::default(),
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

    /// The client of server `key`, its stored settings read on `conn` (the deployment default's
    /// come from the configuration, not the database).
    pub async fn client_reading<E>(
        &self,
        conn: &mut PgConnection,
        key: &str,
    ) -> Result<ShipClient, E>
    where
        E: From<sqlx::Error> + From<ServerError>,
    {
        let stored = if self.default_key() == Some(key) {
            None
        } else {
            store::servers::stored(conn, key).await?
        };
        Ok(self.client(key, stored.as_ref())?)
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
        self.own
            .get_or_build(key, stored, |connection: SaltoConnection| {
                let settings =
                    ship_settings(self.sealer.as_deref(), &connection).map_err(|reason| {
                        ServerError::Secret {
                            key: key.to_owned(),
                            reason,
                        }
                    })?;
                let ship = ShipClient::new(&settings).map_err(|reason| ServerError::Client {
                    key: key.to_owned(),
                    reason,
                })?;
                tracing::info!(server = key, "SHIP client ready");
                Ok(ship.observed_by(self.bulkhead(key)))
            })
            .map_err(|error| match error {
                StoredClientError::Unreadable(reason) => ServerError::Unreadable {
                    key: key.to_owned(),
                    reason,
                },
                StoredClientError::Build(error) => error,
            })
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
    platform::secrets::reseal_stored(sealer, stored, |connection: &mut SaltoConnection| {
        [
            (connection.password.as_mut(), sealed_fields::SALTO_PASSWORD),
            (connection.key.as_mut(), sealed_fields::SALTO_KEY),
        ]
        .into_iter()
        .filter_map(|(secret, field)| secret.map(|secret| (secret, field)))
        .collect()
    })
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
