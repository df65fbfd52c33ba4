//! `steward run` with `[amqp]`: events consumed from the real RabbitMQ on this machine
//! (127.0.0.1:5672, guest/guest), state in a real SQLite file. Each test declares its
//! own uniquely named exchange and queues and deletes them. The tests skip with a
//! message when the broker is unreachable, and fail then when
//! `STEWARD_REQUIRE_SERVICES=1`. One test restarts the broker (`rabbitmqctl
//! stop_app`/`start_app`); it runs while no other test of this file does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::{Duration, Instant};

use common::amqp::{Session, URL, close_connection, connection_of, restart_broker, unique};
use common::*;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::Value;

/// A connection to the test broker, and the names this test uses (deleted on drop).
struct Broker {
    session: Session,
    exchange: String,
    queue: String,
    dlx: String,
    dlq: String,
    _turn: Turn,
}

/// The tests of this file share the broker; the one that restarts it runs alone.
static BROKER: RwLock<()> = RwLock::new(());

enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// Connects, or skips (returns `None`) when the broker is unreachable.
fn broker(test: &str) -> Option<Broker> {
    let turn = Turn::Shared(BROKER.read().unwrap_or_else(|e| e.into_inner()));
    connect(test, turn)
}

/// [`broker`], for a test that disturbs the broker: no other test of this file runs
/// meanwhile.
fn broker_alone(test: &str) -> Option<Broker> {
    let turn = Turn::Alone(BROKER.write().unwrap_or_else(|e| e.into_inner()));
    connect(test, turn)
}

fn connect(test: &str, turn: Turn) -> Option<Broker> {
    let mut session = Session::connect(test)?;
    let base = unique(test);
    let name = |suffix: &str| format!("{base}.{suffix}");
    session.owns([name("q"), name("dlq")], [name("x"), name("dlx")]);
    Some(Broker {
        exchange: name("x"),
        queue: name("q"),
        dlx: name("dlx"),
        dlq: name("dlq"),
        session,
        _turn: turn,
    })
}

/// A message to publish: routing key suffix, properties, body.
struct Out {
    properties: BasicProperties,
    body: Vec<u8>,
}

fn structured(line: &str) -> Out {
    Out {
        properties: BasicProperties::default()
            .with_content_type("application/cloudevents+json; charset=utf-8".into()),
        body: line.as_bytes().to_vec(),
    }
}

/// Binary mode: every attribute but `data`/`datacontenttype` as a prefixed property,
/// `datacontenttype` as the content type, `data` as the body.
fn binary(line: &str, prefix: &str) -> Out {
    let event: Value = serde_json::from_str(line).unwrap();
    let mut headers = FieldTable::default();
    let mut properties = BasicProperties::default();
    let mut body = Vec::new();
    for (name, value) in event.as_object().unwrap() {
        match name.as_str() {
            "data" => body = serde_json::to_vec(value).unwrap(),
            "datacontenttype" => {
                properties = properties.with_content_type(value.as_str().unwrap().into())
            }
            _ => {
                let v = match value {
                    Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
                    Value::Bool(b) => AMQPValue::Boolean(*b),
                    Value::Number(n) => AMQPValue::LongLongInt(n.as_i64().unwrap()),
                    other => panic!("attribute {name} = {other}"),
                };
                headers.insert(format!("{prefix}{name}").into(), v);
            }
        }
    }
    Out {
        properties: properties.with_headers(headers),
        body,
    }
}

impl Broker {
    fn publish(&self, messages: &[Out]) {
        self.session.publish(
            &self.exchange,
            messages.iter().map(|m| {
                let properties = m.properties.clone().with_delivery_mode(2);
                ("events.test", properties, m.body.as_slice())
            }),
        );
    }

    /// Ready messages in a queue (declared by `steward run`).
    fn count(&self, queue: &str) -> u32 {
        self.session
            .count(queue)
            .unwrap_or_else(|| panic!("queue {queue} is not declared"))
    }

    /// Takes every message of the dead-letter queue: (reason header, message id, body).
    fn dead_letters(&self) -> Vec<(String, Option<String>, Vec<u8>)> {
        let mut out = Vec::new();
        for m in self.session.take_all(&self.dlq) {
            let headers = m.properties.headers().clone().unwrap_or_default();
            let reason = match headers.inner().get("x-steward-reason") {
                Some(AMQPValue::LongString(s)) => {
                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                }
                other => panic!("no reason header: {other:?}"),
            };
            let id = m
                .properties
                .message_id()
                .as_ref()
                .map(|s: &ShortString| s.as_str().to_string());
            out.push((reason, id, m.data.clone()));
        }
        out
    }

