//! Store behaviour, written once for any `Store`: stopping anywhere and resuming from
//! the store gives the same decisions as never stopping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use steward_dsl::Source;
use steward_engine::core::Engine;
use steward_engine::decision::{Decision, verify_chain};
use steward_engine::event::Event;
use steward_engine::replay::{Driver, decode_line};
use steward_engine::ruleset::Ruleset;
use steward_engine::store::sqlite::SqliteStore;
use steward_engine::store::{Meta, Store};

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

/// Applies the first `cut` events, commits, reopens from the store, and finishes.
async fn stop_and_resume<S: Store, F, Fut>(
    open: F,
    rules: &Arc<Ruleset>,
    events: &[Event],
    cut: usize,
) -> Vec<String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut out = Vec::new();
    {
        let store = open().await;
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
    let store = open().await;
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

#[tokio::test]
async fn sqlite_resume_anywhere_matches_uninterrupted_run() {
    let rules = example_rules();
    let events = example_events();
    let expected = uninterrupted(&rules, &events);
    assert!(expected.len() > 40, "the example should decide a lot");
    for cut in [1, 2, 5, 9, 13, 15, 18, 22, events.len()] {
        let db = TempDb::new(&format!("resume-{cut}"));
        let path = db.0.clone();
        let open = || async { SqliteStore::open(&path).await.unwrap() };
        let got = stop_and_resume(open, &rules, &events, cut).await;
        assert_eq!(
            got, expected,
            "stopping after {cut} events changed the decisions"
        );
    }
}

#[tokio::test]
async fn sqlite_keeps_dead_letters_and_outbox() {
    let db = TempDb::new("outbox");
    let rules = example_rules();
    let store = SqliteStore::open(&db.0).await.unwrap();
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    for e in example_events() {
        driver.feed(&e, &mut out);
    }
    commit(&store, &mut driver).await;
    let outbox = store.outbox().await.unwrap();
    let actions = out.iter().filter(|d| d.action_id.is_some()).count();
    assert_eq!(outbox.len(), actions);
    assert!(outbox.iter().all(|o| o.status == "pending"));
    let letter = steward_engine::store::DeadLetter {
        received_at: until(),
        origin: "test:1".into(),
        reason: "not JSON".into(),
        body: "{oops".into(),
    };
    store.dead_letter(&letter).await.unwrap();
    assert_eq!(store.dead_letters().await.unwrap(), vec![letter]);
}
