//! Store behaviour, written once for any `Store` and run on every backend: stopping
//! anywhere and resuming from the store gives the same decisions as never stopping;
//! load after commit gives the world back exactly; commits are atomic; the outbox and
//! dead letters are kept.
//!
//! SQLite runs on a temporary file. PostgreSQL runs in a unique schema per test (dropped
//! afterwards, also on failure) of the database at `STEWARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); when it is unreachable the PostgreSQL
//! tests say `SKIPPED` and pass, unless `STEWARD_REQUIRE_SERVICES=1`, when they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Connection;
use steward_dsl::Source;
use steward_engine::core::{
    Changes, CounterState, Engine, Expectation, OutboxEntry, Timer, TimerKind, World,
};
use steward_engine::decision::{ChainHead, Decision, EvidenceRecord, Kind, verify_chain};
use steward_engine::event::{Event, EventIdentity};
use steward_engine::replay::{Driver, decode_line};
use steward_engine::ruleset::Ruleset;
use steward_engine::store::postgres::{GroupCommit, PostgresStore};
use steward_engine::store::sqlite::SqliteStore;
use steward_engine::store::{
    Claimed, DeadLetter, Meta, OutboxBacklog, SettledAs, Settlement, Store,
};

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/iso20000")
}

fn example_rules() -> Arc<Ruleset> {
    let mut paths: Vec<_> = std::fs::read_dir(example_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "stw"))
        .collect();
    paths.sort();
    let sources: Vec<Source> = paths
        .iter()
        .map(|p| Source {
            path: p.display().to_string(),
            text: std::fs::read_to_string(p).unwrap(),
        })
        .collect();
    let checked = steward_dsl::check(&sources);
    assert!(checked.is_ok(), "{:?}", checked.diagnostics);
    let texts: Vec<&str> = sources.iter().map(|s| s.text.as_str()).collect();
    Arc::new(Ruleset::compile(&checked.files, &texts).unwrap())
}

fn example_events() -> Vec<Event> {
    std::fs::read_to_string(example_dir().join("events.jsonl"))
        .unwrap()
        .lines()
        .enumerate()
        .filter_map(|(i, l)| decode_line(i + 1, l, true))
        .map(Result::unwrap)
        .collect()
}

fn until() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-07-20T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn lines(out: &[Decision]) -> Vec<String> {
    out.iter().map(Decision::to_json_line).collect()
}

fn uninterrupted(rules: &Arc<Ruleset>, events: &[Event]) -> Vec<String> {
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    for e in events {
        driver.feed(e, &mut out);
    }
    driver.advance(until(), &mut out);
    lines(&out)
}

async fn commit<S: Store>(store: &S, driver: &mut Driver) {
    let changes = driver.engine.take_changes();
    let meta = Meta::of(driver.engine.world());
    store
        .commit(driver.engine.ruleset(), &changes, &meta)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Backends: a `Place` is where one store lives; opening it again reopens the same store,
// and dropping it removes it.

trait Place {
    type S: Store;
    fn open(&self) -> impl Future<Output = Self::S>;
}

struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let path =
            std::env::temp_dir().join(format!("steward-store-{}-{name}.db", std::process::id()));
        TempDb(path).cleaned()
    }

    fn cleaned(self) -> TempDb {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
        self
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Place for TempDb {
    type S = SqliteStore;
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.0).await.unwrap()
    }
}

fn sqlite(name: &str) -> TempDb {
    TempDb::new(name)
}

/// A unique schema in the test database; dropped with everything in it on drop.
struct Schema {
    url: String,
    name: String,
}

static SCHEMAS: AtomicU64 = AtomicU64::new(0);

impl Schema {
    fn new(url: &str, name: &str) -> Schema {
        let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_subsec_nanos();
        Schema {
            url: url.to_string(),
            name: format!(
                "steward_test_{}_{nanos}_{n}_{}",
                std::process::id(),
                name.replace('-', "_")
            ),
        }
    }
}

impl Place for Schema {
    type S = PostgresStore;
    async fn open(&self) -> PostgresStore {
        PostgresStore::connect_schema(&self.url, &self.name)
            .await
            .unwrap()
    }
}

/// A schema whose store commits through a group committer of its own (the
/// committer is shared by every store opened from it).
struct Grouped(Schema);

impl Place for Grouped {
    type S = PostgresStore;
    async fn open(&self) -> PostgresStore {
        let group = GroupCommit::new(&self.0.url, 2).unwrap();
        self.0.open().await.grouped(group)
    }
}

/// How many of the example's events leave open instances, approvals and timers: up
/// to CHG-201 half re-approved (a delegation used, one approval of two).
fn open_upto() -> usize {
    let events = example_events();
    events
        .iter()
        .position(|e| e.id == "evt-0110")
        .map_or(events.len() / 2, |i| i + 1)
}

/// Partition `part` of a schema whose partitions 0 and `part + 1` hold the world of
/// the example's first 10 events (open instances, timers, evidence, outbox rows) and a dead letter each, written at the
/// first open: every read and write of the partition keeps to its own rows.
struct Partition {
    schema: Schema,
    part: u32,
    /// Whether the store commits through a group committer (as `[cluster]` does with
    /// `group_commit`), shared with the neighbours' commits.
    grouped: bool,
    filled: std::sync::atomic::AtomicBool,
}

