//! The function registry and CEL's standard library (operators and macros live in
//! the evaluator; everything called by name lives here).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;

use super::time;
use super::value::{EvalError, Value, format_double};

/// A function implementation. Member calls pass the receiver first.
pub type Function = Arc<dyn Fn(&[Value]) -> Result<Value, EvalError> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Entry {
    /// Accepted argument counts for `f(args)`.
    pub global: Vec<usize>,
    /// Accepted argument counts for `x.f(args)`, receiver not counted.
    pub member: Vec<usize>,
    pub f: Function,
    /// Same arguments, same result, no side effects: may be folded at compile time.
    pub pure: bool,
}

/// Functions by name.
#[derive(Clone, Default)]
pub struct Functions {
    entries: HashMap<String, Entry>,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        f.debug_struct("Functions").field("names", &names).finish()
    }
}

impl Functions {
    /// No functions at all (operators and macros still work).
    pub fn empty() -> Functions {
        Functions::default()
    }

    /// CEL's standard library.
    pub fn standard() -> Functions {
        standard()
    }

    /// Adds (or replaces) a global function `name(args)` taking `arity` arguments.
    pub fn with(
        mut self,
        name: &str,
        arity: usize,
        f: impl Fn(&[Value]) -> Result<Value, EvalError> + Send + Sync + 'static,
    ) -> Functions {
        self.entries.insert(
            name.to_string(),
            Entry {
                global: vec![arity],
                member: Vec::new(),
                f: Arc::new(f),
                pure: false,
            },
        );
        self
    }

    /// Adds (or replaces) a member function `receiver.name(args)` taking `arity`
    /// arguments besides the receiver, which comes first in the slice.
    pub fn with_member(
        mut self,
        name: &str,
        arity: usize,
        f: impl Fn(&[Value]) -> Result<Value, EvalError> + Send + Sync + 'static,
    ) -> Functions {
        self.entries.insert(
            name.to_string(),
            Entry {
                global: Vec::new(),
                member: vec![arity],
                f: Arc::new(f),
                pure: false,
            },
        );
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub(crate) fn add_pure(&mut self, name: &str, global: &[usize], member: &[usize], f: Function) {
        self.add(name, global, member, f);
    }

    fn add(&mut self, name: &str, global: &[usize], member: &[usize], f: Function) {
        self.entries.insert(
            name.to_string(),
            Entry {
                global: global.to_vec(),
                member: member.to_vec(),
                f,
                pure: true,
            },
        );
    }
}

fn arg(args: &[Value], i: usize) -> Result<&Value, EvalError> {
    args.get(i)
        .ok_or_else(|| EvalError::new("wrong number of arguments"))
}

fn no_overload(name: &str, args: &[Value]) -> EvalError {
    let refs: Vec<&Value> = args.iter().collect();
    EvalError::no_overload(name, &refs)
}

fn range_error(what: &str) -> EvalError {
    EvalError::new(format!("{what} out of range"))
}

pub(crate) fn size(v: &Value) -> Result<Value, EvalError> {
    let n = match v {
        Value::String(s) => s.chars().count(),
        Value::Bytes(b) => b.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        other => return Err(EvalError::no_overload("size", &[other])),
    };
    i64::try_from(n)
        .map(Value::Int)
        .map_err(|_| range_error("size"))
}

fn str_pair<'a>(name: &str, args: &'a [Value]) -> Result<(&'a str, &'a str), EvalError> {
    match (arg(args, 0)?, arg(args, 1)?) {
        (Value::String(a), Value::String(b)) => Ok((a, b)),
        _ => Err(no_overload(name, args)),
    }
}

pub(crate) fn to_int(v: &Value) -> Result<Value, EvalError> {
    Ok(Value::Int(match v {
        Value::Int(i) => *i,
        Value::Uint(u) => i64::try_from(*u).map_err(|_| range_error("integer"))?,
        Value::Double(d) => {
            let d = *d;
            if d.is_nan() || d <= -9223372036854775808.0 || d >= 9223372036854775808.0 {
                return Err(range_error("integer"));
            }
            d as i64
        }
        Value::String(s) => s
            .parse::<i64>()
            .map_err(|_| EvalError::new(format!("cannot convert `{s}` to int")))?,
        Value::Timestamp(t) => t.timestamp(),
        other => return Err(EvalError::no_overload("int", &[other])),
    }))
}

fn to_uint(v: &Value) -> Result<Value, EvalError> {
    Ok(Value::Uint(match v {
        Value::Uint(u) => *u,
        Value::Int(i) => u64::try_from(*i).map_err(|_| range_error("unsigned integer"))?,
        Value::Double(d) => {
            let d = *d;
            if d.is_nan() || !(0.0..18446744073709551616.0).contains(&d) {
                return Err(range_error("unsigned integer"));
            }
            d as u64
        }
        Value::String(s) => s
            .parse::<u64>()
            .map_err(|_| EvalError::new(format!("cannot convert `{s}` to uint")))?,
        other => return Err(EvalError::no_overload("uint", &[other])),
    }))
}

fn to_double(v: &Value) -> Result<Value, EvalError> {
    Ok(Value::Double(match v {
        Value::Double(d) => *d,
        Value::Int(i) => *i as f64,
        Value::Uint(u) => *u as f64,
        Value::String(s) => s
            .parse::<f64>()
            .map_err(|_| EvalError::new(format!("cannot convert `{s}` to double")))?,
        other => return Err(EvalError::no_overload("double", &[other])),
    }))
}

