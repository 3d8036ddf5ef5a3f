//! The ops commands for dead letters: list, show, replay (republish to the queue it came from,
//! retry count reset) and discard.

use std::fmt::Write as _;

use sqlx::PgPool;
use uuid::Uuid;

use contracts::headers;
use platform::amqp::{Headers, Outgoing, Publisher};

use crate::store::{self, StoredDeadLetter};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no dead letter with id {0}")]
    NotFound(Uuid),
    #[error("dead letter {id} is already {status}; only open dead letters can be {action}")]
    NotOpen {
        id: Uuid,
        status: String,
        action: &'static str,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not republish: {0}")]
    Publish(#[from] platform::amqp::PublishError),
}

/// One line per dead letter, newest first.
pub async fn list(pool: &PgPool, include_closed: bool) -> Result<String, CliError> {
    let letters = store::list_dead_letters(pool, include_closed, 500).await?;
    let mut out = String::new();
    if letters.is_empty() {
        out.push_str(if include_closed {
            "no dead letters\n"
        } else {
            "no open dead letters\n"
        });
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "{:<36}  {:<20}  {:<9}  {:<22}  {:<20}  {:<36}  error",
        "id", "received (UTC)", "status", "service", "kind", "booking"
    );
    for l in letters {
        let _ = writeln!(
            out,
            "{:<36}  {:<20}  {:<9}  {:<22}  {:<20}  {:<36}  {}",
            l.id,
            l.received_at.format("%Y-%m-%d %H:%M:%S"),
            l.status,
            l.service,
            l.error_kind,
            l.booking_id
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            first_line(&l.error, 80)
        );
    }
    Ok(out)
}

/// Everything stored about one dead letter; a PIN in its body shows as `******` unless `reveal`.
pub async fn show(pool: &PgPool, id: Uuid, reveal: bool) -> Result<String, CliError> {
    let l = store::get_dead_letter(pool, id)
        .await?
        .ok_or(CliError::NotFound(id))?;
    let mut out = String::new();
    let _ = writeln!(out, "id:              {}", l.id);
    let _ = writeln!(out, "status:          {}", l.status);
    let _ = writeln!(out, "received:        {}", l.received_at.to_rfc3339());
    let _ = writeln!(out, "service:         {}", l.service);
    let _ = writeln!(out, "original queue:  {}", l.original_queue);
    let _ = writeln!(out, "routing key:     {}", l.routing_key);
    let _ = writeln!(
        out,
        "event type:      {}",
        l.event_type.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "booking:         {}",
        l.booking_id
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "building:        {}",
        l.building_id.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "error kind:      {}", l.error_kind);
    let _ = writeln!(out, "error:           {}", l.error);
    let _ = writeln!(out, "attempts:        {}", l.retry_count + 1);
    let _ = writeln!(
        out,
        "first failed at: {}",
        l.first_failed_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "headers:\n{}",
        serde_json::to_string_pretty(&l.headers).unwrap_or_default()
    );
    let body = String::from_utf8_lossy(&l.body);
    let pretty = serde_json::from_slice::<serde_json::Value>(&l.body)
        .ok()
        .map(|mut v| {
            if !reveal {
                mask_pins(&mut v);
            }
            v
        })
        .and_then(|v| serde_json::to_string_pretty(&v).ok());
    let body = match pretty {
        Some(pretty) => pretty,
        // Not JSON: shown as it is only when asked (a PIN could be anywhere in it).
        None if reveal => body.into_owned(),
        None => format!("({} bytes, not JSON; --reveal shows them)", l.body.len()),
    };
    let _ = writeln!(out, "body:\n{body}");
    Ok(out)
}

/// Republishes a dead letter to its original queue with a fresh retry budget.
pub async fn replay(pool: &PgPool, publisher: &Publisher, id: Uuid) -> Result<String, CliError> {
    let letter = open_letter(pool, id, "replayed").await?;
    let routing_key = letter.original_queue.clone();
    publisher
        .publish(Outgoing {
            // The default exchange routes by queue name: straight back to the queue that gave up.
            exchange: "",
            routing_key: &routing_key,
            body: &letter.body,
            message_id: letter.message_id.as_deref(),
            headers: replay_headers(&letter),
        })
        .await?;
    if !store::close_dead_letter(pool, id, "replayed").await? {
        tracing::warn!(%id, "dead letter was closed by someone else while it was replayed");
    }
    Ok(format!(
        "dead letter {id} republished to queue {routing_key}\n"
    ))
}

pub async fn discard(pool: &PgPool, id: Uuid) -> Result<String, CliError> {
    open_letter(pool, id, "discarded").await?;
    store::close_dead_letter(pool, id, "discarded").await?;
    Ok(format!("dead letter {id} discarded\n"))
}

async fn open_letter(
    pool: &PgPool,
    id: Uuid,
    action: &'static str,
) -> Result<StoredDeadLetter, CliError> {
    let letter = store::get_dead_letter(pool, id)
        .await?
        .ok_or(CliError::NotFound(id))?;
    if letter.status != "open" {
        return Err(CliError::NotOpen {
            id,
            status: letter.status,
            action,
        });
    }
    Ok(letter)
}

/// The original headers without the failure bookkeeping, so the worker starts counting afresh.
fn replay_headers(letter: &StoredDeadLetter) -> Headers {
    let mut out = Headers(letter.headers.as_object().cloned().unwrap_or_default());
    for name in [
        headers::RETRY_COUNT,
        headers::FIRST_FAILED_AT,
        headers::SERVICE,
        headers::ERROR_KIND,
        headers::ERROR,
        headers::ORIGINAL_QUEUE,
        headers::DEAD_LETTER_ID,
        headers::BROKER_FIRST_DEATH_QUEUE,
        headers::BROKER_FIRST_DEATH_REASON,
        "x-first-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
        "x-death",
        "x-delivery-count",
    ] {
        out.remove(name);
    }
    out.set(headers::ORIGINAL_ROUTING_KEY, letter.routing_key.clone());
    out
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Replaces every `"pin"` string in `value` with `******`.
fn mask_pins(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if key == "pin" && field.is_string() {
                    *field = serde_json::Value::String("******".into());
                } else {
                    mask_pins(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_pins),
        _ => {}
    }
}
