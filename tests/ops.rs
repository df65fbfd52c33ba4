//! Operating `steward run`: `/healthz`, `/readyz` and `/metrics` on `[ops] listen`
//! (or `--ops-listen`), and the logs on stderr as text or JSON. The metrics are checked
//! against what the same input gives without them (the run's own summary); readiness
//! against the real RabbitMQ on this machine (skipped when it is unreachable, failing
//! then with `STEWARD_REQUIRE_SERVICES=1`) and against a closed port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::amqp::{Session, URL, unique};
use common::http::{free_port, get, request, sample, total};
use common::*;
use serde_json::Value;

/// Polls `GET path` until `done` holds for (status, body), or fails after a minute.
fn wait_for(
    port: u16,
    path: &str,
    child: &mut Child,
    what: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        if let Some((status, body)) = get(port, path) {
            if done(status, &body) {
                return (status, body);
            }
            last = Some((status, body));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("steward run exited ({status}) while waiting for {what}");
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}: last answer of {path}: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

/// The iso20000 events with an unusable line, a duplicate and an event no rule
/// listens to.
fn events(dir: &Path) -> std::path::PathBuf {
    let mut lines = read_lines(&iso_events());
    lines.push("{not json".to_string());
    lines.push(lines[0].clone());
    lines.push(
        r#"{"specversion":"1.0","id":"x-1","source":"urn:test","type":"com.example.unknown","time":"2026-03-02T09:00:00Z"}"#
            .to_string(),
    );
    let path = dir.join("events.jsonl");
    write_lines(&path, &lines);
    path
}

#[test]
fn metrics_count_what_was_processed() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(dir.path());
    let lines = read_lines(&events);

    // The same input without the endpoint: what the run says it did.
    let o = run([
        "run".as_ref(),
        iso().as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
        "--db".as_ref(),
        dir.path().join("reference.db").as_os_str(),
    ]);
    let reference_out = ok(&o);
    let summary = stderr(&o);
    let expect = |what: &str| summary_count(&summary, what).unwrap() as f64;
    let (applied, duplicates, unrouted, dead) = (
        expect("applied"),
        expect("duplicates"),
        expect("unrouted"),
        expect("dead-lettered"),
    );
    assert!(
        duplicates >= 1.0 && unrouted >= 1.0 && dead >= 1.0,
        "{summary}"
    );

    // Now from stdin, kept open so the endpoint can be read while the run goes on.
    let port = free_port();
    let mut child = steward()
        .arg("run")
        .arg(iso())
        .args(["--events", "-", "--db"])
        .arg(dir.path().join("steward.db"))
        .args(["--ops-listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin: ChildStdin = child.stdin.take().unwrap();
    for line in &lines {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    let (_, metrics) = wait_for(
        port,
        "/metrics",
        &mut child,
        "every line to be committed",
        |status, body| {
            status == 200
                && sample(body, "steward_events_applied_total") == Some(applied)
                && sample(body, "steward_events_duplicates_total") == Some(duplicates)
                && sample(body, "steward_events_unrouted_total") == Some(unrouted)
                && sample(
                    body,
                    r#"steward_events_dead_lettered_total{source="stdin"}"#,
                ) == Some(dead)
        },
    );
    assert_eq!(
        sample(&metrics, r#"steward_events_received_total{source="stdin"}"#),
        Some(lines.len() as f64),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"steward_events_received_total{source="amqp"}"#),
        Some(0.0)
    );
    // Decisions by kind, as printed.
    let mut kinds: BTreeMap<String, f64> = BTreeMap::new();
    for d in json_lines(&reference_out) {
        *kinds
            .entry(d["kind"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    for (kind, n) in &kinds {
        assert_eq!(
            sample(
                &metrics,
                &format!(r#"steward_decisions_total{{kind="{kind}"}}"#)
            ),
            Some(*n),
            "{kind}\n{metrics}"
        );
    }
    assert_eq!(
        total(&metrics, "steward_decisions_total"),
        expect("decisions")
    );
    let pending: f64 = summary
        .rsplit("pending timers: ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert_eq!(sample(&metrics, "steward_timers_pending"), Some(pending));
    assert!(sample(&metrics, "steward_commit_duration_seconds_count").unwrap() >= 1.0);
    assert!(
        sample(&metrics, "steward_outbox_open").is_some(),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE steward_commit_duration_seconds histogram"));
    assert!(metrics.contains("# HELP steward_events_applied_total "));

    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    let (status, body) = get(port, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["store"], "ok", "{body}");
    assert_eq!(ready["checks"]["engine"], "ok", "{body}");
    assert_eq!(get(port, "/nope").unwrap().0, 404);

    drop(stdin);
    let o = finish(child, Duration::from_secs(60));
    // The decisions on stdout are those of the run without the endpoint (but for the
    // wall-clock times).
    let without_time = |text: &str| -> Vec<Value> {
        json_lines(text)
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
    };
    assert_eq!(without_time(&ok(&o)), without_time(&reference_out));
    let err = stderr(&o);
    assert_eq!(
        summary_count(&err, "applied"),
        Some(applied as u64),
        "{err}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(dir.path());
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n",
            dir.path().join("steward.db").display()
        ),
    )
    .unwrap();
    let mut cmd = steward();
    cmd.arg("run")
        .arg(iso())
        .arg("--config")
        .arg(&config)
        .arg("--events")
        .arg(&events);
    let o = cmd.output().unwrap();
    let out = ok(&o);
    let err = stderr(&o);
    let logs = json_lines(&err);
    assert!(!logs.is_empty());
    for log in &logs {
        assert!(log["timestamp"].is_string(), "{log}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&log["level"].as_str().unwrap()),
            "{log}"
        );
        assert!(log["fields"].is_object(), "{log}");
        // Steward's own events always say something; a dependency's may be fields only.
        if log["target"].as_str().unwrap().starts_with("steward") {
            assert!(log["fields"]["message"].is_string(), "{log}");
        }
    }
    let origin = format!("{}:{}", events.display(), read_lines(&events).len() - 2);
    let dead: Vec<&Value> = logs
        .iter()
        .filter(|l| l["fields"]["origin"] == origin.as_str())
        .collect();
    assert_eq!(dead.len(), 1, "{err}");
    assert_eq!(dead[0]["level"], "WARN");
    assert!(
        dead[0]["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{err}"
    );
    let summary = logs
        .iter()
        .find(|l| l["fields"]["applied"].is_u64())
        .unwrap_or_else(|| panic!("no summary in {err}"));
    assert!(
        summary["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("processed: ")
    );
    assert_eq!(summary["fields"]["dead_lettered"], 1);
    // The start says what the store held and how long loading it took.
    let loaded = logs
        .iter()
        .find(|l| l["fields"]["pending_timers"].is_u64() && l["fields"]["took_ms"].is_u64())
        .unwrap_or_else(|| panic!("no load line in {err}"));
    assert_eq!(loaded["level"], "INFO");
    assert_eq!(loaded["fields"]["instances"], 0, "{loaded}");
    assert!(
        loaded["fields"]["message"]
            .as_str()
            .unwrap()
            .contains(": loaded 0 instances, 0 pending timers and 0 seen event ids in "),
        "{loaded}"
    );
    // Stdout is the decision stream, whatever the log format.
    let decisions = json_lines(&out);
    assert!(decisions.iter().all(|d| d["kind"].is_string()));

    // Started again on the same store: it loads what the first run left.
    let o = steward()
        .arg("run")
        .arg(iso())
        .arg("--config")
        .arg(&config)
        .arg("--events")
        .arg("/dev/null")
        .output()
        .unwrap();
    ok(&o);
    let err = stderr(&o);
    let logs = json_lines(&err);
    let loaded = logs
        .iter()
        .find(|l| l["fields"]["took_ms"].is_u64())
        .unwrap_or_else(|| panic!("no load line in {err}"));
    assert!(
        loaded["fields"]["instances"].as_u64().unwrap() > 0,
        "{loaded}"
    );
    assert!(
        loaded["fields"]["seen_events"].as_u64().unwrap() > 0,
        "{loaded}"
    );
    assert_eq!(
        loaded["fields"]["pending_timers"], summary["fields"]["pending_timers"],
        "{loaded}"
    );

    // A bad level is a configuration error that names the setting.
    let o = steward()
        .env("STEWARD_LOG__LEVEL", "info,=")
        .arg("run")
        .arg(iso())
        .arg("--events")
        .arg(&events)
        .arg("--db")
        .arg(dir.path().join("other.db"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("[log] level"), "{}", stderr(&o));
}

/// A run with `[amqp]` and the endpoint; the config points at `url`; `env` adds
/// overrides.
fn amqp_run(dir: &Path, url: &str, names: &str, port: u16, env: &[(&str, &str)]) -> Child {
    let config = dir.join("steward.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
path = "{db}"

[amqp]
url = "{url}"
exchange = "{names}.x"
queue = "{names}.q"
dead_letter_exchange = "{names}.dlx"
dead_letter_queue = "{names}.dlq"
reconnect_min_ms = 50
reconnect_max_ms = 200
"#,
            db = dir.join("steward.db").display(),
        ),
    )
    .unwrap();
    steward()
        .env("STEWARD_OPS__LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .arg("run")
        .arg(iso())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Connects to the test broker for the queues and exchanges `steward run` declares
/// under `names` (deleted when the session drops); `None` skips the test.
fn topology(test: &str, names: &str) -> Option<Session> {
    let mut session = Session::connect(test)?;
    let name = |suffix: &str| format!("{names}.{suffix}");
    session.owns([name("q"), name("dlq")], [name("x"), name("dlx")]);
    Some(session)
}

/// Publishes CloudEvents in structured mode to the exchange named after `names`.
fn publish(session: &Session, names: &str, bodies: &[&str]) {
    let properties =
        lapin::BasicProperties::default().with_content_type("application/cloudevents+json".into());
    session.publish(
        &format!("{names}.x"),
        bodies
            .iter()
            .map(|b| ("events.test", properties.clone(), b.as_bytes())),
    );
}

fn stop(child: Child) -> Output {
    signal(&child, "-TERM");
    let o = finish(child, Duration::from_secs(60));
    assert!(o.status.success(), "{:?}\n{}", o.status, stderr(&o));
    o
}

#[test]
fn ready_when_the_amqp_consumer_consumes() {
    let names = unique("ops-ready");
    let Some(topology) = topology("ready_when_the_amqp_consumer_consumes", &names) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = amqp_run(dir.path(), URL, &names, port, &[]);
    let (_, body) = wait_for(port, "/readyz", &mut child, "readiness", |s, _| s == 200);
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["amqp"], "ok", "{body}");
    assert_eq!(ready["not_ready"], serde_json::json!([]), "{body}");

    let lines = read_lines(&iso_events());
    publish(&topology, &names, &[&lines[0], &lines[1], "{not json"]);
    let queue = format!("{names}.q");
    let (_, metrics) = wait_for(port, "/metrics", &mut child, "3 messages", |_, m| {
        sample(m, r#"steward_events_received_total{source="amqp"}"#) == Some(3.0)
            && sample(m, r#"steward_events_dead_lettered_total{source="amqp"}"#) == Some(1.0)
            && sample(m, "steward_events_applied_total") == Some(2.0)
            && sample(
                m,
                &format!(r#"steward_consumer_lag_messages{{queue="{queue}"}}"#),
            )
            .is_some()
    });
    assert_eq!(
        sample(&metrics, r#"steward_events_received_total{source="stdin"}"#),
        Some(0.0)
    );
    let o = stop(child);
    let err = stderr(&o);
    assert!(err.contains("amqp: consuming from queue"), "{err}");
    assert_eq!(summary_count(&err, "applied"), Some(2), "{err}");
    drop(topology);
}

/// A batch takes what has arrived and waits for more until its first message is
/// `[engine] linger_ms` old: messages published 300 ms apart within a linger of 3 s
/// are committed together, once; with no linger, each is committed on its own.
#[test]
fn amqp_batches_wait_up_to_the_linger_for_more_messages() {
    let lines = read_lines(&iso_events());
    for (linger, commits) in [("3000", 1.0), ("0", 3.0)] {
        let names = unique("ops-linger");
        let Some(topology) = topology("amqp_batches_wait_up_to_the_linger…", &names) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let env = [("STEWARD_ENGINE__LINGER_MS", linger)];
        let mut child = amqp_run(dir.path(), URL, &names, port, &env);
        wait_for(port, "/readyz", &mut child, "readiness", |s, _| s == 200);
        let (_, before) = get(port, "/metrics").unwrap();
        let committed = |m: &str| sample(m, "steward_commit_duration_seconds_count").unwrap_or(0.0);
        let start = committed(&before);
        for line in &lines[..3] {
            publish(&topology, &names, &[line]);
            std::thread::sleep(Duration::from_millis(300));
        }
        let (_, metrics) = wait_for(port, "/metrics", &mut child, "3 events", |_, m| {
            sample(m, "steward_events_applied_total") == Some(3.0)
                && committed(m) - start >= commits
        });
        assert_eq!(
            committed(&metrics) - start,
            commits,
            "linger_ms = {linger}: commits of 3 events published 300 ms apart"
        );
        // Each batch's acknowledgement delay, from its oldest delivery: with the
        // linger, the one batch's first event waited the whole 3 s; without, none
        // waited for the others.
        let delays = |m: &str| {
            (
                sample(m, "steward_amqp_ack_delay_seconds_count").unwrap_or(0.0),
                sample(m, "steward_amqp_ack_delay_seconds_sum").unwrap_or(0.0),
            )
        };
        let ((n0, sum0), (n, sum)) = (delays(&before), delays(&metrics));
        assert_eq!(
            n - n0,
            commits,
            "linger_ms = {linger}: batches acknowledged"
        );
        let waited = sum - sum0;
        if linger == "3000" {
            assert!(
                waited >= 2.9,
                "linger_ms = 3000: the batch waited {waited} s"
            );
        } else {
            assert!(
                waited < 0.6,
                "linger_ms = 0: the batches waited {waited} s in all"
            );
        }
        stop(child);
        drop(topology);
    }
}

/// A batch that fills up is handed over at once, whatever the linger.
#[test]
fn a_full_amqp_batch_does_not_wait_for_the_linger() {
    let lines = read_lines(&iso_events());
    let names = unique("ops-full");
    let Some(topology) = topology("a_full_amqp_batch_does_not_wait_for_the_linger", &names) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A linger far longer than the wait below: only a batch handed over because it is
    // full can be committed in time.
    let env = [
        ("STEWARD_ENGINE__LINGER_MS", "600000"),
        ("STEWARD_ENGINE__BATCH", "4"),
    ];
    let mut child = amqp_run(dir.path(), URL, &names, port, &env);
    wait_for(port, "/readyz", &mut child, "readiness", |s, _| s == 200);
    let (_, before) = get(port, "/metrics").unwrap();
    let burst: Vec<&str> = lines[..8].iter().map(String::as_str).collect();
    publish(&topology, &names, &burst);
    let received = |m: &str| sample(m, r#"steward_events_received_total{source="amqp"}"#);
    let committed = |m: &str| sample(m, "steward_commit_duration_seconds_count").unwrap_or(0.0);
    let start = committed(&before);
    // A batch of 4 taken and committed within `wait_for`'s minute. (The messages after
    // it may come as one batch or, when they trickle in, as a part that is handed over
    // at once, since a full batch came before it, and a rest that lingers.)
    wait_for(port, "/metrics", &mut child, "a full batch", |_, m| {
        received(m).unwrap_or(0.0) >= 4.0 && committed(m) - start >= 1.0
    });
    // SIGTERM while a batch may still be lingering: what was not handed over goes back
    // to the queue, and the process stops cleanly.
    stop(child);
    drop(topology);
}

#[test]
fn not_ready_while_the_broker_is_unreachable() {
    // A port nothing listens on: the consumer keeps reconnecting.
    let closed = free_port();
    let url = format!("amqp://guest:secret@127.0.0.1:{closed}/%2f");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = amqp_run(dir.path(), &url, &unique("ops-unready"), port, &[]);
    let (_, body) = wait_for(
        port,
        "/readyz",
        &mut child,
        "a failed connection attempt",
        |s, b| s == 503 && b.contains("127.0.0.1"),
    );
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "not ready");
    assert_eq!(report["not_ready"], serde_json::json!(["amqp"]), "{body}");
    let reason = report["checks"]["amqp"].as_str().unwrap();
    assert!(
        reason.contains(&format!("guest:***@127.0.0.1:{closed}")),
        "{reason}"
    );
    assert!(!body.contains("secret"), "{body}");
    assert_eq!(report["checks"]["store"], "ok", "{body}");
    // Alive all the same.
    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    let o = stop(child);
    assert!(stderr(&o).contains("reconnecting in"), "{}", stderr(&o));
}

/// SIGTERM while the broker takes the connection but never answers (the attempt
/// would wait 10 s for its timeout): the run stops at once, cleanly.
#[test]
fn a_stop_does_not_wait_for_a_broker_that_does_not_answer() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        // Accepted and held open, never a byte back.
        let mut held = Vec::new();
        for stream in silent.incoming().take(4) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = amqp_run(dir.path(), &url, &unique("ops-silent"), port, &[]);
    wait_for(
        port,
        "/readyz",
        &mut child,
        "the connection attempt",
        |s, b| s == 503 && b.contains("connecting"),
    );
    // The attempt is under way (the broker accepted it) when the signal comes.
    std::thread::sleep(Duration::from_millis(300));
    let began = Instant::now();
    let o = stop(child);
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?}, as long as the connection timeout\n{}",
        stderr(&o)
    );
    drop(held);
}

#[test]
fn ops_and_webhooks_share_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = steward()
        .arg("run")
        .arg(iso())
        .arg("--db")
        .arg(dir.path().join("steward.db"))
        .args(["--listen", &addr, "--ops-listen", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(port, "/readyz", &mut child, "readiness", |s, _| s == 200);
    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    // A webhook through the same server: refused (not a Jira payload), counted.
    let (status, body) = request(port, "POST", "/webhooks/jira", &[], b"{}").unwrap();
    assert_eq!(status, 400, "{body}");
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(
        sample(
            &metrics,
            r#"steward_events_received_total{source="webhook"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"steward_events_dead_lettered_total{source="webhook"}"#
        ),
        Some(1.0)
    );
    signal(&child, "-INT");
    let o = finish(child, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    // One server: only the webhook listener announced itself.
    assert!(err.contains("for webhooks"), "{err}");
    assert!(!err.contains("ops: serving"), "{err}");
}

/// A loopback vendor answering every request `200 {}`; returns its base URL.
fn vendor_ok() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn action_metrics_by_connector_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let component = root().join("connectors/dist/webhook.wasm");
    assert!(component.is_file(), "{} is missing", component.display());
    std::fs::write(
        dir.path().join("rules.stw"),
        r#"
use connector hook_ok
use connector hook_down

rule notify {
  on "change.created" do {
    hook_ok.send(payload: {"change": event.subject})
    hook_down.send(payload: {"change": event.subject})
  }
}
"#,
    )
    .unwrap();
    // hook_down calls a port nothing listens on: refused, retried once, given up.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut config = format!(
        "[store]\npath = {:?}\n\n[dispatch]\nmax_attempts = 2\nbase_ms = 50\nmax_ms = 100\npoll_ms = 20\ncache_dir = {:?}\n",
        dir.path().join("steward.db").display().to_string(),
        dir.path().join("cache").display().to_string()
    );
    for (name, url) in [("hook_ok", vendor_ok()), ("hook_down", closed)] {
        config.push_str(&format!(
            "\n[connectors.{name}]\ncomponent = {:?}\nallow_hosts = [\"127.0.0.1\"]\ntimeout_ms = 2000\nsettings = {{ url = \"{url}/hook\" }}\n",
            component.display().to_string()
        ));
    }
    let config_path = dir.path().join("steward.toml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let mut child = steward()
        .arg("run")
        .arg(dir.path().join("rules.stw"))
        .arg("--config")
        .arg(&config_path)
        .args([
            "--events",
            "-",
            "--ops-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"specversion":"1.0","id":"e1","source":"/test","type":"change.created","time":"2026-03-02T09:00:00Z","subject":"CHG-1"}}"#
    )
    .unwrap();
    stdin.flush().unwrap();
    let series = |connector: &str, outcome: &str| {
        format!(
            r#"steward_action_duration_seconds_count{{connector="{connector}",op="send",outcome="{outcome}"}}"#
        )
    };
    let (_, metrics) = wait_for(
        port,
        "/metrics",
        &mut child,
        "both actions to end",
        |_, m| {
            sample(m, &series("hook_ok", "ok")) == Some(1.0)
                && sample(m, &series("hook_down", "failed")) == Some(1.0)
        },
    );
    assert_eq!(
        sample(&metrics, &series("hook_down", "retry")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"steward_connector_errors_total{connector="hook_down",retryable="true"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"steward_connector_errors_total{connector="hook_ok",retryable="true"}"#
        ),
        None
    );
    assert!(metrics.contains("# TYPE steward_action_duration_seconds histogram"));
    assert_eq!(
        sample(&metrics, r#"steward_decisions_total{kind="action_failed"}"#),
        Some(1.0)
    );
    drop(stdin);
    let o = finish(child, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(summary_count(&err, "executed"), Some(1), "{err}");
}
