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
//!
//! A night's cost follows the work, not the round trips
//! (docs/decisions/0011-nightly-clearing-in-batches.md): the access levels of a building are cleared in batches
//! ([`CleanerSettings::batch_levels`] per ledger transaction: one statement per kind of read or
//! write for the whole batch, one commit, the results published together), and up to
//! [`CleanerSettings::concurrency_per_server`] batches work with one Salto server at once, across
//! the [`CleanerSettings::buildings_at_once`] buildings cleared side by side. A batch
//! that fails for a reason a retry cannot change is cleared again one access level at a time, so
//! that only the level at fault is reported. Reconciliation is incremental: each night compares
//! the access levels the night touched plus a rotating slice of the others
//! ([`decision::reconciled_tonight`]), so every level is compared at least once every
//! [`CleanerSettings::reconcile_days`] nights.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveTime;
use chrono_tz::Tz;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use platform::bulkhead::Admission;
use tokio::sync::Semaphore;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use uuid::Uuid;

use crate::context::Context;
use crate::decision::{self, due_clearing_date};
use crate::error::SyncError;
use crate::ledger::AccessLevelKey;
use crate::ledger_transaction::{LedgerTransaction, Promotion};
use crate::results::{self, Outcome};
use crate::settings::CleanerSettings;
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
    reconcile_days: u32,
    batch_levels: usize,
    concurrency_per_server: usize,
    buildings_at_once: usize,
    /// The clearing's transactions working with each Salto server now, across buildings.
    lanes: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// One tick at a time in this process (a slow night must not overlap the next minute's tick).
    busy: tokio::sync::Mutex<()>,
}

/// The two passes of a night over a building's access levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Remove what ended and grant the freed slots.
    Expire,
    /// Compare with Salto's lists.
    Reconcile,
}

impl Pass {
    fn problem(self, error: &SyncError) -> String {
        match self {
            Pass::Expire => format!("cannot clear access level: {error}"),
            Pass::Reconcile => format!("cannot reconcile access level: {error}"),
        }
    }
}

/// Which building's night a pass works on, and what its comparisons need.
#[derive(Clone, Copy)]
struct BuildingNight<'a> {
    building: &'a str,
    /// The building's local date being cleared.
    today: chrono::NaiveDate,
    /// The zones connecX manages, by access level (empty without reconciliation).
    managed: &'a HashMap<String, BTreeSet<String>>,
}

/// What a pass did over some access levels, and what a person must look at.
#[derive(Debug, Default)]
struct PassDone {
    expired: usize,
    granted: usize,
    repaired_levels: usize,
    problems: Vec<(AccessLevelKey, String)>,
}

impl PassDone {
    fn add(&mut self, other: PassDone) {
        self.expired += other.expired;
        self.granted += other.granted;
        self.repaired_levels += other.repaired_levels;
        self.problems.extend(other.problems);
    }
}

