//! Result events (`visitor_access.*`, `facility_access.*`) → emails to residents and visitors.
//!
//! The mails for these arrive with the iPassan and Salto integrations; until then the events are
//! logged and acknowledged, so the queue does not grow. No mail is invented.

use contracts::Envelope;
use platform::amqp::{EventHandler, HandlerError};

pub struct ResultMails;

impl EventHandler for ResultMails {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        tracing::info!(
            event_id = %envelope.event_id,
            booking_id = %envelope.booking_id,
            event_type = envelope.routing_key(),
            "result event received; no template for it yet"
        );
        Ok(())
    }
}
