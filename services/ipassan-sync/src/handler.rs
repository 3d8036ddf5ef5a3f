//! One `visitor_booking.*` message = one step (docs/architecture.md, "The version rule" and "Visitor bookings and iPassan"): record the snapshot under the
//! version rule, then — holding the booking's lock — act on the *stored latest* snapshot, never
//! on the message in hand: ensure or revoke the iPassan visitor, publish the result event, and
//! record what was done so a duplicate changes nothing and publishes nothing twice.
//!
//! The result is published before it is recorded: a crash in between redoes the (idempotent)
//! iPassan calls and publishes again under the same deterministic event id, which consumers
//! deduplicate; the other order could lose the result.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use contracts::{Envelope, Event, VisitorAccessResult, VisitorBooking};
use platform::amqp::{EventHandler, HandlerError, Publisher};
use platform::batch::{BatchSettings, Batches};
use platform::snapshots;
use platform::trace::TraceId;

use crate::batch::Visit;
use crate::decision::{
    self, Achieved, Applied, BuildingIpassan, GrantVisit, LastPublished, NextAction, ResultKind,
    failures,
};
use crate::store::{self, StoreError};
use crate::tenants::{DEFAULT_TENANT, Tenant, TenantClient, TenantError, Tenants};
use ipassan_client::{ErrorKind, IpassanClient, IpassanError, NewVisitor};

/// Namespace of the result events' ids: one id per (booking, version, result type).
const RESULT_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x3c1f_8a52_7d4e_4b0a_9f61_2e8d_5b7c_9a10);

/// The worker's handler: a visitor booking's step runs in a batch of its tenant's bookings
/// ([`crate::batch`]), or alone when batching is off (`CONNECX__BATCH__MAX_MESSAGES=1`) or its
/// batch could not answer for it.
pub struct BookingEvents {
    steps: Arc<Steps>,
    batches: Option<Batches<String, Steps>>,
}

/// What a step needs, shared by the batches and the steps handled alone.
pub struct Steps {
    pub(crate) pool: PgPool,
    pub(crate) tenants: Arc<Tenants>,
    publisher: Publisher,
    /// The tenant key each building was last seen under: a booking's batch group. Read before
    /// the booking's state is, so it may be out of date; that only puts the booking in another
    /// group's batch, where its step still uses the tenant its state names. One short entry
    /// per building.
    groups: Mutex<HashMap<String, String>>,
}

impl BookingEvents {
    pub fn new(
        pool: PgPool,
        tenants: Arc<Tenants>,
        publisher: Publisher,
        batch: BatchSettings,
    ) -> Self {
        let steps = Arc::new(Steps {
            pool,
            tenants,
            publisher,
            groups: Mutex::new(HashMap::new()),
        });
        let batches = batch.batching().then(|| {
            Batches::new(
                contracts::IPASSAN_SYNC_QUEUE.name,
                Arc::clone(&steps),
                batch.max_messages,
                batch.max_running,
            )
        });
        Self { steps, batches }
    }
}

impl EventHandler for BookingEvents {
    /// A booking given up still gets an outcome: `failed` (`gave_up`), so it does not stay
    /// `pending` for ever; the dead letter's alert carries the details.
    async fn gave_up(&self, envelope: &Envelope, error: &str) {
        let Some(booking) = visitor_booking(&envelope.event) else {
            return;
        };
        if !booking.provide_access {
            return;
        }
        let failed = result_event(
            envelope,
            booking,
            ResultKind::Failed,
            &Achieved::Failed(failures::gave_up()),
        );
        self.steps.publisher.publish_given_up(&failed, error).await;
    }

    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        if let Event::IpassanConnectionChanged(change) = &envelope.event {
            return self.steps.record_connection(&envelope, change).await;
        }
        let Some(booking) = visitor_booking(&envelope.event) else {
            return Err(HandlerError::Permanent(format!(
                "{} is not a visitor booking event; ipassan-sync handles visitor_booking.* only",
                envelope.routing_key()
            )));
        };
        let trace = platform::trace::current();
        if let Some(batches) = &self.batches {
            let group = self.steps.group_of(&booking.building.id);
            let visit = Visit {
                envelope: envelope.clone(),
                trace,
            };
            if let Some(Some(outcome)) = batches.submit(group, visit).await {
                return outcome;
            }
        }
        self.steps.handle_alone(envelope, trace).await
    }
}

