//! The cel-spec conformance vectors: every core file must pass at least 90 %.
//! Vectors come from `STEWARD_CEL_VECTORS` or the oracles beside the repository.

use std::path::PathBuf;

use steward_dsl::cel::conformance;

const CORE: &[&str] = &[
    "basic",
    "comparisons",
    "conversions",
    "fields",
    "fp_math",
    "integer_math",
    "lists",
    "logic",
    "macros",
    "string",
    "timestamps",
];

#[test]
fn core_files_pass_at_least_90_percent() {
    let dir = std::env::var_os("STEWARD_CEL_VECTORS").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/oracles/cel"
            ))
        },
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "cel-spec vectors not found at {}: set STEWARD_CEL_VECTORS to the directory of .jsonl files",
        dir.display()
    );
    let mut low = Vec::new();
    for file in CORE {
        let path = dir.join(format!("{file}.jsonl"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let report = conformance::run_file(file, &text);
        println!("{report}");
        for (name, reason) in &report.failures {
            println!("  FAIL {name}: {reason}");
        }
        if report.pass_rate() < 0.9 {
            low.push(format!("{report}"));
        }
    }
    assert!(low.is_empty(), "below 90 %: {low:?}");
}
