//! The version rule of docs/architecture.md, "The version rule", shared by every worker: store an event's snapshot only if its
//! version is newer than the one held, then act on the stored latest snapshot — never on the
//! message in hand — so a late or retried message cannot push an older truth out.
//!
//! Each worker's own migration creates the table in its own schema:
//! ```sql
//! CREATE TABLE booking_snapshots (
//!     booking_id uuid PRIMARY KEY, version bigint NOT NULL, event_type text NOT NULL,
//!     envelope jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use contracts::Envelope;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The event is the newest known version of its booking.
    Newer,
    /// The same version was already held (a redelivery): act again idempotently or skip.
    Same,
    /// A newer version is already held: ack without acting.
    Older,
}

impl Recorded {
    /// Whether `envelope`, recorded with this outcome, is to be acted on: unless a newer version
    /// is held, which is said in the log (the message is acked without acting).
    pub fn to_act_on(self, envelope: &Envelope) -> bool {
        if self == Recorded::Older {
            tracing::info!(
                booking_id = %envelope.booking_id, version = envelope.version,
                "older than the version held; skipped"
            );
            return false;
        }
        true
    }
}

/// Decides from the version held and the incoming one. Pure.
pub fn compare(held: Option<i64>, incoming: i64) -> Recorded {
    match held {
        None => Recorded::Newer,
        Some(held) if incoming > held => Recorded::Newer,
        Some(held) if incoming == held => Recorded::Same,
        Some(_) => Recorded::Older,
    }
}

/// Records the snapshots of the messages a worker has in hand together: what handlers ask for
/// while a statement is running goes into the next one, so a worker busy with many messages
/// writes their snapshots in a few multi-row statements instead of one autocommitted statement
/// each (docs/architecture.md, "The version rule"; README, Performance). An idle worker's
/// message is written at once: nothing waits for a batch to fill.
///
/// Each message gets the answer its snapshot would have got written alone. A statement holds each booking once
/// (a second message of a booking goes into the next statement, in the order they came) and
/// its rows in booking order, so two replicas' statements lock rows in one order. A statement
/// that fails is retried row by row, so a message the database refuses fails alone.
#[derive(Clone)]
pub struct SnapshotRecorder {
    requests: mpsc::Sender<RecordRequest>,
    statements: Arc<AtomicU64>,
}

struct RecordRequest {
    booking_id: Uuid,
    version: i64,
    event_type: &'static str,
    /// The envelope as JSON text, written as `jsonb`.
    envelope: String,
    answer: oneshot::Sender<Result<Recorded, sqlx::Error>>,
}

