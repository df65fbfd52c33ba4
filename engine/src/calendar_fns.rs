//! The calendar functions of expressions, bound to a ruleset's calendars:
//! `in_working_hours(cal, t)`, `in_freeze(cal, t)`, `business_between(cal, a, b)` and
//! `add_business(cal, t, d)`. A calendar is passed by name: the bare name of a calendar
//! evaluates to its name. Timestamps may also be given as RFC 3339 strings (`event.time`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::TimeDelta;
use steward_dsl::cel::{EvalError, Functions, Value};
use steward_dsl::stdlib::{CALENDAR_FUNCTIONS, calendar_arity};

use crate::time::BusinessCalendar;

type Calendars = Arc<HashMap<String, Arc<BusinessCalendar>>>;

/// Steward's functions with the calendar functions reading `calendars`.
pub fn functions(calendars: &HashMap<String, Arc<BusinessCalendar>>) -> Functions {
    let calendars: Calendars = Arc::new(calendars.clone());
    let mut fs = steward_dsl::stdlib::functions().clone();
    for name in CALENDAR_FUNCTIONS {
        let calendars = calendars.clone();
        fs = fs.with(name, calendar_arity(name), move |args| {
            call(name, &calendars, args)
        });
    }
    fs
}

fn call(name: &str, calendars: &Calendars, args: &[Value]) -> Result<Value, EvalError> {
    let cal = match args.first() {
        Some(Value::String(s)) => calendars
            .get(&**s)
            .ok_or_else(|| EvalError::new(format!("{name}: unknown calendar `{s}`")))?,
        Some(other) => return Err(EvalError::no_overload(name, &[other])),
        None => return Err(EvalError::new("wrong number of arguments")),
    };
    let rest: Vec<Value> = args[1..]
        .iter()
        .map(|v| match v {
            // `event.time` is a string: an RFC 3339 string counts as a timestamp.
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| Value::Timestamp(t.with_timezone(&chrono::Utc)))
                .unwrap_or_else(|_| v.clone()),
            other => other.clone(),
        })
        .collect();
    match (name, &rest[..]) {
        ("in_working_hours", [Value::Timestamp(t)]) => Ok(Value::Bool(cal.is_working(*t))),
        ("in_freeze", [Value::Timestamp(t)]) => Ok(Value::Bool(cal.in_freeze(*t))),
        ("business_between", [Value::Timestamp(a), Value::Timestamp(b)]) => Ok(Value::Duration(
            TimeDelta::seconds(cal.working_seconds_between(*a, *b)),
        )),
        ("add_business", [Value::Timestamp(t), Value::Duration(d)]) => {
            if *d < TimeDelta::zero() {
                return Err(EvalError::new(format!(
                    "{name}: negative business duration"
                )));
            }
            // Working time is counted in whole seconds; a fraction rounds up.
            let mut seconds = d.num_seconds();
            if *d > TimeDelta::seconds(seconds) {
                seconds += 1;
            }
            cal.add_working_time(*t, seconds)
                .map(Value::Timestamp)
                .ok_or_else(|| EvalError::new(format!("{name}: no working time found")))
        }
        (_, rest) => {
            let rest: Vec<&Value> = rest.iter().collect();
            Err(EvalError::no_overload(name, &rest))
        }
    }
}
