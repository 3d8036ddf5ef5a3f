//! The handler of the `notifier` queue: result events (`visitor_access.*`, `facility_access.*`),
//! refused requests, outages, an empty timetable pool and Salto drift become mails to
//! residents, visitors, managers and ops ([`crate::decision`] says which, [`crate::mails`]
//! writes them). Each mail goes once per (event, kind of mail, recipient); a result older than
//! one already seen for the same booking — a lower version, or the same version earlier — mails
//! nobody, and a booking's mails go out in the order of its results, so a stale PIN never follows
//! a cancellation.
//!
//! The results in hand are mailed together ([`ResultBatches`], docs/architecture.md,
//! "Batches"), or each alone when batching is off (`CONNECX__BATCH__MAX_MESSAGES=1`) or its
//! batch could not answer for it.

use std::collections::HashSet;
use std::sync::Arc;

use contracts::Envelope;
use platform::amqp::{EventHandler, HandlerError};
use platform::batch::{BatchSettings, BatchWork, Batches, first_of_each, firsts, spread};
use platform::snapshots::Recorded;
use platform::trace::TraceId;
use uuid::Uuid;

use crate::decision::{self, VisitAnnouncement};
use crate::delivery::{
    DeliveryAnswer, Mailroom, ResultDelivery, ResultOrder, database_unavailable, deliver_results,
};
use crate::{mails, store};

pub struct ResultMails {
    mailroom: Mailroom,
    batches: Option<Batches<(), ResultBatches>>,
}

impl ResultMails {
    pub fn new(mailroom: Mailroom, batch: BatchSettings) -> Self {
        let batches = batch.batching().then(|| {
            Batches::new(
                contracts::NOTIFIER_QUEUE.name,
                Arc::new(ResultBatches {
                    mailroom: mailroom.clone(),
                }),
                batch.max_messages,
                batch.max_running,
            )
        });
        Self { mailroom, batches }
    }
}

impl EventHandler for ResultMails {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        if !decision::is_for_the_notifier(&envelope.event) {
            return Err(HandlerError::Permanent(format!(
                "{} is not for the notifier",
                envelope.routing_key()
            )));
        }
        if let Some(batches) = &self.batches {
            let result = Traced {
                envelope: envelope.clone(),
                trace: platform::trace::current(),
            };
            if let Some(Some(outcome)) = batches.submit((), result).await {
                return outcome;
            }
        }
        mail_alone(&self.mailroom, envelope).await
    }
}

