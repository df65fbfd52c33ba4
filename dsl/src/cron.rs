//! Steward's cron dialect, written the way the croner crate reads it.
//!
//! Steward follows Cronos: 5 fields (minute first) or 6 (seconds first), `L`, `W`, `#`,
//! names of months and days, `?` as `*`. Two forms croner does not read are rewritten
//! into lists of values here: a start with a step (`5/15`: from 5 to the end of the
//! field, every 15) and ranges that wrap around (`sat-tue`, `22-2`, `20-5/5`: on past
//! the end of the field and from its start again).

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
    use super::normalize;

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
