//! The `facility_booking.*` handler: records the snapshot under the version rule, then acts on the
//! stored latest snapshot (never on the message in hand) in one [`Step`].
//!
//! created / rescheduled → hold the (access level, zone) slot: grant, keep, move, or defer as a
//! double booking (policy `auto`: wait in the ledger; `manual`: wait for the manager);
//! cancelled → release the slot and grant the next waiter. A version already acted on is never
//! acted on again, so a redelivered event changes nothing and sends nothing.
//!
//! The slot is on the building's Salto server: its own ([`crate::servers`]) or the deployment
//! default. A snapshot made under a version of the building's connection this worker has not
//! seen yet waits for it. `salto_connection.changed.v1` events are stored here too.

use contracts::{DoubleBookingPolicy, Envelope, Event, FacilityBooking, TimetablesExhausted};
use platform::amqp::{EventHandler, HandlerError};
use platform::snapshots::{self, Recorded};
use uuid::Uuid;

use crate::ledger::decide::{self, GrantDecision, Intent, SaltoZone, decide_grant, salto_zone};
use crate::ledger::{Waiting, store};
use crate::results::{self, Outcome};
use crate::servers;
use crate::step::{Context, Step, StepError};

pub struct BookingEvents {
    ctx: Context,
}

impl BookingEvents {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

impl EventHandler for BookingEvents {
    /// A booking given up still gets an outcome: `failed` (`gave_up`), so it does not stay
    /// `pending` for ever; the dead letter's alert carries the details.
    async fn gave_up(&self, envelope: &Envelope, error: &str) {
        let Some(booking) = decide::facility_booking(&envelope.event).cloned() else {
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
        match self.ctx.publisher.publish_event(&failed).await {
            Ok(()) => {
                tracing::warn!(booking_id = %envelope.booking_id, version = envelope.version, %error, "gave up; the booking's access failed")
            }
            Err(publish) => {
                tracing::error!(booking_id = %envelope.booking_id, %publish, "gave up, and cannot publish the failure")
            }
        }
    }

    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        if let Event::SaltoConnectionChanged(change) = &envelope.event {
            let mut conn = self.ctx.pool.acquire().await.map_err(database)?;
            let changed = servers::record_connection(
                &mut conn,
                envelope.version,
                envelope.occurred_at,
                change,
            )
            .await
            .map_err(database)?;
            tracing::info!(
                building_id = %change.building_id, version = envelope.version, changed,
                server = change.connection.as_ref().map_or("default".to_owned(), |c| servers::server_key(&c.url)),
                "building's Salto connection recorded"
            );
            return Ok(());
        }
        if decide::facility_booking(&envelope.event).is_none() {
            // Bound to facility_booking.# and the Salto connection changes only: anything else
            // here is a binding gone wrong, which a person must see (a dead letter), not an
            // event to drop.
            return Err(HandlerError::Permanent(format!(
                "{} is not for salto-sync, which handles facility_booking.* and \
                 salto_connection.changed only",
                envelope.routing_key()
            )));
        }
        let recorded = snapshots::record(&self.ctx.pool, &envelope)
            .await
            .map_err(database)?;
        if recorded == Recorded::Older {
            tracing::info!(
                booking_id = %envelope.booking_id, version = envelope.version,
                "older than the version held; skipped"
            );
            return Ok(());
        }
        act_on_latest(&self.ctx, envelope.booking_id).await
    }
}

/// Acts on the latest snapshot held for `booking_id`, turning Salto's "needs a person" refusals
/// into a `facility_access.failed` result.
pub async fn act_on_latest(ctx: &Context, booking_id: Uuid) -> Result<(), HandlerError> {
    match act(ctx, booking_id).await {
        Ok(()) => Ok(()),
        Err(StepError::PoolExhausted { server }) => {
            alert_pool_exhausted(ctx, &server, booking_id).await;
            ctx.sweeper.request(&server);
            Err(StepError::PoolExhausted { server }.into_handler_error())
        }
        Err(error) => match error.needs_manager() {
            Some(refusal) => {
                tracing::warn!(%booking_id, error = %refusal, "Salto refused; the manager must act");
                let refusal = refusal.clone();
                report_refusal(ctx, booking_id, &refusal)
                    .await
                    .map_err(StepError::into_handler_error)
            }
            None => Err(error.into_handler_error()),
        },
    }
}

async fn act(ctx: &Context, booking_id: Uuid) -> Result<(), StepError> {
    let Some(envelope) = snapshots::latest(&ctx.pool, booking_id).await? else {
        return Ok(());
    };
    let version = envelope.version;
    let Some(booking) = decide::facility_booking(&envelope.event).cloned() else {
        return Ok(());
    };
    let server = building_server(ctx, &booking).await?;
    let Some(intent) = decide::intent_of(&envelope.event, server.as_deref()) else {
        return Ok(());
    };
    // While the building's server is failing (or busy with other messages), the booking waits.
    let admitted = match &server {
        Some(server) => Some(
            ctx.servers
                .bulkhead(server)
                .admit(Some(&booking.building))?,
        ),
        None => None,
    };
    let outcome = act_admitted(ctx, booking_id, version, intent, booking, server.as_deref()).await;
    match (outcome, &admitted) {
        // Failing while the server's breaker is open: the server is down; the booking waits.
        (Err(error), Some(admitted)) if error.is_transient() && admitted.breaker_open() => {
            Err(StepError::ServerDown(error.to_string()))
        }
        (outcome, _) => outcome,
    }
}

async fn act_admitted(
    ctx: &Context,
    booking_id: Uuid,
    version: i64,
    intent: Intent,
    booking: FacilityBooking,
    server: Option<&str>,
) -> Result<(), StepError> {
    {
        // Outside the step: the row lock of this upsert must not serialize a building's steps.
        let mut conn = ctx.pool.acquire().await?;
        store::remember_building(&mut conn, &booking.building.id, &booking.building.timezone)
            .await?;
    }
    let mut step = Step::begin(ctx).await?;
    // One booking's steps never overlap. A cancellation handled beside its own grant (another
    // replica, or a retry) could not see that grant before it commits, so it would lock no
    // access level, release nothing, and let the grant commit a permission for a cancelled
    // booking; after this lock it sees the grant and releases it.
    store::lock(step.conn(), &format!("salto_sync/booking/{booking_id}")).await?;

    // Lock every access level this booking is or will be in, then read again under the locks.
    // Its own slot's level even when it is cancelled: a grant of it that never committed may have
    // left an entry there to remove.
    let mut levels = Vec::new();
    if let Intent::Hold { slot, .. } = &intent {
        levels.push(slot.level.clone());
    }
    if let Some(server) = server {
        let own = crate::ledger::SlotKey::of(&booking, server);
        if !own.level.access_level.is_empty() {
            levels.push(own.level);
        }
    }
    let held = store::held_by_booking(step.conn(), booking_id).await?;
    let waiting = store::waiting_booking(step.conn(), booking_id).await?;
    levels.extend(held.iter().map(|h| h.slot.level.clone()));
    levels.extend(waiting.iter().map(|w| w.slot.level.clone()));
    step.lock(levels).await?;
    if !decide::should_act(
        store::outcome_version(step.conn(), booking_id).await?,
        version,
    ) {
        tracing::info!(%booking_id, version, "version already acted on; nothing to do");
        return Ok(());
    }
    let held = store::held_by_booking(step.conn(), booking_id).await?;
    let waiting = store::waiting_booking(step.conn(), booking_id).await?;
    step.lock(
        held.iter()
            .map(|h| h.slot.level.clone())
            .chain(waiting.iter().map(|w| w.slot.level.clone())),
    )
    .await?;
    let today = ctx.local_today(&booking.building.timezone);

    match intent {
        Intent::Release => {
            if let Some(held) = &held {
                step.release(held).await?;
                step.promote_waiters(&held.slot, today).await?;
            }
            if waiting.is_some() {
                store::delete_waiting(step.conn(), booking_id).await?;
            }
            step.outcome(booking_id, version, Outcome::Revoked, booking)
                .await?;
        }
        Intent::NotConnected => {
            // Whatever it held before (under a connection since removed) goes.
            if let Some(held) = &held {
                step.release(held).await?;
                step.promote_waiters(&held.slot, today).await?;
            }
            if waiting.is_some() {
                store::delete_waiting(step.conn(), booking_id).await?;
            }
            let failure = results::not_connected(&booking);
            step.outcome_with(
                booking_id,
                version,
                Outcome::Failed,
                booking,
                None,
                Some(failure),
            )
            .await?;
        }
        Intent::MissingIds { missing } => {
            let failure = results::missing_ids(&booking, missing);
            step.outcome_with(
                booking_id,
                version,
                Outcome::Failed,
                booking,
                None,
                Some(failure),
            )
            .await?;
        }
        Intent::Hold { slot, window } => {
            // Leaving a slot of other IDs (the manager changed an Access Control ID): the old
            // grant is cleared under the IDs it was made with.
            if let Some(old) = held.as_ref().filter(|h| h.slot != slot) {
                step.release(old).await?;
                step.promote_waiters(&old.slot, today).await?;
            }
            if waiting.as_ref().is_some_and(|w| w.slot != slot) {
                store::delete_waiting(step.conn(), booking_id).await?;
            }
            let holder = store::holder_of(step.conn(), &slot).await?;
            match decide_grant(holder.as_ref(), booking_id, &window) {
                GrantDecision::AlreadyHeld | GrantDecision::Move => {
                    step.hold(&slot, &booking.building.id, booking_id, version, window)
                        .await?;
                    step.outcome(booking_id, version, Outcome::Granted, booking)
                        .await?;
                }
                GrantDecision::Grant => {
                    let group = step.salto_group(&slot.level).await?;
                    let timetable = step
                        .timetable(&slot.level.server, window.starts, window.ends)
                        .await?;
                    let wanted = window.permission(&slot.zone, timetable);
                    match salto_zone(&group.permissions, &wanted) {
                        SaltoZone::Unknown(existing) => {
                            store::delete_waiting(step.conn(), booking_id).await?;
                            let failure = results::unknown_permission(&booking, &existing);
                            step.outcome_with(
                                booking_id,
                                version,
                                Outcome::Failed,
                                booking,
                                None,
                                Some(failure),
                            )
                            .await?;
                        }
                        SaltoZone::Free | SaltoZone::AlreadyOurs => {
                            step.hold(&slot, &booking.building.id, booking_id, version, window)
                                .await?;
                            step.outcome(booking_id, version, Outcome::Granted, booking)
                                .await?;
                        }
                    }
                }
                GrantDecision::Defer { held_by } => {
                    let policy = booking.building.double_booking_policy;
                    match policy {
                        DoubleBookingPolicy::Auto => {
                            store::upsert_waiting(
                                step.conn(),
                                &Waiting {
                                    slot: slot.clone(),
                                    building: booking.building.id.clone(),
                                    booking_id,
                                    version,
                                    window,
                                },
                            )
                            .await?;
                        }
                        DoubleBookingPolicy::Manual => {
                            store::delete_waiting(step.conn(), booking_id).await?;
                        }
                    }
                    let failure = results::double_booking(policy, held_by);
                    // The manager's email shows both bookings' dates.
                    let holder_window = store::snapshot(step.conn(), held_by)
                        .await?
                        .and_then(|e| decide::facility_booking(&e.event).map(|b| b.window.clone()));
                    step.outcome_with(
                        booking_id,
                        version,
                        Outcome::Deferred,
                        booking,
                        Some(results::Holder {
                            booking_id: held_by,
                            window: holder_window,
                        }),
                        Some(failure),
                    )
                    .await?;
                }
            }
        }
    }
    let published = step.finish().await?;
    for event in &published {
        tracing::info!(booking_id = %event.booking_id, version = event.version,
                       result = event.routing_key(), "result published");
    }
    Ok(())
}

/// Salto said it does not know an ID (code 11): the booking fails and the manager is told, with
/// Salto's answer. The ledger is left as it was.
async fn report_refusal(
    ctx: &Context,
    booking_id: Uuid,
    refusal: &salto_ship::ShipError,
) -> Result<(), StepError> {
    let Some(envelope) = snapshots::latest(&ctx.pool, booking_id).await? else {
        return Ok(());
    };
    let Some(booking) = decide::facility_booking(&envelope.event).cloned() else {
        return Ok(());
    };
    let Some(server) = building_server(ctx, &booking).await? else {
        return Ok(());
    };
    let mut step = Step::begin(ctx).await?;
    step.lock([crate::ledger::SlotKey::of(&booking, &server).level])
        .await?;
    if !decide::should_act(
        store::outcome_version(step.conn(), booking_id).await?,
        envelope.version,
    ) {
        return Ok(());
    }
    let failure = results::salto_not_found(&booking, refusal);
    step.outcome_with(
        booking_id,
        envelope.version,
        Outcome::Failed,
        booking,
        None,
        Some(failure),
    )
    .await?;
    step.finish().await?;
    Ok(())
}

fn database(error: sqlx::Error) -> HandlerError {
    HandlerError::Transient(format!("database: {error}"))
}

/// The building's Salto server now: its own, or the deployment default (`None`: neither). A
/// snapshot made under a newer version of the building's connection than this worker holds
/// waits (a transient error) until that version is here.
async fn building_server(
    ctx: &Context,
    booking: &FacilityBooking,
) -> Result<Option<String>, StepError> {
    let held = {
        let mut conn = ctx.pool.acquire().await?;
        servers::building_connection(&mut *conn, &booking.building.id).await?
    };
    let wanted = booking.building.connection_versions.salto;
    let known = held.as_ref().map_or(0, |c| c.version);
    if wanted > known {
        return Err(StepError::AwaitingConnection {
            building: booking.building.id.clone(),
            wanted,
            known,
        });
    }
    Ok(match held.and_then(|c| c.server) {
        Some(server) => Some(server),
        None => ctx.servers.default_key().map(str::to_owned),
    })
}

/// Tells ops, once per exhaustion, that a server has no timetable ID left.
async fn alert_pool_exhausted(ctx: &Context, server: &str, booking_id: Uuid) {
    let alert = async {
        let mut conn = ctx.pool.acquire().await?;
        if !store::pool_exhausted(&mut conn, server).await? {
            return Ok::<_, StepError>(());
        }
        let (held_by_connecx, held_by_others) = store::pool_counts(&mut conn, server).await?;
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
