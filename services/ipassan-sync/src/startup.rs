//! ipassan-sync: visitor bookings → iPassan visitors with a PIN (docs/architecture.md, "Visitor bookings and iPassan").
//!
//! For each `visitor_booking.*` event the worker converges iPassan to the latest version of the
//! booking it has seen: a booking with "provide access" gets a visitor attached to the resident,
//! inheriting the resident's access profile for exactly the visit window (site-local time), with
//! a PIN; a reschedule moves the window (same PIN); a cancellation revokes the PIN. Each outcome
//! is published as `visitor_access.{granted,updated,revoked,failed}.v1`.
//!
//! Each building's visitors go to its own iPassan tenant when an operator connected one, else to
//! the deployment default ([`tenants`]).
//!
//! Modules: [`decision`] the pure rules; [`store`] this service's schema; [`tenants`] which tenant
//! and one client each (the client itself is the `ipassan-client` crate); [`handler`] the step
//! that ties them together; [`settings`] the configuration.

pub mod decision;
pub mod handler;
pub mod retention;
pub mod settings;
pub mod store;
pub mod tenants;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// How long one call to a building's own tenant may take when no default sets it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Application {
    settings: Settings,
    pool: PgPool,
    tenants: Arc<tenants::Tenants>,
    health: platform::health::HealthServer,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        let sealer = settings.secrets.sealer()?.map(Arc::new);
        let bulkheads = Arc::new(platform::bulkhead::Bulkheads::new(
            contracts::AccessSystem::Ipassan,
            &settings.connections,
        ));
        bulkheads.warn_unless_below(settings.amqp.prefetch);
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
        let pool = platform::db::connect_and_migrate(&settings.database, SCHEMA, &MIGRATOR).await?;
        check_sealed_secrets(&pool, sealer.as_deref()).await?;
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
            tenants,
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
            "ipassan-sync",
            retention::SnapshotEraser,
            token.clone(),
        ));
        let handler = BookingEvents::new(self.pool.clone(), self.tenants, publisher);
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
) -> Result<(), BuildError> {
    let stored = store::all_tenants(pool).await?;
    for (tenant, connection) in &stored {
        match tenants::reseal(sealer, connection) {
            Ok(None) => {}
            Ok(Some(resealed)) => {
                store::reseal_tenant(pool, tenant, connection, &resealed).await?;
                tracing::info!(tenant, "client secret re-sealed under the current key");
            }
            Err(reason) => {
                return Err(BuildError::Secrets {
                    tenant: tenant.clone(),
                    reason,
                });
            }
        }
    }
    Ok(())
}
