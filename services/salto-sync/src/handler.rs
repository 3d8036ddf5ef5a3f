//! The `facility_booking.*` handler: records the snapshot under the version rule, then acts on the
//! stored latest snapshot (never on the message in hand) in one [`LedgerTransaction`]: it reads
//! what the ledger holds for the booking under the locks, lets [`decision::plan_booking`] say
//! what the ledger should hold, and carries that out.
//!
//! created / rescheduled → hold the (access level, zone) slot: grant, keep, move, or defer as a
//! double booking (policy `auto`: wait in the ledger; `manual`: wait for the manager);
//! cancelled → release the slot and grant the next waiter. A version already acted on is never
//! acted on again, so a redelivered event changes nothing and sends nothing.
//!
//! The slot is on the building's Salto server: its own ([`crate::servers`]) or the deployment
//! default. A snapshot made under a version of the building's connection this worker has not
//! seen yet waits for it. `salto_connection.changed.v1` events are stored here too.

use chrono::NaiveDate;
use contracts::{Envelope, Event, FacilityBooking, TimetablesExhausted};
use platform::amqp::{EventHandler, HandlerError};
use platform::snapshots::{self, Recorded};
use uuid::Uuid;

use std::sync::Arc;

use platform::batch::{BatchSettings, Batches};

use crate::batch::{self, BookingBatches};
use crate::context::Context;
use crate::decision::{self, BookingPlan, Intent, Placement, SaltoZone};
use crate::error::SyncError;
use crate::ledger::SlotKey;
use crate::ledger_transaction::LedgerTransaction;
use crate::results::{self, Outcome};
use crate::{servers, store};

/// The worker's handler: a facility booking's part runs in a batch of its server's bookings
/// ([`crate::batch`]), or alone when batching is off (`CONNECX__BATCH__MAX_MESSAGES=1`) or its
/// batch could not answer for it.
pub struct BookingEvents {
    ctx: Context,
    batches: Option<Batches<String, BookingBatches>>,
}

impl BookingEvents {
    pub fn new(ctx: Context, batch: BatchSettings) -> Self {
        let batches = batch.batching().then(|| {
            Batches::new(
                contracts::SALTO_SYNC_QUEUE.name,
                Arc::new(BookingBatches::new(ctx.clone(), batch.max_running)),
                batch.max_messages,
                batch.max_running,
            )
        });
        Self { ctx, batches }
    }
}

impl EventHandler for BookingEvents {
    /// A booking given up still gets an outcome: `failed` (`gave_up`), so it does not stay
    /// `pending` for ever; the dead letter's alert carries the details.
    async fn gave_up(&self, envelope: &Envelope, error: &str) {
        let Some(booking) = decision::facility_booking(&envelope.event).cloned() else {
            return;
        };
        let failed = results::result_event(
            results::Outcome::Failed,
            envelope.booking_id,
            envelope.version,
            booking,
            None,
            Some(results::gave_up()),
        );
        self.ctx.publisher.publish_given_up(&failed, error).await;
    }

    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        if let Event::SaltoConnectionChanged(change) = &envelope.event {
            let server = change
                .connection
                .as_ref()
                .map(|c| servers::server_key(&c.url));
            let mut conn = self.ctx.pool.acquire().await.map_err(database)?;
            let changed = store::servers::record_connection(
                &mut conn,
                &change.building_id,
                envelope.version,
                envelope.occurred_at,
                server.as_deref(),
                change.connection.as_ref(),
            )
            .await
            .map_err(database)?;
            tracing::info!(
                building_id = %change.building_id, version = envelope.version, changed,
                server = server.as_deref().unwrap_or("default"),
                "building's Salto connection recorded"
            );
            return Ok(());
        }
        if decision::facility_booking(&envelope.event).is_none() {
            // Bound to facility_booking.# and the Salto connection changes only: anything else
            // here is a binding gone wrong, which a person must see (a dead letter), not an
            // event to drop.
            return Err(HandlerError::Permanent(format!(
                "{} is not for salto-sync, which handles facility_booking.* and \
                 salto_connection.changed only",
                envelope.routing_key()
            )));
        }
        if let (Some(batches), Some(booking)) =
            (&self.batches, decision::facility_booking(&envelope.event))
        {
            let group = batches.work().group_of(&booking.building.id);
            let message = batch::Booking {
                envelope: envelope.clone(),
                trace: platform::trace::current(),
            };
            if let Some(Some(outcome)) = batches.submit(group, message).await {
                return outcome;
            }
        }
        let recorded = snapshots::record(&self.ctx.pool, &envelope)
            .await
            .map_err(database)?;
        if !recorded.to_act_on(&envelope) {
            return Ok(());
        }
        let latest = if recorded == Recorded::Newer {
            // The stored latest snapshot is this envelope, written just now: it is not read
            // back. A newer version stored a moment later is acted on by its own message, after
            // this one under the booking's lock, as it would have been had this one read it.
            envelope
        } else {
            // The same version again (a redelivery): what is stored is read, so a stored
            // snapshot that no longer decodes is found and dead-lettered, not acked in silence.
            match snapshots::latest(&self.ctx.pool, envelope.booking_id)
                .await
                .map_err(|error| SyncError::from(error).into_handler_error())?
            {
                Some(latest) => latest,
                None => return Ok(()),
            }
        };
        act_on_latest(&self.ctx, latest).await
    }
}

