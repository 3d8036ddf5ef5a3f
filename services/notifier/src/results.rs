//! Result events (`visitor_access.*`, `facility_access.*`) and refused requests
//! (`facility_request.refused`) → mails to residents, visitors and
//! managers. Each mail goes once per (event, kind of mail, recipient); a result older than one
//! already seen for the same booking — a lower version, or the same version earlier — mails
//! nobody, and a booking's mails go out in the order of its results, so a stale PIN never follows
//! a cancellation.

use sqlx::PgPool;

use contracts::{Envelope, Event};
use platform::amqp::{EventHandler, HandlerError};
use platform::snapshots::Recorded;

use crate::delivery::{ResultOrder, deliver_once};
use crate::mailer::Mailer;
use crate::mails::mails_for;
use crate::store;

pub struct ResultMails {
    pub pool: PgPool,
    pub mailer: Mailer,
    pub ops_address: String,
}

impl EventHandler for ResultMails {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        if crate::mails::not_for_the_notifier(&envelope.event) {
            // The notifier is not bound to these: one here is a binding gone wrong, for a
            // person to see (a dead letter), not an event to drop.
            return Err(HandlerError::Permanent(format!(
                "{} is not for the notifier",
                envelope.routing_key()
            )));
        }
        let recorded = store::record_result(&self.pool, &envelope)
            .await
            .map_err(|e| HandlerError::Transient(format!("notifier database: {e}")))?;
        if recorded == Recorded::Older {
            tracing::info!(booking_id = %envelope.booking_id, version = envelope.version, "older than a result already seen; not mailed");
            return Ok(());
        }
        let db = |e: sqlx::Error| HandlerError::Transient(format!("notifier database: {e}"));
        let announced = match &envelope.event {
            Event::VisitorAccessGranted(_) | Event::VisitorAccessUpdated(_) => {
                store::announce_visit(&self.pool, envelope.booking_id)
                    .await
                    .map_err(db)?;
                true
            }
            Event::VisitorAccessRevoked(_) => {
                store::visit_announced(&self.pool, envelope.booking_id)
                    .await
                    .map_err(db)?
            }
            _ => false,
        };
        let mails = mails_for(&envelope, &self.ops_address, announced)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        if mails.is_empty() {
            return Ok(());
        }
        tracing::info!(booking_id = %envelope.booking_id, event_type = envelope.routing_key(), mails = mails.len(), "mailing result");
        // Refused by every recipient, the mails are not silently done with: a person hears of it.
        let fallback = crate::mails::undeliverable(&envelope, &mails, &self.ops_address)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        deliver_once(
            &self.pool,
            &self.mailer,
            &format!("event:{}", envelope.event_id),
            mails,
            Some(fallback),
            Some(&ResultOrder {
                booking_id: envelope.booking_id,
                version: envelope.version,
                occurred_at: envelope.occurred_at,
            }),
        )
        .await
    }
}
