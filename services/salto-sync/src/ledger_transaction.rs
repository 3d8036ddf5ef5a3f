//! One step of work on the ledger and Salto, shared by the booking handler and the cleaner.
//!
//! A step is one PostgreSQL transaction. It takes the advisory lock of every access level it
//! touches (sorted, so two steps cannot deadlock), reads and changes the ledger, and at the end
//! makes Salto match the ledger for each touched access level: the whole `GroupZoneList` is
//! computed then, from the ledger's current state plus Salto's entries for zones the ledger does
//! not own ("converge, don't replay"). Result events are published before the commit with
//! deterministic ids, so a step that fails to commit is retried and publishes the same events.
//! Nothing is kept when a step fails: the transaction rolls back, and Salto is left either as it
//! was or showing entries the ledger does not record. Those entries were noted as connecX's
//! before the write (`unrecorded_writes`, committed on its own), so the next step on the access
//! level sees them as its own to replace or remove, never as a permission made by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use contracts::Envelope;
use platform::amqp::{HandlerError, PublishError, Publisher};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::ledger::decide::{self, converge_list, has_ended};
use crate::ledger::{AccessLevelKey, Held, SlotKey, store};
use crate::results::{Outcome, result_event};
use crate::servers::{self, ServerError, Servers};
use crate::timetables::{self, Sweeper};
use platform::clock::Clock;
use salto_ship::{Group, Remedy, ShipClient, ShipError, ZonePermission};

/// What every step needs.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    /// A small pool of its own for the notes a step commits outside its transaction
    /// (`unrecorded_writes`). A step asks for it while it holds a connection of `pool`: from the
    /// same pool, steps holding every connection would wait on each other until the acquire
    /// timeout.
    pub journal: PgPool,
    /// Every Salto server's SHIP client.
    pub servers: Arc<Servers>,
    /// Deletes the timetables no permission uses any more, per server, after steps that may
    /// have stopped using one.
    pub sweeper: Arc<Sweeper>,
    pub publisher: Publisher,
    pub clock: Arc<dyn Clock>,
}

impl Context {
    /// The building's local date now.
    pub fn local_today(&self, timezone: &str) -> NaiveDate {
        let now = self.clock.now();
        match timezone.parse::<Tz>() {
            Ok(tz) => now.with_timezone(&tz).date_naive(),
            Err(_) => {
                tracing::warn!(timezone, "unknown time zone; using UTC dates");
                now.date_naive()
            }
        }
    }
}

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Ship(#[from] ShipError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publishing results: {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Every timetable ID of the server is in use: the booking waits until one frees.
    #[error("every Salto timetable ID (1..1024) of server {server} is in use")]
    PoolExhausted { server: String },
    /// The building's server cannot take the booking now (its breaker is open, or it has enough
    /// messages in flight): the booking waits without using up its retries.
    #[error(transparent)]
    Unavailable(#[from] platform::bulkhead::Refusal),
    /// A call failed while the server's breaker is open: the server is down, the booking waits.
    #[error("the Salto server is down: {0}")]
    ServerDown(String),
    /// The booking was made under a version of its building's connection this worker has not
    /// seen yet; the change is on its way through the same queue.
    #[error(
        "the booking was made under version {wanted} of building {building}'s Salto connection; \
         this worker has version {known} so far"
    )]
    AwaitingConnection {
        building: String,
        wanted: i64,
        known: i64,
    },
    #[error("{0}")]
    Bug(String),
}

impl From<platform::snapshots::SnapshotError> for StepError {
    fn from(error: platform::snapshots::SnapshotError) -> Self {
        match error {
            platform::snapshots::SnapshotError::Db(e) => Self::Db(e),
            // Not for retrying: a dead letter, and the alert, name the booking.
            undecodable => Self::Bug(undecodable.to_string()),
        }
    }
}

