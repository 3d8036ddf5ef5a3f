//! The `booking-api.results` consumer: applies `visitor_access.*` / `facility_access.*` result
//! events to the booking's access fields (status, PIN, reason, held_by), latest version wins
//! (see [`crate::domain::access::should_apply`]), then NOTIFYs so requests waiting with
//! `Prefer: wait` see the outcome. A stale or repeated result is acknowledged without effect.
//! The results in hand are applied together, in one transaction (docs/architecture.md, "Batches").
//! Database trouble is transient (the worker retries); a result for a booking this service does
//! not know is permanent (a dead letter and an alert: something upstream is wrong).

use std::collections::HashMap;
use std::sync::Arc;

use contracts::Envelope;
use platform::amqp::{EventHandler, HandlerError};
use platform::batch::{BatchSettings, BatchWork, Batches, first_of_each};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::access::{AccessOutcome, AppliedResult, BookingKind, outcome_of, should_apply};
use crate::store::{bookings, facility_bookings, visitor_bookings};

/// Applies result events to bookings: those in hand together in one transaction
/// ([`ResultBatch`]), or each alone when batching is off (`CONNECX__BATCH__MAX_MESSAGES=1`).
pub struct ResultsHandler {
    pool: PgPool,
    batches: Option<Batches<(), ResultBatch>>,
}

impl ResultsHandler {
    pub fn new(pool: PgPool, batch: BatchSettings) -> Self {
        let batches = batch.batching().then(|| {
            Batches::new(
                contracts::BOOKING_API_RESULTS_QUEUE.name,
                Arc::new(ResultBatch { pool: pool.clone() }),
                batch.max_messages,
                batch.max_running,
            )
        });
        Self { pool, batches }
    }
}

/// What applying one result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Updated,
    /// An older (or earlier) result than the one the booking shows: ignored.
    Stale,
}

impl EventHandler for ResultsHandler {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        let together = match &self.batches {
            Some(batches) => batches.submit((), envelope.clone()).await.flatten(),
            None => None,
        };
        let applied = match together {
            Some(applied) => applied?,
            None => apply(&self.pool, &envelope).await?,
        };
        metrics::counter!(
            "booking_results_total",
            "outcome" => match applied { Applied::Updated => "applied", Applied::Stale => "stale" }
        )
        .increment(1);
        tracing::info!(
            event_type = envelope.routing_key(),
            booking_id = %envelope.booking_id,
            version = envelope.version,
            ?applied,
            "access result"
        );
        Ok(())
    }
}

/// The results in hand applied in one transaction: each booking's row locked (all of a kind in
/// one statement, in id order), the version rule checked for each as alone, the changed ones
/// written and announced with one NOTIFY statement, one commit. A result for a booking this
/// service does not know fails alone; a second result of a booking in the batch, and every
/// result of a batch whose statements failed, is applied alone.
pub struct ResultBatch {
    pool: PgPool,
}

impl BatchWork for ResultBatch {
    type Item = Envelope;
    /// `None`: to be applied alone.
    type Output = Option<Result<Applied, HandlerError>>;

    async fn run(&self, envelopes: Vec<Envelope>) -> Vec<Self::Output> {
        let firsts = first_of_each(&envelopes, |e| e.booking_id);
        let mut answers: Vec<Self::Output> = vec![None; envelopes.len()];
        let mut batched = Vec::new();
        for (index, (envelope, first)) in envelopes.iter().zip(firsts).enumerate() {
            match outcome_of(&envelope.event) {
                None => answers[index] = Some(Err(not_a_result(envelope))),
                Some(outcome) if first => batched.push((index, envelope, outcome)),
                Some(_) => {}
            }
        }
        if let Err(error) = self.apply_together(&batched, &mut answers).await {
            tracing::warn!(%error, results = batched.len(), "applying the results together failed; each alone");
            for (index, _, _) in &batched {
                answers[*index] = None;
            }
        }
        answers
    }
}

