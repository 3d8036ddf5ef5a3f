//! The notifier's command line: with no command it runs the service; `migrate` is every
//! service's ([`platform::cli::Command`]); `dead-letters` holds the ops commands for dead letters:
//! list, show, replay (republish to the queue it came from, retry count reset) and discard.

use std::fmt::Write as _;

use clap::{Parser, Subcommand};
use sqlx::PgPool;
use uuid::Uuid;

use contracts::headers;
use platform::amqp::{Headers, Outgoing, Publisher};

use crate::settings::CliSettings;
use crate::store::{self, StoredDeadLetter};
use crate::{MIGRATOR, SCHEMA};

/// notifier: emails for access outcomes and dead letters. With no command, runs the service
/// (migrating its schema first).
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    #[command(flatten)]
    Service(platform::cli::Command),
    /// Inspect and act on dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[derive(Subcommand)]
pub enum DeadLetterCommand {
    /// Lists open dead letters, newest first.
    List {
        /// Include replayed and discarded ones.
        #[arg(long)]
        all: bool,
    },
    /// Shows one dead letter whole (a PIN in it masked).
    Show {
        id: Uuid,
        /// Shows PINs as they are.
        #[arg(long)]
        reveal: bool,
    },
    /// Republishes it to the queue it came from, with a fresh retry budget.
    Replay { id: Uuid },
    /// Closes it without republishing.
    Discard { id: Uuid },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Connect(#[from] platform::db::DbError),
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

/// Runs a dead-letter command on the notifier's schema (migrated first); what to print.
pub async fn run(settings: &CliSettings, command: DeadLetterCommand) -> Result<String, CliError> {
    let pool = platform::db::connect_and_migrate(&settings.database, SCHEMA, &MIGRATOR).await?;
    match command {
        DeadLetterCommand::List { all } => list(&pool, all).await,
        DeadLetterCommand::Show { id, reveal } => show(&pool, id, reveal).await,
        DeadLetterCommand::Discard { id } => discard(&pool, id).await,
        DeadLetterCommand::Replay { id } => {
            let publisher = Publisher::new(&settings.amqp, "notifier-cli");
            replay(&pool, &publisher, id).await
        }
    }
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
            l.failure.service,
            l.failure.error_kind,
            l.booking_id
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            first_line(&l.failure.error, 80)
        );
    }
    Ok(out)
}

/// Everything stored about one dead letter; a PIN in its body shows as `******` unless `reveal`.
pub async fn show(pool: &PgPool, id: Uuid, reveal: bool) -> Result<String, CliError> {
    let letter = store::get_dead_letter(pool, id)
        .await?
        .ok_or(CliError::NotFound(id))?;
    Ok(describe(&letter, reveal))
}

/// [`show`]'s text: one field a line, then the headers and the body.
fn describe(l: &StoredDeadLetter, reveal: bool) -> String {
    let failure = &l.failure;
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let fields = [
        ("id", l.id.to_string()),
        ("status", l.status.clone()),
        ("received", l.received_at.to_rfc3339()),
        ("service", failure.service.clone()),
        ("original queue", failure.original_queue.clone()),
        ("routing key", failure.routing_key.clone()),
        ("event type", or_dash(l.event_type.clone())),
        ("booking", or_dash(l.booking_id.map(|b| b.to_string()))),
        ("building", or_dash(l.building_id.clone())),
        ("error kind", failure.error_kind.clone()),
        ("error", failure.error.clone()),
        ("attempts", failure.attempts().to_string()),
        (
            "first failed at",
            or_dash(failure.first_failed_at.map(|t| t.to_rfc3339())),
        ),
    ];
    let mut out = String::new();
    for (label, value) in fields {
        let _ = writeln!(out, "{:<17}{value}", format!("{label}:"));
    }
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
    out
}

/// Republishes a dead letter to its original queue with a fresh retry budget.
pub async fn replay(pool: &PgPool, publisher: &Publisher, id: Uuid) -> Result<String, CliError> {
    let letter = open_letter(pool, id, "replayed").await?;
    let routing_key = letter.failure.original_queue.clone();
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
    out.set(
        headers::ORIGINAL_ROUTING_KEY,
        letter.failure.routing_key.clone(),
    );
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use contracts::Event;

    use super::*;
    use crate::fixtures::{self, BOOKING, DEAD_LETTER, PIN};

    /// The granted visit that booking-api could not apply, as the notifier stored it.
    fn stored(body: Vec<u8>) -> StoredDeadLetter {
        let letter = fixtures::dead_letter("permanent", None);
        StoredDeadLetter {
            id: letter.id,
            received_at: fixtures::utc(1, 9, 30),
            status: "open".into(),
            failure: letter.failure,
            event_type: Some("visitor_access.granted.v1".into()),
            booking_id: Some(BOOKING),
            building_id: None,
            message_id: letter.message_id,
            headers: serde_json::json!({"x-service": "ipassan-sync"}),
            body,
        }
    }

    #[test]
    fn a_dead_letter_is_shown_one_field_a_line_with_its_pin_masked_unless_revealed() {
        let granted = fixtures::visit_result(Event::VisitorAccessGranted, Some(PIN));
        let letter = stored(granted.to_json());
        let shown = describe(&letter, false);
        for line in [
            format!("id:              {DEAD_LETTER}"),
            "status:          open".to_owned(),
            "received:        2026-12-01T09:30:00+00:00".to_owned(),
            "service:         ipassan-sync".to_owned(),
            "original queue:  ipassan-sync".to_owned(),
            "routing key:     visitor_booking.created.v1".to_owned(),
            "event type:      visitor_access.granted.v1".to_owned(),
            format!("booking:         {BOOKING}"),
            "building:        -".to_owned(),
            "error kind:      permanent".to_owned(),
            "error:           iPassan answered 403 Access Denied".to_owned(),
            "attempts:        3".to_owned(),
            "first failed at: 2026-11-23T10:00:00+00:00".to_owned(),
        ] {
            assert!(
                shown.lines().any(|l| l == line),
                "{line:?} missing:\n{shown}"
            );
        }
        assert!(
            shown.contains("\"pin\": \"******\"") && !shown.contains(PIN),
            "{shown}"
        );
        assert!(describe(&letter, true).contains(PIN));
    }

    #[test]
    fn the_command_line_runs_the_service_migrates_or_acts_on_one_dead_letter() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;
        assert!(parse(&["notifier"]).is_none());
        assert!(matches!(
            parse(&["notifier", "migrate"]),
            Some(Command::Service(platform::cli::Command::Migrate))
        ));
        let id = DEAD_LETTER.to_string();
        assert!(matches!(
            parse(&["notifier", "dead-letters", "show", &id, "--reveal"]),
            Some(Command::DeadLetters(DeadLetterCommand::Show { id, reveal: true })) if id == DEAD_LETTER
        ));
        assert!(matches!(
            parse(&["notifier", "dead-letters", "list", "--all"]),
            Some(Command::DeadLetters(DeadLetterCommand::List { all: true }))
        ));
        assert!(Cli::try_parse_from(["notifier", "dead-letters", "replay", "not-an-id"]).is_err());
    }

    #[test]
    fn a_body_that_is_not_json_is_shown_only_when_revealed() {
        let letter = stored(b"pin=048213".to_vec());
        assert!(describe(&letter, false).contains("(10 bytes, not JSON; --reveal shows them)"));
        assert!(describe(&letter, true).contains("pin=048213"));
    }
}
