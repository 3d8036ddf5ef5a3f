//! The final audit, once the system is at rest: what booking-api says about every booking, held
//! against what the client was told, against the rule each booking must end by, and against what
//! the simulators actually hold; every message that reached a queue accounted for (handled or
//! dead-lettered); every dead letter stored and mailed.
//!
//! The end state each booking must reach:
//! - visitor booking without access → `not_requested`, and no iPassan visitor;
//! - visitor booking with access, live → `granted` with the PIN iPassan holds for exactly its
//!   window (or `failed` / `visitee_has_no_access_profile` for a resident without a profile, and
//!   then no visitor); cancelled → `revoked`, and no live PIN;
//! - facility bookings, per (apartment, facility) slot: of the live ones exactly one `granted`,
//!   the others `deferred` (policy `auto`), and Salto holding exactly the granted one's
//!   permission (its date as Period, its hours as Timetable); cancelled → `revoked`, and Salto
//!   holds nothing for a slot without live bookings.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use uuid::Uuid;

use super::evidence::Evidence;
use super::report::{Audit, QueueFate};
use super::tap::{AuditTap, routes_to};
use super::workload::ClientBooking;
use super::world::{TIMEZONE, World};

/// Everything the audit reads.
pub struct Sources<'a> {
    pub world: &'a World,
    pub client: &'a HashMap<Uuid, ClientBooking>,
    pub booking: &'a PgPool,
    pub notifier: &'a PgPool,
    pub ipassan: &'a ipassan_sim::SimState,
    pub salto: &'a salto_sim::SimState,
    /// The iPassan tenant and Salto server of the building on systems of its own, if any.
    pub own: Option<(&'a ipassan_sim::SimState, &'a salto_sim::SimState)>,
    /// That building (an index of the world's buildings).
    pub own_building: Option<usize>,
    /// When its outages began and ended.
    pub outages: &'a [(DateTime<Utc>, DateTime<Utc>)],
    pub mails: &'a [testkit::mail_sink::ReceivedMail],
    pub tap: &'a AuditTap,
    pub evidence: &'a Evidence,
    pub parked: usize,
}

#[derive(sqlx::FromRow)]
struct VisitorRow {
    id: Uuid,
    building_id: String,
    resident_id: String,
    provide_access: bool,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    state: String,
    version: i64,
    access_status: String,
    access_pin: Option<String>,
    access_reason_code: Option<String>,
}

#[derive(sqlx::FromRow)]
struct FacilityRow {
    id: Uuid,
    zone_id: String,
    access_level_id: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    state: String,
    version: i64,
    access_status: String,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    event_id: Uuid,
    sent_at: Option<DateTime<Utc>>,
    parked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    id: Uuid,
    original_queue: String,
    error_kind: String,
    booking_id: Option<Uuid>,
    message_id: Option<String>,
}

pub async fn audit(sources: &Sources<'_>) -> anyhow::Result<Audit> {
    let mut audit = Audit::default();
    let visitors: Vec<VisitorRow> = sqlx::query_as(
        "SELECT id, building_id, resident_id, provide_access, starts_at, ends_at, state, version,
                access_status, access_pin, access_reason_code
           FROM visitor_bookings",
    )
    .fetch_all(sources.booking)
    .await?;
    let facilities: Vec<FacilityRow> = sqlx::query_as(
        "SELECT id, zone_id, access_level_id, starts_at, ends_at, state, version, access_status
           FROM facility_bookings",
    )
    .fetch_all(sources.booking)
    .await?;
    let dead_letters: Vec<DeadLetterRow> = sqlx::query_as(
        "SELECT id, original_queue, error_kind, booking_id, message_id FROM dead_letters",
    )
    .fetch_all(sources.notifier)
    .await?;

    audit.visitor_bookings = visitors.len();
    audit.facility_bookings = facilities.len();
    let live = visitors.iter().filter(|v| v.state == "booked").count()
        + facilities.iter().filter(|f| f.state == "booked").count();
    audit.live_bookings = live;
    audit.cancelled_bookings = visitors.len() + facilities.len() - live;
    for v in &visitors {
        *audit
            .statuses
            .entry(format!("visitor {} {}", v.state, v.access_status))
            .or_default() += 1;
    }
    for f in &facilities {
        *audit
            .statuses
            .entry(format!("facility {} {}", f.state, f.access_status))
            .or_default() += 1;
    }

    compare_with_client(&mut audit, sources.client, &visitors, &facilities);
    measure_latencies(&mut audit, sources);

    // Bookings a dead letter names: a person was told about them.
    let mut explained: HashSet<Uuid> = dead_letters.iter().filter_map(|d| d.booking_id).collect();
    explained.extend(
        sources
            .tap
            .dead_letters()
            .iter()
            .filter_map(|d| d.booking_id),
    );
    let slot_of: HashMap<Uuid, (String, String)> = facilities
        .iter()
        .map(|f| (f.id, (f.access_level_id.clone(), f.zone_id.clone())))
        .collect();
    let explained_slots: HashSet<(String, String)> = explained
        .iter()
        .filter_map(|id| slot_of.get(id).cloned())
        .collect();
    let is_explained = |id: &Uuid| {
        explained.contains(id) || slot_of.get(id).is_some_and(|s| explained_slots.contains(s))
    };

    audit_visitors(&mut audit, sources, &visitors, &is_explained);
    audit_facilities(&mut audit, sources, &facilities, &is_explained);
    audit_mails(&mut audit, sources, &dead_letters);
    audit_messages(&mut audit, sources, &dead_letters).await?;
    Ok(audit)
}

