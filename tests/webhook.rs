//! Inbound webhooks: the real Jira payloads map to events (or are refused with the
//! reason stated here), signatures are checked, and `steward run --listen` applies and
//! commits a delivery before answering 2xx.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::http::{free_port, request};
use common::*;
use serde_json::Value;
use steward_engine::webhook::{self, WebhookConfig, WebhookError};

/// The payload directory: `STEWARD_JIRA_WEBHOOKS`, else the shared Jira oracle.
fn payload_dir() -> PathBuf {
    match std::env::var_os("STEWARD_JIRA_WEBHOOKS") {
        Some(dir) => PathBuf::from(dir),
        None => root().join("../shared/oracles/jira/webhooks"),
    }
}

/// Payloads expected to be refused, by file name, with the reason the mapper must give.
/// Every payload of the shared oracle set carries `webhookEvent` (the "old server"
/// ones lack only `issue_event_type_name`), so none is refused.
const REFUSED: &[(&str, &str)] = &[];

fn received() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

#[test]
fn every_real_jira_payload_maps_or_is_refused_with_its_reason() {
    let dir = payload_dir();
    assert!(
        dir.is_dir(),
        "no Jira webhook payloads at {} (set STEWARD_JIRA_WEBHOOKS)",
        dir.display()
    );
    // index.json, when present, says what each payload is.
    let index: BTreeMap<String, Value> = std::fs::read_to_string(dir.join("index.json"))
        .ok()
        .map(|text| {
            let v: Value = serde_json::from_str(&text).unwrap();
            v["fixtures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| (f["file"].as_str().unwrap().to_string(), f.clone()))
                .collect()
        })
        .unwrap_or_default();
    let refused: BTreeMap<&str, &str> = REFUSED.iter().copied().collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "index.json")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no payloads in {}", dir.display());
    let (mut mapped, mut rejected) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let body = std::fs::read(path).unwrap();
        let payload: Value = serde_json::from_slice(&body).unwrap();
        let result = webhook::jira_event(&WebhookConfig::default(), &[], &body, received());
        if let Some(reason) = refused.get(name) {
            let err = result.expect_err(name);
            assert_eq!(err.to_string(), *reason, "{name}");
            rejected += 1;
            continue;
        }
        let event = result.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        mapped += 1;
        // The type is `jira:` + webhookEvent, never `jira:jira:`.
        let raw = payload["webhookEvent"]
            .as_str()
            .or(payload["issue_event_type_name"].as_str())
            .unwrap();
        let expected_type = format!("jira:{}", raw.trim_start_matches("jira:"));
        assert_eq!(event.event_type, expected_type, "{name}");
        assert!(!event.event_type.starts_with("jira:jira:"), "{name}");
        assert_eq!(
            event.subject.as_deref(),
            payload["issue"]["key"].as_str(),
            "{name}"
        );
        assert_eq!(
            event.time.unwrap().timestamp_millis(),
            payload["timestamp"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(
            event.data.as_ref(),
            Some(&payload),
            "{name}: data is the payload"
        );
        // Re-encoding gives a valid CloudEvent the engine reads back unchanged.
        let round = steward_engine::event::Event::from_json(event.to_json()).unwrap();
        assert_eq!(round, event, "{name}");
        if let Some(meta) = index.get(name) {
            let want = meta["webhookEvent"].as_str().unwrap();
            assert_eq!(
                event.event_type,
                format!("jira:{}", want.trim_start_matches("jira:")),
                "{name}"
            );
            assert_eq!(
                event.subject.as_deref(),
                meta["issue_key"].as_str(),
                "{name}"
            );
            // The changelog stays available to rules.
            let fields: Vec<&str> = event.data.as_ref().unwrap()["changelog"]["items"]
                .as_array()
                .map(|items| items.iter().filter_map(|i| i["field"].as_str()).collect())
                .unwrap_or_default();
            let listed: Vec<&str> = meta["changelog_fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            assert_eq!(fields, listed, "{name}: changelog fields");
        }
    }
    for name in refused.keys() {
        assert!(
            files.iter().any(|p| p.file_name().unwrap() == *name),
            "{name} is listed as refused but not in {}",
            dir.display()
        );
    }
    eprintln!("{}: {mapped} mapped, {rejected} refused", dir.display());
    assert_eq!(mapped + rejected, files.len());
}

#[test]
fn a_signed_real_delivery_verifies_and_a_wrong_or_missing_signature_is_refused() {
    let body = std::fs::read(payload_dir().join("webhook-issue-created.json")).unwrap();
    let config = WebhookConfig {
        source: Some("https://acme.atlassian.net".into()),
        secret: Some(b"it is a secret".to_vec()),
    };
    let hdr = |sig: &str| {
        vec![
            ("X-Hub-Signature".to_string(), sig.to_string()),
            (
                "X-Atlassian-Webhook-Identifier".to_string(),
                "5f1b2c3d".to_string(),
            ),
        ]
    };
    let good = webhook::sign(b"it is a secret", &body);
    let event = webhook::jira_event(&config, &hdr(&good), &body, received()).unwrap();
    assert_eq!(event.id, "5f1b2c3d");
    assert_eq!(event.source, "https://acme.atlassian.net");
    assert_eq!(event.event_type, "jira:issue_created");
    assert_eq!(event.subject.as_deref(), Some("TES-41"));

    let wrong = webhook::sign(b"another secret", &body);
    let err = webhook::jira_event(&config, &hdr(&wrong), &body, received()).unwrap_err();
    assert!(matches!(err, WebhookError::BadSignature(_)), "{err}");
    let err = webhook::jira_event(&config, &[], &body, received()).unwrap_err();
    assert!(matches!(err, WebhookError::Unsigned(_)), "{err}");
}

// ---- the HTTP endpoint of `steward run` ----

const SECRET_VAR: &str = "JIRA_WEBHOOK_SECRET_FOR_TEST";
const SECRET: &str = "s3cret-for-the-test";

const RULES: &str = r#"use connector jira

workflow intake key event.data.issue.key {
  start on "jira:issue_created"

  state open {
    enter { jira.comment(key, "Seen by Steward") }
    on "jira:issue_deleted" -> closed
  }

  final state closed
}
"#;

/// One HTTP/1.1 request; returns (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    request(port, method, path, headers, body)
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path} on port {port}"))
}

