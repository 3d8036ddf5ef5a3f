//! Which iPassan tenant a visitor lives in, and one client per tenant (docs/architecture.md,
//! "Many buildings").
//!
//! A building either has its own tenant (an operator connected it: `ipassan_connection.changed.v1`,
//! stored in `building_connections` and `tenants`) or uses the deployment default
//! (`CONNECX__IPASSAN__*`). A visitor stays in the tenant it was made in (`visitor_access.tenant_key`)
//! even when its building moves on, so it is changed and revoked where it is.
//!
//! Clients are built on first use and kept, and built again when a tenant's stored settings
//! change (a rotated secret): [`platform::stored_clients`].

use std::sync::Arc;
use std::time::Duration;

use contracts::{IpassanConnection, SealedSecret, sealed_fields};
use ipassan_client::{IpassanClient, IpassanError, TenantSettings};
use platform::bulkhead::{Bulkhead, Bulkheads};
use platform::secrets::{OpenError, Sealer};
use platform::stored_clients::{StoredClientError, StoredClients};

/// `visitor_access.tenant_key` of the deployment default (a stored NULL means the same).
pub const DEFAULT_TENANT: &str = "default";

/// A tenant as the rules name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// The deployment default (`CONNECX__IPASSAN__*`).
    Default,
    /// A building's own tenant, by [`tenant_key`].
    Own(String),
}

impl Tenant {
    /// As stored in `visitor_access.tenant_key`.
    pub fn from_stored(key: Option<&str>) -> Tenant {
        match key {
            None | Some(DEFAULT_TENANT) => Tenant::Default,
            Some(key) => Tenant::Own(key.to_owned()),
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Tenant::Default => DEFAULT_TENANT,
            Tenant::Own(key) => key,
        }
    }
}

/// A tenant's key: its base URL (without a trailing slash) and the client id connecX uses
/// there. Two buildings with the same key share one client.
pub fn tenant_key(connection: &IpassanConnection) -> String {
    format!(
        "{}#{}",
        connection.base_url.trim().trim_end_matches('/'),
        connection.client_id.trim()
    )
}

/// Why no client could be had for a tenant.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(
        "the visitor belongs to the deployment's default iPassan, and none is configured \
         (CONNECX__IPASSAN__BASE_URL)"
    )]
    NoDefault,
    #[error("iPassan tenant {0} is not known to this worker (its connection event never arrived)")]
    Unknown(String),
    #[error("the stored settings of iPassan tenant {key} cannot be read: {reason}")]
    Unreadable { key: String, reason: String },
    #[error("the client secret of iPassan tenant {key} cannot be opened: {reason}")]
    Secret { key: String, reason: OpenError },
    #[error("cannot set up the client of iPassan tenant {key}: {reason}")]
    Client { key: String, reason: IpassanError },
}

/// One tenant's client, where it points (for logs and alerts: no credentials), and its
/// bulkhead (every call of the client reports to it).
#[derive(Clone)]
pub struct TenantClient {
    pub client: Arc<IpassanClient>,
    pub endpoint: String,
    pub bulkhead: Arc<Bulkhead>,
}

/// Every tenant's client.
pub struct Tenants {
    default: Option<TenantClient>,
    sealer: Option<Arc<Sealer>>,
    timeout: Duration,
    own: StoredClients<TenantClient>,
    bulkheads: Arc<Bulkheads>,
}

impl Tenants {
    /// `default`: the deployment default's settings, when configured. `timeout`: for the
    /// buildings' own tenants.
    pub fn new(
        default: Option<TenantSettings>,
        sealer: Option<Arc<Sealer>>,
        timeout: Duration,
        bulkheads: Arc<Bulkheads>,
    ) -> Result<Self, IpassanError> {
        let default = default
            .map(|settings| {
                let bulkhead = bulkheads.of(DEFAULT_TENANT, &settings.base_url);
                IpassanClient::new(&settings).map(|client| TenantClient {
                    client: Arc::new(client.observed_by(bulkhead.clone())),
                    endpoint: settings.base_url.clone(),
                    bulkhead,
                })
            })
            .transpose()?;
        Ok(Self {
            default,
            sealer,
            timeout,
            own: StoredClients::default(),
            bulkheads,
        })
    }

    /// The bulkheads of every tenant (for the outage alerts).
    pub fn bulkheads(&self) -> &Arc<Bulkheads> {
        &self.bulkheads
    }

    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The client of `tenant`. For a building's own tenant, `stored` is its row of `tenants`
    /// (`None` if there is none).
    pub fn client(
        &self,
        tenant: &Tenant,
        stored: Option<&serde_json::Value>,
    ) -> Result<TenantClient, TenantError> {
        let key = match tenant {
            Tenant::Default => return self.default.clone().ok_or(TenantError::NoDefault),
            Tenant::Own(key) => key,
        };
        let stored = stored.ok_or_else(|| TenantError::Unknown(key.clone()))?;
        self.own
            .get_or_build(key, stored, |connection: IpassanConnection| {
                let secret = open_secret(self.sealer.as_deref(), &connection.client_secret)
                    .map_err(|reason| TenantError::Secret {
                        key: key.clone(),
                        reason,
                    })?;
                let settings = TenantSettings {
                    base_url: connection.base_url.clone(),
                    client_id: connection.client_id,
                    client_secret: secret,
                    timeout: self.timeout,
                };
                let bulkhead = self.bulkheads.of(key, &connection.base_url);
                let client =
                    IpassanClient::new(&settings).map_err(|reason| TenantError::Client {
                        key: key.clone(),
                        reason,
                    })?;
                tracing::info!(tenant = key, "iPassan client ready");
                Ok(TenantClient {
                    client: Arc::new(client.observed_by(bulkhead.clone())),
                    endpoint: connection.base_url,
                    bulkhead,
                })
            })
            .map_err(|error| match error {
                StoredClientError::Unreadable(reason) => TenantError::Unreadable {
                    key: key.clone(),
                    reason,
                },
                StoredClientError::Build(error) => error,
            })
    }
}

fn open_secret(sealer: Option<&Sealer>, sealed: &SealedSecret) -> Result<String, OpenError> {
    platform::secrets::open_with(sealer, sealed, sealed_fields::IPASSAN_CLIENT_SECRET)
        .map(|opened| opened.secret.expose().to_owned())
}

/// Opens the client secret of a stored tenant connection: `Ok(Some(settings))` with the secret
/// re-sealed under the current key when it was sealed under a previous one.
pub fn reseal(
    sealer: Option<&Sealer>,
    stored: &serde_json::Value,
) -> Result<Option<serde_json::Value>, String> {
    platform::secrets::reseal_stored(sealer, stored, |connection: &mut IpassanConnection| {
        vec![(
            &mut connection.client_secret,
            sealed_fields::IPASSAN_CLIENT_SECRET,
        )]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_its_base_url_and_client_and_null_is_the_default() {
        let connection = IpassanConnection {
            base_url: " https://harbour.ipassan.example/ ".into(),
            client_id: "connecx".into(),
            client_secret: SealedSecret("cxs1.x.y".into()),
            site: "s".into(),
        };
        assert_eq!(
            tenant_key(&connection),
            "https://harbour.ipassan.example#connecx"
        );
        assert_eq!(Tenant::from_stored(None), Tenant::Default);
        assert_eq!(Tenant::from_stored(Some("default")), Tenant::Default);
        assert_eq!(
            Tenant::from_stored(Some("https://x#c")),
            Tenant::Own("https://x#c".into())
        );
    }
}