    fn config(&self, dir: &Path, prefetch: u16) -> PathBuf {
        self.config_with(dir, prefetch, 64, "classic")
    }

    fn config_with(&self, dir: &Path, prefetch: u16, batch: usize, queue_type: &str) -> PathBuf {
        let path = dir.join("steward.toml");
        std::fs::write(
            &path,
            format!(
                r#"[store]
path = "{db}"

[engine]
batch = {batch}

[amqp]
url = "{URL}"
exchange = "{x}"
exchange_type = "topic"
queue = "{q}"
routing_keys = ["events.#"]
prefetch = {prefetch}
queue_type = "{queue_type}"
dead_letter_exchange = "{dlx}"
dead_letter_queue = "{dlq}"
reconnect_min_ms = 50
"#,
                db = dir.join("steward.db").display(),
                x = self.exchange,
                q = self.queue,
                dlx = self.dlx,
                dlq = self.dlq,
            ),
        )
        .unwrap();
        path
    }
}

/// A running `steward run` whose stdout (decisions) and stderr are collected.
struct Engine {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    decisions: Vec<Value>,
    log: String,
}

impl Engine {
    fn spawn(rules: &Path, config: &Path) -> Engine {
        let mut child = steward()
            .arg("run")
            .arg(rules)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (otx, stdout) = mpsc::channel();
        let (etx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = otx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let mut engine = Engine {
            child,
            stdout,
            stderr,
            decisions: Vec::new(),
            log: String::new(),
        };
        engine.wait_until("the consumer to start", |e| {
            e.log.contains("amqp: consuming from queue")
        });
        engine
    }

    fn pump(&mut self) {
        while let Ok(line) = self.stdout.try_recv() {
            self.decisions.push(serde_json::from_str(&line).unwrap());
        }
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push_str(&line);
            self.log.push('\n');
        }
    }

    fn wait_until(&mut self, what: &str, mut done: impl FnMut(&Engine) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.pump();
            if done(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.pump();
                panic!(
                    "steward exited ({status}) waiting for {what}:\n{}",
                    self.log
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("timed out waiting for {what}:\n{}", self.log);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the decisions and stderr.
    fn terminate(mut self) -> (Vec<Value>, String) {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("steward did not stop on SIGTERM:\n{}", self.log);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        self.pump();
        assert!(status.success(), "{status}:\n{}", self.log);
        (self.decisions, self.log)
    }

    /// SIGKILL: nothing is committed or acknowledged beyond what already was.
    fn kill(mut self) -> Vec<Value> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.pump();
        self.decisions
    }
}

/// Decisions without their wall-clock `at`.
fn timeless(decisions: &[Value]) -> Vec<Value> {
    decisions
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.as_object_mut().unwrap().remove("at");
            // An SLA clock's figures are measured on the wall clock too.
            if d["kind"] == "sla" {
                d.as_object_mut().unwrap().remove("args");
            }
            d
        })
        .collect()
}

/// `steward run` on a file, for what the same events do without the broker.
fn file_run(events: &Path, dir: &Path) -> (Vec<Value>, Snapshot) {
    let db = dir.join("file.db");
    let o = steward()
        .arg("run")
        .arg(iso())
        .arg("--events")
        .arg(events)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let out = ok(&o);
    (timeless(&json_lines(&out)), snapshot(&db, &iso()))
}