impl Partition {
    fn new(url: &str, name: &str, part: u32) -> Partition {
        Partition {
            schema: Schema::new(url, name),
            part,
            grouped: false,
            filled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn grouped(self) -> Partition {
        Partition {
            grouped: true,
            ..self
        }
    }
}

impl Place for Partition {
    type S = PostgresStore;
    async fn open(&self) -> PostgresStore {
        let group = self
            .grouped
            .then(|| GroupCommit::new(&self.schema.url, 2).unwrap());
        let open = |part: u32| {
            let group = group.clone();
            async move {
                let store = self.schema.open().await.partition(part);
                match group {
                    Some(group) => store.grouped(group),
                    None => store,
                }
            }
        };
        if !self.filled.swap(true, Ordering::Relaxed) {
            let rules = example_rules();
            for part in [0, self.part + 1] {
                let neighbour = open(part).await;
                let mut driver = Driver::new(Engine::new(rules.clone()));
                let mut out = Vec::new();
                for e in example_events().iter().take(10) {
                    driver.feed(e, &mut out);
                }
                assert!(!driver.engine.world().instances.is_empty());
                commit(&neighbour, &mut driver).await;
                neighbour
                    .dead_letter(&DeadLetter {
                        received_at: time("2026-03-01T10:00:00Z"),
                        origin: format!("partition {part}"),
                        reason: "a neighbour's".to_string(),
                        body: "{}".to_string(),
                    })
                    .await
                    .unwrap();
            }
        }
        open(self.part).await
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs outside any runtime's reach (maybe while unwinding from a failed
        // assertion): a thread of its own with a runtime of its own.
        let (url, name) = (self.url.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(PostgresStore::drop_schema(&url, &name))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop schema {}: {e}", self.name),
            Err(_) => eprintln!("could not drop schema {}: the thread panicked", self.name),
        }
    }
}

/// The test database's URL, or `None` (with a visible skip) when it is unreachable and
/// services are not required.
async fn postgres() -> Option<String> {
    let url = std::env::var("STEWARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let reached = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sqlx::PgConnection::connect(&url),
    )
    .await;
    let err = match reached {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Some(url);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out after 10s".to_string(),
    };
    if std::env::var("STEWARD_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!(
            "PostgreSQL unreachable at {url}: {err} \
             (STEWARD_REQUIRE_SERVICES=1; set STEWARD_TEST_POSTGRES_URL or start PostgreSQL)"
        );
    }
    eprintln!("SKIPPED: PostgreSQL unreachable at {url}: {err}");
    None
}

// ---------------------------------------------------------------------------------------
// Behaviours, each written once.

/// Applies the first `cut` events, commits, reopens from the store, and finishes.
async fn stop_and_resume<P: Place>(
    place: &P,
    rules: &Arc<Ruleset>,
    events: &[Event],
    cut: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    {
        let store = place.open().await;
        let mut driver = Driver::new(Engine::with_world(
            rules.clone(),
            store.load(rules).await.unwrap(),
        ));
        for (i, e) in events.iter().take(cut).enumerate() {
            driver.feed(e, &mut out);
            if i % 3 == 2 {
                commit(&store, &mut driver).await;
            }
        }
        commit(&store, &mut driver).await;
    }
    let store = place.open().await;
    let mut driver = Driver::new(Engine::with_world(
        rules.clone(),
        store.load(rules).await.unwrap(),
    ));
    // The whole stream again: what was applied before is recognised and skipped.
    for e in events {
        driver.feed(e, &mut out);
    }
    driver.advance(until(), &mut out);
    commit(&store, &mut driver).await;
    let evidence = store.evidence(0).await.unwrap();
    assert_eq!(verify_chain(&evidence), Ok(out.len() as u64));
    lines(&out)
}

async fn resume_anywhere_matches_uninterrupted_run<P: Place>(place: impl Fn(&str) -> P) {
    let rules = example_rules();
    let events = example_events();
    let expected = uninterrupted(&rules, &events);
    assert!(expected.len() > 40, "the example should decide a lot");
    for cut in [1, 2, 5, 9, 13, 15, 18, 22, 30, 37, events.len()] {
        let place = place(&format!("resume-{cut}"));
        let got = stop_and_resume(&place, &rules, &events, cut).await;
        assert_eq!(
            got, expected,
            "stopping after {cut} events changed the decisions"
        );
    }
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn assert_same_world(got: &World, want: &World) {
    assert_eq!(got.instances, want.instances, "instances");
    // The BTreeMaps compare in order: the same timers, due at exactly the same times.
    assert_eq!(
        got.timers.iter().collect::<Vec<_>>(),
        want.timers.iter().collect::<Vec<_>>(),
        "timers"
    );
    assert_eq!(got.next_timer, want.next_timer, "next_timer");
    assert_eq!(got.seen, want.seen, "seen");
    assert_eq!(got.counters, want.counters, "counters");
    assert_eq!(got.expectations, want.expectations, "expectations");
    assert_eq!(got.chain, want.chain, "chain");
    assert_eq!(got.now, want.now, "now");
    assert_eq!(
        got.cadences_scheduled, want.cadences_scheduled,
        "cadences_scheduled"
    );
}

async fn load_reproduces_the_world<P: Place>(place: P) {
    let rules = example_rules();
    let store = place.open().await;
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    // Up to CHG-201 half re-approved (a delegation used, one approval of two), so open
    // instances, approvals and timers remain.
    let events = example_events();
    let upto = events
        .iter()
        .position(|e| e.id == "evt-0110")
        .map_or(events.len() / 2, |i| i + 1);
    for (i, e) in events.iter().take(upto).enumerate() {
        driver.feed(e, &mut out);
        if i % 4 == 3 {
            commit(&store, &mut driver).await;
        }
    }
    commit(&store, &mut driver).await;
    let want = driver.engine.world();
    assert!(
        !want.instances.is_empty(),
        "the example should leave instances"
    );
    assert!(!want.timers.is_empty(), "the example should leave timers");
    assert!(!want.seen.is_empty());
    assert_same_world(&store.load(&rules).await.unwrap(), want);
    // Reopened, too.
    drop(store);
    let store = place.open().await;
    assert_same_world(&store.load(&rules).await.unwrap(), want);

    // Due times to the nanosecond, including ties broken by id, and a `now` with
    // nanoseconds, come back exactly.
    let mut world = store.load(&rules).await.unwrap();
    let mut changes = Changes::default();
    let dues = [
        "2030-01-01T00:00:00.123456789Z",
        "2030-01-01T00:00:00.123456788Z",
        "2030-01-01T00:00:00.123456789Z",
        "1999-12-31T23:59:59.999999999Z",
        "2030-01-01T00:00:00Z",
    ];
    for due in dues {
        world.next_timer += 1;
        let timer = Timer {
            id: world.next_timer,
            due: time(due),
            kind: TimerKind::Cadence { cadence: 0 },
        };
        world
            .timers
            .insert((timer.due, timer.id), timer.kind.clone());
        changes.timers_added.push(timer);
    }
    // An expectation and a counter with nanoseconds, and one expectation gone.
    for (period, due) in [
        ("2030-Q1", "2030-04-01T00:00:00.000000001Z"),
        ("2030-Q2", "2030-07-01T00:00:00Z"),
    ] {
        let exp = Expectation {
            due: time(due),
            timer: world.next_timer,
        };
        world
            .expectations
            .insert((0, period.to_string()), exp.clone());
        changes
            .expectations
            .insert((0, period.to_string()), Some(exp));
    }
    world.expectations.remove(&(0, "2030-Q2".to_string()));
    let mut second = changes.clone();
    second.timers_added.clear();
    second.expectations = [((0, "2030-Q2".to_string()), None)].into();
    let counter = CounterState {
        times: [
            time("2030-01-01T00:00:00.5Z"),
            time("2030-01-01T00:00:00.000000999Z"),
        ]
        .into(),
        period: "2030-01".into(),
        count: 2,
    };
    world.counters.insert((0, "acme".into()), counter.clone());
    second.counters.insert((0, "acme".into()), counter);
    world.now = Some(time("2029-06-01T12:00:00.000000001Z"));
    store
        .commit(&rules, &changes, &Meta::of(&world))
        .await
        .unwrap();
    let changes = second;
    store
        .commit(&rules, &changes, &Meta::of(&world))
        .await
        .unwrap();
    let got = store.load(&rules).await.unwrap();
    assert_same_world(&got, &world);
    let firsts: Vec<_> = got.timers.keys().take(1).collect();
    assert_eq!(
        firsts,
        [&(time("1999-12-31T23:59:59.999999999Z"), world.next_timer - 1)]
    );
}

fn evidence_record(seq: u64) -> EvidenceRecord {
    EvidenceRecord {
        seq,
        at: "2026-01-01T00:00:00Z".into(),
        kind: "test".into(),
        record: format!("{{\"n\":{seq}}}"),
        prev_hash: "00".into(),
        hash: format!("{seq:02}"),
    }
}

async fn commit_is_atomic<P: Place>(place: P) {
    let rules = example_rules();
    let store = place.open().await;
    let mut changes = Changes::default();
    changes.evidence.push(evidence_record(1));
    store
        .commit(&rules, &changes, &Meta::default())
        .await
        .unwrap();
    // The second commit breaks on the evidence (seq 1 again) after writing a seen id,
    // a timer and a meta row: none of them may stay.
    let mut changes = Changes::default();
    changes.seen.push(EventIdentity {
        source: Arc::from("test"),
        id: Arc::from("e1"),
    });
    changes.timers_added.push(Timer {
        id: 0,
        due: until(),
        kind: TimerKind::Cadence { cadence: 0 },
    });
    changes.evidence.push(evidence_record(1));
    let meta = Meta {
        next_timer: 1,
        ..Meta::default()
    };
    assert!(store.commit(&rules, &changes, &meta).await.is_err());
    let world = store.load(&rules).await.unwrap();
    assert!(world.seen.is_empty());
    assert!(world.timers.is_empty());
    assert_eq!(world.next_timer, 0);
    assert_eq!(store.evidence(0).await.unwrap(), vec![evidence_record(1)]);
    // The failed transaction is over: the next commit starts its own and lands whole.
    changes.evidence = vec![evidence_record(2)];
    store.commit(&rules, &changes, &meta).await.unwrap();
    let world = store.load(&rules).await.unwrap();
    assert_eq!(world.seen.len(), 1);
    assert_eq!(world.timers.len(), 1);
    assert_eq!(world.next_timer, 1);
    assert_eq!(
        store.evidence(0).await.unwrap(),
        vec![evidence_record(1), evidence_record(2)]
    );
}

/// One commit may both add and remove a timer (set and cancelled within a batch), and
/// remove one an earlier commit added: only the timers still set are kept.
async fn timers_set_and_cancelled_in_one_commit<P: Place>(place: P) {
    let rules = example_rules();
    let store = place.open().await;
    let timer = |id: u64| Timer {
        id,
        due: until(),
        kind: TimerKind::Cadence { cadence: 0 },
    };
    let mut changes = Changes::default();
    changes.timers_added.push(timer(0));
    let meta = Meta {
        next_timer: 1,
        ..Meta::default()
    };
    store.commit(&rules, &changes, &meta).await.unwrap();
    let changes = Changes {
        timers_added: vec![timer(1), timer(2), timer(3)],
        timers_removed: vec![2, 0],
        ..Changes::default()
    };
    let meta = Meta {
        next_timer: 4,
        ..Meta::default()
    };
    store.commit(&rules, &changes, &meta).await.unwrap();
    let world = store.load(&rules).await.unwrap();
    let ids: Vec<u64> = world.timers.keys().map(|(_, id)| *id).collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(world.next_timer, 4);
}

async fn keeps_dead_letters_and_outbox<P: Place>(place: P) {
    let rules = example_rules();
    let store = place.open().await;
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    for e in example_events() {
        driver.feed(&e, &mut out);
    }
    commit(&store, &mut driver).await;
    let outbox = store.outbox().await.unwrap();
    let actions = out.iter().filter(|d| d.action_id.is_some()).count();
    assert_eq!(outbox.len(), actions);
    // Connector calls wait for a dispatcher; emitted events were fed back when decided.
    assert!(outbox.iter().all(|o| o.attempts == 0
        && o.status
            == if o.connector == "steward" {
                "done"
            } else {
                "pending"
            }));
    // Each row knows the instance that decided it, as its action decision says.
    for o in &outbox {
        let d = out
            .iter()
            .find(|d| d.action_id.as_deref() == Some(o.action_id.as_str()))
            .unwrap();
        assert_eq!(
            (&o.workflow, &o.key),
            (&d.workflow, &d.key),
            "{}",
            o.action_id
        );
    }
    let letters = [
        DeadLetter {
            received_at: until(),
            origin: "test:1".into(),
            reason: "not JSON".into(),
            body: "{oops".into(),
        },
        DeadLetter {
            received_at: time("2026-07-20T00:00:00.000000007Z"),
            origin: "test:2".into(),
            reason: "unknown type".into(),
            body: "{}".into(),
        },
    ];
    for letter in &letters {
        store.dead_letter(letter).await.unwrap();
    }
    assert_eq!(store.dead_letters().await.unwrap(), letters);
}

/// One commit of many rows of every kind; reports rows per second.
async fn large_commit<P: Place>(place: P, backend: &str) {
    const N: usize = 10_000;
    let rules = example_rules();
    let store = place.open().await;
    let start = time("2026-01-01T00:00:00Z");
    let mut changes = Changes::default();
    for i in 0..N {
        changes.timers_added.push(Timer {
            id: i as u64,
            due: start + TimeDelta::nanoseconds(i as i64 * 1_000_001),
            kind: TimerKind::Cadence { cadence: 0 },
        });
        changes.seen.push(EventIdentity {
            source: Arc::from("bulk"),
            id: Arc::from(format!("e{i}").as_str()),
        });
        changes.outbox.push(OutboxEntry {
            action_id: format!("a{i:06}"),
            at: start + TimeDelta::milliseconds(i as i64),
            connector: "jira".into(),
            op: "comment".into(),
            args: serde_json::json!({"n": i}),
        });
    }
    let meta = Meta {
        next_timer: N as u64,
        ..Meta::default()
    };
    let began = Instant::now();
    store.commit(&rules, &changes, &meta).await.unwrap();
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "{backend}: one commit of {} rows in {:.3}s: {:.0} rows/s",
        3 * N,
        secs,
        (3 * N) as f64 / secs
    );
    let world = store.load(&rules).await.unwrap();
    assert_eq!(world.timers.len(), N);
    assert_eq!(world.seen.len(), N);
    assert_eq!(store.outbox().await.unwrap().len(), N);
    assert_eq!(
        world.timers.keys().last(),
        Some(&(
            start + TimeDelta::nanoseconds((N as i64 - 1) * 1_000_001),
            N as u64 - 1
        ))
    );
    // And the removal of all of them, also in one commit.
    let changes = Changes {
        timers_removed: (0..N as u64).collect(),
        ..Changes::default()
    };
    store.commit(&rules, &changes, &meta).await.unwrap();
    assert!(store.load(&rules).await.unwrap().timers.is_empty());
}

/// A batch deciding `calls` (action id, connector) for instance `change`/`key`, with their
/// action evidence, as the core hands it to a store.
/// Actions (id, connector, instance key) decided in this order by workflow `change`.
fn decided_each(calls: &[(&str, &str, &str)], chain: &mut ChainHead) -> Changes {
    let at = time("2026-03-01T10:00:00Z");
    let mut changes = Changes::default();
    for &(id, connector, key) in calls {
        let op = if connector == "steward" {
            "emit"
        } else {
            "send"
        };
        changes.outbox.push(OutboxEntry {
            action_id: id.to_string(),
            at,
            connector: connector.to_string(),
            op: op.into(),
            args: serde_json::json!(["CHG-1", "text"]),
        });
        let mut d = Decision::new(at, Kind::Action);
        d.workflow = Some("change".into());
        d.key = Some(key.into());
        d.connector = Some(connector.to_string());
        d.op = Some(op.into());
        d.action_id = Some(id.to_string());
        changes.evidence.push(chain.append(&d));
    }
    changes
}

fn ids(claimed: &[Claimed]) -> Vec<(&str, u32)> {
    claimed
        .iter()
        .map(|c| (c.action_id.as_str(), c.attempt))
        .collect()
}

/// With emitted events published (`dispatch_emitted`), their rows are dispatched like
/// connector calls; without, they are settled when committed.
async fn emitted_rows_are_dispatched_when_published<S: Store>(published: S, plain: S) {
    let rules = example_rules();
    for (store, publish) in [(published, true), (plain, false)] {
        let mut chain = ChainHead::default();
        let changes = decided_each(
            &[("e", "steward", "CHG/1"), ("a", "webhook", "CHG/2")],
            &mut chain,
        );
        let meta = Meta {
            chain: chain.clone(),
            ..Meta::default()
        };
        store.commit(&rules, &changes, &meta).await.unwrap();
        let claimed = store.claim_due(1_000, 2_000, 10).await.unwrap();
        let mut got = ids(&claimed);
        got.sort();
        let want: &[(&str, u32)] = if publish {
            &[("a", 1), ("e", 1)]
        } else {
            &[("a", 1)]
        };
        assert_eq!(got, want, "publish = {publish}");
        let emit = store
            .outbox()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.action_id == "e")
            .unwrap();
        let status = if publish { "in_flight" } else { "done" };
        assert_eq!(emit.status, status, "{emit:?}");
    }
}

