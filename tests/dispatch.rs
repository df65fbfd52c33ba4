//! `steward run` executing actions end to end: the built binary, the committed webhook
//! connector (connectors/dist/webhook.wasm) and a real HTTP server on loopback playing
//! the vendor. A call succeeds and its result becomes evidence and drives the workflow;
//! a 429 with `Retry-After` is honoured (timed from the server's receive log); a vendor
//! answering 500 is retried, then the action is dead-lettered with the reason and
//! `on action failed` fires; an unconfigured connector is dead-lettered once; and an
//! engine killed mid-call (SIGKILL) makes the same call again after a restart, with the
//! same idempotency key, so the vendor completes it once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use common::*;
use serde_json::Value;
use steward_engine::decision::verify_chain;

/// One request the vendor received.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    method: String,
    path: String,
    key: String,
    attempt: String,
    body: String,
}

/// A loopback vendor: `/ok` answers 200; `/limited` answers its first request 429 with
/// `Retry-After: 1`, then 200; `/down` always 500; `/hold` keeps its first request
/// unanswered (up to 30 s) and answers later ones 200. It de-duplicates by
/// `Idempotency-Key`: `done` holds the keys it completed.
#[derive(Clone, Default)]
struct Vendor {
    hits: Arc<Mutex<Vec<Hit>>>,
    done: Arc<Mutex<Vec<String>>>,
}

impl Vendor {
    /// Serves on a free loopback port from a thread of its own; returns the base URL.
    fn start(&self) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let vendor = self.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .fallback(axum::routing::any(handle))
                    .with_state(vendor);
                axum::serve(listener, app).await.unwrap();
            });
        });
        format!("http://{addr}")
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }
}