fn zone() -> Tz {
    TIMEZONE.parse().unwrap_or(chrono_tz::UTC)
}

fn local(at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&zone()).naive_local()
}

fn compare_with_client(
    audit: &mut Audit,
    client: &HashMap<Uuid, ClientBooking>,
    visitors: &[VisitorRow],
    facilities: &[FacilityRow],
) {
    let mut seen = HashSet::new();
    let shown = visitors
        .iter()
        .map(|v| (v.id, v.state.as_str(), v.starts_at, v.ends_at, v.version))
        .chain(
            facilities
                .iter()
                .map(|f| (f.id, f.state.as_str(), f.starts_at, f.ends_at, f.version)),
        );
    for (id, state, starts_at, ends_at, version) in shown {
        seen.insert(id);
        let Some(known) = client.get(&id) else {
            audit.client_mismatches += 1;
            audit.sample(format!(
                "booking {id} exists in booking-api but no client got it"
            ));
            continue;
        };
        let expected_state = if known.cancelled {
            "cancelled"
        } else {
            "booked"
        };
        if state != expected_state
            || starts_at != known.starts_at
            || ends_at != known.ends_at
            || version != known.version
        {
            audit.client_mismatches += 1;
            audit.sample(format!(
                "booking {id}: booking-api shows {state} v{version} {starts_at}–{ends_at}, the \
                 client was told {expected_state} v{} {}–{}",
                known.version, known.starts_at, known.ends_at
            ));
        }
    }
    for id in client.keys().filter(|id| !seen.contains(id)) {
        audit.client_mismatches += 1;
        audit.sample(format!(
            "booking {id} was accepted but booking-api does not have it"
        ));
    }
}

