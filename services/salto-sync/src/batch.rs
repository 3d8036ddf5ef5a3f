//! The facility bookings of one Salto server, together (docs/architecture.md, "Batches"): each
//! booking's part is the same as alone ([`crate::handler::act_locked`]), with the statements,
//! the calls and the waits that do not depend on the booking shared —
//!
//! 1. the snapshots recorded in one statement (committed at once, as alone), each building's
//!    connection read once;
//! 2. one admission to each server's bulkhead for the whole batch, whose Salto calls go a few
//!    at a time: its share of what the server may have in flight (`CONNECX__CONNECTIONS__
//!    MAX_IN_FLIGHT` over `CONNECX__BATCH__MAX_RUNNING`, 2 by default), so a server sees no
//!    more calls at once than from messages handled alone;
//! 3. one ledger transaction holding every booking's lock and the locks of every access level
//!    they are in or ask for (taken in one statement each); what the bookings' parts read —
//!    their entries, the versions last acted on, the holders of the slots they ask for, Salto's
//!    groups — read for all at once, then kept current with the transaction's own writes; each
//!    booking's part done in delivery order, so a booking sees what the ones before it in the
//!    batch did to the ledger, as it would have after their commits;
//! 4. the outcomes written in one statement, Salto brought to the ledger once for every access
//!    level the batch touched (one read and at most one write each, the journal's notes for all
//!    of them committed in one statement before the writes), the results published with one
//!    wait for their confirms, one commit.
//!
//! What the transaction does for one booking it does for all: if any part of it fails — a
//! refusal Salto gives one booking, the pool out of timetable IDs, the database, a call — it
//! rolls back (Salto keeps at most entries the journal names as connecX's, as after any
//! transaction that did not commit) and every message of it is handled alone, where the one
//! that failed fails by itself and the others go through. A failure before the transaction (a
//! connection version not known yet, a breaker open) is its message's alone in the same way.
//!
//! A second message of a booking already in the batch is handled alone: it waits for the
//! batch's lock on the booking, then acts on whatever is stored latest, as two messages of one
//! booking always do.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use contracts::{Envelope, FacilityBooking};
use platform::amqp::HandlerError;
use platform::batch::{BatchWork, first_of_each, firsts, spread};
use platform::bulkhead::Admission;
use platform::snapshots::{self, Recorded};
use platform::trace::TraceId;
use uuid::Uuid;

use crate::context::Context;
use crate::decision::{self, Intent};
use crate::error::SyncError;
use crate::handler::{act_locked, log_published, server_under};
use crate::ledger::{AccessLevelKey, SlotKey};
use crate::ledger_transaction::LedgerTransaction;
use crate::store;

/// The batch group of a building whose server this worker has not seen yet.
const UNSEEN: &str = "";

/// One message's part of a batch: its event and the trace it came with.
pub struct Booking {
    pub envelope: Envelope,
    pub trace: Option<TraceId>,
}

/// A message's answer from its batch: its outcome, or `None` to be handled alone.
pub type Answer = Option<Result<(), HandlerError>>;

/// The batches' work: salto-sync's context, and the server each building was last seen on.
pub struct BookingBatches {
    ctx: Context,
    /// The server key each building's bookings last went to: a booking's batch group. Read
    /// before the booking's connection is, so it may be out of date; that only puts the booking
    /// in another group's batch, where it still goes to the server its connection names. One
    /// short entry per building.
    servers_seen: Mutex<HashMap<String, String>>,
    /// Calls one batch makes to Salto at once.
    calls_at_once: usize,
}

/// A booking the batch acts on, with what its part needs.
struct Acting {
    index: usize,
    booking_id: Uuid,
    version: i64,
    intent: Intent,
    booking: FacilityBooking,
    server: Option<String>,
    trace: Option<TraceId>,
}

impl BookingBatches {
    /// Batches of which `max_running` run at once per server: each makes its server's share of
    /// the calls one connection may have in flight (`CONNECX__CONNECTIONS__MAX_IN_FLIGHT`), so
    /// a server sees no more calls at once than from messages handled alone.
    pub fn new(ctx: Context, max_running: usize) -> Self {
        let max_in_flight = ctx.servers.bulkheads().settings().max_in_flight;
        Self {
            ctx,
            servers_seen: Mutex::new(HashMap::new()),
            calls_at_once: (max_in_flight / max_running.max(1)).max(1),
        }
    }

    /// The batch group of a booking of `building_id`: its server as last seen.
    pub fn group_of(&self, building_id: &str) -> String {
        let seen = self
            .servers_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        seen.get(building_id)
            .cloned()
            .unwrap_or_else(|| UNSEEN.to_owned())
    }

    fn learn_group(&self, building_id: &str, server: Option<&str>) {
        let server = server.unwrap_or(UNSEEN);
        let mut seen = self
            .servers_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.get(building_id).map(String::as_str) != Some(server) {
            seen.insert(building_id.to_owned(), server.to_owned());
        }
    }

