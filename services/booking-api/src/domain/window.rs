//! Booking windows: the time rules every booking obeys, and their building-local form.
//!
//! A window is stored and compared in UTC. Consumers also need the building's wall-clock time
//! (iPassan takes site-local times, Salto takes a date and hours), so events carry both; the
//! conversion lives here once. A facility booking must lie within one building-local day because
//! Salto grants it as one Period (a date) plus one Timetable (hours on that date).

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;

/// A checked booking window: `starts_at < ends_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingWindow {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

/// Why a window is refused. Each names the field a client must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("ends_at must be after starts_at")]
    EndsNotAfterStarts,
    #[error("the booking must end in the future")]
    EndsInPast,
    #[error(
        "a facility booking must lie within one building-local day ({day}, {timezone}); it may end at the following midnight at the latest"
    )]
    SpansLocalDays { day: NaiveDate, timezone: String },
    #[error("a visit may last {max_hours} hours at most")]
    TooLong { max_hours: i64 },
    #[error("a booking may start {max_days} days ahead at most")]
    TooFarAhead { max_days: i64 },
    #[error(
        "on the building's clock ({timezone}) this window runs from {local_start} to {local_end}, which iPassan and Salto cannot take (a daylight-saving change turns it back)"
    )]
    NotRepresentable {
        timezone: String,
        local_start: NaiveDateTime,
        local_end: NaiveDateTime,
    },
}

impl WindowError {
    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EndsNotAfterStarts => "ends_not_after_starts",
            Self::EndsInPast => "ends_in_past",
            Self::SpansLocalDays { .. } => "spans_several_local_days",
            Self::TooLong { .. } => "window_too_long",
            Self::TooFarAhead { .. } => "too_far_ahead",
            Self::NotRepresentable { .. } => "window_not_representable",
        }
    }

    /// The field a client must change.
    pub fn field(&self) -> &'static str {
        self.field_or("ends_at")
    }

    /// The field a client must change, `blamed` where either end could be (a change of the
    /// window blames the end the client moved).
    pub fn field_or<'a>(&self, blamed: &'a str) -> &'a str {
        match self {
            Self::TooFarAhead { .. } => "starts_at",
            Self::TooLong { .. } => "ends_at",
            _ => blamed,
        }
    }
}

/// How long and how far ahead a window may reach (`CONNECX__LIMITS__MAX_VISIT_HOURS`,
/// `__MAX_DAYS_AHEAD`). Without them a PIN could be made valid until the year 9998, and a window
/// past the year 9999 cannot even be written as the access systems read dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// The longest window; `None` where another rule bounds it (a facility booking's one day).
    pub max_length: Option<Duration>,
    pub max_ahead: Duration,
}

