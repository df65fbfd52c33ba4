//! `steward eval`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use steward_dsl::cel::{Program, Value};
use steward_engine::event::Event;

/// Evaluates `expr`. With `rules`, their policies, groups and calendars are in scope and
/// the calendar functions read the calendars, as in the engine.
pub fn run(
    expr: &str,
    event: Option<&Path>,
    vars: Option<&str>,
    rules: &[PathBuf],
) -> Result<ExitCode> {
    let rules = match rules {
        [] => None,
        files => Some(super::load_rules(files)?),
    };
    let parsed = match steward_dsl::cel::parse(expr) {
        Ok(e) => e,
        Err(diags) => {
            for d in &diags {
                eprint!("{}", steward_dsl::render(d, "<expr>", expr));
            }
            return Ok(ExitCode::from(1));
        }
    };
    let calendar_functions = rules
        .as_ref()
        .map(|r| steward_engine::calendar_fns::functions(&r.calendars));
    let functions = match &calendar_functions {
        Some(functions) => functions,
        None => steward_dsl::stdlib::functions(),
    };
    let program = match Program::compile(&parsed, functions) {
        Ok(p) => p,
        Err(diags) => {
            for d in &diags {
                eprint!("{}", steward_dsl::render(d, "<expr>", expr));
            }
            return Ok(ExitCode::from(1));
        }
    };
    let mut scope: HashMap<String, Value> = rules.map(|r| r.globals.clone()).unwrap_or_default();
    scope.insert("now".into(), Value::Timestamp(chrono::Utc::now()));
    if let Some(vars) = vars {
        let json: serde_json::Value = serde_json::from_str(vars).context("--vars is not JSON")?;
        let serde_json::Value::Object(map) = json else {
            bail!("--vars must be a JSON object");
        };
        for (k, v) in map {
            scope.insert(k, Value::from_json(&v));
        }
    }
    if let Some(path) = event {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let event = Event::from_json_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        scope.insert("event".into(), event.to_value());
    }
    match program.eval(&scope) {
        Ok(v) => {
            println!("{}", v.to_json());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