impl StepError {
    /// Salto's refusal that a person must resolve, if that is what this is.
    pub fn needs_manager(&self) -> Option<&ShipError> {
        match self {
            Self::Ship(error) if error.remedy() == Remedy::NeedsManager => Some(error),
            _ => None,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ship(error) => error.remedy() == Remedy::Transient,
            Self::Db(_)
            | Self::Publish(_)
            | Self::PoolExhausted { .. }
            | Self::Unavailable(_)
            | Self::ServerDown(_)
            | Self::AwaitingConnection { .. } => true,
            // Ops can fix a key and restart; the message waits meanwhile.
            Self::Server(ServerError::Secret { .. }) => true,
            Self::Server(_) | Self::Bug(_) => false,
        }
    }

    pub fn into_handler_error(self) -> HandlerError {
        if let Self::PoolExhausted { .. } | Self::Unavailable(_) | Self::ServerDown(_) = self {
            // Nothing is wrong with the booking: it waits for an ID, however long that takes.
            return HandlerError::Unavailable(self.to_string());
        }
        if self.is_transient() {
            HandlerError::Transient(self.to_string())
        } else {
            HandlerError::Permanent(self.to_string())
        }
    }
}

/// How a waiter's promotion went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// Nobody could take the slot.
    Nobody,
    /// This booking now holds it.
    Granted(Uuid),
    /// Salto shows a permission for the zone that the ledger does not know; nobody was granted.
    Blocked(ZonePermission),
}

pub struct Step {
    tx: Transaction<'static, Postgres>,
    /// For what must commit outside the step's transaction ([`Context::journal`]).
    journal: PgPool,
    servers: Arc<Servers>,
    /// The clients of the servers this step talked to.
    ships: HashMap<String, ShipClient>,
    sweeper: Arc<Sweeper>,
    publisher: Publisher,
    locked: BTreeSet<AccessLevelKey>,
    /// Salto's groups as read, entries of failed steps included.
    groups: BTreeMap<AccessLevelKey, Group>,
    /// Entries Salto shows that steps which did not commit wrote.
    orphans: BTreeMap<AccessLevelKey, Vec<ZonePermission>>,
    released: BTreeMap<AccessLevelKey, BTreeSet<String>>,
    touched: BTreeSet<AccessLevelKey>,
    events: Vec<Envelope>,
}

