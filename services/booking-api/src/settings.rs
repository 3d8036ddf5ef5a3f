//! booking-api's configuration (the README, "Configuration"): the shared keys plus `auth`, `outbox`,
//! `secrets` (the key that seals buildings' connection secrets) and whether the deployment has a
//! default iPassan and Salto (`CONNECX__IPASSAN__BASE_URL`, `CONNECX__SALTO__URL`: booking-api
//! reads only whether they are set, to refuse bookings of buildings connected to neither).

use std::fmt;

use platform::config::{ConfigError, HttpSettings, SharedSettings, Validate};
use serde::Deserialize;

use crate::domain::window::WindowLimits;
use crate::outbox::OutboxSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Database, broker, log and the results consumer's retry tiers, under the keys every service
    /// reads. booking-api serves `/healthz`, `/readyz` and `/metrics` on its HTTP port, so
    /// `shared.health` is not used here.
    #[serde(flatten)]
    pub shared: SharedSettings,
    #[serde(default)]
    pub http: HttpSettings,
    pub auth: AuthSettings,
    #[serde(default)]
    pub outbox: OutboxSettings,
    /// `CONNECX__SECRETS__KEY` / `__PREVIOUS_KEYS`.
    #[serde(default)]
    pub secrets: platform::secrets::SecretsSettings,
    /// The deployment's default iPassan (only `base_url` is read here).
    #[serde(default)]
    pub ipassan: DefaultIpassan,
    /// The deployment's default Salto SHIP endpoint (only `url` is read here).
    #[serde(default)]
    pub salto: DefaultSalto,
    /// `CONNECX__LIMITS__*`: how much a client may ask.
    #[serde(default)]
    pub limits: LimitsSettings,
    /// `CONNECX__RETENTION__*`: how long PINs and visitors' personal data are kept.
    #[serde(default)]
    pub retention: platform::retention::RetentionSettings,
    /// `CONNECX__BATCH__*`: the results consumer applies the results in hand together.
    #[serde(default)]
    pub batch: platform::batch::BatchSettings,
}

/// `CONNECX__LIMITS__*`: bounds on what a booking may ask, and how fast a resident may write.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LimitsSettings {
    /// The longest visit, in hours.
    pub max_visit_hours: u32,
    /// How far ahead a booking may start, in days.
    pub max_days_ahead: u32,
    /// Live bookings (not cancelled, not yet ended) a resident may hold of each kind.
    pub max_live_bookings: u32,
    /// Booking writes (create, change, cancel) a resident may send a minute; 0 turns the limit
    /// off.
    pub writes_per_minute: u32,
    /// How many of them may come at once.
    pub write_burst: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            max_visit_hours: 72,
            max_days_ahead: 365,
            max_live_bookings: 50,
            writes_per_minute: 30,
            write_burst: 10,
        }
    }
}

impl LimitsSettings {
    /// The bounds of a visit's window.
    pub fn visits(&self) -> WindowLimits {
        WindowLimits {
            max_length: Some(chrono::Duration::hours(i64::from(self.max_visit_hours))),
            max_ahead: chrono::Duration::days(i64::from(self.max_days_ahead)),
        }
    }

    /// The bounds of a facility booking's window (its length is bounded by its one local day).
    pub fn facilities(&self) -> WindowLimits {
        WindowLimits {
            max_length: None,
            max_ahead: chrono::Duration::days(i64::from(self.max_days_ahead)),
        }
    }
}

impl Validate for LimitsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("limits.max_visit_hours", self.max_visit_hours),
            ("limits.max_days_ahead", self.max_days_ahead),
            ("limits.max_live_bookings", self.max_live_bookings),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.writes_per_minute > 0 && self.write_burst == 0 {
            return Err(ConfigError::invalid(
                "limits.write_burst",
                "must be at least 1 while limits.writes_per_minute is on",
            ));
        }
        Ok(())
    }
}

