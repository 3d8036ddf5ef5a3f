//! Sending each mail at most once per (event, kind of mail, recipient), across redeliveries and
//! replicas; and a booking's result mails in the order of its results.
//!
//! A sender holds the mail's lock — a PostgreSQL session-level advisory lock on the connection
//! it keeps for the whole send — while its claim row says `sending`. The lock goes with the
//! sender: a notifier killed mid-send loses its connection and with it the lock, so the next
//! delivery takes its claim over at once instead of waiting for the claim to age (which, with
//! short retry tiers, outlasted every retry and turned the mail into a dead letter — or, for an
//! alert, into a parked message that nobody was told of).
//!
//! A mail is recorded as sent right after the SMTP server accepts it. A crash between the two
//! (or losing the database connection mid-send) can still send one duplicate; that window is
//! the price of never recording a mail that did not go.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use uuid::Uuid;

use platform::amqp::HandlerError;

use crate::mailer::{Mail, MailError, Mailer};
use crate::store;

/// What the handlers mail with: the database that remembers what was sent, the SMTP client, and
/// the ops address that stands in for a building without managers. Cheap to clone.
#[derive(Clone)]
pub struct Mailroom {
    pub pool: PgPool,
    pub mailer: Mailer,
    pub ops_address: String,
}

impl Mailroom {
    /// [`deliver_once`] with this mailroom's database and SMTP client.
    pub async fn deliver_once(
        &self,
        dedup_key: &str,
        mails: Vec<Mail>,
        fallback: Option<Mail>,
        order: Option<&ResultOrder>,
    ) -> Result<(), HandlerError> {
        deliver_once(&self.pool, &self.mailer, dedup_key, mails, fallback, order).await
    }
}

/// Sends `mails` (each to its `to`) unless already sent under `dedup_key`. Each mail is locked
/// and claimed in the database first, so concurrent deliveries of one event send it once. A
/// temporary SMTP failure fails the whole step (to be retried; the ones sent are not sent
/// again). A recipient refused for good is recorded and skipped; if every recipient was refused,
/// `fallback` is sent instead (the alert to ops, or the notice of an undeliverable result). A
/// mail another delivery is sending right now makes this step transient, so the event is looked
/// at again once that send has settled.
///
/// `order`: the mails are a booking's result. Its mails are then sent one booking at a time
/// (under the booking's lock, taken once for all of them), and none once a newer result of the
/// booking is recorded: so no mail ever follows one about a newer result.
pub async fn deliver_once(
    pool: &PgPool,
    mailer: &Mailer,
    dedup_key: &str,
    mails: Vec<Mail>,
    fallback: Option<Mail>,
    order: Option<&ResultOrder>,
) -> Result<(), HandlerError> {
    let mut delivered = 0;
    let total = mails.len();
    let mut booking_lock = match order {
        Some(order) => {
            Some(SendLock::take(pool, store::booking_lock_name(order.booking_id)).await?)
        }
        None => None,
    };
    let sent: Result<bool, HandlerError> = async {
        for mail in &mails {
            let sent = match &mut booking_lock {
                Some(lock) => {
                    claimed_send(pool, &mut lock.conn, mailer, dedup_key, mail, order).await?
                }
                None => send_once(pool, mailer, dedup_key, mail).await?,
            };
            match sent {
                Sent::Now | Sent::Before => delivered += 1,
                Sent::Refused => {}
                Sent::Superseded => return Ok(false),
            }
        }
        Ok(true)
    }
    .await;
    if let Some(lock) = booking_lock {
        // Released before the fallback, which takes a connection (and a lock) of its own.
        lock.release().await;
    }
    if !sent? {
        return Ok(());
    }
    fall_back_unless_delivered(
        pool,
        mailer,
        dedup_key,
        (delivered, total),
        fallback.as_ref(),
    )
    .await
}