async fn handle(
    axum::extract::State(vendor): axum::extract::State<Vendor>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let hit = Hit {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        key: header("idempotency-key"),
        attempt: header("x-steward-attempt"),
        body,
    };
    let before = vendor.hits(&hit.path).len();
    vendor.hits.lock().unwrap().push(hit.clone());
    let complete = |vendor: &Vendor| {
        let mut done = vendor.done.lock().unwrap();
        if !done.contains(&hit.key) {
            done.push(hit.key.clone());
        }
        (StatusCode::OK, "{}").into_response()
    };
    match hit.path.as_str() {
        "/ok" => complete(&vendor),
        "/limited" if before == 0 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        "/limited" => complete(&vendor),
        "/hold" if before == 0 => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            complete(&vendor)
        }
        "/hold" => complete(&vendor),
        // Jira Cloud, PagerDuty Events v2 and a Slack incoming webhook, enough for the
        // ISO 20000 example.
        "/rest/api/3/issue" => (
            StatusCode::CREATED,
            r#"{"id":"10100","key":"SMS-1","self":"http://jira/rest/api/3/issue/10100"}"#,
        )
            .into_response(),
        p if p.starts_with("/rest/api/3/issue/") && p.ends_with("/transitions") => {
            if method == axum::http::Method::GET {
                let statuses = ["Assessing", "In Progress", "Rejected", "Done"];
                let list: Vec<Value> = statuses
                    .iter()
                    .enumerate()
                    .map(|(i, s)| serde_json::json!({"id": format!("{}", 11 + 10 * i), "name": s, "to": {"name": s}}))
                    .collect();
                (
                    StatusCode::OK,
                    serde_json::json!({"transitions": list}).to_string(),
                )
                    .into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        p if p.starts_with("/rest/api/3/issue/") && p.ends_with("/comment") => {
            (StatusCode::CREATED, r#"{"id":"10001"}"#).into_response()
        }
        "/v2/enqueue" => (
            StatusCode::ACCEPTED,
            r#"{"status":"success","message":"Event processed","dedup_key":"k"}"#,
        )
            .into_response(),
        "/slack/hook" => (StatusCode::OK, "ok").into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "down for maintenance").into_response(),
    }
}

const RULES: &str = r#"
use connector hook_ok
use connector hook_limited
use connector hook_down
use connector ghost

workflow notify key event.subject {
  control "8.5.1" "Changes are announced to the service desk" detective
  start on "change.created"

  state sending {
    enter { hook_ok.send(payload: {"change": key, "step": "created"}) }
    on action succeeded hook_ok.send when result.status == 200 -> limited
  }
  state limited {
    enter { hook_limited.send({"change": key}) }
    on action succeeded hook_limited -> down
  }
  state down {
    enter { hook_down.send(payload: {"change": key}) }
    on action failed hook_down -> failed {
      violation "webhook down for ${key} after ${result.attempts} attempts: ${result.reason}"
    }
  }
  final state failed
}

rule poke {
  on "change.created" do { ghost.poke(n: 1) }
}
"#;

const HOLD_RULES: &str = r#"
use connector hook_hold
workflow notify key event.subject {
  start on "change.created"
  state sending {
    enter { hook_hold.send(payload: {"change": key}) }
    on action succeeded -> sent
  }
  final state sent
}
"#;

fn component() -> PathBuf {
    let path = root().join("connectors/dist/webhook.wasm");
    assert!(
        path.is_file(),
        "{} is missing: build it with connectors/build",
        path.display()
    );
    path
}

/// A rules file, one event and a configuration using `hooks` (connector name, vendor
/// path) of the vendor at `base`, with the state in SQLite in `dir`.
fn setup(dir: &Path, rules: &str, base: &str, hooks: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let db = dir.join("steward.db").display().to_string();
    setup_at(dir, &db, rules, base, hooks)
}

/// As [`setup`], with the state at `store` (a file or a `postgres://` URL).
fn setup_at(
    dir: &Path,
    store: &str,
    rules: &str,
    base: &str,
    hooks: &[(&str, &str)],
) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("rules.stw"), rules).unwrap();
    std::fs::write(
        dir.join("events.jsonl"),
        r#"{"specversion":"1.0","id":"e1","source":"/test","type":"change.created","time":"2026-03-02T09:00:00Z","subject":"CHG-1"}"#
            .to_string()
            + "\n",
    )
    .unwrap();
    let mut config = format!(
        "[store]\npath = {:?}\n\n[dispatch]\nmax_attempts = 3\nbase_ms = 100\nmax_ms = 300\npoll_ms = 20\nlease_ms = 1000\ncache_dir = {:?}\n",
        store,
        dir.join("cache").display().to_string()
    );
    for (name, path) in hooks {
        config.push_str(&format!(
            "\n[connectors.{name}]\ncomponent = {:?}\nallow_hosts = [\"127.0.0.1\"]\ntimeout_ms = 1000\nsettings = {{ url = \"{base}{path}\" }}\n",
            component().display().to_string()
        ));
    }
    let config_path = dir.join("steward.toml");
    std::fs::write(&config_path, config).unwrap();
    (config_path, dir.join("events.jsonl"))
}

fn run_engine(dir: &Path, config: &Path, events: &Path) -> std::process::Child {
    run_engine_with(dir, config, events, &[])
}

fn run_engine_with(
    dir: &Path,
    config: &Path,
    events: &Path,
    env: &[(&str, &str)],
) -> std::process::Child {
    steward()
        .envs(env.iter().copied())
        .arg("run")
        .arg(dir.join("rules.stw"))
        .arg("--config")
        .arg(config)
        .arg("--events")
        .arg(events)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn of_kind<'a>(decisions: &'a [Value], kind: &str, connector: &str) -> Vec<&'a Value> {
    decisions
        .iter()
        .filter(|d| d["kind"] == kind && d["connector"] == connector)
        .collect()
}

