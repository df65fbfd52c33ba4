//! Runtime values: cheap to clone (shared data behind `Arc`), with CEL equality
//! and ordering, and conversion from and to JSON.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};

/// An evaluation error. Messages are lowercase, user values in backticks.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
#[error("{message}")]
pub struct EvalError {
    pub message: String,
}

impl EvalError {
    pub fn new(message: impl Into<String>) -> EvalError {
        EvalError {
            message: message.into(),
        }
    }

    /// `no matching overload for `f` on `int`, `string``
    pub fn no_overload(function: &str, args: &[&Value]) -> EvalError {
        let types: Vec<String> = args
            .iter()
            .map(|a| format!("`{}`", a.type_name()))
            .collect();
        EvalError::new(format!(
            "no matching overload for `{function}` on {}",
            types.join(", ")
        ))
    }
}

/// A CEL value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(Arc<str>),
    Bytes(Arc<[u8]>),
    List(Arc<[Value]>),
    Map(Arc<MapValue>),
    Timestamp(DateTime<Utc>),
    Duration(TimeDelta),
    /// A type value such as `int` or `google.protobuf.Timestamp`.
    Type(Arc<str>),
}

/// A map key: CEL allows `int`, `uint`, `bool` and `string` keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Bool(bool),
    Int(i64),
    Uint(u64),
    String(Arc<str>),
}

impl Key {
    pub fn to_value(&self) -> Value {
        match self {
            Key::Bool(b) => Value::Bool(*b),
            Key::Int(i) => Value::Int(*i),
            Key::Uint(u) => Value::Uint(*u),
            Key::String(s) => Value::String(s.clone()),
        }
    }

    /// The key for a value, or `None` when the value cannot be a key.
    pub fn from_value(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::Uint(u) => Key::Uint(*u),
            Value::String(s) => Key::String(s.clone()),
            _ => return None,
        })
    }
}

/// Entries in insertion order; a hash index on string keys once the map is large
/// enough for it to pay off. Lookups by `&str` never allocate.
#[derive(Clone, Debug, Default)]
pub struct MapValue {
    entries: Vec<(Key, Value)>,
    by_str: Option<HashMap<Arc<str>, usize>>,
}

const INDEX_FROM: usize = 12;

impl MapValue {
    pub fn new() -> MapValue {
        MapValue::default()
    }

    /// Builds a map; a repeated key is an error naming it.
    pub fn from_entries(entries: Vec<(Key, Value)>) -> Result<MapValue, EvalError> {
        let mut m = MapValue {
            entries: Vec::with_capacity(entries.len()),
            by_str: None,
        };
        for (k, v) in entries {
            if m.get_key(&k).is_some() {
                return Err(EvalError::new(format!(
                    "repeated map key `{}`",
                    k.to_value().display()
                )));
            }
            m.entries.push((k, v));
        }
        m.reindex();
        Ok(m)
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, k: Key, v: Value) {
        if let Some(i) = self.position(&k) {
            if let Some(e) = self.entries.get_mut(i) {
                e.1 = v;
            }
            return;
        }
        self.entries.push((k, v));
        if self.entries.len() >= INDEX_FROM {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        if self.entries.len() < INDEX_FROM {
            self.by_str = None;
            return;
        }
        let idx = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, (k, _))| match k {
                Key::String(s) => Some((s.clone(), i)),
                _ => None,
            })
            .collect();
        self.by_str = Some(idx);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn get_str(&self, key: &str) -> Option<&Value> {
        if let Some(idx) = &self.by_str {
            return idx
                .get(key)
                .and_then(|&i| self.entries.get(i))
                .map(|e| &e.1);
        }
        self.entries.iter().find_map(|(k, v)| match k {
            Key::String(s) if &**s == key => Some(v),
            _ => None,
        })
    }

    fn position(&self, key: &Key) -> Option<usize> {
        if let (Key::String(s), Some(idx)) = (key, &self.by_str) {
            return idx.get(&**s).copied();
        }
        self.entries.iter().position(|(k, _)| key_eq(k, key))
    }

    pub fn get_key(&self, key: &Key) -> Option<&Value> {
        self.position(key)
            .and_then(|i| self.entries.get(i))
            .map(|e| &e.1)
    }

    /// Lookup by any value; numbers compare across `int`, `uint` and `double`.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        match key {
            Value::String(s) => self.get_str(s),
            Value::Double(d) => {
                let d = *d;
                if d.fract() != 0.0 || !d.is_finite() {
                    return None;
                }
                if (0.0..18446744073709551616.0).contains(&d) {
                    let u = d as u64;
                    if let Some(v) = self.get_key(&Key::Uint(u)) {
                        return Some(v);
                    }
                }
                if (-9223372036854775808.0..9223372036854775808.0).contains(&d) {
                    return self.get_key(&Key::Int(d as i64));
                }
                None
            }
            other => self.get_key(&Key::from_value(other)?),
        }
    }
}

fn key_eq(a: &Key, b: &Key) -> bool {
    match (a, b) {
        (Key::Int(i), Key::Uint(u)) | (Key::Uint(u), Key::Int(i)) => {
            u64::try_from(*i).is_ok_and(|i| i == *u)
        }
        _ => a == b,
    }
}

impl PartialEq for MapValue {
    fn eq(&self, other: &MapValue) -> bool {
        self.len() == other.len()
            && self
                .entries
                .iter()
                .all(|(k, v)| other.get_key(k).is_some_and(|w| v == w))
    }
}

