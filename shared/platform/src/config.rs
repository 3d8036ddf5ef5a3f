//! Configuration loading (docs/architecture.md, "Configuration and operation").
//!
//! Layers, later ones winning: the settings' own defaults (serde), `config/default.toml`,
//! `config/{CONNECX_ENVIRONMENT}.toml` (default `local`), then environment variables
//! `CONNECX__SECTION__KEY`. Secrets come only from the environment. Every service reads the same
//! key names, so one ConfigMap serves them all. Loading fails with a message naming the bad key.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}` (env CONNECX__{env}) {problem}")]
    Invalid {
        key: String,
        env: String,
        problem: String,
    },
}

impl ConfigError {
    /// A key that was read but makes no sense.
    pub fn invalid(key: &str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            env: key.replace('.', "__").to_uppercase(),
            problem: problem.into(),
        }
    }
}

/// Settings check themselves after loading: serde says what is missing, this says what is wrong.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;

    /// This service's own defaults of shared keys (`("amqp.prefetch", 64)`), where its work
    /// wants other values than the shared sections' defaults. Below the files and the
    /// environment, like every default: a deployment that sets the key wins.
    fn service_defaults() -> &'static [(&'static str, i64)]
    where
        Self: Sized,
    {
        &[]
    }
}

/// Loads settings from the files and the process environment.
pub fn load<S: DeserializeOwned + Validate>() -> Result<S, ConfigError> {
    load_with_env(None)
}

/// Loads settings with `env` in place of the process environment (tests).
pub fn load_with_env<S: DeserializeOwned + Validate>(
    env: Option<HashMap<String, String>>,
) -> Result<S, ConfigError> {
    let environment = env
        .as_ref()
        .and_then(|e| e.get("CONNECX_ENVIRONMENT").cloned())
        .or_else(|| std::env::var("CONNECX_ENVIRONMENT").ok())
        .unwrap_or_else(|| "local".to_owned());
    let mut builder = config::Config::builder();
    for (key, value) in S::service_defaults() {
        builder = builder.set_default(*key, *value)?;
    }
    let settings: S = builder
        .add_source(config::File::with_name("config/default").required(false))
        .add_source(config::File::with_name(&format!("config/{environment}")).required(false))
        .add_source(
            config::Environment::with_prefix("CONNECX")
                .prefix_separator("__")
                .separator("__")
                .source(env),
        )
        .build()?
        .try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// The sections every service reads, under the same keys everywhere: `CONNECX__DATABASE__*`,
/// `CONNECX__AMQP__*`, `CONNECX__LOG__*`, `CONNECX__HEALTH__*` and `CONNECX__RETRY__*`. A
/// service's settings take them in whole with `#[serde(flatten)] shared: SharedSettings`, so
/// their keys stay at the top level and one ConfigMap serves every service.
///
/// booking-api serves its health and metrics on its HTTP port and ignores `health`.
#[derive(Debug, Clone, Deserialize)]
pub struct SharedSettings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub health: crate::health::HealthSettings,
    #[serde(default)]
    pub retry: RetrySettings,
}

impl Validate for SharedSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.amqp.validate()
    }
}

/// A number of a shared section. Environment values arrive as text, and inside a
/// `#[serde(flatten)]` section serde sees that text as it is (the config crate's own conversion
/// does not reach it), so these keys read a number or its text. The key is named here because a
/// flattened section's errors carry no path.
fn number<'de, D, T>(deserializer: D, key: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<T> {
        Number(T),
        Text(String),
    }
    match Raw::<T>::deserialize(deserializer)? {
        Raw::Number(number) => Ok(number),
        Raw::Text(text) => text.trim().parse().map_err(|e| {
            serde::de::Error::custom(ConfigError::invalid(
                key,
                format!("`{text}` is not a valid number ({e})"),
            ))
        }),
    }
}

fn database_max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    number(d, "database.max_connections")
}

fn amqp_prefetch<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    number(d, "amqp.prefetch")
}

fn amqp_delivery_limit<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    number(d, "amqp.delivery_limit")
}

fn amqp_drain_timeout_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    number(d, "amqp.drain_timeout_secs")
}

/// With `#[serde(default)]`: an absent key is `None`.
pub(crate) fn health_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    number(d, "health.port").map(Some)
}