/// The evidence and the outbox at `location`, read through the engine's store.
fn stored(
    location: &str,
) -> (
    Vec<steward_engine::decision::EvidenceRecord>,
    Vec<steward_engine::store::OutboxRow>,
) {
    use steward_engine::store::{AnyStore, Store};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = AnyStore::open(Path::new(location)).await.unwrap();
        (
            store.evidence(0).await.unwrap(),
            store.outbox().await.unwrap(),
        )
    })
}

/// A schema of its own in the test database, dropped afterwards (also on failure).
struct PgSchema {
    url: String,
    name: String,
}

impl PgSchema {
    /// `None` (with a visible skip) when PostgreSQL is unreachable, unless
    /// `STEWARD_REQUIRE_SERVICES=1`.
    fn create() -> Option<PgSchema> {
        use steward_engine::store::postgres::PostgresStore;
        let url = std::env::var("STEWARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let name = format!("steward_dispatch_{}", std::process::id());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let made = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                PostgresStore::connect_schema(&url, &name),
            )
            .await
        });
        match made {
            Ok(Ok(_)) => Some(PgSchema { url, name }),
            failed => {
                let err = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out after 10s".to_string(),
                };
                if std::env::var("STEWARD_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                    panic!("PostgreSQL unreachable at {url}: {err} (STEWARD_REQUIRE_SERVICES=1)");
                }
                eprintln!("SKIPPED: PostgreSQL unreachable at {url}: {err}");
                None
            }
        }
    }

    /// The store location `steward run` is given: the schema as the search path.
    fn location(&self) -> String {
        format!("{}?options[search_path]={}", self.url, self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(steward_engine::store::postgres::PostgresStore::drop_schema(
                &url, &name,
            ))
        })
        .join();
    }
}

#[test]
fn actions_execute_retry_dead_letter_and_drive_the_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("steward.db").display().to_string();
    scenario(dir.path(), &db);
}

/// The same on PostgreSQL: rows claimed with `FOR UPDATE SKIP LOCKED`.
#[test]
fn actions_execute_on_postgres_too() {
    let Some(schema) = PgSchema::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    scenario(dir.path(), &schema.location());
}