impl Step {
    pub async fn begin(ctx: &Context) -> Result<Step, StepError> {
        let mut tx = ctx.pool.begin().await?;
        store::set_lock_timeout(&mut tx).await?;
        Ok(Step {
            tx,
            journal: ctx.journal.clone(),
            servers: ctx.servers.clone(),
            ships: HashMap::new(),
            sweeper: ctx.sweeper.clone(),
            publisher: ctx.publisher.clone(),
            locked: BTreeSet::new(),
            groups: BTreeMap::new(),
            orphans: BTreeMap::new(),
            released: BTreeMap::new(),
            touched: BTreeSet::new(),
            events: Vec::new(),
        })
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// The SHIP client of `server`, its stored settings read in the step's transaction.
    pub async fn ship(&mut self, server: &str) -> Result<ShipClient, StepError> {
        if let Some(ship) = self.ships.get(server) {
            return Ok(ship.clone());
        }
        // The deployment default's credentials come from the configuration, not the database.
        let stored = if self.servers.default_key() == Some(server) {
            None
        } else {
            servers::stored(&mut *self.tx, server).await?
        };
        let ship = self.servers.client(server, stored.as_ref())?;
        self.ships.insert(server.to_owned(), ship.clone());
        Ok(ship)
    }

    /// Locks access levels not yet held by this step, in sorted order.
    pub async fn lock(
        &mut self,
        levels: impl IntoIterator<Item = AccessLevelKey>,
    ) -> Result<(), StepError> {
        let wanted: BTreeSet<AccessLevelKey> = levels
            .into_iter()
            .filter(|l| !self.locked.contains(l))
            .collect();
        for level in wanted {
            store::lock(&mut self.tx, &level.lock_name()).await?;
            self.locked.insert(level);
        }
        Ok(())
    }

    /// Salto's group, read once per step (under the lock, so it stays current), without the
    /// entries left by steps that did not commit: those are the ledger's to replace or remove
    /// (their zones count as released here), not permissions made by hand.
    pub async fn salto_group(&mut self, level: &AccessLevelKey) -> Result<Group, StepError> {
        let group = self.group_as_read(level).await?;
        let orphans = self.orphans.get(level).cloned().unwrap_or_default();
        Ok(Group {
            permissions: group
                .permissions
                .into_iter()
                .filter(|p| !orphans.contains(p))
                .collect(),
            ..group
        })
    }

    async fn group_as_read(&mut self, level: &AccessLevelKey) -> Result<Group, StepError> {
        if let Some(group) = self.groups.get(level) {
            return Ok(group.clone());
        }
        let ship = self.ship(&level.server).await?;
        let group = ship.read_group(&level.access_level).await?;
        let unrecorded = store::unrecorded(&mut self.tx, level).await?;
        let orphans: Vec<ZonePermission> = group
            .permissions
            .iter()
            .filter(|p| unrecorded.contains(p))
            .cloned()
            .collect();
        for orphan in &orphans {
            tracing::info!(
                access_level = level.access_level,
                zone = orphan.zone,
                "Salto shows an entry of an earlier step that did not commit; replacing it"
            );
            self.mark_released(&SlotKey {
                level: level.clone(),
                zone: orphan.zone.clone(),
            });
        }
        self.orphans.insert(level.clone(), orphans);
        self.groups.insert(level.clone(), group.clone());
        Ok(group)
    }

    /// Salto must be brought to the ledger's state for this access level at the end of the step.
    pub fn touch(&mut self, level: &AccessLevelKey) {
        self.touched.insert(level.clone());
    }

    pub fn emit(&mut self, envelope: Envelope) {
        self.events.push(envelope);
    }

    /// Removes a holder from its slot (the permission goes from Salto at the end of the step).
    pub async fn release(&mut self, held: &Held) -> Result<(), StepError> {
        store::delete_held(&mut self.tx, held.booking_id).await?;
        self.mark_released(&held.slot);
        Ok(())
    }

    /// Notes that the ledger gave up this slot in this step: Salto's entry for it is ours to remove.
    pub fn mark_released(&mut self, slot: &SlotKey) {
        self.released
            .entry(slot.level.clone())
            .or_default()
            .insert(slot.zone.clone());
        self.touch(&slot.level);
    }

    fn released_here(&self, slot: &SlotKey) -> bool {
        self.released
            .get(&slot.level)
            .is_some_and(|zones| zones.contains(&slot.zone))
    }

    /// The ID of `server`'s pool timetable for these hours (made in Salto when new).
    pub async fn timetable(
        &mut self,
        server: &str,
        starts: salto_ship::DaySeconds,
        ends: salto_ship::DaySeconds,
    ) -> Result<u32, StepError> {
        let ship = self.ship(server).await?;
        timetables::timetable_for(&mut self.tx, &self.journal, &ship, server, starts, ends).await
    }

    /// Makes `booking_id` (of `building`) the holder of `slot` for `window` (the server's pool
    /// supplies the timetable).
    pub async fn hold(
        &mut self,
        slot: &SlotKey,
        building: &str,
        booking_id: Uuid,
        version: i64,
        window: crate::ledger::LocalWindow,
    ) -> Result<Held, StepError> {
        let timetable = self
            .timetable(&slot.level.server, window.starts, window.ends)
            .await?;
        let held = Held {
            slot: slot.clone(),
            building: building.to_owned(),
            booking_id,
            version,
            window,
            timetable,
            period: salto_ship::Period::whole_day(window.date),
        };
        store::insert_held(&mut self.tx, &held).await?;
        store::delete_waiting(&mut self.tx, booking_id).await?;
        self.touch(&slot.level);
        Ok(held)
    }

    /// Grants a free slot to the first booking waiting for it whose wait is still current.
    /// Waits that have ended are expired on the way.
    pub async fn promote_waiters(
        &mut self,
        slot: &SlotKey,
        today: NaiveDate,
    ) -> Result<Promotion, StepError> {
        if store::holder_of(&mut self.tx, slot).await?.is_some() {
            return Ok(Promotion::Nobody);
        }
        let waiters = store::waiters_for(&mut self.tx, slot).await?;
        if waiters.is_empty() {
            return Ok(Promotion::Nobody);
        }
        if !self.released_here(slot) {
            // The ledger did not just free this zone, so an entry Salto shows for it is not ours.
            let group = self.salto_group(&slot.level).await?;
            if let Some(existing) = group.permissions.iter().find(|p| p.zone == slot.zone) {
                return Ok(Promotion::Blocked(existing.clone()));
            }
        }
        for waiter in waiters {
            let snapshot = store::snapshot(&mut self.tx, waiter.booking_id).await?;
            let Some(envelope) = snapshot else {
                store::delete_waiting(&mut self.tx, waiter.booking_id).await?;
                continue;
            };
            if envelope.version != waiter.version {
                // A newer version of this booking is on its way through the handler, which will
                // place it; granting the old one here would act on an old truth.
                continue;
            }
            let Some(booking) = decide::facility_booking(&envelope.event).cloned() else {
                store::delete_waiting(&mut self.tx, waiter.booking_id).await?;
                continue;
            };
            if has_ended(&waiter.window, today) {
                store::delete_waiting(&mut self.tx, waiter.booking_id).await?;
                self.outcome(waiter.booking_id, waiter.version, Outcome::Expired, booking)
                    .await?;
                continue;
            }
            self.hold(
                slot,
                &waiter.building,
                waiter.booking_id,
                waiter.version,
                waiter.window,
            )
            .await?;
            self.outcome(waiter.booking_id, waiter.version, Outcome::Granted, booking)
                .await?;
            return Ok(Promotion::Granted(waiter.booking_id));
        }
        Ok(Promotion::Nobody)
    }

    /// Records a booking's outcome and emits its result event (no `held_by`, no failure).
    pub async fn outcome(
        &mut self,
        booking_id: Uuid,
        version: i64,
        outcome: Outcome,
        booking: contracts::FacilityBooking,
    ) -> Result<(), StepError> {
        self.outcome_with(booking_id, version, outcome, booking, None, None)
            .await
    }

    pub async fn outcome_with(
        &mut self,
        booking_id: Uuid,
        version: i64,
        outcome: Outcome,
        booking: contracts::FacilityBooking,
        held_by: Option<crate::results::Holder>,
        failure: Option<contracts::AccessFailure>,
    ) -> Result<(), StepError> {
        store::record_outcome(&mut self.tx, booking_id, version, outcome.as_str()).await?;
        self.emit(result_event(
            outcome, booking_id, version, booking, held_by, failure,
        ));
        Ok(())
    }

    /// Makes Salto match the ledger for every touched access level, publishes the results, and
    /// commits. Returns the events published.
    pub async fn finish(mut self) -> Result<Vec<Envelope>, StepError> {
        // An access level with entries of failed steps is brought to the ledger's state even if
        // nothing else changed in it (a cancellation whose grant never committed, say).
        let locked: Vec<AccessLevelKey> = self.locked.iter().cloned().collect();
        for level in locked {
            if !self.touched.contains(&level)
                && !store::unrecorded(&mut self.tx, &level).await?.is_empty()
            {
                self.touch(&level);
            }
        }
        let touched: Vec<AccessLevelKey> = self.touched.iter().cloned().collect();
        for level in touched {
            let group = self.group_as_read(&level).await?;
            let desired: Vec<ZonePermission> = store::held_in_level(&mut self.tx, &level)
                .await?
                .iter()
                .map(Held::permission)
                .collect();
            let released = self.released.get(&level).cloned().unwrap_or_default();
            if let Some(permissions) = converge_list(&group.permissions, &desired, &released) {
                let updated = Group {
                    permissions,
                    ..group
                };
                store::note_unrecorded(&self.journal, &level, &desired).await?;
                let ship = self.ship(&level.server).await?;
                ship.update_group(&updated).await?;
                self.groups.insert(level.clone(), updated);
            }
            store::forget_unrecorded(&mut self.tx, &level).await?;
        }
        if !self.events.is_empty() {
            self.publisher.publish_events(&self.events).await?;
        }
        self.tx.commit().await?;
        // A permission written, moved or removed may have been the last one of its timetable.
        let servers: BTreeSet<String> = self.touched.iter().map(|l| l.server.clone()).collect();
        for server in servers {
            self.sweeper.request(&server);
        }
        Ok(self.events)
    }
}
