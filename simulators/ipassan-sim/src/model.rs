//! The simulated iPassan tenant: sites with their persons, access profiles and visitors, the API
//! clients and the tokens issued to them, plus the simulator's own knobs (clock, faults, request
//! log). Everything here is plain data and pure rules (the door rule, PIN choice, window checks),
//! so the HTTP layer only translates; the contract's rules live in one place.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The contract's wall-clock time format (site-local, no offset).
pub const LOCAL_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// How long a token lives unless the control API says otherwise (the contract's example).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A person of a site (residents are "synced users"), exactly as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: String,
    /// 1 resident, 2 employee, 3 visitor.
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub access_profile_id: Option<String>,
}

impl Person {
    /// Only residents and employees can receive visitors.
    pub fn can_be_visitee(&self) -> bool {
        matches!(self.kind, 1 | 2)
    }
}

/// A visitor's PIN credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(rename = "type")]
    pub kind: String,
    pub pin: String,
}

/// A visitor, exactly as the API shows it (`credential` is `null` once revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Visitor {
    pub id: String,
    pub visitee_id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    #[serde(with = "local_time")]
    pub valid_from: NaiveDateTime,
    #[serde(with = "local_time")]
    pub valid_to: NaiveDateTime,
    pub access_profile_id: String,
    pub external_ref: String,
    pub credential: Option<Credential>,
}

/// One site: its people, its access profiles (profile id → doors) and its visitors.
#[derive(Debug, Clone, Default)]
pub struct Site {
    pub timezone: Tz,
    pub persons: BTreeMap<String, Person>,
    pub profiles: BTreeMap<String, Vec<String>>,
    pub visitors: Visitors,
}

/// A site's visitors, by id, and indexed the ways the API finds them: by `externalRef` (a create
/// is idempotent on it) and by live PIN (the door rule; a new PIN avoids the live ones). Without
/// the indexes every create and door check read every visitor, and a benchmark of thousands of
/// visits measured the simulator as much as the client.
#[derive(Debug, Clone, Default)]
pub struct Visitors {
    by_id: BTreeMap<String, Visitor>,
    /// `externalRef` → visitor id.
    by_ref: HashMap<String, String>,
    /// Live PIN → visitor id.
    by_live_pin: HashMap<String, String>,
}

impl Visitors {
    /// Every visitor, in id order.
    pub fn values(&self) -> impl Iterator<Item = &Visitor> {
        self.by_id.values()
    }

    pub fn get(&self, id: &str) -> Option<&Visitor> {
        self.by_id.get(id)
    }

    pub fn by_ref(&self, external_ref: &str) -> Option<&Visitor> {
        self.by_ref.get(external_ref).and_then(|id| self.get(id))
    }

    /// The visitor whose live credential is `pin`.
    pub fn by_live_pin(&self, pin: &str) -> Option<&Visitor> {
        self.by_live_pin.get(pin).and_then(|id| self.get(id))
    }

    /// Adds (or replaces) a visitor.
    pub fn insert(&mut self, visitor: Visitor) {
        if let Some(old) = self.by_id.get(&visitor.id).cloned() {
            self.unindex(&old);
        }
        self.by_ref
            .insert(visitor.external_ref.clone(), visitor.id.clone());
        if let Some(credential) = &visitor.credential {
            self.by_live_pin
                .insert(credential.pin.clone(), visitor.id.clone());
        }
        self.by_id.insert(visitor.id.clone(), visitor);
    }

    /// Moves a visitor's window; its PIN stays. The visitor as it is now, if it exists.
    pub fn set_window(
        &mut self,
        id: &str,
        valid_from: NaiveDateTime,
        valid_to: NaiveDateTime,
    ) -> Option<&Visitor> {
        let visitor = self.by_id.get_mut(id)?;
        visitor.valid_from = valid_from;
        visitor.valid_to = valid_to;
        Some(visitor)
    }

    /// Revokes a visitor's credential: its PIN opens nothing from now on. False if no such
    /// visitor.
    pub fn revoke(&mut self, id: &str) -> bool {
        let Some(visitor) = self.by_id.get_mut(id) else {
            return false;
        };
        if let Some(credential) = visitor.credential.take() {
            self.by_live_pin.remove(&credential.pin);
        }
        true
    }