/// `CONNECX__DATABASE__*`
#[derive(Clone, Deserialize)]
pub struct DatabaseSettings {
    /// e.g. `postgres://postgres@127.0.0.1:5432/connecx`
    pub url: String,
    #[serde(
        default = "default_max_connections",
        deserialize_with = "database_max_connections"
    )]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    10
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Validate for DatabaseSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(ConfigError::invalid(
                "database.url",
                "must be a postgres:// URL",
            ));
        }
        let options: sqlx::postgres::PgConnectOptions = self
            .url
            .parse()
            .map_err(|e| ConfigError::invalid("database.url", format!("is not valid: {e}")))?;
        // With `sslmode=verify-ca` / `verify-full`, a root certificate that cannot be read would
        // only show as a failed connection later; say so now, naming the file.
        use sqlx::postgres::PgSslMode;
        if matches!(
            options.get_ssl_mode(),
            PgSslMode::VerifyCa | PgSslMode::VerifyFull
        ) && let Some(path) = ssl_root_cert(&self.url)
            && let Err(e) = std::fs::read(&path)
        {
            return Err(ConfigError::invalid(
                "database.url",
                format!("sslrootcert `{path}` cannot be read: {e}"),
            ));
        }
        Ok(())
    }
}

/// The `sslrootcert` (or `ssl-root-cert`, `ssl-ca`) of a PostgreSQL URL, if it names one.
fn ssl_root_cert(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(key, _)| matches!(key.as_ref(), "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
        .map(|(_, value)| value.into_owned())
}

/// What `<service> migrate` reads: the database and the logs, nothing else, so the migration
/// step of a deployment needs none of the service's other keys or secrets (broker, SMTP, iPassan,
/// Salto, JWT). Keys of other sections in the environment are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct MigrateSettings {
    pub database: DatabaseSettings,
    #[serde(default)]
    pub log: LogSettings,
}

impl Validate for MigrateSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()
    }
}

/// `CONNECX__AMQP__*`
#[derive(Clone, Deserialize)]
pub struct AmqpSettings {
    /// e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (vhost included).
    pub url: String,
    /// Unacknowledged messages one consumer may hold (and handle concurrently).
    #[serde(default = "default_prefetch", deserialize_with = "amqp_prefetch")]
    pub prefetch: u16,
    /// Broker-side crash-loop guard: deliveries after which the broker dead-letters a message.
    #[serde(
        default = "default_delivery_limit",
        deserialize_with = "amqp_delivery_limit"
    )]
    pub delivery_limit: u32,
    /// At shutdown, how long messages already taken may take to finish; what is still unfinished
    /// then is handed back to the broker (redelivered to another replica). Keep it below the
    /// orchestrator's grace period (Kubernetes: `terminationGracePeriodSeconds`, 45 s here).
    #[serde(
        default = "default_drain_timeout_secs",
        deserialize_with = "amqp_drain_timeout_secs"
    )]
    pub drain_timeout_secs: u64,
}

fn default_drain_timeout_secs() -> u64 {
    30
}

fn default_prefetch() -> u16 {
    16
}

fn default_delivery_limit() -> u32 {
    5
}

impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url", &redact_url(&self.url))
            .field("prefetch", &self.prefetch)
            .field("delivery_limit", &self.delivery_limit)
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .finish()
    }
}

impl Validate for AmqpSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return Err(ConfigError::invalid(
                "amqp.url",
                "must be an amqp:// or amqps:// URL",
            ));
        }
        if self.prefetch == 0 {
            return Err(ConfigError::invalid("amqp.prefetch", "must be at least 1"));
        }
        Ok(())
    }
}

/// `CONNECX__LOG__*`
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// Human-readable lines locally, one JSON object per line in production.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// `CONNECX__RETRY__TIERS`: how long a transient failure waits before each retry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RetrySettings {
    #[serde(default)]
    pub tiers: RetryTiers,
}

/// Delays of the retry tiers, e.g. `10s,1m,5m,30m,2h`. After the last tier, a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTiers(pub Vec<Duration>);

