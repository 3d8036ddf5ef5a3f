//! The handler of `notifier.dead-letters`: every message on `connecx.dead` is stored whole and
//! mailed to the building's managers, or the ops address when the building is unknown
//! ([`crate::decision::dead_letter_recipients`]; the text is [`crate::mails::dead_letter_alert`]).
//! Nothing that reaches the dead-letter exchange goes unseen: when every recipient refuses the
//! alert for good, ops get it.

use platform::amqp::{HandlerError, Message, MessageHandler};

use crate::dead_letter::DeadLetter;
use crate::delivery::Mailroom;
use crate::{decision, mails, store};

pub struct DeadLetterAlerts(pub Mailroom);

impl MessageHandler for DeadLetterAlerts {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let Mailroom {
            pool, ops_address, ..
        } = &self.0;
        let letter = DeadLetter::from_message(message);
        tracing::warn!(
            dead_letter_id = %letter.id,
            service = %letter.failure.service,
            kind = %letter.failure.error_kind,
            booking_id = ?letter.booking_id(),
            "dead letter received"
        );
        store::insert_dead_letter(pool, &letter)
            .await
            .map_err(|e| HandlerError::Transient(format!("cannot store dead letter: {e}")))?;
        let mails = decision::dead_letter_recipients(&letter, ops_address)
            .iter()
            .map(|to| mails::dead_letter_alert(&letter, to))
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = mails::dead_letter_alert(&letter, ops_address)?;
        self.0
            .deliver_once(
                &format!("dead-letter:{}", letter.id),
                mails,
                Some(fallback),
                None,
            )
            .await
    }
}
