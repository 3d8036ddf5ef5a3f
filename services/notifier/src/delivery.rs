//! Sending each mail at most once per (subject, recipient), across redeliveries and replicas.
//!
//! A mail is recorded as sent right after the SMTP server accepts it. A crash between the two
//! can still send one duplicate; that window is the price of never recording a mail that did
//! not go.

use sqlx::PgPool;

use platform::amqp::HandlerError;

use crate::mailer::{Mail, MailError, Mailer};
use crate::store;

/// Sends `mails` (each to its `to`) unless already sent under `dedup_key`. A temporary SMTP
/// failure fails the whole step (to be retried; the ones sent are not sent again). A recipient
/// refused for good is recorded and skipped; if every recipient was refused, `fallback` (the ops
/// address) is told instead.
pub async fn deliver_once(
    pool: &PgPool,
    mailer: &Mailer,
    dedup_key: &str,
    mails: Vec<Mail>,
    fallback: Option<Mail>,
) -> Result<(), HandlerError> {
    let db = |e: sqlx::Error| HandlerError::Transient(format!("notifier database: {e}"));
    let mut delivered = 0;
    let total = mails.len();
    for mail in mails {
        if store::already_mailed(pool, dedup_key, &mail.to)
            .await
            .map_err(db)?
        {
            delivered += 1;
            continue;
        }
        match mailer.send(&mail).await {
            Ok(()) => {
                store::record_mail(pool, dedup_key, &mail.to, "sent", None)
                    .await
                    .map_err(db)?;
                tracing::info!(dedup_key, "mail sent");
                delivered += 1;
            }
            Err(MailError::Transient(error)) => return Err(HandlerError::Transient(error)),
            Err(MailError::Permanent(error)) => {
                tracing::error!(dedup_key, %error, "recipient refused for good");
                store::record_mail(pool, dedup_key, &mail.to, "rejected", Some(&error))
                    .await
                    .map_err(db)?;
            }
        }
    }
    if delivered == 0
        && total > 0
        && let Some(fallback) = fallback
        && !store::already_mailed(pool, dedup_key, &fallback.to)
            .await
            .map_err(db)?
    {
        match mailer.send(&fallback).await {
            Ok(()) => store::record_mail(pool, dedup_key, &fallback.to, "sent", None)
                .await
                .map_err(db)?,
            Err(MailError::Transient(error)) => return Err(HandlerError::Transient(error)),
            Err(MailError::Permanent(error)) => {
                return Err(HandlerError::Permanent(format!(
                    "no recipient accepted the mail: {error}"
                )));
            }
        }
    }
    Ok(())
}