impl BookingWindow {
    /// A window for a new or changed booking: it must end after it starts, and in the future.
    /// Both ends are cut to whole seconds first (iPassan and Salto take nothing finer), so what
    /// is stored, answered and granted is the same window.
    pub fn new(
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Self, WindowError> {
        let (starts_at, ends_at) = (whole_seconds(starts_at), whole_seconds(ends_at));
        if ends_at <= starts_at {
            return Err(WindowError::EndsNotAfterStarts);
        }
        if ends_at <= now {
            return Err(WindowError::EndsInPast);
        }
        Ok(Self { starts_at, ends_at })
    }

    /// A window for a new or changed booking ([`Self::new`]) that keeps within `limits`
    /// ([`Self::check_limits`]).
    pub fn within_limits(
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        limits: &WindowLimits,
        now: DateTime<Utc>,
    ) -> Result<Self, WindowError> {
        let window = Self::new(starts_at, ends_at, now)?;
        window.check_limits(limits, now)?;
        Ok(window)
    }

    /// Checks `limits`: the window starts at most `max_ahead` from `now` and lasts at most
    /// `max_length`.
    pub fn check_limits(
        &self,
        limits: &WindowLimits,
        now: DateTime<Utc>,
    ) -> Result<(), WindowError> {
        if self.starts_at - now > limits.max_ahead {
            return Err(WindowError::TooFarAhead {
                max_days: limits.max_ahead.num_days(),
            });
        }
        match limits.max_length {
            Some(max) if self.ends_at - self.starts_at > max => Err(WindowError::TooLong {
                max_hours: max.num_hours(),
            }),
            _ => Ok(()),
        }
    }

    /// Checks that the access systems can take the window: they are given the building's
    /// wall-clock times, so the local end must come after the local start. Across a change back
    /// from daylight saving a window can be forwards in UTC and backwards on the wall clock
    /// (Sydney `02:30+11:00` → `02:15+10:00`).
    pub fn check_representable(&self, zone: Tz) -> Result<(), WindowError> {
        let (local_start, local_end) = (
            local_time(self.starts_at, zone),
            local_time(self.ends_at, zone),
        );
        if local_start < local_end {
            Ok(())
        } else {
            Err(WindowError::NotRepresentable {
                timezone: zone.name().to_owned(),
                local_start,
                local_end,
            })
        }
    }

    /// A window read back from storage, where the rules were checked when it was written.
    pub fn stored(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Self {
        Self { starts_at, ends_at }
    }

    pub fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at
    }

    pub fn ends_at(&self) -> DateTime<Utc> {
        self.ends_at
    }

    /// The window as events carry it: UTC plus the building's wall clock.
    pub fn in_zone(&self, zone: Tz) -> contracts::BookingWindow {
        contracts::BookingWindow {
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            local_starts_at: local_time(self.starts_at, zone),
            local_ends_at: local_time(self.ends_at, zone),
        }
    }

    /// Checks the facility rule: the whole window lies within the building-local day it starts on.
    /// Ending exactly at the next local midnight (e.g. 20:00–24:00) is within the day.
    pub fn check_single_local_day(&self, zone: Tz) -> Result<(), WindowError> {
        match self.first_instant_off_its_day(zone) {
            None => Ok(()),
            Some(_) => Err(WindowError::SpansLocalDays {
                day: local_time(self.starts_at, zone).date(),
                timezone: zone.name().to_owned(),
            }),
        }
    }

    /// The first instant of the window whose local date is not the one it starts on, if any.
    ///
    /// Between two offset changes the local date only grows, so the window is split at the
    /// zone's offset changes inside it and each piece is looked at at both ends. (A change back
    /// across midnight makes the date go down: Newfoundland's 00:01 → 23:01 in 1987 put a minute
    /// of the 25th between two stretches of the 24th.)
    ///
    /// No local date lasts [`LONGER_THAN_ANY_LOCAL_DAY`], so the instant is found within that
    /// much of the window however long the window is: a window of centuries (a start in the
    /// past is allowed) is not looked at hour by hour.
    pub fn first_instant_off_its_day(&self, zone: Tz) -> Option<DateTime<Utc>> {
        let day = local_time(self.starts_at, zone).date();
        let ends_at = self.ends_at.min(self.starts_at + LONGER_THAN_ANY_LOCAL_DAY);
        let last = ends_at - Duration::nanoseconds(1);
        let mut piece_start = self.starts_at;
        for change in offset_changes(self.starts_at, last, zone)
            .into_iter()
            .chain([ends_at])
        {
            let piece_last = change - Duration::nanoseconds(1);
            if local_time(piece_start, zone).date() != day {
                return Some(piece_start);
            }
            if local_time(piece_last, zone).date() != day {
                // The date grows within the piece: find where it stops being `day`.
                return Some(first_where(piece_start, piece_last, |t| {
                    local_time(t, zone).date() != day
                }));
            }
            piece_start = change;
        }
        // Cut short, the window's first instant past the cut is off its day by the bound's rule.
        (ends_at < self.ends_at).then_some(ends_at)
    }
}

/// Longer than any local date has lasted: the longest, 18 October 1867 in Alaska (the date came
/// twice when the clocks moved across the date line), lasted about 48 hours.
pub const LONGER_THAN_ANY_LOCAL_DAY: Duration = Duration::hours(72);

/// The instants in `(from, to]` at which `zone`'s offset changes (windows span a day or so: it
/// looks hour by hour, then to the second).
fn offset_changes(from: DateTime<Utc>, to: DateTime<Utc>, zone: Tz) -> Vec<DateTime<Utc>> {
    use chrono::Offset;
    let offset = |t: DateTime<Utc>| t.with_timezone(&zone).offset().fix();
    let mut changes = Vec::new();
    let mut at = from;
    while at < to {
        let next = (at + Duration::hours(1)).min(to);
        if offset(at) != offset(next) {
            let first = offset(next);
            changes.push(first_where(at, next, |t| offset(t) == first));
        }
        at = next;
    }
    changes
}

/// The first instant in `(from, to]` where `test` holds, given that it holds at `to` and from
/// some instant on up to `to` (to the second, then to the nanosecond).
fn first_where(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    test: impl Fn(DateTime<Utc>) -> bool,
) -> DateTime<Utc> {
    let (mut lo, mut hi) = (from, to);
    while hi - lo > Duration::nanoseconds(1) {
        let mid = lo + (hi - lo) / 2;
        if test(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// `at` without its fraction of a second.
pub fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(0)
}

/// `at` on the wall clock of `zone`.
pub fn local_time(at: DateTime<Utc>, zone: Tz) -> NaiveDateTime {
    at.with_timezone(&zone).naive_local()
}

/// The first instant of `day` in `zone`. Usually local midnight; where a DST change skips
/// midnight (e.g. São Paulo until 2019), the first wall-clock instant that exists that day;
/// `None` for a day the zone skipped altogether.
pub fn start_of_local_day(day: NaiveDate, zone: Tz) -> Option<DateTime<Utc>> {
    let midnight = day.and_hms_opt(0, 0, 0)?;
    // No zone skips more than a few hours; a day ends after 24 hours of wall clock at most.
    let first_minute = (0..=(24 * 60)).find_map(|minutes| {
        let wall = midnight + Duration::minutes(minutes);
        zone.from_local_datetime(&wall)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })?;
    // A gap may end between two minutes (old offsets had seconds, e.g. Monrovia's -00:44:30
    // until 1972): the day begins at the gap's end, up to a minute earlier.
    if local_time(first_minute, zone).date() != day {
        // The whole day was skipped (Kanton went from 30 December 1994 to 1 January 1995).
        return None;
    }
    let mut start = first_minute;
    for _ in 0..60 {
        let earlier = start - Duration::seconds(1);
        if local_time(earlier, zone).date() != day {
            break;
        }
        start = earlier;
    }
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn naive(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }

    const SYDNEY: Tz = chrono_tz::Australia::Sydney;
    const LONG_AGO: &str = "2000-01-01T00:00:00Z";

    fn window(start: &str, end: &str) -> BookingWindow {
        BookingWindow::new(utc(start), utc(end), utc(LONG_AGO)).unwrap()
    }

    #[test]
    fn a_window_must_end_after_it_starts() {
        let now = utc(LONG_AGO);
        let t = utc("2026-12-01T10:00:00Z");
        assert_eq!(
            BookingWindow::new(t, t, now),
            Err(WindowError::EndsNotAfterStarts)
        );
        assert_eq!(
            BookingWindow::new(t, t - Duration::hours(1), now),
            Err(WindowError::EndsNotAfterStarts)
        );
    }

    const VISIT_LIMITS: WindowLimits = WindowLimits {
        max_length: Some(Duration::hours(72)),
        max_ahead: Duration::days(365),
    };

    #[test]
    fn a_visit_may_last_the_limit_but_not_a_second_more() {
        let now = utc("2026-12-06T00:00:00Z");
        let exactly = window("2026-12-07T00:00:00Z", "2026-12-10T00:00:00Z");
        assert_eq!(exactly.check_limits(&VISIT_LIMITS, now), Ok(()));
        let longer = window("2026-12-07T00:00:00Z", "2026-12-10T00:00:01Z");
        let error = longer.check_limits(&VISIT_LIMITS, now).unwrap_err();
        assert_eq!(error.code(), "window_too_long");
        assert_eq!(error.field_or("starts_at"), "ends_at");
        let unbounded = WindowLimits {
            max_length: None,
            ..VISIT_LIMITS
        };
        assert_eq!(longer.check_limits(&unbounded, now), Ok(()));
    }

    #[test]
    fn a_booking_may_start_the_limit_ahead_and_no_later_not_even_in_the_year_9998() {
        let now = utc("2026-12-06T00:00:00Z");
        let at_the_limit = window("2027-12-06T00:00:00Z", "2027-12-06T02:00:00Z");
        assert_eq!(at_the_limit.check_limits(&VISIT_LIMITS, now), Ok(()));
        for start in [
            "2027-12-06T00:00:01Z",
            "9998-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
        ] {
            // As serde reads a request's times (RFC 3339 itself has no year beyond 9999).
            let starts: DateTime<Utc> = start.parse().unwrap();
            let far = BookingWindow::new(starts, starts + Duration::hours(1), now).unwrap();
            let error = far.check_limits(&VISIT_LIMITS, now).unwrap_err();
            assert_eq!(error.code(), "too_far_ahead", "{start}");
            assert_eq!(error.field(), "starts_at");
        }
    }

    #[test]
    fn a_window_that_already_ended_is_refused_but_one_under_way_is_fine() {
        let now = utc("2026-12-01T10:00:00Z");
        assert_eq!(
            BookingWindow::new(
                utc("2026-12-01T08:00:00Z"),
                utc("2026-12-01T09:00:00Z"),
                now
            ),
            Err(WindowError::EndsInPast)
        );
        assert!(
            BookingWindow::new(
                utc("2026-12-01T09:00:00Z"),
                utc("2026-12-01T11:00:00Z"),
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn the_local_window_is_on_the_buildings_clock() {
        // Sydney is UTC+11 in December (daylight time).
        let local = window("2026-12-01T07:00:00Z", "2026-12-01T11:00:00Z").in_zone(SYDNEY);
        assert_eq!(local.local_starts_at, naive("2026-12-01T18:00"));
        assert_eq!(local.local_ends_at, naive("2026-12-01T22:00"));
        assert_eq!(local.starts_at, utc("2026-12-01T07:00:00Z"));
    }

    #[test]
    fn the_local_window_follows_the_dst_change_inside_it() {
        // Sydney leaves daylight time on 2026-04-05 at 03:00 (+11) → 02:00 (+10).
        let local = window("2026-04-04T14:30:00Z", "2026-04-04T17:30:00Z").in_zone(SYDNEY);
        assert_eq!(local.local_starts_at, naive("2026-04-05T01:30"));
        assert_eq!(local.local_ends_at, naive("2026-04-05T03:30"));
        // Sydney enters daylight time on 2026-10-04 at 02:00 (+10) → 03:00 (+11).
        let local = window("2026-10-03T15:30:00Z", "2026-10-03T16:30:00Z").in_zone(SYDNEY);
        assert_eq!(local.local_starts_at, naive("2026-10-04T01:30"));
        assert_eq!(local.local_ends_at, naive("2026-10-04T03:30"));
    }

    #[test]
    fn a_facility_booking_within_one_local_day_is_accepted() {
        // 18:00–22:00 Sydney.
        let w = window("2026-12-01T07:00:00Z", "2026-12-01T11:00:00Z");
        assert!(w.check_single_local_day(SYDNEY).is_ok());
    }

    #[test]
    fn a_facility_booking_may_end_at_the_next_local_midnight_but_not_after() {
        // 20:00–24:00 Sydney (+11).
        let w = window("2026-12-01T09:00:00Z", "2026-12-01T13:00:00Z");
        assert!(w.check_single_local_day(SYDNEY).is_ok());
        // 20:00–00:01.
        let w = window("2026-12-01T09:00:00Z", "2026-12-01T13:01:00Z");
        assert_eq!(
            w.check_single_local_day(SYDNEY),
            Err(WindowError::SpansLocalDays {
                day: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                timezone: "Australia/Sydney".into()
            })
        );
    }

    #[test]
    fn a_window_of_centuries_spans_several_days_and_is_judged_at_once() {
        // Looked at hour by hour, this window kept a debug build busy for minutes (nextest's
        // slow-test timeout ends such a regression); it is judged within three days of its start.
        let w = window("0323-04-29T23:52:50Z", "8634-06-21T07:33:13Z");
        assert!(matches!(
            w.check_single_local_day(SYDNEY),
            Err(WindowError::SpansLocalDays { .. })
        ));
        // Just past the bound, the answer is the one the search would give.
        let w = window("2026-12-01T07:00:00Z", "2026-12-04T07:00:01Z");
        assert_eq!(
            w.first_instant_off_its_day(SYDNEY),
            Some(utc("2026-12-01T13:00:00Z")),
            "Sydney's midnight"
        );
    }

    #[test]
    fn the_local_day_is_the_buildings_not_utcs() {
        // 09:00–13:00 Sydney on 2 Dec is 22:00 (1 Dec) – 02:00 (2 Dec) UTC: one local day.
        let w = window("2026-12-01T22:00:00Z", "2026-12-02T02:00:00Z");
        assert!(w.check_single_local_day(SYDNEY).is_ok());
        // 10:00–12:00 UTC on one UTC day is 21:00–23:00 Sydney: fine; 12:00–14:00 UTC crosses
        // Sydney midnight (23:00–01:00).
        assert!(
            window("2026-12-01T10:00:00Z", "2026-12-01T12:00:00Z")
                .check_single_local_day(SYDNEY)
                .is_ok()
        );
        assert!(
            window("2026-12-01T12:00:00Z", "2026-12-01T14:00:00Z")
                .check_single_local_day(SYDNEY)
                .is_err()
        );
        assert!(
            window("2026-12-01T12:00:00Z", "2026-12-01T14:00:00Z")
                .check_single_local_day(chrono_tz::UTC)
                .is_ok()
        );
    }

    #[test]
    fn the_local_day_rule_holds_on_dst_days() {
        // 5 April 2026 in Sydney has 25 hours: 00:00 (+11) is 13:00 UTC on the 4th, the next
        // midnight (+10) is 14:00 UTC on the 5th.
        let whole_long_day = window("2026-04-04T13:00:00Z", "2026-04-05T14:00:00Z");
        assert!(whole_long_day.check_single_local_day(SYDNEY).is_ok());
        assert!(
            window("2026-04-04T13:00:00Z", "2026-04-05T14:01:00Z")
                .check_single_local_day(SYDNEY)
                .is_err()
        );
        // 4 October 2026 has 23 hours: 00:00 (+10) is 14:00 UTC on the 3rd, the next midnight
        // (+11) is 13:00 UTC on the 4th.
        assert!(
            window("2026-10-03T14:00:00Z", "2026-10-04T13:00:00Z")
                .check_single_local_day(SYDNEY)
                .is_ok()
        );
        assert!(
            window("2026-10-03T14:00:00Z", "2026-10-04T13:30:00Z")
                .check_single_local_day(SYDNEY)
                .is_err()
        );
    }

    #[test]
    fn a_window_running_backwards_on_the_wall_clock_is_not_representable() {
        // 5 April 2026, Sydney: 03:00 (+11) becomes 02:00 (+10). 02:30+11:00 → 02:15+10:00 is
        // 45 minutes forwards in UTC and 15 minutes backwards on the wall clock.
        let backwards = BookingWindow::new(
            DateTime::parse_from_rfc3339("2026-04-05T02:30:00+11:00")
                .unwrap()
                .with_timezone(&Utc),
            DateTime::parse_from_rfc3339("2026-04-05T02:15:00+10:00")
                .unwrap()
                .with_timezone(&Utc),
            utc(LONG_AGO),
        )
        .unwrap();
        let error = backwards.check_representable(SYDNEY).unwrap_err();
        assert_eq!(error.code(), "window_not_representable");
        // Ending on the same wall-clock time it started is empty there: refused too.
        let empty = BookingWindow::new(
            DateTime::parse_from_rfc3339("2026-04-05T02:30:00+11:00")
                .unwrap()
                .with_timezone(&Utc),
            DateTime::parse_from_rfc3339("2026-04-05T02:30:00+10:00")
                .unwrap()
                .with_timezone(&Utc),
            utc(LONG_AGO),
        )
        .unwrap();
        assert!(empty.check_representable(SYDNEY).is_err());
        // Across the change but forwards on the wall clock: fine.
        assert!(
            window("2026-04-04T15:00:00Z", "2026-04-04T17:00:00Z")
                .check_representable(SYDNEY)
                .is_ok()
        );
    }

    #[test]
    fn fractions_of_a_second_are_cut_from_both_ends() {
        let w = BookingWindow::new(
            utc("2026-12-07T07:00:00.999Z"),
            utc("2026-12-07T09:00:00.001Z"),
            utc(LONG_AGO),
        )
        .unwrap();
        assert_eq!(w.starts_at(), utc("2026-12-07T07:00:00Z"));
        assert_eq!(w.ends_at(), utc("2026-12-07T09:00:00Z"));
        // A window shorter than a second, once cut, is empty.
        let empty = BookingWindow::new(
            utc("2026-12-07T07:00:00.1Z"),
            utc("2026-12-07T07:00:00.9Z"),
            utc(LONG_AGO),
        );
        assert_eq!(empty, Err(WindowError::EndsNotAfterStarts));
    }

    #[test]
    fn a_change_back_across_midnight_keeps_a_window_on_the_day_it_is_on() {
        // Newfoundland, 25 October 1987: at 00:01 (-02:30) clocks went back to 23:01 (-03:30)
        // of the 24th. One second at 23:01:01 after the change is on the 24th, although the
        // 25th had begun (for a minute) before it.
        let zone = chrono_tz::America::St_Johns;
        let after_the_change =
            BookingWindow::stored(utc("1987-10-25T02:31:01Z"), utc("1987-10-25T02:31:02Z"));
        assert_eq!(after_the_change.first_instant_off_its_day(zone), None);
        assert!(after_the_change.check_single_local_day(zone).is_ok());
        // From 23:30 (-02:30) on the 24th across that minute of the 25th: refused, and the
        // first instant off the day is the 25th's 00:00.
        let across =
            BookingWindow::stored(utc("1987-10-25T02:00:55Z"), utc("1987-10-25T02:41:03Z"));
        assert_eq!(
            across.first_instant_off_its_day(zone),
            Some(utc("1987-10-25T02:30:00Z"))
        );
        assert!(across.check_single_local_day(zone).is_err());
    }

    #[test]
    fn a_day_whose_midnight_was_skipped_starts_at_its_first_minute() {
        // São Paulo entered daylight time on 2018-11-04 at 00:00 → 01:00 (-03 → -02).
        let zone = chrono_tz::America::Sao_Paulo;
        let day = NaiveDate::from_ymd_opt(2018, 11, 4).unwrap();
        assert_eq!(
            start_of_local_day(day, zone),
            Some(utc("2018-11-04T03:00:00Z"))
        );
        // 3 Nov 22:00 → 4 Nov 01:00 local (the first minute of the 4th): within the 3rd.
        let w = window("2018-11-04T01:00:00Z", "2018-11-04T03:00:00Z");
        assert!(w.check_single_local_day(zone).is_ok());
        let w = window("2018-11-04T01:00:00Z", "2018-11-04T03:01:00Z");
        assert!(w.check_single_local_day(zone).is_err());
    }

    /// Local-time rules over every IANA zone, around its offset changes: each case picks a zone
    /// and a year, finds the zone's transitions in that year (hour by hour), and looks at windows
    /// and days around one of them (or anywhere in the year, for zones without one).
    mod around_transitions {
        use proptest::prelude::*;

        use super::*;

        /// The instants in `year` at which `zone`'s offset changes (to the hour before them).
        fn transitions(zone: Tz, year: i32) -> Vec<DateTime<Utc>> {
            use chrono::Offset;
            let start = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap();
            let offset = |t: DateTime<Utc>| t.with_timezone(&zone).offset().fix();
            (0..366 * 24)
                .map(|h| start + Duration::hours(h))
                .filter(|t| offset(*t) != offset(*t + Duration::hours(1)))
                .map(|t| {
                    // To the second: the first instant with the new offset.
                    let mut change = t + Duration::hours(1);
                    let mut step = Duration::minutes(30);
                    while step >= Duration::seconds(1) {
                        while offset(change - step) == offset(change) {
                            change -= step;
                        }
                        step = step / 2;
                    }
                    change
                })
                .collect()
        }

        /// (zone, an instant near one of its transitions)
        fn zone_and_instant() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
            (
                0..chrono_tz::TZ_VARIANTS.len(),
                1970..2038i32,
                any::<prop::sample::Index>(),
                -3 * 3600..3 * 3600i64,
                0..366 * 86_400i64,
            )
                .prop_map(|(zone, year, which, around, anywhere)| {
                    let zone = chrono_tz::TZ_VARIANTS[zone];
                    let changes = transitions(zone, year);
                    let at = if changes.is_empty() {
                        Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap()
                            + Duration::seconds(anywhere)
                    } else {
                        *which.get(&changes) + Duration::seconds(around)
                    };
                    (zone, at)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn every_instant_is_one_of_the_instants_its_wall_clock_time_names(
                (zone, at) in zone_and_instant()
            ) {
                let wall = local_time(at, zone);
                let named: Vec<DateTime<Utc>> = match zone.from_local_datetime(&wall) {
                    chrono::LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
                    chrono::LocalResult::Ambiguous(a, b) => {
                        vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]
                    }
                    chrono::LocalResult::None => vec![],
                };
                prop_assert!(named.contains(&at), "{} in {}: {wall} names {named:?}", at, zone.name());
            }

            #[test]
            fn a_representable_window_runs_forwards_on_the_wall_clock_and_its_events_say_so(
                (zone, at) in zone_and_instant(),
                length in 1..6 * 3600i64,
            ) {
                let w = BookingWindow::stored(at, at + Duration::seconds(length));
                let local = w.in_zone(zone);
                prop_assert_eq!(local.local_starts_at, local_time(w.starts_at(), zone));
                prop_assert_eq!(local.local_ends_at, local_time(w.ends_at(), zone));
                prop_assert_eq!(
                    w.check_representable(zone).is_ok(),
                    local.local_starts_at < local.local_ends_at
                );
            }

            #[test]
            fn a_local_day_begins_at_its_first_instant(
                (zone, at) in zone_and_instant(),
                days_later in 0..2i64,
            ) {
                let day = local_time(at, zone).date() + Duration::days(days_later);
                let Some(start) = start_of_local_day(day, zone) else {
                    // A skipped day: the day before it ends where the day after it begins.
                    let after = start_of_local_day(day + Duration::days(1), zone).expect("the next day");
                    prop_assert!(local_time(after - Duration::seconds(1), zone).date() < day, "{} {}", zone.name(), day);
                    return Ok(());
                };
                prop_assert_eq!(local_time(start, zone).date(), day, "{} {}", zone.name(), day);
                prop_assert!(
                    local_time(start - Duration::seconds(1), zone).date() < day,
                    "{} {}: {} is not the first instant", zone.name(), day, start
                );
            }

            #[test]
            fn an_accepted_facility_window_lies_on_the_local_day_it_starts(
                (zone, at) in zone_and_instant(),
                length in 1..26 * 3600i64,
            ) {
                let w = BookingWindow::stored(at, at + Duration::seconds(length));
                let day = local_time(at, zone).date();
                match w.first_instant_off_its_day(zone) {
                    None => {
                        prop_assert!(w.check_single_local_day(zone).is_ok());
                        for n in 0..=64 {
                            let inside = at + Duration::seconds((length - 1) * n / 64);
                            prop_assert_eq!(
                                local_time(inside, zone).date(), day,
                                "{} {} → {}: {} is not on the first day", zone.name(), at, w.ends_at(), inside
                            );
                        }
                    }
                    Some(off) => {
                        prop_assert!(w.check_single_local_day(zone).is_err());
                        prop_assert!(at <= off && off < w.ends_at(), "{} outside the window", off);
                        prop_assert_ne!(local_time(off, zone).date(), day);
                        // And it is the first: an instant just before is still on the day.
                        if off > at {
                            prop_assert_eq!(
                                local_time(off - Duration::nanoseconds(1), zone).date(), day,
                                "{} {}: {} is not the first instant off the day", zone.name(), at, off
                            );
                        }
                    }
                }
            }
        }
    }
}
