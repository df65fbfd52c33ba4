//! Steward's function library: CEL's standard library plus helpers over
//! Jira-webhook-shaped events (the event is the whole CloudEvent as a map whose
//! `data` is the webhook payload, with `changelog.items[]` of `field`,
//! `fromString`, `toString`, ...).
//!
//! - `transitioned_to(event, status)`: a `status` change to exactly `status`.
//! - `changed(event, field)`: some change of `field` (names compared ignoring case).
//! - `resolved(event)`: a resolution was set, or the status became `Done`,
//!   `Resolved` or `Closed` (ignoring case).
//!
//! Missing fields mean false, never an error.
//!
//! Calendar functions take a calendar (its name) first; the engine binds them to the
//! ruleset's calendars, here they only exist so expressions using them check:
//!
//! - `in_working_hours(cal, t)`: `t` is inside the calendar's working hours.
//! - `in_freeze(cal, t)`: `t` is inside one of the calendar's freeze windows.
//! - `business_between(cal, a, b)`: the working time between two timestamps.
//! - `add_business(cal, t, d)`: `t` plus the duration `d` of working time.

use std::sync::LazyLock;

use crate::cel::{EvalError, Functions, Value};

/// The calendar functions and their argument counts (the calendar first).
pub const CALENDAR_FUNCTIONS: [&str; 4] = [
    "in_working_hours",
    "in_freeze",
    "business_between",
    "add_business",
];

/// The argument count of each of [`CALENDAR_FUNCTIONS`].
pub fn calendar_arity(name: &str) -> usize {
    match name {
        "in_working_hours" | "in_freeze" => 2,
        _ => 3,
    }
}

/// The functions available to Steward rules.
pub fn functions() -> &'static Functions {
    static FUNCTIONS: LazyLock<Functions> = LazyLock::new(|| {
        let mut fs = Functions::standard();
        for name in CALENDAR_FUNCTIONS {
            fs = fs.with(name, calendar_arity(name), move |_| {
                Err(EvalError::new(format!(
                    "`{name}` needs the engine's calendars"
                )))
            });
        }
        fs.with("transitioned_to", 2, |args| match args {
            [event, Value::String(status)] => Ok(Value::Bool(changes(event).any(|item| {
                field_is(item, "status") && str_field(item, "toString") == Some(status)
            }))),
            [_, other] => Err(EvalError::no_overload("transitioned_to", &[other])),
            _ => Err(EvalError::new("wrong number of arguments")),
        })
        .with("changed", 2, |args| match args {
            [event, Value::String(field)] => Ok(Value::Bool(
                changes(event).any(|item| field_is(item, field)),
            )),
            [_, other] => Err(EvalError::no_overload("changed", &[other])),
            _ => Err(EvalError::new("wrong number of arguments")),
        })
        .with("resolved", 1, |args| match args {
            [event] => Ok(Value::Bool(changes(event).any(|item| {
                if field_is(item, "resolution") {
                    return !matches!(get(item, "toString"), None | Some(Value::Null))
                        || !matches!(get(item, "to"), None | Some(Value::Null));
                }
                field_is(item, "status")
                    && str_field(item, "toString").is_some_and(|s| {
                        ["done", "resolved", "closed"]
                            .iter()
                            .any(|d| s.eq_ignore_ascii_case(d))
                    })
            }))),
            _ => Err(EvalError::new("wrong number of arguments")),
        })
    });
    &FUNCTIONS
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m.get_str(key),
        _ => None,
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match get(v, key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn field_is(item: &Value, name: &str) -> bool {
    str_field(item, "field").is_some_and(|f| f.eq_ignore_ascii_case(name))
}

/// `event.data.changelog.items`, or nothing.
fn changes(event: &Value) -> impl Iterator<Item = &Value> {
    let items = get(event, "data")
        .and_then(|d| get(d, "changelog"))
        .and_then(|c| get(c, "items"));
    let slice: &[Value] = match items {
        Some(Value::List(l)) => l,
        _ => &[],
    };
    slice.iter()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cel::{Program, parse};

    /// A CloudEvent around a Jira webhook payload from the oracles.
    fn event(file: &str) -> Value {
        let path = format!(
            "{}/../../shared/oracles/jira/webhooks/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        Value::from_json(&serde_json::json!({
            "specversion": "1.0", "type": "jira:issue_updated", "source": "jira", "id": "1",
            "data": data,
        }))
    }

    fn run(src: &str, file: &str) -> Value {
        let program = Program::compile(&parse(src).unwrap(), functions()).unwrap();
        let vars = HashMap::from([("event".to_string(), event(file))]);
        program.eval(&vars).unwrap()
    }

    #[test]
    fn transitioned_to() {
        let f = "webhook-server-issue-updated-in-progress.json";
        assert_eq!(
            run("transitioned_to(event, 'In Progress')", f),
            Value::Bool(true)
        );
        assert_eq!(run("transitioned_to(event, 'Done')", f), Value::Bool(false));
        let f = "webhook-issue-updated-edited.json";
        assert_eq!(run("transitioned_to(event, 'Done')", f), Value::Bool(false));
    }

    #[test]
    fn changed() {
        let f = "webhook-issue-updated-raised-priority.json";
        assert_eq!(run("changed(event, 'priority')", f), Value::Bool(true));
        assert_eq!(run("changed(event, 'Priority')", f), Value::Bool(true));
        assert_eq!(run("changed(event, 'summary')", f), Value::Bool(false));
        let f = "webhook-issue-assigned-empty-changelog.json";
        assert_eq!(run("changed(event, 'assignee')", f), Value::Bool(false));
    }

    #[test]
    fn resolved() {
        for f in [
            "webhook-issue-updated-resolved.json",
            "webhook-issue-updated-resolved-one-changelog.json",
            "webhook-server-issue-updated-closed.json",
        ] {
            assert_eq!(run("resolved(event)", f), Value::Bool(true), "{f}");
        }
        for f in [
            "webhook-issue-updated-reopened.json",
            "webhook-issue-updated-edited.json",
            "webhook-issue-assigned-empty-changelog.json",
        ] {
            assert_eq!(run("resolved(event)", f), Value::Bool(false), "{f}");
        }
    }

    #[test]
    fn missing_fields_are_false() {
        let program = Program::compile(
            &parse("resolved(x) || changed(x, 'a') || transitioned_to(x, 'b')").unwrap(),
            functions(),
        )
        .unwrap();
        for x in [
            Value::Null,
            Value::Int(1),
            Value::from_json(&serde_json::json!({"data": {}})),
        ] {
            let vars = HashMap::from([("x".to_string(), x)]);
            assert_eq!(program.eval(&vars), Ok(Value::Bool(false)));
        }
    }
}