fn scenario(dir: &Path, store: &str) {
    let vendor = Vendor::default();
    let base = vendor.start();
    let (config, events) = setup_at(
        dir,
        store,
        RULES,
        &base,
        &[
            ("hook_ok", "/ok"),
            ("hook_limited", "/limited"),
            ("hook_down", "/down"),
        ],
    );
    let began = Instant::now();
    let o = finish(run_engine(dir, &config, &events), Duration::from_secs(60));
    let out = ok(&o);
    let err = stderr(&o);
    eprintln!(
        "steward run finished in {:?}\n--- stderr\n{err}",
        began.elapsed()
    );
    let decisions = json_lines(&out);

    // The first call succeeded: evidence with the result, and the transition it drove.
    let ok_action = of_kind(&decisions, "action", "hook_ok")[0];
    let succeeded = of_kind(&decisions, "action_succeeded", "hook_ok");
    assert_eq!(succeeded.len(), 1, "{out}");
    assert_eq!(succeeded[0]["action_id"], ok_action["action_id"]);
    assert_eq!(succeeded[0]["result"], serde_json::json!({"status": 200}));
    assert_eq!(succeeded[0]["attempts"], 1);
    assert_eq!(
        (&succeeded[0]["workflow"], &succeeded[0]["key"]),
        (&Value::from("notify"), &Value::from("CHG-1"))
    );
    let key = ok_action["action_id"].as_str().unwrap();
    let ok_hits = vendor.hits("/ok");
    assert_eq!(ok_hits.len(), 1);
    assert_eq!(
        (ok_hits[0].key.as_str(), ok_hits[0].attempt.as_str()),
        (key, "1")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&ok_hits[0].body).unwrap(),
        serde_json::json!({"change": "CHG-1", "step": "created"})
    );

    // 429 with Retry-After: 1 — the second call came no sooner than a second later,
    // with the same idempotency key; the positional argument became `payload`.
    let limited = vendor.hits("/limited");
    assert_eq!(limited.len(), 2, "{err}");
    let gap = limited[1].at - limited[0].at;
    eprintln!("Retry-After: 1 honoured: second call {gap:?} after the 429");
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert_eq!(limited[0].key, limited[1].key);
    assert_eq!(
        (limited[0].attempt.as_str(), limited[1].attempt.as_str()),
        ("1", "2")
    );
    assert_eq!(limited[0].body, r#"{"change":"CHG-1"}"#);
    let limited_ok = of_kind(&decisions, "action_succeeded", "hook_limited");
    assert_eq!(limited_ok[0]["attempts"], 2);

    // A vendor down: three calls (max_attempts), backing off, then dead-lettered with
    // the reason, and `on action failed` moved the instance to `failed`.
    let down = vendor.hits("/down");
    assert_eq!(
        down.iter().map(|h| h.attempt.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    let gaps: Vec<Duration> = down.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("500s: backoff between calls {gaps:?} (base 100 ms, max 300 ms)");
    assert!(gaps[0] >= Duration::from_millis(50) && gaps[1] >= Duration::from_millis(100));
    let failed = of_kind(&decisions, "action_failed", "hook_down");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempts"], 3);
    let reason = failed[0]["message"].as_str().unwrap();
    assert!(
        reason.starts_with("gave up after 3 attempts:") && reason.contains("500"),
        "{reason}"
    );
    let violation = decisions.iter().find(|d| d["kind"] == "violation").unwrap();
    assert_eq!(
        violation["message"].as_str().unwrap(),
        format!("webhook down for CHG-1 after 3 attempts: {reason}")
    );
    let states: Vec<&str> = decisions
        .iter()
        .filter(|d| d["kind"] == "transition")
        .map(|d| d["to"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["sending", "limited", "down", "failed"]);

    // An unconfigured connector is dead-lettered once, with a clear reason.
    let ghost = of_kind(&decisions, "action_failed", "ghost");
    assert_eq!(ghost.len(), 1);
    assert_eq!(ghost[0]["attempts"], 1);
    assert_eq!(
        ghost[0]["message"],
        "no connector `ghost` is configured (add a [connectors.ghost] table)"
    );

    // The store: every printed decision is evidence, chained; the outbox is settled.
    let (evidence, outbox) = stored(store);
    assert_eq!(verify_chain(&evidence), Ok(decisions.len() as u64));
    let rows: BTreeSet<(String, String, i64)> = outbox
        .iter()
        .map(|r| (r.connector.clone(), r.status.clone(), r.attempts))
        .collect();
    assert_eq!(
        rows,
        BTreeSet::from([
            ("ghost".into(), "dead".into(), 1),
            ("hook_down".into(), "dead".into(), 3),
            ("hook_limited".into(), "done".into(), 2),
            ("hook_ok".into(), "done".into(), 1),
        ])
    );
    assert_eq!(summary_count(&err, "executed"), Some(2));
    assert_eq!(summary_count(&err, "dead-lettered"), Some(2));
}

#[test]
fn a_call_interrupted_by_sigkill_is_made_again_with_the_same_key_and_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = Vendor::default();
    let base = vendor.start();
    let (config, events) = setup(dir.path(), HOLD_RULES, &base, &[("hook_hold", "/hold")]);

    // The vendor holds the first call; the engine is killed while it waits.
    let child = run_engine(dir.path(), &config, &events);
    let began = Instant::now();
    while vendor.hits("/hold").is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the call never reached the vendor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = child;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let snap = snapshot(&dir.path().join("steward.db"), dir.path());
    assert_eq!(snap.outbox.len(), 1);
    assert_eq!(
        (snap.outbox[0].status.as_str(), snap.outbox[0].attempts),
        ("in_flight", 1)
    );

    // Restarted on the same store (the event is a duplicate now): once the dead
    // engine's lease expires, the call is made again and completes.
    let restarted = Instant::now();
    let o = finish(
        run_engine(dir.path(), &config, &events),
        Duration::from_secs(60),
    );
    let out = ok(&o);
    eprintln!(
        "restart settled the action in {:?}\n--- stderr\n{}",
        restarted.elapsed(),
        stderr(&o)
    );
    let decisions = json_lines(&out);
    let hits = vendor.hits("/hold");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].key, hits[1].key, "the same idempotency key");
    assert_eq!(
        (hits[0].attempt.as_str(), hits[1].attempt.as_str()),
        ("1", "2")
    );
    assert_eq!(*vendor.done.lock().unwrap(), [hits[0].key.clone()]);
    let succeeded: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["kind"] == "action_succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "{out}");
    assert_eq!(
        succeeded[0]["action_id"].as_str(),
        Some(hits[0].key.as_str())
    );
    assert_eq!(succeeded[0]["attempts"], 2);
    let snap = snapshot(&dir.path().join("steward.db"), dir.path());
    assert_eq!(
        (snap.outbox[0].status.as_str(), snap.outbox[0].attempts),
        ("done", 2)
    );
    let outcomes = snap
        .evidence
        .iter()
        .filter(|r| r.kind == "action_succeeded")
        .count();
    assert_eq!(outcomes, 1, "the outcome is evidence once");
    assert_eq!(verify_chain(&snap.evidence), Ok(snap.evidence.len() as u64));
}

