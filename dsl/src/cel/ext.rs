//! CEL's optional extension libraries, registered with the standard one: strings
//! (`charAt`, `indexOf`, `lastIndexOf`, `lowerAscii`, `upperAscii`, `replace`,
//! `split`, `substring`, `trim`, `join`, `reverse`, `format`, `strings.quote`)
//! and math (`math.greatest`, `math.least`, `math.abs`, `math.sign`, rounding,
//! `math.isNaN` and friends, bit operations).

use std::cmp::Ordering;

use base64::Engine as _;
use std::sync::Arc;

use super::functions::{Function, Functions, to_string};
use super::value::{EvalError, Value, format_double, num_cmp};

fn no_overload(name: &str, args: &[Value]) -> EvalError {
    let refs: Vec<&Value> = args.iter().collect();
    EvalError::no_overload(name, &refs)
}

fn out_of_range(i: i64) -> EvalError {
    EvalError::new(format!("index out of range: {i}"))
}

fn f(g: impl Fn(&[Value]) -> Result<Value, EvalError> + Send + Sync + 'static) -> Function {
    Arc::new(g)
}

/// Byte offset of the `i`-th code point (`i == count` gives the length).
fn byte_at(s: &str, i: i64) -> Option<usize> {
    let i = usize::try_from(i).ok()?;
    if i == 0 {
        return Some(0);
    }
    s.char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(s.len()))
        .nth(i)
}

fn char_index(s: &str, byte: usize) -> i64 {
    s.get(..byte).map_or(0, |p| p.chars().count() as i64)
}

