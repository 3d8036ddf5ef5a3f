//! The nightly cleaner (docs/architecture.md, "Facility bookings and the ledger"). Salto never removes an expired permission by itself, and
//! while one stays, the apartment cannot be granted that zone again. So once a night per building,
//! after the building-local clearing time (default 00:05), the cleaner removes every permission
//! whose Period has ended, publishes `facility_access.expired`, grants the bookings waiting for
//! the freed slots, and reconciles the ledger with Salto's lists.
//!
//! It ticks every minute on tokio-cron-scheduler (and once at start, which catches up a missed
//! night). "Once per building per local date" is a row in `cleaner_runs`, claimed inside a
//! transaction that also holds a per-building advisory lock: replicas never run the same night
//! twice, and a run that fails rolls its claim back so the next tick tries again. The due date is
//! read off the building's wall clock, so DST changes neither skip nor repeat a night.

use std::sync::Arc;

use chrono::NaiveTime;
use chrono_tz::Tz;
use platform::bulkhead::Admission;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::context::Context;
use crate::decision::{self, due_clearing_date};
use crate::error::SyncError;
use crate::ledger::AccessLevelKey;
use crate::ledger_transaction::{LedgerTransaction, Promotion};
use crate::results::{self, Outcome};
use crate::store;

/// What one building's clearing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clearing {
    pub building: String,
    pub local_date: chrono::NaiveDate,
    pub expired: usize,
    pub granted: usize,
    pub repaired_levels: usize,
}

pub struct Cleaner {
    ctx: Context,
    clearing_time: NaiveTime,
    reconcile: bool,
    /// One tick at a time in this process (a slow night must not overlap the next minute's tick).
    busy: tokio::sync::Mutex<()>,
}