    fn unindex(&mut self, visitor: &Visitor) {
        self.by_ref.remove(&visitor.external_ref);
        if let Some(credential) = &visitor.credential {
            self.by_live_pin.remove(&credential.pin);
        }
    }
}

/// An API client (client-credentials grant) and the sites it may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSeed {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub sites: Vec<String>,
}

/// `POST /_sim/seed`: sites are created or updated (persons and profiles upserted, visitors kept),
/// clients are added or replaced by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    #[serde(default)]
    pub sites: BTreeMap<String, SiteSeed>,
    #[serde(default)]
    pub clients: Vec<ClientSeed>,
}

/// One site in a seed. `timezone` (IANA, default UTC) is a simulator extension: the real clock
/// needs it to know the site's wall-clock time; the contract only says both sides know it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSeed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub persons: Vec<Person>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Vec<String>>,
}

/// A token handed out by `POST /api/v1/token`.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub client_id: String,
    /// Real time, not the simulated clock: the client's cache runs on real time too.
    pub expires_at: Instant,
}

/// The simulated wall clock doors are checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    Real,
    /// A fixed instant, seen by each site in its own time zone.
    At(DateTime<Utc>),
    /// A fixed site-local wall-clock time (the same at every site).
    Local(NaiveDateTime),
}

impl Clock {
    /// The wall-clock time at a site in `timezone`.
    pub fn local_now(&self, timezone: Tz) -> NaiveDateTime {
        match self {
            Clock::Real => Utc::now().with_timezone(&timezone).naive_local(),
            Clock::At(at) => at.with_timezone(&timezone).naive_local(),
            Clock::Local(local) => *local,
        }
    }

    /// Reads `{now}`: RFC 3339 with offset is an instant; `YYYY-MM-DDTHH:MM:SS` is wall-clock.
    pub fn parse(now: &str) -> Option<Clock> {
        if let Ok(at) = DateTime::parse_from_rfc3339(now) {
            return Some(Clock::At(at.with_timezone(&Utc)));
        }
        NaiveDateTime::parse_from_str(now, LOCAL_TIME_FORMAT)
            .ok()
            .map(Clock::Local)
    }
}

/// What a fault matches: method (any when absent) and path prefix (any when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultMatch {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// What a faulty request gets. Without `status` (a simulator extension) the request is only
/// delayed by `delay_ms` and then answered normally: a slow server rather than a broken one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultResponse {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Instead of `body`: exactly this text (not JSON, cut off, or huge), `repeat` times over.
    #[serde(default)]
    pub raw_body: Option<String>,
    #[serde(default)]
    pub repeat: Option<usize>,
    /// Seconds, sent as the `Retry-After` header.
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// `POST /_sim/faults`: the next `times` matching requests get `respond`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(rename = "match", default)]
    pub matches: FaultMatch,
    pub respond: FaultResponse,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl Fault {
    pub fn applies_to(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self
                .matches
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .matches
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }
}

/// One API request as the simulator saw it (`GET /_sim/requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The form body; the token request's is not kept (it holds the client secret).
    pub body: Option<String>,
    pub status: u16,
    /// The answer came from an injected fault.
    pub fault: bool,
}

/// Answer of the door check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorCheck {
    pub opens: bool,
    pub reason: String,
}

impl DoorCheck {
    fn closed(reason: &str) -> Self {
        Self {
            opens: false,
            reason: reason.to_owned(),
        }
    }
}

/// The whole simulated tenant.
#[derive(Debug)]
pub struct World {
    pub sites: BTreeMap<String, Site>,
    pub clients: BTreeMap<String, ClientSeed>,
    pub tokens: HashMap<String, IssuedToken>,
    pub token_lifetime: Duration,
    pub clock: Clock,
    pub faults: Vec<Fault>,
    pub requests: Vec<LoggedRequest>,
    next_visitor: u64,
}

impl Default for World {
    fn default() -> Self {
        Self {
            sites: BTreeMap::new(),
            clients: BTreeMap::new(),
            tokens: HashMap::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            clock: Clock::Real,
            faults: Vec::new(),
            requests: Vec::new(),
            next_visitor: 1,
        }
    }
}

