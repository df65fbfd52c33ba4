//! `steward eval`.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use steward_dsl::cel::{Program, Value};
use steward_engine::event::Event;

pub fn run(expr: &str, event: Option<&Path>, vars: Option<&str>) -> Result<ExitCode> {
    let parsed = match steward_dsl::cel::parse(expr) {
        Ok(e) => e,
        Err(diags) => {
            for d in &diags {
                eprint!("{}", steward_dsl::render(d, "<expr>", expr));
            }
            return Ok(ExitCode::from(1));
        }
    };
    let program = match Program::compile(&parsed, steward_dsl::stdlib::functions()) {
        Ok(p) => p,
        Err(diags) => {
            for d in &diags {
                eprint!("{}", steward_dsl::render(d, "<expr>", expr));
            }
            return Ok(ExitCode::from(1));
        }
    };
    let mut scope: HashMap<String, Value> = HashMap::new();
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