impl Steps {
    /// One message's step on its own: its snapshot recorded (and committed), then its
    /// booking's transaction, on one connection from the pool.
    async fn handle_alone(
        &self,
        envelope: Envelope,
        trace: Option<TraceId>,
    ) -> Result<(), HandlerError> {
        let database = |e| HandlerError::Transient(format!("database: {e}"));
        let mut conn = self.pool.acquire().await.map_err(database)?;
        let recorded = snapshots::record(&mut *conn, &envelope)
            .await
            .map_err(database)?;
        if !recorded.to_act_on(&envelope) {
            return Ok(());
        }
        self.converge(&mut conn, envelope.booking_id, trace).await
    }

    /// The batch group of a booking of `building_id`: its tenant as last seen.
    fn group_of(&self, building_id: &str) -> String {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups
            .get(building_id)
            .cloned()
            .unwrap_or_else(|| DEFAULT_TENANT.to_owned())
    }

    /// Remembers the tenant `building_id` is under now, for [`Self::group_of`].
    fn learn_group(&self, building_id: &str, connection: Option<&store::HeldConnection>) {
        let tenant = connection
            .and_then(|c| c.tenant.as_ref())
            .map_or(DEFAULT_TENANT, |(tenant, _)| tenant.as_str());
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if groups.get(building_id).map(String::as_str) != Some(tenant) {
            groups.insert(building_id.to_owned(), tenant.to_owned());
        }
    }

    /// Stores a building's new iPassan connection (the version rule keeps the newest). Bookings
    /// made under it wait for it; visitors already made stay where they are.
    async fn record_connection(
        &self,
        envelope: &Envelope,
        change: &contracts::IpassanConnectionChange,
    ) -> Result<(), HandlerError> {
        let mut conn = self.pool.acquire().await.map_err(|e| transient(e.into()))?;
        let changed =
            store::record_connection(&mut conn, envelope.version, envelope.occurred_at, change)
                .await
                .map_err(transient)?;
        tracing::info!(
            building_id = %change.building_id, version = envelope.version, changed,
            tenant = change.connection.as_ref().map_or(crate::tenants::DEFAULT_TENANT.to_owned(), crate::tenants::tenant_key),
            "building's iPassan connection recorded"
        );
        Ok(())
    }

    /// The client of `tenant`, its stored credentials read on `conn`.
    pub(crate) async fn client_for(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
    ) -> Result<TenantClient, HandlerError> {
        let stored = match tenant {
            Tenant::Default => None,
            Tenant::Own(key) => store::tenant(&mut *conn, key).await.map_err(transient)?,
        };
        self.tenants
            .client(tenant, stored.as_ref())
            .map_err(|error| match error {
                // Ops can fix a key and restart; the message waits meanwhile.
                TenantError::Secret { .. } => HandlerError::Transient(error.to_string()),
                TenantError::NoDefault
                | TenantError::Unknown(_)
                | TenantError::Unreadable { .. }
                | TenantError::Client { .. } => HandlerError::Permanent(error.to_string()),
            })
    }

