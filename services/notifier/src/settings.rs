//! The notifier's settings (the README, "Configuration"): the sections every service shares
//! ([`SharedSettings`]: database, broker, log, health port and retry tiers, under their usual
//! keys), `CONNECX__SMTP__*` for the mail server, `CONNECX__OPS__ALERT_EMAIL` for the mails no
//! building manager can take, and `CONNECX__RETENTION__*`. The ops CLI reads less
//! ([`CliSettings`]): it sends no mail. Checked at start, so a bad key stops the notifier with a
//! message naming its environment variable instead of failing on the first mail.

use serde::Deserialize;

use platform::config::{
    AmqpSettings, ConfigError, DatabaseSettings, LogSettings, OpsSettings, SharedSettings,
    SmtpSettings, Validate,
};
use platform::retention::RetentionSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `CONNECX__DATABASE__*`, `CONNECX__AMQP__*`, `CONNECX__LOG__*`, `CONNECX__HEALTH__*` (the
    /// `/healthz`, `/readyz`, `/metrics` port; off when unset) and `CONNECX__RETRY__*`.
    #[serde(flatten)]
    pub shared: SharedSettings,
    pub smtp: SmtpSettings,
    pub ops: OpsSettings,
    /// `CONNECX__RETENTION__*`: how long PINs and visitors' personal data are kept.
    #[serde(default)]
    pub retention: RetentionSettings,
    /// `CONNECX__BATCH__*`: the results in hand mailed together.
    #[serde(default)]
    pub batch: platform::batch::BatchSettings,
}

/// The notifier's prefetch unless the deployment sets `CONNECX__AMQP__PREFETCH`: the results in
/// hand wait for their batch without a database connection, and a batch fills from them
/// (README, Performance). The dead-letter consumer takes at most the pool's connections less the
/// running batches'.
pub const DEFAULT_PREFETCH: u16 = 128;

/// The notifier's batches running at once unless the deployment sets
/// `CONNECX__BATCH__MAX_RUNNING`: a batch spends most of its time in SMTP conversations, so four
/// keep the machine busy where the shared two left it a third idle (README, Performance).
pub const DEFAULT_MAX_RUNNING: usize = 4;

impl Validate for Settings {
    fn service_defaults() -> &'static [(&'static str, i64)] {
        &[
            ("amqp.prefetch", DEFAULT_PREFETCH as i64),
            ("batch.max_running", DEFAULT_MAX_RUNNING as i64),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.shared.validate()?;
        self.smtp.validate()?;
        self.retention.validate()?;
        self.batch.validate()?;
        self.ops.validate()
    }
}

/// What the ops CLI needs: no SMTP.
#[derive(Debug, Clone, Deserialize)]
pub struct CliSettings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub log: LogSettings,
}

impl Validate for CliSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.amqp.validate()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use platform::config::SmtpTls;

    use super::*;

    /// What every notifier must be given; the database and broker first, all the CLI needs.
    const REQUIRED: [(&str, &str); 5] = [
        ("CONNECX__DATABASE__URL", "postgres://h/db"),
        ("CONNECX__AMQP__URL", "amqp://guest:guest@h:5672/%2f"),
        ("CONNECX__SMTP__HOST", "smtp.example.com"),
        ("CONNECX__SMTP__FROM", "connecX <no-reply@connecx.example>"),
        ("CONNECX__OPS__ALERT_EMAIL", "ops@connecx.example"),
    ];

    fn environment(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut env = environment(&REQUIRED);
        env.extend(environment(extra));
        platform::config::load_with_env(Some(env))
    }

    #[test]
    fn every_key_is_read_from_the_environment_under_its_usual_name() {
        let settings = load(&[
            ("CONNECX__DATABASE__MAX_CONNECTIONS", "3"),
            ("CONNECX__AMQP__PREFETCH", "2"),
            ("CONNECX__HEALTH__PORT", "9102"),
            ("CONNECX__RETRY__TIERS", "1s,2m"),
            ("CONNECX__LOG__LEVEL", "debug"),
            ("CONNECX__SMTP__PORT", "587"),
            ("CONNECX__SMTP__TLS", "starttls"),
            ("CONNECX__SMTP__TIMEOUT_SECS", "7"),
            ("CONNECX__SMTP__USERNAME", "connecx"),
            ("CONNECX__SMTP__PASSWORD", "0042"),
            ("CONNECX__RETENTION__PIN_DAYS", "3"),
            ("CONNECX__RETENTION__PERSONAL_DAYS", "30"),
        ])
        .unwrap();
        assert_eq!(settings.shared.database.max_connections, 3);
        assert_eq!(settings.shared.amqp.prefetch, 2);
        assert_eq!(settings.shared.health.port, Some(9102));
        assert_eq!(settings.shared.retry.tiers.len(), 2);
        assert_eq!(settings.shared.log.level, "debug");
        assert_eq!(settings.smtp.host, "smtp.example.com");
        assert_eq!(settings.smtp.port, 587);
        assert_eq!(settings.smtp.tls, SmtpTls::Starttls);
        assert_eq!(settings.smtp.timeout_secs, 7);
        // Text keys stay text, leading zeros and all.
        assert_eq!(settings.smtp.password.as_deref(), Some("0042"));
        assert_eq!(settings.ops.alert_email, "ops@connecx.example");
        assert_eq!(settings.retention.pin_days, 3);
        assert_eq!(settings.retention.personal_days, 30);
    }

    #[test]
    fn what_the_environment_leaves_out_has_its_default() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.shared.health.port, None);
        assert_eq!(settings.smtp.port, 25);
        assert_eq!(settings.retention, RetentionSettings::default());
        // The notifier's own: more results in hand and more batches at once than the shared.
        assert_eq!(settings.shared.amqp.prefetch, 128);
        assert_eq!(settings.batch.max_running, 4);
        assert_eq!(settings.batch.max_messages, 32);
    }

    #[test]
    fn a_deployment_sets_the_notifiers_own_defaults_over() {
        let settings = load(&[
            ("CONNECX__AMQP__PREFETCH", "16"),
            ("CONNECX__BATCH__MAX_RUNNING", "1"),
        ])
        .unwrap();
        assert_eq!(settings.shared.amqp.prefetch, 16);
        assert_eq!(settings.batch.max_running, 1);
    }

    #[test]
    fn a_bad_key_is_named_by_its_environment_variable() {
        for (env, value) in [
            ("CONNECX__DATABASE__URL", "mysql://h/db"),
            ("CONNECX__OPS__ALERT_EMAIL", "not an address"),
            ("CONNECX__RETENTION__PERSONAL_DAYS", "1"),
        ] {
            let err = load(&[(env, value)]).unwrap_err().to_string();
            assert!(err.contains(env), "{env}: {err}");
        }
    }

    #[test]
    fn the_ops_cli_needs_no_mail_server() {
        let database_and_broker = environment(&REQUIRED[..2]);
        let cli: CliSettings =
            platform::config::load_with_env(Some(database_and_broker.clone())).unwrap();
        assert_eq!(cli.database.url, "postgres://h/db");
        assert!(platform::config::load_with_env::<Settings>(Some(database_and_broker)).is_err());
    }
}
