//! Helpers shared by the CLI integration tests: the real `steward` binary, the
//! repository's paths, and a reader for the SQLite store; the test broker in
//! [`amqp`], the `[cluster]` deployments in [`cluster`], a loopback HTTP client in
//! [`http`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod amqp;
pub mod cluster;
pub mod http;

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

/// What a `steward run` left in its SQLite file, read through the engine's store.
pub struct Snapshot {
    /// (workflow, key, state) of the instances still open, sorted.
    pub open: Vec<(String, String, String)>,
    /// (source, id) of the events seen, sorted.
    pub seen: Vec<(String, String)>,
    pub timers: usize,
    pub evidence: Vec<steward_engine::decision::EvidenceRecord>,
    pub outbox: Vec<steward_engine::store::OutboxRow>,
    pub dead_letters: Vec<steward_engine::store::DeadLetter>,
}

/// Compiles the rules in `dir` as the CLI does.
pub fn ruleset(dir: &Path) -> steward_engine::ruleset::Ruleset {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "stw"))
        .collect();
    paths.sort();
    let sources: Vec<steward_dsl::Source> = paths
        .iter()
        .map(|p| steward_dsl::Source {
            path: p.display().to_string(),
            text: std::fs::read_to_string(p).unwrap(),
        })
        .collect();
    let checked = steward_dsl::check(&sources);
    assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
    let texts: Vec<&str> = sources.iter().map(|s| s.text.as_str()).collect();
    steward_engine::ruleset::Ruleset::compile(&checked.files, &texts).unwrap()
}

pub fn snapshot(db: &Path, rules_dir: &Path) -> Snapshot {
    use steward_engine::store::Store;
    use steward_engine::store::sqlite::SqliteStore;
    assert!(db.is_file(), "{} was not created", db.display());
    let rules = ruleset(rules_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(db).await.unwrap();
        let world = store.load(&rules).await.unwrap();
        let mut open: Vec<(String, String, String)> = world
            .instances
            .iter()
            .map(|((w, key), inst)| {
                let wf = &rules.workflows[*w];
                (
                    wf.name.clone(),
                    key.to_string(),
                    wf.states[inst.state].name.clone(),
                )
            })
            .collect();
        open.sort();
        let mut seen: Vec<(String, String)> = world
            .seen
            .iter()
            .map(|e| (e.source.to_string(), e.id.to_string()))
            .collect();
        seen.sort();
        Snapshot {
            open,
            seen,
            timers: world.timers.len(),
            evidence: store.evidence(0).await.unwrap(),
            outbox: store.outbox().await.unwrap(),
            dead_letters: store.dead_letters().await.unwrap(),
        }
    })
}

/// The distinct (source, id) of the events in a JSON-lines file, sorted.
pub fn event_identities(lines: &[String]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["source"].as_str().unwrap().to_string(),
                v["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Waits for a `steward` child process, killing it (and failing) after `within`.
pub fn finish(child: std::process::Child, within: std::time::Duration) -> Output {
    let began = std::time::Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if began.elapsed() > within {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            panic!("steward run did not finish within {within:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    waiter.join().unwrap()
}
