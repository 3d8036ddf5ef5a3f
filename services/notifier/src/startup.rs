//! Building and running the service (docs/architecture.md, "Configuration and operation"):
//! [`Application::build`] migrates the schema, checks the SMTP settings and binds the health
//! port; [`Application::run_until_stopped`] then consumes `notifier` (result events) and
//! `notifier.dead-letters` beside the retention eraser, all stopped by one shutdown future, so
//! tests can build the service and stop it mid-flight.

use std::future::Future;
use std::sync::Arc;

use sqlx::PgPool;

use contracts::{NOTIFIER_DEAD_LETTERS_QUEUE, NOTIFIER_QUEUE};
use platform::amqp::{Worker, WorkerError};

use crate::alerts::DeadLetterAlerts;
use crate::delivery::Mailroom;
use crate::mailer::{MailError, Mailer};
use crate::results::ResultMails;
use crate::settings::Settings;
use crate::{MIGRATOR, SCHEMA, SERVICE, retention};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] platform::db::DbError),
    #[error("SMTP settings: {0}")]
    Smtp(#[from] MailError),
    #[error("cannot open the health port: {0}")]
    Health(#[from] std::io::Error),
}

/// Why the service stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the notifier.dead-letters consumer failed: {0}")]
    DeadLetterConsumer(#[source] WorkerError),
    #[error("the notifier consumer failed: {0}")]
    ResultConsumer(#[source] WorkerError),
}

/// A built, not yet running, notifier: its database migrated, its mailer set up and its health
/// port bound.
pub struct Application {
    settings: Settings,
    pool: PgPool,
    mailer: Mailer,
    health: platform::health::HealthServer,
}

impl Application {
    /// Connects and migrates the database, sets up the SMTP client and binds the health port
    /// (port 0 picks a free one). Neither the broker nor the mail server is needed yet: the
    /// workers connect when they run, the mailer when it sends.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let shared = &settings.shared;
        let pool = platform::db::connect_and_migrate(&shared.database, SCHEMA, &MIGRATOR).await?;
        let mailer = Mailer::new(&settings.smtp)?;
        settings
            .batch
            .warn_unless_pool_holds(shared.database.max_connections, shared.amqp.prefetch);
        let health = platform::health::HealthServer::bind(&shared.health).await?;
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

    /// Consumes result events and dead letters until `shutdown` completes; in-flight messages
    /// finish first (for at most `CONNECX__AMQP__DRAIN_TIMEOUT_SECS`, then they go back to the
    /// broker).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let token = platform::shutdown::token_for(shutdown);
        let shared = &self.settings.shared;
        let mailroom = Mailroom {
            pool: self.pool.clone(),
            mailer: self.mailer.clone(),
            ops_address: self.settings.ops.alert_email.clone(),
        };
        let (amqp, tiers) = (&shared.amqp, &shared.retry.tiers);
        // Each dead letter holds a database connection while its alert is mailed (they are not
        // batched), so that consumer takes no more at once than the pool can serve beside the
        // results' batches.
        let alerts_amqp = platform::config::AmqpSettings {
            prefetch: alerts_prefetch(
                amqp.prefetch,
                shared.database.max_connections,
                self.settings.batch.max_running,
            ),
            ..amqp.clone()
        };
        let alerts = Worker::for_messages(
            NOTIFIER_DEAD_LETTERS_QUEUE,
            alerts_amqp,
            tiers.clone(),
            DeadLetterAlerts(mailroom.clone()),
        );
        let results = Worker::new(
            NOTIFIER_QUEUE,
            amqp.clone(),
            tiers.clone(),
            ResultMails::new(mailroom, self.settings.batch),
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
            Arc::new(platform::clock::SystemClock),
            self.settings.retention,
            SERVICE,
            retention::NotifierEraser,
            token.clone(),
        ));
        let (alerted, mailed) = tokio::join!(alerts.run(token.clone()), results.run(token));
        let _ = erasing.await;
        alerted.map_err(RunError::DeadLetterConsumer)?;
        mailed.map_err(RunError::ResultConsumer)?;
        self.pool.close().await;
        Ok(())
    }
}

/// The dead-letter consumer's prefetch: the configured one, but at most the pool's connections
/// less one for each running batch of results, and at least one.
fn alerts_prefetch(prefetch: u16, max_connections: u32, running_batches: usize) -> u16 {
    let batches = u32::try_from(running_batches).unwrap_or(u32::MAX);
    let room = u16::try_from(max_connections.saturating_sub(batches)).unwrap_or(u16::MAX);
    prefetch.min(room).max(1)
}

#[cfg(test)]
mod tests {
    use super::alerts_prefetch;

    #[test]
    fn the_alerts_take_no_more_at_once_than_the_pool_serves() {
        assert_eq!(alerts_prefetch(128, 10, 4), 6);
        assert_eq!(alerts_prefetch(4, 10, 4), 4);
        assert_eq!(alerts_prefetch(128, 2, 4), 1);
    }
}
