//! Support for the `[cluster]` tests (`tests/cluster.rs`, `tests/pg_restart.rs`): a
//! deployment's broker side (exchange, partition queues) and PostgreSQL side
//! (partition schemas) with unique names, removed on drop; the test rules and events;
//! and the comparison of a cluster's partitions with one process's run of the same
//! events.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::Value;
use steward_engine::store::Store;
use steward_engine::store::postgres::PostgresStore;

use super::amqp::Session;
use super::{Snapshot, ok, ruleset, run, snapshot, steward, write_lines};

pub use super::amqp::{URL as AMQP, required};

pub fn pg_url() -> String {
    std::env::var("STEWARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Events of one key must be applied in order: an update out of sequence is a
/// violation. A key that is closed gets a Slack message (an outbox action).
pub const RULES: &str = include_str!("../fixtures/tickets.stw");

/// `keys` tickets with `updates` updates each, interleaved across keys in publish
/// order; every tenth ticket stays open. Returns (subject, JSON line) pairs.
pub fn events(keys: usize, updates: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let event = |key: &str, n: usize, ty: &str, data: Value| {
        serde_json::json!({
            "specversion": "1.0",
            "id": format!("{key}-{n}"),
            "source": "tickets",
            "type": ty,
            "time": "2026-11-02T09:00:00Z",
            "subject": key,
            "data": data,
        })
        .to_string()
    };
    for step in 0..updates + 2 {
        for k in 0..keys {
            let key = format!("T-{k}");
            let line = match step {
                0 => event(&key, 0, "ticket.opened", serde_json::json!({})),
                s if s <= updates => {
                    event(&key, s, "ticket.updated", serde_json::json!({ "seq": s }))
                }
                s if k % 10 != 0 => event(&key, s, "ticket.closed", serde_json::json!({})),
                _ => continue,
            };
            out.push((key, line));
        }
    }
    out
}

/// The broker side of a test: its exchange, partition queues and dead-letter names
/// (deleted when dropped).
pub struct Broker {
    session: Session,
    pub base: String,
    pub partitions: u32,
}

impl Broker {
    pub fn connect(test: &str, partitions: u32) -> Option<Broker> {
        let session = Session::connect(test)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        // Short: the partition schemas in PostgreSQL are named after it.
        let base = format!("t{}_{}", std::process::id(), nanos % 1_000_000_000);
        // The plugin's exchange type, tried on a channel of its own (a failure closes it).
        let probe = session.rt.block_on(async {
            let ch = session.connection.create_channel().await.unwrap();
            ch.exchange_declare(
                format!("{base}.probe").as_str().into(),
                ExchangeKind::Custom("x-consistent-hash".into()),
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
        });
        if let Err(e) = probe {
            assert!(
                !required(),
                "the broker's consistent-hash exchange is required \
                 (rabbitmq-plugins enable rabbitmq_consistent_hash_exchange): {e}"
            );
            eprintln!("SKIPPED {test}: the consistent-hash exchange plugin is not enabled ({e})");
            return None;
        }
        let mut broker = Broker {
            session,
            base,
            partitions,
        };
        let mut queues = broker.queues();
        queues.push(format!("{}.dlq", broker.base));
        let exchanges = [
            format!("{}.probe", broker.base),
            broker.exchange(),
            format!("{}.dlx", broker.base),
        ];
        broker.session.owns(queues, exchanges);
        Some(broker)
    }

    pub fn exchange(&self) -> String {
        format!("{}.x", self.base)
    }

    pub fn queues(&self) -> Vec<String> {
        (0..self.partitions)
            .map(|i| format!("{}.q.p{i}", self.base))
            .collect()
    }

    /// Publishes each line with its key as routing key, persistent, with confirms.
    pub fn publish(&self, events: &[(String, String)]) {
        let properties = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2);
        self.session.publish(
            &self.exchange(),
            events
                .iter()
                .map(|(key, line)| (key.as_str(), properties.clone(), line.as_bytes())),
        );
    }

    /// Ready messages over every partition queue; `None` while a queue is not
    /// declared yet.
    pub fn backlog(&self) -> Option<u32> {
        self.queues().iter().map(|q| self.session.count(q)).sum()
    }
}

/// The schema of one deployment, holding its partitions' rows; dropped at the end.
pub struct Schemas {
    pub rt: tokio::runtime::Runtime,
    pub name: String,
    pub partitions: u32,
}

impl Schemas {
    pub fn new(test: &str, name: &str, partitions: u32) -> Option<Schemas> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reachable = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), sqlx::PgPool::connect(&pg_url())).await
        });
        if let Err(why) = reachable
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            assert!(!required(), "PostgreSQL at {} is required: {why}", pg_url());
            eprintln!("SKIPPED {test}: PostgreSQL is unreachable ({why})");
            return None;
        }
        Some(Schemas {
            rt,
            name: name.to_string(),
            partitions,
        })
    }

    pub fn store(&self, i: u32) -> PostgresStore {
        self.rt
            .block_on(PostgresStore::connect_schema(&pg_url(), &self.name))
            .unwrap()
            .partition(i)
    }

    /// Events applied so far over every partition (rows of `seen_events`); 0 while
    /// the server is unreachable.
    pub fn applied(&self) -> i64 {
        let url = pg_url();
        let name = self.name.clone();
        self.rt.block_on(async move {
            let Ok(pool) = sqlx::PgPool::connect(&url).await else {
                return 0;
            };
            let n: Result<i64, _> =
                sqlx::query_scalar(&format!("SELECT count(*) FROM \"{name}\".seen_events"))
                    .fetch_one(&pool)
                    .await;
            pool.close().await;
            n.unwrap_or(0)
        })
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let _ = self
            .rt
            .block_on(PostgresStore::drop_schema(&pg_url(), &self.name));
    }
}