#[test]
fn dispatch_settings_come_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = Vendor::default();
    let base = vendor.start();
    let (config, events) = setup(dir.path(), HOLD_RULES, &base, &[("hook_hold", "/down")]);
    let o = finish(
        run_engine_with(
            dir.path(),
            &config,
            &events,
            &[("STEWARD_DISPATCH__MAX_ATTEMPTS", "2")],
        ),
        Duration::from_secs(60),
    );
    let out = ok(&o);
    assert_eq!(vendor.hits("/down").len(), 2, "{}", stderr(&o));
    let failed: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|d| d["kind"] == "action_failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempts"], 2);
}

#[test]
fn ctrl_c_waits_for_calls_in_flight_only_up_to_shutdown_ms() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = Vendor::default();
    let base = vendor.start();
    let (config, events) = setup(dir.path(), HOLD_RULES, &base, &[("hook_hold", "/hold")]);
    let child = run_engine_with(
        dir.path(),
        &config,
        &events,
        &[("STEWARD_DISPATCH__SHUTDOWN_MS", "500")],
    );
    let began = Instant::now();
    while vendor.hits("/hold").is_empty() {
        assert!(began.elapsed() < Duration::from_secs(30), "no call came");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let interrupted = Instant::now();
    let o = finish(child, Duration::from_secs(20));
    let waited = interrupted.elapsed();
    let err = stderr(&o);
    eprintln!("stopped {waited:?} after Ctrl-C\n--- stderr\n{err}");
    ok(&o);
    // The vendor holds the call for 30 s: the run gave up on it after shutdown_ms.
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(err.contains("still in flight"), "{err}");
    let (_, outbox) = stored(&dir.path().join("steward.db").display().to_string());
    assert_eq!(
        (outbox[0].status.as_str(), outbox[0].attempts),
        ("in_flight", 1),
        "claimed again after its lease, by the next run"
    );
}