    /// Brings iPassan and the published results in line with the stored latest snapshot.
    async fn converge(
        &self,
        conn: &mut PgConnection,
        booking_id: Uuid,
        trace: Option<TraceId>,
    ) -> Result<(), HandlerError> {
        let mut tx = store::lock_bookings(conn, &[booking_id])
            .await
            .map_err(transient)?;
        let held = store::held_states(&mut tx, &[booking_id])
            .await
            .map_err(transient)?
            .remove(&booking_id);
        let Some(plan) = self.plan(booking_id, held)? else {
            return Ok(());
        };
        let client = match plan.tenant() {
            Some(tenant) => Some(self.client_for(&mut tx, tenant).await?),
            None => None,
        };
        let done = self.act(plan, client.as_ref()).await?;
        let written = store::save_applied(&mut tx, &[done.row()])
            .await
            .map_err(transient)?;
        if !done.announce(&written) {
            return Ok(());
        }
        if let Some(result) = done.result_event() {
            self.publish(&[(&result, trace)]).await?;
        }
        tx.commit()
            .await
            .map_err(|e| transient(StoreError::from(e)))?;
        Ok(())
    }

    /// What the locked step does for the snapshot held (`None`: this version was handled
    /// already). Decided before any call to iPassan.
    pub(crate) fn plan(
        &self,
        booking_id: Uuid,
        held: Option<Result<store::HeldState, StoreError>>,
    ) -> Result<Option<Plan>, HandlerError> {
        let held = held
            .ok_or_else(|| {
                HandlerError::Transient(format!("no snapshot held for booking {booking_id}"))
            })?
            .map_err(transient)?;
        let (latest, applied) = (held.latest, held.applied);
        let booking = visitor_booking(&latest.event)
            .ok_or_else(|| {
                HandlerError::Permanent(format!(
                    "the snapshot held for booking {booking_id} is a {}",
                    latest.routing_key()
                ))
            })?
            .clone();
        self.learn_group(&booking.building.id, held.connection.as_ref());
        // The snapshot names the version of the building's connection it was made under; an older
        // one must not be used for it. The change is on its way through this same queue.
        let wanted = booking.building.connection_versions.ipassan;
        let known = held.connection.as_ref().map_or(0, |c| c.version);
        if wanted > known {
            return Err(HandlerError::Transient(format!(
                "booking {booking_id} was made under version {wanted} of building {}'s iPassan \
                 connection; this worker has version {known} so far",
                booking.building.id
            )));
        }
        let building = match held.connection.and_then(|c| c.tenant) {
            Some((tenant, site)) => BuildingIpassan::Own { tenant, site },
            None if self.tenants.has_default() => BuildingIpassan::Default,
            None => BuildingIpassan::NotConnected,
        };
        let action = decision::next_action(&booking, latest.version, applied.as_ref(), &building);
        if action == NextAction::AlreadyApplied {
            tracing::info!(%booking_id, version = latest.version, "already applied; nothing to do");
            return Ok(None);
        }
        Ok(Some(Plan {
            booking_id,
            latest,
            booking,
            applied,
            action,
        }))
    }

    /// Does what `plan` says in iPassan, with `client` (of [`Plan::tenant`]), and works out what
    /// is to be recorded and published. The booking's lock is held meanwhile.
    pub(crate) async fn act(
        &self,
        plan: Plan,
        client: Option<&TenantClient>,
    ) -> Result<Done, HandlerError> {
        let Plan {
            booking_id,
            latest,
            booking,
            applied,
            action,
        } = plan;
        let last = applied
            .as_ref()
            .map_or(LastPublished::Nothing, |a| a.published.clone());
        let mut site = applied.as_ref().and_then(|a| a.site.clone());
        let mut tenant = applied
            .as_ref()
            .map_or(Tenant::Default, |a| a.tenant.clone());
        let mut visitor_id = applied.as_ref().and_then(|a| a.visitor_id.clone());
        let no_client = || {
            HandlerError::Permanent(format!(
                "booking {booking_id}: no iPassan client was set up for its step"
            ))
        };
        let achieved = match action {
            // Left out by `plan`.
            NextAction::AlreadyApplied | NextAction::NothingToDo => None,
            NextAction::Fail(failure) => Some(Achieved::Failed(failure)),
            NextAction::Grant(grant) => {
                let client = client.ok_or_else(no_client)?;
                let admitted = admit(client, &booking).await?;
                let (achieved, made) = self
                    .grant(
                        &client.client,
                        booking_id,
                        &booking,
                        &grant,
                        visitor_id.is_some(),
                    )
                    .await
                    .map_err(|e| admitted.judge(e))?;
                site = Some(grant.site);
                tenant = grant.tenant;
                visitor_id = made.or(visitor_id);
                Some(achieved)
            }
            NextAction::Revoke {
                tenant: revoke_in,
                site: Some(revoke_at),
            } => {
                let client = client.ok_or_else(no_client)?;
                let admitted = admit(client, &booking).await?;
                visitor_id = self
                    .revoke(&client.client, booking_id, &revoke_at)
                    .await
                    .map_err(|e| admitted.judge(e))?
                    .or(visitor_id);
                site = Some(revoke_at);
                tenant = revoke_in;
                Some(Achieved::Revoked)
            }
            NextAction::Revoke { site: None, .. } => Some(Achieved::Revoked),
        };
        let (published_now, on_record) = match &achieved {
            None => (None, last),
            Some(achieved) => {
                let kind = decision::result_to_publish(&last, achieved);
                (kind, decision::after_publishing(&last, achieved, kind))
            }
        };
        Ok(Done {
            applied: Applied {
                version: latest.version,
                published: on_record,
                site,
                tenant,
                visitor_id,
            },
            booking_id,
            latest,
            booking,
            published_now,
            achieved,
        })
    }