impl Default for RetryTiers {
    fn default() -> Self {
        Self(
            [10, 60, 300, 1800, 7200]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl RetryTiers {
    /// The delay before retry number `attempt` (1-based), or `None` when the tiers are used up.
    pub fn delay_before(&self, attempt: usize) -> Option<Duration> {
        attempt.checked_sub(1).and_then(|i| self.0.get(i)).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for RetryTiers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        s.split(',')
            .map(|part| {
                let delay = humantime::parse_duration(part.trim()).map_err(|e| {
                    format!(
                        "`{}` is not a duration ({e}); use e.g. 10s,1m,2h",
                        part.trim()
                    )
                })?;
                if delay.is_zero() || delay.as_millis() > u128::from(u32::MAX) {
                    return Err(format!("`{}` must be between 1ms and 49 days", part.trim()));
                }
                Ok(delay)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl<'de> Deserialize<'de> for RetryTiers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<String>),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text,
            Raw::List(parts) => parts.join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `CONNECX__HTTP__*`
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    #[serde(default = "default_host")]
    pub host: String,
    /// 0 picks a free port (tests).
    #[serde(default = "default_port")]
    pub port: u16,
    /// A connection whose request headers have not all arrived within this time is closed (a
    /// slow client must not hold connections).
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// The longest a request may take, body and answer included (`Prefer: wait` waits 10 s at
    /// most); beyond it the answer is 408 `request_timeout`.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
            request_timeout_secs: default_request_timeout_secs(),
        }
    }
}

impl Validate for HttpSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.header_read_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "http.header_read_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.request_timeout_secs <= 10 {
            return Err(ConfigError::invalid(
                "http.request_timeout_secs",
                "must be more than 10 (a `Prefer: wait` request waits up to 10 s)",
            ));
        }
        Ok(())
    }
}

fn default_header_read_timeout_secs() -> u64 {
    10
}

fn default_request_timeout_secs() -> u64 {
    30
}

fn default_host() -> String {
    "0.0.0.0".to_owned()
}

fn default_port() -> u16 {
    8080
}

/// `CONNECX__SMTP__*`
#[derive(Clone, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// The From: of every mail, e.g. `connecX <no-reply@connecx.example>`.
    pub from: String,
    /// Seconds before an SMTP conversation is given up (then retried as transient).
    #[serde(default = "default_smtp_timeout_secs")]
    pub timeout_secs: u64,
    /// Lets credentials go over a plain connection (`tls = none`), where anyone on the path
    /// reads them: only for a mail relay on the same host or a trusted network.
    #[serde(default)]
    pub allow_plain_auth: bool,
}

fn default_smtp_port() -> u16 {
    25
}

fn default_smtp_timeout_secs() -> u64 {
    10
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("from", &self.from)
            .field("allow_plain_auth", &self.allow_plain_auth)
            .finish()
    }
}

impl Validate for SmtpSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::invalid("smtp.host", "must not be empty"));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::invalid(
                "smtp.from",
                "must be a mailbox like `connecX <no-reply@example.com>`",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(ConfigError::invalid(
                "smtp.password",
                "username and password go together",
            ));
        }
        self.check_plain_auth()
    }
}

impl SmtpSettings {
    /// Credentials are never sent over a plain connection unless `allow_plain_auth` says so.
    pub fn check_plain_auth(&self) -> Result<(), ConfigError> {
        if self.tls == SmtpTls::None && self.username.is_some() && !self.allow_plain_auth {
            return Err(ConfigError::invalid(
                "smtp.username",
                "would be sent in clear over a plain connection: use CONNECX__SMTP__TLS=starttls \
                 or tls, or set CONNECX__SMTP__ALLOW_PLAIN_AUTH=true for a trusted local relay",
            ));
        }
        Ok(())
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a local mail sink).
    #[default]
    None,
    Starttls,
    Tls,
}

/// `CONNECX__OPS__*`
#[derive(Debug, Clone, Deserialize)]
pub struct OpsSettings {
    /// Where alerts go when no building manager is known.
    pub alert_email: String,
}

impl Validate for OpsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.alert_email.parse::<lettre::Address>().is_err() {
            return Err(ConfigError::invalid(
                "ops.alert_email",
                "must be an email address",
            ));
        }
        Ok(())
    }
}