/// One result's mails, as a batch delivers them ([`deliver_results`]).
pub struct ResultDelivery {
    pub dedup_key: String,
    pub mails: Vec<Mail>,
    pub fallback: Option<Mail>,
    pub order: ResultOrder,
}

/// A delivery's answer from [`deliver_results`]: its outcome, or `None` when it could not be
/// delivered together with the others (its booking's lock is held by another delivery; alone,
/// it waits for that one as always).
pub type DeliveryAnswer = Option<Result<(), HandlerError>>;

/// [`deliver_once`] for the mails of several results, each of a booking of its own, together:
/// every booking's lock taken in one statement on one connection, every mail claimed in one,
/// the claimed ones sent at once, every claim settled in one, the locks released in one; then,
/// for a result none of whose recipients accepted a mail, its fallback alone, as alone. An
/// answer per delivery, in their order; `Err` when a shared statement failed before any mail
/// was sent (then each result is delivered alone).
pub async fn deliver_results(
    pool: &PgPool,
    mailer: &Mailer,
    deliveries: &[ResultDelivery],
) -> Result<Vec<DeliveryAnswer>, sqlx::Error> {
    let mut answers: Vec<DeliveryAnswer> = vec![None; deliveries.len()];
    let names: Vec<String> = deliveries
        .iter()
        .map(|d| store::booking_lock_name(d.order.booking_id))
        .collect();
    let mut conn = pool.acquire().await?;
    let taken = match store::try_lock_all(&mut conn, &names).await {
        Ok(taken) => taken,
        Err(error) => {
            // Some locks may be held by the session: they go with the connection.
            drop(PoolConnection::detach(conn));
            return Err(error);
        }
    };
    let held: Vec<usize> = (0..deliveries.len()).filter(|&i| taken[i]).collect();
    if held.is_empty() {
        return Ok(answers);
    }
    let sent = send_claimed(pool, &mut conn, mailer, deliveries, &held).await;
    let held_names: Vec<String> = held.iter().map(|&i| names[i].clone()).collect();
    if store::unlock_all(&mut conn, &held_names).await.is_err() {
        // The locks must not stay with a pooled connection: close it instead of returning it.
        drop(PoolConnection::detach(conn));
    }
    for (index, progress) in held.into_iter().zip(sent?) {
        let delivery = &deliveries[index];
        answers[index] = Some(match progress {
            Progress::Superseded => Ok(()),
            Progress::Failed(error) => Err(error),
            Progress::Delivered(delivered) => {
                fall_back_unless_delivered(
                    pool,
                    mailer,
                    &delivery.dedup_key,
                    (delivered, delivery.mails.len()),
                    delivery.fallback.as_ref(),
                )
                .await
            }
        });
    }
    Ok(answers)
}

/// How a delivery of a batch went.
enum Progress {
    /// Its mails were sent, refused for good or sent before: how many reached their recipient.
    Delivered(usize),
    /// A newer result of its booking is recorded: it mails nobody.
    Superseded,
    /// A mail failed for now (given back, to be retried) or its settling was not recorded.
    Failed(HandlerError),
}