    /// Ensures the visitor exists for exactly the window with a live PIN. Returns what was
    /// achieved and the visitor's id. The visitee missing or without an access profile is an
    /// outcome (`failed`), not an error. `made_before`: a visitor of this booking is on record.
    async fn grant(
        &self,
        ipassan: &IpassanClient,
        booking_id: Uuid,
        booking: &VisitorBooking,
        grant: &GrantVisit,
        made_before: bool,
    ) -> Result<(Achieved, Option<String>), HandlerError> {
        let site = grant.site.as_str();
        let (resident, visitee) = (booking.resident.name.as_str(), grant.visitee_id.as_str());
        let external_ref = booking_id.to_string();
        let fail = |e| handler_error(e, booking_id, site);
        let failed = |failure| -> Result<(Achieved, Option<String>), HandlerError> {
            Ok((Achieved::Failed(failure), None))
        };
        // A refusal for good is the booking's outcome (failed, the manager told), not only a
        // dead letter: the resident must hear that the visitor has no access. An answer that
        // breaks the contract stays an error (a dead letter for ops).
        let refused = |e: IpassanError| -> Result<(Achieved, Option<String>), HandlerError> {
            match e {
                IpassanError::UnreadableAnswer(_) => Err(fail(e)),
                e if e.kind() == ErrorKind::Permanent => {
                    tracing::warn!(%booking_id, site, error = %e, "iPassan refused the grant for good");
                    failed(failures::ipassan_refused(site, &e.to_string()))
                }
                e => Err(fail(e)),
            }
        };
        // A visitor made before is looked up (a reschedule moves its window). For a booking with
        // none on record the create is the lookup: iPassan answers a create with an externalRef
        // it knows with the visitor already made (contract), so a retry after a crash finds the
        // one it made — and every new booking costs one call less.
        let existing = if made_before {
            match ipassan.visitor_by_external_ref(site, &external_ref).await {
                Ok(found) => found,
                Err(e) => return refused(e),
            }
        } else {
            None
        };
        let visitor = match existing {
            Some(visitor) => visitor,
            None => {
                let new = NewVisitor {
                    visitee_id: &grant.visitee_id,
                    name: &grant.name,
                    email: &grant.email,
                    window: grant.window,
                    external_ref: &external_ref,
                };
                match ipassan.create_visitor(site, &new).await {
                    Ok(visitor) => visitor,
                    Err(IpassanError::NotFound { message, .. }) => {
                        tracing::warn!(%booking_id, site, %message, "visitee unknown to iPassan");
                        return failed(failures::visitee_not_found(resident, visitee, site));
                    }
                    Err(IpassanError::Conflict { message }) => {
                        tracing::warn!(%booking_id, site, %message, "visitee has no access profile");
                        return failed(failures::visitee_has_no_access_profile(
                            resident, visitee, site,
                        ));
                    }
                    Err(e) => return refused(e),
                }
            }
        };
        let visitor = if visitor.window == grant.window {
            visitor
        } else {
            match ipassan.update_window(site, &visitor.id, grant.window).await {
                Ok(moved) => moved,
                // It was there a moment ago: someone removed it meanwhile. Looking again
                // later will make it anew.
                Err(IpassanError::NotFound { message, .. }) => {
                    return Err(HandlerError::Transient(format!(
                        "booking {booking_id}: iPassan visitor {} disappeared while its window \
                         was being moved ({message})",
                        visitor.id
                    )));
                }
                Err(e) => return refused(e),
            }
        };
        let achieved = match visitor.pin {
            Some(pin) => Achieved::Access {
                window: visitor.window,
                pin,
            },
            None => Achieved::Failed(failures::credential_revoked_in_ipassan(&visitor.id, site)),
        };
        Ok((achieved, Some(visitor.id)))
    }

