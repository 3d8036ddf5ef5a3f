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
    if delivered == 0
        && total > 0
        && let Some(fallback) = fallback
        && let Sent::Refused = send_once(pool, mailer, dedup_key, &fallback).await?
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
