//! salto-sync's settings (docs/architecture.md, "Configuration and operation"): the shared sections plus the SHIP endpoint
//! (`CONNECX__SALTO__*`) and the nightly cleaner (`CONNECX__CLEANER__*`). Checked at start, with
//! messages naming the environment variable to fix; secrets never appear in `Debug`.

use std::fmt;
use std::time::Duration;

use chrono::NaiveTime;
use serde::Deserialize;

use platform::config::{ConfigError, SharedSettings, Validate};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The sections every service reads under the same keys: `CONNECX__DATABASE__*`,
    /// `CONNECX__AMQP__*`, `CONNECX__LOG__*`, `CONNECX__HEALTH__*` (`/healthz`, `/readyz`,
    /// `/metrics`; off when unset) and `CONNECX__RETRY__*`.
    #[serde(flatten)]
    pub shared: SharedSettings,
    /// The deployment default, for buildings without a Salto server of their own.
    #[serde(default)]
    pub salto: Option<SaltoSettings>,
    #[serde(default)]
    pub secrets: platform::secrets::SecretsSettings,
    /// `CONNECX__CONNECTIONS__*`: each server's bulkhead.
    #[serde(default)]
    pub connections: platform::bulkhead::ConnectionSettings,
    #[serde(default)]
    pub cleaner: CleanerSettings,
    /// `CONNECX__BATCH__*`: the bookings of one Salto server handled together.
    #[serde(default)]
    pub batch: platform::batch::BatchSettings,
}

/// salto-sync's prefetch unless the deployment sets `CONNECX__AMQP__PREFETCH`: a message in hand
/// waits for its batch without a database connection, and two batches of 32 running while the
/// next two gather need that many delivered at once (README, Performance: 64 left batches of 19
/// on average, and a quarter fewer messages a second).
pub const DEFAULT_PREFETCH: u16 = 128;

impl Validate for Settings {
    fn service_defaults() -> &'static [(&'static str, i64)] {
        &[("amqp.prefetch", DEFAULT_PREFETCH as i64)]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.shared.validate()?;
        self.secrets.validate()?;
        self.connections.validate()?;
        self.batch.validate()?;
        if let Some(salto) = &self.salto {
            salto.validate()?;
        }
        self.cleaner.validate()
    }
}

/// How salto-sync proves itself to SHIP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    #[default]
    None,
    Basic,
    Key,
}

/// `CONNECX__SALTO__*`: the SHIP endpoint.
#[derive(Clone, Deserialize)]
pub struct SaltoSettings {
    /// e.g. `http://salto.building.local:8090/` (SHIP over HTTP, `POST`ed to this URL).
    pub url: String,
    #[serde(default)]
    pub auth_kind: AuthKind,
    /// The `Salto-SHIP-Key` (auth_kind `key`).
    pub key: Option<String>,
    /// HTTP Basic credentials (auth_kind `basic`).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Seconds before one SHIP call is given up (then retried as transient).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    10
}

impl SaltoSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The endpoint as the SHIP client wants it.
    pub fn ship_settings(&self) -> salto_ship::ShipSettings {
        salto_ship::ShipSettings {
            url: self.url.trim().to_owned(),
            auth: match self.auth_kind {
                AuthKind::None => salto_ship::ShipAuth::None,
                AuthKind::Basic => salto_ship::ShipAuth::Basic {
                    username: self.username.clone().unwrap_or_default(),
                    password: self.password.clone().unwrap_or_default(),
                },
                AuthKind::Key => salto_ship::ShipAuth::Key(self.key.clone().unwrap_or_default()),
            },
            timeout: self.timeout(),
        }
    }
}