/// Acts on `latest`, the latest snapshot held for its booking, turning Salto's "needs a person"
/// refusals into a `facility_access.failed` result.
async fn act_on_latest(ctx: &Context, latest: Envelope) -> Result<(), HandlerError> {
    let booking_id = latest.booking_id;
    match act(ctx, latest).await {
        Ok(()) => Ok(()),
        Err(SyncError::PoolExhausted { server }) => {
            alert_pool_exhausted(ctx, &server, booking_id).await;
            ctx.sweeper.request(&server);
            Err(SyncError::PoolExhausted { server }.into_handler_error())
        }
        Err(error) => match error.needs_manager() {
            Some(refusal) => {
                tracing::warn!(%booking_id, error = %refusal, "Salto refused; the manager must act");
                let refusal = refusal.clone();
                report_refusal(ctx, booking_id, &refusal)
                    .await
                    .map_err(SyncError::into_handler_error)
            }
            None => Err(error.into_handler_error()),
        },
    }
}

async fn act(ctx: &Context, envelope: Envelope) -> Result<(), SyncError> {
    let booking_id = envelope.booking_id;
    let version = envelope.version;
    let Some(booking) = decision::facility_booking(&envelope.event).cloned() else {
        return Ok(());
    };
    let server = building_server(ctx, &booking).await?;
    let Some(intent) = decision::intent_of(&envelope.event, server.as_deref()) else {
        return Ok(());
    };
    // While the building's server is failing (or busy with other messages), the booking waits.
    let admitted = match &server {
        Some(server) => Some(
            ctx.servers
                .bulkhead(server)
                .admit(Some(&booking.building))
                .await?,
        ),
        None => None,
    };
    let outcome = act_admitted(ctx, booking_id, version, intent, booking, server.as_deref()).await;
    match (outcome, &admitted) {
        // Failing while the server's breaker is open: the server is down; the booking waits.
        (Err(error), Some(admitted)) if error.is_transient() && admitted.breaker_open() => {
            Err(SyncError::ServerDown(error.to_string()))
        }
        (outcome, _) => outcome,
    }
}

/// Takes the booking's locks, does its part ([`act_locked`]), makes Salto match the ledger and
/// commits.
async fn act_admitted(
    ctx: &Context,
    booking_id: Uuid,
    version: i64,
    intent: Intent,
    booking: FacilityBooking,
    server: Option<&str>,
) -> Result<(), SyncError> {
    ctx.remember_building(&booking.building.id, &booking.building.timezone)
        .await?;
    let mut tx = LedgerTransaction::begin_for_booking(ctx, booking_id).await?;
    tx.lock_levels_of(booking_id, decision::own_level(&booking, server))
        .await?;
    act_locked(ctx, &mut tx, booking_id, version, intent, booking).await?;
    let published = tx.finish().await?;
    log_published(&published);
    Ok(())
}