#[test]
fn amqp_events_in_both_modes_take_effect_like_a_file_run_and_poison_is_dead_lettered() {
    let Some(broker) = broker("flow") else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = broker.config(dir.path(), 16);
    let mut engine = Engine::spawn(&iso(), &config);

    // The example events: every third in binary mode, alternating the separators.
    let lines = read_lines(&iso_events());
    let mut messages: Vec<Out> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        messages.push(match i % 6 {
            2 => binary(line, "cloudEvents_"),
            5 => binary(line, "cloudEvents:"),
            _ => structured(line),
        });
    }
    // Poison, in between: not JSON, no id, 2 MiB, 10 MiB, a type no rule listens to,
    // and a valid event that makes a rule fail (its effects are committed, as in the
    // file run below, and a copy is dead-lettered).
    let poison = |body: Vec<u8>, id: &str| Out {
        properties: BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_message_id(id.into()),
        body,
    };
    let big = format!(
        r#"{{"specversion":"1.0","id":"big","source":"urn:test","type":"jira:issue_updated","data":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let huge = format!(
        r#"{{"specversion":"1.0","id":"huge","source":"urn:test","type":"jira:issue_updated","data":"{}"}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    let failing = r#"{"specversion":"1.0","id":"no-priority","source":"urn:test","type":"incident.created","subject":"INC-900","time":"2026-03-02T09:00:00Z","data":{}}"#;
    let at = messages.len() / 2;
    messages.insert(at, poison(b"{not json".to_vec(), "not-json"));
    messages.insert(
        at + 1,
        poison(
            br#"{"specversion":"1.0","source":"urn:test","type":"jira:issue_updated"}"#.to_vec(),
            "no-id",
        ),
    );
    messages.insert(at + 2, poison(big.into_bytes(), "too-large"));
    messages.insert(
        at + 3,
        poison(
            br#"{"specversion":"1.0","id":"u-1","source":"urn:test","type":"com.example.unknown","time":"2026-03-02T09:00:00Z"}"#.to_vec(),
            "unknown-type",
        ),
    );
    messages.insert(at + 4, poison(huge.into_bytes(), "huge"));
    messages.insert(at + 5, poison(failing.as_bytes().to_vec(), "rule-fails"));
    broker.publish(&messages);

    // The file run applies the failing event at the same place.
    let mut file_lines = lines.clone();
    file_lines.insert(at, failing.to_string());
    let events = dir.path().join("events.jsonl");
    write_lines(&events, &file_lines);
    let (expected, file_snap) = file_run(&events, dir.path());
    assert!(
        expected.iter().any(|d| d["kind"] == "error"),
        "the failing event makes no error: {expected:#?}"
    );
    let want = expected.len();
    engine.wait_until("every decision", |e| e.decisions.len() >= want);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (broker.count(&broker.queue) > 0 || broker.count(&broker.dlq) < 6)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (decisions, log) = engine.terminate();

    // The same decisions as the file run, in the same order.
    assert_eq!(timeless(&decisions), expected, "{log}");
    // Everything was acknowledged: nothing went back to the queue on close.
    assert_eq!(broker.count(&broker.queue), 0, "{log}");
    // The poison is in the dead-letter queue with its reason, and in the store.
    let mut dead: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for (reason, id, body) in broker.dead_letters() {
        dead.insert(id.unwrap(), (reason, body.len()));
    }
    assert_eq!(
        dead.keys().collect::<Vec<_>>(),
        [
            "huge",
            "no-id",
            "not-json",
            "rule-fails",
            "too-large",
            "unknown-type"
        ],
        "{log}"
    );
    for large in ["too-large", "huge"] {
        assert!(dead[large].0.contains("larger than the limit"), "{dead:?}");
    }
    assert!(dead["too-large"].1 > 2 * 1024 * 1024, "the copy is whole");
    assert!(dead["huge"].1 > 10 * 1024 * 1024, "the copy is whole");
    // The failure names where it happened and what failed.
    let failed = &dead["rule-fails"].0;
    assert!(
        failed.contains("workflow `major_incident` (key `INC-900`) failed")
            && failed.contains("no such key `priority`"),
        "{failed}"
    );
    assert!(dead["no-id"].0.contains("id"), "{dead:?}");
    assert!(
        dead["unknown-type"].0.contains("com.example.unknown"),
        "{dead:?}"
    );
    assert!(!dead["not-json"].0.is_empty());
    let snap = snapshot(&dir.path().join("steward.db"), &iso());
    assert_eq!(snap.dead_letters.len(), 6, "{:?}", snap.dead_letters);
    for letter in &snap.dead_letters {
        assert!(letter.origin.starts_with("amqp:"), "{letter:?}");
        assert!(
            dead.values().any(|(r, _)| *r == letter.reason),
            "{letter:?}"
        );
    }
    // State, evidence and seen events as the file run left them.
    assert_eq!(snap.evidence.len(), file_snap.evidence.len());
    // (The unrouted event was seen too: a redelivery of it is a duplicate.)
    let mut seen = file_snap.seen.clone();
    seen.push(("urn:test".to_string(), "u-1".to_string()));
    seen.sort();
    assert_eq!(snap.seen, seen);
    assert_eq!(snap.open, file_snap.open);
    assert!(log.contains("1 duplicates"), "{log}");
    assert!(log.contains("6 dead-lettered"), "{log}");
}

fn oracle_dir() -> PathBuf {
    root().join("../shared/oracles/cloudevents")
}

