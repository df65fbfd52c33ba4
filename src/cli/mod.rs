//! The subcommands.

pub mod amqp;
pub mod check;
pub mod cluster;
pub mod connector;
pub mod eval;
pub mod ops;
pub mod publish;
pub mod replay;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use steward_dsl::{Code, Source};
use steward_engine::ruleset::Ruleset;

/// Expands directories to the `.stw` files in them (sorted), keeps files as given.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading directory {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "stw") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{}: no `.stw` files in this directory", path.display());
            }
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>> {
    collect(paths)?
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok(Source {
                path: p.display().to_string(),
                text,
            })
        })
        .collect()
}

/// Prints every diagnostic; returns how many there were.
pub fn report(sources: &[Source], result: &steward_dsl::CheckResult) -> usize {
    for (i, d) in &result.diagnostics {
        if let Some(s) = sources.get(*i) {
            eprint!("{}", steward_dsl::render(d, &s.path, &s.text));
        }
    }
    result.diagnostics.len()
}

/// Reads, checks and compiles rule files; diagnostics are printed and fail the load.
pub fn load_rules(paths: &[PathBuf]) -> Result<Arc<Ruleset>> {
    let sources = read_sources(paths)?;
    let result = steward_dsl::check(&sources);
    let errors = report(&sources, &result);
    if errors > 0 {
        bail!("{errors} error(s) in the rules; nothing was run");
    }
    let texts: Vec<&str> = sources.iter().map(|s| s.text.as_str()).collect();
    let rules = Ruleset::compile(&result.files, &texts)?;
    Ok(Arc::new(rules))
}

pub fn parse_time(text: &str, what: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .with_context(|| format!("{what} `{text}` is not an RFC 3339 time"))
}

pub fn explain(code: &str) -> Result<ExitCode> {
    match Code::parse(code) {
        Some(code) => {
            print!("{}", steward_dsl::explain(code));
            Ok(ExitCode::SUCCESS)
        }
        None => bail!("unknown code `{code}`; codes look like `E0201`"),
    }
}

pub fn display(path: &Path) -> String {
    path.display().to_string()
}
