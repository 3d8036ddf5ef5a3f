//! The service's settings (the README, "Configuration"): the sections every service shares
//! ([`SharedSettings`]: database, broker, log, health port and retry tiers, under their usual
//! keys), `CONNECX__IPASSAN__*` for the deployment's default iPassan tenant (optional: a
//! deployment whose buildings all have their own needs none), and `CONNECX__SECRETS__*` to open
//! the buildings' own tenants' sealed secrets. Checked at start, so a bad key stops the service
//! with a message naming its environment variable instead of failing on the first booking.

use std::fmt;

use serde::Deserialize;

use platform::config::{ConfigError, SharedSettings, Validate};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `CONNECX__DATABASE__*`, `CONNECX__AMQP__*`, `CONNECX__LOG__*`, `CONNECX__HEALTH__*` (the
    /// `/healthz`, `/readyz`, `/metrics` port; off when unset) and `CONNECX__RETRY__*`.
    #[serde(flatten)]
    pub shared: SharedSettings,
    /// The deployment default, for buildings without a tenant of their own.
    #[serde(default)]
    pub ipassan: Option<IpassanSettings>,
    #[serde(default)]
    pub secrets: platform::secrets::SecretsSettings,
    /// `CONNECX__CONNECTIONS__*`: each tenant's bulkhead.
    #[serde(default)]
    pub connections: platform::bulkhead::ConnectionSettings,
    /// `CONNECX__RETENTION__*`: how long PINs and visitors' personal data are kept.
    #[serde(default)]
    pub retention: platform::retention::RetentionSettings,
    /// `CONNECX__BATCH__*`: the bookings of one tenant handled together.
    #[serde(default)]
    pub batch: platform::batch::BatchSettings,
}

/// ipassan-sync's prefetch unless the deployment sets `CONNECX__AMQP__PREFETCH`: a message in
/// hand waits for its batch without a database connection, and batches of 32 need that many
/// delivered at once (README, Performance).
pub const DEFAULT_PREFETCH: u16 = 64;

impl Validate for Settings {
    fn service_defaults() -> &'static [(&'static str, i64)] {
        &[("amqp.prefetch", DEFAULT_PREFETCH as i64)]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.shared.validate()?;
        self.secrets.validate()?;
        self.connections.validate()?;
        self.retention.validate()?;
        self.batch.validate()?;
        match &self.ipassan {
            Some(ipassan) => ipassan.validate(),
            None => Ok(()),
        }
    }
}

impl IpassanSettings {
    /// The default tenant as the client wants it.
    pub fn tenant_settings(&self) -> ipassan_client::TenantSettings {
        ipassan_client::TenantSettings {
            base_url: self.base_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
        }
    }
}

/// `CONNECX__IPASSAN__*`: where the iPassan API is and the client credentials it issued.
#[derive(Clone, Deserialize)]
pub struct IpassanSettings {
    /// e.g. `https://tenant.ipassan.com` (`CONNECX__IPASSAN__BASE_URL`).
    pub base_url: String,
    /// `CONNECX__IPASSAN__CLIENT_ID`
    pub client_id: String,
    /// `CONNECX__IPASSAN__CLIENT_SECRET` (environment only).
    pub client_secret: String,
    /// Seconds any one HTTP call to iPassan may take (`CONNECX__IPASSAN__TIMEOUT_SECS`).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    10
}

