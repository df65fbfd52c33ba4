//! `steward run`, the embedded engine: events from a file, stdin or a watched
//! directory; state, outbox, evidence and dead letters in a real SQLite file, read
//! back through the engine's store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use steward_engine::decision::verify_chain;

fn run_file(events: &Path, db: &Path) -> (String, String) {
    let o = steward()
        .arg("run")
        .arg(iso())
        .arg("--events")
        .arg(events)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    let out = ok(&o);
    (out, stderr(&o))
}

/// Decisions without their wall-clock `at`, for comparing two runs.
fn timeless(out: &str) -> Vec<Value> {
    json_lines(out)
        .into_iter()
        .map(|mut d| {
            d.as_object_mut().unwrap().remove("at");
            // An SLA clock's figures are measured on the wall clock too.
            if d["kind"] == "sla" {
                d.as_object_mut().unwrap().remove("args");
            }
            d
        })
        .collect()
}

/// The evidence holds exactly the printed decisions, in order, and its chain verifies.
fn assert_evidence_matches(snap: &Snapshot, decisions: &[Value]) {
    assert_eq!(verify_chain(&snap.evidence), Ok(snap.evidence.len() as u64));
    assert_eq!(snap.evidence.len(), decisions.len());
    for (r, d) in snap.evidence.iter().zip(decisions) {
        let record: Value = serde_json::from_str(&r.record).unwrap();
        assert_eq!(
            &record, d,
            "evidence record {} is not the printed decision",
            r.seq
        );
        assert_eq!(r.kind, d["kind"].as_str().unwrap());
    }
}

#[test]
fn run_commits_decisions_outbox_evidence_seen_events_and_open_instances() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("steward.db");
    let (out, err) = run_file(&iso_events(), &db);
    let decisions = json_lines(&out);
    assert!(!decisions.is_empty(), "{err}");

    // Connector calls are printed as `action` decisions with an idempotency key …
    let actions: Vec<&Value> = decisions.iter().filter(|d| d["kind"] == "action").collect();
    let ops: Vec<String> = actions
        .iter()
        .map(|d| {
            format!(
                "{}.{}",
                d["connector"].as_str().unwrap(),
                d["op"].as_str().unwrap()
            )
        })
        .collect();
    for op in [
        "jira.comment",
        "jira.transition",
        "pagerduty.resolve",
        "slack.post",
    ] {
        assert!(ops.contains(&op.to_string()), "no {op} in {ops:?}");
    }
    // … and each is in the outbox, pending, with the same arguments.
    let snap = snapshot(&db, &iso());
    assert_eq!(snap.outbox.len(), actions.len());
    for a in &actions {
        let id = a["action_id"].as_str().unwrap();
        let row = snap
            .outbox
            .iter()
            .find(|r| r.action_id == id)
            .unwrap_or_else(|| panic!("action {id} not in the outbox"));
        assert_eq!(row.connector, a["connector"].as_str().unwrap());
        assert_eq!(row.op, a["op"].as_str().unwrap());
        assert_eq!(serde_json::from_str::<Value>(&row.args).unwrap(), a["args"]);
        assert_eq!(row.status, "pending");
    }

    assert_evidence_matches(&snap, &decisions);

    // Every distinct event was seen once (evt-0001 is delivered twice).
    let lines = read_lines(&iso_events());
    assert_eq!(snap.seen, event_identities(&lines));
    assert!(err.contains("1 duplicates"), "{err}");

    // On the wall clock, CHG-103's three business days have not passed: it is still
    // waiting for the CAB, its expiry timer pending; so is emergency change CHG-202's
    // review; finished instances are gone.
    let open = |w: &str, k: &str, s: &str| (w.to_string(), k.to_string(), s.to_string());
    assert_eq!(
        snap.open,
        [
            open("change", "CHG-103", "assessing"),
            open("emergency_change", "CHG-202", "awaiting_review"),
        ]
    );
    assert!(snap.timers >= 1, "the approval expiry is not pending");
    assert!(snap.dead_letters.is_empty());
}

#[test]
fn running_again_on_the_same_events_has_no_effect() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("steward.db");
    let (first, _) = run_file(&iso_events(), &db);
    let before = snapshot(&db, &iso());
    let (second, err) = run_file(&iso_events(), &db);
    assert!(!first.is_empty());
    assert_eq!(second, "", "a second run decided again:\n{second}");
    let lines = read_lines(&iso_events());
    assert_eq!(
        summary_count(&err, "duplicates"),
        Some(lines.len() as u64),
        "{err}"
    );
    let after = snapshot(&db, &iso());
    assert_eq!(after.evidence, before.evidence);
    assert_eq!(after.outbox, before.outbox);
    assert_eq!(after.seen, before.seen);
    assert_eq!(after.open, before.open);
}

fn run_stdin(args: &[&str], db: &Path, input: &[u8]) -> (String, String) {
    let mut child = steward()
        .arg("run")
        .arg(iso())
        .args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let out = ok(&o);
    (out, stderr(&o))
}

