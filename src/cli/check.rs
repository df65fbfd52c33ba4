//! `steward check`.
//!
//! With `--config FILE` (the `[connectors.NAME]` tables) or `--connectors DIR`
//! (`DIR/NAME.wasm`), connector calls are also checked against the connectors' own
//! descriptions (E06xx); without either, they are not, and a note says so.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use super::connector::{CatalogueSource, catalogue};

pub fn run(
    paths: &[PathBuf],
    config: Option<&Path>,
    connectors: Option<&Path>,
) -> Result<ExitCode> {
    let sources = super::read_sources(paths)?;
    let mut result = steward_dsl::check(&sources);
    let used = steward_dsl::connectors::used_connectors(&result.files);
    let source = match (config, connectors) {
        (Some(path), _) => Some(CatalogueSource::Config(path)),
        (None, Some(dir)) => Some(CatalogueSource::Directory(dir)),
        (None, None) => None,
    };
    let unchecked = source.is_none() && !used.is_empty();
    if let Some(source) = source {
        let catalogue = catalogue(source, &used)?;
        steward_dsl::connectors::check_calls(&mut result, &catalogue);
    }
    // After the summary line, which stays first on a clean check.
    let note = || {
        if unchecked {
            eprintln!(
                "note: connector calls were not checked against the connectors' descriptions \
                 (give --config steward.toml or --connectors DIR)"
            );
        }
    };
    let errors = super::report(&sources, &result);
    if errors > 0 {
        eprintln!(
            "{errors} error{} in {} file{}",
            if errors == 1 { "" } else { "s" },
            sources.len(),
            if sources.len() == 1 { "" } else { "s" }
        );
        note();
        return Ok(ExitCode::from(1));
    }
    eprintln!(
        "ok: {} file{} checked",
        sources.len(),
        if sources.len() == 1 { "" } else { "s" }
    );
    note();
    Ok(ExitCode::SUCCESS)
}
