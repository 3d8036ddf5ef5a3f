//! Outage mails (docs/architecture.md, "Many buildings"): when a building's iPassan or Salto has
//! been failing for longer than `CONNECX__CONNECTIONS__OUTAGE_ALERT_SECS` (default 5 minutes),
//! the worker that uses it publishes one `connection.down.v1` per building ("bookings are
//! waiting, nothing is lost"), and one `connection.recovered.v1` when it works again. One mail
//! per outage, never one per booking, whichever replica notices.
//!
//! An outage is a row of the worker's own `connection_outages` table, claimed in a transaction
//! that publishes the event before it commits (a failed publish gives the claim back for the next
//! look). Each worker's migration creates the table in its own schema:
//! ```sql
//! CREATE TABLE connection_outages (
//!     id bigserial PRIMARY KEY, building_id text NOT NULL, endpoint text NOT NULL,
//!     failing_since timestamptz NOT NULL, last_error text NOT NULL,
//!     announced_at timestamptz NOT NULL DEFAULT now(), recovered_at timestamptz);
//! CREATE UNIQUE INDEX connection_outages_open ON connection_outages (building_id)
//!     WHERE recovered_at IS NULL;
//! ```
//! A replica whose own view of a connection is stale announces nothing: only failures seen within
//! the alert time open an outage, and only an answer seen after the announcement ends it. Within
//! the alert time after a recovery, no replica announces the building's connection down again
//! (replicas see an outage end at slightly different times).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use contracts::{AccessSystem, Building, ConnectionHealth, Envelope, Event, connection_subject};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::amqp::{PublishError, Publisher};
use crate::bulkhead::{Bulkheads, Health};

/// Namespace of outage event ids (a fixed random UUID).
const OUTAGE_NAMESPACE: Uuid = Uuid::from_u128(0x51c0_7e2a_93d4_4f18_8b6e_0a2d_c9f3_7e41);

#[derive(Debug, thiserror::Error)]
pub enum OutageError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publishing: {0}")]
    Publish(#[from] PublishError),
}

/// Looks at every connection's health now and then, and announces outages and recoveries.
pub struct OutageWatch {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub bulkheads: Arc<Bulkheads>,
}

impl OutageWatch {
    fn alert_after(&self) -> Duration {
        Duration::from_secs(self.bulkheads.settings().outage_alert_secs)
    }

    /// How often it looks: a tenth of the alert time, between 1 and 15 seconds.
    fn period(&self) -> Duration {
        (self.alert_after() / 10).clamp(Duration::from_secs(1), Duration::from_secs(15))
    }

