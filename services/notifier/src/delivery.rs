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
/// `fallback` is sent instead (the alert to ops, or the notice of an undeliverable result). A mail another delivery is sending right now
/// makes this step transient, so the event is looked at again once that send has settled.
///
/// `order`: the mails are a booking's result. Its mails are then sent one booking at a time
/// (under the booking's lock), and none once a newer result of the booking is recorded: so no
/// mail ever follows one about a newer result.
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
    for mail in &mails {
        match send_once(pool, mailer, dedup_key, mail, order).await? {
            Sent::Now | Sent::Before => delivered += 1,
            Sent::Refused => {}
            Sent::Superseded => return Ok(()),
        }
    }
    if delivered == 0
        && total > 0
        && let Some(fallback) = fallback
        && let Sent::Refused = send_once(pool, mailer, dedup_key, &fallback, None).await?
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

async fn send_once(
    pool: &PgPool,
    mailer: &Mailer,
    dedup_key: &str,
    mail: &Mail,
    order: Option<&ResultOrder>,
) -> Result<Sent, HandlerError> {
    // One event may mail one address twice (a visitor who is also the resident): each kind of
    // mail is its own.
    let dedup_key = format!("{dedup_key}/{}", mail.kind);
    let dedup_key = dedup_key.as_str();
    let lock = match order {
        Some(order) => store::booking_lock_name(order.booking_id),
        None => store::mail_lock_name(dedup_key, &mail.to),
    };
    let mut conn = pool.acquire().await.map_err(database_unavailable)?;
    if !store::try_lock(&mut conn, &lock)
        .await
        .map_err(database_unavailable)?
    {
        return Err(HandlerError::Transient(format!(
            "mail {dedup_key} is being sent by another delivery"
        )));
    }
    let outcome = match order {
        Some(order)
            if store::newer_result_recorded(&mut conn, order)
                .await
                .map_err(database_unavailable)? =>
        {
            tracing::info!(dedup_key, booking_id = %order.booking_id, "a newer result of the booking is recorded; not mailed");
            Ok(Sent::Superseded)
        }
        _ => claimed_send(pool, &mut conn, mailer, dedup_key, mail).await,
    };
    if store::unlock(&mut conn, &lock).await.is_err() {
        // The lock must not stay with a pooled connection: close it instead of returning it.
        drop(PoolConnection::detach(conn));
    }
    outcome
}

/// Sends the mail under its claim; the caller holds the mail's lock, so a `sending` claim found
/// here belongs to a sender that is gone.
async fn claimed_send(
    pool: &PgPool,
    conn: &mut sqlx::PgConnection,
    mailer: &Mailer,
    dedup_key: &str,
    mail: &Mail,
) -> Result<Sent, HandlerError> {
    if !store::claim_mail(conn, dedup_key, &mail.to)
        .await
        .map_err(database_unavailable)?
    {
        return Ok(Sent::Before);
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