/// Why a seed was refused.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("site `{site}`: `{timezone}` is not an IANA time zone")]
    TimeZone { site: String, timezone: String },
}

impl World {
    /// Adds a seed to the world (see [`Seed`]).
    pub fn seed(&mut self, seed: Seed) -> Result<(), SeedError> {
        for (name, site_seed) in seed.sites {
            let timezone = match &site_seed.timezone {
                Some(tz) => Some(tz.parse::<Tz>().map_err(|_| SeedError::TimeZone {
                    site: name.clone(),
                    timezone: tz.clone(),
                })?),
                None => None,
            };
            let site = self.sites.entry(name).or_default();
            if let Some(timezone) = timezone {
                site.timezone = timezone;
            }
            for person in site_seed.persons {
                site.persons.insert(person.id.clone(), person);
            }
            site.profiles.extend(site_seed.profiles);
        }
        for client in seed.clients {
            self.clients.insert(client.client_id.clone(), client);
        }
        Ok(())
    }

    /// A fresh visitor id, unique in this world.
    pub fn next_visitor_id(&mut self) -> String {
        let id = format!("v-{}", self.next_visitor);
        self.next_visitor += 1;
        id
    }

    /// Takes one use of the first fault matching the request, if any.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultResponse> {
        let index = self
            .faults
            .iter()
            .position(|f| f.applies_to(method, path))?;
        let fault = &mut self.faults[index];
        fault.times -= 1;
        let respond = fault.respond.clone();
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(respond)
    }

    /// The contract's door rule: a PIN opens `door` at site-local time `t` iff a live credential
    /// has that PIN, `validFrom <= t < validTo`, and the door belongs to the visitor's profile.
    pub fn check_door(&self, site: &str, door: &str, pin: &str) -> DoorCheck {
        let Some(site) = self.sites.get(site) else {
            return DoorCheck::closed("unknown_site");
        };
        let Some(visitor) = site.visitors.by_live_pin(pin) else {
            return DoorCheck::closed("unknown_pin");
        };
        let now = self.clock.local_now(site.timezone);
        if now < visitor.valid_from {
            return DoorCheck::closed("not_yet_valid");
        }
        if now >= visitor.valid_to {
            return DoorCheck::closed("expired");
        }
        let in_profile = site
            .profiles
            .get(&visitor.access_profile_id)
            .is_some_and(|doors| doors.iter().any(|d| d == door));
        if !in_profile {
            return DoorCheck::closed("door_not_in_profile");
        }
        DoorCheck {
            opens: true,
            reason: "valid".to_owned(),
        }
    }
}

/// Picks a 6-digit PIN not among `taken`, from `candidates` (random in production; given in
/// tests). `None` only if every candidate collides.
pub fn choose_pin(
    mut candidates: impl Iterator<Item = u32>,
    taken: impl Fn(&str) -> bool,
) -> Option<String> {
    candidates.find_map(|n| {
        let pin = format!("{:06}", n % 1_000_000);
        (!taken(&pin)).then_some(pin)
    })
}

/// Random numbers for PINs (a v4 UUID is 122 random bits from the OS generator).
pub fn random_numbers() -> impl Iterator<Item = u32> {
    std::iter::repeat_with(|| (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u32).take(10_000)
}

/// Parses a contract time (`YYYY-MM-DDTHH:MM:SS`, no offset).
pub fn parse_local(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, LOCAL_TIME_FORMAT).ok()
}

/// Serde for the contract's wall-clock times.
mod local_time {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::LOCAL_TIME_FORMAT;