impl fmt::Debug for IpassanSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpassanSettings")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl Validate for IpassanSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.base_url).map_err(|e| {
            ConfigError::invalid(
                "ipassan.base_url",
                format!("is not a URL ({e}); e.g. https://tenant.ipassan.com"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(ConfigError::invalid(
                "ipassan.base_url",
                "must be an http:// or https:// URL such as https://tenant.ipassan.com",
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "ipassan.client_id",
                "must be the client id iPassan issued",
            ));
        }
        if self.client_secret.is_empty() {
            return Err(ConfigError::invalid(
                "ipassan.client_secret",
                "must be the client secret iPassan issued (set it in the environment)",
            ));
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return Err(ConfigError::invalid(
                "ipassan.timeout_secs",
                "must be between 1 and 120 seconds",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn load(extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut env: HashMap<String, String> = [
            ("CONNECX__DATABASE__URL", "postgres://h/db"),
            ("CONNECX__AMQP__URL", "amqp://guest:guest@h:5672/%2f"),
            ("CONNECX__IPASSAN__BASE_URL", "https://tenant.ipassan.com"),
            ("CONNECX__IPASSAN__CLIENT_ID", "connecx"),
            ("CONNECX__IPASSAN__CLIENT_SECRET", "very-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        platform::config::load_with_env(Some(env))
    }

    #[test]
    fn ipassan_settings_come_from_the_environment_and_the_secret_is_never_shown() {
        let settings = load(&[]).unwrap();
        let ipassan = settings.ipassan.as_ref().unwrap();
        assert_eq!(ipassan.base_url, "https://tenant.ipassan.com");
        assert_eq!(ipassan.client_id, "connecx");
        assert_eq!(ipassan.timeout_secs, 10);
        assert!(!format!("{settings:?}").contains("very-secret"));
    }

    #[test]
    fn unset_the_prefetch_is_ipassan_syncs_own_and_batches_are_on() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.shared.amqp.prefetch, DEFAULT_PREFETCH);
        assert_eq!(settings.batch.max_messages, 32);
        assert_eq!(settings.batch.max_running, 2);
        assert!(settings.batch.batching());
        let err = load(&[("CONNECX__BATCH__MAX_MESSAGES", "0")]).unwrap_err();
        assert!(
            err.to_string().contains("CONNECX__BATCH__MAX_MESSAGES"),
            "{err}"
        );
    }

    #[test]
    fn every_number_is_read_from_the_environment_under_its_usual_key() {
        let settings = load(&[
            ("CONNECX__DATABASE__MAX_CONNECTIONS", "3"),
            ("CONNECX__AMQP__PREFETCH", "2"),
            ("CONNECX__HEALTH__PORT", "9101"),
            ("CONNECX__RETRY__TIERS", "1s,2m"),
            ("CONNECX__IPASSAN__TIMEOUT_SECS", "7"),
            ("CONNECX__CONNECTIONS__MAX_IN_FLIGHT", "6"),
            ("CONNECX__CONNECTIONS__BREAKER_OPEN_SECS", "45"),
            ("CONNECX__RETENTION__PERSONAL_DAYS", "30"),
            ("CONNECX__IPASSAN__CLIENT_SECRET", "0042"),
            ("CONNECX__BATCH__MAX_MESSAGES", "8"),
            ("CONNECX__BATCH__MAX_RUNNING", "3"),
        ])
        .unwrap();
        assert_eq!(settings.batch.max_messages, 8);
        assert_eq!(settings.batch.max_running, 3);
        assert_eq!(settings.shared.database.max_connections, 3);
        assert_eq!(settings.shared.amqp.prefetch, 2);
        assert_eq!(settings.shared.health.port, Some(9101));
        assert_eq!(settings.shared.retry.tiers.len(), 2);
        assert_eq!(settings.ipassan.as_ref().unwrap().timeout_secs, 7);
        assert_eq!(settings.connections.max_in_flight, 6);
        assert_eq!(settings.connections.breaker_open_secs, 45);
        assert_eq!(settings.retention.personal_days, 30);
        // Text keys stay text, leading zeros and all.
        assert_eq!(settings.ipassan.as_ref().unwrap().client_secret, "0042");
    }

    #[test]
    fn a_bad_ipassan_setting_is_named_by_its_environment_variable() {
        let err = load(&[("CONNECX__IPASSAN__BASE_URL", "tenant.ipassan.com")]).unwrap_err();
        assert!(
            err.to_string().contains("CONNECX__IPASSAN__BASE_URL"),
            "{err}"
        );
        let err = load(&[("CONNECX__IPASSAN__BASE_URL", "ftp://tenant")]).unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
        let err = load(&[("CONNECX__IPASSAN__CLIENT_SECRET", "")]).unwrap_err();
        assert!(
            err.to_string().contains("CONNECX__IPASSAN__CLIENT_SECRET"),
            "{err}"
        );
        let err = load(&[("CONNECX__IPASSAN__TIMEOUT_SECS", "0")]).unwrap_err();
        assert!(
            err.to_string().contains("CONNECX__IPASSAN__TIMEOUT_SECS"),
            "{err}"
        );
    }
}
