//! Runs google/cel-spec conformance vectors (the JSON Lines form described in
//! `oracles/README.md`): parse, compile with [`Functions::standard`], evaluate
//! with the bindings, compare. Type-check-only vectors are skipped.

use std::collections::HashMap;
use std::sync::Arc;

use super::functions::b64_decode;
use super::time;
use super::value::{Key, MapValue};
use super::{Activation, Functions, Program, Value, parse};

/// One test vector.
#[derive(Debug, Clone)]
pub struct Vector {
    pub section: String,
    pub name: String,
    pub expr: String,
    pub bindings: HashMap<String, Value>,
    pub expect: Expect,
    pub disable_check: bool,
    pub container: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Expect {
    Value(Value),
    Error,
    /// Only a deduced type: a type-checker test, skipped here.
    TypeOnly,
    /// The vector could not be read; reported as a failure.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped,
}

/// Results for one vector file.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub file: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// `(section/name, reason)` for each failure.
    pub failures: Vec<(String, String)>,
}

impl Report {
    /// passed / (passed + failed); 1.0 when nothing ran.
    pub fn pass_rate(&self) -> f64 {
        let ran = self.passed + self.failed;
        if ran == 0 {
            1.0
        } else {
            self.passed as f64 / ran as f64
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} passed, {} failed, {} skipped",
            self.file, self.passed, self.failed, self.skipped
        )
    }
}

/// Decodes a TypedValue (`{"int64":"-5"}`, `{"map":[[k,v],...]}`, ...).
pub fn typed_value(v: &serde_json::Value) -> Result<Value, String> {
    let obj = v.as_object().ok_or("typed value is not an object")?;
    let (kind, body) = obj.iter().next().ok_or("empty typed value")?;
    let text = || body.as_str().ok_or(format!("`{kind}` needs a string"));
    Ok(match kind.as_str() {
        "null" => Value::Null,
        "bool" => Value::Bool(body.as_bool().ok_or("bad bool")?),
        "int64" => Value::Int(text()?.parse().map_err(|_| "bad int64")?),
        "uint64" => Value::Uint(text()?.parse().map_err(|_| "bad uint64")?),
        "double" => Value::Double(match body {
            serde_json::Value::String(s) => match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => other.parse().map_err(|_| "bad double")?,
            },
            other => other.as_f64().ok_or("bad double")?,
        }),
        "string" => Value::string(text()?),
        "bytes_b64" => Value::Bytes(Arc::from(b64_decode(text()?).ok_or("bad base64")?)),
        "list" => Value::list(
            body.as_array()
                .ok_or("bad list")?
                .iter()
                .map(typed_value)
                .collect::<Result<_, _>>()?,
        ),
        "map" => {
            let mut entries = Vec::new();
            for pair in body.as_array().ok_or("bad map")? {
                let kv = pair.as_array().ok_or("bad map entry")?;
                let (Some(k), Some(v)) = (kv.first(), kv.get(1)) else {
                    return Err("bad map entry".into());
                };
                let k = typed_value(k)?;
                let key = Key::from_value(&k).ok_or("bad map key")?;
                entries.push((key, typed_value(v)?));
            }
            Value::Map(Arc::new(
                MapValue::from_entries(entries).map_err(|e| e.message)?,
            ))
        }
        "type" => Value::Type(Arc::from(text()?)),
        "timestamp" => time::parse_timestamp(text()?).map_err(|e| e.message)?,
        "duration" => time::parse_duration(text()?).map_err(|e| e.message)?,
        other => return Err(format!("unsupported typed value `{other}`")),
    })
}

fn vector(line: &str) -> Result<Vector, String> {
    let j: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let s = |k: &str| j.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let mut bindings = HashMap::new();
    if let Some(b) = j.get("bindings").and_then(|b| b.as_object()) {
        for (name, tv) in b {
            bindings.insert(name.clone(), typed_value(tv)?);
        }
    }
    let check_only = j.get("check_only").and_then(|v| v.as_bool()) == Some(true);
    let expect = match j.get("expect") {
        _ if check_only => Expect::TypeOnly,
        None => Expect::Value(Value::Bool(true)),
        Some(e) => {
            if e.get("error").and_then(|v| v.as_bool()) == Some(true) {
                Expect::Error
            } else if let Some(v) = e.get("value") {
                match typed_value(v) {
                    Ok(v) => Expect::Value(v),
                    Err(msg) => Expect::Unreadable(msg),
                }
            } else if e.get("deduced_type").is_some() {
                Expect::TypeOnly
            } else {
                Expect::Value(Value::Bool(true))
            }
        }
    };
    Ok(Vector {
        section: s("section"),
        name: s("name"),
        expr: s("expr"),
        bindings,
        expect,
        disable_check: j.get("disable_check").and_then(|v| v.as_bool()) == Some(true),
        container: j
            .get("container")
            .and_then(|v| v.as_str())
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    })
}

