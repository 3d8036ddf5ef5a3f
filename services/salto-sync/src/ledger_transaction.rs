//! One locked transaction on the ledger and Salto, shared by the booking handler and the cleaner.
//!
//! A [`LedgerTransaction`] is one PostgreSQL transaction. It takes the advisory lock of every
//! access level it touches (sorted, so two transactions cannot deadlock), reads and changes the
//! ledger through its own methods, and at the end makes Salto match the ledger for each touched
//! access level: the whole `GroupZoneList` is computed then, from the ledger's current state plus
//! Salto's entries for zones the ledger does not own ("converge, don't replay"). Result events
//! are published before the commit with deterministic ids, so a transaction that fails to commit
//! is retried and publishes the same events. Nothing is kept when one fails: it rolls back, and
//! Salto is left either as it was or showing entries the ledger does not record. Those entries
//! were noted as connecX's before the write (`unrecorded_writes`, committed on their own), so the
//! next transaction on the access level sees them as its own to replace or remove, never as a
//! permission made by hand.
//!
//! Its callers decide with [`crate::decision`] and carry the answer out with its methods; none
//! reaches the store beside it, so what it must know (the slots released, the access levels
//! touched) it learns from its own operations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use contracts::{AccessFailure, Envelope, FacilityBooking};
use platform::amqp::Publisher;
use platform::trace::TraceId;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::context::Context;
use crate::decision::{self, WaiterVerdict, converge_list};
use crate::error::SyncError;
use crate::ledger::{AccessLevelKey, BookingEntries, Held, LocalWindow, SlotKey, Waiting};
use crate::results::{Holder, Outcome, result_event};
use crate::servers::Servers;
use crate::store;
use crate::timetables::{self, Sweeper};
use futures::{StreamExt, stream};
use salto_ship::{DaySeconds, Group, ShipClient, ShipError, ZonePermission};

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

pub struct LedgerTransaction {
    tx: Transaction<'static, Postgres>,
    /// For what must commit outside the transaction ([`Context::journal`]).
    journal: PgPool,
    servers: Arc<Servers>,
    /// The clients of the servers this transaction talked to.
    ships: HashMap<String, ShipClient>,
    sweeper: Arc<Sweeper>,
    publisher: Publisher,
    locked: BTreeSet<AccessLevelKey>,
    /// Salto's groups as read, entries of failed transactions included.
    groups: BTreeMap<AccessLevelKey, Group>,
    /// Entries Salto shows that transactions which did not commit wrote.
    orphans: BTreeMap<AccessLevelKey, Vec<ZonePermission>>,
    released: BTreeMap<AccessLevelKey, BTreeSet<String>>,
    touched: BTreeSet<AccessLevelKey>,
    /// The results to publish, each with the trace of the work that made it (in a batch, each
    /// booking's own).
    events: Vec<(Envelope, Option<TraceId>)>,
    /// The timetable IDs this transaction found or made, by (server, starts, ends): the row
    /// lock taken with the first look keeps each as it was, so it is not looked up twice.
    timetables: HashMap<(String, DaySeconds, DaySeconds), u32>,
    /// Bookings this transaction read under their locks as waiting for no slot (and did not
    /// queue since): nothing to delete when they take one.
    not_waiting: BTreeSet<Uuid>,
    /// What was read under the locks and is kept current with this transaction's own writes,
    /// so that a batch reads it for all its bookings at once ([`Self::read_ahead`]) and no
    /// booking reads it twice: the ledger's entries of each booking (dropped when this
    /// transaction writes one of the booking's rows), the holder of each slot, and the version
    /// each booking was last acted on.
    entries: HashMap<Uuid, BookingEntries>,
    holders: BTreeMap<SlotKey, Option<Held>>,
    outcome_versions: HashMap<Uuid, Option<i64>>,
    /// The outcomes recorded here, by booking: written in one statement before the commit.
    outcomes: BTreeMap<Uuid, (i64, Outcome)>,
    /// Calls to Salto this transaction makes at once (see [`Self::allow_calls_at_once`]).
    calls_at_once: usize,
}