fn audit_visitors(
    audit: &mut Audit,
    sources: &Sources<'_>,
    visitors: &[VisitorRow],
    is_explained: &dyn Fn(&Uuid) -> bool,
) {
    let world = sources.world;
    let has_profile: HashMap<(&str, &str), bool> = world
        .buildings
        .iter()
        .flat_map(|b| {
            b.apartments.iter().map(move |a| {
                (
                    (b.id.as_str(), a.resident.id.as_str()),
                    a.resident.access_profile.is_some(),
                )
            })
        })
        .collect();
    let site_of: HashMap<&str, &str> = world
        .buildings
        .iter()
        .map(|b| (b.id.as_str(), b.ipassan_site.as_str()))
        .collect();
    // (site, external ref) → the visitors iPassan holds for it, in every tenant.
    let mut held: HashMap<(String, String), Vec<ipassan_sim::model::Visitor>> = HashMap::new();
    for tenant in std::iter::once(sources.ipassan).chain(sources.own.map(|(own, _)| own)) {
        let ipassan = tenant.world();
        for (site, state) in &ipassan.sites {
            for visitor in state.visitors.values() {
                held.entry((site.clone(), visitor.external_ref.clone()))
                    .or_default()
                    .push(visitor.clone());
            }
        }
    }
    let mut known_refs = HashSet::new();
    for v in visitors {
        let site = site_of.get(v.building_id.as_str()).copied().unwrap_or("");
        let key = (site.to_owned(), v.id.to_string());
        known_refs.insert(key.clone());
        let in_ipassan = held.get(&key).map(Vec::as_slice).unwrap_or_default();
        if in_ipassan.len() > 1 {
            audit.duplicate_visitors += in_ipassan.len() - 1;
            audit.sample(format!(
                "visitor booking {}: {} iPassan visitors",
                v.id,
                in_ipassan.len()
            ));
        }
        let live_pins: Vec<&ipassan_sim::model::Visitor> = in_ipassan
            .iter()
            .filter(|visitor| visitor.credential.is_some())
            .collect();
        let live = v.state == "booked";
        let profile = has_profile
            .get(&(v.building_id.as_str(), v.resident_id.as_str()))
            .copied()
            .unwrap_or(true);
        let (expected, should_hold) = match (v.provide_access, live, profile) {
            (false, _, _) => ("not_requested", false),
            (true, false, _) => ("revoked", false),
            (true, true, false) => ("failed", false),
            (true, true, true) => ("granted", true),
        };
        let explained = is_explained(&v.id);
        let mut wrong = None;
        if v.access_status != expected {
            wrong = Some(format!("status {} (expected {expected})", v.access_status));
        } else if expected == "failed"
            && v.access_reason_code.as_deref() != Some("visitee_has_no_access_profile")
        {
            wrong = Some(format!("failed for {:?}", v.access_reason_code));
        }
        if should_hold {
            match live_pins.first() {
                None => {
                    audit.missing_grant(
                        explained,
                        format!("visitor booking {}: live, no PIN in iPassan", v.id),
                    );
                }
                Some(visitor) => {
                    let pin = visitor.credential.as_ref().map(|c| c.pin.as_str());
                    if wrong.is_none() && v.access_pin.as_deref() != pin {
                        wrong = Some("booking-api shows another PIN than iPassan".to_owned());
                    }
                    if visitor.valid_from != local(v.starts_at)
                        || visitor.valid_to != local(v.ends_at)
                    {
                        wrong.get_or_insert_with(|| {
                            format!(
                                "iPassan window {}–{} is not the booking's {}–{}",
                                visitor.valid_from,
                                visitor.valid_to,
                                local(v.starts_at),
                                local(v.ends_at)
                            )
                        });
                    }
                }
            }
        } else if !live_pins.is_empty() {
            audit.stale_grant(
                explained,
                format!(
                    "visitor booking {} ({}, access {}): iPassan still holds a live PIN",
                    v.id, v.state, v.provide_access
                ),
            );
        }
        if let Some(what) = wrong {
            audit.wrong_state_found(
                explained,
                format!("visitor booking {} v{}: {what}", v.id, v.version),
            );
        }
    }
    for (key, orphans) in &held {
        if !known_refs.contains(key) && orphans.iter().any(|o| o.credential.is_some()) {
            audit.stale_grants += 1;
            audit.sample(format!(
                "iPassan visitor for unknown booking {} at {}",
                key.1, key.0
            ));
        }
    }
}

