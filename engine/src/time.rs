//! Time: business calendars, cron schedules in a zone, and calendar period ids.
//!
//! Nothing here reads the system clock; every function takes the instant it works from.

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use steward_dsl::ast::CalendarUnit;

/// How far business-time arithmetic searches for working time before giving up.
const MAX_SEARCH_DAYS: i64 = 3_660;

/// Working hours, holidays and freeze windows in one IANA zone.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessCalendar {
    pub zone: Tz,
    /// Working ranges per weekday (Monday first), minutes after local midnight.
    pub hours: [Vec<(u32, u32)>; 7],
    pub holidays: BTreeSet<NaiveDate>,
    pub freezes: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl BusinessCalendar {
    pub fn new(zone: Tz) -> Self {
        BusinessCalendar {
            zone,
            hours: Default::default(),
            holidays: BTreeSet::new(),
            freezes: Vec::new(),
        }
    }

    /// Merges another calendar's hours, holidays and freezes into this one (`include`).
    pub fn include(&mut self, other: &BusinessCalendar) {
        for (mine, theirs) in self.hours.iter_mut().zip(&other.hours) {
            mine.extend(theirs.iter().copied());
            mine.sort_unstable();
            mine.dedup();
        }
        self.holidays.extend(other.holidays.iter().copied());
        self.freezes.extend(other.freezes.iter().copied());
    }

    fn ranges_on(&self, date: NaiveDate) -> &[(u32, u32)] {
        if self.holidays.contains(&date) {
            return &[];
        }
        &self.hours[date.weekday().num_days_from_monday() as usize]
    }

    /// The working intervals of one local date, as instants.
    fn intervals_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        self.ranges_on(date)
            .iter()
            .filter_map(|&(start, end)| {
                let from = local_instant(self.zone, date, start)?;
                let to = local_instant(self.zone, date, end)?;
                (to > from).then_some((from, to))
            })
            .collect()
    }

    pub fn is_working(&self, at: DateTime<Utc>) -> bool {
        let date = at.with_timezone(&self.zone).date_naive();
        self.intervals_on(date)
            .iter()
            .any(|&(from, to)| from <= at && at < to)
    }

    pub fn in_freeze(&self, at: DateTime<Utc>) -> bool {
        self.freezes.iter().any(|&(from, to)| from <= at && at < to)
    }

    /// `start` plus `seconds` of working time.
    pub fn add_working_time(&self, start: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
        let mut remaining = Duration::seconds(seconds);
        let mut date = start.with_timezone(&self.zone).date_naive();
        for _ in 0..MAX_SEARCH_DAYS {
            for (from, to) in self.intervals_on(date) {
                let from = from.max(start);
                if to <= from {
                    continue;
                }
                let available = to - from;
                if remaining <= available {
                    return Some(from + remaining);
                }
                remaining -= available;
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// `start` plus `days` working days: the same local time on the `days`-th next
    /// working day. A start outside working hours counts from the next working period.
    /// (2 business days from Friday 17:00 on 08:00–18:00 weekdays is Tuesday 17:00.)
    pub fn add_working_days(&self, start: DateTime<Utc>, days: i64) -> Option<DateTime<Utc>> {
        let start = self.next_working_instant(start)?;
        let local = start.with_timezone(&self.zone);
        let minute = local.hour_minute();
        let mut date = local.date_naive();
        let mut counted = 0;
        for _ in 0..MAX_SEARCH_DAYS {
            if counted == days {
                break;
            }
            date = date.succ_opt()?;
            if !self.ranges_on(date).is_empty() {
                counted += 1;
            }
        }
        if counted != days {
            return None;
        }
        // Clamp into that day's working time when its hours differ.
        let ranges = self.ranges_on(date);
        let first = ranges.iter().map(|r| r.0).min()?;
        let last = ranges.iter().map(|r| r.1).max()?;
        local_instant(self.zone, date, minute.max(first).min(last))
    }

    /// The first instant at or after `at` inside working hours.
    pub fn next_working_instant(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut date = at.with_timezone(&self.zone).date_naive();
        for _ in 0..MAX_SEARCH_DAYS {
            for (from, to) in self.intervals_on(date) {
                if at < to {
                    return Some(from.max(at));
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// Exact working-time arithmetic with sub-second precision, for SLA clocks.
impl BusinessCalendar {
    /// The working time between two instants: how much of `[from, to)` lies inside
    /// working hours. Exact across daylight-saving changes (a working range is measured
    /// between its two instants, so a range spanning a change counts an hour more or
    /// less); zero when `to <= from`.
    pub fn working_time_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        let mut total = Duration::zero();
        if to <= from {
            return total;
        }
        let mut date = from.with_timezone(&self.zone).date_naive();
        let last = to.with_timezone(&self.zone).date_naive();
        while date <= last {
            for (start, end) in self.intervals_on(date) {
                let (a, b) = (start.max(from), end.min(to));
                if b > a {
                    total += b - a;
                }
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        total
    }

    /// The instant when `amount` of working time, counted from `start`, is used up:
    /// the inverse of [`BusinessCalendar::working_time_between`]. An amount ending
    /// exactly at the end of a working range ends there (18:00, not the next morning).
    pub fn add_working(&self, start: DateTime<Utc>, amount: Duration) -> Option<DateTime<Utc>> {
        let mut remaining = amount;
        if remaining <= Duration::zero() {
            return Some(start);
        }
        let mut date = start.with_timezone(&self.zone).date_naive();
        for _ in 0..MAX_SEARCH_DAYS {
            for (from, to) in self.intervals_on(date) {
                let from = from.max(start);
                if to <= from {
                    continue;
                }
                let available = to - from;
                if remaining <= available {
                    return Some(from + remaining);
                }
                remaining -= available;
            }
            date = date.succ_opt()?;
        }
        None
    }
}

trait HourMinute {
    fn hour_minute(&self) -> u32;
}

impl HourMinute for DateTime<Tz> {
    fn hour_minute(&self) -> u32 {
        use chrono::Timelike;
        self.hour() * 60 + self.minute()
    }
}

/// The instant of a local wall-clock time; a time inside a daylight-saving gap maps to
/// the first instant after the gap, a repeated time to its first occurrence.
pub fn local_instant(zone: Tz, date: NaiveDate, minutes: u32) -> Option<DateTime<Utc>> {
    let naive = if minutes >= 24 * 60 {
        date.succ_opt()?.and_time(NaiveTime::MIN)
    } else {
        date.and_time(NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0)?)
    };
    resolve_local(zone, naive)
}

pub fn resolve_local(zone: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earliest, _) => Some(earliest.with_timezone(&Utc)),
        LocalResult::None => {
            // Walk forward to the end of the gap (gaps are whole minutes, < 24 h).
            use chrono::Timelike;
            let mut probe = naive.with_second(0)?;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                if let Some(t) = zone.from_local_datetime(&probe).earliest() {
                    return Some(t.with_timezone(&Utc));
                }
            }
            None
        }
    }
}

/// A cron schedule in a zone. Steward's dialect follows Cronos: 5 fields (minute first)
/// or 6 fields (seconds first); day-of-month and day-of-week must both match; a run in
/// a skipped daylight-saving hour fires at the first instant after the gap, a run in a
/// repeated hour fires once.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    pub zone: Tz,
}

impl Schedule {
    pub fn parse(expr: &str, zone: Tz) -> Result<Schedule, String> {
        Ok(Schedule {
            cron: parse_cron(expr)?,
            zone,
        })
    }

    /// The first run at or after `from`.
    pub fn next_from(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = from.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Parses a cron expression in Steward's dialect.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!("expected 5 or 6 fields, found {fields}"));
    }
    CronParser::builder()
        .seconds(if fields == 6 {
            Seconds::Required
        } else {
            Seconds::Disallowed
        })
        .year(Year::Disallowed)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

/// The id of the calendar period containing `at` in `zone`: `2026-03-14`, `2026-W11`,
/// `2026-03`, `2026-Q1`, `2026`.
pub fn period_id(unit: CalendarUnit, at: DateTime<Utc>, zone: Tz) -> String {
    let local = at.with_timezone(&zone);
    match unit {
        CalendarUnit::Day => local.format("%Y-%m-%d").to_string(),
        CalendarUnit::Week => {
            let week = local.iso_week();
            format!("{}-W{:02}", week.year(), week.week())
        }
        CalendarUnit::Month => local.format("%Y-%m").to_string(),
        CalendarUnit::Quarter => format!("{}-Q{}", local.year(), local.month0() / 3 + 1),
        CalendarUnit::Year => local.year().to_string(),
    }
}

/// The natural period of a schedule, judged by the gap between two runs: quarterly
/// schedules get `2026-Q1` ids, monthly `2026-03`, weekly `2026-W11`, daily dates.
pub fn period_unit(run: DateTime<Utc>, next: Option<DateTime<Utc>>) -> Option<CalendarUnit> {
    let gap = next? - run;
    let days = gap.num_hours() / 24;
    Some(match days {
        d if d >= 360 => CalendarUnit::Year,
        d if d >= 85 => CalendarUnit::Quarter,
        d if d >= 27 => CalendarUnit::Month,
        d if d >= 6 => CalendarUnit::Week,
        d if d >= 1 => CalendarUnit::Day,
        _ => return None,
    })
}

/// Weekday names as written in calendars.
pub fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn office() -> BusinessCalendar {
        let mut cal = BusinessCalendar::new(chrono_tz::Europe::Berlin);
        for day in 0..5 {
            cal.hours[day] = vec![(8 * 60, 18 * 60)];
        }
        cal
    }

    #[test]
    fn two_business_days_from_friday_evening_end_tuesday() {
        // Friday 2026-03-06 17:00 Berlin (16:00Z) + 2 working days = Tuesday 17:00.
        let end = office()
            .add_working_days(utc("2026-03-06T16:00:00Z"), 2)
            .unwrap();
        assert_eq!(end, utc("2026-03-10T16:00:00Z"));
    }

    #[test]
    fn working_hours_skip_the_weekend() {
        // Friday 17:30 + 4 working hours: 30 min on Friday, 3.5 h on Monday → 11:30.
        let end = office()
            .add_working_time(utc("2026-03-06T16:30:00Z"), 4 * 3600)
            .unwrap();
        assert_eq!(end, utc("2026-03-09T10:30:00Z"));
    }

    #[test]
    fn quarterly_schedule_in_berlin() {
        let s = Schedule::parse("0 0 9 1 1,4,7,10 *", chrono_tz::Europe::Berlin).unwrap();
        let next = s.next_after(utc("2026-01-15T00:00:00Z")).unwrap();
        assert_eq!(next, utc("2026-04-01T07:00:00Z"));
        assert_eq!(
            period_unit(next, s.next_after(next)),
            Some(CalendarUnit::Quarter)
        );
        assert_eq!(
            period_id(CalendarUnit::Quarter, next, chrono_tz::Europe::Berlin),
            "2026-Q2"
        );
    }
}

#[cfg(test)]
mod working_time_tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn office() -> BusinessCalendar {
        let mut cal = BusinessCalendar::new(chrono_tz::Europe::Berlin);
        for day in 0..5 {
            cal.hours[day] = vec![(8 * 60, 18 * 60)];
        }
        cal
    }

    #[test]
    fn working_time_between_skips_nights_and_weekends() {
        // Friday 2026-03-06 17:30 Berlin (16:30Z) to Monday 10:30 Berlin (09:30Z):
        // 30 minutes on Friday, 2.5 hours on Monday.
        let d =
            office().working_time_between(utc("2026-03-06T16:30:00Z"), utc("2026-03-09T09:30:00Z"));
        assert_eq!(d, Duration::minutes(180));
        assert_eq!(
            office().working_time_between(utc("2026-03-09T09:30:00Z"), utc("2026-03-06T16:30:00Z")),
            Duration::zero()
        );
    }

    #[test]
    fn working_time_between_keeps_sub_seconds_and_holidays() {
        let mut cal = office();
        cal.holidays
            .insert(NaiveDate::from_ymd_opt(2026, 3, 9).unwrap());
        // Monday is a holiday: Friday 17:59:59.5 Berlin to Tuesday 08:00:01 = 1.5 s.
        let d =
            cal.working_time_between(utc("2026-03-06T16:59:59.5Z"), utc("2026-03-10T07:00:01Z"));
        assert_eq!(d, Duration::milliseconds(1_500));
    }

    #[test]
    fn working_time_is_exact_across_daylight_saving_changes() {
        // A round-the-clock calendar: Sunday 2026-03-29 in Berlin has 23 hours, Sunday
        // 2026-10-25 has 25.
        let mut cal = BusinessCalendar::new(chrono_tz::Europe::Berlin);
        for day in 0..7 {
            cal.hours[day] = vec![(0, 24 * 60)];
        }
        let spring =
            cal.working_time_between(utc("2026-03-28T23:00:00Z"), utc("2026-03-29T22:00:00Z"));
        assert_eq!(spring, Duration::hours(23));
        let autumn =
            cal.working_time_between(utc("2026-10-24T22:00:00Z"), utc("2026-10-25T23:00:00Z"));
        assert_eq!(autumn, Duration::hours(25));
        // The inverse agrees: 2 hours from Sunday 01:30 (spring) ends at 04:30 local,
        // 03:30 wall time never existed: 00:30Z + 2 h = 02:30Z.
        assert_eq!(
            cal.add_working(utc("2026-03-29T00:30:00Z"), Duration::hours(2)),
            Some(utc("2026-03-29T02:30:00Z"))
        );
        // Office hours the Monday after each change are still 10 hours long.
        assert_eq!(
            office().working_time_between(utc("2026-03-29T00:00:00Z"), utc("2026-03-31T00:00:00Z")),
            Duration::hours(10)
        );
    }

    #[test]
    fn add_working_is_the_inverse_of_working_time_between() {
        let cal = office();
        let start = utc("2026-03-06T16:30:00.25Z");
        for minutes in [1, 29, 30, 31, 600, 631, 3_000] {
            let amount = Duration::minutes(minutes) + Duration::milliseconds(125);
            let end = cal.add_working(start, amount).unwrap();
            assert_eq!(
                cal.working_time_between(start, end),
                amount,
                "{minutes} min"
            );
        }
        // An amount that ends with a working range ends there, not the next morning.
        assert_eq!(
            cal.add_working(utc("2026-03-06T16:00:00Z"), Duration::hours(1)),
            Some(utc("2026-03-06T17:00:00Z"))
        );
    }
}
