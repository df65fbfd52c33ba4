//! Timestamps and durations: parsing, formatting, ranges and time zones.

use std::str::FromStr as _;

use chrono::{DateTime, Datelike as _, FixedOffset, NaiveDateTime, TimeDelta, Timelike as _, Utc};

use super::value::{EvalError, MAX_TS_SECS, MIN_TS_SECS, Value};

/// The largest duration magnitude CEL allows, in seconds (about 10,000 years).
const MAX_DURATION_SECS: i64 = 315_576_000_000;

pub(crate) fn check_timestamp(t: DateTime<Utc>) -> Result<Value, EvalError> {
    let s = t.timestamp();
    if !(MIN_TS_SECS..=MAX_TS_SECS).contains(&s) {
        return Err(EvalError::new("timestamp out of range"));
    }
    Ok(Value::Timestamp(t))
}

pub(crate) fn check_duration(d: TimeDelta) -> Result<Value, EvalError> {
    if d.num_seconds().abs() > MAX_DURATION_SECS {
        return Err(EvalError::new("duration out of range"));
    }
    Ok(Value::Duration(d))
}

pub(crate) fn parse_timestamp(s: &str) -> Result<Value, EvalError> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| EvalError::new(format!("invalid timestamp `{s}`")))?;
    check_timestamp(t.with_timezone(&Utc))
}

pub(crate) fn timestamp_from_secs(secs: i64) -> Result<Value, EvalError> {
    if !(MIN_TS_SECS..=MAX_TS_SECS).contains(&secs) {
        return Err(EvalError::new("timestamp out of range"));
    }
    DateTime::from_timestamp(secs, 0)
        .map(Value::Timestamp)
        .ok_or_else(|| EvalError::new("timestamp out of range"))
}

/// RFC 3339 in UTC with `Z`, fractional seconds only as needed.
pub(crate) fn format_timestamp(t: &DateTime<Utc>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `1.5s`, `-0.000000001s`, `0s`.
pub(crate) fn format_duration(d: &TimeDelta) -> String {
    let total = d.num_nanoseconds().map(i128::from).unwrap_or_else(|| {
        i128::from(d.num_seconds()) * 1_000_000_000 + i128::from(d.subsec_nanos())
    });
    let sign = if total < 0 { "-" } else { "" };
    let abs = total.unsigned_abs();
    let secs = abs / 1_000_000_000;
    let nanos = abs % 1_000_000_000;
    if nanos == 0 {
        format!("{sign}{secs}s")
    } else {
        let frac = format!("{nanos:09}");
        format!("{sign}{secs}.{}s", frac.trim_end_matches('0'))
    }
}

/// Go-style durations: `1h2m3.5s`, `-1.5s`, `100ms`, units h m s ms us µs ns.
pub(crate) fn parse_duration(s: &str) -> Result<Value, EvalError> {
    let bad = || EvalError::new(format!("invalid duration `{s}`"));
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(Value::Duration(TimeDelta::zero()));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale: i128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut nanos = int.checked_mul(scale).ok_or_else(bad)?;
        let mut place = scale;
        for c in frac_part.chars() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += i128::from(c.to_digit(10).ok_or_else(bad)?) * place;
        }
        total = total.checked_add(nanos).ok_or_else(bad)?;
        if total > i128::from(MAX_DURATION_SECS + 1) * 1_000_000_000 {
            return Err(EvalError::new("duration out of range"));
        }
        rest = next;
    }
    if neg {
        total = -total;
    }
    duration_from_nanos(total)
}

pub(crate) fn duration_from_nanos(total: i128) -> Result<Value, EvalError> {
    if total.abs() > i128::from(MAX_DURATION_SECS) * 1_000_000_000 + 999_999_999 {
        return Err(EvalError::new("duration out of range"));
    }
    let secs = i64::try_from(total.div_euclid(1_000_000_000))
        .map_err(|_| EvalError::new("duration out of range"))?;
    let nanos = u32::try_from(total.rem_euclid(1_000_000_000))
        .map_err(|_| EvalError::new("duration out of range"))?;
    TimeDelta::new(secs, nanos)
        .map(Value::Duration)
        .ok_or_else(|| EvalError::new("duration out of range"))
}

pub(crate) fn duration_nanos(d: &TimeDelta) -> i128 {
    i128::from(d.num_seconds()) * 1_000_000_000 + i128::from(d.subsec_nanos())
}

/// The wall-clock time of `t` in `zone`: an IANA name (`America/Los_Angeles`),
/// `UTC`, or a fixed offset (`+05:30`, `-08:00`, `02:00`).
pub(crate) fn local_time(
    t: &DateTime<Utc>,
    zone: Option<&str>,
) -> Result<NaiveDateTime, EvalError> {
    let Some(zone) = zone else {
        return Ok(t.naive_utc());
    };
    if let Some(offset) = parse_offset(zone) {
        return Ok(t.with_timezone(&offset).naive_local());
    }
    let tz = chrono_tz::Tz::from_str(zone)
        .map_err(|_| EvalError::new(format!("unknown time zone `{zone}`")))?;
    Ok(t.with_timezone(&tz).naive_local())
}

fn parse_offset(zone: &str) -> Option<FixedOffset> {
    let (sign, rest) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        b'0'..=b'9' => (1, zone),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// `getFullYear` and friends on a timestamp.
pub(crate) fn timestamp_part(
    name: &str,
    t: &DateTime<Utc>,
    zone: Option<&str>,
) -> Result<Value, EvalError> {
    let lt = local_time(t, zone)?;
    let v = match name {
        "getFullYear" => i64::from(lt.year()),
        "getMonth" => i64::from(lt.month0()),
        "getDate" => i64::from(lt.day()),
        "getDayOfMonth" => i64::from(lt.day0()),
        "getDayOfWeek" => i64::from(lt.weekday().num_days_from_sunday()),
        "getDayOfYear" => i64::from(lt.ordinal0()),
        "getHours" => i64::from(lt.hour()),
        "getMinutes" => i64::from(lt.minute()),
        "getSeconds" => i64::from(lt.second()),
        "getMilliseconds" => i64::from(lt.nanosecond() % 1_000_000_000 / 1_000_000),
        _ => return Err(EvalError::new(format!("no matching overload for `{name}`"))),
    };
    Ok(Value::Int(v))
}

/// `getHours` and friends on a duration: totals, truncated.
pub(crate) fn duration_part(name: &str, d: &TimeDelta) -> Result<Value, EvalError> {
    let v = match name {
        "getHours" => d.num_hours(),
        "getMinutes" => d.num_minutes(),
        "getSeconds" => d.num_seconds(),
        "getMilliseconds" => d.num_milliseconds() % 1000,
        _ => {
            return Err(EvalError::new(format!(
                "no matching overload for `{name}` on `google.protobuf.Duration`"
            )));
        }
    };
    Ok(Value::Int(v))
}