fn audit_facilities(
    audit: &mut Audit,
    sources: &Sources<'_>,
    facilities: &[FacilityRow],
    is_explained: &dyn Fn(&Uuid) -> bool,
) {
    // Every server's groups, and each server's own timetables (their IDs overlap).
    let servers: Vec<&salto_sim::SimState> = std::iter::once(sources.salto)
        .chain(sources.own.map(|(_, own)| own))
        .collect();
    let mut groups = Vec::new();
    let mut timetables = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let salto = server.lock();
        groups.extend(salto.db.groups.values().cloned().map(|g| (index, g)));
        timetables.push(salto.db.timetables.clone());
    }
    let mut slots: BTreeMap<(String, String), Vec<&FacilityRow>> = BTreeMap::new();
    for f in facilities {
        slots
            .entry((f.access_level_id.clone(), f.zone_id.clone()))
            .or_default()
            .push(f);
        if f.state != "booked" && f.access_status != "revoked" {
            let explained = is_explained(&f.id);
            audit.wrong_state_found(
                explained,
                format!(
                    "facility booking {} cancelled but {}",
                    f.id, f.access_status
                ),
            );
        }
    }
    // Salto's permissions: (group, zone) → the entries, with the server each is on.
    let mut in_salto: HashMap<(String, String), Vec<(usize, salto_sim::model::GroupZone)>> =
        HashMap::new();
    for (server, group) in &groups {
        for entry in &group.zones {
            in_salto
                .entry((group.ext_id.clone(), entry.zone.clone()))
                .or_default()
                .push((*server, entry.clone()));
        }
    }
    for (slot, entries) in &in_salto {
        if entries.len() > 1 {
            audit.duplicate_grants += entries.len() - 1;
            audit.sample(format!(
                "Salto holds {} entries for zone {} in {}",
                entries.len(),
                slot.1,
                slot.0
            ));
        }
    }
    for (slot, bookings) in &slots {
        let live: Vec<&&FacilityRow> = bookings.iter().filter(|f| f.state == "booked").collect();
        let granted: Vec<&&FacilityRow> = live
            .iter()
            .copied()
            .filter(|f| f.access_status == "granted")
            .collect();
        let explained = bookings.iter().any(|f| is_explained(&f.id));
        if granted.len() > 1 {
            audit.duplicate_grants += granted.len() - 1;
            audit.sample(format!(
                "slot {}/{}: {} bookings shown granted",
                slot.0,
                slot.1,
                granted.len()
            ));
        }
        for f in &live {
            if f.access_status != "granted" && f.access_status != "deferred" {
                audit.wrong_state_found(
                    explained,
                    format!(
                        "facility booking {} v{} live but {}",
                        f.id, f.version, f.access_status
                    ),
                );
            }
        }
        if !live.is_empty() && granted.is_empty() {
            audit.wrong_state_found(
                explained,
                format!(
                    "slot {}/{}: {} live bookings, none granted",
                    slot.0,
                    slot.1,
                    live.len()
                ),
            );
        }
        let entry = in_salto.get(slot).and_then(|entries| entries.first());
        match (granted.first(), entry) {
            (None, None) => {}
            (None, Some(_)) => {
                audit.stale_grant(
                    explained,
                    format!(
                        "Salto holds zone {} for {} without a granted live booking",
                        slot.1, slot.0
                    ),
                );
            }
            (Some(f), None) => {
                audit.missing_grant(
                    explained,
                    format!("facility booking {} granted, Salto holds nothing", f.id),
                );
            }
            (Some(f), Some((server, entry))) => {
                if let Some(problem) = permission_problem(f, entry, &timetables[*server]) {
                    audit.wrong_state_found(
                        explained,
                        format!("facility booking {} v{}: {problem}", f.id, f.version),
                    );
                }
            }
        }
    }
    // Permissions Salto holds for slots no booking ever had.
    for (slot, _) in in_salto
        .iter()
        .filter(|(slot, _)| !slots.contains_key(*slot))
    {
        audit.stale_grants += 1;
        audit.sample(format!(
            "Salto holds zone {} for {}, which no booking has",
            slot.1, slot.0
        ));
    }
}

/// What is wrong with Salto's entry for a granted booking: its Period must be the booking's
/// local date and its Timetable exactly the booking's hours.
fn permission_problem(
    booking: &FacilityRow,
    entry: &salto_sim::model::GroupZone,
    timetables: &BTreeMap<u32, salto_sim::model::Timetable>,
) -> Option<String> {
    let starts = local(booking.starts_at);
    let ends = local(booking.ends_at);
    let end_secs = if ends.date() > starts.date() {
        24 * 3600
    } else {
        ends.time().num_seconds_from_midnight()
    };
    let date_ok = entry
        .period
        .as_ref()
        .is_some_and(|p| p.start.date() == starts.date() && p.end.date() == starts.date());
    if !date_ok {
        return Some(format!(
            "Salto's Period {:?} is not the booking's date {}",
            entry.period,
            starts.date()
        ));
    }
    let hours_ok = entry
        .timetable
        .and_then(|id| timetables.get(&id))
        .is_some_and(|t| {
            t.intervals.len() == 1
                && t.intervals[0].start == starts.time().num_seconds_from_midnight()
                && t.intervals[0].end == end_secs
        });
    (!hours_ok).then(|| {
        format!(
            "Salto's timetable {:?} is not the booking's hours {starts}–{ends}",
            entry.timetable
        )
    })
}

