//! Steward's cron dialect, written the way the croner crate reads it.
//!
//! Steward follows Cronos: 5 fields (minute first) or 6 (seconds first), `L`, `W`, `#`,
//! names of months and days, `?` as `*`. Two forms croner does not read are rewritten
//! into lists of values here: a start with a step (`5/15`: from 5 to the end of the
//! field, every 15) and ranges that wrap around (`sat-tue`, `22-2`, `20-5/5`: on past
//! the end of the field and from its start again). A third, `L-n` and `L-nW` in the day
//! of the month, cannot be a list (the day depends on the month): [`last_day_offset`]
//! takes it out of the expression, and the schedule matches it day by day.

use chrono::{Datelike, Months, NaiveDate, Weekday};

/// `L-n` or `L-nW` in the day-of-month field (Cronos): the day `n` days before the last
/// of the month, or, with `W`, the weekday nearest to that day within the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastDayOffset {
    /// Days before the last day of the month, 0 to 30.
    pub days: u32,
    /// The nearest weekday (Monday to Friday) in the same month.
    pub weekday: bool,
}

impl LastDayOffset {
    /// The day of `year`-`month` it names; `None` when the month is too short for it
    /// (`L-30` in April).
    pub fn day_in(self, year: i32, month: u32) -> Option<u32> {
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let last = first.checked_add_months(Months::new(1))?.pred_opt()?.day();
        let day = last.checked_sub(self.days).filter(|d| *d >= 1)?;
        if !self.weekday {
            return Some(day);
        }
        // The nearest weekday, without leaving the month.
        Some(match first.with_day(day)?.weekday() {
            Weekday::Sat if day == 1 => 3,
            Weekday::Sat => day - 1,
            Weekday::Sun if day == last => day - 2,
            Weekday::Sun => day + 1,
            _ => day,
        })
    }
}

/// Takes an `L-n` or `L-nW` day of the month out of `expr`: the expression with `*` in
/// that field (for croner, after [`normalize`]) and the offset the schedule must match
/// besides. An expression without one comes back as it is.
pub fn last_day_offset(expr: &str) -> Result<(String, Option<LastDayOffset>), String> {
    let mut fields: Vec<&str> = expr.split_whitespace().collect();
    let dom = match fields.len() {
        6 => 3,
        5 => 2,
        _ => return Ok((expr.to_string(), None)),
    };
    let field = fields[dom].to_ascii_uppercase();
    let Some(rest) = field.strip_prefix("L-") else {
        if field.contains("L-") {
            return Err(format!(
                "`{}` in the day of the month: `L-n` stands alone in its field",
                fields[dom]
            ));
        }
        return Ok((expr.to_string(), None));
    };
    let (digits, weekday) = match rest.strip_suffix('W') {
        Some(digits) => (digits, true),
        None => (rest, false),
    };
    let days = Some(digits)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u32>().ok())
        .filter(|d| *d <= 30)
        .ok_or_else(|| {
            format!(
                "`{}` in the day of the month: `L-n` and `L-nW` take n from 0 to 30",
                fields[dom]
            )
        })?;
    fields[dom] = "*";
    Ok((fields.join(" "), Some(LastDayOffset { days, weekday })))
}

/// `expr` with `?` as `*`, `N/S` and wrapping ranges spelled out as lists.
pub fn normalize(expr: &str) -> String {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    // (first, last) of each field, Cronos's bounds; day-of-week 7 is Sunday again.
    let bounds: &[(u32, u32)] = match fields.len() {
        6 => &[(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)],
        5 => &[(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)],
        _ => return expr.to_string(),
    };
    let kinds: &[Kind] = match fields.len() {
        6 => &[
            Kind::Plain,
            Kind::Plain,
            Kind::Plain,
            Kind::Plain,
            Kind::Month,
            Kind::Weekday,
        ],
        _ => &[
            Kind::Plain,
            Kind::Plain,
            Kind::Plain,
            Kind::Month,
            Kind::Weekday,
        ],
    };
    fields
        .iter()
        .zip(bounds)
        .zip(kinds)
        .map(|((field, &(first, last)), &kind)| normalize_field(field, first, last, kind))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Month,
    Weekday,
}