    /// The answers for `bookings` (one message per booking), in their order.
    async fn run_together(&self, bookings: &[&Booking]) -> Vec<Answer> {
        let mut answers: Vec<Answer> = vec![None; bookings.len()];
        let acting = match self.who_acts(bookings, &mut answers).await {
            Ok(acting) => acting,
            Err(error) => {
                tracing::warn!(%error, messages = bookings.len(), "recording the batch's snapshots or reading its buildings' connections failed; each message alone");
                return answers;
            }
        };
        if acting.is_empty() {
            return answers;
        }
        // One admission per server for the whole transaction; a server that refuses now leaves
        // its bookings to be handled alone (where each waits as it would have).
        let mut admissions: BTreeMap<&str, Admission> = BTreeMap::new();
        let mut refused: Vec<&str> = Vec::new();
        for acting in &acting {
            let Some(server) = acting.server.as_deref() else {
                continue;
            };
            if admissions.contains_key(server) || refused.contains(&server) {
                continue;
            }
            let bulkhead = self.ctx.servers.bulkhead(server);
            match bulkhead.admit(Some(&acting.booking.building)).await {
                Ok(admission) => {
                    admissions.insert(server, admission);
                }
                Err(_) => refused.push(server),
            }
        }
        let acting: Vec<&Acting> = acting
            .iter()
            .filter(|a| !a.server.as_deref().is_some_and(|s| refused.contains(&s)))
            .collect();
        match self.transaction(&acting).await {
            Ok(()) => {
                for acting in acting {
                    answers[acting.index] = Some(Ok(()));
                }
            }
            Err(error) => {
                tracing::warn!(%error, messages = acting.len(), "the batch's transaction did not complete; each message alone");
            }
        }
        drop(admissions);
        answers
    }

    /// Records the snapshots and says which bookings the batch acts on; answers the others that
    /// need nothing (an old version), and leaves to be handled alone those it cannot act on here
    /// (a redelivery, which acts on what is stored; a connection not known yet).
    async fn who_acts(
        &self,
        bookings: &[&Booking],
        answers: &mut [Answer],
    ) -> Result<Vec<Acting>, sqlx::Error> {
        let mut conn = self.ctx.pool.acquire().await?;
        let envelopes: Vec<&Envelope> = bookings.iter().map(|b| &b.envelope).collect();
        let recorded = snapshots::record_many(&mut *conn, &envelopes).await?;
        let mut connections: HashMap<&str, Option<store::servers::HeldConnection>> = HashMap::new();
        let mut acting = Vec::new();
        for (index, (message, recorded)) in bookings.iter().zip(recorded).enumerate() {
            let envelope = &message.envelope;
            if !recorded.to_act_on(envelope) {
                answers[index] = Some(Ok(()));
                continue;
            }
            let Some(booking) = decision::facility_booking(&envelope.event) else {
                continue;
            };
            if recorded != Recorded::Newer {
                continue;
            }
            let building = booking.building.id.as_str();
            if !connections.contains_key(building) {
                let held = store::servers::building_connection(&mut *conn, building).await?;
                connections.insert(building, held);
            }
            let held = connections.get(building).cloned().flatten();
            let Ok(server) = server_under(held, booking, self.ctx.servers.default_key()) else {
                continue;
            };
            self.learn_group(building, server.as_deref());
            let Some(intent) = decision::intent_of(&envelope.event, server.as_deref()) else {
                answers[index] = Some(Ok(()));
                continue;
            };
            acting.push(Acting {
                index,
                booking_id: envelope.booking_id,
                version: envelope.version,
                intent,
                booking: booking.clone(),
                server,
                trace: message.trace,
            });
        }
        Ok(acting)
    }

    /// The ledger transaction of the bookings `acting`: every lock first, each booking's part
    /// in order, then Salto, the results and the commit once.
    async fn transaction(&self, acting: &[&Acting]) -> Result<(), SyncError> {
        if acting.is_empty() {
            return Ok(());
        }
        let ctx = &self.ctx;
        for acting in acting {
            let building = &acting.booking.building;
            ctx.remember_building(&building.id, &building.timezone)
                .await?;
        }
        let ids: Vec<Uuid> = acting.iter().map(|a| a.booking_id).collect();
        let mut tx = LedgerTransaction::begin_for_bookings(ctx, &ids).await?;
        tx.allow_calls_at_once(self.calls_at_once);
        let levels: Vec<(Uuid, Option<AccessLevelKey>)> = acting
            .iter()
            .map(|a| {
                let level = decision::own_level(&a.booking, a.server.as_deref());
                (a.booking_id, level)
            })
            .collect();
        tx.lock_levels_of_all(&levels).await?;
        let slots: Vec<SlotKey> = acting
            .iter()
            .filter_map(|a| match &a.intent {
                Intent::Hold { slot, .. } => Some(slot.clone()),
                _ => None,
            })
            .collect();
        tx.read_ahead(&ids, &slots).await?;
        for acting in acting {
            let part = act_locked(
                ctx,
                &mut tx,
                acting.booking_id,
                acting.version,
                acting.intent.clone(),
                acting.booking.clone(),
            );
            match acting.trace {
                Some(trace) => platform::trace::in_trace(trace, part).await?,
                None => part.await?,
            }
        }
        let published = tx.finish().await?;
        log_published(&published);
        Ok(())
    }
}

impl BatchWork for BookingBatches {
    type Item = Booking;
    type Output = Answer;

    async fn run(&self, bookings: Vec<Booking>) -> Vec<Answer> {
        // Each booking's first message; the others alone.
        let marks = first_of_each(&bookings, |b| b.envelope.booking_id);
        let batched = firsts(&bookings, &marks);
        let answers = self.run_together(&batched).await;
        spread(&marks, Some(answers))
    }
}
