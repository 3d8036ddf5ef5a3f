//! Building and running the service: the database (migrated), the HTTP listener, and the three
//! long-running parts — HTTP server, outbox relay and results consumer — plus the notification
//! listener they share, all stopped by one shutdown future (docs/architecture.md, "Configuration and operation").

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use platform::amqp::{Publisher, Worker};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::outbox::Relay;
use crate::pg_notify::PgNotifyHub;
use crate::results::ResultsHandler;
use crate::settings::Settings;
use crate::state::AppState;

/// The `booking` schema's migrations, run at start and by `booking-api migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The database schema this service owns.
pub const SCHEMA: &str = "booking";

/// How long background tasks may take to finish after the server stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] platform::db::DbError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(#[from] platform::config::ConfigError),
    /// Sealed secrets are stored that the configured keys cannot open: starting would only fail
    /// every booking of those buildings later.
    #[error(
        "{0}; set CONNECX__SECRETS__KEY (or add the key they were sealed under to CONNECX__SECRETS__PREVIOUS_KEYS)"
    )]
    Secrets(#[from] crate::connections::UnopenableSecret),
    #[error("reading the stored connections: {0}")]
    Connections(#[source] sqlx::Error),
}

/// Why the service stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("HTTP server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error("results consumer failed: {0}")]
    Consumer(#[source] platform::amqp::WorkerError),
    #[error("a background task panicked: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// A built, not yet running, booking-api.
pub struct Application {
    settings: Settings,
    sealer: Option<Arc<platform::secrets::Sealer>>,
    pool: PgPool,
    listener: TcpListener,
    port: u16,
}

impl Application {
    /// Connects and migrates the database and binds the listener (port 0 picks a free one). The
    /// broker is not needed yet: bookings are accepted while it is down, and published later.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let sealer = settings.secrets.sealer()?.map(Arc::new);
        let pool =
            platform::db::connect_and_migrate(&settings.shared.database, SCHEMA, &MIGRATOR).await?;
        check_sealed_secrets(&pool, sealer.as_deref()).await?;
        let address = format!("{}:{}", settings.http.host, settings.http.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| StartupError::Bind {
                address: address.clone(),
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?
            .port();
        Ok(Self {
            settings,
            sealer,
            pool,
            listener,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's pool (tests look at the outbox through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves HTTP, relays the outbox and consumes results until `shutdown` completes, then stops
    /// taking requests, lets in-flight ones finish, and stops the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let token = platform::shutdown::token_for(shutdown);
        let Self {
            settings,
            sealer,
            pool,
            listener,
            port,
        } = self;
        let publisher = Publisher::new(&settings.shared.amqp, "booking-api");
        let pg_notify = PgNotifyHub::new();
        let relay_wake = crate::outbox::RelayWake::default();
        let state = AppState {
            pool: pool.clone(),
            authenticator: Arc::new(
                Authenticator::hs256(&settings.auth.jwt_secret, settings.auth.leeway_secs)
                    .expecting(
                        settings.auth.issuer.as_deref(),
                        settings.auth.audience.as_deref(),
                    ),
            ),
            broker: crate::broker_health::BrokerHealth::default(),
            pg_notify: pg_notify.clone(),
            relay_wake: relay_wake.clone(),
            shutdown: token.clone(),
            prometheus: crate::http_metrics::prometheus(),
            sealer,
            defaults: settings.deployment_defaults(),
            limits: settings.limits,
            write_limiter: Arc::new(crate::rate_limit::WriteLimiter::new(&settings.limits)),
        };

        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(pg_notify.clone().run_listener(pool.clone(), token.clone()));
        tasks.spawn(state.broker.clone().watch(publisher.clone(), token.clone()));
        let relay = Relay::new(pool.clone(), publisher, relay_wake, settings.outbox.clone());
        tasks.spawn(relay.run(token.clone()));
        tasks.spawn(Arc::clone(&state.write_limiter).forget_idle(token.clone()));
        tasks.spawn(platform::retention::run(
            pool.clone(),
            Arc::new(platform::clock::SystemClock),
            settings.retention,
            "booking-api",
            crate::retention::BookingEraser,
            token.clone(),
        ));
        tasks.spawn(housekeeping(
            pool.clone(),
            settings.outbox.retention_hours,
            token.clone(),
        ));
        let consumer_token = token.clone();
        let consumer = Worker::new(
            contracts::BOOKING_API_RESULTS_QUEUE,
            settings.shared.amqp.clone(),
            settings.shared.retry.tiers.clone(),
            ResultsHandler::new(pool.clone(), settings.batch),
        );
        let consumer = tokio::spawn(async move { consumer.run(consumer_token).await });

        let request_timeout = Duration::from_secs(settings.http.request_timeout_secs);
        let app = crate::routes::router(state, request_timeout);
        tracing::info!(port, "booking-api listening");
        let served = serve(listener, app, &settings.http, token.clone()).await;
        // However the server ended, everything else stops too.
        token.cancel();

        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            let mut first_error = None;
            while let Some(joined) = tasks.join_next().await {
                if let Err(error) = joined {
                    first_error.get_or_insert(RunError::Task(error));
                }
            }
            match consumer.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(RunError::Consumer(error));
                }
                Err(error) => {
                    first_error.get_or_insert(RunError::Task(error));
                }
            }
            first_error
        })
        .await;
        pool.close().await;
        served.map_err(RunError::Server)?;
        match drained {
            Ok(Some(error)) => Err(error),
            Ok(None) => {
                tracing::info!("booking-api stopped");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    "background tasks did not stop within {DRAIN_TIMEOUT:?}; stopping anyway"
                );
                Ok(())
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets requests in flight finish (for at most
/// the request timeout). A connection whose request headers do not all arrive within
/// `CONNECX__HTTP__HEADER_READ_TIMEOUT_SECS` is closed, so slow clients cannot hold connections;
/// the whole request is bounded by the router's timeout.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    http: &platform::config::HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let grace = Duration::from_secs(http.request_timeout_secs);
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(grace));
    });
    let mut server = axum_server::from_tcp(listener.into_std()?)?.handle(handle);
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(Duration::from_secs(http.header_read_timeout_secs)));
    server.serve(app.into_make_service()).await
}

/// Hourly: forget idempotency keys older than 24 h and sent outbox rows past their retention.
async fn housekeeping(pool: PgPool, retention_hours: u64, shutdown: CancellationToken) {
    let retention = Duration::from_secs(retention_hours.saturating_mul(3600));
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every_hour.tick() => {}
        }
        match crate::idempotency::purge_expired(&pool).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "expired idempotency keys deleted"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot delete expired idempotency keys"),
        }
        match crate::outbox::purge_sent(&pool, retention).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "old sent outbox rows deleted"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot delete old outbox rows"),
        }
    }
}

/// Opens every sealed secret of the stored connections: one that cannot be opened stops the
/// start (naming the building, the system and the key), and one sealed under a previous key is
/// written back sealed under the current one.
async fn check_sealed_secrets(
    pool: &PgPool,
    sealer: Option<&platform::secrets::Sealer>,
) -> Result<(), StartupError> {
    let rows = crate::store::connections::all_connected(pool)
        .await
        .map_err(StartupError::Connections)?;
    let mut resealed = 0;
    for row in &rows {
        if let Some(settings) = crate::connections::open_all(row, sealer)?
            && crate::store::connections::reseal(pool, row, &settings)
                .await
                .map_err(StartupError::Connections)?
        {
            resealed += 1;
        }
    }
    if !rows.is_empty() {
        tracing::info!(
            connections = rows.len(),
            resealed,
            "stored connection secrets open"
        );
    }
    Ok(())
}