pub fn config(dir: &Path, broker: &Broker, name: &str) -> PathBuf {
    let path = dir.join("steward.toml");
    std::fs::write(
        &path,
        format!(
            r#"[store]
path = "{pg}"

[engine]
batch = 256

[amqp]
url = "{AMQP}"
exchange = "{x}"
queue = "{base}.q"
prefetch = 512
dead_letter_exchange = "{base}.dlx"
dead_letter_queue = "{base}.dlq"
reconnect_min_ms = 50

[cluster]
partitions = {partitions}
name = "{name}"
rebalance_ms = 250
"#,
            pg = pg_url(),
            x = broker.exchange(),
            base = broker.base,
            partitions = broker.partitions,
        ),
    )
    .unwrap();
    path
}

/// A `steward run` member, its output in files of `dir` named after `tag`, with
/// `env` (configuration overrides) set.
pub fn spawn(dir: &Path, rules: &Path, config: &Path, tag: &str, env: &[(&str, &str)]) -> Member {
    Member(Some(
        steward()
            .args(["run"])
            .arg(rules)
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{tag}.out"))).unwrap())
            .stderr(File::create(dir.join(format!("{tag}.err"))).unwrap())
            .spawn()
            .unwrap(),
    ))
}

pub fn logs(dir: &Path) -> String {
    let mut all = String::new();
    for tag in ["a", "b", "c", "b2"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("{tag}.err"))) {
            all.push_str(&format!("--- {tag}\n{text}"));
        }
    }
    all
}

/// A deployment under test: its broker side and schemas (deleted when dropped), a
/// directory for its configuration and its members' output, the rules, the events,
/// and what one process reading the same events from a file ends with.
pub struct Deployment {
    pub broker: Broker,
    pub name: String,
    pub schemas: Schemas,
    pub dir: tempfile::TempDir,
    pub rules: PathBuf,
    pub events: Vec<(String, String)>,
    pub reference: Snapshot,
    pub config: PathBuf,
}