/// One booking's part of a ledger transaction that holds its locks (its own, and those of the
/// access levels it is in and asks for): reads what the ledger holds for it, lets
/// [`decision::plan_booking`] say what the ledger should hold, and carries that out. Alone or in
/// a batch ([`crate::batch`]), a booking's part is this.
pub(crate) async fn act_locked(
    ctx: &Context,
    tx: &mut LedgerTransaction,
    booking_id: Uuid,
    version: i64,
    intent: Intent,
    booking: FacilityBooking,
) -> Result<(), SyncError> {
    if !decision::should_act(tx.last_acted_version(booking_id).await?, version) {
        tracing::info!(%booking_id, version, "version already acted on; nothing to do");
        return Ok(());
    }
    let entries = tx.entries_of(booking_id).await?;
    let slot_holder = match &intent {
        Intent::Hold { slot, .. } => tx.holder_of(slot).await?,
        _ => None,
    };
    let plan = decision::plan_booking(
        intent,
        booking_id,
        version,
        &booking,
        entries,
        slot_holder.as_ref(),
    );
    let today = ctx.local_today(&booking.building.timezone);
    carry_out(tx, plan, booking_id, version, booking, today).await
}

pub(crate) fn log_published(published: &[Envelope]) {
    for event in published {
        tracing::info!(booking_id = %event.booking_id, version = event.version,
                       result = event.routing_key(), "result published");
    }
}

/// Does what `plan` says on the ledger, and records the booking's result.
async fn carry_out(
    tx: &mut LedgerTransaction,
    plan: BookingPlan,
    booking_id: Uuid,
    version: i64,
    booking: FacilityBooking,
    today: NaiveDate,
) -> Result<(), SyncError> {
    if let Some(held) = &plan.leave {
        tx.leave(held, today).await?;
    }
    if plan.stop_waiting {
        tx.stop_waiting(booking_id).await?;
    }
    let building = booking.building.id.clone();
    match plan.then {
        Placement::Settled { outcome, failure } => {
            tx.record_outcome_with(booking_id, version, outcome, booking, None, failure)
                .await
        }
        Placement::Hold { slot, window } => {
            tx.hold(&slot, &building, booking_id, version, window)
                .await?;
            tx.record_outcome(booking_id, version, Outcome::Granted, booking)
                .await
        }
        Placement::HoldIfSaltoAgrees { slot, window } => {
            // A zone the ledger gave up earlier in this transaction (another booking of a
            // batch left it) still shows its entry in Salto as read: ours, to be replaced.
            let zone = if tx.released_here(&slot) {
                SaltoZone::Free
            } else {
                let group = tx.salto_group(&slot.level).await?;
                let timetable = tx
                    .timetable(&slot.level.server, window.starts, window.ends)
                    .await?;
                let wanted = window.permission(&slot.zone, timetable);
                decision::salto_zone(&group.permissions, &wanted)
            };
            match zone {
                SaltoZone::Unknown(existing) => {
                    tx.stop_waiting(booking_id).await?;
                    let failure = results::unknown_permission(&booking, &existing);
                    tx.record_outcome_with(
                        booking_id,
                        version,
                        Outcome::Failed,
                        booking,
                        None,
                        Some(failure),
                    )
                    .await
                }
                SaltoZone::Free | SaltoZone::AlreadyOurs => {
                    tx.hold(&slot, &building, booking_id, version, window)
                        .await?;
                    tx.record_outcome(booking_id, version, Outcome::Granted, booking)
                        .await
                }
            }
        }
        Placement::Defer {
            held_by,
            queue,
            failure,
        } => {
            match &queue {
                Some(waiting) => tx.queue(waiting).await?,
                None => tx.stop_waiting(booking_id).await?,
            }
            // The manager's email shows both bookings' dates.
            let holder_window = tx.booking_of(held_by).await?.map(|b| b.window);
            let holder = results::Holder {
                booking_id: held_by,
                window: holder_window,
            };
            tx.record_outcome_with(
                booking_id,
                version,
                Outcome::Deferred,
                booking,
                Some(holder),
                Some(failure),
            )
            .await
        }
    }
}