#[test]
fn cloudevents_oracles_are_read_in_structured_and_binary_mode() {
    let Some(broker) = broker("oracles") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = broker.config(dir.path(), 16);
    let engine = Engine::spawn(&iso(), &config);
    let oracles = oracle_dir();

    // sdk-java's JSON fixtures, as they are, in structured mode.
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(oracles.join("sdk-java-fixtures/index.json")).unwrap(),
    )
    .unwrap();
    let mut expect: BTreeMap<String, String> = BTreeMap::new();
    let mut messages = Vec::new();
    for f in index["fixtures"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let body = std::fs::read(oracles.join(file)).unwrap();
        expect.insert(file.to_string(), f["expect"].as_str().unwrap().to_string());
        messages.push(Out {
            properties: BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_message_id(file.into()),
            body,
        });
    }
    // The spec's examples in binary mode, from their HTTP binary rendering: `ce-X`
    // headers become `cloudEvents_X` properties, the content type stays.
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(oracles.join("spec-examples/index.json")).unwrap(),
    )
    .unwrap();
    for ex in index["examples"].as_array().unwrap() {
        let Some(rendering) = ex.get("http_binary_rendering") else {
            continue;
        };
        let file = format!("binary:{}", ex["file"].as_str().unwrap());
        let mut headers = FieldTable::default();
        let mut properties = BasicProperties::default();
        for (k, v) in rendering["headers"].as_object().unwrap() {
            let v = v.as_str().unwrap();
            if let Some(name) = k.strip_prefix("ce-") {
                headers.insert(
                    format!("cloudEvents_{name}").into(),
                    AMQPValue::LongString(LongString::from(v)),
                );
            } else if k == "content-type" {
                properties = properties.with_content_type(v.into());
            }
        }
        let body = match &rendering["body"] {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Null => Vec::new(),
            other => serde_json::to_vec(other).unwrap(),
        };
        expect.insert(file.clone(), "accept".to_string());
        messages.push(Out {
            properties: properties
                .with_headers(headers)
                .with_message_id(file.as_str().into()),
            body,
        });
    }
    broker.publish(&messages);
    // Settled when the queue is empty and the dead-letter queue stops growing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u32::MAX, Instant::now());
    while Instant::now() < deadline {
        let dead = broker.count(&broker.dlq);
        if dead != last.0 {
            last = (dead, Instant::now());
        } else if broker.count(&broker.queue) == 0 && last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, log) = engine.terminate();

    // No rule listens to these types: an accepted event is dead-lettered as unrouted
    // (or acknowledged as a duplicate: the sdk-java fixtures share `source` and `id`),
    // a rejected one is dead-lettered for what is wrong with it.
    let dead = broker.dead_letters();
    let duplicates = summary_count(&log, "duplicates").unwrap() as usize;
    assert_eq!(dead.len() + duplicates, messages.len(), "{log}");
    let mut refused = Vec::new();
    for (reason, id, _) in dead {
        let id = id.unwrap();
        let decoded = reason.starts_with("no rule listens");
        match expect[&id].as_str() {
            "accept" => assert!(decoded, "{id} was refused: {reason}"),
            "reject" => {
                assert!(!decoded, "{id} was accepted");
                refused.push(id);
            }
            _ => {}
        }
    }
    let rejects = expect.values().filter(|e| *e == "reject").count();
    assert_eq!(refused.len(), rejects, "{refused:?}\n{log}");
    // Every binary-mode example decoded (distinct ids, so none is a duplicate).
    let binary_decoded = log
        .lines()
        .filter(|l| l.contains("no rule listens to events of type `com.example.someevent`"))
        .count();
    assert!(binary_decoded >= 4, "{log}");
    assert_eq!(broker.count(&broker.queue), 0);
}

/// `copies` renamed copies of the example events: new ids and new keys, same story.
fn many_events(copies: usize) -> Vec<String> {
    let lines = read_lines(&iso_events());
    let mut out = Vec::new();
    for i in 0..copies {
        for line in &lines {
            let mut l = line.replace("\"evt-", &format!("\"evt-{i:04}-"));
            for key in ["BUG-", "CHG-", "INC-", "SMS-"] {
                l = l.replace(key, &format!("{key}{i:04}"));
            }
            out.push(l);
        }
    }
    out
}