/// Claims, sends and settles the mails of `deliveries[held]` (their bookings' locks held on
/// `conn`): a progress per held delivery. `Err` when the claims failed (nothing was sent).
async fn send_claimed(
    pool: &PgPool,
    conn: &mut sqlx::PgConnection,
    mailer: &Mailer,
    deliveries: &[ResultDelivery],
    held: &[usize],
) -> Result<Vec<Progress>, sqlx::Error> {
    // (delivery, mail, its dedup key) of every mail of the held deliveries.
    let mails: Vec<(usize, &Mail, String)> = held
        .iter()
        .flat_map(|&i| {
            let delivery = &deliveries[i];
            delivery
                .mails
                .iter()
                .map(move |mail| (i, mail, mail_key(&delivery.dedup_key, mail)))
        })
        .collect();
    let claims: Vec<store::MailClaim<'_>> = mails
        .iter()
        .map(|(i, mail, key)| store::MailClaim {
            dedup_key: key,
            recipient: &mail.to,
            order: Some(&deliveries[*i].order),
        })
        .collect();
    let found = store::claim_mails(conn, &claims).await?;
    let mut delivered: Vec<usize> = vec![0; deliveries.len()];
    let mut superseded: Vec<bool> = vec![false; deliveries.len()];
    let mut to_send: Vec<usize> = Vec::new();
    for (m, claim) in found.into_iter().enumerate() {
        let (i, _, key) = &mails[m];
        match claim {
            store::Claim::Claimed => to_send.push(m),
            store::Claim::Settled => delivered[*i] += 1,
            store::Claim::Superseded => {
                if !superseded[*i] {
                    let booking_id = deliveries[*i].order.booking_id;
                    tracing::info!(dedup_key = key.as_str(), %booking_id, "a newer result of the booking is recorded; not mailed");
                }
                superseded[*i] = true;
            }
        }
    }
    let outcomes =
        futures::future::join_all(to_send.iter().map(|&m| mailer.send(mails[m].1))).await;
    let mut failed: Vec<Option<HandlerError>> = vec![None; deliveries.len()];
    let mut settlements: Vec<store::Settlement<'_>> = Vec::with_capacity(to_send.len());
    for (&m, outcome) in to_send.iter().zip(&outcomes) {
        let (i, mail, key) = &mails[m];
        let settled = match outcome {
            Ok(()) => {
                tracing::info!(dedup_key = key.as_str(), "mail sent");
                delivered[*i] += 1;
                Some(("sent", None))
            }
            Err(MailError::Permanent(error)) => {
                tracing::error!(dedup_key = key.as_str(), %error, "recipient refused for good");
                Some(("rejected", Some(error.as_str())))
            }
            Err(MailError::Transient(error)) => {
                failed[*i] = Some(HandlerError::Transient(error.clone()));
                None
            }
        };
        settlements.push(store::Settlement {
            dedup_key: key,
            recipient: &mail.to,
            outcome: settled,
        });
    }
    if !settlements.is_empty() && store::settle_mails(conn, &settlements).await.is_err() {
        // The connection was lost while the mails went out (a database restart): record them
        // on a fresh one, or the next delivery would send them again.
        let recorded = match pool.acquire().await {
            Ok(mut fresh) => store::settle_mails(&mut fresh, &settlements).await,
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            let error = format!("notifier database: {error}");
            for &m in &to_send {
                failed[mails[m].0] = Some(HandlerError::Transient(error.clone()));
            }
        }
    }
    Ok(held
        .iter()
        .map(|&i| {
            if superseded[i] {
                Progress::Superseded
            } else if let Some(error) = failed[i].take() {
                Progress::Failed(error)
            } else {
                Progress::Delivered(delivered[i])
            }
        })
        .collect())
}

/// When none of an event's mails reached its recipient (`(delivered, total)`), `fallback` goes
/// instead, under its own lock; a fallback refused too is a dead letter.
async fn fall_back_unless_delivered(
    pool: &PgPool,
    mailer: &Mailer,
    dedup_key: &str,
    (delivered, total): (usize, usize),
    fallback: Option<&Mail>,
) -> Result<(), HandlerError> {
    if delivered == 0
        && total > 0
        && let Some(fallback) = fallback
        && let Sent::Refused = send_once(pool, mailer, dedup_key, fallback).await?
    {
        return Err(HandlerError::Permanent(
            "no recipient accepted the mail, not even the ops address".to_owned(),
        ));
    }
    Ok(())
}

/// Where a result stands among its booking's results (version, then when it happened).
#[derive(Debug, Clone, Copy)]
pub struct ResultOrder {
    pub booking_id: Uuid,
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
}

enum Sent {
    Now,
    Before,
    Refused,
    /// A newer result of the booking is recorded: this one mails nobody any more.
    Superseded,
}

/// A session lock held, with the pooled connection it lives on, for as long as a send takes.
struct SendLock {
    conn: PoolConnection<sqlx::Postgres>,
    name: String,
}

