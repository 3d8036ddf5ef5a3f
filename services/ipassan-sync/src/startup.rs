//! Building and running the service (docs/architecture.md, "Configuration and operation"):
//! [`Application::build`] checks the configured secrets, migrates the schema, re-seals stored
//! tenant secrets and binds the health port; [`Application::run_until_stopped`] then consumes
//! `ipassan-sync` beside the outage watch and the retention eraser, all stopped by one shutdown
//! future, so tests can build the service and stop it mid-flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use contracts::IPASSAN_SYNC_QUEUE;
use platform::amqp::{Publisher, Worker};

use crate::handler::BookingEvents;
use crate::settings::{IpassanSettings, Settings};
use crate::{MIGRATOR, SCHEMA, SERVICE, retention, store, tenants};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] platform::db::DbError),
    #[error("cannot set up the iPassan client: {0}")]
    Ipassan(#[from] ipassan_client::IpassanError),
    #[error("cannot open the health port: {0}")]
    Health(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(#[from] platform::config::ConfigError),
    /// Sealed secrets are stored that the configured keys cannot open.
    #[error(
        "the client secret of iPassan tenant {tenant} cannot be opened ({reason}); set \
         CONNECX__SECRETS__KEY (or add the key it was sealed under to \
         CONNECX__SECRETS__PREVIOUS_KEYS)"
    )]
    Secrets { tenant: String, reason: String },
    #[error("reading the stored tenants: {0}")]
    Store(#[from] store::StoreError),
}

/// Why the service stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the ipassan-sync consumer failed: {0}")]
    Consumer(#[source] platform::amqp::WorkerError),
}

/// How long one call to a building's own tenant may take when no default sets it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A built, not yet running, ipassan-sync: its database migrated, its secrets checked, its
/// tenants' clients ready and its health port bound.
pub struct Application {
    settings: Settings,
    pool: PgPool,
    tenants: Arc<tenants::Tenants>,
    health: platform::health::HealthServer,
}

impl Application {
    /// Sets up the tenants' clients, connects and migrates the database, opens (and re-seals)
    /// the stored tenants' secrets and binds the health port (port 0 picks a free one). The
    /// broker is not needed yet: the worker connects when it runs.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let sealer = settings.secrets.sealer()?.map(Arc::new);
        let bulkheads = Arc::new(platform::bulkhead::Bulkheads::new(
            contracts::AccessSystem::Ipassan,
            &settings.connections,
        ));
        bulkheads.warn_unless_below(settings.shared.amqp.prefetch);
        let tenants = Arc::new(tenants::Tenants::new(
            settings
                .ipassan
                .as_ref()
                .map(IpassanSettings::tenant_settings),
            sealer.clone(),
            settings
                .ipassan
                .as_ref()
                .map_or(DEFAULT_TIMEOUT, |d| Duration::from_secs(d.timeout_secs)),
            bulkheads,
        )?);
        if settings.ipassan.is_none() {
            tracing::warn!(
                "no default iPassan (CONNECX__IPASSAN__BASE_URL): only buildings with their own \
                 connection get visitor access"
            );
        }
        let shared = &settings.shared;
        let pool = platform::db::connect_and_migrate(&shared.database, SCHEMA, &MIGRATOR).await?;
        check_sealed_secrets(&pool, sealer.as_deref()).await?;
        settings
            .batch
            .warn_unless_pool_holds(shared.database.max_connections, shared.amqp.prefetch);
        let health = platform::health::HealthServer::bind(&shared.health).await?;
        Ok(Self {
            settings,
            pool,
            tenants,
            health,
        })
    }

    /// The health/metrics port, when one is configured.
    pub fn health_port(&self) -> Option<u16> {
        self.health.port()
    }

    /// Consumes until `shutdown` completes; in-flight messages finish first (for at most
    /// `CONNECX__AMQP__DRAIN_TIMEOUT_SECS`, then they go back to the broker).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let token = platform::shutdown::token_for(shutdown);
        let publisher = Publisher::new(&self.settings.shared.amqp, SERVICE);
        let outages = platform::outages::OutageWatch {
            pool: self.pool.clone(),
            publisher: publisher.clone(),
            bulkheads: self.tenants.bulkheads().clone(),
        };
        let watching = tokio::spawn(outages.run(token.clone()));
        let erasing = tokio::spawn(platform::retention::run(
            self.pool.clone(),
            Arc::new(platform::clock::SystemClock),
            self.settings.retention,
            SERVICE,
            retention::SnapshotEraser,
            token.clone(),
        ));
        let handler = BookingEvents::new(
            self.pool.clone(),
            self.tenants,
            publisher,
            self.settings.batch,
        );
        let worker = Worker::new(
            IPASSAN_SYNC_QUEUE,
            self.settings.shared.amqp.clone(),
            self.settings.shared.retry.tiers.clone(),
            handler,
        );
        let readiness = platform::health::worker_readiness(
            self.pool.clone(),
            vec![(IPASSAN_SYNC_QUEUE.name, worker.attached())],
        );
        self.health.serve(readiness, token.clone());
        worker.run(token).await.map_err(RunError::Consumer)?;
        let _ = watching.await;
        let _ = erasing.await;
        self.pool.close().await;
        Ok(())
    }
}

/// Opens the client secret of every stored tenant: one that cannot be opened stops the start
/// (naming the tenant and the key), and one sealed under a previous key is written back sealed
/// under the current one.
async fn check_sealed_secrets(
    pool: &PgPool,
    sealer: Option<&platform::secrets::Sealer>,
) -> Result<(), StartupError> {
    let stored = store::all_tenants(pool).await?;
    for (tenant, connection) in &stored {
        match tenants::reseal(sealer, connection) {
            Ok(None) => {}
            Ok(Some(resealed)) => {
                store::reseal_tenant(pool, tenant, connection, &resealed).await?;
                tracing::info!(tenant, "client secret re-sealed under the current key");
            }
            Err(reason) => {
                return Err(StartupError::Secrets {
                    tenant: tenant.clone(),
                    reason,
                });
            }
        }
    }
    Ok(())
}
