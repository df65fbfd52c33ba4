//! `steward check`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

pub fn run(paths: &[PathBuf]) -> Result<ExitCode> {
    let sources = super::read_sources(paths)?;
    let result = steward_dsl::check(&sources);
    let errors = super::report(&sources, &result);
    if errors > 0 {
        eprintln!(
            "{errors} error{} in {} file{}",
            if errors == 1 { "" } else { "s" },
            sources.len(),
            if sources.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::from(1));
    }
    eprintln!(
        "ok: {} file{} checked",
        sources.len(),
        if sources.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}