impl fmt::Debug for SaltoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("SaltoSettings")
            .field("url", &platform::config::redact_url(&self.url))
            .field("auth_kind", &self.auth_kind)
            .field("key", &redacted(&self.key))
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl Validate for SaltoSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "salto.url",
                "must be the http:// or https:// URL of the SHIP endpoint",
            ));
        }
        if reqwest::Url::parse(url).is_err() {
            return Err(ConfigError::invalid("salto.url", "is not a valid URL"));
        }
        let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        match self.auth_kind {
            AuthKind::None => {}
            AuthKind::Key if !given(&self.key) => {
                return Err(ConfigError::invalid(
                    "salto.key",
                    "is required when salto.auth_kind is `key`",
                ));
            }
            AuthKind::Key => {}
            AuthKind::Basic if !given(&self.username) => {
                return Err(ConfigError::invalid(
                    "salto.username",
                    "is required when salto.auth_kind is `basic`",
                ));
            }
            AuthKind::Basic if self.password.is_none() => {
                return Err(ConfigError::invalid(
                    "salto.password",
                    "is required when salto.auth_kind is `basic`",
                ));
            }
            AuthKind::Basic => {}
        }
        if self.timeout_secs == 0 || self.timeout_secs > 300 {
            return Err(ConfigError::invalid(
                "salto.timeout_secs",
                "must be between 1 and 300 seconds",
            ));
        }
        Ok(())
    }
}

/// `CONNECX__CLEANER__*`: the nightly clearing.
#[derive(Debug, Clone, Deserialize)]
pub struct CleanerSettings {
    /// Building-local time after which a date's clearing runs, `HH:MM` (default `00:05`).
    #[serde(default = "default_local_time")]
    pub local_time: String,
    /// How often the cleaner looks at the clocks: a six-field cron expression with seconds, in
    /// UTC (default every minute). Tests tick faster.
    #[serde(default = "default_tick")]
    pub tick: String,
    /// Compare the ledger with Salto's lists after clearing (repair what the ledger explains).
    #[serde(default = "default_reconcile")]
    pub reconcile: bool,
    /// Every access level is compared with Salto at least once in this many nights: each night
    /// compares the levels it touched and a rotating slice of the others (default 7; 1 compares
    /// every level every night).
    #[serde(default = "default_reconcile_days")]
    pub reconcile_days: u32,
    /// Access levels cleared in one ledger transaction (default 32).
    #[serde(default = "default_batch_levels")]
    pub batch_levels: usize,
    /// Batches working with one Salto server at once, and so the clearing's calls in flight to
    /// it (default 8).
    #[serde(default = "default_concurrency_per_server")]
    pub concurrency_per_server: usize,
    /// Buildings cleared side by side (default 4). Each holds one connection of the clearing's
    /// own pool for its whole clearing (its claim on the night; see
    /// [`CleanerSettings::connections`]).
    #[serde(default = "default_buildings_at_once")]
    pub buildings_at_once: usize,
}

fn default_local_time() -> String {
    "00:05".to_owned()
}

fn default_tick() -> String {
    "0 * * * * *".to_owned()
}

fn default_reconcile() -> bool {
    true
}

fn default_reconcile_days() -> u32 {
    7
}

fn default_batch_levels() -> usize {
    32
}

fn default_concurrency_per_server() -> usize {
    8
}

fn default_buildings_at_once() -> usize {
    4
}

impl Default for CleanerSettings {
    fn default() -> Self {
        Self {
            local_time: default_local_time(),
            tick: default_tick(),
            reconcile: default_reconcile(),
            reconcile_days: default_reconcile_days(),
            batch_levels: default_batch_levels(),
            concurrency_per_server: default_concurrency_per_server(),
            buildings_at_once: default_buildings_at_once(),
        }
    }
}

impl CleanerSettings {
    /// The connections of the clearing's own database pool: one per building cleared at once
    /// (its claim) and one per batch working with a server at once. The clearing never takes
    /// the connections the messages need (`CONNECX__DATABASE__MAX_CONNECTIONS`), nor waits for
    /// them. The pool opens connections as a night needs them and closes them after ten idle
    /// minutes.
    pub fn connections(&self) -> u32 {
        u32::try_from(self.buildings_at_once + self.concurrency_per_server).unwrap_or(u32::MAX)
    }

    /// The clearing time; `validate` has checked it parses.
    pub fn clearing_time(&self) -> NaiveTime {
        parse_local_time(&self.local_time).unwrap_or(NaiveTime::MIN)
    }
}

fn parse_local_time(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text.trim(), "%H:%M:%S"))
        .ok()
}

