//! Time: business calendars, cron schedules in a zone, and calendar period ids.
//!
//! Nothing here reads the system clock; every function takes the instant it works from.

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime,
    TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use steward_dsl::ast::CalendarUnit;
use steward_dsl::cron::LastDayOffset;

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
    /// Freeze windows that recur (`freeze every "CRON" for DURATION`).
    pub recurring_freezes: Vec<RecurringFreeze>,
}

/// A freeze window that opens at each run of a cron schedule (in the zone of the
/// calendar that declares it) and lasts a fixed elapsed time.
#[derive(Debug, Clone)]
pub struct RecurringFreeze {
    pub expr: String,
    pub schedule: Schedule,
    pub seconds: i64,
}

impl PartialEq for RecurringFreeze {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
            && self.schedule.zone == other.schedule.zone
            && self.seconds == other.seconds
    }
}

impl RecurringFreeze {
    pub fn new(expr: &str, zone: Tz, seconds: i64) -> Result<RecurringFreeze, String> {
        Ok(RecurringFreeze {
            expr: expr.to_string(),
            schedule: Schedule::parse(expr, zone)?,
            seconds,
        })
    }

    /// The window containing `at`, if any: the earliest run in `(at - length, at]`
    /// opens it.
    pub fn window_at(&self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if self.seconds <= 0 {
            return None;
        }
        let length = Duration::seconds(self.seconds);
        let opened = self.schedule.next_after(at - length)?;
        (opened <= at).then(|| (opened, opened + length))
    }
}

impl BusinessCalendar {
    pub fn new(zone: Tz) -> Self {
        BusinessCalendar {
            zone,
            hours: Default::default(),
            holidays: BTreeSet::new(),
            freezes: Vec::new(),
            recurring_freezes: Vec::new(),
        }
    }

    /// Merges another calendar's hours, holidays and freezes into this one (`include`):
    /// the working time becomes the union of both (overlapping ranges count once), read
    /// on this calendar's wall clock; holidays and freezes add up. Recurring freezes
    /// keep the zone of the calendar that declared them.
    pub fn include(&mut self, other: &BusinessCalendar) {
        for (mine, theirs) in self.hours.iter_mut().zip(&other.hours) {
            mine.extend(theirs.iter().copied());
            *mine = merge_ranges(std::mem::take(mine));
        }
        self.holidays.extend(other.holidays.iter().copied());
        self.freezes.extend(other.freezes.iter().copied());
        for f in &other.recurring_freezes {
            if !self.recurring_freezes.contains(f) {
                self.recurring_freezes.push(f.clone());
            }
        }
    }

    fn ranges_on(&self, date: NaiveDate) -> &[(u32, u32)] {
        if self.holidays.contains(&date) {
            return &[];
        }
        &self.hours[date.weekday().num_days_from_monday() as usize]
    }