impl Cleaner {
    pub fn new(ctx: Context, clearing_time: NaiveTime, reconcile: bool) -> Self {
        Self {
            ctx,
            clearing_time,
            reconcile,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs every clearing that is due and not yet done. Returns what ran here.
    pub async fn tick(&self) -> Result<Vec<Clearing>, SyncError> {
        let Ok(_busy) = self.busy.try_lock() else {
            return Ok(Vec::new());
        };
        let now = self.ctx.clock.now();
        let buildings = {
            let mut conn = self.ctx.pool.acquire().await?;
            store::bookings::buildings(&mut conn).await?
        };
        let mut done = Vec::new();
        let mut first_error = None;
        for (building, timezone) in buildings {
            let Ok(tz) = timezone.parse::<Tz>() else {
                tracing::error!(
                    building,
                    timezone,
                    "unknown time zone; cannot clear this building"
                );
                continue;
            };
            let local_now = now.with_timezone(&tz).naive_local();
            let due = due_clearing_date(local_now, self.clearing_time);
            match self.clear(&building, due).await {
                Ok(Some(clearing)) => done.push(clearing),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(building, %error, "clearing failed; the next tick retries it");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if done.is_empty() => Err(error),
            _ => Ok(done),
        }
    }

    /// Clears one building for `due` unless that already happened: the clearing of a date
    /// removes the permissions (and waits) of the dates before it.
    async fn clear(
        &self,
        building: &str,
        due: chrono::NaiveDate,
    ) -> Result<Option<Clearing>, SyncError> {
        let today = due;
        {
            let mut conn = self.ctx.pool.acquire().await?;
            if store::cleaner::ran(&mut conn, building, due).await? {
                return Ok(None);
            }
        }
        let mut claim = self.ctx.pool.begin().await?;
        if !store::try_lock(&mut claim, &format!("salto_sync/cleaner/{building}")).await? {
            return Ok(None);
        }
        if !store::cleaner::claim_run(&mut claim, building, due).await? {
            return Ok(None);
        }
        let mut clearing = Clearing {
            building: building.to_owned(),
            local_date: due,
            ..Clearing::default()
        };
        let levels = {
            let mut conn = self.ctx.pool.acquire().await?;
            store::ledger::levels_with_ended(&mut conn, building, today).await?
        };
        // What a person must look at: the night is still done (trying again every minute would
        // change nothing), but each one becomes a dead letter, and so an alert mail.
        let mut problems: Vec<(AccessLevelKey, String)> = Vec::new();
        for level in levels {
            match self.expire_level(&level, building, today).await {
                Ok((expired, granted)) => {
                    clearing.expired += expired;
                    clearing.granted += granted;
                }
                // Worth another try: give the night back, the next tick runs it again (what was
                // done stays done; it is not found again).
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    tracing::error!(building, access_level = level.access_level, %error,
                                    "cannot clear this access level; a person must look");
                    problems.push((level, format!("cannot clear access level: {error}")));
                }
            }
        }
        if self.reconcile {
            let levels = {
                let mut conn = self.ctx.pool.acquire().await?;
                store::ledger::levels_of_building(&mut conn, building).await?
            };
            for level in levels {
                match self.reconcile_level(&level, building, today).await {
                    Ok((repaired, granted)) => {
                        clearing.repaired_levels += usize::from(repaired);
                        clearing.granted += granted;
                    }
                    Err(error) if error.is_transient() => return Err(error),
                    Err(error) => {
                        tracing::error!(building, access_level = level.access_level, %error,
                                        "cannot reconcile this access level");
                        let problem = format!("cannot reconcile access level: {error}");
                        // One report per access level and night.
                        match problems.iter_mut().find(|(known, _)| *known == level) {
                            Some((_, text)) => {
                                text.push_str("; ");
                                text.push_str(&problem);
                            }
                            None => problems.push((level, problem)),
                        }
                    }
                }
            }
        }
        // Told before the night is marked done: a failed publish gives the night back.
        for (level, problem) in &problems {
            self.report(building, due, level, problem).await?;
        }
        store::cleaner::finish_run(
            &mut claim,
            building,
            due,
            clearing.expired,
            clearing.granted,
        )
        .await?;
        claim.commit().await?;
        tracing::info!(building, local_date = %due, expired = clearing.expired,
                       granted = clearing.granted, repaired_levels = clearing.repaired_levels,
                       "nightly clearing done");
        Ok(Some(clearing))
    }

    /// Sends a problem of the night's clearing to `connecx.dead` as the worker runtime sends a
    /// dead letter: the notifier stores it and mails the building's managers. The body is the
    /// latest snapshot of a booking on that access level (or of the building), which names the
    /// managers; its id is fixed per (building, night, access level), so a night given back and
    /// run again reports the same dead letter.
    async fn report(
        &self,
        building: &str,
        night: chrono::NaiveDate,
        level: &AccessLevelKey,
        problem: &str,
    ) -> Result<(), SyncError> {
        let snapshot = {
            let mut conn = self.ctx.pool.acquire().await?;
            store::bookings::snapshot_for_alert(&mut conn, building, &level.access_level).await?
        };
        let (routing_key, body) = match &snapshot {
            Some(envelope) => (envelope.routing_key().to_owned(), envelope.to_json()),
            None => (
                "salto_sync.cleaner".to_owned(),
                serde_json::json!({"building_id": building, "access_level": level.access_level})
                    .to_string()
                    .into_bytes(),
            ),
        };
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!(
                "salto-sync/cleaner/{building}/{night}/{}",
                level.access_level
            )
            .as_bytes(),
        )
        .to_string();
        let error = format!(
            "nightly clearing of building {building} for {night}, access level {} on server {}: \
             {problem}",
            level.access_level, level.server
        );
        self.ctx
            .publisher
            .publish_dead_letter(platform::amqp::OwnDeadLetter {
                id: &id,
                service: "salto-sync",
                // A replay sends the booking back to salto-sync, which acts on it again.
                original_queue: contracts::SALTO_SYNC_QUEUE.name,
                routing_key: &routing_key,
                error: &error,
                body: &body,
            })
            .await?;
        Ok(())
    }

    /// Removes `building`'s ended permissions and waits of an access level (on the building's
    /// own date; other buildings on the same server clear on theirs), and grants the freed slots.
    async fn expire_level(
        &self,
        level: &AccessLevelKey,
        building: &str,
        today: chrono::NaiveDate,
    ) -> Result<(usize, usize), SyncError> {
        let (_admitted, mut tx) = self.locked_level(level).await?;
        let ended = tx.take_ended_permissions(level, building, today).await?;
        let ended_waits = tx.take_ended_waits(level, building, today).await?;
        let ended_bookings = ended
            .iter()
            .map(|held| (held.booking_id, held.version))
            .chain(ended_waits.iter().map(|w| (w.booking_id, w.version)));
        for (booking_id, version) in ended_bookings {
            if let Some(booking) = tx.booking_of(booking_id).await? {
                tx.record_outcome(booking_id, version, Outcome::Expired, booking)
                    .await?;
            }
        }
        let mut freed: Vec<_> = ended.iter().map(|held| held.slot.clone()).collect();
        freed.extend(tx.free_slots_with_waiters(level).await?);
        freed.sort();
        freed.dedup();
        let mut granted = 0;
        for slot in freed {
            if let Promotion::Granted(_) = tx.promote_waiters(&slot, today).await? {
                granted += 1;
            }
        }
        tx.finish().await?;
        Ok((ended.len() + ended_waits.len(), granted))
    }

    /// Compares the ledger with Salto's list for an access level: grants the ledger holds but
    /// Salto lacks are written again; a permission Salto shows for a zone a booking waits for,
    /// which the ledger cannot explain, is reported to the manager on that booking.
    async fn reconcile_level(
        &self,
        level: &AccessLevelKey,
        building: &str,
        today: chrono::NaiveDate,
    ) -> Result<(bool, usize), SyncError> {
        let (_admitted, mut tx) = self.locked_level(level).await?;
        let group = tx.salto_group(level).await?;
        let held = tx.held_in_level(level).await?;
        let managed = tx.managed_zones(level).await?;
        let findings = decision::drift_findings(&held, &group.permissions, &managed);
        let lost = decision::grants_salto_lost(&held, &group.permissions);
        for h in &lost {
            tracing::warn!(access_level = level.access_level, zone = h.slot.zone,
                           booking_id = %h.booking_id, "Salto lost a grant the ledger holds; re-applying");
        }
        let repaired = !lost.is_empty();
        if repaired {
            tx.touch(level);
        }
        let mut granted = 0;
        for slot in tx.free_slots_with_waiters(level).await? {
            match tx.promote_waiters(&slot, today).await? {
                Promotion::Granted(_) => granted += 1,
                Promotion::Nobody => {}
                Promotion::Blocked(existing) => {
                    for waiter in tx.waiters_for(&slot).await? {
                        if let Some(booking) = tx.booking_of(waiter.booking_id).await? {
                            let failure = results::drift(&booking, &existing);
                            tx.emit(results::result_event(
                                Outcome::Failed,
                                waiter.booking_id,
                                waiter.version,
                                booking,
                                None,
                                Some(failure),
                            ));
                        }
                    }
                }
            }
        }
        tx.finish().await?;
        self.report_drift(building, level, findings).await?;
        Ok((repaired, granted))
    }

    /// A ledger transaction holding `level`'s lock, admitted by the server's bulkhead for as long
    /// as the admission is kept. A server that is failing is left for a later tick; it must not
    /// hold up the others.
    async fn locked_level(
        &self,
        level: &AccessLevelKey,
    ) -> Result<(Admission, LedgerTransaction), SyncError> {
        let admitted = self.ctx.servers.bulkhead(&level.server).admit(None)?;
        let mut tx = LedgerTransaction::begin(&self.ctx).await?;
        tx.lock([level.clone()]).await?;
        Ok((admitted, tx))
    }

    /// Tells the building's managers what is newly found changed outside connecX on an access
    /// level (`salto_server.drift_found.v1`), and remembers everything found now: what stays as
    /// it was is not reported again each night, what went away is forgotten.
    async fn report_drift(
        &self,
        building: &str,
        level: &AccessLevelKey,
        findings: Vec<contracts::DriftFinding>,
    ) -> Result<(), SyncError> {
        let keys: Vec<String> = findings.iter().map(decision::drift_key).collect();
        let mut conn = self.ctx.pool.acquire().await?;
        let reported = store::cleaner::drift_reported(&mut conn, level).await?;
        if keys.iter().any(|key| !reported.contains(key)) {
            let managers =
                store::bookings::snapshot_for_alert(&mut conn, building, &level.access_level)
                    .await?
                    .and_then(|e| e.building().cloned());
            match managers {
                Some(building) => {
                    tracing::warn!(
                        access_level = level.access_level,
                        server = level.server,
                        findings = findings.len(),
                        "Salto changed outside connecX; managers told"
                    );
                    let subject = uuid::Uuid::new_v5(
                        &uuid::Uuid::NAMESPACE_URL,
                        format!("salto-drift/{}/{}", level.server, level.access_level).as_bytes(),
                    );
                    let mut event = contracts::Envelope::new(
                        subject,
                        chrono::Utc::now().timestamp_millis(),
                        contracts::Event::SaltoDriftFound(contracts::SaltoDrift {
                            building,
                            server: level.server.clone(),
                            access_level: level.access_level.clone(),
                            findings,
                        }),
                    );
                    // The same findings reported again (a night given back) are the same event.
                    event.event_id = uuid::Uuid::new_v5(&subject, keys.join("\n").as_bytes());
                    self.ctx.publisher.publish_event(&event).await?;
                }
                None => tracing::warn!(
                    building,
                    access_level = level.access_level,
                    "Salto changed outside connecX, but no booking names the managers to tell"
                ),
            }
        }
        store::cleaner::remember_drift(&mut conn, level, &keys).await?;
        Ok(())
    }
}

/// Starts the minute tick (and one tick now, to catch up a missed night). Stop it with
/// [`JobScheduler::shutdown`].
pub async fn schedule(
    cleaner: Arc<Cleaner>,
    cron: &str,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let for_job = Arc::clone(&cleaner);
    let job = Job::new_async(cron, move |_id, _scheduler| {
        let cleaner = Arc::clone(&for_job);
        Box::pin(async move {
            if let Err(error) = cleaner.tick().await {
                tracing::warn!(%error, "cleaner tick failed");
            }
        })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    tokio::spawn(async move {
        if let Err(error) = cleaner.tick().await {
            tracing::warn!(%error, "catch-up clearing at start failed");
        }
    });
    Ok(scheduler)
}