/// Hides the password of a URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:<redacted>{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Example {
        database: DatabaseSettings,
        amqp: AmqpSettings,
        #[serde(default)]
        retry: RetrySettings,
    }

    impl Validate for Example {
        fn validate(&self) -> Result<(), ConfigError> {
            self.database.validate()?;
            self.amqp.validate()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn settings_come_from_connecx_environment_variables() {
        let loaded: Example = load_with_env(env(&[
            ("CONNECX__DATABASE__URL", "postgres://u:secret@h/db"),
            (
                "CONNECX__AMQP__URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
            ("CONNECX__AMQP__PREFETCH", "4"),
            ("CONNECX__RETRY__TIERS", "1s,2m"),
        ]))
        .unwrap();
        assert_eq!(loaded.amqp.prefetch, 4);
        assert_eq!(
            loaded.retry.tiers.0,
            vec![Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert!(!format!("{loaded:?}").contains("secret"));
    }

    #[test]
    fn a_secret_that_looks_like_a_number_keeps_its_leading_zero() {
        #[derive(Debug, Deserialize)]
        struct WithSecret {
            amqp: AmqpSettings,
            key: String,
        }
        impl Validate for WithSecret {
            fn validate(&self) -> Result<(), ConfigError> {
                Ok(())
            }
        }
        let loaded: WithSecret = load_with_env(env(&[
            ("CONNECX__AMQP__URL", "amqp://h"),
            ("CONNECX__AMQP__PREFETCH", "7"),
            ("CONNECX__KEY", "0123456789"),
        ]))
        .unwrap();
        assert_eq!(loaded.key, "0123456789");
        assert_eq!(loaded.amqp.prefetch, 7, "numbers are still read as numbers");
    }

    #[test]
    fn a_missing_key_is_named() {
        let err = load_with_env::<Example>(env(&[("CONNECX__DATABASE__URL", "postgres://h/db")]))
            .unwrap_err();
        assert!(err.to_string().contains("amqp"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_environment_variable() {
        let err = load_with_env::<Example>(env(&[
            ("CONNECX__DATABASE__URL", "mysql://h/db"),
            ("CONNECX__AMQP__URL", "amqp://h"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("CONNECX__DATABASE__URL"), "{err}");
        let err = load_with_env::<Example>(env(&[
            ("CONNECX__DATABASE__URL", "postgres://h/db"),
            ("CONNECX__AMQP__URL", "amqp://h"),
            ("CONNECX__RETRY__TIERS", "10s,soon"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn a_tls_root_certificate_that_cannot_be_read_is_named_at_start() {
        let err = load_with_env::<MigrateSettings>(env(&[(
            "CONNECX__DATABASE__URL",
            "postgres://u:secret@db.example/connecx?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("CONNECX__DATABASE__URL"), "{err}");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(!err.contains("secret"), "{err}");

        let err = load_with_env::<MigrateSettings>(env(&[(
            "CONNECX__DATABASE__URL",
            "postgres://h/db?sslmode=very-secure",
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("CONNECX__DATABASE__URL"), "{err}");

        // Without verification the file is not read (libpq's rule too).
        load_with_env::<MigrateSettings>(env(&[(
            "CONNECX__DATABASE__URL",
            "postgres://h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem",
        )]))
        .unwrap();
    }

    #[test]
    fn the_migrate_command_needs_only_the_database_url() {
        let loaded: MigrateSettings =
            load_with_env(env(&[("CONNECX__DATABASE__URL", "postgres://h/db")])).unwrap();
        assert_eq!(loaded.database.url, "postgres://h/db");
        assert_eq!(loaded.log.format, LogFormat::Pretty);
        let err =
            load_with_env::<MigrateSettings>(env(&[("CONNECX__SMTP__HOST", "mail")])).unwrap_err();
        assert!(err.to_string().contains("database"), "{err}");
    }

    #[test]
    fn retry_tiers_default_to_the_design_and_count_from_one() {
        let tiers = RetryTiers::default();
        assert_eq!(tiers.delay_before(1), Some(Duration::from_secs(10)));
        assert_eq!(tiers.delay_before(5), Some(Duration::from_secs(7200)));
        assert_eq!(tiers.delay_before(6), None);
        assert_eq!(tiers.delay_before(0), None);
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("amqp://guest:guest@h:5672/%2f"),
            "amqp://guest:<redacted>@h:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
    }

    #[test]
    fn credentials_never_go_over_a_plain_smtp_connection_unless_allowed() {
        let smtp = |tls: SmtpTls, allow_plain_auth: bool| SmtpSettings {
            host: "mail.example".into(),
            port: 587,
            username: Some("connecx".into()),
            password: Some("secret".into()),
            tls,
            from: "connecX <no-reply@connecx.example>".into(),
            timeout_secs: 10,
            allow_plain_auth,
        };
        let err = smtp(SmtpTls::None, false).validate().unwrap_err();
        assert!(err.to_string().contains("CONNECX__SMTP__USERNAME"), "{err}");
        assert!(
            err.to_string().contains("CONNECX__SMTP__ALLOW_PLAIN_AUTH"),
            "{err}"
        );
        assert!(smtp(SmtpTls::None, true).validate().is_ok());
        assert!(smtp(SmtpTls::Starttls, false).validate().is_ok());
        assert!(smtp(SmtpTls::Tls, false).validate().is_ok());
        let anonymous = SmtpSettings {
            username: None,
            password: None,
            ..smtp(SmtpTls::None, false)
        };
        assert!(
            anonymous.validate().is_ok(),
            "a local sink without credentials"
        );
    }
}

#[cfg(test)]
mod shared_settings_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A service's settings as every service writes them: the shared sections flattened in.
    #[derive(Debug, Deserialize)]
    struct ExampleService {
        #[serde(flatten)]
        shared: SharedSettings,
        own: Option<String>,
    }

    impl Validate for ExampleService {
        fn validate(&self) -> Result<(), ConfigError> {
            self.shared.validate()
        }
    }

    fn load(extra: &[(&str, &str)]) -> Result<ExampleService, ConfigError> {
        let mut env: HashMap<String, String> = [
            ("CONNECX__DATABASE__URL", "postgres://u@h/db"),
            ("CONNECX__AMQP__URL", "amqp://guest:guest@h:5672/%2f"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        load_with_env(Some(env))
    }

    #[test]
    fn the_shared_sections_keep_their_keys_and_read_numbers_from_the_environment() {
        let loaded = load(&[
            ("CONNECX__DATABASE__MAX_CONNECTIONS", "3"),
            ("CONNECX__AMQP__PREFETCH", "4"),
            ("CONNECX__AMQP__DELIVERY_LIMIT", "6"),
            ("CONNECX__AMQP__DRAIN_TIMEOUT_SECS", "7"),
            ("CONNECX__HEALTH__PORT", "9100"),
            ("CONNECX__LOG__FORMAT", "json"),
            ("CONNECX__RETRY__TIERS", "1s,2m"),
            ("CONNECX__OWN", "0042"),
        ])
        .unwrap();
        let shared = &loaded.shared;
        assert_eq!(shared.database.max_connections, 3);
        assert_eq!(shared.amqp.prefetch, 4);
        assert_eq!(shared.amqp.delivery_limit, 6);
        assert_eq!(shared.amqp.drain_timeout_secs, 7);
        assert_eq!(shared.health.port, Some(9100));
        assert_eq!(shared.log.format, LogFormat::Json);
        assert_eq!(shared.retry.tiers.len(), 2);
        // The service's own text keys stay text, leading zeros and all.
        assert_eq!(loaded.own.as_deref(), Some("0042"));
    }

    #[test]
    fn defaults_fill_what_the_environment_leaves_out() {
        let shared = load(&[]).unwrap().shared;
        assert_eq!(shared.database.max_connections, 10);
        assert_eq!(shared.amqp.prefetch, 16);
        assert_eq!(shared.health.port, None);
        assert_eq!(shared.retry, RetrySettings::default());
    }

    #[test]
    fn a_bad_number_in_a_shared_section_names_its_environment_variable() {
        for (env, value) in [
            ("CONNECX__DATABASE__MAX_CONNECTIONS", "many"),
            ("CONNECX__AMQP__PREFETCH", "70000"),
            ("CONNECX__AMQP__DELIVERY_LIMIT", "-1"),
            ("CONNECX__AMQP__DRAIN_TIMEOUT_SECS", "30s"),
            ("CONNECX__HEALTH__PORT", "http"),
        ] {
            let err = load(&[(env, value)]).unwrap_err().to_string();
            assert!(err.contains(env) && err.contains(value), "{env}: {err}");
        }
    }

    #[test]
    fn a_missing_shared_section_is_named() {
        let env: HashMap<String, String> = [(
            "CONNECX__DATABASE__URL".to_owned(),
            "postgres://u@h/db".to_owned(),
        )]
        .into();
        let err = load_with_env::<ExampleService>(Some(env)).unwrap_err();
        assert!(err.to_string().contains("amqp"), "{err}");
    }
}