#[test]
fn events_piped_on_stdin_are_processed_like_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, _) = run_file(&iso_events(), &dir.path().join("file.db"));
    let input = std::fs::read(iso_events()).unwrap();

    let db = dir.path().join("dash.db");
    let (out, _) = run_stdin(&["--events", "-"], &db, &input);
    assert_eq!(timeless(&out), timeless(&from_file));
    assert_evidence_matches(&snapshot(&db, &iso()), &json_lines(&out));

    // With neither --events nor --watch (nor a config), events come from stdin.
    let db = dir.path().join("default.db");
    let (out, _) = run_stdin(&[], &db, &input);
    assert_eq!(timeless(&out), timeless(&from_file));
}

#[test]
fn invalid_lines_are_dead_lettered_with_their_reason_and_processing_continues() {
    let dir = tempfile::tempdir().unwrap();
    let lines = read_lines(&iso_events());
    let mut mixed: Vec<String> = lines[..2].to_vec();
    mixed.push("{not json".to_string()); // 3
    mixed.push(r#"{"specversion":"1.0","source":"/x","type":"incident.created"}"#.to_string()); // 4
    mixed.push(
        r#"{"specversion":"2.0","id":"v2","source":"/x","type":"incident.created"}"#.to_string(),
    ); // 5
    mixed.push(
        r#"{"specversion":"1.0","id":"big","source":"/x","type":"t","Bad-Ext":1}"#.to_string(),
    ); // 6
    mixed.extend_from_slice(&lines[2..8]);
    let events = dir.path().join("mixed.jsonl");
    write_lines(&events, &mixed);
    let db = dir.path().join("steward.db");
    let (out, err) = run_file(&events, &db);

    let snap = snapshot(&db, &iso());
    let origin = events.display().to_string();
    let expected = [
        (3, "not JSON"),
        (4, "`id`"),
        (5, "`specversion`"),
        (6, "Bad-Ext"),
    ];
    assert_eq!(snap.dead_letters.len(), expected.len(), "{err}");
    for (letter, (line, reason)) in snap.dead_letters.iter().zip(expected) {
        assert_eq!(letter.origin, format!("{origin}:{line}"));
        assert!(
            letter.reason.contains(reason),
            "{}: {}",
            letter.origin,
            letter.reason
        );
        assert_eq!(letter.body, mixed[line - 1]);
        let printed = format!("{origin}:{line}: dead-lettered: {}", letter.reason);
        assert!(err.contains(&printed), "stderr lacks `{printed}`:\n{err}");
    }
    assert_eq!(summary_count(&err, "dead-lettered"), Some(4), "{err}");

    // The good lines after the bad ones were processed: CHG-102 was created and
    // CHG-101 approved.
    let decisions = json_lines(&out);
    assert!(
        decisions
            .iter()
            .any(|d| d["key"] == "CHG-101" && d["to"] == "approved")
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["key"] == "CHG-102" && d["to"] == "assessing")
    );
    let good: Vec<String> = lines[..8].to_vec();
    assert_eq!(snap.seen, event_identities(&good));
}

#[test]
fn a_config_file_and_the_environment_choose_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_db = dir.path().join("from-config.db");
    let env_db = dir.path().join("from-env.db");
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n\n[source]\nevents = {:?}\n\n[engine]\nbatch = 5\n",
            cfg_db.display().to_string(),
            iso_events().display().to_string()
        ),
    )
    .unwrap();
    let events = read_lines(&iso_events());

    // The config's store and source.
    let o = steward()
        .current_dir(dir.path())
        .arg("run")
        .arg(iso())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(!out.is_empty());
    assert_eq!(snapshot(&cfg_db, &iso()).seen, event_identities(&events));
    assert!(!env_db.exists());
    assert!(!dir.path().join("steward.db").exists());

    // The environment overrides the config.
    let o = steward()
        .current_dir(dir.path())
        .env("STEWARD_STORE__PATH", &env_db)
        .arg("run")
        .arg(iso())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let out = ok(&o);
    assert_eq!(timeless(&out).len(), json_lines(&out).len());
    assert!(!out.is_empty(), "the env database was not fresh");
    assert_eq!(snapshot(&env_db, &iso()).seen, event_identities(&events));

    // Without a config or --db: steward.db in the working directory.
    let o = steward()
        .current_dir(dir.path())
        .arg("run")
        .arg(iso())
        .arg("--events")
        .arg(iso_events())
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        snapshot(&dir.path().join("steward.db"), &iso()).seen,
        event_identities(&events)
    );

    // An unknown key is an error, not silently ignored.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[store]\npaht = \"x.db\"\n").unwrap();
    let o = steward()
        .current_dir(dir.path())
        .arg("run")
        .arg(iso())
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("paht"), "{}", stderr(&o));
}

/// A running `steward run` whose stdout lines arrive on a channel.
struct Engine {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
    stderr: std::thread::JoinHandle<String>,
}

