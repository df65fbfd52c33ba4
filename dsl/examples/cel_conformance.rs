//! Runs the cel-spec conformance vectors and prints one line per file.
//!
//! `cargo run -p steward-dsl --example cel_conformance -- [DIR] [--verbose]`

use std::path::PathBuf;
use std::process::ExitCode;

use steward_dsl::cel::conformance;

fn main() -> ExitCode {
    let mut dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/oracles/cel"
    ));
    let mut verbose = false;
    for a in std::env::args().skip(1) {
        if a == "--verbose" || a == "-v" {
            verbose = true;
        } else {
            dir = PathBuf::from(a);
        }
    }
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    files.sort();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for path in files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        let report = conformance::run_file(&name, &text);
        println!("{report}");
        if verbose {
            for (test, reason) in &report.failures {
                println!("  FAIL {test}\n       {reason}");
            }
        }
        passed += report.passed;
        failed += report.failed;
        skipped += report.skipped;
    }
    println!("TOTAL: {passed} passed, {failed} failed, {skipped} skipped");
    ExitCode::SUCCESS
}
