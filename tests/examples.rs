//! The examples under `examples/` are executed, so they never rot: every folder of
//! rules checks clean, and every recorded event stream replays to its golden output.
//!
//! `BLESS=1 cargo test --test examples` rewrites the `expected.jsonl` files; read the
//! diff against the rules before committing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Every folder under `examples/` (recursively) that holds `.stw` files.
fn rule_folders() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        if entries
            .iter()
            .any(|p| p.is_file() && p.extension().is_some_and(|x| x == "stw"))
        {
            out.push(dir.to_path_buf());
        }
        for p in entries.iter().filter(|p| p.is_dir()) {
            walk(p, out);
        }
    }
    let mut out = Vec::new();
    walk(&examples(), &mut out);
    assert!(!out.is_empty(), "no example rules found under examples/");
    out
}

/// Extra `steward replay` arguments from the folder's `replay.args` (whitespace
/// separated; lines starting with `#` are comments).
fn replay_args(dir: &Path) -> Vec<String> {
    match std::fs::read_to_string(dir.join("replay.args")) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split_whitespace().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn replay_folder(dir: &Path) -> String {
    let args = replay_args(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    replay(dir, &dir.join("events.jsonl"), &args).0
}

#[test]
fn every_example_folder_checks_clean() {
    for dir in rule_folders() {
        let o = run(["check".as_ref(), dir.as_os_str()]);
        assert!(
            o.status.success(),
            "`steward check {}` failed ({:?}):\n{}",
            dir.display(),
            o.status,
            stderr(&o)
        );
        assert!(stderr(&o).starts_with("ok: "), "{}", stderr(&o));
    }
}

#[test]
fn every_recorded_example_replays_to_its_golden_output() {
    let bless = std::env::var_os("BLESS").is_some_and(|v| v == "1");
    let mut replayed = 0;
    let mut failures = Vec::new();
    for dir in rule_folders() {
        if !dir.join("events.jsonl").is_file() {
            continue;
        }
        replayed += 1;
        let actual = replay_folder(&dir);
        let expected_path = dir.join("expected.jsonl");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let Ok(expected) = std::fs::read_to_string(&expected_path) else {
            failures.push(format!(
                "{} is missing (BLESS=1 writes it)",
                expected_path.display()
            ));
            continue;
        };
        if actual != expected {
            let first = actual
                .lines()
                .zip(expected.lines())
                .position(|(a, e)| a != e)
                .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
            failures.push(format!(
                "{}: replay differs from expected.jsonl at line {}\n  actual:   {}\n  expected: {}\n(BLESS=1 rewrites it)",
                dir.display(),
                first + 1,
                actual.lines().nth(first).unwrap_or("<end>"),
                expected.lines().nth(first).unwrap_or("<end>"),
            ));
        }
    }
    assert!(replayed > 0, "no example has an events.jsonl");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn replaying_twice_gives_identical_bytes() {
    for dir in rule_folders() {
        if !dir.join("events.jsonl").is_file() {
            continue;
        }
        let first = replay_folder(&dir);
        let second = replay_folder(&dir);
        assert!(!first.is_empty(), "{}: no decisions", dir.display());
        assert_eq!(
            first,
            second,
            "{}: replay is not deterministic",
            dir.display()
        );
        // And with the default clock (no replay.args).
        let a = replay(&dir, &dir.join("events.jsonl"), &[]).0;
        let b = replay(&dir, &dir.join("events.jsonl"), &[]).0;
        assert_eq!(a, b, "{}: replay is not deterministic", dir.display());
    }
}

/// What the ISO 20000 example's rules say must happen to its events, independent of
/// the golden file (which could have been blessed wrong).
#[test]
fn iso20000_replay_tells_the_story_of_its_rules() {
    let out = replay_folder(&iso());
    let decisions = json_lines(&out);
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| -> Vec<&serde_json::Value> {
        decisions.iter().filter(|d| pred(d)).collect()
    };
    let s = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or("").to_string();

    // Times are RFC 3339 UTC and never go backwards.
    let times: Vec<String> = decisions.iter().map(|d| s(d, "at")).collect();
    assert!(times.iter().all(|t| t.ends_with('Z')));
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "decisions out of order"
    );

    // evt-0001 is delivered twice and takes effect once.
    let created_101 = find(&|d| {
        s(d, "kind") == "transition" && s(d, "key") == "CHG-101" && s(d, "to") == "assessing"
    });
    assert_eq!(created_101.len(), 1);

    // 8.5.1: a duplicate approval is refused, two distinct CAB approvals grant.
    assert_eq!(
        find(&|d| s(d, "key") == "CHG-101" && s(d, "outcome") == "refused").len(),
        1
    );
    assert_eq!(
        find(&|d| s(d, "key") == "CHG-101" && s(d, "to") == "approved").len(),
        1
    );
    // The requester may not approve; a non-member may not; work started early is a
    // violation and is reverted; one rejection vetoes.
    let refused_102: Vec<String> =
        find(&|d| s(d, "key") == "CHG-102" && s(d, "outcome") == "refused")
            .iter()
            .map(|d| s(d, "approver"))
            .collect();
    assert_eq!(refused_102, ["carol", "mallory"]);
    assert_eq!(
        find(&|d| s(d, "kind") == "violation" && s(d, "key") == "CHG-102").len(),
        1
    );
    assert_eq!(
        find(&|d| s(d, "key") == "CHG-102"
            && s(d, "op") == "transition"
            && d["args"][1] == "Assessing")
        .len(),
        1
    );
    assert_eq!(
        find(&|d| s(d, "key") == "CHG-102" && s(d, "to") == "rejected").len(),
        1
    );
    // CHG-103 (Friday 17:00 Berlin) gets no decision in 3 business days: expires on
    // Wednesday 17:00 Berlin, a violation, rejected.
    let expired = find(&|d| s(d, "key") == "CHG-103" && s(d, "outcome") == "expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(s(expired[0], "at"), "2026-03-11T16:00:00Z");
    assert_eq!(
        find(&|d| s(d, "kind") == "violation" && s(d, "key") == "CHG-103").len(),
        1
    );
    // BUG-55 is not a change.
    assert!(find(&|d| s(d, "key") == "BUG-55").is_empty());

    // 8.6.1: INC-7 acknowledged after two pages; INC-8 after the whole ladder, which
    // is a violation; P3 incidents start nothing.
    let steps = |key: &str| -> Vec<String> {
        find(&|d| s(d, "kind") == "escalation" && s(d, "key") == key)
            .iter()
            .map(|d| format!("{} {}", s(d, "at"), s(d, "outcome")))
            .collect()
    };
    assert_eq!(
        steps("INC-7"),
        [
            "2026-03-10T02:00:00Z started",
            "2026-03-10T02:15:00Z step 1",
            "2026-03-10T02:30:00Z step 2",
            "2026-03-10T02:40:00Z stopped"
        ]
    );
    assert_eq!(
        steps("INC-8"),
        [
            "2026-03-20T22:00:00Z started",
            "2026-03-20T22:15:00Z step 1",
            "2026-03-20T22:30:00Z step 2",
            "2026-03-20T23:00:00Z step 3"
        ]
    );
    assert!(find(&|d| s(d, "kind") == "violation" && s(d, "key") == "INC-7").is_empty());
    assert_eq!(
        find(&|d| s(d, "kind") == "violation" && s(d, "key") == "INC-8").len(),
        1
    );
    for key in ["INC-9", "INC-40"] {
        assert!(find(&|d| s(d, "key") == key).is_empty(), "{key}");
    }

    // 8.3.4: acme breaches twice in March, globex twice in April (not across months).
    let supplier: Vec<String> =
        find(&|d| s(d, "kind") == "violation" && s(d, "counter") == "supplier_breaches")
            .iter()
            .map(|d| format!("{} {}", s(d, "key"), s(d, "period")))
            .collect();
    assert_eq!(supplier, ["acme 2026-03", "globex 2026-04"]);

    // 9.3: the Q2 review runs 1 April 09:00 Berlin and is met; Q3's is missed.
    let cadence: Vec<String> = find(&|d| s(d, "kind") == "cadence")
        .iter()
        .map(|d| format!("{} {} {}", s(d, "at"), s(d, "period"), s(d, "outcome")))
        .collect();
    assert_eq!(
        cadence,
        [
            "2026-04-01T07:00:00Z 2026-Q2 ran",
            "2026-04-09T14:00:00Z 2026-Q2 met",
            "2026-07-01T07:00:00Z 2026-Q3 ran",
            "2026-07-15T07:00:00Z 2026-Q3 missed"
        ]
    );

    // Every connector call has an idempotency key, unique across the replay.
    let actions = find(&|d| s(d, "kind") == "action");
    let mut ids: Vec<String> = actions.iter().map(|d| s(d, "action_id")).collect();
    assert!(ids.iter().all(|i| !i.is_empty()));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), actions.len(), "duplicate action ids");
}