impl LedgerTransaction {
    pub async fn begin(ctx: &Context) -> Result<LedgerTransaction, SyncError> {
        Self::begin_holding(ctx, &[]).await
    }

    /// Begins the transaction that acts on `booking_id`, holding the booking's own lock from the
    /// start. One booking's transactions never overlap: a cancellation handled beside its own
    /// grant (another replica, or a retry) could not see that grant before it commits, so it
    /// would lock no access level, release nothing, and let the grant commit a permission for a
    /// cancelled booking; after this lock it sees the grant and releases it. Then
    /// [`LedgerTransaction::lock_levels_of`] locks the access levels the booking is in.
    pub async fn begin_for_booking(
        ctx: &Context,
        booking_id: Uuid,
    ) -> Result<LedgerTransaction, SyncError> {
        Self::begin_holding(ctx, &[booking_id]).await
    }

    /// [`LedgerTransaction::begin_for_booking`] for several bookings at once (a batch,
    /// [`crate::batch`]); then [`LedgerTransaction::lock_levels_of_all`].
    pub async fn begin_for_bookings(
        ctx: &Context,
        bookings: &[Uuid],
    ) -> Result<LedgerTransaction, SyncError> {
        Self::begin_holding(ctx, bookings).await
    }

    async fn begin_holding(
        ctx: &Context,
        bookings: &[Uuid],
    ) -> Result<LedgerTransaction, SyncError> {
        let tx = store::begin(&ctx.pool, bookings).await?;
        Ok(LedgerTransaction {
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
            timetables: HashMap::new(),
            not_waiting: BTreeSet::new(),
            entries: HashMap::new(),
            holders: BTreeMap::new(),
            outcome_versions: HashMap::new(),
            outcomes: BTreeMap::new(),
            calls_at_once: 1,
        })
    }

    /// Lets the transaction read and write up to `calls` access levels at once (a batch: its
    /// share of the calls its servers may have in flight). Otherwise it makes one call at a
    /// time, as one booking's transaction always has.
    pub fn allow_calls_at_once(&mut self, calls: usize) {
        self.calls_at_once = calls.max(1);
    }

    /// The SHIP client of `server`, its stored settings read in this transaction.
    async fn ship(&mut self, server: &str) -> Result<ShipClient, SyncError> {
        if let Some(ship) = self.ships.get(server) {
            return Ok(ship.clone());
        }
        let ship = self
            .servers
            .client_reading::<SyncError>(&mut self.tx, server)
            .await?;
        self.ships.insert(server.to_owned(), ship.clone());
        Ok(ship)
    }

    /// Locks access levels not yet held by this transaction, in sorted order (one statement).
    pub async fn lock(
        &mut self,
        levels: impl IntoIterator<Item = AccessLevelKey>,
    ) -> Result<(), SyncError> {
        let wanted: BTreeSet<AccessLevelKey> = levels
            .into_iter()
            .filter(|l| !self.locked.contains(l))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = wanted.iter().map(AccessLevelKey::lock_name).collect();
        store::lock_all(&mut self.tx, &names).await?;
        self.locked.extend(wanted);
        Ok(())
    }

    /// Locks the access levels the booking holds or waits in and `asked_for` (the one it names
    /// now). The transaction holds the booking's own lock ([`LedgerTransaction::begin_for_booking`]).
    pub async fn lock_levels_of(
        &mut self,
        booking_id: Uuid,
        asked_for: Option<AccessLevelKey>,
    ) -> Result<(), SyncError> {
        // Read before the access levels' locks: a promotion may move the booking meanwhile, so
        // this read only says what to lock, and [`Self::entries_of`] reads again.
        let (held, waiting) = store::ledger::entries_of_booking(&mut self.tx, booking_id).await?;
        let entries = BookingEntries { held, waiting };
        self.lock(asked_for.into_iter().chain(entries.levels()))
            .await
    }

