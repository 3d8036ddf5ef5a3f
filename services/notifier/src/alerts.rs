//! The dead-letter consumer: every message on `connecx.dead` is stored whole and mailed to the
//! building's managers (or the ops address when the building is unknown). Nothing that reaches
//! the dead-letter exchange goes unseen.

use serde::Serialize;
use sqlx::PgPool;

use platform::amqp::{HandlerError, Message, MessageHandler};

use crate::dead_letter::DeadLetter;
use crate::delivery::deliver_once;
use crate::mailer::{Mail, Mailer};
use crate::store;
use crate::templates;

pub struct DeadLetterAlerts {
    pub pool: PgPool,
    pub mailer: Mailer,
    pub ops_address: String,
}

impl MessageHandler for DeadLetterAlerts {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let letter = DeadLetter::from_message(message);
        tracing::warn!(
            dead_letter_id = %letter.id,
            service = %letter.service,
            kind = %letter.error_kind,
            booking_id = ?letter.booking_id(),
            "dead letter received"
        );
        store::insert_dead_letter(&self.pool, &letter)
            .await
            .map_err(|e| HandlerError::Transient(format!("cannot store dead letter: {e}")))?;
        let recipients = letter.alert_recipients(&self.ops_address);
        let mails = recipients
            .iter()
            .map(|to| alert_mail(&letter, to))
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = alert_mail(&letter, &self.ops_address)?;
        deliver_once(
            &self.pool,
            &self.mailer,
            &format!("dead-letter:{}", letter.id),
            mails,
            Some(fallback),
            None,
        )
        .await
    }
}

#[derive(Serialize)]
struct AlertContext<'a> {
    dead_letter_id: String,
    booking_id: Option<String>,
    service: &'a str,
    event_type: Option<&'a str>,
    routing_key: &'a str,
    error: &'a str,
    error_kind: &'a str,
    attempts: i64,
    first_failed_at: Option<String>,
    building_name: Option<&'a str>,
    consequence: &'static str,
    action: String,
}

/// The alert mail for one recipient.
pub fn alert_mail(letter: &DeadLetter, to: &str) -> Result<Mail, HandlerError> {
    let context = AlertContext {
        dead_letter_id: letter.id.to_string(),
        booking_id: letter.booking_id().map(|id| id.to_string()),
        service: &letter.service,
        event_type: letter.event_type(),
        routing_key: &letter.routing_key,
        error: &letter.error,
        error_kind: &letter.error_kind,
        attempts: letter.attempts(),
        first_failed_at: letter
            .first_failed_at
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        building_name: letter
            .event
            .as_ref()
            .and_then(|e| e.building().map(|b| b.name.as_str())),
        consequence: consequence(letter),
        action: action(letter),
    };
    let (text, html) = templates::render_pair("dead_letter_alert", &context)
        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
    let subject = match letter.booking_id() {
        Some(booking) => format!(
            "[connecX] Action needed: {} failed for booking {booking}",
            letter.service
        ),
        None => format!(
            "[connecX] Action needed: {} could not handle a message",
            letter.service
        ),
    };
    Ok(Mail {
        kind: "dead_letter_alert",
        to: to.to_owned(),
        subject,
        text,
        html,
        calendar: None,
    })
}

fn consequence(letter: &DeadLetter) -> &'static str {
    match letter.event_type().unwrap_or_default().split('.').next() {
        Some("visitor_booking") => "The visitor may not have a working access code.",
        Some("facility_booking") => {
            "The facility access for this booking may be missing or out of date."
        }
        Some("visitor_access" | "facility_access") => {
            "The people concerned may not have been told the outcome."
        }
        _ => "Nothing was changed for it.",
    }
}

fn action(letter: &DeadLetter) -> String {
    match letter.error_kind.as_str() {
        "transient_exhausted" => format!(
            "{} kept failing with a temporary error. Check that the system it talks to is up and reachable, then replay.",
            letter.service
        ),
        "malformed" => {
            "The message is not something the service can read; it was probably sent by mistake. \
                        Forward this email to your connecX support contact and discard it."
                .to_owned()
        }
        "permanent" => {
            "The request was refused and retrying will not help. Fix what the error names \
                        (for example a missing or wrong setting), then replay."
                .to_owned()
        }
        _ => {
            "The message broker gave up on it. Forward this email to your connecX support contact."
                .to_owned()
        }
    }
}
