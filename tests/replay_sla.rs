//! The resolution SLA of the ISO 20000 example's P1 incidents, replayed by the real
//! binary: the exact instants of the 75% warning and the breach, computed by hand.
//!
//! The clock counts the `office` calendar (examples/iso20000/common.stw): Europe/Berlin,
//! 08:00–18:00 Monday to Friday. In July 2026 Berlin is on summer time, UTC+2. The goal
//! is `incident_policy.resolve_within` = 4 business hours; 75% is 3 hours.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

/// The `sla` decisions of one incident: `(at, transition, threshold)`.
fn clock(out: &str, key: &str) -> Vec<(String, String, Option<u64>)> {
    json_lines(out)
        .into_iter()
        .filter(|d| d["kind"] == "sla" && d["key"] == key)
        .map(|d| {
            (
                d["at"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
                d["args"]["threshold"].as_u64(),
            )
        })
        .collect()
}

fn row(at: &str, what: &str, threshold: Option<u64>) -> (String, String, Option<u64>) {
    (at.to_string(), what.to_string(), threshold)
}

fn decisions(out: &str, key: &str, kind: &str) -> Vec<Value> {
    json_lines(out)
        .into_iter()
        .filter(|d| d["kind"] == kind && d["key"] == key)
        .collect()
}

#[test]
fn inc_50_is_warned_and_breached_at_the_instants_computed_by_hand() {
    let (out, _) = replay(&iso(), &iso_events(), &["--until", "2026-07-20T00:00:00Z"]);
    // INC-50 is created Thursday 2026-07-16 14:00Z = 16:00 Berlin and put on hold at
    // 15:00Z = 17:00 Berlin: 1 hour counted. It resumes Friday 07:30Z = 09:30 Berlin
    // (Friday 08:00–09:30 is on hold and does not count).
    // 75% (3 h): 2 more hours from 09:30 → 11:30 Berlin = 09:30Z.
    // 100% (4 h): 3 more hours from 09:30 → 12:30 Berlin = 10:30Z.
    // Resolved at 12:00Z = 14:00 Berlin: 1 h + 4.5 h = 5.5 h = 19800 s counted.
    assert_eq!(
        clock(&out, "INC-50"),
        [
            row("2026-07-16T14:00:00Z", "started", None),
            row("2026-07-16T15:00:00Z", "paused", None),
            row("2026-07-17T07:30:00Z", "resumed", None),
            row("2026-07-17T09:30:00Z", "threshold", Some(75)),
            row("2026-07-17T10:30:00Z", "threshold", Some(100)),
            row("2026-07-17T12:00:00Z", "stopped", None),
        ]
    );
    let warning = decisions(&out, "INC-50", "action")
        .into_iter()
        .find(|d| d["connector"] == "slack")
        .unwrap();
    assert_eq!(warning["at"], "2026-07-17T09:30:00Z");
    assert_eq!(
        warning["args"]["text"],
        "P1 INC-50: 75% of the resolution SLA used, 3600s left"
    );
    let breach = &decisions(&out, "INC-50", "violation")[0];
    assert_eq!(breach["at"], "2026-07-17T10:30:00Z");
    assert_eq!(breach["message"], "P1 INC-50 breached its resolution SLA");
    let stopped = clock_decision(&out, "INC-50", "stopped");
    assert_eq!(stopped["args"]["elapsed"], "19800s");
    assert_eq!(stopped["args"]["remaining"], "0s");
}

fn clock_decision(out: &str, key: &str, outcome: &str) -> Value {
    decisions(out, key, "sla")
        .into_iter()
        .find(|d| d["outcome"] == outcome)
        .unwrap()
}

#[test]
fn the_weekend_does_not_count_for_inc_51() {
    // INC-51 is created Friday 2026-07-17 15:00Z = 17:00 Berlin: 1 hour counts before
    // 18:00, then nothing over the weekend. Resolved Sunday 20:00Z, 53 hours later, it
    // has used 1 of its 4 business hours and reached no threshold (75% would have been
    // Monday 10:00 Berlin).
    let (out, _) = replay(&iso(), &iso_events(), &["--until", "2026-07-20T00:00:00Z"]);
    assert_eq!(
        clock(&out, "INC-51"),
        [
            row("2026-07-17T15:00:00Z", "started", None),
            row("2026-07-19T20:00:00Z", "stopped", None),
        ]
    );
    let stopped = clock_decision(&out, "INC-51", "stopped");
    assert_eq!(stopped["args"]["elapsed"], "3600s");
    assert_eq!(stopped["args"]["remaining"], "10800s");
}

#[test]
fn incidents_resolved_outside_office_hours_use_none_of_their_sla() {
    let (out, _) = replay(&iso(), &iso_events(), &["--until", "2026-07-20T00:00:00Z"]);
    // INC-7: Tuesday 2026-03-10 03:00–06:00 Berlin (winter time), before office hours.
    // INC-8: Friday 23:00 to Saturday 10:00 Berlin.
    for key in ["INC-7", "INC-8"] {
        let stopped = clock_decision(&out, key, "stopped");
        assert_eq!(stopped["args"]["elapsed"], "0s", "{key}");
        assert_eq!(stopped["args"]["remaining"], "14400s", "{key}");
        assert!(
            !clock(&out, key).iter().any(|r| r.1 == "threshold"),
            "{key}"
        );
    }
}

#[test]
fn a_replay_stopped_mid_pause_and_resumed_from_its_store_decides_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let db = db.to_str().unwrap();
    let lines = read_lines(&iso_events());
    // Up to INC-50's pause (evt-0031), then the rest from the store.
    let cut = lines
        .iter()
        .position(|l| l.contains("\"evt-0031\""))
        .unwrap()
        + 1;
    let prefix = dir.path().join("prefix.jsonl");
    write_lines(&prefix, &lines[..cut]);
    let (full, _) = replay(&iso(), &iso_events(), &["--until", "2026-07-20T00:00:00Z"]);
    let (first, _) = replay(&iso(), &prefix, &["--store", db]);
    let (second, _) = replay(
        &iso(),
        &iso_events(),
        &["--store", db, "--until", "2026-07-20T00:00:00Z"],
    );
    assert_eq!(format!("{first}{second}"), full);
}
