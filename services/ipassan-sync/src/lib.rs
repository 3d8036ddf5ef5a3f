//! ipassan-sync: visitor bookings → iPassan visitors with a PIN (DESIGN §7).
//!
//! For each `visitor_booking.*` event the worker converges iPassan to the latest version of the
//! booking it has seen: a booking with "provide access" gets a visitor attached to the resident,
//! inheriting the resident's access profile for exactly the visit window (site-local time), with
//! a PIN; a reschedule moves the window (same PIN); a cancellation revokes the PIN. Each outcome
//! is published as `visitor_access.{granted,updated,revoked,failed}.v1`.
//!
//! Modules: [`ipassan`] is the typed HTTP client of the contract; [`decision`] the pure rules;
//! [`store`] this service's schema; [`handler`] the step that ties them together; [`visit`] the
//! window and name formats iPassan wants; [`settings`] the configuration.

pub mod decision;
pub mod handler;
pub mod ipassan;
pub mod settings;
pub mod store;
pub mod visit;

use std::future::Future;
use std::sync::Arc;

use sqlx::PgPool;

use contracts::IPASSAN_SYNC_QUEUE;
use platform::amqp::{Publisher, Worker};

pub use handler::BookingEvents;
pub use settings::{IpassanSettings, Settings};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// This service's schema in the shared database.
pub const SCHEMA: &str = "ipassan_sync";

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Database(#[from] platform::db::DbError),
    #[error("cannot set up the iPassan client: {0}")]
    Ipassan(#[from] ipassan::IpassanError),
    #[error("cannot open the health port: {0}")]
    Health(#[from] std::io::Error),
}

pub struct Application {
    settings: Settings,
    pool: PgPool,
    ipassan: Arc<ipassan::IpassanClient>,
    health: platform::health::HealthServer,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        let ipassan = Arc::new(ipassan::IpassanClient::new(&settings.ipassan)?);
        let pool = platform::db::connect_and_migrate(&settings.database, SCHEMA, &MIGRATOR).await?;
        if settings.database.max_connections < u32::from(settings.amqp.prefetch) {
            // Each message in flight holds one connection (its booking's lock) while it talks
            // to iPassan; fewer connections than messages makes some wait for one.
            tracing::warn!(
                max_connections = settings.database.max_connections,
                prefetch = settings.amqp.prefetch,
                "database pool smaller than the prefetch; messages may wait for a connection"
            );
        }
        let health = platform::health::HealthServer::bind(&settings.health).await?;
        Ok(Self {
            settings,
            pool,
            ipassan,
            health,
        })
    }

    /// The health/metrics port, when one is configured.
    pub fn health_port(&self) -> Option<u16> {
        self.health.port()
    }

    /// Consumes until `shutdown` completes; in-flight messages finish first.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = platform::shutdown::token_for(shutdown);
        let publisher = Publisher::new(&self.settings.amqp, "ipassan-sync");
        let handler = BookingEvents::new(self.pool.clone(), self.ipassan, publisher);
        let worker = Worker::new(
            IPASSAN_SYNC_QUEUE,
            self.settings.amqp.clone(),
            self.settings.retry.tiers.clone(),
            handler,
        );
        let readiness = platform::health::worker_readiness(
            self.pool.clone(),
            vec![(IPASSAN_SYNC_QUEUE.name, worker.attached())],
        );
        self.health.serve(readiness, token.clone());
        worker.run(token).await?;
        self.pool.close().await;
        Ok(())
    }
}