impl Validate for CleanerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if parse_local_time(&self.local_time).is_none() {
            return Err(ConfigError::invalid(
                "cleaner.local_time",
                format!("`{}` is not a time of day like 00:05", self.local_time),
            ));
        }
        if self.tick.split_whitespace().count() != 6 {
            return Err(ConfigError::invalid(
                "cleaner.tick",
                format!(
                    "`{}` must be a cron expression with six fields (seconds first), e.g. `0 * * * * *`",
                    self.tick
                ),
            ));
        }
        for (key, value) in [
            ("cleaner.reconcile_days", self.reconcile_days as usize),
            ("cleaner.batch_levels", self.batch_levels),
            (
                "cleaner.concurrency_per_server",
                self.concurrency_per_server,
            ),
            ("cleaner.buildings_at_once", self.buildings_at_once),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut env: HashMap<String, String> = [
            ("CONNECX__DATABASE__URL", "postgres://postgres@127.0.0.1/x"),
            (
                "CONNECX__AMQP__URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        platform::config::load_with_env(Some(env))
    }

    /// Why loading with `pairs` failed, in the words the operator reads.
    fn refusal(pairs: &[(&str, &str)]) -> String {
        load(pairs).unwrap_err().to_string()
    }

    #[test]
    fn salto_and_cleaner_settings_come_from_the_environment() {
        let settings = load(&[
            ("CONNECX__SALTO__URL", "http://salto.local:8090/ship"),
            ("CONNECX__SALTO__AUTH_KIND", "key"),
            ("CONNECX__SALTO__KEY", "k-0123456789"),
            ("CONNECX__CLEANER__LOCAL_TIME", "01:30"),
        ])
        .unwrap();
        assert_eq!(settings.salto.as_ref().unwrap().auth_kind, AuthKind::Key);
        assert_eq!(
            settings.salto.as_ref().unwrap().key.as_deref(),
            Some("k-0123456789")
        );
        assert_eq!(settings.salto.as_ref().unwrap().timeout_secs, 10);
        assert_eq!(
            settings.cleaner.clearing_time(),
            NaiveTime::from_hms_opt(1, 30, 0).unwrap()
        );
        assert!(!format!("{settings:?}").contains("k-0123456789"));
    }

    #[test]
    fn the_shared_sections_keep_their_keys_beside_salto_sync_s_own_numbers_and_switches() {
        let settings = load(&[
            ("CONNECX__DATABASE__MAX_CONNECTIONS", "3"),
            ("CONNECX__AMQP__PREFETCH", "8"),
            ("CONNECX__HEALTH__PORT", "9102"),
            ("CONNECX__RETRY__TIERS", "1s,2m"),
            ("CONNECX__LOG__FORMAT", "json"),
            ("CONNECX__SALTO__URL", "http://salto.local/"),
            ("CONNECX__SALTO__TIMEOUT_SECS", "3"),
            ("CONNECX__CONNECTIONS__MAX_IN_FLIGHT", "2"),
            ("CONNECX__CLEANER__RECONCILE", "false"),
            ("CONNECX__CLEANER__RECONCILE_DAYS", "3"),
            ("CONNECX__CLEANER__BATCH_LEVELS", "16"),
            ("CONNECX__CLEANER__CONCURRENCY_PER_SERVER", "4"),
            ("CONNECX__CLEANER__BUILDINGS_AT_ONCE", "2"),
        ])
        .unwrap();
        let shared = &settings.shared;
        assert_eq!(shared.database.url, "postgres://postgres@127.0.0.1/x");
        assert_eq!(shared.database.max_connections, 3);
        assert_eq!(shared.amqp.prefetch, 8);
        assert_eq!(shared.health.port, Some(9102));
        assert_eq!(shared.retry.tiers.len(), 2);
        assert_eq!(shared.log.format, platform::config::LogFormat::Json);
        assert_eq!(settings.salto.as_ref().unwrap().timeout_secs, 3);
        assert_eq!(settings.connections.max_in_flight, 2);
        assert!(!settings.cleaner.reconcile);
        assert_eq!(settings.cleaner.reconcile_days, 3);
        assert_eq!(settings.cleaner.batch_levels, 16);
        assert_eq!(settings.cleaner.concurrency_per_server, 4);
        assert_eq!(settings.cleaner.buildings_at_once, 2);
        assert!(
            refusal(&[("CONNECX__DATABASE__URL", "mysql://h/db")])
                .contains("CONNECX__DATABASE__URL")
        );
    }

    #[test]
    fn the_cleaner_defaults_to_five_past_midnight() {
        let settings = load(&[("CONNECX__SALTO__URL", "http://salto.local/")]).unwrap();
        assert_eq!(
            settings.cleaner.clearing_time(),
            NaiveTime::from_hms_opt(0, 5, 0).unwrap()
        );
        assert_eq!(settings.cleaner.reconcile_days, 7);
        assert_eq!(settings.cleaner.batch_levels, 32);
        assert_eq!(settings.cleaner.concurrency_per_server, 8);
        assert_eq!(settings.cleaner.buildings_at_once, 4);
        // The clearing's own pool: the four claims and eight batches.
        assert_eq!(settings.cleaner.connections(), 12);
        assert_eq!(settings.salto.as_ref().unwrap().auth_kind, AuthKind::None);
    }

    #[test]
    fn unset_the_prefetch_is_salto_syncs_own_and_batches_are_on() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.shared.amqp.prefetch, DEFAULT_PREFETCH);
        assert_eq!(settings.batch.max_messages, 32);
        assert_eq!(settings.batch.max_running, 2);
        assert!(settings.batch.batching());
        let set = load(&[
            ("CONNECX__BATCH__MAX_MESSAGES", "1"),
            ("CONNECX__BATCH__MAX_RUNNING", "3"),
        ])
        .unwrap();
        assert!(!set.batch.batching());
        assert_eq!(set.batch.max_running, 3);
        let err = load(&[("CONNECX__BATCH__MAX_RUNNING", "0")]).unwrap_err();
        assert!(
            err.to_string().contains("CONNECX__BATCH__MAX_RUNNING"),
            "{err}"
        );
    }

    #[test]
    fn bad_salto_settings_name_the_variable_to_fix() {
        assert!(
            load(&[]).unwrap().salto.is_none(),
            "no CONNECX__SALTO__* at all: no default server"
        );
        let missing_url = refusal(&[("CONNECX__SALTO__AUTH_KIND", "none")]);
        assert!(missing_url.contains("url"), "{missing_url}");
        let on_the_default = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![("CONNECX__SALTO__URL", "http://salto.local/")];
            all.extend_from_slice(pairs);
            refusal(&all)
        };
        for (pairs, named) in [
            (
                &[("CONNECX__SALTO__AUTH_KIND", "key")][..],
                "CONNECX__SALTO__KEY",
            ),
            (
                &[
                    ("CONNECX__SALTO__AUTH_KIND", "basic"),
                    ("CONNECX__SALTO__USERNAME", "ship"),
                ][..],
                "CONNECX__SALTO__PASSWORD",
            ),
            (&[("CONNECX__SALTO__AUTH_KIND", "token")][..], "token"),
            (
                &[("CONNECX__CLEANER__LOCAL_TIME", "midnight")][..],
                "CONNECX__CLEANER__LOCAL_TIME",
            ),
            (
                &[("CONNECX__CLEANER__CONCURRENCY_PER_SERVER", "0")][..],
                "CONNECX__CLEANER__CONCURRENCY_PER_SERVER",
            ),
            (
                &[("CONNECX__CLEANER__BATCH_LEVELS", "0")][..],
                "CONNECX__CLEANER__BATCH_LEVELS",
            ),
            (
                &[("CONNECX__CLEANER__BUILDINGS_AT_ONCE", "0")][..],
                "CONNECX__CLEANER__BUILDINGS_AT_ONCE",
            ),
            (
                &[("CONNECX__CLEANER__RECONCILE_DAYS", "0")][..],
                "CONNECX__CLEANER__RECONCILE_DAYS",
            ),
        ] {
            let refused = on_the_default(pairs);
            assert!(refused.contains(named), "{named}: {refused}");
        }
        let bad_url = refusal(&[("CONNECX__SALTO__URL", "salto.local")]);
        assert!(bad_url.contains("CONNECX__SALTO__URL"), "{bad_url}");
    }
}