/// Reads a `.jsonl` file's text; unreadable lines become failing vectors.
pub fn parse_vectors(text: &str) -> Vec<Vector> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            vector(line).unwrap_or_else(|msg| Vector {
                section: String::new(),
                name: format!("line {}", i + 1),
                expr: String::new(),
                bindings: HashMap::new(),
                expect: Expect::Unreadable(msg),
                disable_check: false,
                container: None,
            })
        })
        .collect()
}

/// Names are tried in the container first (`com.example.y` for `y`), then as is.
struct Scoped<'a> {
    vars: &'a HashMap<String, Value>,
    container: Option<&'a str>,
}

impl Activation for Scoped<'_> {
    fn qualified_names(&self) -> bool {
        true
    }

    fn resolve_root(&self, name: &str) -> Option<Value> {
        self.vars.get(name).cloned()
    }

    fn resolve(&self, name: &str) -> Option<Value> {
        if let Some(c) = self.container {
            let mut prefix = c;
            loop {
                if let Some(v) = self.vars.get(&format!("{prefix}.{name}")) {
                    return Some(v.clone());
                }
                match prefix.rfind('.') {
                    Some(i) => prefix = &prefix[..i],
                    None => break,
                }
            }
        }
        self.vars.get(name).cloned()
    }
}

/// Runs one vector.
pub fn run_vector(v: &Vector, functions: &Functions) -> Outcome {
    let want = match &v.expect {
        Expect::TypeOnly => return Outcome::Skipped,
        Expect::Unreadable(msg) => return Outcome::Failed(format!("unreadable vector: {msg}")),
        Expect::Error => None,
        Expect::Value(w) => Some(w),
    };
    let got = match parse(&v.expr) {
        Err(d) => Err(format!(
            "parse: {}",
            d.first().map_or(String::new(), |d| format!(
                "{} ({})",
                d.message,
                d.help.clone().unwrap_or_default()
            ))
        )),
        Ok(expr) => {
            let program = if v.disable_check {
                Ok(Program::compile_lenient(&expr, functions))
            } else {
                Program::compile(&expr, functions).map_err(|d| {
                    format!("compile: {}", d.first().map_or("", |d| d.message.as_str()))
                })
            };
            program.and_then(|p| {
                let act = Scoped {
                    vars: &v.bindings,
                    container: v.container.as_deref(),
                };
                p.eval(&act).map_err(|e| format!("eval: {e}"))
            })
        }
    };
    match (want, got) {
        (None, Err(_)) => Outcome::Passed,
        (None, Ok(got)) => Outcome::Failed(format!("expected an error, got {got}")),
        (Some(w), Ok(got)) if same(w, &got) => Outcome::Passed,
        (Some(w), Ok(got)) => Outcome::Failed(format!("expected {w}, got {got}")),
        (Some(w), Err(e)) => Outcome::Failed(format!("expected {w}, got error: {e}")),
    }
}

/// Exact comparison for tests: types must match, NaN equals NaN, maps unordered.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => (x.is_nan() && y.is_nan()) || x == y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get_key(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Runs every vector of one file.
pub fn run_file(file: &str, text: &str) -> Report {
    let functions = Functions::standard();
    let mut report = Report {
        file: file.to_string(),
        ..Report::default()
    };
    for v in parse_vectors(text) {
        match run_vector(&v, &functions) {
            Outcome::Passed => report.passed += 1,
            Outcome::Skipped => report.skipped += 1,
            Outcome::Failed(reason) => {
                report.failed += 1;
                report
                    .failures
                    .push((format!("{}/{}: `{}`", v.section, v.name, v.expr), reason));
            }
        }
    }
    report
}
