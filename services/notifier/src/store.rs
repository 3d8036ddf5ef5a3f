//! The notifier's own tables (its schema, `migrations/`), and every statement run on them: dead
//! letters, the sent-mail ledger that makes sending idempotent, the booking locks and results
//! that keep a booking's mails in order, the visits whose visitor was sent a code, and what the
//! retention job erases.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::dead_letter::{DeadLetter, Failure};

/// A stored dead letter, as the ops CLI lists and shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredDeadLetter {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub status: String,
    #[sqlx(flatten)]
    pub failure: Failure,
    pub event_type: Option<String>,
    pub booking_id: Option<Uuid>,
    pub building_id: Option<String>,
    pub message_id: Option<String>,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

/// Stores a dead letter once; a redelivery of the same one changes nothing.
pub async fn insert_dead_letter(pool: &PgPool, letter: &DeadLetter) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (id, service, original_queue, routing_key, error_kind, error, retry_count,
             first_failed_at, event_type, booking_id, building_id, message_id, headers, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(letter.id)
    .bind(&letter.failure.service)
    .bind(&letter.failure.original_queue)
    .bind(&letter.failure.routing_key)
    .bind(&letter.failure.error_kind)
    .bind(&letter.failure.error)
    .bind(letter.failure.retry_count)
    .bind(letter.failure.first_failed_at)
    .bind(letter.event_type())
    .bind(letter.booking_id())
    .bind(letter.building_id())
    .bind(&letter.message_id)
    .bind(&letter.headers)
    .bind(&letter.body)
    .execute(pool)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, received_at, status, service, original_queue, routing_key, error_kind, error, retry_count, \
                       first_failed_at, event_type, booking_id, building_id, message_id, headers, body";

pub async fn list_dead_letters(
    pool: &PgPool,
    include_closed: bool,
    limit: i64,
) -> Result<Vec<StoredDeadLetter>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE $1 OR status = 'open' ORDER BY received_at DESC LIMIT $2"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(include_closed)
        .bind(limit)
        .fetch_all(pool)
        .await
}

pub async fn get_dead_letter(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<StoredDeadLetter>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Moves an open dead letter to `replayed` or `discarded`; `false` when it was not open.
pub async fn close_dead_letter(pool: &PgPool, id: Uuid, status: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE dead_letters SET status = $2, status_changed_at = now() WHERE id = $1 AND status = 'open'",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes the session lock `name` (see [`mail_lock_name`], [`booking_lock_name`]); `false` when
/// another live sender holds it. Held until [`unlock`] or until the connection ends (a sender
/// that dies mid-send frees it with its connection).
pub async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(name)
        .fetch_one(conn)
        .await
}

/// [`try_lock`] for each of `names` (a batch's bookings), in one statement: whether each was
/// taken, in their order.
pub async fn try_lock_all(
    conn: &mut PgConnection,
    names: &[String],
) -> Result<Vec<bool>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtextextended(n.name, 0))
           FROM unnest($1::text[]) WITH ORDINALITY AS n(name, position)
          ORDER BY n.position",
    )
    .bind(names)
    .fetch_all(conn)
    .await
}

