//! The `booking-api.results` consumer: applies `visitor_access.*` / `facility_access.*` result
//! events to the booking's access fields (status, PIN, reason, held_by), latest version wins
//! (see [`crate::domain::access::should_apply`]), then NOTIFYs so requests waiting with
//! `Prefer: wait` see the outcome. A stale or repeated result is acknowledged without effect.
//! Database trouble is transient (the worker retries); a result for a booking this service does
//! not know is permanent (a dead letter and an alert: something upstream is wrong).

use contracts::Envelope;
use platform::amqp::{EventHandler, HandlerError};
use sqlx::PgPool;

use crate::domain::access::{AppliedResult, BookingKind, outcome_of, should_apply};
use crate::store::{bookings, facility_bookings, visitor_bookings};

/// Applies result events to bookings.
pub struct ResultsHandler {
    pool: PgPool,
}

impl ResultsHandler {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
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
        match apply(&self.pool, &envelope).await {
            Ok(applied) => {
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
            Err(error) => Err(error),
        }
    }
}

/// Applies one result event in one transaction.
pub async fn apply(pool: &PgPool, envelope: &Envelope) -> Result<Applied, HandlerError> {
    let Some(outcome) = outcome_of(&envelope.event) else {
        return Err(HandlerError::Permanent(format!(
            "booking-api.results received `{}`, which is not a result event",
            envelope.routing_key()
        )));
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
        return Err(HandlerError::Permanent(format!(
            "result `{}` names booking {}, which booking-api does not have",
            envelope.routing_key(),
            envelope.booking_id
        )));
    };
    if !should_apply(applied, incoming) {
        tx.rollback().await.map_err(transient)?;
        return Ok(Applied::Stale);
    }
    match outcome.kind {
        BookingKind::Visitor => {
            visitor_bookings::apply_result(&mut tx, envelope.booking_id, &outcome, incoming).await
        }
        BookingKind::Facility => {
            facility_bookings::apply_result(&mut tx, envelope.booking_id, &outcome, incoming).await
        }
    }
    .map_err(transient)?;
    crate::pg_notify::notify_access(&mut tx, envelope.booking_id)
        .await
        .map_err(transient)?;
    tx.commit().await.map_err(transient)?;
    Ok(Applied::Updated)
}
