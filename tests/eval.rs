//! `steward eval` and `steward explain`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

fn eval(args: &[&str]) -> std::process::Output {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    run(all)
}

fn change_event(dir: &std::path::Path) -> std::path::PathBuf {
    let first = read_lines(&iso_events()).remove(0);
    let path = dir.join("event.json");
    std::fs::write(&path, first.replace("CHG-101", "CHG-1")).unwrap();
    path
}

#[test]
fn eval_reads_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let event = change_event(dir.path());
    let event = event.to_str().unwrap();
    let o = eval(&["event.data.issue.key", "--event", event]);
    assert_eq!(ok(&o), "\"CHG-1\"\n");
    let o = eval(&[
        "event.type == 'jira:issue_created' && event.data.issue.fields.issuetype.name == 'Change'",
        "--event",
        event,
    ]);
    assert_eq!(ok(&o), "true\n");
    // Values print as JSON.
    let o = eval(&["{'k': [event.subject, size(event.id)]}", "--event", event]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v, serde_json::json!({"k": ["CHG-1", 8]}));
}

#[test]
fn eval_binds_vars() {
    assert_eq!(ok(&eval(&["--vars", r#"{"a":2}"#, "a * 21"])), "42\n");
    assert_eq!(
        ok(&eval(&[
            "--vars",
            r#"{"who":"alice","cab":["alice","bob"]}"#,
            "who in cab"
        ])),
        "true\n"
    );
    let o = eval(&["--vars", "[1]", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--vars"), "{}", stderr(&o));
}

#[test]
fn eval_reads_the_calendars_and_policies_of_rule_files() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("office.stw");
    std::fs::write(
        &rules,
        r#"policy change_policy version "1" {
  cab_quorum = 2
}

calendar office {
  zone "Europe/Berlin"
  hours mon..fri 08:00..18:00
  holidays "2026-04-03"
}
"#,
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let at = |t: &str| format!("in_working_hours(office, timestamp('{t}'))");
    // A Thursday at 11:00 in Berlin; the same hour on a Saturday, and on a holiday.
    for (t, want) in [
        ("2026-03-05T10:00:00Z", "true\n"),
        ("2026-03-07T10:00:00Z", "false\n"),
        ("2026-04-03T10:00:00Z", "false\n"),
    ] {
        assert_eq!(ok(&eval(&[&at(t), "--rules", rules])), want, "{t}");
    }
    let o = eval(&[
        "add_business(office, timestamp('2026-04-02T14:00:00Z'), duration('4h'))",
        "--rules",
        rules,
    ]);
    // Two hours left on Thursday (16:00 to 18:00 in Berlin, UTC+2); Friday is a
    // holiday; two more on Monday from 08:00.
    assert_eq!(ok(&o), "\"2026-04-06T08:00:00Z\"\n");
    assert_eq!(
        ok(&eval(&["change_policy.cab_quorum + 1", "--rules", rules])),
        "3\n"
    );
    // Without the rules, the calendar functions have nothing to read.
    let o = eval(&[&at("2026-03-05T10:00:00Z")]);
    assert_eq!(o.status.code(), Some(1));
    // Rules that do not check are reported, and nothing is evaluated.
    let bad = dir.path().join("bad.stw");
    std::fs::write(&bad, "calendar office {\n  zone \"Mars/Olympus\"\n}\n").unwrap();
    let o = eval(&["1", "--rules", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("bad.stw:2:"), "{}", stderr(&o));
}

#[test]
fn a_syntax_error_exits_1_with_a_rendered_diagnostic() {
    let o = eval(&["a * (21"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    let err = stderr(&o);
    // `path:line:col: error[CODE]: message`, the snippet and a caret.
    let first = err.lines().next().unwrap();
    assert!(first.starts_with("<expr>:1:"), "{err}");
    assert!(first.contains(": error[E"), "{err}");
    assert!(err.contains("a * (21"), "no snippet:\n{err}");
    assert!(err.contains('^'), "no caret:\n{err}");
}

#[test]
fn unknown_names_and_run_time_errors_exit_1() {
    let o = eval(&["nosuch(1)"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nosuch"), "{}", stderr(&o));
    let o = eval(&["1 / 0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("division"), "{}", stderr(&o));
}

#[test]
fn an_event_file_that_is_not_a_cloud_event_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"specversion":"1.0","source":"/s","type":"t"}"#).unwrap();
    let o = eval(&["event.id", "--event", path.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("bad.json") && err.contains("`id`"), "{err}");
}

#[test]
fn explain_prints_the_page_of_every_documented_code() {
    let o = run(["explain", "E0001"]);
    let page = ok(&o);
    assert!(page.starts_with("# E0001"), "{page}");
    assert!(page.lines().count() > 3, "{page}");

    let mut pages = 0;
    for entry in std::fs::read_dir(root().join("docs/errors")).unwrap() {
        let path = entry.unwrap().path();
        let code = path.file_stem().unwrap().to_str().unwrap().to_string();
        let o = run(["explain", code.as_str()]);
        let printed = ok(&o);
        let doc = std::fs::read_to_string(&path).unwrap();
        assert_eq!(printed.trim_end(), doc.trim_end(), "{code}");
        pages += 1;
    }
    assert!(pages > 0);
}

#[test]
fn explain_of_an_unknown_code_fails() {
    for code in ["E9999", "banana", ""] {
        let o = run(["explain", code]);
        assert!(!o.status.success(), "{code}");
        assert!(stdout(&o).is_empty(), "{code}");
        assert!(
            stderr(&o).contains("unknown code"),
            "{code}: {}",
            stderr(&o)
        );
    }
}