pub(crate) fn to_string(v: &Value) -> Result<Value, EvalError> {
    Ok(match v {
        Value::String(_) => v.clone(),
        Value::Int(i) => Value::string(&i.to_string()),
        Value::Uint(u) => Value::string(&u.to_string()),
        Value::Double(d) => Value::string(&format_double(*d)),
        Value::Bool(b) => Value::string(if *b { "true" } else { "false" }),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::string(s),
            Err(_) => return Err(EvalError::new("bytes are not valid UTF-8")),
        },
        Value::Timestamp(t) => Value::string(&time::format_timestamp(t)),
        Value::Duration(d) => Value::string(&time::format_duration(d)),
        Value::Type(t) => Value::String(t.clone()),
        other => return Err(EvalError::no_overload("string", &[other])),
    })
}

fn to_bytes(v: &Value) -> Result<Value, EvalError> {
    match v {
        Value::Bytes(_) => Ok(v.clone()),
        Value::String(s) => Ok(Value::Bytes(Arc::from(s.as_bytes()))),
        other => Err(EvalError::no_overload("bytes", &[other])),
    }
}

fn to_bool(v: &Value) -> Result<Value, EvalError> {
    match v {
        Value::Bool(_) => Ok(v.clone()),
        Value::String(s) => match &**s {
            "1" | "t" | "true" | "TRUE" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "false" | "FALSE" | "False" => Ok(Value::Bool(false)),
            _ => Err(EvalError::new(format!("cannot convert `{s}` to bool"))),
        },
        other => Err(EvalError::no_overload("bool", &[other])),
    }
}

fn to_timestamp(v: &Value) -> Result<Value, EvalError> {
    match v {
        Value::Timestamp(_) => Ok(v.clone()),
        Value::String(s) => time::parse_timestamp(s),
        Value::Int(i) => time::timestamp_from_secs(*i),
        other => Err(EvalError::no_overload("timestamp", &[other])),
    }
}

fn to_duration(v: &Value) -> Result<Value, EvalError> {
    match v {
        Value::Duration(_) => Ok(v.clone()),
        Value::String(s) => time::parse_duration(s),
        Value::Int(i) => time::duration_from_nanos(i128::from(*i) * 1_000_000_000),
        other => Err(EvalError::no_overload("duration", &[other])),
    }
}

pub(crate) fn type_of(v: &Value) -> Value {
    Value::Type(Arc::from(v.type_name()))
}

/// The names that denote types when not bound as variables.
pub(crate) fn type_denotation(name: &str) -> Option<Value> {
    match name {
        "int"
        | "uint"
        | "double"
        | "bool"
        | "string"
        | "bytes"
        | "list"
        | "map"
        | "null_type"
        | "type"
        | "google.protobuf.Timestamp"
        | "google.protobuf.Duration" => Some(Value::Type(Arc::from(name))),
        _ => None,
    }
}

fn unary(f: fn(&Value) -> Result<Value, EvalError>) -> Function {
    Arc::new(move |args: &[Value]| f(arg(args, 0)?))
}

fn standard() -> Functions {
    let mut fs = Functions::default();
    fs.add("size", &[1], &[0], unary(size));
    fs.add("int", &[1], &[], unary(to_int));
    fs.add("uint", &[1], &[], unary(to_uint));
    fs.add("double", &[1], &[], unary(to_double));
    fs.add("string", &[1], &[], unary(to_string));
    fs.add("bytes", &[1], &[], unary(to_bytes));
    fs.add("bool", &[1], &[], unary(to_bool));
    fs.add("timestamp", &[1], &[], unary(to_timestamp));
    fs.add("duration", &[1], &[], unary(to_duration));
    fs.add("type", &[1], &[], unary(|v| Ok(type_of(v))));
    fs.add("dyn", &[1], &[], unary(|v| Ok(v.clone())));
    fs.add(
        "contains",
        &[],
        &[1],
        Arc::new(|args: &[Value]| {
            let (a, b) = str_pair("contains", args)?;
            Ok(Value::Bool(a.contains(b)))
        }),
    );
    fs.add(
        "startsWith",
        &[],
        &[1],
        Arc::new(|args: &[Value]| {
            let (a, b) = str_pair("startsWith", args)?;
            Ok(Value::Bool(a.starts_with(b)))
        }),
    );
    fs.add(
        "endsWith",
        &[],
        &[1],
        Arc::new(|args: &[Value]| {
            let (a, b) = str_pair("endsWith", args)?;
            Ok(Value::Bool(a.ends_with(b)))
        }),
    );
    fs.add(
        "matches",
        &[2],
        &[1],
        Arc::new(|args: &[Value]| {
            let (a, pattern) = str_pair("matches", args)?;
            let re = regex::Regex::new(pattern)
                .map_err(|_| EvalError::new(format!("invalid regular expression `{pattern}`")))?;
            Ok(Value::Bool(re.is_match(a)))
        }),
    );
    for name in [
        "getFullYear",
        "getMonth",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    ] {
        fs.add(
            name,
            &[],
            &[0, 1],
            Arc::new(move |args: &[Value]| match (arg(args, 0)?, args.get(1)) {
                (Value::Timestamp(t), None) => time::timestamp_part(name, t, None),
                (Value::Timestamp(t), Some(Value::String(z))) => {
                    time::timestamp_part(name, t, Some(z))
                }
                (Value::Duration(d), None) => time::duration_part(name, d),
                _ => Err(no_overload(name, args)),
            }),
        );
    }
    super::ext::register(&mut fs);
    fs
}

/// Base64 helpers shared with the conformance runner.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
