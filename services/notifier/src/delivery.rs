//! Sending each mail at most once per (subject, recipient), across redeliveries and replicas.
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

use sqlx::PgPool;
use sqlx::pool::PoolConnection;

use platform::amqp::HandlerError;

use crate::mailer::{Mail, MailError, Mailer};
use crate::store;

/// Sends `mails` (each to its `to`) unless already sent under `dedup_key`. Each mail is locked
/// and claimed in the database first, so concurrent deliveries of one event send it once. A
/// temporary SMTP failure fails the whole step (to be retried; the ones sent are not sent
/// again). A recipient refused for good is recorded and skipped; if every recipient was refused,
/// `fallback` (the ops address) is told instead. A mail another delivery is sending right now
/// makes this step transient, so the event is looked at again once that send has settled.
pub async fn deliver_once(
    pool: &PgPool,
    mailer: &Mailer,
    dedup_key: &str,
    mails: Vec<Mail>,
    fallback: Option<Mail>,
) -> Result<(), HandlerError> {
    let mut delivered = 0;
    let total = mails.len();
    for mail in &mails {
        match send_once(pool, mailer, dedup_key, mail).await? {
            Sent::Now | Sent::Before => delivered += 1,
            Sent::Refused => {}
        }
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

enum Sent {
    Now,
    Before,
    Refused,
}

async fn send_once(
    pool: &PgPool,
    mailer: &Mailer,
    dedup_key: &str,
    mail: &Mail,
) -> Result<Sent, HandlerError> {
    let mut conn = pool.acquire().await.map_err(db)?;
    if !store::lock_mail(&mut conn, dedup_key, &mail.to)
        .await
        .map_err(db)?
    {
        return Err(HandlerError::Transient(format!(
            "mail {dedup_key} is being sent by another delivery"
        )));
    }
    let outcome = claimed_send(pool, &mut conn, mailer, dedup_key, mail).await;
    if store::unlock_mail(&mut conn, dedup_key, &mail.to)
        .await
        .is_err()
    {
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
        .map_err(db)?
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
                let mut fresh = pool.acquire().await.map_err(db)?;
                store::settle_mail(&mut fresh, dedup_key, &mail.to, "sent", None)
                    .await
                    .map_err(db)?;
            }
            tracing::info!(dedup_key, "mail sent");
            Ok(Sent::Now)
        }
        Err(MailError::Transient(error)) => {
            store::release_mail(conn, dedup_key, &mail.to)
                .await
                .map_err(db)?;
            Err(HandlerError::Transient(error))
        }
        Err(MailError::Permanent(error)) => {
            tracing::error!(dedup_key, %error, "recipient refused for good");
            store::settle_mail(conn, dedup_key, &mail.to, "rejected", Some(&error))
                .await
                .map_err(db)?;
            Ok(Sent::Refused)
        }
    }
}

fn db(error: sqlx::Error) -> HandlerError {
    HandlerError::Transient(format!("notifier database: {error}"))
}