impl Audit {
    /// A live booking without its grant in a simulator, `what` said in a sample.
    fn missing_grant(&mut self, explained: bool, what: String) {
        self.missing_grants += 1;
        self.stale_explained += usize::from(explained);
        self.sample(format!("{what}{}", tag(explained)));
    }

    /// A grant in a simulator without a live booking, `what` said in a sample.
    fn stale_grant(&mut self, explained: bool, what: String) {
        self.stale_grants += 1;
        self.stale_explained += usize::from(explained);
        self.sample(format!("{what}{}", tag(explained)));
    }

    /// A booking whose final access state is wrong, `what` said in a sample.
    fn wrong_state_found(&mut self, explained: bool, what: String) {
        self.wrong_state += 1;
        self.wrong_state_explained += usize::from(explained);
        self.sample(format!("{what}{}", tag(explained)));
    }
}

fn tag(explained: bool) -> &'static str {
    if explained {
        " (a dead letter explains it)"
    } else {
        ""
    }
}

fn audit_mails(audit: &mut Audit, sources: &Sources<'_>, dead_letters: &[DeadLetterRow]) {
    audit.mails = sources.mails.len();
    let mut seen = HashSet::new();
    for mail in sources.mails {
        // The notifier's subjects of connection.down / connection.recovered.
        let down = mail.subject.contains(" is not answering");
        let up = mail.subject.contains(" works again");
        if down {
            audit.outage_mails.0 += 1;
        } else if up {
            audit.outage_mails.1 += 1;
        }
        if (down || up) && audit.outage_mail_lines.len() < 20 {
            audit.outage_mail_lines.push(format!(
                "{} {} → {}",
                mail.received_at.format("%H:%M:%S%.3f"),
                mail.subject,
                mail.recipients.join(", ")
            ));
        }
        let mut recipients = mail.recipients.clone();
        recipients.sort();
        let key = (
            recipients.join(",").to_lowercase(),
            mail.subject.clone(),
            mail.text_body.clone(),
        );
        if !seen.insert(key) {
            audit.duplicate_mails += 1;
            if audit.duplicate_mail_samples.len() < 10 {
                audit.duplicate_mail_samples.push(format!(
                    "{} → {} at {}",
                    mail.subject,
                    mail.recipients.join(", "),
                    mail.received_at.format("%H:%M:%S%.3f")
                ));
            }
        }
    }
    audit.dead_letters = dead_letters.len();
    for letter in dead_letters {
        *audit
            .dead_letters_by_kind
            .entry(format!(
                "{} from {}",
                letter.error_kind, letter.original_queue
            ))
            .or_default() += 1;
        let id = letter.id.to_string();
        if sources.mails.iter().any(|m| m.text_body.contains(&id)) {
            audit.dead_letters_alerted += 1;
        } else {
            audit.sample(format!(
                "dead letter {id} ({}) produced no alert email",
                letter.error_kind
            ));
        }
    }
    audit.parked = sources.parked;
}

