//! The permission ledger's records (docs/architecture.md, "Facility bookings and the ledger"):
//! who holds each (server, access level, zone) slot and who waits for it. A Salto server holds one
//! permission per access level and zone whichever building asked for it, so the ledger is keyed
//! by the server; each row also names the building whose booking it is (for that building's
//! nightly clearing and its managers). The rules are plain functions in [`crate::decision`]; the
//! SQL that stores the records is in [`crate::store`].

use chrono::{NaiveDate, Timelike};
use contracts::FacilityBooking;
use uuid::Uuid;

use salto_ship::{DaySeconds, END_OF_DAY, Period, ZonePermission};

/// An access level on a Salto server: the unit Salto rewrites as a whole, and so the unit writers
/// are serialized on. Two buildings on one server naming the same access level share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessLevelKey {
    /// The server's key (`crate::servers::server_key`).
    pub server: String,
    /// Salto `ExtGroupID` (the apartment's Access Control ID).
    pub access_level: String,
}

impl AccessLevelKey {
    /// The advisory-lock name of this access level.
    pub fn lock_name(&self) -> String {
        format!(
            "salto_sync/access_level/{}/{}",
            self.server, self.access_level
        )
    }
}

/// One (access level, zone): Salto allows one permission in it at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub level: AccessLevelKey,
    /// Salto `ExtZoneID` (the facility's Access Control Facility ID).
    pub zone: String,
}

impl SlotKey {
    /// The slot `booking` asks for on `server`.
    pub fn of(booking: &FacilityBooking, server: &str) -> SlotKey {
        SlotKey {
            level: AccessLevelKey {
                server: server.to_owned(),
                access_level: booking.apartment.access_level_id.trim().to_owned(),
            },
            zone: booking.facility.zone_id.trim().to_owned(),
        }
    }
}

/// A facility booking on the building's clock: one local date and the hours on it. A booking that
/// ends at the next local midnight ends at `24:00:00` of its own date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalWindow {
    pub date: NaiveDate,
    pub starts: DaySeconds,
    pub ends: DaySeconds,
}

impl LocalWindow {
    pub fn of(booking: &FacilityBooking) -> LocalWindow {
        let start = booking.window.local_starts_at;
        let end = booking.window.local_ends_at;
        let date = start.date();
        let ends = if end.date() > date {
            // booking-api allows exactly the next midnight; anything later is cut to the day.
            END_OF_DAY
        } else {
            end.num_seconds_from_midnight()
        };
        LocalWindow {
            date,
            starts: start.num_seconds_from_midnight(),
            ends: ends.max(start.num_seconds_from_midnight()),
        }
    }

    /// The Salto permission this window is granted as: Period = the date, Timetable = the hours.
    pub fn permission(&self, zone: &str, timetable: u32) -> ZonePermission {
        ZonePermission {
            zone: zone.to_owned(),
            timetable: Some(timetable),
            period: Some(Period::whole_day(self.date)),
        }
    }
}

/// The booking holding a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub slot: SlotKey,
    /// The booking's building.
    pub building: String,
    pub booking_id: Uuid,
    pub version: i64,
    pub window: LocalWindow,
    pub timetable: u32,
    pub period: Period,
}

impl Held {
    pub fn permission(&self) -> ZonePermission {
        ZonePermission {
            zone: self.slot.zone.clone(),
            timetable: Some(self.timetable),
            period: Some(self.period),
        }
    }
}

/// A booking waiting for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub slot: SlotKey,
    /// The booking's building.
    pub building: String,
    pub booking_id: Uuid,
    pub version: i64,
    pub window: LocalWindow,
}

/// What the ledger holds for one booking: the slot it holds and the slot it waits for, each at
/// most one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookingEntries {
    pub held: Option<Held>,
    pub waiting: Option<Waiting>,
}

impl BookingEntries {
    /// The access levels the entries are in (to lock them).
    pub fn levels(&self) -> Vec<AccessLevelKey> {
        let held = self.held.iter().map(|h| h.slot.level.clone());
        let waiting = self.waiting.iter().map(|w| w.slot.level.clone());
        held.chain(waiting).collect()
    }
}
