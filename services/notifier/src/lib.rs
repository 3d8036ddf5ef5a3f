//! notifier: turns outcomes into emails. Result events become mails to residents, visitors and
//! managers ([`results`], composed in [`mails`]); every message any worker (or the broker) gives
//! up on is stored and mailed to the building's managers ([`alerts`]), and the ops CLI lists,
//! shows, replays or discards those dead letters.

pub mod alerts;
pub mod calendar;
pub mod cli;
pub mod dead_letter;
pub mod delivery;
pub mod mailer;
pub mod mails;
pub mod results;
pub mod retention;
pub mod store;
pub mod templates;

use std::future::Future;

use serde::Deserialize;
use sqlx::PgPool;

use contracts::{NOTIFIER_DEAD_LETTERS_QUEUE, NOTIFIER_QUEUE};
use platform::amqp::Worker;
use platform::config::{
    AmqpSettings, ConfigError, DatabaseSettings, LogSettings, OpsSettings, RetrySettings,
    SmtpSettings, Validate,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The notifier's schema in the shared database.
pub const SCHEMA: &str = "notifier";

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub smtp: SmtpSettings,
    pub ops: OpsSettings,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub health: platform::health::HealthSettings,
    /// `CONNECX__RETENTION__*`: how long PINs and visitors' personal data are kept.
    #[serde(default)]
    pub retention: platform::retention::RetentionSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.amqp.validate()?;
        self.smtp.validate()?;
        self.retention.validate()?;
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

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] platform::db::DbError),
    #[error("SMTP settings: {0}")]
    Smtp(#[from] mailer::MailError),
    #[error("cannot open the health port: {0}")]
    Health(#[from] std::io::Error),
}

pub struct Application {
    settings: Settings,
    pool: PgPool,
    mailer: mailer::Mailer,
    health: platform::health::HealthServer,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let pool = platform::db::connect_and_migrate(&settings.database, SCHEMA, &MIGRATOR).await?;
        let mailer = mailer::Mailer::new(&settings.smtp)?;
        let health = platform::health::HealthServer::bind(&settings.health).await?;
        Ok(Self {
            settings,
            pool,
            mailer,
            health,
        })
    }

    /// The health/metrics port, when one is configured.
    pub fn health_port(&self) -> Option<u16> {
        self.health.port()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Consumes result events and dead letters until `shutdown` completes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = platform::shutdown::token_for(shutdown);
        let tiers = self.settings.retry.tiers.clone();
        let alerts = Worker::for_messages(
            NOTIFIER_DEAD_LETTERS_QUEUE,
            self.settings.amqp.clone(),
            tiers.clone(),
            alerts::DeadLetterAlerts {
                pool: self.pool.clone(),
                mailer: self.mailer.clone(),
                ops_address: self.settings.ops.alert_email.clone(),
            },
        );
        let results = Worker::new(
            NOTIFIER_QUEUE,
            self.settings.amqp.clone(),
            tiers,
            results::ResultMails {
                pool: self.pool.clone(),
                mailer: self.mailer.clone(),
                ops_address: self.settings.ops.alert_email.clone(),
            },
        );
        let readiness = platform::health::worker_readiness(
            self.pool.clone(),
            vec![
                (NOTIFIER_DEAD_LETTERS_QUEUE.name, alerts.attached()),
                (NOTIFIER_QUEUE.name, results.attached()),
            ],
        );
        self.health.serve(readiness, token.clone());
        let erasing = tokio::spawn(platform::retention::run(
            self.pool.clone(),
            std::sync::Arc::new(platform::clock::SystemClock),
            self.settings.retention,
            "notifier",
            retention::NotifierEraser,
            token.clone(),
        ));
        let (a, r) = tokio::join!(alerts.run(token.clone()), results.run(token.clone()));
        let _ = erasing.await;
        a?;
        r?;
        self.pool.close().await;
        Ok(())
    }
}

/// Connects what the ops CLI needs (the notifier's schema, migrated).
pub async fn cli_pool(settings: &CliSettings) -> Result<PgPool, StartupError> {
    Ok(platform::db::connect_and_migrate(&settings.database, SCHEMA, &MIGRATOR).await?)
}
