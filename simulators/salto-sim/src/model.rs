//! What the simulated Salto server holds — groups with their zone permissions, zones, timetables —
//! and the rules the real server enforces on them (docs/contracts/salto-ship.md): one permission per
//! zone in a group, no unknown references, no period that ends before it starts, and expired
//! permissions that stay until a client removes them. The door rule lives here too, because a test
//! asks "does the card open?" rather than "what is in the list?".

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDateTime, NaiveTime, Timelike};
use serde::{Deserialize, Serialize};

/// A time of day in seconds from midnight; 86 400 is the end of the day (`24:00:00`).
pub type DaySeconds = u32;

pub const END_OF_DAY: DaySeconds = 24 * 3600;

/// A SHIP refusal: `<Exception><Code>` plus a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SHIP code {code}: {message}")]
pub struct Refusal {
    pub code: u32,
    pub message: String,
}

impl Refusal {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn business_rule(message: impl Into<String>) -> Self {
        Self::new(7, message)
    }
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(10, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(11, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(12, message)
    }
}

/// `Period` of a permission, in the server's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

/// One `Group_Zone`: a group's permission on a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupZone {
    pub zone: String,
    pub timetable: Option<u32>,
    #[serde(default)]
    pub use_period: bool,
    pub period: Option<Period>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub ext_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub zones: Vec<GroupZone>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    pub ext_id: String,
    #[serde(default)]
    pub name: String,
}

/// One interval of a timetable: `[start, end)` on the flagged weekdays (Monday first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    #[serde(with = "day_time")]
    pub start: DaySeconds,
    #[serde(with = "day_time")]
    pub end: DaySeconds,
    #[serde(default = "every_day")]
    pub days: [bool; 7],
}

fn every_day() -> [bool; 7] {
    [true; 7]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timetable {
    pub id: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub intervals: Vec<Interval>,
}

/// How callers must authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Key {
        key: String,
    },
}

/// The server's database.
#[derive(Debug, Clone, Default)]
pub struct Database {
    pub groups: BTreeMap<String, Group>,
    pub zones: BTreeMap<String, Zone>,
    pub timetables: BTreeMap<u32, Timetable>,
}

/// Why a card does or does not open a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorVerdict {
    Opens,
    UnknownGroup,
    UnknownZone,
    NoPermission,
    OutsidePeriod,
    UnknownTimetable,
    OutsideTimetable,
}