/// Salto said it does not know an ID (code 11): the booking fails and the manager is told, with
/// Salto's answer. The ledger is left as it was.
async fn report_refusal(
    ctx: &Context,
    booking_id: Uuid,
    refusal: &salto_ship::ShipError,
) -> Result<(), SyncError> {
    let Some(envelope) = snapshots::latest(&ctx.pool, booking_id).await? else {
        return Ok(());
    };
    let Some(booking) = decision::facility_booking(&envelope.event).cloned() else {
        return Ok(());
    };
    let Some(server) = building_server(ctx, &booking).await? else {
        return Ok(());
    };
    let mut tx = LedgerTransaction::begin(ctx).await?;
    tx.lock([SlotKey::of(&booking, &server).level]).await?;
    if !decision::should_act(tx.last_acted_version(booking_id).await?, envelope.version) {
        return Ok(());
    }
    let failure = results::salto_not_found(&booking, refusal);
    tx.record_outcome_with(
        booking_id,
        envelope.version,
        Outcome::Failed,
        booking,
        None,
        Some(failure),
    )
    .await?;
    tx.finish().await?;
    Ok(())
}

fn database(error: sqlx::Error) -> HandlerError {
    HandlerError::Transient(format!("database: {error}"))
}

/// The building's Salto server now: its own, or the deployment default (`None`: neither).
async fn building_server(
    ctx: &Context,
    booking: &FacilityBooking,
) -> Result<Option<String>, SyncError> {
    let held = {
        let mut conn = ctx.pool.acquire().await?;
        store::servers::building_connection(&mut *conn, &booking.building.id).await?
    };
    server_under(held, booking, ctx.servers.default_key())
}

/// The server of `booking` under `held`, the building's connection as this worker holds it
/// (`None`: the building never had one of its own), or the deployment `default`. A snapshot
/// made under a newer version of the building's connection than this worker holds waits (a
/// transient error) until that version is here.
pub(crate) fn server_under(
    held: Option<store::servers::HeldConnection>,
    booking: &FacilityBooking,
    default: Option<&str>,
) -> Result<Option<String>, SyncError> {
    let wanted = booking.building.connection_versions.salto;
    let known = held.as_ref().map_or(0, |c| c.version);
    if wanted > known {
        return Err(SyncError::AwaitingConnection {
            building: booking.building.id.clone(),
            wanted,
            known,
        });
    }
    Ok(match held.and_then(|c| c.server) {
        Some(server) => Some(server),
        None => default.map(str::to_owned),
    })
}

/// Tells ops, once per exhaustion, that a server has no timetable ID left.
async fn alert_pool_exhausted(ctx: &Context, server: &str, booking_id: Uuid) {
    let alert = async {
        let mut conn = ctx.pool.acquire().await?;
        if !store::timetables::pool_exhausted(&mut conn, server, crate::timetables::MAX_ID).await? {
            return Ok::<_, SyncError>(());
        }
        let (held_by_connecx, held_by_others) =
            store::timetables::pool_counts(&mut conn, server).await?;
        let building_id = snapshots::latest(&ctx.pool, booking_id)
            .await?
            .and_then(|e| e.building_id().map(str::to_owned))
            .unwrap_or_default();
        let event = Envelope::new(
            Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("salto-pool/{server}").as_bytes(),
            ),
            chrono::Utc::now().timestamp_millis(),
            Event::TimetablesExhausted(TimetablesExhausted {
                server: server.to_owned(),
                held_by_connecx,
                held_by_others,
                building_id,
            }),
        );
        ctx.publisher.publish_event(&event).await?;
        tracing::error!(server, "Salto timetable pool exhausted; ops are told");
        Ok(())
    };
    if let Err(error) = alert.await {
        tracing::warn!(server, %error, "could not tell ops of the exhausted timetable pool");
    }
}