    pub fn serialize<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&at.format(LOCAL_TIME_FORMAT))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveDateTime::parse_from_str(&text, LOCAL_TIME_FORMAT).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        parse_local(text).unwrap()
    }

    fn world_with_visitor() -> World {
        let mut world = World::default();
        let mut site = Site::default();
        site.profiles
            .insert("ap-7".into(), vec!["lobby".into(), "lift".into()]);
        site.visitors.insert(Visitor {
            id: "v-1".into(),
            visitee_id: "p-1".into(),
            first_name: "Bo".into(),
            last_name: "Tan".into(),
            email: "bo@example.com".into(),
            valid_from: at("2026-12-01T18:00:00"),
            valid_to: at("2026-12-01T22:00:00"),
            access_profile_id: "ap-7".into(),
            external_ref: "b-1".into(),
            credential: Some(Credential {
                kind: "pin".into(),
                pin: "012345".into(),
            }),
        });
        world.sites.insert("s".into(), site);
        world
    }

    fn door(world: &mut World, now: &str, door: &str, pin: &str) -> String {
        world.clock = Clock::parse(now).unwrap();
        world.check_door("s", door, pin).reason
    }

    #[test]
    fn a_pin_opens_its_profiles_doors_only_inside_the_half_open_window() {
        let mut world = world_with_visitor();
        assert_eq!(
            door(&mut world, "2026-12-01T17:59:59", "lobby", "012345"),
            "not_yet_valid"
        );
        assert_eq!(
            door(&mut world, "2026-12-01T18:00:00", "lobby", "012345"),
            "valid"
        );
        assert_eq!(
            door(&mut world, "2026-12-01T21:59:59", "lift", "012345"),
            "valid"
        );
        assert_eq!(
            door(&mut world, "2026-12-01T22:00:00", "lobby", "012345"),
            "expired"
        );
        assert_eq!(
            door(&mut world, "2026-12-01T19:00:00", "pool", "012345"),
            "door_not_in_profile"
        );
        assert_eq!(
            door(&mut world, "2026-12-01T19:00:00", "lobby", "999999"),
            "unknown_pin"
        );
    }

    #[test]
    fn an_instant_clock_is_read_on_the_sites_own_clock() {
        let mut world = world_with_visitor();
        world.sites.get_mut("s").unwrap().timezone = chrono_tz::Australia::Sydney;
        // 07:30 UTC is 18:30 in Sydney in December (UTC+11).
        assert_eq!(
            door(&mut world, "2026-12-01T07:30:00Z", "lobby", "012345"),
            "valid"
        );
    }

    #[test]
    fn a_revoked_pin_opens_nothing_and_is_free_again_while_the_visitor_stays_findable() {
        let mut world = world_with_visitor();
        let now = "2026-12-01T19:00:00";
        assert_eq!(door(&mut world, now, "lobby", "012345"), "valid");
        let site = world.sites.get_mut("s").unwrap();
        assert!(site.visitors.revoke("v-1"));
        assert!(!site.visitors.revoke("v-404"));
        assert!(site.visitors.by_live_pin("012345").is_none());
        assert_eq!(site.visitors.by_ref("b-1").unwrap().id, "v-1");
        assert!(site.visitors.get("v-1").unwrap().credential.is_none());
        assert_eq!(door(&mut world, now, "lobby", "012345"), "unknown_pin");

        let site = world.sites.get_mut("s").unwrap();
        let mut next = site.visitors.get("v-1").unwrap().clone();
        next.id = "v-2".into();
        next.external_ref = "b-2".into();
        next.credential = Some(Credential {
            kind: "pin".into(),
            pin: "012345".into(),
        });
        site.visitors.insert(next);
        assert_eq!(site.visitors.by_live_pin("012345").unwrap().id, "v-2");
        assert_eq!(door(&mut world, now, "lobby", "012345"), "valid");
    }

    #[test]
    fn a_pin_is_six_digits_and_avoids_live_ones() {
        let taken = |pin: &str| ["000042", "000043"].contains(&pin);
        let pin = choose_pin([42, 1_000_043, 44].into_iter(), taken);
        assert_eq!(pin.as_deref(), Some("000044"));
        assert_eq!(choose_pin([42].into_iter(), taken), None);
    }

    #[test]
    fn faults_are_used_up_in_order() {
        let mut world = World::default();
        world.faults.push(Fault {
            matches: FaultMatch {
                method: Some("post".into()),
                path_prefix: Some("/api/v1/access".into()),
            },
            respond: FaultResponse {
                status: Some(503),
                ..Default::default()
            },
            times: 2,
        });
        assert!(world.take_fault("GET", "/api/v1/access/site/s").is_none());
        assert!(world.take_fault("POST", "/api/v1/token").is_none());
        assert!(world.take_fault("POST", "/api/v1/access/site/s").is_some());
        assert!(world.take_fault("POST", "/api/v1/access/site/s").is_some());
        assert!(world.take_fault("POST", "/api/v1/access/site/s").is_none());
    }
}
