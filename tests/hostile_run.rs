//! `steward run` with a hostile connector: every call of `probe.busy` spins forever.
//! The host stops each call at its deadline, the dispatcher retries and then
//! dead-letters the action with the timeout as its reason, and the engine keeps
//! applying every event meanwhile: nothing waits for the stuck calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ok, root, steward};
use serde_json::Value;
use wit_component::{ComponentEncoder, StringEncoding};

/// The probe connector (tests/fixtures/connector/probe.wat) with its `busy` operation
/// turned into an endless loop, as a component.
fn spinning_probe(dir: &Path) -> PathBuf {
    let wat = std::fs::read_to_string(root().join("tests/fixtures/connector/probe.wat")).unwrap();
    let anchor = "(result i32)\n  (local $p i32)\n";
    assert!(wat.contains(anchor), "probe.wat changed shape");
    // `busy` is the only operation whose name starts with `b` (98).
    let spin = "  (if (i32.eq (i32.load8_u (local.get $op)) (i32.const 98))\n    \
                (then (loop $spin (br $spin))))\n";
    let wat = wat.replacen(anchor, &format!("{anchor}{spin}"), 1);
    let mut module = wat::parse_str(&wat).unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_path(root().join("connectors/wit")).unwrap();
    let world = resolve.select_world(&[pkg], Some("connector")).unwrap();
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .unwrap();
    let bytes = ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    let path = dir.join("spinning.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

const RULES: &str = r#"use connector probe

rule ask {
  control "8.1" "Every job is handed to the probe" detective
  on "job.created"
  do {
    probe.busy()
  }
}

rule seen {
  control "8.1" "Every job is noted" detective
  on "job.created"
  do {
    violation "job ${event.subject} seen"
  }
}
"#;

const JOBS: usize = 8;

#[test]
fn a_connector_that_never_returns_is_stopped_and_dead_lettered_while_events_flow() {
    let dir = tempfile::tempdir().unwrap();
    let component = spinning_probe(dir.path());
    std::fs::write(dir.path().join("rules.stw"), RULES).unwrap();
    let events: String = (1..=JOBS)
        .map(|i| {
            format!(
                "{{\"specversion\":\"1.0\",\"id\":\"job-{i}\",\"source\":\"/test\",\"type\":\"job.created\",\"time\":\"2026-03-02T09:00:{i:02}Z\",\"subject\":\"J-{i}\"}}\n"
            )
        })
        .collect();
    std::fs::write(dir.path().join("events.jsonl"), events).unwrap();
    let config = format!(
        "[store]\npath = {:?}\n\n[dispatch]\nmax_attempts = 2\nbase_ms = 50\nmax_ms = 100\npoll_ms = 20\nconcurrency = 4\n\n\
         [connectors.probe]\ncomponent = {:?}\ntimeout_ms = 300\n",
        dir.path().join("steward.db").display().to_string(),
        component.display().to_string(),
    );
    let config_path = dir.path().join("steward.toml");
    std::fs::write(&config_path, config).unwrap();

    let began = Instant::now();
    let o = steward()
        .arg("run")
        .arg(dir.path().join("rules.stw"))
        .arg("--config")
        .arg(&config_path)
        .arg("--events")
        .arg(dir.path().join("events.jsonl"))
        .output()
        .unwrap();
    let took = began.elapsed();
    let out = ok(&o);
    let decisions: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let position = |kind: &str| -> Vec<usize> {
        decisions
            .iter()
            .enumerate()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(i, _)| i)
            .collect()
    };
    let seen = position("violation");
    let failed = position("action_failed");
    // Every event took effect, each decided its call, and every call ended in a dead
    // letter naming the timeout after both attempts.
    assert_eq!(seen.len(), JOBS, "{out}");
    assert_eq!(position("action").len(), JOBS, "{out}");
    assert_eq!(failed.len(), JOBS, "{out}");
    for &i in &failed {
        let d = &decisions[i];
        assert_eq!(d["attempts"], 2, "{d}");
        let reason = d["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            reason.contains("timed out") || reason.contains("timeout"),
            "the reason names the timeout: {d}"
        );
    }
    assert_eq!(position("action_succeeded").len(), 0, "{out}");
    // The events were applied while the calls spun: all of them before the first
    // call had even run out its deadline.
    assert!(
        seen.iter().max() < failed.iter().min(),
        "events waited for the stuck calls:\n{out}"
    );
    // 8 calls x 2 attempts x 300 ms, 4 at a time, plus start-up: well under a minute.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