    /// Looks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.period());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if let Err(error) = self.look().await {
                tracing::warn!(%error, "could not announce connection outages; trying again");
            }
        }
    }

    /// One look at every connection.
    pub async fn look(&self) -> Result<(), OutageError> {
        let alert_after = self.alert_after();
        for bulkhead in self.bulkheads.all() {
            let health = bulkhead.health();
            if health.buildings.is_empty() {
                continue;
            }
            match health.failing_since {
                Some(since) if is_outage(&health, since, alert_after) => {
                    for building in &health.buildings {
                        self.announce_down(&health, since, building).await?;
                    }
                }
                Some(_) => {}
                None => {
                    let Some(answered_at) = health.last_answer else {
                        continue;
                    };
                    for building in &health.buildings {
                        self.announce_recovery(&health, answered_at, building)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn announce_down(
        &self,
        health: &Health,
        since: DateTime<Utc>,
        building: &Building,
    ) -> Result<(), OutageError> {
        // As PostgreSQL keeps it, so the recovery names the very same time.
        let since = since.trunc_subsecs(6);
        let mut tx = self.pool.begin().await?;
        // Not within the alert time of a recovery: a replica that still sees the failures of an
        // outage another replica has just seen end would otherwise announce it again (and the
        // two would take turns). A connection that keeps failing is announced after that time.
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO connection_outages (building_id, endpoint, failing_since, last_error)
             SELECT $1, $2, $3, $4
              WHERE NOT EXISTS (SELECT 1 FROM connection_outages
                                 WHERE building_id = $1
                                   AND recovered_at > now() - make_interval(secs => $5))
             ON CONFLICT (building_id) WHERE recovered_at IS NULL DO NOTHING
             RETURNING id",
        )
        .bind(&building.id)
        .bind(&health.endpoint)
        .bind(since)
        .bind(&health.last_error)
        .bind(self.alert_after().as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = claimed else {
            return Ok(());
        };
        let event = health_event(
            id,
            health.system,
            "down",
            ConnectionHealth {
                building: building.clone(),
                system: health.system,
                endpoint: health.endpoint.clone(),
                failing_since: since,
                last_error: health.last_error.clone(),
                recovered_at: None,
            },
        );
        self.publisher.publish_event(&event).await?;
        tx.commit().await?;
        tracing::error!(
            building_id = %building.id, system = %health.system, endpoint = health.endpoint,
            failing_since = %since, "connection down for longer than the alert time; managers told"
        );
        Ok(())
    }

    /// Ends the building's outage if the connection answered (`answered_at`) after the managers
    /// were told: an answer from before says nothing about the outage.
    async fn announce_recovery(
        &self,
        health: &Health,
        answered_at: DateTime<Utc>,
        building: &Building,
    ) -> Result<(), OutageError> {
        let mut tx = self.pool.begin().await?;
        let closed: Option<(i64, String, DateTime<Utc>, String)> = sqlx::query_as(
            "UPDATE connection_outages SET recovered_at = now()
              WHERE building_id = $1 AND recovered_at IS NULL AND announced_at < $2
             RETURNING id, endpoint, failing_since, last_error",
        )
        .bind(&building.id)
        .bind(answered_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, endpoint, failing_since, last_error)) = closed else {
            return Ok(());
        };
        let event = health_event(
            id,
            health.system,
            "recovered",
            ConnectionHealth {
                building: building.clone(),
                system: health.system,
                endpoint,
                failing_since,
                last_error,
                recovered_at: Some(Utc::now()),
            },
        );
        self.publisher.publish_event(&event).await?;
        tx.commit().await?;
        tracing::info!(building_id = %building.id, system = %health.system, "connection works again; managers told");
        Ok(())
    }
}

/// Failing for longer than the alert time, and failing still (seen within it).
fn is_outage(health: &Health, since: DateTime<Utc>, alert_after: Duration) -> bool {
    let failing_for = (Utc::now() - since).to_std().unwrap_or_default();
    failing_for >= alert_after
        && health
            .last_failure_ago
            .is_some_and(|ago| ago <= alert_after)
}

/// The event of outage `id`: the version orders an outage's two events (and every outage after
/// it) for the building's connection; the id makes a republish the same event.
fn health_event(id: i64, system: AccessSystem, kind: &str, health: ConnectionHealth) -> Envelope {
    let building = health.building.id.clone();
    let (event, version) = if kind == "down" {
        (Event::ConnectionDown(health), id * 2)
    } else {
        (Event::ConnectionRecovered(health), id * 2 + 1)
    };
    let mut envelope = Envelope::new(connection_subject(&building, system), version, event);
    envelope.event_id = Uuid::new_v5(
        &OUTAGE_NAMESPACE,
        format!("{system}/{building}/{id}/{kind}").as_bytes(),
    );
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(last_failure_ago: Option<Duration>) -> Health {
        Health {
            system: AccessSystem::Salto,
            endpoint: "http://salto.example".into(),
            failing_since: None,
            last_error: "timeout".into(),
            last_failure_ago,
            last_answer: None,
            buildings: vec![],
        }
    }

    #[test]
    fn an_outage_is_failing_for_longer_than_the_alert_time_and_failing_still() {
        let five = Duration::from_secs(300);
        let long_ago = Utc::now() - chrono::Duration::minutes(6);
        let just_now = Utc::now() - chrono::Duration::minutes(1);
        assert!(is_outage(
            &health(Some(Duration::from_secs(5))),
            long_ago,
            five
        ));
        assert!(!is_outage(
            &health(Some(Duration::from_secs(5))),
            just_now,
            five
        ));
        assert!(
            !is_outage(&health(Some(Duration::from_secs(400))), long_ago, five),
            "a stale view of a connection announces nothing"
        );
    }
}
