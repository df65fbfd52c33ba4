//! The outbox dispatcher against a real SQLite store and a scripted invoker: argument
//! mapping, idempotency keys and attempt numbers, backoff, `Retry-After`, dead letters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value as Json, json};
use steward_engine::core::{Changes, OutboxEntry};
use steward_engine::dispatch::{Call, CallError, DispatchConfig, Dispatcher, Finished, Invoker};
use steward_engine::ruleset::Ruleset;
use steward_engine::store::sqlite::SqliteStore;
use steward_engine::store::{Meta, SettledAs, Store};
use tokio::sync::{mpsc, watch};

/// What the invoker saw: (op, idempotency key, attempt, args, when).
type Seen = Arc<Mutex<Vec<(String, String, u32, Json, Instant)>>>;

struct Scripted {
    seen: Seen,
}

impl Invoker for Scripted {
    fn has(&self, connector: &str) -> bool {
        connector == "vendor"
    }

    fn operations(&self, _: &str) -> Result<Vec<(String, Json)>, CallError> {
        let schema = json!({"type": "object", "properties": {
            "issue": {"type": "string"}, "body": {"type": "string"}}});
        Ok(["ok", "flaky", "down", "refused"]
            .iter()
            .map(|op| (op.to_string(), schema.clone()))
            .collect())
    }

    fn invoke(&self, call: &Call<'_>) -> Result<String, CallError> {
        let args: Json = serde_json::from_str(call.args).unwrap();
        assert!(call.deadline_ms > Utc::now().timestamp_millis() as u64);
        self.seen.lock().unwrap().push((
            call.op.to_string(),
            call.idempotency_key.to_string(),
            call.attempt,
            args.clone(),
            Instant::now(),
        ));
        let retry = |after: Option<u64>, message: &str| CallError {
            retryable: true,
            retry_after_ms: after,
            message: message.into(),
        };
        match (call.op, call.attempt) {
            ("ok", _) => Ok(json!({"id": "10001", "echo": args}).to_string()),
            ("flaky", 1) => Err(retry(Some(400), "HTTP 429: slow down")),
            ("flaky", _) => Ok(json!({"status": 200}).to_string()),
            ("down", _) => Err(retry(None, "HTTP 503")),
            _ => Err(CallError {
                retryable: false,
                retry_after_ms: None,
                message: "HTTP 400: invalid_payload".into(),
            }),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_retries_and_dead_letters() {
    let path = std::env::temp_dir().join(format!("steward-dispatch-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let rules = Ruleset::compile(&[], &[]).unwrap();
    let mut changes = Changes::default();
    let at = Utc::now();
    for (id, connector, op, args) in [
        ("w/K/1/0", "vendor", "ok", json!(["CHG-1", "text"])),
        ("w/K/1/1", "vendor", "flaky", json!({"issue": "CHG-1"})),
        ("w/K/1/2", "vendor", "down", json!({})),
        ("w/K/1/3", "vendor", "refused", json!({})),
        ("w/K/1/4", "ghost", "boo", json!({})),
    ] {
        changes.outbox.push(OutboxEntry {
            action_id: id.into(),
            at,
            connector: connector.into(),
            op: op.into(),
            args,
        });
    }
    store
        .commit(&rules, &changes, &Meta::default())
        .await
        .unwrap();

    let seen: Seen = Arc::default();
    let config = DispatchConfig {
        max_attempts: 3,
        base_ms: 100,
        max_ms: 200,
        poll_ms: 10,
        ..DispatchConfig::default()
    };
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop) = watch::channel(false);
    let invoker = Arc::new(Scripted { seen: seen.clone() });
    let dispatcher = Dispatcher::new(store.clone(), invoker, config, 1_000, tx);
    let task = tokio::spawn(dispatcher.run(stop));

    let mut finished: HashMap<String, Finished> = HashMap::new();
    let began = Instant::now();
    while finished.len() < 5 {
        let f = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("all actions finish within 10 s")
            .unwrap();
        // The engine loop's part: commit the end of the row.
        store
            .commit_settled(
                &rules,
                &Changes::default(),
                &Meta::default(),
                std::slice::from_ref(&f.settlement),
            )
            .await
            .unwrap();
        finished.insert(f.outcome.op.clone(), f);
    }
    eprintln!("five actions finished in {:?}", began.elapsed());
    stop_tx.send(true).unwrap();
    task.await.unwrap();

    let ok = &finished["ok"].outcome;
    assert_eq!(ok.attempts, 1);
    assert_eq!(
        ok.result,
        Ok(json!({"id": "10001", "echo": {"issue": "CHG-1", "body": "text"}}))
    );
    assert_eq!(finished["flaky"].outcome.attempts, 2);
    let down = &finished["down"].outcome;
    assert_eq!(down.attempts, 3);
    assert_eq!(
        down.result,
        Err("gave up after 3 attempts: HTTP 503".to_string())
    );
    assert_eq!(
        finished["refused"].outcome.result,
        Err("HTTP 400: invalid_payload".to_string())
    );
    let ghost = &finished["boo"];
    assert_eq!(ghost.outcome.attempts, 1);
    assert_eq!(
        ghost.outcome.result,
        Err("no connector `ghost` is configured (add a [connectors.ghost] table)".to_string())
    );

    let seen = seen.lock().unwrap().clone();
    let calls = |op: &str| -> Vec<(String, u32, Instant)> {
        seen.iter()
            .filter(|s| s.0 == op)
            .map(|s| (s.1.clone(), s.2, s.4))
            .collect()
    };
    // One call per attempt, each with the action id as idempotency key.
    assert_eq!(calls("ok").len(), 1);
    assert_eq!(calls("refused").len(), 1);
    let flaky = calls("flaky");
    assert_eq!(
        flaky
            .iter()
            .map(|c| (c.0.as_str(), c.1))
            .collect::<Vec<_>>(),
        [("w/K/1/1", 1), ("w/K/1/1", 2)]
    );
    let waited = flaky[1].2 - flaky[0].2;
    eprintln!("Retry-After 400 ms: second call after {waited:?}");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    let down = calls("down");
    assert_eq!(down.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2, 3]);
    let gaps: Vec<Duration> = down.windows(2).map(|w| w[1].2 - w[0].2).collect();
    eprintln!("backoff gaps (base 100 ms, max 200 ms): {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(50) && gaps[1] >= Duration::from_millis(100));

    let rows = store.outbox().await.unwrap();
    let status: HashMap<&str, (&str, i64)> = rows
        .iter()
        .map(|r| (r.op.as_str(), (r.status.as_str(), r.attempts)))
        .collect();
    assert_eq!(status["ok"], ("done", 1));
    assert_eq!(status["flaky"], ("done", 2));
    assert_eq!(status["down"], ("dead", 3));
    assert_eq!(status["boo"], ("dead", 1));
    assert!(
        matches!(&finished["ok"].settlement.end, SettledAs::Done { result } if result.contains("10001"))
    );
    assert_eq!(store.outbox_backlog().await.unwrap().open, 0);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