    /// The working intervals of one local date, as instants, sorted and disjoint. A
    /// range starts at the first occurrence of its start time and ends at the last
    /// occurrence of its end time (a range across a repeated hour holds it twice); a
    /// time in a skipped hour maps to the end of the gap.
    fn intervals_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for &(start, end) in &merge_ranges(self.ranges_on(date).to_vec()) {
            let (Some(from), Some(to)) = (
                local_instant(self.zone, date, start),
                local_instant_latest(self.zone, date, end),
            ) else {
                continue;
            };
            if to <= from {
                continue;
            }
            match out.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => out.push((from, to)),
            }
        }
        out
    }

    /// Working time between two instants, in seconds: the length of the working
    /// intervals inside `[a, b)`; negative when `b` is before `a`. Freezes do not
    /// count: they stop changes, not the clock.
    pub fn working_seconds_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
        if b < a {
            return -self.working_seconds_between(b, a);
        }
        let mut total = 0;
        let mut date = a.with_timezone(&self.zone).date_naive();
        let last = b.with_timezone(&self.zone).date_naive();
        while date <= last {
            for (from, to) in self.intervals_on(date) {
                let (from, to) = (from.max(a), to.min(b));
                if to > from {
                    total += (to - from).num_seconds();
                }
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        total
    }

    pub fn is_working(&self, at: DateTime<Utc>) -> bool {
        let date = at.with_timezone(&self.zone).date_naive();
        self.intervals_on(date)
            .iter()
            .any(|&(from, to)| from <= at && at < to)
    }

    pub fn in_freeze(&self, at: DateTime<Utc>) -> bool {
        self.freeze_at(at).is_some()
    }

    /// The freeze window containing `at` (start inclusive, end exclusive), if any.
    pub fn freeze_at(&self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.freezes
            .iter()
            .copied()
            .find(|&(from, to)| from <= at && at < to)
            .or_else(|| self.recurring_freezes.iter().find_map(|f| f.window_at(at)))
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

/// Like [`local_instant`], but a repeated time maps to its last occurrence: the end of
/// a range of wall-clock time.
pub fn local_instant_latest(zone: Tz, date: NaiveDate, minutes: u32) -> Option<DateTime<Utc>> {
    if minutes >= 24 * 60 {
        return local_instant(zone, date, minutes);
    }
    let naive = date.and_time(NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0)?);
    match zone.from_local_datetime(&naive) {
        LocalResult::Ambiguous(_, latest) => Some(latest.with_timezone(&Utc)),
        _ => resolve_local(zone, naive),
    }
}

/// Sorted ranges with overlapping or touching ones joined.
fn merge_ranges(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
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

/// A cron schedule in a zone. Steward's dialect follows Cronos (see
/// [`steward_dsl::cron`]): 5 fields (minute first) or 6 fields (seconds first);
/// day-of-month and day-of-week must both match. Daylight saving time follows Cronos
/// too:
///
/// - runs whose wall-clock time falls in a skipped hour fire once, at the first instant
///   after the gap;
/// - in a repeated hour, a fixed-time schedule (`0 30 1 * * *`) fires once, at the first
///   occurrence; an interval schedule (`*` or a step in the second, minute or hour
///   field, as in `0 */30 * * * *`) fires in both occurrences, following elapsed time.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression, less an `L-n` day of the month.
    cron: Cron,
    pub zone: Tz,
    /// An interval schedule: fires in both occurrences of a repeated hour.
    interval: bool,
    /// `L-n` or `L-nW`: the day of the month runs must fall on as well.
    last_day: Option<LastDayOffset>,
}

/// How many years ahead a schedule with an `L-n` day looks for its next run before it
/// concludes there is none: `* * L-1 2 SUN#5` asks for a fifth Sunday of February on
/// the 28th, which never comes.
const LAST_DAY_YEARS: i32 = 400;

/// How far around an instant a daylight-saving change is looked for, in hours (changes
/// are less than 3 hours and months apart).
const DST_REACH: i64 = 3;

impl Schedule {
    pub fn parse(expr: &str, zone: Tz) -> Result<Schedule, String> {
        let (rest, last_day) = steward_dsl::cron::last_day_offset(expr)?;
        Ok(Schedule {
            cron: parse_cron(&rest)?,
            zone,
            interval: is_interval(expr),
            last_day,
        })
    }

    /// The first run at or after `from`.
    pub fn next_from(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next(from, true)
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next(after, false)
    }

    fn next(&self, from: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        use chrono::{Offset, Timelike};
        // Runs are on whole seconds: from a fraction of a second, the next whole one.
        let (from, inclusive) = match from.nanosecond() {
            0 => (from, inclusive),
            _ => (from.with_nanosecond(0)?, false),
        };
        let reach = Duration::hours(DST_REACH);
        let offset = |t: DateTime<Utc>| {
            i64::from(t.with_timezone(&self.zone).offset().fix().local_minus_utc())
        };
        // How far the clocks go back near `t` (0 without a fall-back change within
        // reach): only then may a later wall-clock time be an earlier instant.
        let overlap =
            |t: DateTime<Utc>| Duration::seconds((offset(t - reach) - offset(t + reach)).max(0));
        let accept = |t: DateTime<Utc>| if inclusive { t >= from } else { t > from };
        let local = from.with_timezone(&self.zone).naive_local();
        // After a fall-back, wall-clock times a little before `from`'s may still be ahead
        // of it (the second pass of the repeated hour).
        let mut cursor = local - overlap(from);
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        loop {
            let Some(candidate) = self.next_wall_clock(cursor) else {
                return best.map(|(b, _)| b);
            };
            if let Some((b, wall)) = best
                && candidate > wall + overlap(b)
            {
                return Some(b);
            }
            for (t, gap) in self.instants(candidate) {
                // A run moved out of a gap is due after the gap's wall-clock start:
                // from the gap's end itself it is already past.
                let due = if gap { t > from } else { accept(t) };
                if due && best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, candidate));
                }
            }
            cursor = candidate + Duration::seconds(1);
        }
    }

    /// The first wall-clock time at or after `from` that the expression matches.
    fn next_wall_clock(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let next = |from: NaiveDateTime| {
            self.cron
                .find_next_occurrence(&Utc.from_utc_datetime(&from), true)
                .ok()
                .map(|t| t.naive_utc())
        };
        let Some(last_day) = self.last_day else {
            return next(from);
        };
        // Runs of the rest of the expression, skipped forward to the day `L-n` names in
        // their month, or to the next month when they are past it.
        let until = from.year().saturating_add(LAST_DAY_YEARS);
        let mut cursor = from;
        loop {
            let run = next(cursor)?;
            if run.year() > until {
                return None;
            }
            let (year, month) = (run.year(), run.month());
            cursor = match last_day.day_in(year, month) {
                Some(day) if day == run.day() => return Some(run),
                Some(day) if day > run.day() => NaiveDate::from_ymd_opt(year, month, day)?,
                _ => NaiveDate::from_ymd_opt(year, month, 1)?.checked_add_months(Months::new(1))?,
            }
            .and_time(NaiveTime::MIN);
        }
    }

    /// The instants a matching wall-clock time fires at, each marked when the time
    /// falls in a daylight-saving gap.
    fn instants(&self, wall: NaiveDateTime) -> Vec<(DateTime<Utc>, bool)> {
        match self.zone.from_local_datetime(&wall) {
            LocalResult::Single(t) => vec![(t.with_timezone(&Utc), false)],
            LocalResult::Ambiguous(first, second) if self.interval => vec![
                (first.with_timezone(&Utc), false),
                (second.with_timezone(&Utc), false),
            ],
            LocalResult::Ambiguous(first, _) => vec![(first.with_timezone(&Utc), false)],
            LocalResult::None => resolve_local(self.zone, wall)
                .map(|t| (t, true))
                .into_iter()
                .collect(),
        }
    }
}