impl SnapshotRecorder {
    /// Starts the task that writes on `pool`, at most `max_batch` snapshots a statement. It
    /// stops once every clone of the recorder is dropped.
    pub fn start(pool: PgPool, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (requests, queue) = mpsc::channel(max_batch * 4);
        let statements = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_batches(pool, queue, max_batch, statements.clone()));
        Self {
            requests,
            statements,
        }
    }

    /// How many statements the recorder has run so far (the tests see the batching by it).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Stores `envelope` if it is newer than the snapshot held for its booking (atomically, so two
    /// replicas racing on two versions keep the newer), and says what that did.
    pub async fn record(&self, envelope: &Envelope) -> Result<Recorded, sqlx::Error> {
        let (answer, answered) = oneshot::channel();
        let request = RecordRequest {
            booking_id: envelope.booking_id,
            version: envelope.version,
            event_type: envelope.routing_key(),
            envelope: serde_json::to_string(envelope).map_err(|e| sqlx::Error::Encode(e.into()))?,
            answer,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        answered.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

/// The recorder's task: takes what is queued (up to `max_batch`) and writes it, until the
/// queue closes.
async fn write_batches(
    pool: PgPool,
    mut queue: mpsc::Receiver<RecordRequest>,
    max_batch: usize,
    statements: Arc<AtomicU64>,
) {
    let mut waiting = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut waiting, max_batch).await > 0 {
        while !waiting.is_empty() {
            let statement = one_per_booking(&mut waiting);
            statements.fetch_add(1, Ordering::Relaxed);
            write_statement(&pool, statement).await;
        }
    }
}

/// Takes from `waiting` the first request of each booking, in booking order; the rest stay, in
/// the order they came.
fn one_per_booking(waiting: &mut Vec<RecordRequest>) -> Vec<RecordRequest> {
    let mut seen = HashSet::new();
    let (mut taken, rest): (Vec<_>, Vec<_>) = std::mem::take(waiting)
        .into_iter()
        .partition(|r| seen.insert(r.booking_id));
    *waiting = rest;
    taken.sort_by_key(|r| r.booking_id);
    taken
}

async fn write_statement(pool: &PgPool, mut requests: Vec<RecordRequest>) {
    if requests.len() == 1
        && let Some(request) = requests.pop()
    {
        // One row: the single-row statement, without the arrays' cost.
        let held = record_one(pool, &request).await;
        let _ = request.answer.send(held);
        return;
    }
    match record_many(pool, &requests).await {
        Ok(held) => {
            for (request, held) in requests.into_iter().zip(held) {
                let _ = request.answer.send(Ok(compare(held, request.version)));
            }
        }
        Err(error) => {
            tracing::warn!(%error, rows = requests.len(), "recording snapshots together failed; one by one");
            for request in requests {
                let held = record_one(pool, &request).await;
                let _ = request.answer.send(held);
            }
        }
    }
}

async fn record_one(pool: &PgPool, request: &RecordRequest) -> Result<Recorded, sqlx::Error> {
    let held: Option<i64> = sqlx::query_scalar(
        "WITH previous AS (SELECT version FROM booking_snapshots WHERE booking_id = $1),
              upsert AS (
                INSERT INTO booking_snapshots (booking_id, version, event_type, envelope)
                VALUES ($1, $2, $3, $4::jsonb)
                ON CONFLICT (booking_id) DO UPDATE
                   SET version = EXCLUDED.version, event_type = EXCLUDED.event_type,
                       envelope = EXCLUDED.envelope, updated_at = now()
                 WHERE booking_snapshots.version < EXCLUDED.version)
         SELECT version FROM previous",
    )
    .bind(request.booking_id)
    .bind(request.version)
    .bind(request.event_type)
    .bind(&request.envelope)
    .fetch_optional(pool)
    .await?;
    Ok(compare(held, request.version))
}

/// The version held before, for each of `requests` (distinct bookings), in their order.
async fn record_many(
    pool: &PgPool,
    requests: &[RecordRequest],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let ids: Vec<Uuid> = requests.iter().map(|r| r.booking_id).collect();
    let versions: Vec<i64> = requests.iter().map(|r| r.version).collect();
    let types: Vec<&str> = requests.iter().map(|r| r.event_type).collect();
    let envelopes: Vec<&str> = requests.iter().map(|r| r.envelope.as_str()).collect();
    let held: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[])
                   WITH ORDINALITY AS i (booking_id, version, event_type, envelope, position)),
              previous AS (
                SELECT s.booking_id, s.version
                  FROM booking_snapshots s JOIN input i ON i.booking_id = s.booking_id),
              upsert AS (
                INSERT INTO booking_snapshots (booking_id, version, event_type, envelope)
                SELECT booking_id, version, event_type, envelope::jsonb FROM input ORDER BY position
                ON CONFLICT (booking_id) DO UPDATE
                   SET version = EXCLUDED.version, event_type = EXCLUDED.event_type,
                       envelope = EXCLUDED.envelope, updated_at = now()
                 WHERE booking_snapshots.version < EXCLUDED.version)
         SELECT i.position, p.version
           FROM input i LEFT JOIN previous p ON p.booking_id = i.booking_id
          ORDER BY i.position",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&types)
    .bind(&envelopes)
    .fetch_all(pool)
    .await?;
    if held.len() != requests.len() {
        return Err(sqlx::Error::Protocol(format!(
            "{} snapshots written, {} answers",
            requests.len(),
            held.len()
        )));
    }
    Ok(held.into_iter().map(|(_, version)| version).collect())
}

/// Why a held snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Stored by an earlier version of the service and no longer readable: acting as if nothing
    /// were held would drop the booking silently, so it is an error a person must see.
    #[error("the snapshot held for booking {booking_id} no longer decodes: {reason}")]
    Undecodable { booking_id: Uuid, reason: String },
}

/// The latest snapshot held for a booking.
pub async fn latest(pool: &PgPool, booking_id: Uuid) -> Result<Option<Envelope>, SnapshotError> {
    let body: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT envelope FROM booking_snapshots WHERE booking_id = $1")
            .bind(booking_id)
            .fetch_optional(pool)
            .await?;
    decode(booking_id, body)
}

/// A stored snapshot's body as an envelope (`None` when nothing is held).
pub fn decode(
    booking_id: Uuid,
    body: Option<serde_json::Value>,
) -> Result<Option<Envelope>, SnapshotError> {
    body.map(|body| {
        serde_json::from_value(body).map_err(|e| SnapshotError::Undecodable {
            booking_id,
            reason: e.to_string(),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_higher_version_replaces_the_held_one() {
        assert_eq!(compare(None, 1), Recorded::Newer);
        assert_eq!(compare(Some(1), 2), Recorded::Newer);
        assert_eq!(compare(Some(2), 2), Recorded::Same);
        assert_eq!(compare(Some(3), 2), Recorded::Older);
    }
}
