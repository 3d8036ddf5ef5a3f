//! The steps of several visitor bookings of one tenant, together (docs/architecture.md,
//! "Batches"): the same step as a booking's alone ([`crate::handler`]), with the statements and
//! the waits shared —
//!
//! 1. the snapshots recorded in one statement (committed at once, as alone);
//! 2. one transaction holding every booking's lock, their states read in one statement;
//! 3. each booking's iPassan calls, all at once (each through its tenant's bulkhead);
//! 4. what was done recorded in one statement, the results published with one wait for their
//!    confirms, one commit.
//!
//! A booking's own failure (iPassan refusing, its snapshot unreadable, a connection not yet
//! known) is its message's alone; the others go on. What fails for all — the database or the
//! broker — fails each message as it would have alone. A batch whose shared statements fail
//! before any iPassan call answers nothing, and each message is handled alone: the row that
//! made the statement fail then fails only its own message.
//!
//! A second message of a booking already in the batch is handled alone: it waits for the
//! batch's lock, then acts on whatever is stored latest, as two messages of one booking always
//! do.

use contracts::Envelope;
use futures::future::join_all;
use platform::amqp::HandlerError;
use platform::batch::{BatchWork, first_of_each, firsts, spread};
use platform::snapshots;
use platform::trace::TraceId;
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;
use uuid::Uuid;

use crate::handler::{Done, Plan, Steps, transient};
use crate::store::{self, StoreError};
use crate::tenants::{Tenant, TenantClient};

/// One message's part of a batch: its event and the trace it came with.
pub struct Visit {
    pub envelope: Envelope,
    pub trace: Option<TraceId>,
}

/// A message's answer from its batch: its outcome, or `None` to be handled alone.
pub type Answer = Option<Result<(), HandlerError>>;

impl BatchWork for Steps {
    type Item = Visit;
    type Output = Answer;

    async fn run(&self, visits: Vec<Visit>) -> Vec<Answer> {
        // Each booking's first message; the others alone.
        let marks = first_of_each(&visits, |v| v.envelope.booking_id);
        let batched = firsts(&visits, &marks);
        let answers = match self.run_together(&batched).await {
            Ok(answers) => Some(answers),
            Err(error) => {
                tracing::warn!(%error, messages = batched.len(), "handling the batch together failed; each message alone");
                None
            }
        };
        spread(&marks, answers)
    }
}

impl Steps {
    /// The steps of `visits` (one message per booking) together: an answer for each, in order.
    /// `Err` when a shared statement failed before any iPassan call.
    async fn run_together(
        &self,
        visits: &[&Visit],
    ) -> Result<Vec<Option<Result<(), HandlerError>>>, StoreError> {
        let mut answers: Vec<Option<Result<(), HandlerError>>> = vec![None; visits.len()];
        let mut conn = self.pool.acquire().await?;
        let envelopes: Vec<&Envelope> = visits.iter().map(|v| &v.envelope).collect();
        let recorded = snapshots::record_many(&mut *conn, &envelopes).await?;
        let mut acting = Vec::new();
        for (index, (visit, recorded)) in visits.iter().zip(recorded).enumerate() {
            if recorded.to_act_on(&visit.envelope) {
                acting.push(index);
            } else {
                answers[index] = Some(Ok(()));
            }
        }
        if acting.is_empty() {
            return Ok(answers);
        }
        let ids: Vec<Uuid> = acting
            .iter()
            .map(|&i| visits[i].envelope.booking_id)
            .collect();
        let mut tx = store::lock_bookings(&mut conn, &ids).await?;
        let mut held = store::held_states(&mut tx, &ids).await?;

        // Before any call: what each booking's step is, and each tenant's client once.
        let mut plans: Vec<(usize, Plan)> = Vec::new();
        for (&index, id) in acting.iter().zip(&ids) {
            match self.plan(*id, held.remove(id)) {
                Ok(Some(plan)) => plans.push((index, plan)),
                Ok(None) => answers[index] = Some(Ok(())),
                Err(error) => answers[index] = Some(Err(error)),
            }
        }
        let mut clients: HashMap<Tenant, Result<TenantClient, HandlerError>> = HashMap::new();
        for (_, plan) in &plans {
            if let Some(tenant) = plan.tenant()
                && !clients.contains_key(tenant)
            {
                let client = self.client_for(&mut tx, tenant).await;
                clients.insert(tenant.clone(), client);
            }
        }

        // Every booking's calls at once; a failure is its message's alone.
        let acted = join_all(plans.into_iter().map(|(index, plan)| {
            let client = plan
                .tenant()
                .and_then(|tenant| clients.get(tenant))
                .cloned();
            let trace = visits[index].trace;
            async move {
                let done = match client {
                    Some(Err(error)) => Err(error),
                    Some(Ok(client)) => in_trace(trace, self.act(plan, Some(&client))).await,
                    None => in_trace(trace, self.act(plan, None)).await,
                };
                (index, done)
            }
        }))
        .await;
        let mut done: Vec<(usize, Done)> = Vec::new();
        for (index, outcome) in acted {
            match outcome {
                Ok(step) => done.push((index, step)),
                Err(error) => answers[index] = Some(Err(error)),
            }
        }
        if done.is_empty() {
            return Ok(answers);
        }

        // Recorded, published, committed: together, and a failure here is every step's.
        let finished = self.finish(tx, &done, visits).await;
        for (index, _) in &done {
            answers[*index] = Some(finished.clone());
        }
        Ok(answers)
    }

    /// Records what the steps `done` did, publishes their results and commits.
    async fn finish(
        &self,
        mut tx: Transaction<'_, Postgres>,
        done: &[(usize, Done)],
        visits: &[&Visit],
    ) -> Result<(), HandlerError> {
        let rows: Vec<store::AppliedRow<'_>> = done.iter().map(|(_, step)| step.row()).collect();
        let written = store::save_applied(&mut tx, &rows)
            .await
            .map_err(transient)?;
        let results: Vec<(Envelope, Option<TraceId>)> = done
            .iter()
            .filter(|(_, step)| step.announce(&written))
            .filter_map(|(index, step)| Some((step.result_event()?, visits[*index].trace)))
            .collect();
        let results: Vec<(&Envelope, Option<TraceId>)> =
            results.iter().map(|(e, t)| (e, *t)).collect();
        if !results.is_empty() {
            self.publish(&results).await?;
        }
        tx.commit()
            .await
            .map_err(|e| transient(StoreError::from(e)))
    }
}

/// Runs `work` in the trace of its message, when it came with one.
async fn in_trace<F: Future>(trace: Option<TraceId>, work: F) -> F::Output {
    match trace {
        Some(trace) => platform::trace::in_trace(trace, work).await,
        None => work.await,
    }
}