    /// [`LedgerTransaction::lock_levels_of`] for several bookings, the access levels of all of
    /// them locked in one statement (in one order, so two batches never wait for each other).
    pub async fn lock_levels_of_all(
        &mut self,
        bookings: &[(Uuid, Option<AccessLevelKey>)],
    ) -> Result<(), SyncError> {
        let ids: Vec<Uuid> = bookings.iter().map(|(id, _)| *id).collect();
        // As for one booking: the first read says what to lock, the second, under the locks,
        // is what each booking's part works from (kept for [`Self::entries_of`]).
        let before = store::ledger::entries_of_bookings(&mut self.tx, &ids).await?;
        let mut levels: BTreeSet<AccessLevelKey> = bookings
            .iter()
            .filter_map(|(_, asked_for)| asked_for.clone())
            .collect();
        for (held, waiting) in before.into_values() {
            let entries = BookingEntries { held, waiting };
            levels.extend(entries.levels());
        }
        self.lock(levels).await?;
        let mut locked = store::ledger::entries_of_bookings(&mut self.tx, &ids).await?;
        for id in ids {
            let (held, waiting) = locked.remove(&id).unwrap_or_default();
            self.remember_entries(id, BookingEntries { held, waiting });
        }
        Ok(())
    }

    /// Reads for a batch at once what its bookings' parts read one by one: the versions
    /// `bookings` were last acted on, the holders of `slots` (the ones they ask for) and Salto's
    /// groups of their access levels (one statement each, and the groups' calls). Called with
    /// the locks held.
    pub async fn read_ahead(
        &mut self,
        bookings: &[Uuid],
        slots: &[SlotKey],
    ) -> Result<(), SyncError> {
        let mut versions = store::bookings::outcome_versions(&mut self.tx, bookings).await?;
        for id in bookings {
            self.outcome_versions.insert(*id, versions.remove(id));
        }
        let slots: BTreeSet<&SlotKey> = slots.iter().collect();
        let unread: Vec<SlotKey> = slots
            .iter()
            .filter(|s| !self.holders.contains_key(**s))
            .map(|s| (*s).clone())
            .collect();
        for slot in &unread {
            self.holders.insert(slot.clone(), None);
        }
        for held in store::ledger::holders_of(&mut self.tx, &unread).await? {
            self.holders.insert(held.slot.clone(), Some(held));
        }
        let levels: BTreeSet<AccessLevelKey> = slots.iter().map(|s| s.level.clone()).collect();
        let levels: Vec<AccessLevelKey> = levels.into_iter().collect();
        self.groups_as_read(&levels).await?;
        Ok(())
    }

    /// What the ledger holds for the booking, read again under the locks (and the access levels
    /// it is in locked, should a promotion have moved it meanwhile); read once per transaction
    /// unless the transaction changed it since.
    pub async fn entries_of(&mut self, booking_id: Uuid) -> Result<BookingEntries, SyncError> {
        let entries = self.read_entries(booking_id).await?;
        self.lock(entries.levels()).await?;
        Ok(entries)
    }

    async fn read_entries(&mut self, booking_id: Uuid) -> Result<BookingEntries, SyncError> {
        if let Some(entries) = self.entries.get(&booking_id) {
            return Ok(entries.clone());
        }
        let (held, waiting) = store::ledger::entries_of_booking(&mut self.tx, booking_id).await?;
        let entries = BookingEntries { held, waiting };
        self.remember_entries(booking_id, entries.clone());
        Ok(entries)
    }

    fn remember_entries(&mut self, booking_id: Uuid, entries: BookingEntries) {
        // Read under the booking's lock: only this transaction can queue the booking now.
        if entries.waiting.is_none() {
            self.not_waiting.insert(booking_id);
        } else {
            self.not_waiting.remove(&booking_id);
        }
        self.entries.insert(booking_id, entries);
    }

