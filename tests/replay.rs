//! `steward replay`: resuming from a store, de-duplication, bad input lines, and the
//! `--from`/`--until` window, against the real binary and the ISO 20000 example.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

fn full_replay() -> String {
    replay(&iso(), &iso_events(), &[]).0
}

/// Replays the first `k` events into a fresh store, then the whole file into the same
/// store; returns both outputs and the second run's stderr.
fn prefix_then_resume(k: usize) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let lines = read_lines(&iso_events());
    let prefix = dir.path().join("prefix.jsonl");
    write_lines(&prefix, &lines[..k]);
    let db = dir.path().join("state.db");
    let db = db.to_str().unwrap();
    let (first, _) = replay(&iso(), &prefix, &["--store", db]);
    let (second, err) = replay(&iso(), &iso_events(), &["--store", db]);
    (first, second, err)
}

#[test]
fn replaying_a_prefix_then_resuming_equals_one_uninterrupted_replay() {
    let full = full_replay();
    let n = read_lines(&iso_events()).len();
    // Among them: 14 (CHG-103 requested, before its approval expires), 15 and 19
    // (P1 incidents, mid-way through their escalation ladders), 23 (before the Q2
    // review runs), 24 (after it ran, before its evidence), 28 to 42 (CHG-201 with
    // approvals counted, a delegation in force and an approval re-opened; emergency
    // changes awaiting their review), 43 (before Q3 runs).
    for k in 1..n {
        let (first, second, err) = prefix_then_resume(k);
        assert_eq!(
            format!("{first}{second}"),
            full,
            "prefix of {k} events + resume differs from one replay"
        );
        // The second run saw the prefix's events again and dropped them.
        let dups = summary_count(&err, "duplicates").unwrap_or_else(|| panic!("{err}"));
        assert!(dups as usize >= k, "k={k}: {err}");
    }
}

#[test]
fn resuming_a_complete_replay_decides_nothing_new() {
    let (first, second, err) = prefix_then_resume(read_lines(&iso_events()).len());
    assert_eq!(first, full_replay());
    assert_eq!(second, "", "{err}");
}

/// A redelivery: same `source` and `id`, different data.
fn redelivered(line: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["data"] = serde_json::json!({"redelivered": true, "priority": "P1", "approver": "dave", "decision": "reject"});
    v.to_string()
}

#[test]
fn redelivered_events_take_effect_once_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let lines = read_lines(&iso_events());
    // The example already holds one redelivery (evt-0001).
    let (original, original_err) = replay(&iso(), &iso_events(), &[]);
    let base_dups = summary_count(&original_err, "duplicates").unwrap();

    // Redeliver: the P1 incident right after itself (with data that would otherwise
    // change its course), an approval decision later on, and the last event at the end.
    let mut with = Vec::new();
    let mut added = 0;
    for (i, line) in lines.iter().enumerate() {
        with.push(line.clone());
        if line.contains("\"evt-0014\"") || line.contains("\"evt-0004\"") {
            with.push(redelivered(line));
            added += 1;
        }
        if i == 20 {
            with.push(redelivered(&lines[2]));
            with.push(lines[12].clone());
            added += 2;
        }
    }
    with.push(lines[lines.len() - 1].clone());
    added += 1;
    let path = dir.path().join("redelivered.jsonl");
    write_lines(&path, &with);
    let (out, err) = replay(&iso(), &path, &[]);
    assert_eq!(out, original, "redeliveries changed the decisions");
    assert_eq!(
        summary_count(&err, "duplicates"),
        Some(base_dups + added),
        "{err}"
    );
}