fn normalize_field(field: &str, first: u32, last: u32, kind: Kind) -> String {
    if field == "?" {
        return "*".to_string();
    }
    field
        .split(',')
        .map(|part| normalize_part(part, first, last, kind).unwrap_or_else(|| part.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// A part rewritten as a list, or `None` to keep it as written.
fn normalize_part(part: &str, first: u32, last: u32, kind: Kind) -> Option<String> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => (r, Some(s.parse::<u32>().ok().filter(|s| *s > 0)?)),
        None => (part, None),
    };
    // Days of the week wrap after Saturday (6), whatever the field's last value.
    let cycle_last = if kind == Kind::Weekday { 6 } else { last };
    let period = cycle_last - first + 1;
    let (start, end, wraps) = match range.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (value(a, kind)?, value(b, kind)?);
            if a <= b {
                return None;
            }
            // Wraps: on past the end of the field, then from its start.
            (a, b + period, true)
        }
        None if step.is_some() && range != "*" => (value(range, kind)?, last, false),
        None => return None,
    };
    let step = step.unwrap_or(1);
    let mut values = Vec::new();
    let mut v = start;
    while v <= end {
        let v_in_field = if wraps && v > cycle_last {
            v - period
        } else {
            v
        };
        values.push(v_in_field.to_string());
        v += step;
    }
    Some(values.join(","))
}

/// A number, or a month or day name.
fn value(text: &str, kind: Kind) -> Option<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return Some(n);
    }
    let lower = text.to_ascii_lowercase();
    let names: &[&str] = match kind {
        Kind::Month => &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        Kind::Weekday => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        Kind::Plain => return None,
    };
    let i = names.iter().position(|n| *n == lower)? as u32;
    Some(if kind == Kind::Month { i + 1 } else { i })
}

#[cfg(test)]
mod tests {
    use super::{LastDayOffset, last_day_offset, normalize};

    #[test]
    fn days_before_the_last_are_taken_out_of_the_expression() {
        let (expr, offset) = last_day_offset("0 0 9 L-3 * *").unwrap();
        assert_eq!(expr, "0 0 9 * * *");
        assert_eq!(
            offset,
            Some(LastDayOffset {
                days: 3,
                weekday: false
            })
        );
        let (expr, offset) = last_day_offset("30 8 l-2w * mon-fri").unwrap();
        assert_eq!(expr, "30 8 * * mon-fri");
        assert_eq!(
            offset,
            Some(LastDayOffset {
                days: 2,
                weekday: true
            })
        );
        assert_eq!(
            last_day_offset("0 9 L * *").unwrap(),
            ("0 9 L * *".to_string(), None)
        );
        for bad in ["0 9 L-31 * *", "0 9 L- * *", "0 9 L-x * *", "0 9 1,L-2 * *"] {
            assert!(last_day_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_day_before_the_last_depends_on_the_month() {
        let before =
            |days, weekday, year, month| LastDayOffset { days, weekday }.day_in(year, month);
        assert_eq!(before(1, false, 2016, 2), Some(28));
        assert_eq!(before(1, false, 2017, 2), Some(27));
        assert_eq!(before(29, false, 2016, 2), None);
        assert_eq!(before(30, false, 2016, 4), None);
        assert_eq!(before(30, false, 2016, 5), Some(1));
        // 2017-01-28 is a Saturday, the 29th a Sunday, the 31st a Tuesday.
        assert_eq!(before(3, true, 2017, 1), Some(27));
        assert_eq!(before(2, true, 2017, 1), Some(30));
        assert_eq!(before(0, true, 2017, 1), Some(31));
        // 2016-04-30 is a Saturday; 2016-07-31 a Sunday (the last day: back to Friday).
        assert_eq!(before(0, true, 2016, 4), Some(29));
        assert_eq!(before(0, true, 2016, 7), Some(29));
        // 2016-10-01 is a Saturday: the first weekday in the month is Monday the 3rd.
        assert_eq!(before(30, true, 2016, 10), Some(3));
    }

    #[test]
    fn steps_from_a_start_are_spelled_out() {
        assert_eq!(normalize("0/15 * * * *"), "0,15,30,45 * * * *");
        assert_eq!(normalize("* * * * tue/2"), "* * * * 2,4,6");
        assert_eq!(normalize("0 0 1 * 1/4 *"), "0 0 1 * 1,5,9 *");
    }

    #[test]
    fn wrapping_ranges_are_spelled_out() {
        assert_eq!(normalize("* * 20-5/5 * *"), "* * 20,25,30,4 * *");
        assert_eq!(normalize("* * * 9-8/3 *"), "* * * 9,12,3,6 *");
        assert_eq!(normalize("* * ? * sat-tue"), "* * * * 6,0,1,2");
        assert_eq!(
            normalize("51-4 * * * * *"),
            "51,52,53,54,55,56,57,58,59,0,1,2,3,4 * * * * *"
        );
    }

    #[test]
    fn the_rest_is_kept() {
        for e in [
            "0 9 * * mon-fri",
            "0 0 L * *",
            "0 0 * * 5#2",
            "*/5 * * * *",
            "0 0 LW * *",
        ] {
            assert_eq!(normalize(e), e);
        }
        assert_eq!(normalize("? ? ? ? ?"), "* * * * *");
    }
}