impl Engine {
    fn spawn(cmd: &mut Command) -> Engine {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Engine {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Polls stdout until a decision satisfies `pred`, or fails after a deadline.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        if self.seen.iter().any(&pred) {
            return;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let d: Value = serde_json::from_str(&line).unwrap();
                    let hit = pred(&d);
                    self.seen.push(d);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        panic!(
            "timed out waiting for {what}; decisions so far: {:?}",
            self.seen
        );
    }

    /// Sends SIGINT and waits (bounded) for the process to stop; returns its stderr.
    fn interrupt(mut self) -> (std::process::ExitStatus, String, Vec<Value>) {
        let status = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("steward run did not stop on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for line in self.lines.iter() {
            self.seen.push(serde_json::from_str(&line).unwrap());
        }
        (status, self.stderr.join().unwrap(), self.seen)
    }
}

#[test]
fn a_watched_directory_is_followed_until_sigint_and_everything_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let db = dir.path().join("steward.db");
    let lines = read_lines(&iso_events());
    let mut engine = Engine::spawn(
        steward()
            .env("STEWARD_SOURCE__POLL_MS", "20")
            .arg("run")
            .arg(iso())
            .arg("--watch")
            .arg(&inbox)
            .arg("--db")
            .arg(&db),
    );

    // A file written after the start.
    write_lines(&inbox.join("a.jsonl"), &lines[..3]);
    engine.wait_for("CHG-101's approval request", |d| {
        d["key"] == "CHG-101" && d["outcome"] == "requested"
    });
    engine.wait_for("alice's approval", |d| d["event"] == "evt-0002");
    // Another file; only `.jsonl` files are read.
    write_lines(&inbox.join("b.jsonl"), &lines[14..17]);
    let ignored = lines[5].clone();
    write_lines(&inbox.join("notes.txt"), &[ignored]);
    engine.wait_for("INC-7 resolved", |d| {
        d["key"] == "INC-7" && d["to"] == "resolved"
    });
    // A line appended to the first file, in two writes: the half line waits for its end.
    let line = &lines[4];
    let (head, tail) = line.split_at(line.len() / 2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(inbox.join("a.jsonl"))
        .unwrap();
    f.write_all(head.as_bytes()).unwrap();
    f.flush().unwrap();
    f.write_all(format!("{tail}\n").as_bytes()).unwrap();
    drop(f);
    engine.wait_for("CHG-101 approved", |d| {
        d["key"] == "CHG-101" && d["to"] == "approved"
    });

    let (status, err, decisions) = engine.interrupt();
    assert!(status.success(), "{status:?}\n{err}");
    assert!(err.contains("interrupted"), "{err}");

    let snap = snapshot(&db, &iso());
    let mut fed: Vec<String> = lines[..3].to_vec();
    fed.extend_from_slice(&lines[14..17]);
    fed.push(lines[4].clone());
    assert_eq!(snap.seen, event_identities(&fed));
    assert!(snap.dead_letters.is_empty(), "{:?}", snap.dead_letters);
    assert_evidence_matches(&snap, &decisions);
}

#[test]
fn sigint_during_a_burst_on_stdin_stops_the_engine_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("steward.db");
    let mut child_cmd = steward();
    // A commit after every event: the engine spends its waits on the store, where a
    // signal listener that lives only in the select would miss a Ctrl-C.
    child_cmd
        .env("STEWARD_ENGINE__BATCH", "1")
        .arg("run")
        .arg(iso())
        .arg("--events")
        .arg("-")
        .arg("--db")
        .arg(&db)
        .stdin(Stdio::piped());
    let mut engine = Engine::spawn(&mut child_cmd);
    let mut stdin = engine.child.stdin.take().unwrap();
    // Many events, and stdin stays open: only SIGINT can end this run.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for i in 0..20_000 {
            let line = format!(
                r#"{{"specversion":"1.0","id":"burst-{i}","source":"/test","type":"jira:issue_created","time":"2026-03-02T09:00:00Z","data":{{"user":{{"accountId":"erin"}},"issue":{{"key":"CHG-{i}","fields":{{"issuetype":{{"name":"Change"}},"project":{{"key":"CHG"}}}}}}}}}}"#
            );
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
        }
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
        drop(stdin);
    });
    engine.wait_for("the first decisions", |_| true);
    let (status, err, decisions) = engine.interrupt();
    let _ = done_tx.send(());
    writer.join().unwrap();
    assert!(status.success(), "{status:?}\n{err}");
    assert!(err.contains("interrupted"), "{err}");

    // What was applied was committed, and printed: each change created decides.
    let snap = snapshot(&db, &iso());
    let mut decided: Vec<(String, String)> = decisions
        .iter()
        .filter_map(|d| d["event"].as_str())
        .map(|id| ("/test".to_string(), id.to_string()))
        .collect();
    decided.sort();
    decided.dedup();
    assert!(!snap.seen.is_empty());
    assert_eq!(snap.seen, decided);
    assert_evidence_matches(&snap, &decisions);
}