impl Deployment {
    /// `keys` tickets of `updates` updates each on `partitions` partitions; `None`
    /// (the test skipped) when the broker or the database is unreachable.
    pub fn new(test: &str, partitions: u32, keys: usize, updates: usize) -> Option<Deployment> {
        let broker = Broker::connect(test, partitions)?;
        let name = format!("steward_{}", broker.base);
        let schemas = Schemas::new(test, &name, partitions)?;
        let dir = tempfile::tempdir().unwrap();
        let rules = rules(dir.path());
        let events = events(keys, updates);
        let reference = reference(dir.path(), &rules, &events);
        let config = config(dir.path(), &broker, &name);
        Some(Deployment {
            broker,
            name,
            schemas,
            dir,
            rules,
            events,
            reference,
            config,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a member, its output in files named after `tag`.
    pub fn spawn(&self, tag: &str) -> Member {
        self.spawn_with(tag, &[])
    }

    /// Starts a member with `env` (configuration overrides) set.
    pub fn spawn_with(&self, tag: &str, env: &[(&str, &str)]) -> Member {
        spawn(self.path(), &self.rules, &self.config, tag, env)
    }

    /// Publishes every event.
    pub fn publish_all(&self) {
        self.broker.publish(&self.events);
    }

    pub fn logs(&self) -> String {
        logs(self.path())
    }

    /// Waits until a member has declared the partition queues.
    pub fn wait_until_declared(&self) {
        wait_until(
            self.path(),
            60,
            Duration::from_millis(50),
            || "queues never declared".to_string(),
            || self.broker.backlog().is_some(),
        );
    }

    /// Publishes the first half of the events, then waits until a `part`th of all
    /// of them is applied: the stream is then mid-way. The test publishes the second
    /// half ([`Deployment::publish_second_half`]) after what it does mid-stream, so
    /// the stream cannot end before.
    pub fn publish_first_half(&self, part: i64) {
        let half = self.events.len() / 2;
        self.broker.publish(&self.events[..half]);
        let total = self.events.len() as i64;
        wait_until(
            self.path(),
            120,
            Duration::from_millis(20),
            || "no progress".to_string(),
            || self.schemas.applied() >= total / part,
        );
    }

    pub fn publish_second_half(&self) {
        let half = self.events.len() / 2;
        self.broker.publish(&self.events[half..]);
    }

    /// Every event applied and every queue empty, within five minutes.
    pub fn wait_until_applied(&self) {
        let total = self.events.len() as i64;
        wait_until(
            self.path(),
            300,
            Duration::from_millis(200),
            || format!("{} of {total} applied", self.schemas.applied()),
            || self.schemas.applied() >= total && self.broker.backlog() == Some(0),
        );
    }

    /// The members' schemas hold what the file run ended with.
    pub fn assert_matches(&self, log: &str) {
        assert_matches(&self.schemas, &self.rules, &self.reference, log);
    }
}

/// Waits until `done` holds, looking every `every`; after `secs` seconds, fails with
/// `what` and the members' logs.
pub fn wait_until(
    dir: &Path,
    secs: u64,
    every: Duration,
    what: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}\n{}",
            what(),
            logs(dir)
        );
        std::thread::sleep(every);
    }
}

/// Evidence records without their time, sorted: the same decisions, in any order.
pub fn records(evidence: &[steward_engine::decision::EvidenceRecord]) -> Vec<String> {
    let mut r: Vec<String> = evidence
        .iter()
        .map(|e| {
            let mut v: Value = serde_json::from_str(&e.record).unwrap();
            v.as_object_mut().unwrap().remove("at");
            v.to_string()
        })
        .collect();
    r.sort();
    r
}