/// `CONNECX__IPASSAN__BASE_URL`, read by booking-api only for whether it is set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DefaultIpassan {
    #[serde(default)]
    pub base_url: Option<String>,
}

/// `CONNECX__SALTO__URL`, read by booking-api only for whether it is set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DefaultSalto {
    #[serde(default)]
    pub url: Option<String>,
}

/// Which systems a building without a connection of its own can still use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentDefaults {
    pub ipassan: bool,
    pub salto: bool,
}

impl Settings {
    pub fn deployment_defaults(&self) -> DeploymentDefaults {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        DeploymentDefaults {
            ipassan: set(&self.ipassan.base_url),
            salto: set(&self.salto.url),
        }
    }
}

/// `CONNECX__AUTH__*`
#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    /// HS256 secret shared with the connecX backend (environment only).
    pub jwt_secret: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// When set, a token's `iss` must be this.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, a token's `aud` must name this.
    #[serde(default)]
    pub audience: Option<String>,
}

fn default_leeway_secs() -> u64 {
    30
}

/// RFC 7518 §3.2: an HS256 key must have at least 256 bits.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &"<redacted>")
            .field("leeway_secs", &self.leeway_secs)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The results consumer's prefetch unless the deployment sets `CONNECX__AMQP__PREFETCH`: a
/// result in hand waits for its batch without a database connection, and batches of 32 need
/// that many delivered at once.
pub const DEFAULT_PREFETCH: u16 = 64;

impl Validate for Settings {
    fn service_defaults() -> &'static [(&'static str, i64)] {
        &[("amqp.prefetch", DEFAULT_PREFETCH as i64)]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.shared.validate()?;
        self.http.validate()?;
        if self.auth.jwt_secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                format!(
                    "must be at least {MIN_JWT_SECRET_BYTES} bytes (an HS256 key needs 256 bits)"
                ),
            ));
        }
        self.secrets.validate()?;
        self.limits.validate()?;
        self.retention.validate()?;
        self.batch.validate()?;
        if self.outbox.batch_size < 1 {
            return Err(ConfigError::invalid(
                "outbox.batch_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn settings_load_from_the_environment_with_defaults() {
        let settings: Settings = platform::config::load_with_env(env(&[
            ("CONNECX__DATABASE__URL", "postgres://postgres@127.0.0.1/db"),
            (
                "CONNECX__AMQP__URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
            ("CONNECX__AUTH__JWT_SECRET", SECRET),
            ("CONNECX__HTTP__PORT", "9090"),
            ("CONNECX__OUTBOX__LINGER_MS", "0"),
        ]))
        .unwrap();
        assert_eq!(settings.http.port, 9090);
        assert_eq!(settings.outbox.batch_size, 500);
        assert_eq!(settings.outbox.linger_ms, 0);
        assert_eq!(OutboxSettings::default().linger_ms, 5);
        assert_eq!(settings.limits, LimitsSettings::default());
        assert!(!format!("{settings:?}").contains(SECRET));
        // The results consumer's own prefetch, and batches on.
        assert_eq!(settings.shared.amqp.prefetch, DEFAULT_PREFETCH);
        assert!(settings.batch.batching());
    }

    #[test]
    fn a_short_jwt_secret_is_refused_by_name() {
        let err = platform::config::load_with_env::<Settings>(env(&[
            ("CONNECX__DATABASE__URL", "postgres://postgres@127.0.0.1/db"),
            (
                "CONNECX__AMQP__URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
            ("CONNECX__AUTH__JWT_SECRET", "short"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("CONNECX__AUTH__JWT_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_jwt_secret_is_named() {
        let err = platform::config::load_with_env::<Settings>(env(&[
            ("CONNECX__DATABASE__URL", "postgres://postgres@127.0.0.1/db"),
            (
                "CONNECX__AMQP__URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("auth"), "{err}");
    }
}