pub(crate) fn register(fs: &mut Functions) {
    fs.add_pure(
        "charAt",
        &[],
        &[1],
        f(|a| match a {
            [Value::String(s), Value::Int(i)] => {
                let start = byte_at(s, *i).ok_or_else(|| out_of_range(*i))?;
                let c = s.get(start..).and_then(|r| r.chars().next());
                Ok(Value::string(&c.map(String::from).unwrap_or_default()))
            }
            _ => Err(no_overload("charAt", a)),
        }),
    );
    fs.add_pure(
        "indexOf",
        &[],
        &[1, 2],
        f(|a| {
            let (s, sub, start) = match a {
                [Value::String(s), Value::String(sub)] => (s, sub, 0),
                [Value::String(s), Value::String(sub), Value::Int(i)] => (s, sub, *i),
                _ => return Err(no_overload("indexOf", a)),
            };
            let from = byte_at(s, start).ok_or_else(|| out_of_range(start))?;
            Ok(Value::Int(
                s.get(from..)
                    .and_then(|r| r.find(&**sub))
                    .map_or(-1, |b| char_index(s, from + b)),
            ))
        }),
    );
    fs.add_pure(
        "lastIndexOf",
        &[],
        &[1, 2],
        f(|a| {
            let (s, sub, end) = match a {
                [Value::String(s), Value::String(sub)] => (s, sub, None),
                [Value::String(s), Value::String(sub), Value::Int(i)] => (s, sub, Some(*i)),
                _ => return Err(no_overload("lastIndexOf", a)),
            };
            // The last match starting at or before `end`.
            let last_start = match end {
                None => s.len(),
                Some(i) => byte_at(s, i).ok_or_else(|| out_of_range(i))?,
            };
            let found = if sub.is_empty() {
                Some(last_start)
            } else {
                s.match_indices(&**sub)
                    .map(|(b, _)| b)
                    .take_while(|b| *b <= last_start)
                    .last()
            };
            Ok(Value::Int(found.map_or(-1, |b| char_index(s, b))))
        }),
    );
    fs.add_pure(
        "lowerAscii",
        &[],
        &[0],
        f(|a| match a {
            [Value::String(s)] => Ok(Value::string(&s.to_ascii_lowercase())),
            _ => Err(no_overload("lowerAscii", a)),
        }),
    );
    fs.add_pure(
        "upperAscii",
        &[],
        &[0],
        f(|a| match a {
            [Value::String(s)] => Ok(Value::string(&s.to_ascii_uppercase())),
            _ => Err(no_overload("upperAscii", a)),
        }),
    );
    fs.add_pure(
        "replace",
        &[],
        &[2, 3],
        f(|a| match a {
            [Value::String(s), Value::String(from), Value::String(to)] => {
                Ok(Value::string(&s.replace(&**from, to)))
            }
            [
                Value::String(s),
                Value::String(from),
                Value::String(to),
                Value::Int(n),
            ] => Ok(Value::string(&match usize::try_from(*n) {
                Ok(n) => s.replacen(&**from, to, n),
                Err(_) => s.replace(&**from, to),
            })),
            _ => Err(no_overload("replace", a)),
        }),
    );
    fs.add_pure(
        "split",
        &[],
        &[1, 2],
        f(|a| {
            let (s, sep, n) = match a {
                [Value::String(s), Value::String(sep)] => (s, sep, -1),
                [Value::String(s), Value::String(sep), Value::Int(n)] => (s, sep, *n),
                _ => return Err(no_overload("split", a)),
            };
            if n == 0 {
                return Ok(Value::list(Vec::new()));
            }
            let parts: Vec<Value> = if sep.is_empty() {
                let chars: Vec<String> = s.chars().map(String::from).collect();
                let mut out: Vec<Value> = Vec::new();
                let limit = usize::try_from(n).unwrap_or(usize::MAX);
                for (i, c) in chars.iter().enumerate() {
                    if out.len() + 1 == limit {
                        out.push(Value::string(&chars[i..].concat()));
                        break;
                    }
                    out.push(Value::string(c));
                }
                out
            } else if n < 0 {
                s.split(&**sep).map(Value::string).collect()
            } else {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                s.splitn(n, &**sep).map(Value::string).collect()
            };
            Ok(Value::list(parts))
        }),
    );
    fs.add_pure(
        "substring",
        &[],
        &[1, 2],
        f(|a| {
            let (s, start, end) = match a {
                [Value::String(s), Value::Int(i)] => (s, *i, None),
                [Value::String(s), Value::Int(i), Value::Int(j)] => (s, *i, Some(*j)),
                _ => return Err(no_overload("substring", a)),
            };
            let b0 = byte_at(s, start).ok_or_else(|| out_of_range(start))?;
            let b1 = match end {
                None => s.len(),
                Some(j) => {
                    if j < start {
                        return Err(EvalError::new(format!(
                            "invalid substring range. start: {start}, end: {j}"
                        )));
                    }
                    byte_at(s, j).ok_or_else(|| out_of_range(j))?
                }
            };
            Ok(Value::string(s.get(b0..b1).unwrap_or("")))
        }),
    );
    fs.add_pure(
        "trim",
        &[],
        &[0],
        f(|a| match a {
            [Value::String(s)] => Ok(Value::string(s.trim())),
            _ => Err(no_overload("trim", a)),
        }),
    );
    fs.add_pure(
        "reverse",
        &[],
        &[0],
        f(|a| match a {
            [Value::String(s)] => Ok(Value::string(&s.chars().rev().collect::<String>())),
            [Value::List(l)] => Ok(Value::list(l.iter().rev().cloned().collect())),
            _ => Err(no_overload("reverse", a)),
        }),
    );
    fs.add_pure(
        "join",
        &[],
        &[0, 1],
        f(|a| {
            let (items, sep) = match a {
                [Value::List(l)] => (l, ""),
                [Value::List(l), Value::String(sep)] => (l, &**sep),
                _ => return Err(no_overload("join", a)),
            };
            let mut parts = Vec::with_capacity(items.len());
            for i in items.iter() {
                match i {
                    Value::String(s) => parts.push(&**s),
                    _ => return Err(no_overload("join", a)),
                }
            }
            Ok(Value::string(&parts.join(sep)))
        }),
    );
    fs.add_pure(
        "strings.quote",
        &[1],
        &[],
        f(|a| match a {
            [Value::String(s)] => Ok(Value::string(&quote(s))),
            _ => Err(no_overload("strings.quote", a)),
        }),
    );
    fs.add_pure(
        "format",
        &[],
        &[1],
        f(|a| match a {
            [Value::String(s), Value::List(args)] => format(s, args).map(|s| Value::string(&s)),
            _ => Err(no_overload("format", a)),
        }),
    );
    fs.add_pure(
        "base64.encode",
        &[1],
        &[],
        f(|a| match a {
            [Value::Bytes(b)] => Ok(Value::string(
                &base64::engine::general_purpose::STANDARD.encode(b),
            )),
            _ => Err(no_overload("base64.encode", a)),
        }),
    );
    fs.add_pure(
        "base64.decode",
        &[1],
        &[],
        f(|a| match a {
            [Value::String(s)] => {
                let e = &base64::engine::general_purpose::STANDARD;
                let n = &base64::engine::general_purpose::STANDARD_NO_PAD;
                e.decode(&**s)
                    .or_else(|_| n.decode(&**s))
                    .map(|b| Value::Bytes(Arc::from(b)))
                    .map_err(|_| EvalError::new("invalid base64"))
            }
            _ => Err(no_overload("base64.decode", a)),
        }),
    );
    register_math(fs);
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `%s`-style rendering of one value for `format`.
fn format_s(v: &Value) -> Result<String, EvalError> {
    Ok(match v {
        Value::List(items) => {
            let parts: Result<Vec<String>, EvalError> = items.iter().map(format_s).collect();
            format!("[{}]", parts?.join(", "))
        }
        Value::Map(m) => {
            let mut parts = Vec::new();
            for (k, v) in m.iter() {
                parts.push(format!("{}: {}", format_s(&k.to_value())?, format_s(v)?));
            }
            parts.sort();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Null => "null".to_string(),
        Value::Type(t) => t.to_string(),
        other => to_string(other)?.display(),
    })
}

fn format(template: &str, args: &[Value]) -> Result<String, EvalError> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                digits.push(d);
                chars.next();
            }
            precision = digits.parse().ok();
        }
        let verb = chars
            .next()
            .ok_or_else(|| EvalError::new("unfinished format clause"))?;
        let arg = args
            .get(next)
            .ok_or_else(|| EvalError::new(format!("index {next} out of range")))?;
        next += 1;
        let text = match (verb, arg) {
            ('s', v) => format_s(v)?,
            ('d', Value::Int(i)) => i.to_string(),
            ('d', Value::Uint(u)) => u.to_string(),
            ('d', Value::Double(d)) if !d.is_finite() => format_double(*d),
            ('f', Value::Double(d)) if !d.is_finite() => format_double(*d),
            ('e', Value::Double(d)) if !d.is_finite() => format_double(*d),
            ('f', v @ (Value::Double(_) | Value::Int(_) | Value::Uint(_))) => {
                format!("{:.*}", precision.unwrap_or(6), as_f64(v))
            }
            ('e', v @ (Value::Double(_) | Value::Int(_) | Value::Uint(_))) => {
                exp_format(as_f64(v), precision.unwrap_or(6))
            }
            ('x', Value::Int(i)) => signed_radix(*i, |u| format!("{u:x}")),
            ('x', Value::Uint(u)) => format!("{u:x}"),
            ('X', Value::Int(i)) => signed_radix(*i, |u| format!("{u:X}")),
            ('X', Value::Uint(u)) => format!("{u:X}"),
            ('x', Value::String(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('X', Value::String(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
            ('x', Value::Bytes(s)) => s.iter().map(|b| format!("{b:02x}")).collect(),
            ('X', Value::Bytes(s)) => s.iter().map(|b| format!("{b:02X}")).collect(),
            ('o', Value::Int(i)) => signed_radix(*i, |u| format!("{u:o}")),
            ('o', Value::Uint(u)) => format!("{u:o}"),
            ('b', Value::Int(i)) => signed_radix(*i, |u| format!("{u:b}")),
            ('b', Value::Uint(u)) => format!("{u:b}"),
            ('b', Value::Bool(b)) => u8::from(*b).to_string(),
            (verb, v) => {
                return Err(EvalError::new(format!(
                    "no formatting `%{verb}` for `{}`",
                    v.type_name()
                )));
            }
        };
        out.push_str(&text);
    }
    Ok(out)
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Double(d) => *d,
        Value::Int(i) => *i as f64,
        Value::Uint(u) => *u as f64,
        _ => f64::NAN,
    }
}

fn signed_radix(i: i64, render: impl Fn(u64) -> String) -> String {
    if i < 0 {
        format!("-{}", render(i.unsigned_abs()))
    } else {
        render(i.unsigned_abs())
    }
}

/// `1.234560e+03`, as C and Go print `%e`.
fn exp_format(d: f64, precision: usize) -> String {
    let s = format!("{d:.precision$e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn is_num(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::Uint(_) | Value::Double(_))
}

fn extreme(name: &'static str, want: Ordering) -> Function {
    f(move |a| {
        let items: &[Value] = match a {
            [Value::List(l)] => l,
            other => other,
        };
        let mut best: Option<&Value> = None;
        for v in items {
            if !is_num(v) {
                return Err(no_overload(name, a));
            }
            best = match best {
                None => Some(v),
                Some(b) => match num_cmp(v, b) {
                    Some(o) if o == want => Some(v),
                    None if matches!(v, Value::Double(d) if d.is_nan()) => Some(v),
                    _ => Some(b),
                },
            };
        }
        best.cloned()
            .ok_or_else(|| EvalError::new(format!("`{name}` needs at least one argument")))
    })
}

fn double_fn(name: &'static str, g: fn(f64) -> Value) -> Function {
    f(move |a| match a {
        [Value::Double(d)] => Ok(g(*d)),
        _ => Err(no_overload(name, a)),
    })
}

fn bits(name: &'static str, gi: fn(i64, i64) -> i64, gu: fn(u64, u64) -> u64) -> Function {
    f(move |a| match a {
        [Value::Int(x), Value::Int(y)] => Ok(Value::Int(gi(*x, *y))),
        [Value::Uint(x), Value::Uint(y)] => Ok(Value::Uint(gu(*x, *y))),
        _ => Err(no_overload(name, a)),
    })
}

fn register_math(fs: &mut Functions) {
    let varargs: Vec<usize> = (1..=32).collect();
    fs.add_pure(
        "math.greatest",
        &varargs,
        &[],
        extreme("math.greatest", Ordering::Greater),
    );
    fs.add_pure(
        "math.least",
        &varargs,
        &[],
        extreme("math.least", Ordering::Less),
    );
    fs.add_pure(
        "math.abs",
        &[1],
        &[],
        f(|a| match a {
            [Value::Int(i)] => i
                .checked_abs()
                .map(Value::Int)
                .ok_or_else(|| EvalError::new("integer overflow")),
            [Value::Uint(u)] => Ok(Value::Uint(*u)),
            [Value::Double(d)] => Ok(Value::Double(d.abs())),
            _ => Err(no_overload("math.abs", a)),
        }),
    );
    fs.add_pure(
        "math.sign",
        &[1],
        &[],
        f(|a| match a {
            [Value::Int(i)] => Ok(Value::Int(i.signum())),
            [Value::Uint(u)] => Ok(Value::Uint(u64::from(*u > 0))),
            [Value::Double(d)] => Ok(Value::Double(if d.is_nan() || *d == 0.0 {
                *d
            } else {
                d.signum()
            })),
            _ => Err(no_overload("math.sign", a)),
        }),
    );
    fs.add_pure(
        "math.ceil",
        &[1],
        &[],
        double_fn("math.ceil", |d| Value::Double(d.ceil())),
    );
    fs.add_pure(
        "math.floor",
        &[1],
        &[],
        double_fn("math.floor", |d| Value::Double(d.floor())),
    );
    fs.add_pure(
        "math.round",
        &[1],
        &[],
        double_fn("math.round", |d| Value::Double(d.round())),
    );
    fs.add_pure(
        "math.trunc",
        &[1],
        &[],
        double_fn("math.trunc", |d| Value::Double(d.trunc())),
    );
    fs.add_pure(
        "math.isNaN",
        &[1],
        &[],
        double_fn("math.isNaN", |d| Value::Bool(d.is_nan())),
    );
    fs.add_pure(
        "math.isInf",
        &[1],
        &[],
        double_fn("math.isInf", |d| Value::Bool(d.is_infinite())),
    );
    fs.add_pure(
        "math.isFinite",
        &[1],
        &[],
        double_fn("math.isFinite", |d| Value::Bool(d.is_finite())),
    );
    fs.add_pure(
        "math.bitAnd",
        &[2],
        &[],
        bits("math.bitAnd", |x, y| x & y, |x, y| x & y),
    );
    fs.add_pure(
        "math.bitOr",
        &[2],
        &[],
        bits("math.bitOr", |x, y| x | y, |x, y| x | y),
    );
    fs.add_pure(
        "math.bitXor",
        &[2],
        &[],
        bits("math.bitXor", |x, y| x ^ y, |x, y| x ^ y),
    );
    fs.add_pure(
        "math.bitNot",
        &[1],
        &[],
        f(|a| match a {
            [Value::Int(i)] => Ok(Value::Int(!i)),
            [Value::Uint(u)] => Ok(Value::Uint(!u)),
            _ => Err(no_overload("math.bitNot", a)),
        }),
    );
    for (name, left) in [("math.bitShiftLeft", true), ("math.bitShiftRight", false)] {
        fs.add_pure(
            name,
            &[2],
            &[],
            f(move |a| {
                let n = match a.get(1) {
                    Some(Value::Int(n)) if *n < 0 => {
                        return Err(EvalError::new("negative offset for bit shift"));
                    }
                    Some(Value::Int(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
                    _ => return Err(no_overload(name, a)),
                };
                let shift = |u: u64| {
                    if n >= 64 {
                        0
                    } else if left {
                        u << n
                    } else {
                        u >> n
                    }
                };
                match a.first() {
                    // Shifts on `int` are logical, on the two's complement bits.
                    Some(Value::Int(i)) => Ok(Value::Int(shift(*i as u64) as i64)),
                    Some(Value::Uint(u)) => Ok(Value::Uint(shift(*u))),
                    _ => Err(no_overload(name, a)),
                }
            }),
        );
    }
}