pub(crate) const MIN_TS_SECS: i64 = -62135596800; // 0001-01-01T00:00:00Z
pub(crate) const MAX_TS_SECS: i64 = 253402300799; // 9999-12-31T23:59:59Z

impl Value {
    pub fn string(s: &str) -> Value {
        Value::String(Arc::from(s))
    }

    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::from(items))
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null_type",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Double(_) => "double",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Timestamp(_) => "google.protobuf.Timestamp",
            Value::Duration(_) => "google.protobuf.Duration",
            Value::Type(_) => "type",
        }
    }

    /// From JSON: integers to `int` (beyond `int` range to `uint`), other numbers to
    /// `double`, objects to maps with string keys in order.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::Uint(u)
                } else {
                    Value::Double(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::string(s),
            serde_json::Value::Array(items) => {
                Value::List(items.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(fields) => {
                let mut m = MapValue {
                    entries: fields
                        .iter()
                        .map(|(k, v)| (Key::String(Arc::from(k.as_str())), Value::from_json(v)))
                        .collect(),
                    by_str: None,
                };
                m.reindex();
                Value::Map(Arc::new(m))
            }
        }
    }

    /// To JSON: timestamps as RFC 3339 (UTC, `Z`), durations as `"1.5s"`, bytes as
    /// base64, non-finite doubles as strings, map keys as strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Uint(u) => J::from(*u),
            Value::Double(d) => match serde_json::Number::from_f64(*d) {
                Some(n) => J::Number(n),
                None => J::String(format_double(*d)),
            },
            Value::String(s) => J::String(s.to_string()),
            Value::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.to_value().display(), v.to_json()))
                    .collect(),
            ),
            Value::Timestamp(t) => J::String(super::time::format_timestamp(t)),
            Value::Duration(d) => J::String(super::time::format_duration(d)),
            Value::Type(t) => J::String(t.to_string()),
        }
    }

    /// The value as `string()` renders it (strings without quotes).
    pub fn display(&self) -> String {
        match self {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        }
    }
}

/// CEL's rendering of a double: shortest round-trip form.
pub(crate) fn format_double(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        let s = format!("{d}");
        // Very large or small magnitudes read better in exponent form.
        if d != 0.0 && (d.abs() >= 1e21 || d.abs() < 1e-6) {
            format!("{d:e}")
        } else {
            s
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Uint(u) => write!(f, "{u}u"),
            Value::Double(d) => f.write_str(&format_double(*d)),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {v}", k.to_value())?;
                }
                f.write_str("}")
            }
            Value::Timestamp(t) => write!(f, "timestamp({:?})", super::time::format_timestamp(t)),
            Value::Duration(d) => write!(f, "duration({:?})", super::time::format_duration(d)),
            Value::Type(t) => f.write_str(t),
        }
    }
}

/// CEL equality (`==`): numbers compare by value across `int`, `uint` and
/// `double`; other values of different types are unequal.
pub fn cel_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::Timestamp(x), Value::Timestamp(y)) => x == y,
        (Value::Duration(x), Value::Duration(y)) => x == y,
        (Value::Type(x), Value::Type(y)) => x == y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| cel_eq(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(&k.to_value()).is_some_and(|w| cel_eq(v, w)))
        }
        _ => num_cmp(a, b) == Some(Ordering::Equal),
    }
}

/// Ordering of numbers across types; `None` when either is not a number or NaN.
pub fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Uint(x), Value::Uint(y)) => Some(x.cmp(y)),
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Uint(y)) => Some(if *x < 0 {
            Ordering::Less
        } else {
            (*x as u64).cmp(y)
        }),
        (Value::Uint(_), Value::Int(_)) => num_cmp(b, a).map(Ordering::reverse),
        (Value::Int(x), Value::Double(y)) => cmp_i64_f64(*x, *y),
        (Value::Double(_), Value::Int(_)) => num_cmp(b, a).map(Ordering::reverse),
        (Value::Uint(x), Value::Double(y)) => cmp_u64_f64(*x, *y),
        (Value::Double(_), Value::Uint(_)) => num_cmp(b, a).map(Ordering::reverse),
        _ => None,
    }
}

// Like cel-go, an integer compared with a double is first converted to double.
fn cmp_i64_f64(x: i64, y: f64) -> Option<Ordering> {
    (x as f64).partial_cmp(&y)
}

fn cmp_u64_f64(x: u64, y: f64) -> Option<Ordering> {
    (x as f64).partial_cmp(&y)
}

/// CEL ordering (`<` and friends); `Err` when the types have no ordering.
/// CEL ordering: `None` when the types have no ordering overload (the caller names
/// the operator in its error), `Some(None)` when unordered (NaN).
pub(crate) fn try_cel_cmp(a: &Value, b: &Value) -> Option<Option<Ordering>> {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => Some(Some(x.cmp(y))),
        (Value::String(x), Value::String(y)) => Some(Some(x.cmp(y))),
        (Value::Bytes(x), Value::Bytes(y)) => Some(Some(x.cmp(y))),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(Some(x.cmp(y))),
        (Value::Duration(x), Value::Duration(y)) => Some(Some(x.cmp(y))),
        (
            Value::Int(_) | Value::Uint(_) | Value::Double(_),
            Value::Int(_) | Value::Uint(_) | Value::Double(_),
        ) => Some(num_cmp(a, b)),
        _ => None,
    }
}