/// [`unlock`] for each of `names`, in one statement.
pub async fn unlock_all(conn: &mut PgConnection, names: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_unlock(hashtextextended(name, 0)) FROM unnest($1::text[]) AS name",
    )
    .bind(names)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn unlock(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// The lock of one mail: the mail about `dedup_key` to `recipient`.
pub fn mail_lock_name(dedup_key: &str, recipient: &str) -> String {
    format!("notifier/mail/{dedup_key}/{}", recipient.to_lowercase())
}

/// The lock of every result mail of a booking (they go out one at a time, in order).
pub fn booking_lock_name(booking_id: Uuid) -> String {
    format!("notifier/booking/{booking_id}")
}

/// Records a result of a booking unless a newer one is held (a higher version, or the same
/// version later: a facility booking's `granted` after its `deferred`).
pub async fn record_result(
    pool: &PgPool,
    envelope: &contracts::Envelope,
) -> Result<platform::snapshots::Recorded, sqlx::Error> {
    let recorded = record_results(pool, &[envelope]).await?;
    recorded.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

/// [`record_result`] for the results of several bookings, in one statement (each booking at
/// most once; the rows written in booking order, so two replicas' statements lock rows in one
/// order): what recording each did, in their order.
pub async fn record_results(
    pool: &PgPool,
    envelopes: &[&contracts::Envelope],
) -> Result<Vec<platform::snapshots::Recorded>, sqlx::Error> {
    use platform::snapshots::Recorded;
    let ids: Vec<Uuid> = envelopes.iter().map(|e| e.booking_id).collect();
    let versions: Vec<i64> = envelopes.iter().map(|e| e.version).collect();
    let types: Vec<&str> = envelopes.iter().map(|e| e.routing_key()).collect();
    let bodies: Vec<sqlx::types::Json<&contracts::Envelope>> =
        envelopes.iter().map(|e| sqlx::types::Json(*e)).collect();
    let occurred: Vec<DateTime<Utc>> = envelopes.iter().map(|e| e.occurred_at).collect();
    let held: Vec<(i64, Option<i64>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[], $5::timestamptz[])
                   WITH ORDINALITY AS i (booking_id, version, event_type, envelope, occurred_at, position)),
              previous AS (
                SELECT s.booking_id, s.version, s.occurred_at
                  FROM booking_snapshots s JOIN input i ON i.booking_id = s.booking_id),
              upsert AS (
                INSERT INTO booking_snapshots (booking_id, version, event_type, envelope, occurred_at)
                SELECT booking_id, version, event_type, envelope, occurred_at FROM input ORDER BY booking_id
                ON CONFLICT (booking_id) DO UPDATE
                   SET version = EXCLUDED.version, event_type = EXCLUDED.event_type,
                       envelope = EXCLUDED.envelope, occurred_at = EXCLUDED.occurred_at,
                       updated_at = now()
                 WHERE (booking_snapshots.version, coalesce(booking_snapshots.occurred_at, '-infinity'))
                     < (EXCLUDED.version, EXCLUDED.occurred_at))
         SELECT i.position, p.version, p.occurred_at
           FROM input i LEFT JOIN previous p ON p.booking_id = i.booking_id
          ORDER BY i.position",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&types)
    .bind(&bodies)
    .bind(&occurred)
    .fetch_all(pool)
    .await?;
    Ok(envelopes
        .iter()
        .zip(held)
        .map(|(envelope, (_, version, occurred_at))| {
            let this = (envelope.version, Some(envelope.occurred_at));
            match version.map(|v| (v, occurred_at)) {
                None => Recorded::Newer,
                Some(held) if held == this => Recorded::Same,
                Some(held) if held > this => Recorded::Older,
                Some(_) => Recorded::Newer,
            }
        })
        .collect())
}

/// What [`claim_mail`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The mail is this sender's to send.
    Claimed,
    /// It was sent or refused for good before.
    Settled,
    /// A result of the booking newer than the mail's is recorded: the mail goes to nobody.
    Superseded,
}

impl Claim {
    /// What a claim statement found: a newer result recorded, or its row written.
    fn found(superseded: bool, claimed: bool) -> Claim {
        match (superseded, claimed) {
            (true, _) => Claim::Superseded,
            (false, true) => Claim::Claimed,
            (false, false) => Claim::Settled,
        }
    }
}

/// Claims the right to send the mail about `dedup_key` to `recipient`, in one statement: unless
/// it was sent or refused for good, and — for a booking's result mail (`order`) — unless a newer
/// result of the booking is recorded. Called holding the mail's lock ([`try_lock`]), so a claim
/// still `sending` belongs to a sender that died mid-send: it is taken over. The lock was taken
/// by an earlier statement, so this one's look at the results sees every result recorded before
/// the lock was held.
pub async fn claim_mail(
    conn: &mut PgConnection,
    dedup_key: &str,
    recipient: &str,
    order: Option<&crate::delivery::ResultOrder>,
) -> Result<Claim, sqlx::Error> {
    let claim = MailClaim {
        dedup_key,
        recipient,
        order,
    };
    let found = claim_mails(conn, &[claim]).await?;
    found.into_iter().next().ok_or(sqlx::Error::RowNotFound)
}

/// One mail to claim: its dedup key, its recipient, and the result it is about (none for a mail
/// that is no booking's result).
pub struct MailClaim<'a> {
    pub dedup_key: &'a str,
    pub recipient: &'a str,
    pub order: Option<&'a crate::delivery::ResultOrder>,
}