/// Asserts that the partitions of `schemas` together hold what one process's
/// `reference` run holds: each event applied once, the same decisions (evidence
/// records without their time), no update out of order, the same open instances, each
/// action once, no dead letters; and that each partition's chain verifies.
pub fn assert_matches(schemas: &Schemas, rules: &Path, reference: &Snapshot, log: &str) {
    let compiled = ruleset(rules);
    let mut evidence = Vec::new();
    let mut seen = Vec::new();
    let mut open = Vec::new();
    let mut actions = BTreeMap::new();
    for i in 0..schemas.partitions {
        let store = schemas.store(i);
        let (chain, world, outbox, dead) = schemas.rt.block_on(async {
            (
                store.evidence(0).await.unwrap(),
                store.load(&compiled).await.unwrap(),
                store.outbox().await.unwrap(),
                store.dead_letters().await.unwrap(),
            )
        });
        assert_eq!(
            steward_engine::decision::verify_chain(&chain),
            Ok(chain.len() as u64),
            "partition {i}"
        );
        assert!(dead.is_empty(), "partition {i}: {dead:?}");
        evidence.extend(chain);
        seen.extend(
            world
                .seen
                .iter()
                .map(|e| (e.source.to_string(), e.id.to_string())),
        );
        open.extend(world.instances.keys().map(|(_, key)| key.to_string()));
        for row in outbox {
            *actions.entry(row.action_id).or_insert(0) += 1;
        }
    }
    seen.sort();
    assert_eq!(seen, reference.seen, "events applied differ\n{log}");
    assert!(
        !evidence.iter().any(|e| e.kind == "violation"),
        "an update was applied out of order\n{log}"
    );
    let (got, want) = (records(&evidence), records(&reference.evidence));
    if got != want {
        // Each record's count here less its count in the reference.
        let mut delta: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &got {
            *delta.entry(r).or_insert(0) += 1;
        }
        for r in &want {
            *delta.entry(r).or_insert(0) -= 1;
        }
        delta.retain(|_, n| *n != 0);
        panic!(
            "the evidence differs from the reference ({} records against {}); \
             records with their surplus (+) or shortfall (-):\n{delta:#?}\n{log}",
            got.len(),
            want.len()
        );
    }
    open.sort();
    let mut reference_open: Vec<String> =
        reference.open.iter().map(|(_, k, _)| k.clone()).collect();
    reference_open.sort();
    assert_eq!(open, reference_open);
    assert_eq!(actions.len(), reference.outbox.len());
    assert!(actions.values().all(|n| *n == 1));
}

/// Sends SIGTERM to each member and waits for a clean exit.
pub fn terminate(members: Vec<Member>, log: impl Fn() -> String) {
    for member in &members {
        std::process::Command::new("kill")
            .args(["-TERM", &member.id().to_string()])
            .status()
            .unwrap();
    }
    for mut member in members {
        let Some(child) = member.0.take() else {
            continue;
        };
        let out = super::finish(child, Duration::from_secs(60));
        assert!(out.status.success(), "{}", log());
    }
}

/// Writes the test rules to `dir/rules` and returns that directory.
pub fn rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("tickets.stw"), RULES).unwrap();
    rules
}

/// One process's run of `events` from a file, with SQLite: what a cluster must match.
pub fn reference(dir: &Path, rules: &Path, events: &[(String, String)]) -> Snapshot {
    let file = dir.join("events.jsonl");
    write_lines(
        &file,
        &events.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(),
    );
    let db = dir.join("reference.db");
    let out = run([
        "run".into(),
        rules.to_path_buf().into_os_string(),
        "--events".into(),
        file.into_os_string(),
        "--db".into(),
        db.clone().into_os_string(),
    ] as [std::ffi::OsString; 6]);
    ok(&out);
    let reference = snapshot(&db, rules);
    assert_eq!(reference.seen.len(), events.len());
    assert!(
        !reference.evidence.iter().any(|e| e.kind == "violation"),
        "the reference run saw updates out of order"
    );
    reference
}

/// A running member, killed if the test ends (or fails) without stopping it, so no
/// process outlives its test.
pub struct Member(Option<Child>);

impl Member {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}