impl Database {
    /// `SaltoDBGroup.Update`: checks every rule first, then replaces the whole list (all or nothing).
    pub fn replace_group_zones(
        &mut self,
        group_id: &str,
        name: Option<String>,
        zones: Vec<GroupZone>,
    ) -> Result<(), Refusal> {
        if !self.groups.contains_key(group_id) {
            return Err(Refusal::not_found(format!(
                "group (access level) ExtGroupID `{group_id}` does not exist"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for entry in &zones {
            if !self.zones.contains_key(&entry.zone) {
                return Err(Refusal::not_found(format!(
                    "zone ExtZoneID `{}` does not exist",
                    entry.zone
                )));
            }
            if let Some(id) = entry.timetable
                && !self.timetables.contains_key(&id)
            {
                return Err(Refusal::not_found(format!(
                    "timetable TimezoneTableID {id} does not exist"
                )));
            }
            if let Some(period) = entry.period
                && period.end < period.start
            {
                return Err(Refusal::invalid(format!(
                    "Period of zone `{}` ends ({}) before it starts ({})",
                    entry.zone, period.end, period.start
                )));
            }
            if entry.use_period && entry.period.is_none() {
                return Err(Refusal::invalid(format!(
                    "zone `{}` has UsePeriod 1 but no Period",
                    entry.zone
                )));
            }
            if !seen.insert(entry.zone.clone()) {
                return Err(Refusal::business_rule(format!(
                    "the group already has a permission for zone `{}`: one relationship between an access level and a zone at a time",
                    entry.zone
                )));
            }
        }
        if let Some(group) = self.groups.get_mut(group_id) {
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                group.name = name;
            }
            group.zones = zones;
        }
        Ok(())
    }

    /// `SaltoDBTimezoneTable.Insert`.
    pub fn insert_timetable(&mut self, timetable: Timetable) -> Result<(), Refusal> {
        if !(1..=1024).contains(&timetable.id) {
            return Err(Refusal::invalid(format!(
                "TimezoneTableID {} is outside 1..1024",
                timetable.id
            )));
        }
        if self.timetables.contains_key(&timetable.id) {
            return Err(Refusal::exists(format!(
                "timetable {} already exists",
                timetable.id
            )));
        }
        for interval in &timetable.intervals {
            if interval.end <= interval.start || interval.end > END_OF_DAY {
                return Err(Refusal::invalid(format!(
                    "timezone {}–{} does not end after it starts",
                    day_time::format(interval.start),
                    day_time::format(interval.end)
                )));
            }
        }
        self.timetables.insert(timetable.id, timetable);
        Ok(())
    }

    /// `SaltoDBTimezoneTable.Delete`: a timetable a permission still uses cannot go.
    pub fn delete_timetable(&mut self, id: u32) -> Result<(), Refusal> {
        if !self.timetables.contains_key(&id) {
            return Err(Refusal::not_found(format!("timetable {id} does not exist")));
        }
        let used_by = self
            .groups
            .values()
            .find(|g| g.zones.iter().any(|z| z.timetable == Some(id)));
        if let Some(group) = used_by {
            return Err(Refusal::business_rule(format!(
                "timetable {id} is used by group `{}`",
                group.ext_id
            )));
        }
        self.timetables.remove(&id);
        Ok(())
    }

    /// The door rule of the contract: a card of `group` opens a door of `zone` at local time `at`.
    pub fn door(&self, zone: &str, group: &str, at: NaiveDateTime) -> DoorVerdict {
        let Some(group) = self.groups.get(group) else {
            return DoorVerdict::UnknownGroup;
        };
        if !self.zones.contains_key(zone) {
            return DoorVerdict::UnknownZone;
        }
        let Some(permission) = group.zones.iter().find(|z| z.zone == zone) else {
            return DoorVerdict::NoPermission;
        };
        if permission.use_period {
            match permission.period {
                Some(p) if p.start <= at && at <= p.end => {}
                _ => return DoorVerdict::OutsidePeriod,
            }
        }
        let Some(id) = permission.timetable else {
            // No timetable: the permission holds at every hour.
            return DoorVerdict::Opens;
        };
        let Some(timetable) = self.timetables.get(&id) else {
            return DoorVerdict::UnknownTimetable;
        };
        let weekday = at.weekday().num_days_from_monday() as usize;
        let second = at.num_seconds_from_midnight();
        let inside = timetable
            .intervals
            .iter()
            .any(|i| i.days[weekday] && i.start <= second && second < i.end);
        if inside {
            DoorVerdict::Opens
        } else {
            DoorVerdict::OutsideTimetable
        }
    }
}

/// SHIP date-times: `yyyy-MM-ddTHH:mm:ss`, local, no zone; `T24:00:00` is the next day's midnight.
pub mod date_time {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

    pub fn parse(text: &str) -> Option<NaiveDateTime> {
        let text = text.trim();
        if let Some(date) = text.strip_suffix("T24:00:00") {
            let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
            return date.succ_opt().map(|d| d.and_time(NaiveTime::MIN));
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok()
    }

    pub fn format(at: NaiveDateTime) -> String {
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// SHIP times of day: `HH:mm:ss`, with `24:00:00` for the end of the day.
pub mod day_time {
    use super::{DaySeconds, END_OF_DAY};
    use chrono::{NaiveTime, Timelike};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(text: &str) -> Option<DaySeconds> {
        let text = text.trim();
        if text == "24:00:00" || text == "24:00" {
            return Some(END_OF_DAY);
        }
        NaiveTime::parse_from_str(text, "%H:%M:%S")
            .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
            .ok()
            .map(|t| t.num_seconds_from_midnight())
    }

    pub fn format(seconds: DaySeconds) -> String {
        format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    }

    pub fn serialize<S: Serializer>(seconds: &DaySeconds, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*seconds))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DaySeconds, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a HH:MM:SS time")))
    }
}

/// Midnight of a day, for tests and defaults.
pub fn midnight(at: NaiveDateTime) -> NaiveDateTime {
    at.date().and_time(NaiveTime::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        date_time::parse(text).unwrap()
    }

    fn db() -> Database {
        let mut db = Database::default();
        db.groups.insert(
            "501-56".into(),
            Group {
                ext_id: "501-56".into(),
                name: "Apartment 501".into(),
                zones: vec![],
            },
        );
        db.zones.insert(
            "GAMES".into(),
            Zone {
                ext_id: "GAMES".into(),
                name: "Games".into(),
            },
        );
        db.insert_timetable(Timetable {
            id: 42,
            name: "evening".into(),
            intervals: vec![Interval {
                start: 18 * 3600,
                end: END_OF_DAY,
                days: [true; 7],
            }],
        })
        .unwrap();
        db
    }

    fn permission(start: &str, end: &str) -> GroupZone {
        GroupZone {
            zone: "GAMES".into(),
            timetable: Some(42),
            use_period: true,
            period: Some(Period {
                start: at(start),
                end: at(end),
            }),
        }
    }

    #[test]
    fn twenty_four_hundred_is_the_next_days_midnight() {
        assert_eq!(at("2026-12-01T24:00:00"), at("2026-12-02T00:00:00"));
        assert_eq!(day_time::parse("24:00:00"), Some(END_OF_DAY));
    }

    #[test]
    fn a_second_permission_for_a_zone_is_refused_with_code_7_and_nothing_changes() {
        let mut db = db();
        let two = vec![
            permission("2026-12-01T00:00:00", "2026-12-01T23:59:59"),
            permission("2026-12-02T00:00:00", "2026-12-02T23:59:59"),
        ];
        let refusal = db.replace_group_zones("501-56", None, two).unwrap_err();
        assert_eq!(refusal.code, 7);
        assert!(db.groups["501-56"].zones.is_empty());
    }

    #[test]
    fn unknown_references_are_code_11_and_a_backwards_period_is_code_12() {
        let mut db = db();
        assert_eq!(
            db.replace_group_zones("nope", None, vec![])
                .unwrap_err()
                .code,
            11
        );
        let mut unknown_zone = permission("2026-12-01T00:00:00", "2026-12-01T23:59:59");
        unknown_zone.zone = "GYM".into();
        assert_eq!(
            db.replace_group_zones("501-56", None, vec![unknown_zone])
                .unwrap_err()
                .code,
            11
        );
        let backwards = permission("2026-12-02T00:00:00", "2026-12-01T23:59:59");
        assert_eq!(
            db.replace_group_zones("501-56", None, vec![backwards])
                .unwrap_err()
                .code,
            12
        );
    }

    #[test]
    fn a_card_opens_inside_the_hours_on_the_permitted_date_only() {
        let mut db = db();
        db.replace_group_zones(
            "501-56",
            None,
            vec![permission("2026-12-01T00:00:00", "2026-12-01T24:00:00")],
        )
        .unwrap();
        assert_eq!(
            db.door("GAMES", "501-56", at("2026-12-01T19:00:00")),
            DoorVerdict::Opens
        );
        assert_eq!(
            db.door("GAMES", "501-56", at("2026-12-01T17:59:59")),
            DoorVerdict::OutsideTimetable
        );
        assert_eq!(
            db.door("GAMES", "501-56", at("2026-12-02T19:00:00")),
            DoorVerdict::OutsidePeriod
        );
        assert_eq!(
            db.door("GAMES", "other", at("2026-12-01T19:00:00")),
            DoorVerdict::UnknownGroup
        );
    }
}
