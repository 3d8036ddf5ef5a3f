//! Building and running the service (docs/architecture.md, "Configuration and operation"):
//! [`Application::build`] opens the secrets, connects and migrates the database, checks the stored
//! servers and binds the health port; [`Application::run_until_stopped`] consumes
//! `facility_booking.*` and `salto_connection.*`, runs the nightly cleaner and watches the
//! servers' outages until its shutdown future completes.

use std::future::Future;
use std::sync::Arc;

use sqlx::PgPool;
use tokio_cron_scheduler::JobSchedulerError;

use contracts::SALTO_SYNC_QUEUE;
use platform::amqp::{Publisher, Worker, WorkerError};
use platform::clock::{Clock, SystemClock};

use crate::context::Context;
use crate::settings::{SaltoSettings, Settings};
use crate::{MIGRATOR, SCHEMA, cleaner, handler, servers, store, timetables};

/// Connections of the ledger transactions' journal pool ([`Context::journal`]): its writes are one
/// short statement each.
const JOURNAL_CONNECTIONS: u32 = 2;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Db(#[from] platform::db::DbError),
    #[error(transparent)]
    Ship(#[from] salto_ship::ClientBuildError),
    #[error("cannot open the health port: {0}")]
    Health(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(#[from] platform::config::ConfigError),
    /// Sealed secrets are stored that the configured keys cannot open.
    #[error(
        "a secret of Salto server {server} cannot be opened ({reason}); set \
         CONNECX__SECRETS__KEY (or add the key it was sealed under to \
         CONNECX__SECRETS__PREVIOUS_KEYS)"
    )]
    Secrets { server: String, reason: String },
    #[error("reading the stored servers: {0}")]
    Store(#[from] sqlx::Error),
}

/// Why the service stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the nightly cleaner could not be scheduled: {0}")]
    Scheduler(#[source] JobSchedulerError),
    #[error("the booking events worker failed: {0}")]
    Worker(#[source] WorkerError),
}

/// A built, not yet running, salto-sync.
pub struct Application {
    settings: Settings,
    ctx: Context,
    /// The nightly clearing's own pool ([`crate::settings::CleanerSettings::connections`]).
    cleaner_pool: PgPool,
    health: platform::health::HealthServer,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], with the clock the cleaner and the date rules read (tests).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let shared = &settings.shared;
        let sealer = settings.secrets.sealer()?.map(Arc::new);
        let bulkheads = Arc::new(platform::bulkhead::Bulkheads::new(
            contracts::AccessSystem::Salto,
            &settings.connections,
        ));
        // Batched, the messages in flight to one server are its running batches, each one
        // admission however many messages it holds.
        if !settings.batch.batching() {
            bulkheads.warn_unless_below(shared.amqp.prefetch);
        }
        let servers = Arc::new(servers::Servers::new(
            settings.salto.as_ref().map(SaltoSettings::ship_settings),
            sealer.clone(),
            bulkheads,
        )?);
        settings
            .batch
            .warn_unless_pool_holds(shared.database.max_connections, shared.amqp.prefetch);
        let pool = platform::db::connect_and_migrate(&shared.database, SCHEMA, &MIGRATOR).await?;
        check_sealed_secrets(&pool, sealer.as_deref()).await?;
        match servers.default_key() {
            Some(default) => {
                let adopted = store::servers::adopt_rows_of_the_default(&pool, default).await?;
                if adopted > 0 {
                    tracing::info!(
                        adopted,
                        server = default,
                        "ledger rows from before servers were known belong to the default server"
                    );
                }
            }
            None => {
                tracing::warn!(
                    "no default Salto (CONNECX__SALTO__URL): only buildings with their own \
                     connection get facility access"
                );
                if store::servers::rows_without_server(&pool).await? {
                    tracing::error!(
                        "the ledger holds permissions granted on the default Salto, and none is \
                         configured now: set CONNECX__SALTO__URL to clear them"
                    );
                }
            }
        }
        let journal =
            platform::db::connect_pool(&shared.database, SCHEMA, JOURNAL_CONNECTIONS).await?;
        // The night's claims and batches on a pool of their own: at midnight the messages still
        // find every connection of theirs, and the batches never wait behind the messages'.
        let cleaner_pool = platform::db::sibling_pool(&pool, settings.cleaner.connections());
        let sweeper = timetables::Sweeper::new(pool.clone(), servers.clone());
        let ctx = Context {
            pool,
            journal,
            servers,
            sweeper,
            publisher: Publisher::new(&shared.amqp, "salto-sync"),
            clock,
            buildings_remembered: Default::default(),
        };
        let health = platform::health::HealthServer::bind(&shared.health).await?;
        Ok(Self {
            settings,
            ctx,
            cleaner_pool,
            health,
        })
    }

    /// The health/metrics port, when one is configured.
    pub fn health_port(&self) -> Option<u16> {
        self.health.port()
    }

    pub fn pool(&self) -> &PgPool {
        &self.ctx.pool
    }

    /// The nightly cleaner, for running a tick by hand (tools, tests).
    pub fn cleaner(&self) -> cleaner::Cleaner {
        let ctx = Context {
            pool: self.cleaner_pool.clone(),
            ..self.ctx.clone()
        };
        cleaner::Cleaner::new(ctx, &self.settings.cleaner)
    }

    /// Consumes and runs the cleaner until `shutdown` completes; in-flight messages finish first.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let token = platform::shutdown::token_for(shutdown);
        let mut scheduler =
            cleaner::schedule(Arc::new(self.cleaner()), &self.settings.cleaner.tick)
                .await
                .map_err(RunError::Scheduler)?;
        let handler = handler::BookingEvents::new(self.ctx.clone(), self.settings.batch);
        let worker = Worker::new(
            SALTO_SYNC_QUEUE,
            self.settings.shared.amqp.clone(),
            self.settings.shared.retry.tiers.clone(),
            handler,
        );
        let readiness = platform::health::worker_readiness(
            self.ctx.pool.clone(),
            vec![(SALTO_SYNC_QUEUE.name, worker.attached())],
        );
        self.health.serve(readiness, token.clone());
        let outages = platform::outages::OutageWatch {
            pool: self.ctx.pool.clone(),
            publisher: self.ctx.publisher.clone(),
            bulkheads: self.ctx.servers.bulkheads().clone(),
        };
        let watching = tokio::spawn(outages.run(token.clone()));
        let outcome = worker.run(token).await;
        let _ = watching.await;
        if let Err(error) = scheduler.shutdown().await {
            tracing::warn!(%error, "cleaner scheduler did not stop cleanly");
        }
        self.cleaner_pool.close().await;
        self.ctx.pool.close().await;
        outcome.map_err(RunError::Worker)
    }
}

/// Opens the secrets of every stored server: one that cannot be opened stops the start (naming
/// the server and the key), and one sealed under a previous key is written back sealed under the
/// current one.
async fn check_sealed_secrets(
    pool: &PgPool,
    sealer: Option<&platform::secrets::Sealer>,
) -> Result<(), StartupError> {
    for (server, stored) in store::servers::all_stored(pool).await? {
        match servers::reseal(sealer, &stored) {
            Ok(None) => {}
            Ok(Some(resealed)) => {
                store::servers::reseal_stored(pool, &server, &stored, &resealed).await?;
                tracing::info!(server, "secrets re-sealed under the current key");
            }
            Err(reason) => return Err(StartupError::Secrets { server, reason }),
        }
    }
    Ok(())
}
