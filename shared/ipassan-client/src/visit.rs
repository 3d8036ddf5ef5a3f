//! A visit as iPassan needs it: the window on the site's wall clock, in the contract's format
//! (`YYYY-MM-DDTHH:MM:SS`, no offset, half-open), and the visitor's name split into the first and
//! last names iPassan stores. Pure, so the formatting and splitting rules are tested on their own.

use chrono::{NaiveDateTime, Timelike};

use contracts::BookingWindow;

/// The contract's site-local time format.
pub const LOCAL_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// A visit's `[from, to)` on the site's wall clock, to the second (the contract's precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitWindow {
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
}

impl VisitWindow {
    /// The booking's window in the building's local time. booking-api computes the local times
    /// from the building's IANA zone, so iPassan gets the same wall clock the resident chose.
    pub fn of(window: &BookingWindow) -> Self {
        Self {
            from: to_second(window.local_starts_at),
            to: to_second(window.local_ends_at),
        }
    }

    pub fn from_text(&self) -> String {
        format_local(self.from)
    }

    pub fn to_text(&self) -> String {
        format_local(self.to)
    }
}

fn to_second(at: NaiveDateTime) -> NaiveDateTime {
    at.with_nanosecond(0).unwrap_or(at)
}

/// `2026-12-01T18:00:00`
pub fn format_local(at: NaiveDateTime) -> String {
    at.format(LOCAL_TIME_FORMAT).to_string()
}

/// Reads a contract time; `None` when it is not in the contract's format.
pub fn parse_local(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, LOCAL_TIME_FORMAT).ok()
}

/// First and last name as iPassan stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorName {
    pub first: String,
    pub last: String,
}

/// Splits a name as typed in the app: the first word is the first name, the rest the last name
/// ("Anna van der Berg" → "Anna" / "van der Berg"). A single word is a first name with an empty
/// last name; extra spaces are dropped.
pub fn split_name(full: &str) -> VisitorName {
    let mut words = full.split_whitespace();
    let first = words.next().unwrap_or_default().to_owned();
    let last = words.collect::<Vec<_>>().join(" ");
    VisitorName { first, last }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::{TimeZone, Utc};

    use super::*;

    fn name(first: &str, last: &str) -> VisitorName {
        VisitorName {
            first: first.into(),
            last: last.into(),
        }
    }

    #[test]
    fn a_name_splits_into_the_first_word_and_the_rest() {
        assert_eq!(split_name("Bo Tan"), name("Bo", "Tan"));
        assert_eq!(
            split_name("  Anna  van der   Berg "),
            name("Anna", "van der Berg")
        );
        assert_eq!(split_name("Cher"), name("Cher", ""));
        assert_eq!(split_name("   "), name("", ""));
        assert_eq!(split_name("Zoë Ōtsuka"), name("Zoë", "Ōtsuka"));
    }

    #[test]
    fn the_window_is_the_buildings_wall_clock_to_the_second_without_offset() {
        // 07:00–11:00 UTC is 18:00–22:00 in Sydney in December (daylight time, UTC+11).
        let local = |text: &str| parse_local(text).unwrap();
        let window = BookingWindow {
            starts_at: Utc.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap(),
            ends_at: Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).unwrap(),
            local_starts_at: local("2026-12-01T18:00:00")
                .with_nanosecond(250_000_000)
                .unwrap(),
            local_ends_at: local("2026-12-01T22:00:00"),
        };
        let visit = VisitWindow::of(&window);
        assert_eq!(visit.from_text(), "2026-12-01T18:00:00");
        assert_eq!(visit.to_text(), "2026-12-01T22:00:00");
        assert_eq!(
            visit.from,
            local("2026-12-01T18:00:00"),
            "sub-seconds dropped"
        );
    }

    #[test]
    fn only_the_contract_format_is_read() {
        assert!(parse_local("2026-12-01T18:00:00").is_some());
        assert!(parse_local("2026-12-01T18:00:00+11:00").is_none());
        assert!(parse_local("2026-12-01 18:00").is_none());
    }
}