#[test]
fn bad_lines_are_named_skipped_and_the_rest_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let lines = read_lines(&iso_events());
    let good: Vec<String> = lines[..8].to_vec();
    let mut mixed = Vec::new();
    mixed.extend_from_slice(&good[..3]);
    mixed.push("this is not json {".to_string()); // line 4
    mixed.push(
        r#"{"specversion":"1.0","source":"/x","type":"incident.created","time":"2026-03-02T10:30:00Z","data":{"priority":"P1"}}"#
            .to_string(),
    ); // line 5: no id
    mixed.extend_from_slice(&good[3..5]); // lines 6, 7
    mixed.push(
        r#"{"specversion":"0.3","id":"old-1","source":"/x","type":"incident.created","time":"2026-03-02T12:00:00Z","data":{"priority":"P1"}}"#
            .to_string(),
    ); // line 8: wrong specversion
    mixed.push(String::new()); // line 9: blank, ignored silently
    mixed.push(
        r#"{"specversion":"1.0","id":"no-time","source":"/x","type":"incident.created","subject":"INC-99","data":{"priority":"P1"}}"#
            .to_string(),
    ); // line 10: no time
    mixed.extend_from_slice(&good[5..]);
    let bad_path = dir.path().join("mixed.jsonl");
    write_lines(&bad_path, &mixed);
    let good_path = dir.path().join("good.jsonl");
    write_lines(&good_path, &good);

    let o = run([
        "replay".as_ref(),
        iso().as_os_str(),
        "--events".as_ref(),
        bad_path.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (expected, _) = replay(&iso(), &good_path, &[]);
    assert!(!expected.is_empty());
    assert_eq!(
        stdout(&o),
        expected,
        "bad lines changed the good lines' output"
    );

    let err = stderr(&o);
    let skipped: Vec<&str> = err.lines().filter(|l| l.contains(": skipped: ")).collect();
    let p = bad_path.display().to_string();
    let expect = [
        (4, "not JSON"),
        (5, "`id`"),
        (8, "`specversion`"),
        (10, "`time`"),
    ];
    assert_eq!(skipped.len(), expect.len(), "{err}");
    for (line, (number, reason)) in skipped.iter().zip(expect) {
        let prefix = format!("{p}:{number}: skipped: ");
        assert!(
            line.starts_with(&prefix),
            "expected `{prefix}…`, got `{line}`"
        );
        assert!(line.contains(reason), "`{line}` does not mention {reason}");
    }
    assert!(err.contains("4 lines skipped"), "{err}");
}

fn cadence_runs(out: &str) -> Vec<String> {
    json_lines(out)
        .iter()
        .filter(|d| d["kind"] == "cadence")
        .map(|d| {
            format!(
                "{} {} {}",
                d["at"].as_str().unwrap(),
                d["period"].as_str().unwrap(),
                d["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_cadence_fires_for_periods_between_from_and_until_only() {
    // The whole year: every quarter's review runs (09:00 Berlin, CET or CEST); only
    // Q2's evidence arrives.
    let (out, _) = replay(
        &iso(),
        &iso_events(),
        &[
            "--from",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-12-31T00:00:00Z",
        ],
    );
    assert_eq!(
        cadence_runs(&out),
        [
            "2026-01-01T08:00:00Z 2026-Q1 ran",
            "2026-01-15T08:00:00Z 2026-Q1 missed",
            "2026-04-01T07:00:00Z 2026-Q2 ran",
            "2026-04-09T14:00:00Z 2026-Q2 met",
            "2026-07-01T07:00:00Z 2026-Q3 ran",
            "2026-07-15T07:00:00Z 2026-Q3 missed",
            "2026-10-01T07:00:00Z 2026-Q4 ran",
            "2026-10-15T07:00:00Z 2026-Q4 missed",
        ]
    );
    let last = json_lines(&out).last().unwrap()["at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last.as_str() <= "2026-12-31T00:00:00Z", "{last}");

    // Ending a day after Q3's run: it runs, its deadline (15 July) is not reached.
    let (out, _) = replay(&iso(), &iso_events(), &["--until", "2026-07-02T00:00:00Z"]);
    assert_eq!(
        cadence_runs(&out),
        [
            "2026-04-01T07:00:00Z 2026-Q2 ran",
            "2026-04-09T14:00:00Z 2026-Q2 met",
            "2026-07-01T07:00:00Z 2026-Q3 ran",
        ]
    );

    // Ending before Q3: nothing after --until, even though the file has a later event.
    let (out, err) = replay(&iso(), &iso_events(), &["--until", "2026-06-30T00:00:00Z"]);
    assert_eq!(
        cadence_runs(&out),
        [
            "2026-04-01T07:00:00Z 2026-Q2 ran",
            "2026-04-09T14:00:00Z 2026-Q2 met"
        ]
    );
    for d in json_lines(&out) {
        assert!(
            d["at"].as_str().unwrap() <= "2026-06-30T00:00:00Z",
            "{d} after --until"
        );
    }
    assert!(
        !out.contains("evt-0027"),
        "an event after --until was applied"
    );
    assert!(err.contains("after --until"), "{err}");

    // Starting after Q2's run: it is not run late.
    let (out, _) = replay(
        &iso(),
        &iso_events(),
        &[
            "--from",
            "2026-04-02T00:00:00Z",
            "--until",
            "2026-07-02T00:00:00Z",
        ],
    );
    let runs = cadence_runs(&out);
    assert!(!runs.iter().any(|r| r.contains("2026-Q2 ran")), "{runs:?}");
    assert!(runs.iter().any(|r| r.contains("2026-Q3 ran")), "{runs:?}");
}

#[test]
fn bad_from_or_until_is_an_error() {
    let o = run([
        "replay".as_ref(),
        iso().as_os_str(),
        "--events".as_ref(),
        iso_events().as_os_str(),
        "--until".as_ref(),
        "next tuesday".as_ref(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--until"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}