impl Cleaner {
    pub fn new(ctx: Context, settings: &CleanerSettings) -> Self {
        Self {
            ctx,
            clearing_time: settings.clearing_time(),
            reconcile: settings.reconcile,
            reconcile_days: settings.reconcile_days.max(1),
            batch_levels: settings.batch_levels.max(1),
            concurrency_per_server: settings.concurrency_per_server.max(1),
            buildings_at_once: settings.buildings_at_once.max(1),
            lanes: std::sync::Mutex::new(HashMap::new()),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs every clearing that is due and not yet done, up to
    /// [`CleanerSettings::buildings_at_once`] buildings at once. Returns what ran here.
    pub async fn tick(&self) -> Result<Vec<Clearing>, SyncError> {
        let Ok(_busy) = self.busy.try_lock() else {
            return Ok(Vec::new());
        };
        let now = self.ctx.clock.now();
        let mut conn = self.ctx.pool.acquire().await?;
        let buildings = store::bookings::buildings(&mut conn).await?;
        let mut due = Vec::with_capacity(buildings.len());
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
            let night = due_clearing_date(local_now, self.clearing_time);
            due.push((building, night));
        }
        // A fleet's buildings are looked at every minute: the nights already done are found in
        // one statement.
        let done_already = store::cleaner::ran(&mut conn, &due).await?;
        drop(conn);
        due.retain(|night| !done_already.contains(night));
        let results: Vec<(String, Result<Option<Clearing>, SyncError>)> =
            futures::stream::iter(due)
                .map(|(building, night)| async move {
                    let result = self.clear(&building, night).await;
                    (building, result)
                })
                .buffer_unordered(self.buildings_at_once)
                .collect()
                .await;
        let mut done = Vec::new();
        let mut first_error = None;
        for (building, result) in results {
            match result {
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
        let ended_levels = {
            let mut conn = self.ctx.pool.acquire().await?;
            store::ledger::levels_with_ended(&mut conn, building, today).await?
        };
        // With reconciliation, the levels the night touches are compared with Salto in the
        // clearing's own transactions (their lists are read there anyway); the others of
        // tonight's slice in a pass of their own.
        let (slice, managed) = if self.reconcile {
            let levels = {
                let mut conn = self.ctx.pool.acquire().await?;
                store::ledger::levels_of_building(&mut conn, building).await?
            };
            let touched: BTreeSet<&AccessLevelKey> = ended_levels.iter().collect();
            let slice: Vec<AccessLevelKey> = levels
                .into_iter()
                .filter(|level| {
                    !touched.contains(level)
                        && decision::reconciled_tonight(level, today, self.reconcile_days)
                })
                .collect();
            let managed = {
                let access_levels: Vec<&str> = ended_levels
                    .iter()
                    .chain(&slice)
                    .map(|l| l.access_level.as_str())
                    .collect();
                let mut conn = self.ctx.pool.acquire().await?;
                store::bookings::managed_zones(&mut conn, &access_levels).await?
            };
            (slice, managed)
        } else {
            (Vec::new(), HashMap::new())
        };
        // What a person must look at: the night is still done (trying again every minute would
        // change nothing), but each one becomes a dead letter, and so an alert mail.
        let night = BuildingNight {
            building,
            today,
            managed: &managed,
        };
        let expiry = self.pass(Pass::Expire, &ended_levels, night).await?;
        clearing.expired = expiry.expired;
        clearing.granted = expiry.granted;
        clearing.repaired_levels = expiry.repaired_levels;
        let mut problems = expiry.problems;
        if !slice.is_empty() {
            let reconciled = self.pass(Pass::Reconcile, &slice, night).await?;
            clearing.granted += reconciled.granted;
            clearing.repaired_levels += reconciled.repaired_levels;
            for (level, problem) in reconciled.problems {
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

    /// Runs a pass over `levels` of `building` in batches of [`Self::batch_levels`] access
    /// levels of one server; each batch waits for its server's lane ([`Self::lane`]), so that
    /// a server never has more than [`Self::concurrency_per_server`] of the clearing's
    /// transactions at once, whichever buildings they clear. A transient failure gives the night
    /// back once every batch has ended (what was done stays done; it is not found again).
    async fn pass(
        &self,
        pass: Pass,
        levels: &[AccessLevelKey],
        night: BuildingNight<'_>,
    ) -> Result<PassDone, SyncError> {
        let mut by_server: BTreeMap<&str, Vec<AccessLevelKey>> = BTreeMap::new();
        for level in levels {
            by_server
                .entry(level.server.as_str())
                .or_default()
                .push(level.clone());
        }
        let batches: FuturesUnordered<_> = by_server
            .into_iter()
            .flat_map(|(server, levels)| {
                let lane = self.lane(server);
                levels
                    .chunks(self.batch_levels)
                    .map(<[AccessLevelKey]>::to_vec)
                    .map(move |batch| (Arc::clone(&lane), batch))
                    .collect::<Vec<_>>()
            })
            .map(|(lane, batch)| async move {
                let _turn = lane.acquire_owned().await;
                self.isolating(pass, batch, night).await
            })
            .collect();
        let results: Vec<Result<PassDone, SyncError>> = batches.collect().await;
        let mut done = PassDone::default();
        let mut transient = None;
        for result in results {
            match result {
                Ok(batch) => done.add(batch),
                Err(error) => {
                    transient.get_or_insert(error);
                }
            }
        }
        match transient {
            Some(error) => Err(error),
            None => Ok(done),
        }
    }

    /// The semaphore bounding the clearing's transactions on `server`.
    fn lane(&self, server: &str) -> Arc<Semaphore> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            lanes
                .entry(server.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency_per_server))),
        )
    }

    /// One batch of a pass; when it fails for a reason a retry cannot change, each of its access
    /// levels again on its own, so that only the one at fault is reported. Errs only with a
    /// transient failure.
    async fn isolating(
        &self,
        pass: Pass,
        batch: Vec<AccessLevelKey>,
        night: BuildingNight<'_>,
    ) -> Result<PassDone, SyncError> {
        let error = match self.batch(pass, &batch, night).await {
            Ok(done) => return Ok(done),
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => error,
        };
        // A lone level's failure is its own; a batch's is found again level by level.
        let mut alone = match batch.as_slice() {
            [_] => Some(error),
            _ => {
                tracing::warn!(building = night.building, levels = batch.len(), ?pass, %error,
                               "a batch of the clearing failed; clearing its access levels one by one");
                None
            }
        };
        let mut done = PassDone::default();
        for level in batch {
            let result = match alone.take() {
                Some(error) => Err(error),
                None => self.batch(pass, std::slice::from_ref(&level), night).await,
            };
            match result {
                Ok(one) => done.add(one),
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    tracing::error!(building = night.building, access_level = level.access_level,
                                    ?pass, %error, "cannot clear this access level; a person must look");
                    done.problems.push((level, pass.problem(&error)));
                }
            }
        }
        Ok(done)
    }

    async fn batch(
        &self,
        pass: Pass,
        levels: &[AccessLevelKey],
        night: BuildingNight<'_>,
    ) -> Result<PassDone, SyncError> {
        match pass {
            Pass::Expire => self.expire(levels, night).await,
            Pass::Reconcile => self.reconcile(levels, night).await,
        }
    }

    /// Removes `building`'s ended permissions and waits of the access levels `levels` (all of
    /// one server, on the building's own date; other buildings on the same server clear on
    /// theirs), and grants the freed slots. With reconciliation, also compares the levels with
    /// Salto ([`Self::compare`]). One ledger transaction.
    async fn expire(
        &self,
        levels: &[AccessLevelKey],
        night: BuildingNight<'_>,
    ) -> Result<PassDone, SyncError> {
        let (_admitted, mut tx) = self.locked_levels(levels).await?;
        let ended = tx
            .take_ended_permissions(levels, night.building, night.today)
            .await?;
        let ended_waits = tx
            .take_ended_waits(levels, night.building, night.today)
            .await?;
        let ended_bookings: Vec<(Uuid, i64)> = ended
            .iter()
            .map(|held| (held.booking_id, held.version))
            .chain(ended_waits.iter().map(|w| (w.booking_id, w.version)))
            .collect();
        let ids: Vec<Uuid> = ended_bookings.iter().map(|(id, _)| *id).collect();
        let mut bookings = tx.bookings_of(&ids).await?;
        let outcomes = ended_bookings
            .into_iter()
            .filter_map(|(id, version)| {
                let booking = bookings.remove(&id)?;
                Some((id, version, Outcome::Expired, booking))
            })
            .collect();
        tx.record_outcomes(outcomes).await?;
        let mut done = PassDone {
            expired: ended.len() + ended_waits.len(),
            ..PassDone::default()
        };
        // Compared before anyone is granted a freed slot: a grant of this transaction is not
        // in Salto yet, and is not a difference.
        let findings = if self.reconcile {
            Some(
                self.compare(&mut tx, levels, night.managed, &mut done)
                    .await?,
            )
        } else {
            None
        };
        // The slots just freed that someone waits for (and any a crash left free).
        done.granted = self
            .promote_free(&mut tx, levels, night.today, self.reconcile)
            .await?;
        tx.finish().await?;
        if let Some(findings) = findings {
            self.report_drift(night.building, findings).await?;
        }
        Ok(done)
    }

    /// Compares the ledger with Salto's lists for the access levels `levels` (all of one
    /// server): grants the ledger holds but Salto lacks are written again; a permission Salto
    /// shows for a zone a booking waits for, which the ledger cannot explain, is reported to the
    /// manager on that booking; what changed outside connecX is reported to the managers.
    async fn reconcile(
        &self,
        levels: &[AccessLevelKey],
        night: BuildingNight<'_>,
    ) -> Result<PassDone, SyncError> {
        let (_admitted, mut tx) = self.locked_levels(levels).await?;
        let mut done = PassDone::default();
        let findings = self
            .compare(&mut tx, levels, night.managed, &mut done)
            .await?;
        done.granted = self
            .promote_free(&mut tx, levels, night.today, true)
            .await?;
        tx.finish().await?;
        self.report_drift(night.building, findings).await?;
        Ok(done)
    }

    /// What differs between the ledger and Salto's lists on `levels`: the findings to report,
    /// and the levels whose grants Salto lost, touched so that the transaction writes them
    /// again (counted in `done`). Salto's entries on zones the transaction released are its own
    /// to remove, not differences.
    async fn compare(
        &self,
        tx: &mut LedgerTransaction,
        levels: &[AccessLevelKey],
        managed: &HashMap<String, BTreeSet<String>>,
        done: &mut PassDone,
    ) -> Result<Vec<(AccessLevelKey, Vec<contracts::DriftFinding>)>, SyncError> {
        let groups = tx.salto_groups(levels).await?;
        let mut held: HashMap<AccessLevelKey, Vec<crate::ledger::Held>> = HashMap::new();
        for h in tx.held_in_levels(levels).await? {
            held.entry(h.slot.level.clone()).or_default().push(h);
        }
        let no_zones = BTreeSet::new();
        let mut findings = Vec::with_capacity(levels.len());
        for (level, group) in levels.iter().zip(groups) {
            let released = tx.released_zones(level);
            let salto: Vec<salto_ship::ZonePermission> = group
                .permissions
                .into_iter()
                .filter(|p| !released.contains(&p.zone))
                .collect();
            let held = held.get(level).map(Vec::as_slice).unwrap_or_default();
            let managed = managed.get(&level.access_level).unwrap_or(&no_zones);
            findings.push((
                level.clone(),
                decision::drift_findings(held, &salto, managed),
            ));
            let lost = decision::grants_salto_lost(held, &salto);
            for h in &lost {
                tracing::warn!(access_level = level.access_level, zone = h.slot.zone,
                               booking_id = %h.booking_id, "Salto lost a grant the ledger holds; re-applying");
            }
            if !lost.is_empty() {
                done.repaired_levels += 1;
                tx.touch(level);
            }
        }
        Ok(findings)
    }

    /// Grants the free slots of `levels` that someone waits for; returns how many were granted.
    /// With `fail_blocked`, the waiters of a slot Salto holds for a permission the ledger cannot
    /// explain fail, naming it (the comparison's finding for them).
    async fn promote_free(
        &self,
        tx: &mut LedgerTransaction,
        levels: &[AccessLevelKey],
        today: chrono::NaiveDate,
        fail_blocked: bool,
    ) -> Result<usize, SyncError> {
        let mut granted = 0;
        for slot in tx.free_slots_with_waiters(levels).await? {
            match tx.promote_waiters(&slot, today).await? {
                Promotion::Granted(_) => granted += 1,
                Promotion::Nobody => {}
                Promotion::Blocked(_) if !fail_blocked => {}
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
        Ok(granted)
    }

    /// A ledger transaction holding the locks of `levels` (all of one server), admitted by the
    /// server's breaker. A server that is failing is left for a later tick; it must not hold up
    /// the others. The clearing bounds its own calls per server, so it takes none of the
    /// messages' slots.
    async fn locked_levels(
        &self,
        levels: &[AccessLevelKey],
    ) -> Result<(Option<Admission>, LedgerTransaction), SyncError> {
        let admitted = match levels.first() {
            Some(level) => Some(
                self.ctx
                    .servers
                    .bulkhead(&level.server)
                    .admit_background()?,
            ),
            None => None,
        };
        let mut tx = LedgerTransaction::begin(&self.ctx).await?;
        tx.lock(levels.iter().cloned()).await?;
        Ok((admitted, tx))
    }

    /// Tells the building's managers what is newly found changed outside connecX on each access
    /// level (`salto_server.drift_found.v1`), and remembers everything found now: what stays as
    /// it was is not reported again each night, what went away is forgotten.
    async fn report_drift(
        &self,
        building: &str,
        findings: Vec<(AccessLevelKey, Vec<contracts::DriftFinding>)>,
    ) -> Result<(), SyncError> {
        let levels: Vec<AccessLevelKey> = findings.iter().map(|(l, _)| l.clone()).collect();
        let mut conn = self.ctx.pool.acquire().await?;
        let reported = store::cleaner::drift_reported(&mut conn, &levels).await?;
        let mut nothing_found = Vec::new();
        for (level, findings) in findings {
            if findings.is_empty() {
                if reported.contains_key(&level) {
                    nothing_found.push(level);
                }
                continue;
            }
            let keys: Vec<String> = findings.iter().map(decision::drift_key).collect();
            let known = reported.get(&level).map(Vec::as_slice).unwrap_or_default();
            if keys.iter().any(|key| !known.contains(key)) {
                self.tell_managers_of_drift(&mut conn, building, &level, &keys, findings)
                    .await?;
            }
            store::cleaner::remember_drift(&mut conn, &level, &keys).await?;
        }
        if !nothing_found.is_empty() {
            store::cleaner::forget_drift(&mut conn, &nothing_found).await?;
        }
        Ok(())
    }

    async fn tell_managers_of_drift(
        &self,
        conn: &mut sqlx::PgConnection,
        building: &str,
        level: &AccessLevelKey,
        keys: &[String],
        findings: Vec<contracts::DriftFinding>,
    ) -> Result<(), SyncError> {
        let managers = store::bookings::snapshot_for_alert(conn, building, &level.access_level)
            .await?
            .and_then(|e| e.building().cloned());
        let Some(building) = managers else {
            tracing::warn!(
                building,
                access_level = level.access_level,
                "Salto changed outside connecX, but no booking names the managers to tell"
            );
            return Ok(());
        };
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