    /// Revokes the PIN of the booking's visitor, if there is one. The visitor record stays.
    async fn revoke(
        &self,
        ipassan: &IpassanClient,
        booking_id: Uuid,
        site: &str,
    ) -> Result<Option<String>, HandlerError> {
        let fail = |e| handler_error(e, booking_id, site);
        let Some(visitor) = ipassan
            .visitor_by_external_ref(site, &booking_id.to_string())
            .await
            .map_err(fail)?
        else {
            return Ok(None);
        };
        if visitor.pin.is_some() {
            match ipassan.revoke_credential(site, &visitor.id).await {
                // Gone already: nothing left to open a door with.
                Ok(()) | Err(IpassanError::NotFound { .. }) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(Some(visitor.id))
    }

    /// Publishes results, each with the trace of its message: all sent, then one wait for
    /// their confirms.
    pub(crate) async fn publish(
        &self,
        results: &[(&Envelope, Option<TraceId>)],
    ) -> Result<(), HandlerError> {
        self.publisher
            .publish_traced_events(results)
            .await
            .map_err(|e| HandlerError::Transient(format!("publishing results: {e}")))
    }
}

/// What the locked step decided before talking to iPassan.
pub(crate) struct Plan {
    booking_id: Uuid,
    latest: Envelope,
    booking: VisitorBooking,
    applied: Option<Applied>,
    action: NextAction,
}

impl Plan {
    /// The tenant whose client the step needs, if it calls iPassan.
    pub(crate) fn tenant(&self) -> Option<&Tenant> {
        match &self.action {
            NextAction::Grant(grant) => Some(&grant.tenant),
            NextAction::Revoke {
                tenant,
                site: Some(_),
            } => Some(tenant),
            _ => None,
        }
    }
}

/// What a step did in iPassan: to record, and maybe to announce.
pub(crate) struct Done {
    pub(crate) booking_id: Uuid,
    latest: Envelope,
    booking: VisitorBooking,
    applied: Applied,
    published_now: Option<ResultKind>,
    achieved: Option<Achieved>,
}

impl Done {
    /// Its row for [`store::save_applied`].
    pub(crate) fn row(&self) -> store::AppliedRow<'_> {
        store::AppliedRow {
            booking_id: self.booking_id,
            applied: &self.applied,
            published_now: self.published_now.map(ResultKind::as_str),
        }
    }

    /// Whether the step's outcome stands, given the bookings [`store::save_applied`] wrote: a
    /// newer version recorded while iPassan was being called is acted on by its own message,
    /// which waits for this lock, and announcing this older outcome now would only tell people
    /// something already out of date (nothing was written for it). Logged either way.
    pub(crate) fn announce(&self, written: &HashSet<Uuid>) -> bool {
        let (booking_id, version) = (self.booking_id, self.latest.version);
        if !written.contains(&booking_id) {
            tracing::info!(%booking_id, version, "superseded while working; the newer version decides");
            return false;
        }
        tracing::info!(
            %booking_id, version,
            published = self.published_now.map_or("nothing", ResultKind::as_str),
            "converged"
        );
        true
    }

    /// The result event to publish, if the step publishes one.
    pub(crate) fn result_event(&self) -> Option<Envelope> {
        let (kind, achieved) = self.published_now.zip(self.achieved.as_ref())?;
        Some(result_event(&self.latest, &self.booking, kind, achieved))
    }
}

/// The result event for `achieved`, with a deterministic id so a republish after a crash is
/// recognisably the same event.
pub fn result_event(
    latest: &Envelope,
    booking: &VisitorBooking,
    kind: ResultKind,
    achieved: &Achieved,
) -> Envelope {
    let result = VisitorAccessResult {
        booking: booking.clone(),
        pin: match achieved {
            Achieved::Access { pin, .. } => Some(pin.clone()),
            Achieved::Revoked | Achieved::Failed(_) => None,
        },
        failure: match achieved {
            Achieved::Failed(failure) => Some(failure.clone()),
            Achieved::Access { .. } | Achieved::Revoked => None,
        },
    };
    let event = match kind {
        ResultKind::Granted => Event::VisitorAccessGranted(result),
        ResultKind::Updated => Event::VisitorAccessUpdated(result),
        ResultKind::Revoked => Event::VisitorAccessRevoked(result),
        ResultKind::Failed => Event::VisitorAccessFailed(result),
    };
    let name = format!(
        "ipassan-sync/{}/{}/{}",
        latest.booking_id,
        latest.version,
        kind.as_str()
    );
    Envelope {
        event_id: Uuid::new_v5(&RESULT_EVENT_NAMESPACE, name.as_bytes()),
        occurred_at: Utc::now(),
        booking_id: latest.booking_id,
        version: latest.version,
        event,
    }
}

fn visitor_booking(event: &Event) -> Option<&VisitorBooking> {
    match event {
        Event::VisitorBookingCreated(b)
        | Event::VisitorBookingRescheduled(b)
        | Event::VisitorBookingCancelled(b) => Some(b),
        _ => None,
    }
}

/// Leave to work with the tenant: refused while its breaker is open or its slots stay taken,
/// and the message waits in the tiers without using up its retries.
async fn admit(
    client: &TenantClient,
    booking: &VisitorBooking,
) -> Result<platform::bulkhead::Admission, HandlerError> {
    client
        .bulkhead
        .admit(Some(&booking.building))
        .await
        .map_err(|refusal| HandlerError::Unavailable(refusal.to_string()))
}

/// A store failure: the database's is worth retrying, an unreadable snapshot is not (a dead
/// letter, and its alert, name the booking).
pub(crate) fn transient(error: StoreError) -> HandlerError {
    match error {
        StoreError::Database(_) => HandlerError::Transient(error.to_string()),
        StoreError::Snapshot { .. } => HandlerError::Permanent(error.to_string()),
    }
}

/// An iPassan failure as the worker runtime needs it, naming the booking and the site.
fn handler_error(error: IpassanError, booking_id: Uuid, site: &str) -> HandlerError {
    let text = format!("booking {booking_id} at iPassan site {site}: {error}");
    match error.kind() {
        ErrorKind::Transient => HandlerError::Transient(text),
        ErrorKind::Permanent => HandlerError::Permanent(text),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_ipassan_failure_keeps_its_kind_and_names_the_booking() {
        let booking = Uuid::nil();
        let denied = IpassanError::AccessDenied {
            site: "site-9".into(),
            message: "no".into(),
        };
        let HandlerError::Permanent(text) = handler_error(denied, booking, "site-9") else {
            panic!("403 is permanent")
        };
        assert!(
            text.contains(&booking.to_string()) && text.contains("403"),
            "{text}"
        );
        assert!(matches!(
            handler_error(
                IpassanError::Server {
                    status: 503,
                    message: "down".into()
                },
                booking,
                "s"
            ),
            HandlerError::Transient(_)
        ));
    }
}
