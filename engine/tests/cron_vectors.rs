//! Next-run vectors from peer schedulers (shared/oracles/cron, see its README), run
//! through [`Schedule`], the code path cadences and recurring freezes use.
//!
//! Every `*.jsonl` of the directory is read: `STEWARD_CRON_VECTORS`, or
//! `../shared/oracles/cron` next to the workspace. Vectors outside Steward's dialect are
//! filtered out and counted by reason (docs/language.md, "Cadences"):
//!
//! - `macro`: `@hourly`, `@every_second`, ... are not in the dialect.
//! - `dom_or_dow`: both day fields restricted where the peer ORs them (robfig);
//!   Steward requires both to match.
//! - `dst_policy`: a robfig vector whose window crosses a daylight-saving change; robfig
//!   skips runs in a skipped hour and repeats runs in a repeated hour, Steward follows
//!   Cronos (the Cronos vectors test it).
//! - `fixed_offset`: a schedule without a zone evaluated in the start's fixed UTC
//!   offset; Steward schedules run in a named zone (UTC by default).
//!
//! Every other vector must pass; the test prints the pass rate per source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use steward_engine::time::Schedule;

fn vectors_dir() -> PathBuf {
    match std::env::var_os("STEWARD_CRON_VECTORS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/oracles/cron"),
    }
}

/// An instant from a vector: RFC 3339 with an offset, or a naive local time in `tz`.
fn instant(text: &str, tz: Tz) -> DateTime<Utc> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return t.with_timezone(&Utc);
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .unwrap_or_else(|e| panic!("time `{text}`: {e}"));
    tz.from_local_datetime(&naive)
        .earliest()
        .unwrap_or_else(|| panic!("time `{text}` does not exist in {tz}"))
        .with_timezone(&Utc)
}

fn restricted(field: &str) -> bool {
    field != "*" && field != "?"
}

/// Why a vector is outside Steward's dialect, if it is.
fn filtered(
    v: &Value,
    tz: Tz,
    start: DateTime<Utc>,
    expected: &[DateTime<Utc>],
) -> Option<&'static str> {
    let expr = v["expr"].as_str().unwrap();
    let features: Vec<&str> = v["features"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if expr.starts_with('@') || features.contains(&"macro") {
        return Some("macro");
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let (dom, dow) = match fields.len() {
        5 => (fields[2], fields[4]),
        6 => (fields[3], fields[5]),
        _ => return None,
    };
    if v["dom_dow"].as_str() != Some("and") && restricted(dom) && restricted(dow) {
        return Some("dom_or_dow");
    }
    let start_text = v["start"].as_str().unwrap_or_default();
    if v["tz"].is_null()
        && DateTime::parse_from_rfc3339(start_text).is_ok_and(|t| t.offset().local_minus_utc() != 0)
    {
        return Some("fixed_offset");
    }
    if v["source"].as_str().is_some_and(|s| s.contains("robfig")) && tz != Tz::UTC {
        let end = expected
            .last()
            .copied()
            .unwrap_or(start + Duration::days(2));
        let offset = |t: DateTime<Utc>| {
            use chrono::Offset;
            t.with_timezone(&tz).offset().fix().local_minus_utc()
        };
        let mut probe = start;
        while probe <= end + Duration::hours(1) {
            if offset(probe) != offset(start) {
                return Some("dst_policy");
            }
            probe += Duration::minutes(30);
        }
    }
    None
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    filtered: BTreeMap<&'static str, usize>,
}

#[test]
fn cron_vectors_from_peer_schedulers() {
    let dir = vectors_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "cron vectors in {}: {e} (set STEWARD_CRON_VECTORS)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.jsonl in {}", dir.display());

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1));
            let source = v["source"].as_str().unwrap_or("?").to_string();
            let tally = tallies.entry(source.clone()).or_default();
            let tz: Tz = v["tz"]
                .as_str()
                .map(|z| z.parse().unwrap())
                .unwrap_or(Tz::UTC);
            let expr = v["expr"].as_str().unwrap();
            let start = instant(v["start"].as_str().unwrap(), tz);
            let expected: Vec<DateTime<Utc>> = v["expected_next"]
                .as_array()
                .map(|a| a.iter().map(|t| instant(t.as_str().unwrap(), tz)).collect())
                .unwrap_or_default();
            if let Some(reason) = filtered(&v, tz, start, &expected) {
                *tally.filtered.entry(reason).or_default() += 1;
                continue;
            }
            let place = format!(
                "{}:{} `{expr}` in {tz} from {}",
                path.file_name().unwrap().to_string_lossy(),
                n + 1,
                v["start"].as_str().unwrap()
            );
            let schedule = match Schedule::parse(expr, tz) {
                Ok(s) => s,
                Err(e) => {
                    tally.failed += 1;
                    failures.push(format!("{place}: does not parse: {e}"));
                    continue;
                }
            };
            let ok = match v["kind"].as_str() {
                Some("matches") => {
                    let at = instant(v["time"].as_str().unwrap(), tz);
                    let want = v["expected_match"].as_bool().unwrap();
                    let got = schedule.next_from(at) == Some(at);
                    if got != want {
                        failures.push(format!("{place}: matches {at}: {got}, expected {want}"));
                    }
                    got == want
                }
                _ => {
                    let inclusive = v["inclusive"].as_bool().unwrap_or(false);
                    // Follow the runs one after another as far as the vector lists them.
                    let mut got = Vec::new();
                    let mut from = start;
                    for i in 0..expected.len().max(1) {
                        let next = if i == 0 && inclusive {
                            schedule.next_from(from)
                        } else {
                            schedule.next_after(from)
                        };
                        match next {
                            Some(t) => {
                                got.push(t);
                                from = t;
                            }
                            None => break,
                        }
                    }
                    if expected.is_empty() {
                        // No occurrence: none within a century either.
                        got.retain(|t| *t < start + Duration::days(36_600));
                    }
                    if got != expected {
                        failures.push(format!("{place}: got {got:?}, expected {expected:?}"));
                    }
                    got == expected
                }
            };
            if ok {
                tally.passed += 1;
            } else {
                tally.failed += 1;
            }
        }
    }
    for (source, t) in &tallies {
        let run = t.passed + t.failed;
        let filtered: usize = t.filtered.values().sum();
        println!(
            "{source}: {}/{run} passed ({:.1}%), {filtered} filtered out {:?}",
            t.passed,
            100.0 * t.passed as f64 / run.max(1) as f64,
            t.filtered
        );
    }
    assert!(
        failures.is_empty(),
        "{} supported vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