impl SendLock {
    /// Takes lock `name`, or fails transiently when another delivery holds it (the event is
    /// looked at again once that send has settled).
    async fn take(pool: &PgPool, name: String) -> Result<SendLock, HandlerError> {
        let mut conn = pool.acquire().await.map_err(database_unavailable)?;
        if !store::try_lock(&mut conn, &name)
            .await
            .map_err(database_unavailable)?
        {
            return Err(HandlerError::Transient(format!(
                "another delivery is sending under lock {name}"
            )));
        }
        Ok(SendLock { conn, name })
    }

    async fn release(mut self) {
        if store::unlock(&mut self.conn, &self.name).await.is_err() {
            // The lock must not stay with a pooled connection: close it instead of returning it.
            drop(PoolConnection::detach(self.conn));
        }
    }
}

/// Sends one mail that is no booking's result under its own lock.
async fn send_once(
    pool: &PgPool,
    mailer: &Mailer,
    dedup_key: &str,
    mail: &Mail,
) -> Result<Sent, HandlerError> {
    let mut lock = SendLock::take(
        pool,
        store::mail_lock_name(&mail_key(dedup_key, mail), &mail.to),
    )
    .await?;
    let outcome = claimed_send(pool, &mut lock.conn, mailer, dedup_key, mail, None).await;
    lock.release().await;
    outcome
}

/// One event may mail one address twice (a visitor who is also the resident): each kind of mail
/// is its own.
fn mail_key(dedup_key: &str, mail: &Mail) -> String {
    format!("{dedup_key}/{}", mail.kind)
}

/// Sends the mail under its claim; the caller holds the mail's lock (or its booking's), so a
/// `sending` claim found here belongs to a sender that is gone.
async fn claimed_send(
    pool: &PgPool,
    conn: &mut sqlx::PgConnection,
    mailer: &Mailer,
    dedup_key: &str,
    mail: &Mail,
    order: Option<&ResultOrder>,
) -> Result<Sent, HandlerError> {
    let dedup_key = mail_key(dedup_key, mail);
    let dedup_key = dedup_key.as_str();
    match store::claim_mail(conn, dedup_key, &mail.to, order)
        .await
        .map_err(database_unavailable)?
    {
        store::Claim::Claimed => {}
        store::Claim::Settled => return Ok(Sent::Before),
        store::Claim::Superseded => {
            let booking_id = order.map(|o| o.booking_id).unwrap_or_default();
            tracing::info!(dedup_key, %booking_id, "a newer result of the booking is recorded; not mailed");
            return Ok(Sent::Superseded);
        }
    }
    match mailer.send(mail).await {
        Ok(()) => {
            if store::settle_mail(conn, dedup_key, &mail.to, "sent", None)
                .await
                .is_err()
            {
                // The claim's connection was lost while the mail went out (a database restart):
                // record it on a fresh one, or the next delivery would send it again.
                let mut fresh = pool.acquire().await.map_err(database_unavailable)?;
                store::settle_mail(&mut fresh, dedup_key, &mail.to, "sent", None)
                    .await
                    .map_err(database_unavailable)?;
            }
            tracing::info!(dedup_key, "mail sent");
            Ok(Sent::Now)
        }
        Err(MailError::Transient(error)) => {
            store::release_mail(conn, dedup_key, &mail.to)
                .await
                .map_err(database_unavailable)?;
            Err(HandlerError::Transient(error))
        }
        Err(MailError::Permanent(error)) => {
            tracing::error!(dedup_key, %error, "recipient refused for good");
            store::settle_mail(conn, dedup_key, &mail.to, "rejected", Some(&error))
                .await
                .map_err(database_unavailable)?;
            Ok(Sent::Refused)
        }
    }
}

/// The notifier's database failing is worth another try.
pub(crate) fn database_unavailable(error: sqlx::Error) -> HandlerError {
    HandlerError::Transient(format!("notifier database: {error}"))
}
