//! ipassan-sync: Visitor bookings → iPassan visitors with a PIN (DESIGN §7).
//!
//! This is the service's skeleton on the worker runtime: it consumes `visitor_booking.*` events,
//! applies the version rule (it keeps the newest snapshot of each booking and skips older ones),
//! logs and acknowledges. Talking to iPassan arrives with its integration; until then no access is
//! granted and no success event is published.

use std::future::Future;

use serde::Deserialize;
use sqlx::PgPool;

use contracts::{Envelope, IPASSAN_SYNC_QUEUE};
use platform::amqp::{EventHandler, HandlerError, Worker};
use platform::config::{
    AmqpSettings, ConfigError, DatabaseSettings, LogSettings, RetrySettings, Validate,
};
use platform::snapshots::{self, Recorded};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// This service's schema in the shared database.
pub const SCHEMA: &str = "ipassan_sync";

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub log: LogSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.amqp.validate()
    }
}

pub struct Application {
    settings: Settings,
    pool: PgPool,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, platform::db::DbError> {
        let pool = platform::db::connect_and_migrate(&settings.database, SCHEMA, &MIGRATOR).await?;
        Ok(Self { settings, pool })
    }

    /// Consumes until `shutdown` completes; in-flight messages finish first.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = platform::shutdown::token_for(shutdown);
        let handler = BookingEvents {
            pool: self.pool.clone(),
        };
        Worker::new(
            IPASSAN_SYNC_QUEUE,
            self.settings.amqp.clone(),
            self.settings.retry.tiers.clone(),
            handler,
        )
        .run(token)
        .await?;
        self.pool.close().await;
        Ok(())
    }
}

/// Records each booking event under the version rule.
pub struct BookingEvents {
    pool: PgPool,
}

impl EventHandler for BookingEvents {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        let recorded = snapshots::record(&self.pool, &envelope)
            .await
            .map_err(|e| HandlerError::Transient(format!("database: {e}")))?;
        match recorded {
            Recorded::Older => tracing::info!(
                booking_id = %envelope.booking_id, version = envelope.version,
                "older than the version held; skipped"
            ),
            Recorded::Newer | Recorded::Same => tracing::info!(
                booking_id = %envelope.booking_id, version = envelope.version,
                event_type = envelope.routing_key(),
                "recorded; iPassan integration not enabled yet"
            ),
        }
        Ok(())
    }
}
