//! `steward run` stopped and started again later: cadence runs that fell due while it
//! was down follow the cadence's `catch up` policy, with the SQLite store keeping the
//! schedule in between.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn rules(dir: &Path, policy: &str) {
    std::fs::write(
        dir.join("tick.stw"),
        format!(
            r#"
cadence tick every "* * * * * *" {{
  control "8.7.3" "Checked every second" detective
  catch up {policy}
  do {{ evidence "tick ${{period}}" }}
}}
"#
        ),
    )
    .unwrap();
}

fn run(rules: &Path, db: &Path, events: &Path) -> Vec<Value> {
    let o = steward()
        .arg("run")
        .arg(rules)
        .arg("--events")
        .arg(events)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    json_lines(&ok(&o))
}

/// The cadence decisions `(period, outcome, message)` and the periods with evidence.
fn summary(decisions: &[Value]) -> (Vec<(String, String, String)>, Vec<String>) {
    let runs = decisions
        .iter()
        .filter(|d| d["kind"] == "cadence")
        .map(|d| {
            (
                d["period"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
                d["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let evidence = decisions
        .iter()
        .filter(|d| d["kind"] == "evidence")
        .map(|d| d["period"].as_str().unwrap().to_string())
        .collect();
    (runs, evidence)
}

#[test]
fn runs_missed_while_stopped_are_skipped_or_caught_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let mut setups = Vec::new();
    for policy in ["skip", "once"] {
        let rules_dir = dir.path().join(policy);
        std::fs::create_dir(&rules_dir).unwrap();
        rules(&rules_dir, policy);
        let db = dir.path().join(format!("{policy}.db"));
        run(&rules_dir, &db, &events);
        setups.push((policy, rules_dir, db));
    }
    // Down for a few seconds: a few runs of the every-second cadence are missed.
    std::thread::sleep(Duration::from_millis(3500));
    for (policy, rules_dir, db) in setups {
        let (runs, evidence) = summary(&run(&rules_dir, &db, &events));
        let skipped: Vec<&(String, String, String)> =
            runs.iter().filter(|r| r.1 == "skipped").collect();
        assert!(skipped.len() >= 2, "{policy}: {runs:?}");
        for r in &skipped {
            assert_eq!(
                r.2,
                format!("missed while the engine was down (catch up {policy})")
            );
            assert!(!evidence.contains(&r.0), "{policy}: {} ran", r.0);
        }
        // Every period is recorded once, in order.
        let periods: Vec<&String> = runs.iter().map(|r| &r.0).collect();
        let mut sorted = periods.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(periods, sorted, "{policy}");
        let caught_up: Vec<&(String, String, String)> = runs
            .iter()
            .filter(|r| r.1 == "ran" && r.2.contains("missed while the engine was down"))
            .collect();
        match policy {
            // The missed runs come first, all skipped.
            "skip" => {
                assert!(caught_up.is_empty(), "{runs:?}");
                assert!(runs[..skipped.len()].iter().all(|r| r.1 == "skipped"));
            }
            // All skipped but the latest missed, which runs (its evidence is written).
            _ => {
                assert_eq!(caught_up.len(), 1, "{runs:?}");
                assert_eq!(&runs[skipped.len()], caught_up[0], "{runs:?}");
                assert!(evidence.contains(&caught_up[0].0));
            }
        }
    }
}