/// Cronos's interval schedules: `*`, a range or a step in the second, minute or hour
/// field (a list of values is a fixed time).
fn is_interval(expr: &str) -> bool {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let time_fields = match fields.len() {
        6 => &fields[..3],
        5 => &fields[..2],
        _ => return false,
    };
    time_fields.iter().any(|f| f.contains(['*', '/', '?', '-']))
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
        .parse(&steward_dsl::cron::normalize(expr))
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

    pub(super) fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(super) fn office() -> BusinessCalendar {
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

    /// The runs strictly after `from`, `n` of them.
    fn runs(s: &Schedule, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = utc(from);
        for _ in 0..n {
            at = s.next_after(at).unwrap();
            out.push(at);
        }
        out
    }

    #[test]
    fn berlin_autumn_change_fixed_times_once_intervals_twice() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:00–03:00 happens twice.
        let daily = Schedule::parse("0 30 2 * * *", berlin).unwrap();
        assert_eq!(
            runs(&daily, "2026-10-24T23:00:00Z", 2),
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        let half_hourly = Schedule::parse("0 */30 * * * *", berlin).unwrap();
        assert_eq!(
            runs(&half_hourly, "2026-10-24T23:45:00Z", 5),
            [
                utc("2026-10-25T00:00:00Z"), // 02:00 CEST
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T01:00:00Z"), // 02:00 CET
                utc("2026-10-25T01:30:00Z"), // 02:30 CET
                utc("2026-10-25T02:00:00Z"), // 03:00 CET
            ]
        );
    }

    #[test]
    fn berlin_spring_change_runs_in_the_gap_fire_once_after_it() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2026-03-29 02:00 CET jumps to 03:00 CEST.
        let daily = Schedule::parse("0 30 2 * * *", berlin).unwrap();
        assert_eq!(
            runs(&daily, "2026-03-29T00:00:00Z", 2),
            [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]
        );
        let half_hourly = Schedule::parse("0 */30 * * * *", berlin).unwrap();
        assert_eq!(
            runs(&half_hourly, "2026-03-29T00:30:00Z", 2),
            [utc("2026-03-29T01:00:00Z"), utc("2026-03-29T01:30:00Z")]
        );
        // A start with a fraction of a second: the run of that second is past.
        assert_eq!(
            daily.next_from(utc("2026-03-30T00:30:00.5Z")),
            Some(utc("2026-03-31T00:30:00Z"))
        );
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
    use super::tests::{office, utc};
    use super::*;

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
