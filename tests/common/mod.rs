//! Helpers shared by the CLI integration tests: the real `steward` binary, the
//! repository's paths, and a reader for the SQLite store.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (the root package's manifest directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn examples() -> PathBuf {
    root().join("examples")
}

pub fn iso() -> PathBuf {
    examples().join("iso20000")
}

pub fn iso_events() -> PathBuf {
    iso().join("events.jsonl")
}

/// A `steward` command with a clean `STEWARD_*` environment, run from the root.
pub fn steward() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward"));
    for (k, _) in std::env::vars() {
        if k.starts_with("STEWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(root()).stdin(Stdio::null());
    cmd
}

/// Runs `steward ARGS` to completion.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    steward().args(args).output().expect("running steward")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

/// Asserts exit code 0 and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "steward failed: {:?}\nstderr:\n{}",
        o.status,
        stderr(o)
    );
    stdout(o)
}

/// `steward replay RULES --events EVENTS EXTRA…`, which must succeed.
pub fn replay(rules: &Path, events: &Path, extra: &[&str]) -> (String, String) {
    let mut cmd = steward();
    cmd.arg("replay").arg(rules).arg("--events").arg(events);
    cmd.args(extra);
    let o = cmd.output().expect("running steward replay");
    let out = ok(&o);
    (out, stderr(&o))
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .collect()
}

/// The lines of a file (without newlines).
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Takes a number out of the stderr summary: `N what` (for example `3 duplicates`).
pub fn summary_count(stderr: &str, what: &str) -> Option<u64> {
    let words: Vec<&str> = stderr
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .rev()
        .find(|w| w[1] == what)
        .and_then(|w| w[0].parse().ok())
}
