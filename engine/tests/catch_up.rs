//! Cadence runs missed while the engine was down, per `catch up` policy, on a virtual
//! clock: the engine runs, stops (its world kept, as a store keeps it), and starts again
//! later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use chrono::{DateTime, Utc};
use common::{rules, t};
use steward_engine::core::Engine;
use steward_engine::decision::{Decision, Kind};

fn cadence(policy: &str) -> String {
    format!(
        r#"
cadence backup_check every "0 0 9 * * *" {{
  control "8.7.3" "Backups are checked daily" detective
  {policy}
  do {{ evidence "backup checked for ${{period}}" }}
  expect "backup.verified" within 2 hours
    else violation "backup not verified for ${{period}}"
}}
"#
    )
}

/// Runs from 2026-03-01 to 2026-03-02 10:00, down until `restart`, then on to
/// 2026-03-07 10:00. Returns the decisions after the restart.
fn down_and_up(policy: &str, restart: DateTime<Utc>) -> Vec<Decision> {
    let rules = rules(&cadence(policy));
    let mut engine = Engine::new(rules.clone());
    engine.start(t("2026-03-01T00:00:00Z"));
    let mut out = Vec::new();
    engine.advance(t("2026-03-02T10:00:00Z"), &mut out);
    let before: Vec<_> = out
        .iter()
        .filter(|d| d.outcome.as_deref() == Some("ran"))
        .map(|d| d.period.clone().unwrap())
        .collect();
    assert_eq!(before, ["2026-03-01", "2026-03-02"]);

    // Down: the world is what the store kept; a new engine resumes it.
    let world = engine.world().clone();
    let mut engine = Engine::with_world(rules, world);
    engine.start(restart);
    let mut out = Vec::new();
    engine.advance(restart, &mut out);
    engine.advance(t("2026-03-07T10:00:00Z"), &mut out);
    out
}

/// `(period, outcome)` of the cadence's run decisions, and the periods of its evidence.
fn runs(out: &[Decision]) -> (Vec<(String, String)>, Vec<String>) {
    let runs = out
        .iter()
        .filter(|d| {
            d.kind == Kind::Cadence && matches!(d.outcome.as_deref(), Some("ran" | "skipped"))
        })
        .map(|d| (d.period.clone().unwrap(), d.outcome.clone().unwrap()))
        .collect();
    let evidence = out
        .iter()
        .filter(|d| d.kind == Kind::Evidence)
        .map(|d| d.period.clone().unwrap())
        .collect();
    (runs, evidence)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// Down from 2026-03-02 10:00 to 2026-03-06 12:00: the runs of 03-03, 03-04, 03-05 and
// 03-06 (09:00) were missed; 03-07 is after the restart.

#[test]
fn catch_up_all_runs_every_missed_run_in_order() {
    let out = down_and_up("catch up all", t("2026-03-06T12:00:00Z"));
    let (runs, evidence) = runs(&out);
    assert_eq!(
        runs,
        pairs(&[
            ("2026-03-03", "ran"),
            ("2026-03-04", "ran"),
            ("2026-03-05", "ran"),
            ("2026-03-06", "ran"),
            ("2026-03-07", "ran"),
        ])
    );
    assert_eq!(
        evidence,
        [
            "2026-03-03",
            "2026-03-04",
            "2026-03-05",
            "2026-03-06",
            "2026-03-07"
        ]
    );
    // Each missed run happens at its own due time and says it was caught up.
    let first = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("ran"))
        .unwrap();
    assert_eq!(first.at, t("2026-03-03T09:00:00Z"));
    assert!(
        first
            .message
            .as_deref()
            .unwrap()
            .contains("missed while the engine was down")
    );
}

#[test]
fn without_catch_up_every_missed_run_runs() {
    let all = down_and_up("catch up all", t("2026-03-06T12:00:00Z"));
    let default = down_and_up("", t("2026-03-06T12:00:00Z"));
    assert_eq!(runs(&all), runs(&default));
}

#[test]
fn catch_up_skip_records_missed_runs_without_running_them() {
    let out = down_and_up("catch up skip", t("2026-03-06T12:00:00Z"));
    let (runs, evidence) = runs(&out);
    assert_eq!(
        runs,
        pairs(&[
            ("2026-03-03", "skipped"),
            ("2026-03-04", "skipped"),
            ("2026-03-05", "skipped"),
            ("2026-03-06", "skipped"),
            ("2026-03-07", "ran"),
        ])
    );
    // Only the run after the restart executed its actions.
    assert_eq!(evidence, ["2026-03-07"]);
    // A skipped run expects nothing: the only expectation missed is that of 03-02,
    // run before the engine went down and due (11:00) while it was down.
    let missed: Vec<_> = out
        .iter()
        .filter(|d| d.outcome.as_deref() == Some("missed"))
        .map(|d| d.period.clone().unwrap())
        .collect();
    assert_eq!(missed, ["2026-03-02"]);
    let skipped = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("skipped"))
        .unwrap();
    assert_eq!(skipped.control.as_deref(), Some("8.7.3"));
    assert_eq!(
        skipped.message.as_deref(),
        Some("missed while the engine was down (catch up skip)")
    );
}

#[test]
fn catch_up_once_runs_only_the_latest_missed_run() {
    let out = down_and_up("catch up once", t("2026-03-06T12:00:00Z"));
    let (runs, evidence) = runs(&out);
    assert_eq!(
        runs,
        pairs(&[
            ("2026-03-03", "skipped"),
            ("2026-03-04", "skipped"),
            ("2026-03-05", "skipped"),
            ("2026-03-06", "ran"),
            ("2026-03-07", "ran"),
        ])
    );
    assert_eq!(evidence, ["2026-03-06", "2026-03-07"]);
    // The caught-up run expects its evidence as usual: due 2 hours after its own time
    // (11:00, before the restart), it is reported missing on restart, as is 03-02's.
    // (03-07's is due after the end of the test.)
    let missed: Vec<_> = out
        .iter()
        .filter(|d| d.outcome.as_deref() == Some("missed"))
        .map(|d| (d.period.clone().unwrap(), d.at))
        .collect();
    assert_eq!(
        missed,
        [
            ("2026-03-02".to_string(), t("2026-03-02T11:00:00Z")),
            ("2026-03-06".to_string(), t("2026-03-06T11:00:00Z")),
        ]
    );
}

#[test]
fn a_restart_before_the_next_run_misses_nothing() {
    // Down from 2026-03-02 10:00 to 2026-03-03 08:00: nothing was due meanwhile.
    for policy in ["catch up skip", "catch up once", "catch up all"] {
        let out = down_and_up(policy, t("2026-03-03T08:00:00Z"));
        let (runs, _) = runs(&out);
        assert!(
            runs.iter().all(|(_, outcome)| outcome == "ran"),
            "{policy}: {runs:?}"
        );
        assert_eq!(runs.len(), 5, "{policy}");
    }
}

#[test]
fn a_run_due_exactly_at_the_restart_is_not_missed() {
    let out = down_and_up("catch up skip", t("2026-03-06T09:00:00Z"));
    let (runs, _) = runs(&out);
    assert_eq!(
        runs,
        pairs(&[
            ("2026-03-03", "skipped"),
            ("2026-03-04", "skipped"),
            ("2026-03-05", "skipped"),
            ("2026-03-06", "ran"),
            ("2026-03-07", "ran"),
        ])
    );
}