struct Server {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(rules: &std::path::Path, db: &std::path::Path) -> Server {
        let port = free_port();
        let mut cmd: Command = steward();
        cmd.arg("run")
            .arg(rules)
            .args(["--events", "-", "--db"])
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("STEWARD_WEBHOOK__JIRA_SECRET_ENV", SECRET_VAR)
            .env(SECRET_VAR, SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (status, _) = http(port, "GET", "/healthz", &[], b"");
                if status == 200 {
                    break;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("steward run exited ({status}) before listening:\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "steward run did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port, lines }
    }

    /// Decision lines printed within `wait`.
    fn decisions(&self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(serde_json::from_str(&line).unwrap());
        }
        out
    }

    /// Ctrl-C, then the stderr report.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "{status}\n{err}");
        err
    }
}

#[test]
fn run_listen_applies_a_signed_jira_delivery_once_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("intake.stw");
    std::fs::write(&rules, RULES).unwrap();
    let db = dir.path().join("steward.db");
    let server = Server::start(&rules, &db);
    let port = server.port;

    let body = std::fs::read(payload_dir().join("webhook-issue-created.json")).unwrap();
    let good = webhook::sign(SECRET.as_bytes(), &body);
    let delivery = "0b5d3c6e-real-delivery-1";
    let headers = [
        ("X-Hub-Signature", good.as_str()),
        ("X-Atlassian-Webhook-Identifier", delivery),
    ];

    // A correctly signed real payload: 2xx only once applied and committed, so its
    // decisions are already on stdout and in the store.
    let (status, text) = http(port, "POST", "/webhooks/jira", &headers, &body);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["outcome"], "applied", "{text}");
    assert_eq!(answer["id"], delivery);
    let decisions = server.decisions(Duration::from_secs(2));
    let actions: Vec<&Value> = decisions.iter().filter(|d| d["kind"] == "action").collect();
    assert_eq!(actions.len(), 1, "{decisions:?}");
    assert_eq!(actions[0]["op"], "comment");
    assert_eq!(actions[0]["key"], "TES-41");
    assert_eq!(actions[0]["event"], delivery);

    // The same delivery again (Jira retries with the same identifier): applied once.
    let (status, text) = http(port, "POST", "/webhooks/jira", &headers, &body);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["outcome"], "duplicate", "{text}");

    // Wrong signature, no signature: 401, nothing applied.
    let wrong = webhook::sign(b"not the secret", &body);
    let (status, text) = http(
        port,
        "POST",
        "/webhooks/jira",
        &[
            ("X-Hub-Signature", &wrong),
            ("X-Atlassian-Webhook-Identifier", "d-2"),
        ],
        &body,
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("bad signature"), "{text}");
    let (status, text) = http(port, "POST", "/webhooks/jira", &[], &body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("unsigned"), "{text}");

    // Signed garbage: 400 with the reason.
    let garbage = b"this is not json";
    let sig = webhook::sign(SECRET.as_bytes(), garbage);
    let (status, text) = http(
        port,
        "POST",
        "/webhooks/jira",
        &[("X-Hub-Signature", &sig)],
        garbage,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not JSON"), "{text}");
    // Signed JSON without webhookEvent: 400 naming the field.
    let empty = b"{}";
    let sig = webhook::sign(SECRET.as_bytes(), empty);
    let (status, text) = http(
        port,
        "POST",
        "/webhooks/jira",
        &[("X-Hub-Signature", &sig)],
        empty,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("missing field `webhookEvent`"), "{text}");

    // ServiceNow (no secret configured): mapped and applied (nothing listens: unrouted).
    let sn =
        br#"{"sys_id":"a1","number":"CHG0030001","table":"change_request","operation":"update"}"#;
    let (status, text) = http(port, "POST", "/webhooks/servicenow", &[], sn);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"outcome\":\"unrouted\""), "{text}");

    assert!(server.decisions(Duration::from_millis(300)).is_empty());
    let err = server.stop();
    assert!(
        err.contains("1 applied, 1 unrouted, 1 duplicates, 2 dead-lettered"),
        "{err}"
    );

    // The store holds the delivery once, and the refused payloads as dead letters.
    let snap = snapshot(&db, dir.path());
    let seen: Vec<&(String, String)> = snap.seen.iter().filter(|(_, id)| id == delivery).collect();
    assert_eq!(seen.len(), 1, "{:?}", snap.seen);
    assert_eq!(snap.outbox.len(), 1);
    assert_eq!(snap.dead_letters.len(), 2);
    assert!(snap.dead_letters.iter().all(|d| d.origin == "webhook jira"));
}

#[test]
fn run_refuses_to_start_when_the_named_secret_variable_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("intake.stw");
    std::fs::write(&rules, RULES).unwrap();
    let o = steward()
        .arg("run")
        .arg(&rules)
        .args(["--events", "-", "--db"])
        .arg(dir.path().join("s.db"))
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "STEWARD_WEBHOOK__JIRA_SECRET_ENV",
            "STEWARD_TEST_NO_SUCH_VARIABLE_X",
        )
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`STEWARD_TEST_NO_SUCH_VARIABLE_X`, which is not set"),
        "{}",
        stderr(&o)
    );
}