#[test]
fn a_sigkill_mid_stream_and_a_restart_apply_every_event_exactly_once() {
    let Some(broker) = broker("kill") else { return };
    let dir = tempfile::tempdir().unwrap();
    let lines = many_events(60);
    let events = dir.path().join("events.jsonl");
    write_lines(&events, &lines);
    let (expected, file_snap) = file_run(&events, dir.path());
    assert!(expected.len() > 1000);

    let config = broker.config(dir.path(), 32);
    let mut engine = Engine::spawn(&iso(), &config);
    let messages: Vec<Out> = lines.iter().map(|l| structured(l)).collect();
    broker.publish(&messages);
    let part = expected.len() / 3;
    engine.wait_until("a third of the decisions", |e| e.decisions.len() >= part);
    let before = engine.kill();
    assert!(before.len() < expected.len(), "the kill came too late");

    let mut engine = Engine::spawn(&iso(), &config);
    let db = dir.path().join("steward.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        engine.pump();
        let snap = snapshot(&db, &iso());
        if (snap.seen.len() == file_snap.seen.len() && broker.count(&broker.queue) == 0)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, log) = engine.terminate();
    let snap = snapshot(&db, &iso());
    assert_eq!(snap.seen, file_snap.seen, "{log}");
    assert_eq!(
        snap.evidence.len(),
        file_snap.evidence.len(),
        "evidence differs from the uninterrupted run\n{log}"
    );
    assert_eq!(
        steward_engine::decision::verify_chain(&snap.evidence),
        Ok(snap.evidence.len() as u64)
    );
    // The same decisions, each once (the order across the restart may differ).
    let records = |s: &Snapshot| {
        let mut r: Vec<Value> = s
            .evidence
            .iter()
            .map(|e| {
                let mut v: Value = serde_json::from_str(&e.record).unwrap();
                v.as_object_mut().unwrap().remove("at");
                if v["kind"] == "sla" {
                    v.as_object_mut().unwrap().remove("args");
                }
                v
            })
            .collect();
        r.sort_by_key(|v| v.to_string());
        r
    };
    assert_eq!(records(&snap), records(&file_snap));
    assert_eq!(snap.open, file_snap.open);
    assert_eq!(broker.count(&broker.queue), 0);
    assert!(snap.dead_letters.is_empty(), "{:?}", snap.dead_letters);
}

#[test]
fn a_connection_closed_by_the_broker_is_reopened_and_nothing_is_lost() {
    let Some(mut broker) = broker("reconnect") else {
        return;
    };
    // A quorum queue, and small batches so the stream is still flowing at the cut.
    cut_mid_stream(&mut broker, "quorum", 120, |broker| {
        let Some(connection) = connection_of(&broker.queue) else {
            return false;
        };
        close_connection(&connection);
        true
    });
}

#[test]
fn a_broker_restart_mid_stream_is_waited_out_and_nothing_is_lost() {
    let Some(mut broker) = broker_alone("restart") else {
        return;
    };
    // Fewer events: this test runs alone.
    cut_mid_stream(&mut broker, "classic", 40, |broker| {
        if !restart_broker(Duration::from_secs(2)) {
            return false;
        }
        broker.session.reopen();
        true
    });
}

/// Runs `copies` of the ISO example's events through `[amqp]` (one event a batch) and
/// cuts the engine's connection with `cut` once some decisions are out (`cut` returns
/// `false` when it cannot be done here: the test is skipped). The engine must
/// reconnect and end where a file run of the same events ends, each decision printed
/// once. The second half of the events is published after the reconnection, so the cut
/// lands mid-stream however fast the engine is; messages of the first half may be
/// in flight at the cut.
fn cut_mid_stream(
    broker: &mut Broker,
    queue_type: &str,
    copies: usize,
    cut: impl FnOnce(&mut Broker) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let lines = many_events(copies);
    let events = dir.path().join("events.jsonl");
    write_lines(&events, &lines);
    let (expected, file_snap) = file_run(&events, dir.path());

    let config = broker.config_with(dir.path(), 4, 1, queue_type);
    let mut engine = Engine::spawn(&iso(), &config);
    let messages: Vec<Out> = lines.iter().map(|l| structured(l)).collect();
    let (before, after) = messages.split_at(messages.len() / 2);
    broker.publish(before);
    engine.wait_until("some decisions", |e| e.decisions.len() >= 50);
    if !cut(broker) {
        eprintln!("SKIPPED (cut mid-stream): rabbitmqctl is not usable here");
        return;
    }
    engine.wait_until("the reconnection", |e| {
        e.log.matches("amqp: consuming from queue").count() >= 2
    });
    broker.publish(after);
    let db = dir.path().join("steward.db");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        engine.pump();
        let snap = snapshot(&db, &iso());
        if (snap.seen.len() == file_snap.seen.len() && broker.count(&broker.queue) == 0)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (decisions, log) = engine.terminate();
    assert!(log.contains("reconnecting in"), "{log}");
    let snap = snapshot(&db, &iso());
    assert_eq!(snap.seen, file_snap.seen, "{log}");
    assert_eq!(snap.evidence.len(), file_snap.evidence.len(), "{log}");
    // Each decision printed once: nothing was applied twice across the reconnection.
    assert_eq!(decisions.len(), expected.len(), "{log}");
    assert_eq!(broker.count(&broker.queue), 0);
}
