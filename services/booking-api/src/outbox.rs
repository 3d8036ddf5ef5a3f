//! The transactional outbox (docs/architecture.md, "Services and what each owns"): every write stores its event in the same transaction as
//! the change ([`enqueue`]), and the relay ([`Relay`]) publishes stored events to RabbitMQ with
//! publisher confirms, then marks them sent.
//!
//! Replicas share the table safely: each takes a batch with `FOR UPDATE SKIP LOCKED`, and a row
//! is only taken once every earlier unsent row of the same booking is sent, so one booking's
//! events leave in version order even with several relays. Delivery is at least once (a crash
//! between the confirm and the commit republishes a batch); consumers are idempotent by design.
//! While the broker is down the rows simply wait, and the relay retries with a capped backoff,
//! logging each failed attempt and the recovery.
//!
//! A transaction that stored an event wakes its own process's relay once it has committed
//! ([`RelayWake::committed`]), in process rather than with a PostgreSQL NOTIFY: transactions that
//! NOTIFY commit one at a time (PostgreSQL serialises them on the notification queue), which
//! halved the commits a second of eight concurrent creations (README, Performance). An event whose
//! process stopped between its commit and its relay's round is found by any relay's poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::Envelope;
use platform::amqp::{PublishError, Publisher};
use platform::trace::TraceId;
use serde::Deserialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Relay tuning (`CONNECX__OUTBOX__*`).
#[derive(Debug, Clone, Deserialize)]
pub struct OutboxSettings {
    /// How often the relay looks for rows without being woken: what a replica that stopped
    /// between its commit and its relay's round left is found here.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Rows published per round. A round waits for the broker's confirms and then commits, so
    /// its cost is mostly fixed waiting: with a backlog, 500 a round publishes about 1.5 times as
    /// fast as 100 (`cargo bench -p tests --bench ratios`, the relay row).
    #[serde(default = "default_batch_size")]
    pub batch_size: i64,
    /// The longest pause between attempts while the broker is unreachable.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// After a round that published fewer rows than a batch, how long the relay waits before it
    /// looks again, so that the bookings of the next few milliseconds go out together: under
    /// load most rounds would otherwise carry one or two events, each round costing a
    /// transaction and a wait for confirms. `0`: look again at once.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// How long one round of publishing may wait for the broker's confirms.
    #[serde(default = "default_publish_timeout_secs")]
    pub publish_timeout_secs: u64,
    /// Sent rows are kept this long for inspection, then deleted.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
}

fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_batch_size() -> i64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_linger_ms() -> u64 {
    5
}
fn default_publish_timeout_secs() -> u64 {
    30
}
fn default_retention_hours() -> u64 {
    7 * 24
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: default_poll_interval_ms(),
            batch_size: default_batch_size(),
            max_backoff_ms: default_max_backoff_ms(),
            linger_ms: default_linger_ms(),
            publish_timeout_secs: default_publish_timeout_secs(),
            retention_hours: default_retention_hours(),
        }
    }
}

/// Stores `envelope` for publishing, inside the caller's transaction, with the trace of the work in
/// hand (the request). Once the transaction has committed, the caller wakes the relay
/// ([`RelayWake::committed`]).
pub async fn enqueue(conn: &mut PgConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    let insert = concat!(
        "INSERT INTO outbox (",
        outbox_columns!(),
        ") VALUES ($1, $2, $3, $4, $5)"
    );
    bind_outbox_row(sqlx::query(insert), envelope)
        .execute(conn)
        .await?;
    Ok(())
}

/// The columns [`bind_outbox_row`] fills, in its order: for [`enqueue`], and for a statement
/// that stores a change and its event at once (a creation: one round trip fewer).
macro_rules! outbox_columns {
    () => {
        "event_id, booking_id, event_type, envelope, trace_id"
    };
}
pub(crate) use outbox_columns;

/// Binds the outbox row of `envelope` — five parameters in [`outbox_columns`]' order, the event
/// and the trace of the work in hand — after the parameters `query` already has.
pub fn bind_outbox_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    envelope: &'q Envelope,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(envelope.event_id)
        .bind(envelope.booking_id)
        .bind(envelope.routing_key())
        .bind(Json(envelope))
        .bind(platform::trace::current().map(|trace| trace.to_string()))
}