/// One result's mails on their own: the result recorded, then its mails under its booking's
/// lock.
async fn mail_alone(mailroom: &Mailroom, envelope: Envelope) -> Result<(), HandlerError> {
    let pool = &mailroom.pool;
    let recorded = store::record_result(pool, &envelope)
        .await
        .map_err(database_unavailable)?;
    if recorded == Recorded::Older {
        not_mailed_older(&envelope);
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
    let Some(delivery) = delivery_of(&envelope, announced, &mailroom.ops_address)? else {
        return Ok(());
    };
    mailroom
        .deliver_once(
            &delivery.dedup_key,
            delivery.mails,
            delivery.fallback,
            Some(&delivery.order),
        )
        .await
}

fn not_mailed_older(envelope: &Envelope) {
    tracing::info!(booking_id = %envelope.booking_id, version = envelope.version, "older than a result already seen; not mailed");
}

/// The mails a recorded result sends (`announced`: its visitor was sent a code), with the
/// fallback for when every recipient refuses them; `None` when it mails nobody.
fn delivery_of(
    envelope: &Envelope,
    announced: bool,
    ops_address: &str,
) -> Result<Option<ResultDelivery>, HandlerError> {
    let planned = decision::result_mails(envelope, ops_address, announced);
    if planned.is_empty() {
        return Ok(None);
    }
    let mails = mails::compose_all(envelope, &planned, chrono::Utc::now())?;
    tracing::info!(booking_id = %envelope.booking_id, event_type = envelope.routing_key(), mails = mails.len(), "mailing result");
    // Refused by every recipient, the mails are not silently done with: a person hears of it.
    let fallback = mails::undeliverable(
        envelope,
        &mails,
        decision::undeliverable_recipient(envelope, ops_address),
    )?;
    Ok(Some(ResultDelivery {
        dedup_key: format!("event:{}", envelope.event_id),
        mails,
        fallback: Some(fallback),
        order: ResultOrder {
            booking_id: envelope.booking_id,
            version: envelope.version,
            occurred_at: envelope.occurred_at,
        },
    }))
}

/// One result in a batch: its event and the trace it came with.
pub struct Traced {
    envelope: Envelope,
    trace: Option<TraceId>,
}

/// The results in hand, mailed together: recorded in one statement, the visits announced and
/// looked up in one each, then [`deliver_results`] (every booking's lock, every claim and every
/// settling in one statement each, the mails sent at once). A result's own failure (a mail
/// that cannot be written, a recipient failing for now) is its message's alone; a shared
/// statement failing before any mail went sends every message to be mailed alone. A second
/// result of a booking in the batch is mailed alone after it, in order, under the booking's
/// lock as always.
pub struct ResultBatches {
    mailroom: Mailroom,
}

impl BatchWork for ResultBatches {
    type Item = Traced;
    type Output = DeliveryAnswer;

    async fn run(&self, results: Vec<Traced>) -> Vec<DeliveryAnswer> {
        let marks = first_of_each(&results, |r| r.envelope.booking_id);
        let batched = firsts(&results, &marks);
        let answers = match self.mail_together(&batched).await {
            Ok(answers) => Some(answers),
            Err(error) => {
                tracing::warn!(%error, messages = batched.len(), "mailing the batch together failed; each result alone");
                None
            }
        };
        spread(&marks, answers)
    }
}

impl ResultBatches {
    async fn mail_together(&self, results: &[&Traced]) -> Result<Vec<DeliveryAnswer>, sqlx::Error> {
        let Mailroom {
            pool,
            mailer,
            ops_address,
        } = &self.mailroom;
        let mut answers: Vec<DeliveryAnswer> = vec![None; results.len()];
        let envelopes: Vec<&Envelope> = results.iter().map(|r| &r.envelope).collect();
        let recorded = store::record_results(pool, &envelopes).await?;
        let mut newer: Vec<usize> = Vec::new();
        for (index, (envelope, recorded)) in envelopes.iter().zip(recorded).enumerate() {
            if recorded == Recorded::Older {
                not_mailed_older(envelope);
                answers[index] = Some(Ok(()));
            } else {
                newer.push(index);
            }
        }
        let announcement = |i: &usize| decision::visit_announcement(&envelopes[*i].event);
        let with = |kind: VisitAnnouncement| -> Vec<Uuid> {
            newer
                .iter()
                .filter(|i| announcement(i) == kind)
                .map(|&i| envelopes[i].booking_id)
                .collect()
        };
        let (announcing, looking_up) = (
            with(VisitAnnouncement::Record),
            with(VisitAnnouncement::LookUp),
        );
        if !announcing.is_empty() {
            store::announce_visits(pool, &announcing).await?;
        }
        let announced: HashSet<Uuid> = if looking_up.is_empty() {
            HashSet::new()
        } else {
            store::visits_announced(pool, &looking_up).await?
        };
        let mut deliveries: Vec<(usize, ResultDelivery)> = Vec::new();
        for index in newer {
            let envelope = envelopes[index];
            let was_announced = match announcement(&index) {
                VisitAnnouncement::Record => true,
                VisitAnnouncement::LookUp => announced.contains(&envelope.booking_id),
                VisitAnnouncement::NotNeeded => false,
            };
            let planned = || delivery_of(envelope, was_announced, ops_address);
            let planned = match results[index].trace {
                Some(trace) => platform::trace::in_trace(trace, async { planned() }).await,
                None => planned(),
            };
            match planned {
                Ok(Some(delivery)) => deliveries.push((index, delivery)),
                Ok(None) => answers[index] = Some(Ok(())),
                Err(error) => answers[index] = Some(Err(error)),
            }
        }
        if deliveries.is_empty() {
            return Ok(answers);
        }
        let (indices, deliveries): (Vec<usize>, Vec<ResultDelivery>) =
            deliveries.into_iter().unzip();
        let delivered = deliver_results(pool, mailer, &deliveries).await?;
        for (index, answer) in indices.into_iter().zip(delivered) {
            answers[index] = answer;
        }
        Ok(answers)
    }
}