impl ResultBatch {
    /// Applies `batched` (one result per booking) in one transaction, answering each.
    async fn apply_together(
        &self,
        batched: &[(usize, &Envelope, AccessOutcome)],
        answers: &mut [Option<Result<Applied, HandlerError>>],
    ) -> Result<(), sqlx::Error> {
        if batched.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut applied = HashMap::new();
        for kind in [BookingKind::Visitor, BookingKind::Facility] {
            let ids: Vec<Uuid> = batched
                .iter()
                .filter(|(_, _, outcome)| outcome.kind == kind)
                .map(|(_, envelope, _)| envelope.booking_id)
                .collect();
            if !ids.is_empty() {
                applied.extend(bookings::applied_results(&mut tx, kind, &ids).await?);
            }
        }
        let mut updated = Vec::new();
        for (index, envelope, outcome) in batched {
            let incoming = AppliedResult {
                version: envelope.version,
                occurred_at: envelope.occurred_at,
            };
            let Some(shown) = applied.get(&envelope.booking_id) else {
                answers[*index] = Some(Err(unknown_booking(envelope)));
                continue;
            };
            if !should_apply(*shown, incoming) {
                answers[*index] = Some(Ok(Applied::Stale));
                continue;
            }
            write_result(&mut tx, envelope.booking_id, outcome, incoming).await?;
            updated.push((*index, envelope.booking_id));
        }
        if updated.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = updated.iter().map(|(_, id)| *id).collect();
        crate::pg_notify::notify_access_of(&mut tx, &ids).await?;
        tx.commit().await?;
        for (index, _) in updated {
            answers[index] = Some(Ok(Applied::Updated));
        }
        Ok(())
    }
}

fn not_a_result(envelope: &Envelope) -> HandlerError {
    HandlerError::Permanent(format!(
        "booking-api.results received `{}`, which is not a result event",
        envelope.routing_key()
    ))
}

fn unknown_booking(envelope: &Envelope) -> HandlerError {
    HandlerError::Permanent(format!(
        "result `{}` names booking {}, which booking-api does not have",
        envelope.routing_key(),
        envelope.booking_id
    ))
}

/// Writes `outcome` as the booking's access.
async fn write_result(
    conn: &mut PgConnection,
    booking_id: Uuid,
    outcome: &AccessOutcome,
    incoming: AppliedResult,
) -> Result<(), sqlx::Error> {
    match outcome.kind {
        BookingKind::Visitor => {
            visitor_bookings::apply_result(conn, booking_id, outcome, incoming).await
        }
        BookingKind::Facility => {
            facility_bookings::apply_result(conn, booking_id, outcome, incoming).await
        }
    }
}

/// Applies one result event in one transaction.
pub async fn apply(pool: &PgPool, envelope: &Envelope) -> Result<Applied, HandlerError> {
    let Some(outcome) = outcome_of(&envelope.event) else {
        return Err(not_a_result(envelope));
    };
    let transient = |e: sqlx::Error| HandlerError::Transient(format!("database: {e}"));
    let incoming = AppliedResult {
        version: envelope.version,
        occurred_at: envelope.occurred_at,
    };
    let mut tx = pool.begin().await.map_err(transient)?;
    let applied = bookings::applied_result(&mut tx, outcome.kind, envelope.booking_id)
        .await
        .map_err(transient)?;
    let Some(applied) = applied else {
        return Err(unknown_booking(envelope));
    };
    if !should_apply(applied, incoming) {
        tx.rollback().await.map_err(transient)?;
        return Ok(Applied::Stale);
    }
    write_result(&mut tx, envelope.booking_id, &outcome, incoming)
        .await
        .map_err(transient)?;
    crate::pg_notify::notify_access(&mut tx, envelope.booking_id)
        .await
        .map_err(transient)?;
    tx.commit().await.map_err(transient)?;
    Ok(Applied::Updated)
}