async fn audit_messages(
    audit: &mut Audit,
    sources: &Sources<'_>,
    dead_letters: &[DeadLetterRow],
) -> anyhow::Result<()> {
    let events = sources.tap.events();
    let tapped_dead = sources.tap.dead_letters();
    let dead_from: HashSet<(String, String)> = dead_letters
        .iter()
        .filter_map(|d| Some((d.original_queue.clone(), d.message_id.clone()?)))
        .chain(
            tapped_dead
                .iter()
                .filter_map(|d| Some((d.original_queue.clone(), d.message_id.clone()?))),
        )
        .collect();
    for queue in [
        contracts::IPASSAN_SYNC_QUEUE,
        contracts::SALTO_SYNC_QUEUE,
        contracts::NOTIFIER_QUEUE,
        contracts::BOOKING_API_RESULTS_QUEUE,
    ] {
        let mut fate = QueueFate::default();
        for event in events.iter().filter(|e| routes_to(&queue, &e.routing_key)) {
            fate.published += 1;
            let id = event.event_id.to_string();
            if sources.evidence.handled(queue.name, &id) {
                fate.handled += 1;
            } else if dead_from.contains(&(queue.name.to_owned(), id.clone()))
                || sources.evidence.dead_lettered(queue.name, &id)
            {
                fate.dead_lettered += 1;
            } else {
                fate.lost += 1;
                audit.sample(format!(
                    "{} {} (booking {} v{}) reached {} and was never handled nor dead-lettered",
                    event.routing_key, event.event_id, event.booking_id, event.version, queue.name
                ));
            }
        }
        audit.queues.insert(queue.name.to_owned(), fate);
    }
    // Dead letters: each one on connecx.dead must be stored by the notifier (or parked).
    let stored: HashSet<String> = dead_letters.iter().map(|d| d.id.to_string()).collect();
    let stored_broker: HashSet<(String, String)> = dead_letters
        .iter()
        .filter_map(|d| Some((d.original_queue.clone(), d.message_id.clone()?)))
        .collect();
    let mut fate = QueueFate {
        published: tapped_dead.len(),
        ..QueueFate::default()
    };
    for letter in &tapped_dead {
        let kept = match letter.dead_letter_id {
            Some(id) => stored.contains(&id.to_string()),
            None => letter.message_id.as_ref().is_some_and(|m| {
                stored_broker.contains(&(letter.original_queue.clone(), m.clone()))
            }),
        };
        if kept {
            fate.handled += 1;
        } else {
            audit.dead_letters_unstored += 1;
            audit.sample(format!(
                "dead letter {} from {} ({}: {}) was never stored",
                letter.key, letter.original_queue, letter.error_kind, letter.error
            ));
        }
    }
    fate.dead_lettered = sources.parked;
    fate.lost = tapped_dead
        .len()
        .saturating_sub(fate.handled + sources.parked);
    audit
        .queues
        .insert(contracts::NOTIFIER_DEAD_LETTERS_QUEUE.name.to_owned(), fate);

    // The outbox: everything sent, and everything sent seen on the broker.
    let outbox: Vec<OutboxRow> = sqlx::query_as("SELECT event_id, sent_at, parked_at FROM outbox")
        .fetch_all(sources.booking)
        .await?;
    let published: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    for row in outbox {
        if row.parked_at.is_some() {
            audit.outbox_parked += 1;
        } else if row.sent_at.is_none() {
            audit.outbox_unsent += 1;
        } else if !published.contains(&row.event_id) {
            audit.outbox_unpublished += 1;
            audit.sample(format!(
                "outbox event {} marked sent, never seen on the broker",
                row.event_id
            ));
        }
    }
    Ok(())
}

/// From each booking's creation to its first access outcome (a result event of version 1), for
/// the bookings that ask for access; split into the building on its own systems and the others,
/// and for the others also the bookings created while that building's systems were out.
fn measure_latencies(audit: &mut Audit, sources: &Sources<'_>) {
    let mut first_outcome: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for event in sources.tap.events() {
        let result = event.routing_key.starts_with("visitor_access.")
            || event.routing_key.starts_with("facility_access.");
        if result && event.version == 1 {
            let seen = first_outcome
                .entry(event.booking_id)
                .or_insert(event.seen_at);
            *seen = (*seen).min(event.seen_at);
        }
    }
    let (mut own, mut others, mut others_during) = (Vec::new(), Vec::new(), Vec::new());
    for booking in sources.client.values() {
        let asks = !matches!(
            booking.kind,
            super::workload::BookingKind::Visitor {
                provide_access: false
            }
        );
        let Some(outcome) = first_outcome.get(&booking.id).filter(|_| asks) else {
            continue;
        };
        let took = (*outcome - booking.created_at).to_std().unwrap_or_default();
        if Some(booking.building) == sources.own_building {
            own.push(took);
        } else {
            others.push(took);
            if sources
                .outages
                .iter()
                .any(|(from, to)| booking.created_at >= *from && booking.created_at <= *to)
            {
                others_during.push(took);
            }
        }
    }
    audit.latency_own = super::report::Latencies::of(own);
    audit.latency_others = super::report::Latencies::of(others);
    audit.latency_others_during_outage = super::report::Latencies::of(others_during);
}