/// [`claim_mail`] for several mails (a batch's, each of a booking whose lock is held), in one
/// statement: what each found, in their order. Each (dedup key, recipient) at most once.
pub async fn claim_mails(
    conn: &mut PgConnection,
    claims: &[MailClaim<'_>],
) -> Result<Vec<Claim>, sqlx::Error> {
    let keys: Vec<&str> = claims.iter().map(|c| c.dedup_key).collect();
    let recipients: Vec<&str> = claims.iter().map(|c| c.recipient).collect();
    let bookings: Vec<Option<Uuid>> = claims
        .iter()
        .map(|c| c.order.map(|o| o.booking_id))
        .collect();
    let versions: Vec<Option<i64>> = claims.iter().map(|c| c.order.map(|o| o.version)).collect();
    let occurred: Vec<Option<DateTime<Utc>>> = claims
        .iter()
        .map(|c| c.order.map(|o| o.occurred_at))
        .collect();
    let found: Vec<(bool, bool)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::timestamptz[])
                   WITH ORDINALITY AS i (dedup_key, recipient, booking_id, version, occurred_at, position)),
         judged AS (
            SELECT i.position, i.dedup_key, lower(i.recipient) AS recipient,
                   EXISTS (SELECT 1 FROM booking_snapshots s
                            WHERE s.booking_id = i.booking_id
                              AND (s.version, coalesce(s.occurred_at, '-infinity'))
                                > (i.version, i.occurred_at)) AS superseded
              FROM input i),
         claim AS (
            INSERT INTO sent_mail (dedup_key, recipient, outcome)
            SELECT dedup_key, recipient, 'sending' FROM judged WHERE NOT superseded
             ORDER BY dedup_key, recipient
            ON CONFLICT (dedup_key, recipient) DO UPDATE SET at = now()
             WHERE sent_mail.outcome = 'sending'
            RETURNING dedup_key, recipient)
         SELECT j.superseded,
                EXISTS (SELECT 1 FROM claim c
                         WHERE c.dedup_key = j.dedup_key AND c.recipient = j.recipient)
           FROM judged j ORDER BY j.position",
    )
    .bind(&keys)
    .bind(&recipients)
    .bind(&bookings)
    .bind(&versions)
    .bind(&occurred)
    .fetch_all(conn)
    .await?;
    Ok(found
        .into_iter()
        .map(|(superseded, claimed)| Claim::found(superseded, claimed))
        .collect())
}

/// How a claimed mail ended: `sent`, `rejected` (for good, with why), or given back (`None`:
/// the send failed for now, and a retry claims it again).
pub struct Settlement<'a> {
    pub dedup_key: &'a str,
    pub recipient: &'a str,
    pub outcome: Option<(&'a str, Option<&'a str>)>,
}

