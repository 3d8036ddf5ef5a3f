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

use contracts::Envelope;
use sqlx::{PgExecutor, PgPool};
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

/// Stores `envelope` if it is newer than what the worker holds for its booking (atomically, so
/// two replicas racing on two versions keep the newer). `db` is the pool, or a connection the
/// caller goes on using (outside a transaction, so the snapshot is committed at once).
pub async fn record(db: impl PgExecutor<'_>, envelope: &Envelope) -> Result<Recorded, sqlx::Error> {
    let held: Option<i64> = sqlx::query_scalar(
        "WITH previous AS (SELECT version FROM booking_snapshots WHERE booking_id = $1),
              upsert AS (
                INSERT INTO booking_snapshots (booking_id, version, event_type, envelope)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (booking_id) DO UPDATE
                   SET version = EXCLUDED.version, event_type = EXCLUDED.event_type,
                       envelope = EXCLUDED.envelope, updated_at = now()
                 WHERE booking_snapshots.version < EXCLUDED.version)
         SELECT version FROM previous",
    )
    .bind(envelope.booking_id)
    .bind(envelope.version)
    .bind(envelope.routing_key())
    .bind(sqlx::types::Json(envelope))
    .fetch_optional(db)
    .await?;
    Ok(compare(held, envelope.version))
}

/// [`record`] for the envelopes of several bookings in one statement (a worker's batch): what
/// recording each did, in their order. Each booking at most once (the caller keeps a second
/// message of a booking for later); the rows are written in booking order, so two replicas'
/// statements lock rows in one order.
pub async fn record_many(
    db: impl PgExecutor<'_>,
    envelopes: &[&Envelope],
) -> Result<Vec<Recorded>, sqlx::Error> {
    let ids: Vec<Uuid> = envelopes.iter().map(|e| e.booking_id).collect();
    let versions: Vec<i64> = envelopes.iter().map(|e| e.version).collect();
    let types: Vec<&str> = envelopes.iter().map(|e| e.routing_key()).collect();
    let bodies: Vec<sqlx::types::Json<&Envelope>> =
        envelopes.iter().map(|e| sqlx::types::Json(*e)).collect();
    let held: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[])
                   WITH ORDINALITY AS i (booking_id, version, event_type, envelope, position)),
              previous AS (
                SELECT s.booking_id, s.version
                  FROM booking_snapshots s JOIN input i ON i.booking_id = s.booking_id),
              upsert AS (
                INSERT INTO booking_snapshots (booking_id, version, event_type, envelope)
                SELECT booking_id, version, event_type, envelope FROM input ORDER BY booking_id
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
    .bind(&bodies)
    .fetch_all(db)
    .await?;
    if held.len() != envelopes.len() {
        return Err(sqlx::Error::Protocol(format!(
            "{} snapshots written, {} answers (a booking twice?)",
            envelopes.len(),
            held.len()
        )));
    }
    Ok(held
        .into_iter()
        .zip(envelopes)
        .map(|((_, held), envelope)| compare(held, envelope.version))
        .collect())
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