/// Wakes this process's relay: an event it may publish has been committed. Cheap to clone.
#[derive(Clone, Default)]
pub struct RelayWake(Arc<Notify>);

impl RelayWake {
    /// After the commit of a transaction that [`enqueue`]d: before it, the relay's round would
    /// not see the row yet and the event would wait for the next poll.
    pub fn committed(&self) {
        self.0.notify_one();
    }

    async fn notified(&self) {
        self.0.notified().await;
    }
}

/// The pause before attempt `failures + 1`: 250 ms doubling, capped at `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(250);
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor)
        .min(max)
        .max(Duration::from_millis(1))
}

/// Why a round of the relay failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("broker unreachable: {0}")]
    Broker(String),
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Nothing due.
    Idle,
    /// `sent` published; `refused` set aside for a later attempt (unroutable or nacked).
    Published { sent: usize, refused: usize },
}

/// Publishes the outbox until told to stop.
pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    wake: RelayWake,
    /// The lead lane took a full batch: there is a backlog, the second lane should help.
    backlog: Notify,
    settings: OutboxSettings,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        wake: RelayWake,
        settings: OutboxSettings,
    ) -> Self {
        Self {
            pool,
            publisher,
            wake,
            backlog: Notify::new(),
            settings,
        }
    }

    /// With a backlog, runs two rounds at a time, so one takes and publishes its rows while the
    /// other waits for its confirms and commit (most of a round is that wait). The two lanes share
    /// the table like two replicas do: `SKIP LOCKED` and the per-booking rule keep each booking's
    /// events in order. Without a backlog only the lead lane runs, so rounds stay as few (and as
    /// large) as with one lane.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("outbox relay started");
        tokio::join!(self.lead(&shutdown), self.helper(&shutdown));
        tracing::info!("outbox relay stopped");
    }

    /// Whether a round took as many rows as it may: more are probably waiting.
    fn was_full(&self, sent: usize, refused: usize) -> bool {
        i64::try_from(sent + refused).unwrap_or(i64::MAX) >= self.settings.batch_size.max(1)
    }

    /// The lane that follows wake-ups and polls, handles outages, and calls in the helper when it
    /// finds a backlog.
    async fn lead(&self, shutdown: &CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms.max(1));
        let mut failures: u32 = 0;
        let mut failing_since: Option<Instant> = None;
        // Under a steady trickle of bookings nearly every wake-up ends in an empty round; the
        // gauge query is kept to one a poll interval so it does not double each wake-up's cost.
        let mut gauge_updated: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            match self.round().await {
                Ok(Round::Published { sent, refused }) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            published = sent,
                            failed_attempts = failures,
                            outage_secs = since.elapsed().as_secs(),
                            "outbox relay: broker reachable again, publishing the backlog"
                        );
                    }
                    failures = 0;
                    metrics::counter!("booking_outbox_published_total").increment(sent as u64);
                    if self.was_full(sent, refused) {
                        self.backlog.notify_one();
                    } else if sent == 0 {
                        self.idle(poll, shutdown).await;
                    } else {
                        self.linger(shutdown).await;
                    }
                }
                Ok(Round::Idle) => {
                    if failing_since.take().is_some() {
                        tracing::info!("outbox relay: broker reachable again");
                    }
                    failures = 0;
                    if gauge_updated.is_none_or(|at| at.elapsed() >= poll) {
                        self.update_pending_gauge().await;
                        gauge_updated = Some(Instant::now());
                    }
                    self.idle(poll, shutdown).await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    failing_since.get_or_insert_with(Instant::now);
                    let delay = backoff(failures, max_backoff);
                    let pending = self.update_pending_gauge().await;
                    metrics::counter!("booking_outbox_publish_failures_total").increment(1);
                    tracing::warn!(
                        %error,
                        attempt = failures,
                        pending,
                        retry_in_ms = delay.as_millis() as u64,
                        "outbox relay cannot publish; the events stay in the outbox and will be retried"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The second lane: from the lead's call while its own rounds stay full. On a failure it
    /// leaves the retrying (and its logging) to the lead and waits for the next call.
    async fn helper(&self, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.backlog.notified() => {}
            }
            while !shutdown.is_cancelled() {
                match self.round().await {
                    Ok(Round::Published { sent, refused }) => {
                        metrics::counter!("booking_outbox_published_total").increment(sent as u64);
                        if !self.was_full(sent, refused) {
                            break;
                        }
                    }
                    Ok(Round::Idle) => break,
                    Err(error) => {
                        metrics::counter!("booking_outbox_publish_failures_total").increment(1);
                        tracing::debug!(%error, "outbox relay (second lane) cannot publish; the lead lane retries");
                        break;
                    }
                }
            }
        }
    }

    /// Lets the rows of the next [`OutboxSettings::linger_ms`] gather before the next round.
    async fn linger(&self, shutdown: &CancellationToken) {
        if self.settings.linger_ms == 0 {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(self.settings.linger_ms)) => {}
        }
    }

    async fn idle(&self, poll: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = self.wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }

    /// Publishes how many events wait and how old the oldest is (the relay's lag), and returns
    /// the count for the logs.
    async fn update_pending_gauge(&self) -> Option<i64> {
        let row: Option<(i64, Option<f64>)> = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8
             FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ok();
        let (pending, oldest) = row?;
        metrics::gauge!("booking_outbox_pending").set(pending as f64);
        metrics::gauge!("booking_outbox_oldest_pending_seconds").set(oldest.unwrap_or(0.0));
        Some(pending)
    }

    /// Takes one batch of due rows, publishes it, and records the outcome, all in one transaction
    /// (the row locks keep other replicas off these rows meanwhile).
    async fn round(&self) -> Result<Round, RelayError> {
        let mut tx = self.pool.begin().await?;
        // The envelope as text, decoded straight into an `Envelope` (a row that does not decode
        // is parked, not a failure of the whole batch).
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT o.id, o.envelope::text, o.trace_id FROM outbox o
             WHERE o.sent_at IS NULL AND o.parked_at IS NULL
               AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
               AND NOT EXISTS (
                   SELECT 1 FROM outbox e
                   WHERE e.booking_id = o.booking_id AND e.id < o.id
                     AND e.sent_at IS NULL AND e.parked_at IS NULL)
             ORDER BY o.id
             LIMIT $1
             FOR UPDATE OF o SKIP LOCKED",
        )
        .bind(self.settings.batch_size.max(1))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Round::Idle);
        }

        let mut batch: Vec<(i64, Envelope, Option<TraceId>)> = Vec::with_capacity(rows.len());
        for (id, envelope, trace) in rows {
            let trace = trace.as_deref().and_then(TraceId::from_hex);
            match serde_json::from_str::<Envelope>(&envelope) {
                Ok(envelope) => batch.push((id, envelope, trace)),
                Err(error) => {
                    tracing::error!(outbox_id = id, %error, "outbox row cannot be decoded; parked, and a dead letter tells a person");
                    // Parked only once someone is told (a dead letter: stored and mailed by the
                    // notifier); if that cannot be sent now, the row is looked at again.
                    let letter_id =
                        uuid::Uuid::new_v5(&OUTBOX_NAMESPACE, id.to_string().as_bytes())
                            .to_string();
                    let told = self
                        .publisher
                        .publish_dead_letter(platform::amqp::OwnDeadLetter {
                            id: &letter_id,
                            service: "booking-api",
                            original_queue: "booking-api.outbox",
                            routing_key: "booking_api.outbox",
                            error: &format!("outbox row {id} cannot be decoded: {error}"),
                            body: envelope.as_bytes(),
                        })
                        .await;
                    if let Err(failure) = told {
                        tracing::warn!(outbox_id = id, %failure, "cannot send the dead letter of an undecodable outbox row; trying again later");
                        continue;
                    }
                    sqlx::query(
                        "UPDATE outbox SET parked_at = now(), last_error = $2 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(format!("cannot decode: {error}"))
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        let events: Vec<(&Envelope, Option<TraceId>)> =
            batch.iter().map(|(_, e, trace)| (e, *trace)).collect();
        let outcome = match self.publish(&events).await {
            Ok(()) => {
                let ids: Vec<i64> = batch.iter().map(|(id, ..)| *id).collect();
                mark_sent(&mut tx, &ids).await?;
                Ok(Round::Published {
                    sent: ids.len(),
                    refused: 0,
                })
            }
            Err(PublishFailure::Refused(_)) => self.publish_one_by_one(&mut tx, &batch).await,
            Err(PublishFailure::Unreachable(error)) => {
                let ids: Vec<i64> = batch.iter().map(|(id, ..)| *id).collect();
                mark_attempt_failed(&mut tx, &ids, &error, None).await?;
                Err(RelayError::Broker(error))
            }
        };
        tx.commit().await?;
        outcome
    }

    /// After a batch had a refused message: find which, publish the others, and put the refused
    /// ones back for a later attempt so they do not hold up the rest.
    async fn publish_one_by_one(
        &self,
        tx: &mut PgConnection,
        batch: &[(i64, Envelope, Option<TraceId>)],
    ) -> Result<Round, RelayError> {
        let (mut sent, mut refused) = (0, 0);
        for (index, (id, envelope, trace)) in batch.iter().enumerate() {
            match self.publish(&[(envelope, *trace)]).await {
                Ok(()) => {
                    mark_sent(tx, &[*id]).await?;
                    sent += 1;
                }
                Err(PublishFailure::Refused(error)) => {
                    let attempts: i32 =
                        sqlx::query_scalar("SELECT attempts FROM outbox WHERE id = $1")
                            .bind(id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let delay = backoff(
                        u32::try_from(attempts).unwrap_or(0).saturating_add(1),
                        Duration::from_millis(self.settings.max_backoff_ms.max(1)),
                    );
                    tracing::warn!(
                        event_id = %envelope.event_id,
                        booking_id = %envelope.booking_id,
                        event_type = envelope.routing_key(),
                        %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "the broker refused an event; it stays in the outbox and is retried"
                    );
                    mark_attempt_failed(tx, &[*id], &error, Some(delay)).await?;
                    refused += 1;
                }
                Err(PublishFailure::Unreachable(error)) => {
                    let rest: Vec<i64> = batch[index..].iter().map(|(id, ..)| *id).collect();
                    mark_attempt_failed(tx, &rest, &error, None).await?;
                    return Err(RelayError::Broker(error));
                }
            }
        }
        Ok(Round::Published { sent, refused })
    }

    async fn publish(&self, events: &[(&Envelope, Option<TraceId>)]) -> Result<(), PublishFailure> {
        if events.is_empty() {
            return Ok(());
        }
        let timeout = Duration::from_secs(self.settings.publish_timeout_secs.max(1));
        match tokio::time::timeout(timeout, self.publisher.publish_traced_events(events)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error @ (PublishError::Unroutable { .. } | PublishError::Nacked { .. }))) => {
                Err(PublishFailure::Refused(error.to_string()))
            }
            Ok(Err(error)) => Err(PublishFailure::Unreachable(error.to_string())),
            Err(_) => Err(PublishFailure::Unreachable(format!(
                "no confirm from the broker within {}s",
                timeout.as_secs()
            ))),
        }
    }
}

/// Namespace of the dead letters of undecodable outbox rows (a fixed random UUID): one per row.
const OUTBOX_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x2f6b_51d2_8c0e_4a7b_9e13_5d4c_a1f0_b862);

/// A failed publish: the message was refused, or the broker could not be reached at all.
enum PublishFailure {
    Refused(String),
    Unreachable(String),
}

async fn mark_sent(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_attempt_at = now(),
             next_attempt_at = NULL
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

async fn mark_attempt_failed(
    conn: &mut PgConnection,
    ids: &[i64],
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let retry_ms = retry_in.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = now(), last_error = $2,
             next_attempt_at = CASE WHEN $3::bigint IS NULL THEN NULL
                                    ELSE now() + make_interval(secs => $3::bigint / 1000.0) END
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(error)
    .bind(retry_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes sent rows older than the retention.
pub async fn purge_sent(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    crate::store::delete_older_than(pool, "outbox", "sent_at", retention).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second_and_is_capped() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(1, max), Duration::from_millis(250));
        assert_eq!(backoff(2, max), Duration::from_millis(500));
        assert_eq!(backoff(5, max), Duration::from_secs(4));
        assert_eq!(backoff(9, max), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX, max), Duration::from_secs(30));
        assert_eq!(
            backoff(3, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }
}