/// [`settle_mail`] and [`release_mail`] for several claims, in one statement.
pub async fn settle_mails(
    conn: &mut PgConnection,
    settled: &[Settlement<'_>],
) -> Result<(), sqlx::Error> {
    let keys: Vec<&str> = settled.iter().map(|s| s.dedup_key).collect();
    let recipients: Vec<&str> = settled.iter().map(|s| s.recipient).collect();
    let outcomes: Vec<Option<&str>> = settled.iter().map(|s| s.outcome.map(|o| o.0)).collect();
    let details: Vec<Option<&str>> = settled
        .iter()
        .map(|s| s.outcome.and_then(|o| o.1))
        .collect();
    sqlx::query(
        "WITH input AS (
            SELECT i.dedup_key, lower(i.recipient) AS recipient, i.outcome, i.detail
              FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                   AS i (dedup_key, recipient, outcome, detail)),
         released AS (
            DELETE FROM sent_mail s USING input i
             WHERE i.outcome IS NULL AND s.dedup_key = i.dedup_key
               AND s.recipient = i.recipient AND s.outcome = 'sending')
         UPDATE sent_mail s SET outcome = i.outcome, detail = i.detail, at = now()
           FROM input i
          WHERE i.outcome IS NOT NULL AND s.dedup_key = i.dedup_key AND s.recipient = i.recipient",
    )
    .bind(&keys)
    .bind(&recipients)
    .bind(&outcomes)
    .bind(&details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Settles a claim: `sent` or `rejected` (for good).
pub async fn settle_mail(
    conn: &mut PgConnection,
    dedup_key: &str,
    recipient: &str,
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    let settled = Settlement {
        dedup_key,
        recipient,
        outcome: Some((outcome, detail)),
    };
    settle_mails(conn, &[settled]).await
}

/// Gives a claim back (the send failed for now; a retry will claim it again).
pub async fn release_mail(
    conn: &mut PgConnection,
    dedup_key: &str,
    recipient: &str,
) -> Result<(), sqlx::Error> {
    let released = Settlement {
        dedup_key,
        recipient,
        outcome: None,
    };
    settle_mails(conn, &[released]).await
}

/// Remembers that the visitor of `booking_id` was sent a code.
pub async fn announce_visit(pool: &PgPool, booking_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO announced_visits (booking_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(booking_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// [`announce_visit`] for several bookings, in one statement.
pub async fn announce_visits(pool: &PgPool, bookings: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO announced_visits (booking_id)
         SELECT booking_id FROM unnest($1::uuid[]) AS booking_id ORDER BY booking_id
         ON CONFLICT DO NOTHING",
    )
    .bind(bookings)
    .execute(pool)
    .await?;
    Ok(())
}

/// Which of `bookings` had their visitor sent a code, in one statement.
pub async fn visits_announced(
    pool: &PgPool,
    bookings: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    let announced: Vec<Uuid> =
        sqlx::query_scalar("SELECT booking_id FROM announced_visits WHERE booking_id = ANY($1)")
            .bind(bookings)
            .fetch_all(pool)
            .await?;
    Ok(announced.into_iter().collect())
}

/// Whether the visitor of `booking_id` was ever sent a code.
pub async fn visit_announced(pool: &PgPool, booking_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM announced_visits WHERE booking_id = $1)")
        .bind(booking_id)
        .fetch_one(pool)
        .await
}

/// What the retention job erases with one statement each, given a cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// The PIN in the kept results of visits that ended before the cutoff.
    ResultPins,
    /// The visitor's name and email in the kept results of visits that ended before the cutoff.
    ResultVisitors,
    /// The addresses mailed before the cutoff (their sent-mail claims).
    MailRecipients,
}

impl Erasure {
    /// The statement; `$1` is the cutoff.
    fn statement(self) -> &'static str {
        match self {
            Erasure::ResultPins => {
                "UPDATE booking_snapshots SET envelope = jsonb_set(envelope, '{data,pin}', 'null')
                  WHERE envelope #>> '{data,pin}' IS NOT NULL
                    AND (envelope #>> '{data,booking,window,ends_at}')::timestamptz < $1"
            }
            Erasure::ResultVisitors => {
                "UPDATE booking_snapshots
                    SET envelope = jsonb_set(envelope, '{data,booking,visitor}', '{\"name\": \"\", \"email\": \"\"}')
                  WHERE envelope #>> '{data,booking,visitor,email}' <> ''
                    AND (envelope #>> '{data,booking,window,ends_at}')::timestamptz < $1"
            }
            Erasure::MailRecipients => "DELETE FROM sent_mail WHERE at < $1",
        }
    }
}

/// Erases `what` from before `cutoff`; how many rows it changed.
pub async fn erase(
    conn: &mut PgConnection,
    what: Erasure,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(what.statement())
        .bind(cutoff)
        .execute(conn)
        .await?
        .rows_affected())
}

/// The dead letters whose body may hold a PIN, or a visitor when they came before
/// `received_before`: `(id, body, received_at)`.
pub async fn dead_letters_naming_visits(
    conn: &mut PgConnection,
    received_before: DateTime<Utc>,
) -> Result<Vec<(Uuid, Vec<u8>, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, body, received_at FROM dead_letters
          WHERE position('\"pin\":\"'::bytea IN body) > 0
             OR (position('\"visitor\"'::bytea IN body) > 0 AND received_at < $1)",
    )
    .bind(received_before)
    .fetch_all(conn)
    .await
}

/// Replaces a dead letter's body (with one scrubbed of a PIN or a visitor).
pub async fn replace_dead_letter_body(
    conn: &mut PgConnection,
    id: Uuid,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE dead_letters SET body = $2 WHERE id = $1")
        .bind(id)
        .bind(body)
        .execute(conn)
        .await?;
    Ok(())
}