/// pending -> in flight (leased) -> retry -> in flight -> done | dead; expired leases
/// are taken over as a new attempt; stale claims change nothing.
async fn outbox_lifecycle<P: Place>(place: P) {
    let rules = example_rules();
    let store = place.open().await;
    let mut chain = ChainHead::default();
    // Three instances, so order within an instance does not hold any of them back.
    let changes = decided_each(
        &[
            ("a", "webhook", "CHG/1"),
            ("b", "webhook", "CHG/2"),
            ("c", "slack", "CHG/3"),
            ("e", "steward", "CHG/1"),
        ],
        &mut chain,
    );
    let meta = Meta {
        chain: chain.clone(),
        ..Meta::default()
    };
    store.commit(&rules, &changes, &meta).await.unwrap();
    let t0: i64 = 1_000_000;
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        OutboxBacklog {
            open: 3,
            next_ms: Some(0)
        }
    );

    // Two at a time, in order; the emitted event is never claimed.
    let first = store.claim_due(t0, t0 + 500, 2).await.unwrap();
    assert_eq!(ids(&first), [("a", 1), ("b", 1)]);
    let a = &first[0];
    assert_eq!(
        (
            a.workflow.as_deref(),
            a.key.as_deref(),
            a.connector.as_str(),
            a.op.as_str()
        ),
        (Some("change"), Some("CHG/1"), "webhook", "send")
    );
    assert_eq!(a.args, r#"["CHG-1","text"]"#);
    assert_eq!(a.lease_ms, t0 + 500);
    // Held rows are not claimed again while their lease runs.
    let second = store.claim_due(t0 + 1, t0 + 5000, 10).await.unwrap();
    assert_eq!(ids(&second), [("c", 1)]);
    assert!(
        store
            .claim_due(t0 + 2, t0 + 502, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // a fails and is scheduled again at t0 + 1000; a stale attempt number changes nothing.
    assert!(
        store
            .schedule_retry("a", 1, t0 + 1000, "HTTP 503")
            .await
            .unwrap()
    );
    assert!(!store.schedule_retry("a", 1, t0 + 9, "late").await.unwrap());
    assert!(
        store
            .claim_due(t0 + 400, t0 + 900, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let row = |id: &str, rows: &[steward_engine::store::OutboxRow]| {
        rows.iter().find(|r| r.action_id == id).unwrap().clone()
    };
    let rows = store.outbox().await.unwrap();
    let ra = row("a", &rows);
    assert_eq!(
        (
            ra.status.as_str(),
            ra.attempts,
            ra.due_ms,
            ra.last_error.as_deref()
        ),
        ("retry", 1, t0 + 1000, Some("HTTP 503"))
    );
    assert_eq!(row("e", &rows).status, "done");

    // b's lease expired at t0 + 500 (its dispatcher died): taken over as attempt 2
    // (first: it was due earliest), together with a, now due.
    let again = store.claim_due(t0 + 1000, t0 + 1500, 10).await.unwrap();
    assert_eq!(ids(&again), [("b", 2), ("a", 2)]);
    // The dead dispatcher's late retry of b is refused, and its claim no longer holds.
    assert!(!store.schedule_retry("b", 1, t0, "late").await.unwrap());
    assert!(!store.claim_holds("b", 1).await.unwrap());
    assert!(store.claim_holds("b", 2).await.unwrap());
    assert!(!store.claim_holds("e", 0).await.unwrap());
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        OutboxBacklog {
            open: 3,
            next_ms: Some(t0 + 1500)
        }
    );

    // Outcomes are committed with their decisions.
    let settled = [
        Settlement {
            action_id: "a".into(),
            attempt: 2,
            end: SettledAs::Done {
                result: r#"{"status":200}"#.into(),
            },
        },
        Settlement {
            action_id: "c".into(),
            attempt: 1,
            end: SettledAs::Dead {
                reason: "connector error: invalid_payload".into(),
            },
        },
    ];
    let mut outcome = Changes::default();
    let d = Decision::new(time("2026-03-01T10:00:01Z"), Kind::Evidence);
    outcome.evidence.push(chain.append(&d));
    let meta = Meta {
        chain: chain.clone(),
        ..Meta::default()
    };
    store
        .commit_settled(&rules, &outcome, &meta, &settled)
        .await
        .unwrap();
    // Settling again (a duplicate outcome) leaves the first result.
    let mut replayed = settled[0].clone();
    replayed.end = SettledAs::Dead {
        reason: "late".into(),
    };
    store
        .commit_settled(&rules, &Changes::default(), &meta, &[replayed])
        .await
        .unwrap();
    assert!(
        !store.claim_holds("a", 2).await.unwrap(),
        "settled rows hold no claim"
    );
    let rows = store.outbox().await.unwrap();
    let (ra, rc) = (row("a", &rows), row("c", &rows));
    assert_eq!(
        (ra.status.as_str(), ra.attempts, ra.result.as_deref()),
        ("done", 2, Some(r#"{"status":200}"#))
    );
    assert_eq!(
        (rc.status.as_str(), rc.last_error.as_deref()),
        ("dead", Some("connector error: invalid_payload"))
    );
    assert_eq!(store.evidence(0).await.unwrap().len(), 5);
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        OutboxBacklog {
            open: 1,
            next_ms: Some(t0 + 1500)
        }
    );
    // Done and dead rows are never claimed again.
    let last = store.claim_due(t0 + 10_000, t0 + 10_500, 10).await.unwrap();
    assert_eq!(ids(&last), [("b", 3)]);

    // A failed settle commit leaves the row in flight (atomic with its evidence).
    let mut broken = Changes::default();
    broken.evidence.push(evidence_record(1)); // seq 1 exists: the commit fails
    let bad = Settlement {
        action_id: "b".into(),
        attempt: 3,
        end: SettledAs::Done {
            result: "{}".into(),
        },
    };
    assert!(
        store
            .commit_settled(&rules, &broken, &meta, &[bad])
            .await
            .is_err()
    );
    assert_eq!(row("b", &store.outbox().await.unwrap()).status, "in_flight");
}

/// Dispatchers claiming at the same time never get the same row.
/// An instance's actions are executed one at a time, in the order they were decided:
/// a later one is not claimed while an earlier one is pending, in flight or waiting
/// for a retry; other instances are not held back.
async fn outbox_orders_each_instance<P: Place>(place: P) {
    let rules = example_rules();
    let store = place.open().await;
    let mut chain = ChainHead::default();
    // Decided in this order; the ids sort the other way round on purpose.
    let changes = decided_each(
        &[
            ("z-first", "webhook", "CHG/1"),
            ("b-other", "webhook", "CHG/2"),
            ("a-second", "webhook", "CHG/1"),
            ("m-third", "slack", "CHG/1"),
        ],
        &mut chain,
    );
    let meta = Meta {
        chain: chain.clone(),
        ..Meta::default()
    };
    store.commit(&rules, &changes, &meta).await.unwrap();
    let t0: i64 = 1_000_000;
    let first = store.claim_due(t0, t0 + 500, 10).await.unwrap();
    assert_eq!(ids(&first), [("b-other", 1), ("z-first", 1)]);
    let settle = |id: &str, attempt: u32| Settlement {
        action_id: id.into(),
        attempt,
        end: SettledAs::Done {
            result: "{}".into(),
        },
    };
    store
        .commit_settled(&rules, &Changes::default(), &meta, &[settle("b-other", 1)])
        .await
        .unwrap();
    // z-first fails and waits for its retry: CHG/1's later actions wait with it.
    assert!(
        store
            .schedule_retry("z-first", 1, t0 + 1000, "HTTP 503")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due(t0 + 1, t0 + 501, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = store.claim_due(t0 + 1000, t0 + 1500, 10).await.unwrap();
    assert_eq!(ids(&retry), [("z-first", 2)]);
    store
        .commit_settled(&rules, &Changes::default(), &meta, &[settle("z-first", 2)])
        .await
        .unwrap();
    let next = store.claim_due(t0 + 1001, t0 + 1501, 10).await.unwrap();
    assert_eq!(ids(&next), [("a-second", 1)]);
    // Dead-lettered counts as settled: the instance moves on.
    store
        .commit_settled(
            &rules,
            &Changes::default(),
            &meta,
            &[Settlement {
                action_id: "a-second".into(),
                attempt: 1,
                end: SettledAs::Dead {
                    reason: "HTTP 400".into(),
                },
            }],
        )
        .await
        .unwrap();
    let last = store.claim_due(t0 + 1002, t0 + 1502, 10).await.unwrap();
    assert_eq!(ids(&last), [("m-third", 1)]);
}

async fn concurrent_claims_are_disjoint<P: Place>(place: P)
where
    P::S: Clone + Send + Sync + 'static,
{
    const N: usize = 200;
    let rules = example_rules();
    let store = place.open().await;
    let mut chain = ChainHead::default();
    let names: Vec<String> = (0..N).map(|i| format!("x{i:04}")).collect();
    // One instance each: an instance's own actions are claimed one at a time.
    let calls: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "webhook", n.as_str()))
        .collect();
    let changes = decided_each(&calls, &mut chain);
    let meta = Meta {
        chain,
        ..Meta::default()
    };
    store.commit(&rules, &changes, &meta).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_due(10, 100_000, 7).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|c| c.action_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), N, "every row claimed once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), N, "no row claimed twice");
}

/// The migrations of `backend` before `version`: a store as an earlier release left it.
async fn migrations_before(backend: &str, version: i64) -> sqlx::migrate::Migrator {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert!(!migrator.migrations.is_empty());
    migrator
}

/// How many events of the example were already seen when a store from before migration
/// 4 (identities keyed by (`source`, `id`)) is migrated.
const SEEN_BEFORE: usize = 5;

/// The example's distinct identities, in order of arrival (it delivers some events
/// twice).
fn identities() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in example_events() {
        let identity = (e.source.to_string(), e.id.to_string());
        if !out.contains(&identity) {
            out.push(identity);
        }
    }
    out
}

/// The first [`SEEN_BEFORE`] identities of the example, as rows.
fn seen_before() -> Vec<(String, String)> {
    identities().into_iter().take(SEEN_BEFORE).collect()
}

/// A store written before migration 4 with [`seen_before`] in `seen_events`, migrated by
/// opening it: those events are still duplicates, and identities committed afterwards
/// are kept beside them (each once).
async fn identities_survive_migration_4<P: Place>(place: &P) {
    let rules = example_rules();
    let events = example_events();
    let store = place.open().await;
    let world = store.load(&rules).await.unwrap();
    assert_eq!(world.seen.len(), SEEN_BEFORE);
    let mut driver = Driver::new(Engine::with_world(rules.clone(), world));
    let mut out = Vec::new();
    for e in &events {
        driver.feed(e, &mut out);
    }
    let redelivered = (events.len() - identities().len()) as u64;
    assert_eq!(
        driver.engine.stats.duplicates,
        SEEN_BEFORE as u64 + redelivered
    );
    commit(&store, &mut driver).await;
    drop(store);
    let world = place.open().await.load(&rules).await.unwrap();
    assert_eq!(world.seen.len(), identities().len());
    for e in &events {
        assert!(world.seen.contains(&e.source, &e.id), "{} lost", e.id);
    }
}

// ---------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_resume_anywhere_matches_uninterrupted_run() {
    resume_anywhere_matches_uninterrupted_run(sqlite).await;
}

#[tokio::test]
async fn sqlite_load_reproduces_the_world() {
    load_reproduces_the_world(sqlite("world")).await;
}

#[tokio::test]
async fn sqlite_commit_is_atomic() {
    commit_is_atomic(sqlite("atomic")).await;
}

#[tokio::test]
async fn sqlite_timers_set_and_cancelled_in_one_commit() {
    timers_set_and_cancelled_in_one_commit(sqlite("timers")).await;
}

#[tokio::test]
async fn sqlite_keeps_dead_letters_and_outbox() {
    keeps_dead_letters_and_outbox(sqlite("outbox")).await;
}

#[tokio::test]
async fn sqlite_outbox_lifecycle() {
    outbox_lifecycle(sqlite("lifecycle")).await;
}

#[tokio::test]
async fn sqlite_emitted_rows_are_dispatched_when_published() {
    let (on, off) = (sqlite("emit-on"), sqlite("emit-off"));
    emitted_rows_are_dispatched_when_published(
        on.open().await.dispatch_emitted(true),
        off.open().await,
    )
    .await;
}

#[tokio::test]
async fn sqlite_outbox_orders_each_instance() {
    outbox_orders_each_instance(sqlite("order")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_claims_are_disjoint() {
    concurrent_claims_are_disjoint(sqlite("claims")).await;
}

#[tokio::test]
async fn sqlite_identities_survive_migration_4() {
    let db = sqlite("migration-4");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db.0)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    migrations_before("sqlite", 4)
        .await
        .run(&mut conn)
        .await
        .unwrap();
    for (source, id) in seen_before() {
        sqlx::query("INSERT INTO seen_events (source, id) VALUES (?, ?)")
            .bind(source)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    identities_survive_migration_4(&db).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM seen_events")
        .fetch_one(&mut *db.open().await.connection().await)
        .await
        .unwrap();
    assert_eq!(rows as usize, identities().len(), "each identity once");
}

/// A commit that finds another process writing to the file waits for it (up to the
/// busy timeout) instead of failing, and both writes land.
#[tokio::test]
async fn sqlite_commit_waits_for_another_writer() {
    let db = sqlite("busy");
    let rules = example_rules();
    let store = db.open().await;
    let other = rusqlite::Connection::open(&db.0).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    other
        .execute(
            "INSERT INTO dead_letters (received_at, origin, reason, body) \
             VALUES ('2026-01-01T00:00:00Z', 'elsewhere', 'held the lock', '')",
            [],
        )
        .unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let mut changes = Changes::default();
    changes.evidence.push(evidence_record(1));
    let began = Instant::now();
    store
        .commit(&rules, &changes, &Meta::default())
        .await
        .expect("the commit waits for the other writer");
    assert!(
        began.elapsed() >= std::time::Duration::from_millis(200),
        "the other writer held the lock when the commit began"
    );
    release.join().unwrap();
    assert_eq!(store.evidence(0).await.unwrap(), vec![evidence_record(1)]);
    let letters = store.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "held the lock");
}

#[tokio::test]
async fn sqlite_large_commit() {
    large_commit(sqlite("large"), "sqlite").await;
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn postgres_resume_anywhere_matches_uninterrupted_run() {
    let Some(url) = postgres().await else { return };
    resume_anywhere_matches_uninterrupted_run(|name| Schema::new(&url, name)).await;
}

#[tokio::test]
async fn postgres_load_reproduces_the_world() {
    let Some(url) = postgres().await else { return };
    load_reproduces_the_world(Schema::new(&url, "world")).await;
}

#[tokio::test]
async fn postgres_commit_is_atomic() {
    let Some(url) = postgres().await else { return };
    commit_is_atomic(Schema::new(&url, "atomic")).await;
}

#[tokio::test]
async fn postgres_timers_set_and_cancelled_in_one_commit() {
    let Some(url) = postgres().await else { return };
    timers_set_and_cancelled_in_one_commit(Schema::new(&url, "timers")).await;
}

#[tokio::test]
async fn postgres_grouped_resume_anywhere_matches_uninterrupted_run() {
    let Some(url) = postgres().await else { return };
    resume_anywhere_matches_uninterrupted_run(|name| Grouped(Schema::new(&url, name))).await;
}

#[tokio::test]
async fn postgres_grouped_load_reproduces_the_world() {
    let Some(url) = postgres().await else { return };
    load_reproduces_the_world(Grouped(Schema::new(&url, "g_world"))).await;
}

#[tokio::test]
async fn postgres_grouped_commit_is_atomic() {
    let Some(url) = postgres().await else { return };
    commit_is_atomic(Grouped(Schema::new(&url, "g_atomic"))).await;
}

#[tokio::test]
async fn postgres_grouped_timers_set_and_cancelled_in_one_commit() {
    let Some(url) = postgres().await else { return };
    timers_set_and_cancelled_in_one_commit(Grouped(Schema::new(&url, "g_timers"))).await;
}

#[tokio::test]
async fn postgres_grouped_outbox_lifecycle() {
    let Some(url) = postgres().await else { return };
    outbox_lifecycle(Grouped(Schema::new(&url, "g_lifecycle"))).await;
}

/// Commits of stores sharing a committer go as one statement, each answered by its
/// own fence; a commit that fails for a reason of its own fails alone. `open(n)`
/// opens the `n`th of three stores, without a committer.
async fn group_commit_answers_each_store_alone<F, Fut>(url: &str, open: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = PostgresStore>,
{
    use steward_engine::store::StoreError;
    use steward_engine::store::postgres::Fence;
    let rules = example_rules();
    let group = GroupCommit::new(url, 1).unwrap();
    let a = open(0).await.grouped(group.clone());
    let b = open(1).await.grouped(group.clone());
    // Fenced by a lock nobody holds: always refused.
    let namespace = (std::process::id() as i32 & 0x0fff_ffff) | 0x2000_0000;
    let fence = Fence {
        namespace,
        held: 3,
        barrier: namespace ^ 0x0400_0000,
        key: 3,
    };
    let c = open(2).await.grouped(group.clone()).fenced(fence);
    let batch = |id: &str, seq: u64| {
        let mut changes = Changes::default();
        changes.seen.push(EventIdentity {
            source: Arc::from("test"),
            id: Arc::from(id),
        });
        changes.evidence.push(evidence_record(seq));
        changes
    };
    let (b1, b2, b3) = (batch("a1", 1), batch("b1", 1), batch("c1", 1));
    let meta = Meta::default();
    // All three are queued before the committer runs (one thread): one statement.
    let before = group.statements();
    let (ra, rb, rc) = tokio::join!(
        a.commit(&rules, &b1, &meta),
        b.commit(&rules, &b2, &meta),
        c.commit(&rules, &b3, &meta),
    );
    assert_eq!(
        group.statements() - before,
        1,
        "one statement for the group"
    );
    ra.unwrap();
    rb.unwrap();
    assert!(matches!(rc, Err(StoreError::Fenced)), "{rc:?}");
    let seen = |world: World| -> Vec<String> {
        let mut ids: Vec<String> = world.seen.iter().map(|e| e.id.to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(seen(a.load(&rules).await.unwrap()), ["a1"]);
    assert_eq!(seen(b.load(&rules).await.unwrap()), ["b1"]);
    assert!(seen(c.load(&rules).await.unwrap()).is_empty());
    assert!(c.evidence(0).await.unwrap().is_empty());
    // b's evidence seq 1 again breaks the group's statement: each commit is tried
    // alone, and only b's fails.
    let (b4, b5) = (batch("a2", 2), batch("b2", 1));
    let before = group.statements();
    let (ra, rb) = tokio::join!(a.commit(&rules, &b4, &meta), b.commit(&rules, &b5, &meta));
    assert_eq!(group.statements() - before, 3, "the group, then each alone");
    ra.unwrap();
    assert!(matches!(rb, Err(StoreError::Database(_))), "{rb:?}");
    assert_eq!(seen(a.load(&rules).await.unwrap()), ["a1", "a2"]);
    assert_eq!(seen(b.load(&rules).await.unwrap()), ["b1"]);
    assert_eq!(
        a.evidence(0).await.unwrap(),
        vec![evidence_record(1), evidence_record(2)]
    );
    assert_eq!(b.evidence(0).await.unwrap(), vec![evidence_record(1)]);
}

#[tokio::test]
async fn postgres_group_commit_answers_each_store_alone() {
    let Some(url) = postgres().await else { return };
    let places = [
        Schema::new(&url, "group_a"),
        Schema::new(&url, "group_b"),
        Schema::new(&url, "group_c"),
    ];
    group_commit_answers_each_store_alone(&url, |n| places[n].open()).await;
}

/// The same with the three stores partitions of one schema, as in `[cluster]`: their
/// commits share each table's part of the statement.
#[tokio::test]
async fn postgres_group_commit_answers_each_partition_alone() {
    let Some(url) = postgres().await else { return };
    let schema = Schema::new(&url, "group_parts");
    group_commit_answers_each_store_alone(&url, |n| {
        let open = schema.open();
        async move { open.await.partition(n as u32 + 1) }
    })
    .await;
}

#[tokio::test]
async fn postgres_partition_resume_anywhere_matches_uninterrupted_run() {
    let Some(url) = postgres().await else { return };
    resume_anywhere_matches_uninterrupted_run(|name| Partition::new(&url, name, 2).grouped()).await;
}

#[tokio::test]
async fn postgres_partition_load_reproduces_the_world() {
    let Some(url) = postgres().await else { return };
    load_reproduces_the_world(Partition::new(&url, "p_world", 3)).await;
}

#[tokio::test]
async fn postgres_partition_commit_is_atomic() {
    let Some(url) = postgres().await else { return };
    commit_is_atomic(Partition::new(&url, "p_atomic", 1).grouped()).await;
}

#[tokio::test]
async fn postgres_partition_timers_set_and_cancelled_in_one_commit() {
    let Some(url) = postgres().await else { return };
    timers_set_and_cancelled_in_one_commit(Partition::new(&url, "p_timers", 4)).await;
}

#[tokio::test]
async fn postgres_partition_keeps_dead_letters_and_outbox() {
    let Some(url) = postgres().await else { return };
    keeps_dead_letters_and_outbox(Partition::new(&url, "p_outbox", 2)).await;
}

#[tokio::test]
async fn postgres_partition_outbox_lifecycle() {
    let Some(url) = postgres().await else { return };
    outbox_lifecycle(Partition::new(&url, "p_lifecycle", 5).grouped()).await;
}

#[tokio::test]
async fn postgres_partition_outbox_orders_each_instance() {
    let Some(url) = postgres().await else { return };
    outbox_orders_each_instance(Partition::new(&url, "p_order", 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_partition_concurrent_claims_are_disjoint() {
    let Some(url) = postgres().await else { return };
    concurrent_claims_are_disjoint(Partition::new(&url, "p_claims", 6)).await;
}

#[tokio::test]
async fn postgres_keeps_dead_letters_and_outbox() {
    let Some(url) = postgres().await else { return };
    keeps_dead_letters_and_outbox(Schema::new(&url, "outbox")).await;
}

#[tokio::test]
async fn postgres_outbox_lifecycle() {
    let Some(url) = postgres().await else { return };
    outbox_lifecycle(Schema::new(&url, "lifecycle")).await;
}

#[tokio::test]
async fn postgres_emitted_rows_are_dispatched_when_published() {
    let Some(url) = postgres().await else { return };
    let (on, off) = (Schema::new(&url, "emit_on"), Schema::new(&url, "emit_off"));
    emitted_rows_are_dispatched_when_published(
        on.open().await.dispatch_emitted(true),
        off.open().await,
    )
    .await;
}

#[tokio::test]
async fn postgres_outbox_orders_each_instance() {
    let Some(url) = postgres().await else { return };
    outbox_orders_each_instance(Schema::new(&url, "order")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_claims_are_disjoint() {
    let Some(url) = postgres().await else { return };
    concurrent_claims_are_disjoint(Schema::new(&url, "claims")).await;
}

#[tokio::test]
async fn postgres_identities_survive_migration_4() {
    let Some(url) = postgres().await else { return };
    let schema = Schema::new(&url, "migration_4");
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).unwrap();
    let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let quoted = format!("\"{}\"", schema.name);
    sqlx::query(&format!("CREATE SCHEMA {quoted}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut conn =
        sqlx::PgConnection::connect_with(&options.options([("search_path", quoted.as_str())]))
            .await
            .unwrap();
    migrations_before("postgres", 4)
        .await
        .run(&mut conn)
        .await
        .unwrap();
    for (source, id) in seen_before() {
        sqlx::query("INSERT INTO seen_events (source, id) VALUES ($1, $2)")
            .bind(source)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    identities_survive_migration_4(&schema).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM seen_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows as usize, identities().len(), "each identity once");
    conn.close().await.unwrap();
}

/// A `[cluster]` partition kept, before partitions shared their tables, in a schema
/// of its own (`NAME_pN`): adopting it moves every row into the partition, in one
/// transaction, and drops it; the partition then loads the world it held.
#[tokio::test]
async fn postgres_a_partition_adopts_its_schema_of_before() {
    let Some(url) = postgres().await else { return };
    let rules = example_rules();
    let shared = Schema::new(&url, "adopting");
    // An old schema as migration 4 left it, with rows written then.
    let old4 = Schema::new(&url, "adopted_4");
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).unwrap();
    let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA \"{}\"", old4.name))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let quoted = format!("\"{}\"", old4.name);
    let mut conn =
        sqlx::PgConnection::connect_with(&options.options([("search_path", quoted.as_str())]))
            .await
            .unwrap();
    migrations_before("postgres", 5)
        .await
        .run(&mut conn)
        .await
        .unwrap();
    for (source, id) in seen_before() {
        sqlx::query("INSERT INTO seen_events (source, id) VALUES ($1, $2)")
            .bind(source)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO meta (name, value) VALUES ('next_timer', '7')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let p1 = shared.open().await.partition(1);
    assert!(p1.adopt_schema(&url, &old4.name).await.unwrap());
    let world = p1.load(&rules).await.unwrap();
    assert_eq!(world.seen.len(), SEEN_BEFORE);
    assert_eq!(world.next_timer, 7);

    // An old schema holding a whole world: its instances, timers, chain, outbox and
    // dead letters.
    let old = Schema::new(&url, "adopted");
    let before = old.open().await;
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    let events = example_events();
    let upto = open_upto();
    for e in events.iter().take(upto) {
        driver.feed(e, &mut out);
    }
    commit(&before, &mut driver).await;
    before
        .dead_letter(&DeadLetter {
            received_at: time("2026-03-01T10:00:00.123456789Z"),
            origin: "queue events.p2".to_string(),
            reason: "not JSON".to_string(),
            body: "{".to_string(),
        })
        .await
        .unwrap();
    let (world, evidence, outbox, letters) = (
        before.load(&rules).await.unwrap(),
        before.evidence(0).await.unwrap(),
        before.outbox().await.unwrap(),
        before.dead_letters().await.unwrap(),
    );
    assert!(!world.instances.is_empty() && !world.timers.is_empty());
    assert!(!evidence.is_empty() && !outbox.is_empty());
    drop(before);
    let p2 = shared.open().await.partition(2);
    assert!(p2.adopt_schema(&url, &old.name).await.unwrap());
    assert_same_world(&p2.load(&rules).await.unwrap(), &world);
    assert_eq!(p2.evidence(0).await.unwrap(), evidence);
    verify_chain(&p2.evidence(0).await.unwrap()).unwrap();
    assert_eq!(p2.outbox().await.unwrap(), outbox);
    assert_eq!(p2.dead_letters().await.unwrap(), letters);
    // Partition 1 kept its own rows; the old schemas are gone, so adopting again
    // finds nothing.
    assert_eq!(p1.load(&rules).await.unwrap().seen.len(), SEEN_BEFORE);
    assert!(p1.dead_letters().await.unwrap().is_empty());
    assert!(!p2.adopt_schema(&url, &old.name).await.unwrap());
    assert!(!p1.adopt_schema(&url, &old4.name).await.unwrap());
    // The partition goes on from what it adopted.
    for e in events.iter().skip(upto) {
        driver.feed(e, &mut out);
    }
    commit(&p2, &mut driver).await;
    assert_same_world(&p2.load(&rules).await.unwrap(), driver.engine.world());
    verify_chain(&p2.evidence(0).await.unwrap()).unwrap();
}

#[tokio::test]
async fn postgres_large_commit() {
    let Some(url) = postgres().await else { return };
    large_commit(Schema::new(&url, "large"), "postgres").await;
}

#[tokio::test]
async fn postgres_schemas_are_dropped() {
    let Some(url) = postgres().await else { return };
    let schema = Schema::new(&url, "dropped");
    let name = schema.name.clone();
    schema
        .open()
        .await
        .commit(&example_rules(), &Changes::default(), &Meta::default())
        .await
        .unwrap();
    drop(schema);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(&name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(left, 0, "schema {name} was not dropped");
}

/// A fenced store commits while the owning session holds its lock, waits while a next
/// owner holds the barrier, and refuses (with nothing written) once the owning session
/// is gone.
#[tokio::test]
async fn postgres_fenced_commits_stop_when_the_lock_is_lost() {
    use steward_engine::store::StoreError;
    use steward_engine::store::postgres::Fence;
    let Some(url) = postgres().await else { return };
    let schema = Schema::new(&url, "fence");
    let rules = example_rules();
    let mut owner = sqlx::PgConnection::connect(&url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    // A namespace of this test's own, so parallel runs never share the lock.
    let namespace = (std::process::id() as i32 & 0x0fff_ffff) | 0x1000_0000;
    let fence = Fence {
        namespace,
        held: 7,
        barrier: namespace ^ 0x0400_0000,
        key: 7,
    };
    let store = schema.open().await.fenced(fence);
    let seen = |id: &str| {
        let mut changes = Changes::default();
        changes.seen.push(EventIdentity {
            source: Arc::from("test"),
            id: Arc::from(id),
        });
        changes
    };
    // Not holding the lock yet: refused.
    let refused = store.commit(&rules, &seen("e0"), &Meta::default()).await;
    assert!(matches!(refused, Err(StoreError::Fenced)), "{refused:?}");
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(namespace)
        .bind(7)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert!(locked);
    store
        .commit(&rules, &seen("e1"), &Meta::default())
        .await
        .unwrap();
    // A next owner holding the barrier: the commit waits for it (it may not write
    // while a new owner loads), then goes through, the owner's lock still held.
    let mut next = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(namespace ^ 0x0400_0000)
        .bind(7)
        .execute(&mut next)
        .await
        .unwrap();
    let (waiting, meta) = (seen("e1b"), Meta::default());
    let commit = store.commit(&rules, &waiting, &meta);
    tokio::pin!(commit);
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut commit).await;
    assert!(early.is_err(), "committed past the barrier: {early:?}");
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(namespace ^ 0x0400_0000)
        .bind(7)
        .execute(&mut next)
        .await
        .unwrap();
    commit.await.unwrap();
    // The owning session ends: its lock goes with it, and so does the right to commit.
    // (Closing only asks the server to end the session; its backend releases the lock
    // as it exits, a moment later.)
    owner.close().await.unwrap();
    let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
        if alive == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session {pid} never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = store.commit(&rules, &seen("e2"), &Meta::default()).await;
    assert!(matches!(refused, Err(StoreError::Fenced)), "{refused:?}");
    let world = store.load(&rules).await.unwrap();
    let mut ids: Vec<String> = world.seen.iter().map(|e| e.id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["e1", "e1b"]);
}