    /// The version of the booking last acted on.
    pub async fn last_acted_version(&mut self, booking_id: Uuid) -> Result<Option<i64>, SyncError> {
        if let Some(version) = self.outcome_versions.get(&booking_id) {
            return Ok(*version);
        }
        let version = store::bookings::outcome_version(&mut self.tx, booking_id).await?;
        self.outcome_versions.insert(booking_id, version);
        Ok(version)
    }

    /// The booking holding `slot`.
    pub async fn holder_of(&mut self, slot: &SlotKey) -> Result<Option<Held>, SyncError> {
        if let Some(holder) = self.holders.get(slot) {
            return Ok(holder.clone());
        }
        let holder = store::ledger::holder_of(&mut self.tx, slot).await?;
        self.holders.insert(slot.clone(), holder.clone());
        Ok(holder)
    }

    /// The facility booking of `booking_id`'s latest snapshot.
    pub async fn booking_of(
        &mut self,
        booking_id: Uuid,
    ) -> Result<Option<FacilityBooking>, SyncError> {
        let envelope = store::bookings::snapshot(&mut self.tx, booking_id).await?;
        Ok(envelope.and_then(|e| decision::facility_booking(&e.event).cloned()))
    }

    /// The facility bookings of the latest snapshots of `ids` (one statement; a booking without
    /// a facility snapshot is absent).
    pub async fn bookings_of(
        &mut self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, FacilityBooking>, SyncError> {
        let snapshots = store::bookings::snapshots(&mut self.tx, ids).await?;
        Ok(snapshots
            .into_iter()
            .filter_map(|(id, e)| {
                decision::facility_booking(&e.event)
                    .cloned()
                    .map(|b| (id, b))
            })
            .collect())
    }

    /// Salto's group, read once per transaction (under the lock, so it stays current), without
    /// the entries left by transactions that did not commit: those are the ledger's to replace or
    /// remove (their zones count as released here), not permissions made by hand.
    pub async fn salto_group(&mut self, level: &AccessLevelKey) -> Result<Group, SyncError> {
        let mut groups = self.salto_groups(std::slice::from_ref(level)).await?;
        Ok(groups.swap_remove(0))
    }

    /// [`Self::salto_group`] of each of `levels`, in their order (the ones not read yet read one
    /// after the other).
    pub async fn salto_groups(
        &mut self,
        levels: &[AccessLevelKey],
    ) -> Result<Vec<Group>, SyncError> {
        let groups = self.groups_as_read(levels).await?;
        Ok(levels
            .iter()
            .zip(groups)
            .map(|(level, group)| {
                let orphans = self
                    .orphans
                    .get(level)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                Group {
                    permissions: group
                        .permissions
                        .into_iter()
                        .filter(|p| !orphans.contains(p))
                        .collect(),
                    ..group
                }
            })
            .collect())
    }

    /// Salto's groups of the access levels `levels` (in their order), each read once per
    /// transaction. The ones not read yet are read as many at a time as
    /// [`Self::allow_calls_at_once`] allows (one, but for a batch; the cleaner bounds how many
    /// transactions work with a server at once), with the entries transactions that did not
    /// commit left there (one statement).
    async fn groups_as_read(&mut self, levels: &[AccessLevelKey]) -> Result<Vec<Group>, SyncError> {
        let unread: BTreeSet<AccessLevelKey> = levels
            .iter()
            .filter(|l| !self.groups.contains_key(*l))
            .cloned()
            .collect();
        if !unread.is_empty() {
            let unread: Vec<AccessLevelKey> = unread.into_iter().collect();
            let mut unrecorded = store::unrecorded::of_levels(&mut self.tx, &unread).await?;
            let mut calls = Vec::with_capacity(unread.len());
            for level in &unread {
                calls.push((self.ship(&level.server).await?, level.access_level.clone()));
            }
            // Owned, not borrowed: the futures of a stream must not borrow what its closure is
            // given, or the service's future is no longer `Send`.
            let read: Vec<Result<Group, ShipError>> = stream::iter(calls)
                .map(|(ship, access_level)| async move { ship.read_group(&access_level).await })
                .buffered(self.calls_at_once)
                .collect()
                .await;
            for (level, group) in unread.iter().zip(read) {
                let noted = unrecorded.remove(level).unwrap_or_default();
                self.remember_group(level, group?, &noted);
            }
        }
        Ok(levels
            .iter()
            .filter_map(|level| self.groups.get(level).cloned())
            .collect())
    }

    /// Remembers an access level's group as read from Salto, with the entries among
    /// `unrecorded` it shows as orphans (their zones count as released here).
    fn remember_group(
        &mut self,
        level: &AccessLevelKey,
        group: Group,
        unrecorded: &[ZonePermission],
    ) {
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
                "Salto shows an entry of an earlier transaction that did not commit; replacing it"
            );
            self.mark_released(&SlotKey {
                level: level.clone(),
                zone: orphan.zone.clone(),
            });
        }
        self.orphans.insert(level.clone(), orphans);
        self.groups.insert(level.clone(), group);
    }

    /// Salto must be brought to the ledger's state for this access level at the end of the
    /// transaction.
    pub fn touch(&mut self, level: &AccessLevelKey) {
        self.touched.insert(level.clone());
    }

    /// Publishes `envelope` with the transaction's results, before it commits.
    pub fn emit(&mut self, envelope: Envelope) {
        self.events.push((envelope, platform::trace::current()));
    }

    /// Removes a holder from its slot (the permission goes from Salto at the end of the
    /// transaction) and grants the slot to its first waiter whose wait is still current.
    pub async fn leave(&mut self, held: &Held, today: NaiveDate) -> Result<Promotion, SyncError> {
        store::ledger::delete_held(&mut self.tx, held.booking_id).await?;
        self.entries.remove(&held.booking_id);
        self.holders.insert(held.slot.clone(), None);
        self.mark_released(&held.slot);
        self.promote_waiters(&held.slot, today).await
    }

    /// Notes that the ledger gave up this slot in this transaction: Salto's entry for it is ours
    /// to remove.
    fn mark_released(&mut self, slot: &SlotKey) {
        self.released
            .entry(slot.level.clone())
            .or_default()
            .insert(slot.zone.clone());
        self.touch(&slot.level);
    }

    /// The zones of `level` the ledger gave up in this transaction (their entries in Salto are
    /// its own to remove).
    pub fn released_zones(&self, level: &AccessLevelKey) -> BTreeSet<String> {
        self.released.get(level).cloned().unwrap_or_default()
    }

    /// Whether the ledger gave `slot` up in this transaction.
    pub fn released_here(&self, slot: &SlotKey) -> bool {
        self.released
            .get(&slot.level)
            .is_some_and(|zones| zones.contains(&slot.zone))
    }

    /// The ID of `server`'s pool timetable for these hours (made in Salto when new).
    pub async fn timetable(
        &mut self,
        server: &str,
        starts: DaySeconds,
        ends: DaySeconds,
    ) -> Result<u32, SyncError> {
        let key = (server.to_owned(), starts, ends);
        if let Some(id) = self.timetables.get(&key) {
            return Ok(*id);
        }
        let ship = self.ship(server).await?;
        let id =
            timetables::timetable_for(&mut self.tx, &self.journal, &ship, server, starts, ends)
                .await?;
        self.timetables.insert(key, id);
        Ok(id)
    }

    /// Makes `booking_id` (of `building`) the holder of `slot` for `window` (the server's pool
    /// supplies the timetable); it waits no more.
    pub async fn hold(
        &mut self,
        slot: &SlotKey,
        building: &str,
        booking_id: Uuid,
        version: i64,
        window: LocalWindow,
    ) -> Result<Held, SyncError> {
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
        store::ledger::insert_held(&mut self.tx, &held).await?;
        if !self.not_waiting.contains(&booking_id) {
            store::ledger::delete_waiting(&mut self.tx, booking_id).await?;
        }
        self.entries.remove(&booking_id);
        self.holders.insert(slot.clone(), Some(held.clone()));
        self.touch(&slot.level);
        Ok(held)
    }

    /// Puts a booking in the queue of a slot (keeping its place if it is there already).
    pub async fn queue(&mut self, waiting: &Waiting) -> Result<(), SyncError> {
        self.not_waiting.remove(&waiting.booking_id);
        self.entries.remove(&waiting.booking_id);
        Ok(store::ledger::upsert_waiting(&mut self.tx, waiting).await?)
    }

    /// Takes a booking out of the queue it waits in, if any.
    pub async fn stop_waiting(&mut self, booking_id: Uuid) -> Result<(), SyncError> {
        self.entries.remove(&booking_id);
        Ok(store::ledger::delete_waiting(&mut self.tx, booking_id).await?)
    }

    /// The bookings waiting for a slot, first come first.
    pub async fn waiters_for(&mut self, slot: &SlotKey) -> Result<Vec<Waiting>, SyncError> {
        Ok(store::ledger::waiters_for(&mut self.tx, slot).await?)
    }

    /// Grants a free slot to the first booking waiting for it whose wait is still current
    /// ([`decision::judge_waiter`]). Waits that have ended are expired on the way.
    pub async fn promote_waiters(
        &mut self,
        slot: &SlotKey,
        today: NaiveDate,
    ) -> Result<Promotion, SyncError> {
        if self.holder_of(slot).await?.is_some() {
            return Ok(Promotion::Nobody);
        }
        let waiters = self.waiters_for(slot).await?;
        if waiters.is_empty() {
            return Ok(Promotion::Nobody);
        }
        if !self.released_here(slot) {
            // The ledger did not just free this zone, so an entry Salto shows for it is not ours.
            let group = self.salto_group(&slot.level).await?;
            if let Some(existing) = decision::salto_entry(&group.permissions, &slot.zone) {
                return Ok(Promotion::Blocked(existing.clone()));
            }
        }
        for waiter in waiters {
            let latest = store::bookings::snapshot(&mut self.tx, waiter.booking_id).await?;
            match decision::judge_waiter(&waiter, latest.as_ref(), today) {
                WaiterVerdict::Drop => self.stop_waiting(waiter.booking_id).await?,
                WaiterVerdict::PassOver => {}
                WaiterVerdict::Expire(booking) => {
                    self.stop_waiting(waiter.booking_id).await?;
                    self.record_outcome(
                        waiter.booking_id,
                        waiter.version,
                        Outcome::Expired,
                        booking,
                    )
                    .await?;
                }
                WaiterVerdict::Promote(booking) => {
                    self.hold(
                        slot,
                        &waiter.building,
                        waiter.booking_id,
                        waiter.version,
                        waiter.window,
                    )
                    .await?;
                    self.record_outcome(
                        waiter.booking_id,
                        waiter.version,
                        Outcome::Granted,
                        booking,
                    )
                    .await?;
                    return Ok(Promotion::Granted(waiter.booking_id));
                }
            }
        }
        Ok(Promotion::Nobody)
    }

    /// Records a booking's outcome and emits its result event (no `held_by`, no failure).
    pub async fn record_outcome(
        &mut self,
        booking_id: Uuid,
        version: i64,
        outcome: Outcome,
        booking: FacilityBooking,
    ) -> Result<(), SyncError> {
        self.record_outcome_with(booking_id, version, outcome, booking, None, None)
            .await
    }

    /// Records the outcomes of several bookings (one statement) and emits their result events
    /// (no `held_by`, no failure).
    pub async fn record_outcomes(
        &mut self,
        mut outcomes: Vec<(Uuid, i64, Outcome, FacilityBooking)>,
    ) -> Result<(), SyncError> {
        // One statement may change a booking's row once: its newest version only.
        outcomes.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        outcomes.dedup_by_key(|o| o.0);
        for (booking_id, version, outcome, _) in &outcomes {
            self.acted_on(*booking_id, *version, *outcome);
        }
        for (booking_id, version, outcome, booking) in outcomes {
            self.emit(result_event(
                outcome, booking_id, version, booking, None, None,
            ));
        }
        Ok(())
    }

    /// Records a booking's outcome and emits its result event, naming the booking that holds the
    /// slot (`deferred`) or why access failed.
    pub async fn record_outcome_with(
        &mut self,
        booking_id: Uuid,
        version: i64,
        outcome: Outcome,
        booking: FacilityBooking,
        held_by: Option<Holder>,
        failure: Option<AccessFailure>,
    ) -> Result<(), SyncError> {
        self.acted_on(booking_id, version, outcome);
        self.emit(result_event(
            outcome, booking_id, version, booking, held_by, failure,
        ));
        Ok(())
    }

    /// Notes a booking's outcome, to be written with the others at the end (one statement), and
    /// keeps [`Self::last_acted_version`] current. A booking's record never goes back; of two
    /// outcomes of one version (deferred, then granted by a promotion), the later stands.
    fn acted_on(&mut self, booking_id: Uuid, version: i64, outcome: Outcome) {
        let known = self.outcome_versions.entry(booking_id).or_default();
        if known.is_some_and(|v| v > version) {
            return;
        }
        *known = Some(version);
        self.outcomes.insert(booking_id, (version, outcome));
    }

    /// Every permission the ledger holds in an access level.
    pub async fn held_in_level(&mut self, level: &AccessLevelKey) -> Result<Vec<Held>, SyncError> {
        self.held_in_levels(std::slice::from_ref(level)).await
    }

    /// Every permission the ledger holds in the access levels `levels` (one statement).
    pub async fn held_in_levels(
        &mut self,
        levels: &[AccessLevelKey],
    ) -> Result<Vec<Held>, SyncError> {
        Ok(store::ledger::held_in_levels(&mut self.tx, levels).await?)
    }

    /// Slots of the access levels `levels` that have waiters but no holder.
    pub async fn free_slots_with_waiters(
        &mut self,
        levels: &[AccessLevelKey],
    ) -> Result<Vec<SlotKey>, SyncError> {
        Ok(store::ledger::free_slots_with_waiters(&mut self.tx, levels).await?)
    }

    /// Removes `building`'s permissions of the access levels `levels` that ended before `today`
    /// (their entries go from Salto at the end of the transaction) and returns them.
    pub async fn take_ended_permissions(
        &mut self,
        levels: &[AccessLevelKey],
        building: &str,
        today: NaiveDate,
    ) -> Result<Vec<Held>, SyncError> {
        let ended =
            store::ledger::take_ended_permissions(&mut self.tx, levels, building, today).await?;
        self.entries.clear();
        self.holders.clear();
        for held in &ended {
            self.mark_released(&held.slot);
        }
        Ok(ended)
    }

    /// Removes `building`'s waits of the access levels `levels` that ended before `today` and
    /// returns them.
    pub async fn take_ended_waits(
        &mut self,
        levels: &[AccessLevelKey],
        building: &str,
        today: NaiveDate,
    ) -> Result<Vec<Waiting>, SyncError> {
        self.entries.clear();
        Ok(store::ledger::take_ended_waits(&mut self.tx, levels, building, today).await?)
    }

    /// Makes Salto match the ledger for every touched access level, publishes the results, and
    /// commits. Returns the events published.
    pub async fn finish(mut self) -> Result<Vec<Envelope>, SyncError> {
        // An access level with entries of failed transactions is brought to the ledger's state
        // even if nothing else changed in it (a cancellation whose grant never committed, say).
        let untouched: Vec<AccessLevelKey> = self
            .locked
            .iter()
            .filter(|l| !self.touched.contains(*l))
            .cloned()
            .collect();
        if !untouched.is_empty() {
            let unrecorded = store::unrecorded::of_levels(&mut self.tx, &untouched).await?;
            for level in unrecorded.keys() {
                self.touch(level);
            }
        }
        let outcomes: Vec<(Uuid, i64, &str)> = self
            .outcomes
            .iter()
            .map(|(id, (version, outcome))| (*id, *version, outcome.as_str()))
            .collect();
        store::bookings::record_outcomes(&mut self.tx, &outcomes).await?;
        let touched: Vec<AccessLevelKey> = self.touched.iter().cloned().collect();
        if !touched.is_empty() {
            self.converge(&touched).await?;
        }
        if !self.events.is_empty() {
            let traced: Vec<(&Envelope, Option<TraceId>)> =
                self.events.iter().map(|(e, trace)| (e, *trace)).collect();
            self.publisher.publish_traced_events(&traced).await?;
        }
        self.tx.commit().await?;
        // A permission written, moved or removed may have been the last one of its timetable.
        let servers: BTreeSet<String> = self.touched.iter().map(|l| l.server.clone()).collect();
        for server in servers {
            self.sweeper.request(&server);
        }
        Ok(self.events.into_iter().map(|(e, _)| e).collect())
    }

    /// Writes each of `levels` whose list in Salto differs from the ledger's: the ledger read
    /// for all of them in one statement, the notes of what is about to be written committed in
    /// one, then one call per access level that changes.
    async fn converge(&mut self, levels: &[AccessLevelKey]) -> Result<(), SyncError> {
        let groups = self.groups_as_read(levels).await?;
        let mut desired: BTreeMap<AccessLevelKey, Vec<ZonePermission>> =
            levels.iter().map(|l| (l.clone(), Vec::new())).collect();
        for held in self.held_in_levels(levels).await? {
            if let Some(list) = desired.get_mut(&held.slot.level) {
                list.push(held.permission());
            }
        }
        let mut writes: Vec<(AccessLevelKey, Group)> = Vec::new();
        let mut notes: Vec<(&AccessLevelKey, Vec<ZonePermission>)> = Vec::new();
        for (level, group) in levels.iter().zip(groups) {
            let wanted = desired.get(level).map(Vec::as_slice).unwrap_or_default();
            let released = self.released.get(level).cloned().unwrap_or_default();
            if let Some(permissions) = converge_list(&group.permissions, wanted, &released) {
                notes.push((
                    level,
                    decision::entries_new_to_salto(wanted, &group.permissions),
                ));
                writes.push((
                    level.clone(),
                    Group {
                        permissions,
                        ..group
                    },
                ));
            }
        }
        let notes: Vec<(&AccessLevelKey, &[ZonePermission])> = notes
            .iter()
            .map(|(level, entries)| (*level, entries.as_slice()))
            .collect();
        store::unrecorded::note(&self.journal, &notes).await?;
        let mut calls = Vec::with_capacity(writes.len());
        for (level, updated) in &writes {
            calls.push((self.ship(&level.server).await?, updated.clone()));
        }
        let written: Vec<Result<(), ShipError>> = stream::iter(calls)
            .map(|(ship, updated)| async move { ship.update_group(&updated).await })
            .buffered(self.calls_at_once)
            .collect()
            .await;
        for ((level, updated), write) in writes.into_iter().zip(written) {
            write?;
            self.groups.insert(level, updated);
        }
        store::unrecorded::forget(&mut self.tx, levels).await?;
        Ok(())
    }
}