/// The HTTP requests one executed action makes on its first attempt.
fn expected_requests(action: &Value) -> Vec<(String, String)> {
    let arg = |name: &str, position: usize| {
        let args = &action["args"];
        args.get(name)
            .or_else(|| args.get(position))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let call = (
        action["connector"].as_str().unwrap(),
        action["op"].as_str().unwrap(),
    );
    let one = |method: &str, path: String| vec![(method.to_string(), path)];
    match call {
        ("jira", "comment") => one(
            "POST",
            format!("/rest/api/3/issue/{}/comment", arg("issue", 0)),
        ),
        ("jira", "transition") => {
            let path = format!("/rest/api/3/issue/{}/transitions", arg("issue", 0));
            vec![("GET".into(), path.clone()), ("POST".into(), path)]
        }
        ("jira", "create_issue") => one("POST", "/rest/api/3/issue".into()),
        ("pagerduty", _) => one("POST", "/v2/enqueue".into()),
        ("slack", "post") => one("POST", "/slack/hook".into()),
        other => panic!("unexpected call {other:?}"),
    }
}

/// The ISO 20000 example run with its connectors executing (Jira, PagerDuty, Slack
/// components from connectors/dist) against a loopback vendor: the vendor receives
/// exactly the requests the decided actions call for, and every action succeeds.
#[test]
fn iso20000_example_makes_exactly_the_expected_requests() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = Vendor::default();
    let base = vendor.start();
    let dist = root().join("connectors/dist");
    let connector = |name: &str, extra: &str| {
        format!(
            "\n[connectors.{name}]\ncomponent = {:?}\nallow_hosts = [\"127.0.0.1\"]\n{extra}\n",
            dist.join(format!("{name}.wasm")).display().to_string()
        )
    };
    let mut config = format!(
        "[store]\npath = {:?}\n\n[dispatch]\nbase_ms = 100\npoll_ms = 20\ncache_dir = {:?}\n",
        dir.path().join("steward.db").display().to_string(),
        dir.path().join("cache").display().to_string()
    );
    config.push_str(&connector(
        "jira",
        &format!(
            "settings = {{ base_url = \"{base}\" }}\nsecrets = {{ email = {{ env = \"TEST_JIRA_EMAIL\" }}, api_token = {{ env = \"TEST_JIRA_TOKEN\" }} }}"
        ),
    ));
    config.push_str(&connector(
        "pagerduty",
        &format!(
            "settings = {{ events_url = \"{base}\" }}\nsecrets = {{ routing_key = {{ env = \"TEST_PD_KEY\" }} }}"
        ),
    ));
    config.push_str(&connector(
        "slack",
        "secrets = { webhook_url = { env = \"TEST_SLACK_URL\" } }",
    ));
    let config_path = dir.path().join("steward.toml");
    std::fs::write(&config_path, config).unwrap();
    let slack_url = format!("{base}/slack/hook");
    let child = steward()
        .envs([
            ("TEST_JIRA_EMAIL", "steward@example.com"),
            ("TEST_JIRA_TOKEN", "t0ken"),
            ("TEST_PD_KEY", "R0UTING"),
            ("TEST_SLACK_URL", slack_url.as_str()),
        ])
        .arg("run")
        .arg(iso())
        .arg("--config")
        .arg(&config_path)
        .arg("--events")
        .arg(iso_events())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = finish(child, Duration::from_secs(120));
    let out = ok(&o);
    let err = stderr(&o);
    let decisions = json_lines(&out);
    let actions: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["kind"] == "action" && d["connector"].is_string())
        .collect();
    assert!(actions.len() >= 5, "{out}");
    let succeeded = decisions
        .iter()
        .filter(|d| d["kind"] == "action_succeeded")
        .count();
    let failed: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["kind"] == "action_failed")
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{err}");
    assert_eq!(succeeded, actions.len(), "{err}");

    let mut expected: Vec<(String, String)> =
        actions.iter().flat_map(|a| expected_requests(a)).collect();
    let mut got: Vec<(String, String)> = vendor
        .hits
        .lock()
        .unwrap()
        .iter()
        .map(|h| (h.method.clone(), h.path.clone()))
        .collect();
    expected.sort();
    got.sort();
    eprintln!(
        "{} actions executed: {} requests, as expected",
        actions.len(),
        got.len()
    );
    assert_eq!(got, expected);
}
