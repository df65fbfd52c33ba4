#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Golden tests for the language: every file in `fixtures/ok` checks clean; every file
//! in `fixtures/check` renders exactly the diagnostics in its `.stderr` file
//! (`BLESS=1 cargo test -p steward-dsl --test golden` rewrites them).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use steward_dsl::{Code, Source, check, render};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "stw"))
        .collect();
    files.sort();
    files
}

fn display_path(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    let dir = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    format!("tests/fixtures/{dir}/{name}")
}

fn run(paths: &[PathBuf]) -> (steward_dsl::CheckResult, Vec<Source>) {
    let sources: Vec<Source> = paths
        .iter()
        .map(|p| Source {
            path: display_path(p),
            text: fs::read_to_string(p).unwrap(),
        })
        .collect();
    (check(&sources), sources)
}

fn rendered(result: &steward_dsl::CheckResult, sources: &[Source], index: usize) -> String {
    result
        .diagnostics
        .iter()
        .filter(|(i, _)| *i == index)
        .map(|(_, d)| render(d, &sources[index].path, &sources[index].text))
        .collect()
}

#[test]
fn ok_fixtures_check_clean() {
    let paths = fixtures("ok");
    assert!(!paths.is_empty());
    // Checked together: names are shared across files.
    let (result, sources) = run(&paths);
    let all: String = (0..sources.len())
        .map(|i| rendered(&result, &sources, i))
        .collect();
    assert!(result.is_ok(), "ok fixtures have diagnostics:\n{all}");
    for (i, file) in result.files.iter().enumerate() {
        assert!(
            !file.items.is_empty(),
            "{} parsed to nothing",
            sources[i].path
        );
    }
}
