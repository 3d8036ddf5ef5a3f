//! The handler of the `notifier` queue: result events (`visitor_access.*`, `facility_access.*`),
//! refused requests, outages, an empty timetable pool and Salto drift become mails to
//! residents, visitors, managers and ops ([`crate::decision`] says which, [`crate::mails`]
//! writes them). Each mail goes once per (event, kind of mail, recipient); a result older than
//! one already seen for the same booking — a lower version, or the same version earlier — mails
//! nobody, and a booking's mails go out in the order of its results, so a stale PIN never follows
//! a cancellation.

use contracts::Envelope;
use platform::amqp::{EventHandler, HandlerError};
use platform::snapshots::Recorded;

use crate::decision::{self, VisitAnnouncement};
use crate::delivery::{Mailroom, ResultOrder, database_unavailable};
use crate::{mails, store};

pub struct ResultMails(pub Mailroom);

impl EventHandler for ResultMails {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        let Mailroom {
            pool, ops_address, ..
        } = &self.0;
        if !decision::is_for_the_notifier(&envelope.event) {
            return Err(HandlerError::Permanent(format!(
                "{} is not for the notifier",
                envelope.routing_key()
            )));
        }
        let recorded = store::record_result(pool, &envelope)
            .await
            .map_err(database_unavailable)?;
        if recorded == Recorded::Older {
            tracing::info!(booking_id = %envelope.booking_id, version = envelope.version, "older than a result already seen; not mailed");
            return Ok(());
        }
        let announced = match decision::visit_announcement(&envelope.event) {
            VisitAnnouncement::Record => {
                store::announce_visit(pool, envelope.booking_id)
                    .await
                    .map_err(database_unavailable)?;
                true
            }
            VisitAnnouncement::LookUp => store::visit_announced(pool, envelope.booking_id)
                .await
                .map_err(database_unavailable)?,
            VisitAnnouncement::NotNeeded => false,
        };
        let planned = decision::result_mails(&envelope, ops_address, announced);
        if planned.is_empty() {
            return Ok(());
        }
        let mails = mails::compose_all(&envelope, &planned, chrono::Utc::now())?;
        tracing::info!(booking_id = %envelope.booking_id, event_type = envelope.routing_key(), mails = mails.len(), "mailing result");
        // Refused by every recipient, the mails are not silently done with: a person hears of it.
        let fallback = mails::undeliverable(
            &envelope,
            &mails,
            decision::undeliverable_recipient(&envelope, ops_address),
        )?;
        self.0
            .deliver_once(
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
