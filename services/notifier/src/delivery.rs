//! Sending each mail at most once per (subject, recipient), across redeliveries and replicas.
//!
//! A mail is recorded as sent right after the SMTP server accepts it. A crash between the two
//! can still send one duplicate; that window is the price of never recording a mail that did
//! not go.

use sqlx::PgPool;

use platform::amqp::HandlerError;

use crate::mailer::{Mail, MailError, Mailer};
use crate::store;

/// A claim older than this is taken to belong to a sender that died mid-send.
const STALE_CLAIM_SECS: i64 = 120;

/// Sends `mails` (each to its `to`) unless already sent under `dedup_key`. Each mail is claimed
/// in the database first, so concurrent deliveries of one event send it once. A temporary SMTP
/// failure fails the whole step (to be retried; the ones sent are not sent again). A recipient
/// refused for good is recorded and skipped; if every recipient was refused, `fallback` (the ops
/// address) is told instead. A mail another delivery is sending right now makes this step
/// transient, so the event is looked at again once that send has settled.
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
    let db = |e: sqlx::Error| HandlerError::Transient(format!("notifier database: {e}"));
    if !store::claim_mail(pool, dedup_key, &mail.to, STALE_CLAIM_SECS)
        .await
        .map_err(db)?
    {
        if store::mail_in_flight(pool, dedup_key, &mail.to)
            .await
            .map_err(db)?
        {
            return Err(HandlerError::Transient(format!(
                "mail {dedup_key} is being sent by another delivery"
            )));
        }
        return Ok(Sent::Before);
    }
    match mailer.send(mail).await {
        Ok(()) => {
            store::settle_mail(pool, dedup_key, &mail.to, "sent", None)
                .await
                .map_err(db)?;
            tracing::info!(dedup_key, "mail sent");
            Ok(Sent::Now)
        }
        Err(MailError::Transient(error)) => {
            store::release_mail(pool, dedup_key, &mail.to)
                .await
                .map_err(db)?;
            Err(HandlerError::Transient(error))
        }
        Err(MailError::Permanent(error)) => {
            tracing::error!(dedup_key, %error, "recipient refused for good");
            store::settle_mail(pool, dedup_key, &mail.to, "rejected", Some(&error))
                .await
                .map_err(db)?;
            Ok(Sent::Refused)
        }
    }
}
