//! `steward run examples/iso20000` end to end with its connectors executing: the built
//! binary runs the committed Jira, Slack and PagerDuty components (connectors/dist/)
//! against the loopback vendor servers of the connector tests
//! (connectors/host/tests/vendors/: Jira validated against Atlassian's OpenAPI spec,
//! Slack's incoming webhook, PagerDuty Events v2). Each vendor receives exactly the
//! requests the run's `action` decisions call for, each action's `action_succeeded`
//! evidence is recorded and nothing is dead-lettered; a Jira answering 429 with
//! `Retry-After: 1` is called again no earlier than a second later, and the action
//! still succeeds, once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

/// The loopback vendors of connectors/host's tests, those this test needs (the
/// directory is theirs; `host_dir` tells them where connectors/host is).
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../connectors/host/tests/vendors"]
mod vendors {
    pub mod jira;
    pub mod openapi;
    pub mod pagerduty;
    pub mod server;
    pub mod slack;

    /// connectors/host, from which the modules find the Jira spec.
    pub fn host_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("connectors/host")
    }
}

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use vendors::jira::{Issue, Jira};
use vendors::pagerduty::PagerDuty;
use vendors::server::{Recorded, Reply, Server, Vendor};
use vendors::slack::Slack;

const EMAIL: &str = "steward@example.com";
const TOKEN: &str = "jira-api-t0ken";
const ROUTING_KEY: &str = "R0UTINGKEY0123456789abcdefghijkl";
const SLACK_PATH: &str = "/services/T0001/B0001/s3cr3tw3bh00k";

/// A vendor that notes when each request arrived (before anything else happens to it).
struct Timed<V> {
    vendor: V,
    arrivals: Vec<Instant>,
}

impl<V: Vendor> Vendor for Timed<V> {
    fn check(&mut self, request: &Recorded) -> Option<Reply> {
        self.arrivals.push(Instant::now());
        self.vendor.check(request)
    }

    fn handle(&mut self, request: &Recorded) -> Reply {
        self.vendor.handle(request)
    }
}

/// A Jira site with the projects and changes the example works on: `CHG-101` …
/// `CHG-103` and `CHG-201` … `CHG-203` in `Submitted` (the change workflow), and the `SMS` project the
/// management review creates its issues in.
fn jira() -> Server<Timed<Jira>> {
    let mut site = Jira::new(EMAIL, TOKEN);
    site.projects.push("SMS".into());
    for n in (101..=103).chain(201..=203) {
        site.issues.push(Issue {
            id: format!("{}", 20000 + n),
            key: format!("CHG-{n}"),
            project: "CHG".into(),
            issuetype: "Change".into(),
            summary: format!("Change CHG-{n}"),
            description: None,
            labels: Vec::new(),
            status: "Submitted".into(),
            properties: serde_json::Map::new(),
            comments: Vec::new(),
        });
    }
    Server::start(Timed {
        vendor: site,
        arrivals: Vec::new(),
    })
}

/// `steward.toml` in `dir`: the state in SQLite there, compiled components in
/// [`cache_dir`], the three connectors pointing at the loopback vendors (secrets from the
/// environment, see [`secrets`]). The dispatcher runs with its default concurrency: the
/// successive transitions of one change still reach Jira in the order they were
/// decided (one action of an instance at a time), or the strict fake workflow refuses.
fn config(dir: &Path, jira: &str, pagerduty: &str) -> std::path::PathBuf {
    let dist = root().join("connectors/dist");
    let mut text = format!(
        "[store]\npath = {:?}\n\n[dispatch]\nbase_ms = 100\npoll_ms = 20\ncache_dir = {:?}\n",
        dir.join("steward.db").display().to_string(),
        cache_dir().display().to_string()
    );
    for (name, extra) in [
        (
            "jira",
            format!(
                "settings = {{ base_url = \"{jira}\" }}\nsecrets = {{ email = {{ env = \"TEST_JIRA_EMAIL\" }}, api_token = {{ env = \"TEST_JIRA_TOKEN\" }} }}"
            ),
        ),
        (
            "pagerduty",
            format!(
                "settings = {{ events_url = \"{pagerduty}\" }}\nsecrets = {{ routing_key = {{ env = \"TEST_PD_ROUTING_KEY\" }} }}"
            ),
        ),
        (
            "slack",
            "secrets = { webhook_url = { env = \"TEST_SLACK_WEBHOOK_URL\" } }".to_string(),
        ),
    ] {
        let component = dist.join(format!("{name}.wasm"));
        assert!(component.is_file(), "{} is missing", component.display());
        text.push_str(&format!(
            "\n[connectors.{name}]\ncomponent = {:?}\nallow_hosts = [\"127.0.0.1\"]\ntimeout_ms = 5000\n{extra}\n",
            component.display().to_string()
        ));
    }
    let path = dir.join("steward.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Compiled components, kept across runs and tests (the cache is safe to share: keyed
/// by the component's hash, written through a rename).
fn cache_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("iso20000-connectors-cache")
}

/// The connectors' secrets, as environment variables of the `steward` process.
fn secrets(slack: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TEST_JIRA_EMAIL", EMAIL.to_string()),
        ("TEST_JIRA_TOKEN", TOKEN.to_string()),
        ("TEST_PD_ROUTING_KEY", ROUTING_KEY.to_string()),
        ("TEST_SLACK_WEBHOOK_URL", format!("{slack}{SLACK_PATH}")),
    ]
}

/// Runs `steward run RULES --events EVENTS --config CONFIG` to its end (the events
/// read and the outbox settled), killing it after `within`.
fn run_to_end(
    rules: &Path,
    events: &Path,
    config: &Path,
    env: &[(&'static str, String)],
    within: Duration,
) -> std::process::Output {
    let child = steward()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("run")
        .arg(rules)
        .arg("--events")
        .arg(events)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, within)
}

/// The outbox at `db`, read through the engine's store.
fn outbox(db: &Path) -> Vec<steward_engine::store::OutboxRow> {
    use steward_engine::store::{AnyStore, Store};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = AnyStore::open(db).await.unwrap();
        store.outbox().await.unwrap()
    })
}

/// Atlassian Document Format for plain text: one paragraph per line.
fn adf(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .lines()
        .map(|line| json!({"type": "paragraph", "content": [{"type": "text", "text": line}]}))
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

/// One request as compared: which vendor, `METHOD /path?query`, the JSON body (or
/// `null`).
type Expected = (&'static str, String, Value);

/// The requests one action makes on a first attempt that succeeds, per the connector
/// contract (/work/briefs/connector-contract.md, docs/connectors.md).
fn expected_requests(action: &Value) -> Vec<Expected> {
    let id = action["action_id"].as_str().unwrap();
    let args = &action["args"];
    let arg = |name: &str, position: usize| -> Value {
        args.get(name)
            .or_else(|| args.get(position))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let text = |name: &str, position: usize| arg(name, position).as_str().unwrap().to_owned();
    let idempotency = json!([{"key": "steward", "value": {"idempotency_key": id}}]);
    let call = (
        action["connector"].as_str().unwrap(),
        action["op"].as_str().unwrap(),
    );
    match call {
        ("jira", "comment") => vec![(
            "jira",
            format!("POST /rest/api/3/issue/{}/comment", text("issue", 0)),
            json!({"body": adf(&text("body", 1)), "properties": idempotency}),
        )],
        ("jira", "transition") => {
            let path = format!("/rest/api/3/issue/{}/transitions", text("issue", 0));
            // The fake's change workflow: 51 Assess → Assessing, 61 Reject → Rejected.
            let transition = match text("status", 1).as_str() {
                "Assessing" => "51",
                "Rejected" => "61",
                other => panic!("no transition to {other} in the fake Jira"),
            };
            vec![
                ("jira", format!("GET {path}"), Value::Null),
                (
                    "jira",
                    format!("POST {path}"),
                    json!({"transition": {"id": transition}}),
                ),
            ]
        }
        ("jira", "create_issue") => {
            let mut fields = json!({
                "project": {"key": text("project", 0)},
                "issuetype": {"name": arg("issuetype", 1).as_str().unwrap_or("Task")},
                "summary": text("summary", 2),
            });
            if let Some(description) = arg("description", 3).as_str() {
                fields["description"] = adf(description);
            }
            if !arg("labels", 4).is_null() {
                fields["labels"] = arg("labels", 4);
            }
            vec![(
                "jira",
                "POST /rest/api/3/issue".into(),
                json!({"fields": fields, "properties": idempotency}),
            )]
        }
        ("pagerduty", "trigger") => vec![(
            "pagerduty",
            "POST /v2/enqueue".into(),
            json!({
                "routing_key": ROUTING_KEY,
                "event_action": "trigger",
                "dedup_key": text("dedup_key", 3),
                "payload": {
                    "summary": text("summary", 0),
                    "source": arg("source", 1).as_str().unwrap_or("steward"),
                    "severity": arg("severity", 2).as_str().unwrap_or("error"),
                },
            }),
        )],
        ("pagerduty", op @ ("acknowledge" | "resolve")) => vec![(
            "pagerduty",
            "POST /v2/enqueue".into(),
            json!({"routing_key": ROUTING_KEY, "event_action": op, "dedup_key": text("dedup_key", 0)}),
        )],
        ("slack", "post") => {
            let mut body = json!({"text": text("text", 0)});
            if !arg("blocks", 1).is_null() {
                body["blocks"] = arg("blocks", 1);
            }
            vec![("slack", format!("POST {SLACK_PATH}"), body)]
        }
        other => panic!("the example calls {other:?}, which this test does not know"),
    }
}

/// What a vendor received, as compared: the vendor's name, the request line, the body.
fn received(vendor: &'static str, requests: &[Recorded]) -> Vec<Expected> {
    requests
        .iter()
        .map(|r| {
            let agent = r.header("user-agent").unwrap_or_default();
            assert!(
                agent.starts_with(&format!("steward-connector-{vendor}/")),
                "{}: User-Agent {agent:?}",
                r.line()
            );
            let body = if r.body.is_empty() {
                Value::Null
            } else {
                r.json()
            };
            (vendor, r.line(), body)
        })
        .collect()
}

/// Sorted by their compact text, to compare as multisets.
fn sorted(mut list: Vec<Expected>) -> Vec<Expected> {
    list.sort_by_key(|(v, line, body)| format!("{v} {line} {body}"));
    list
}

#[test]
fn iso20000_run_makes_exactly_the_requests_its_actions_call_for() {
    let dir = tempfile::tempdir().unwrap();
    let jira = jira();
    let slack = Server::start(Slack::new(SLACK_PATH));
    let pagerduty = Server::start(PagerDuty::default());
    let config = config(dir.path(), &jira.url(), &pagerduty.url());
    let began = Instant::now();
    let o = run_to_end(
        &iso(),
        &iso_events(),
        &config,
        &secrets(&slack.url()),
        Duration::from_secs(180),
    );
    let took = began.elapsed();
    let out = ok(&o);
    let err = stderr(&o);
    let decisions = json_lines(&out);

    // The actions decided, each settled by exactly one success and no failure.
    let actions: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["kind"] == "action" && d["connector"].is_string())
        .collect();
    assert!(actions.len() >= 5, "too few actions: {out}");
    let failed: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["kind"] == "action_failed")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{err}");
    let mut succeeded: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d["kind"] == "action_succeeded") {
        succeeded
            .entry(d["action_id"].as_str().unwrap())
            .or_default()
            .push(d);
    }
    for action in &actions {
        let id = action["action_id"].as_str().unwrap();
        let outcome = succeeded.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(outcome.len(), 1, "{id}: outcomes {outcome:?}\n{err}");
        assert_eq!(outcome[0]["connector"], action["connector"], "{id}");
        assert_eq!(outcome[0]["op"], action["op"], "{id}");
        assert_eq!(outcome[0]["attempts"], 1, "{id}: {:?}", outcome[0]);
    }
    assert_eq!(succeeded.len(), actions.len(), "{succeeded:#?}");

    // The outbox is settled, every row done (none dead).
    let rows = outbox(&dir.path().join("steward.db"));
    assert_eq!(rows.len(), actions.len());
    for row in &rows {
        assert_eq!(row.status, "done", "{row:?}");
    }

    // Each vendor received exactly the requests the actions call for.
    let expected = sorted(actions.iter().flat_map(|a| expected_requests(a)).collect());
    let mut got = received("jira", &jira.requests());
    got.extend(received("slack", &slack.requests()));
    got.extend(received("pagerduty", &pagerduty.requests()));
    let got = sorted(got);
    assert_eq!(got.len(), expected.len(), "{got:#?}\n---\n{expected:#?}");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e);
    }

    // Every Jira request passed the spec and Jira's own rules; the others were accepted.
    let (violations, validated, unauthorized) = jira.with(|t| {
        (
            t.vendor.violations.clone(),
            t.vendor.validated,
            t.vendor.unauthorized,
        )
    });
    assert_eq!(violations, Vec::<String>::new());
    assert_eq!(validated, jira.requests().len());
    assert_eq!(unauthorized, 0);
    assert_eq!(slack.with(|s| s.violations.clone()), Vec::<String>::new());
    assert_eq!(
        pagerduty.with(|p| p.violations.clone()),
        Vec::<String>::new()
    );

    // And the vendors' state shows it: the changes' comments and statuses, the
    // management reviews created, the incidents' alerts opened and resolved, the
    // messages posted.
    let count = |connector: &str, op: &str| {
        actions
            .iter()
            .filter(|a| a["connector"] == connector && a["op"] == op)
            .count()
    };
    jira.with(|t| {
        let site = &t.vendor;
        let comments: usize = site.issues.iter().map(|i| i.comments.len()).sum();
        assert_eq!(comments, count("jira", "comment"));
        let created = site.issues.iter().filter(|i| i.project == "SMS").count();
        assert_eq!(created, count("jira", "create_issue"));
        for a in actions
            .iter()
            .filter(|a| a["connector"] == "jira" && a["op"] == "transition")
        {
            let key = a["args"][0].as_str().unwrap();
            let last = actions
                .iter()
                .rfind(|b| b["op"] == "transition" && b["args"][0] == key)
                .unwrap();
            assert_eq!(site.issue(key).unwrap().status, last["args"][1], "{key}");
        }
    });
    assert_eq!(slack.with(|s| s.messages.len()), count("slack", "post"));
    pagerduty.with(|p| {
        assert_eq!(p.opened, count("pagerduty", "trigger"));
        for alert in p.alerts.values() {
            assert_eq!(alert.status, "resolved", "{alert:?}");
        }
    });

    let per_vendor = (
        jira.requests().len(),
        slack.requests().len(),
        pagerduty.requests().len(),
    );
    eprintln!(
        "{} actions executed in {took:.1?}: {} requests (Jira {}, Slack {}, PagerDuty {}), as expected",
        actions.len(),
        got.len(),
        per_vendor.0,
        per_vendor.1,
        per_vendor.2
    );
}

const ONE_COMMENT: &str = r#"
use connector jira

rule acknowledge {
  on "change.created" do { jira.comment(event.subject, "Change recorded") }
}
"#;

#[test]
fn a_jira_429_with_retry_after_is_retried_no_earlier_and_the_comment_is_made_once() {
    let dir = tempfile::tempdir().unwrap();
    let jira = jira();
    jira.fail_next(
        1,
        Reply::json(429, &json!({"errorMessages": ["Rate limit exceeded."]}))
            .with_header("retry-after", "1"),
    );
    let slack = Server::start(Slack::new(SLACK_PATH));
    let config = config(dir.path(), &jira.url(), "http://127.0.0.1:9");
    let rules = dir.path().join("rules.stw");
    std::fs::write(&rules, ONE_COMMENT).unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        r#"{"specversion":"1.0","id":"e1","source":"/test","type":"change.created","time":"2026-03-02T09:00:00Z","subject":"CHG-101"}"#
            .to_string()
            + "\n",
    )
    .unwrap();
    let o = run_to_end(
        &rules,
        &events,
        &config,
        &secrets(&slack.url()),
        Duration::from_secs(60),
    );
    let out = ok(&o);
    let err = stderr(&o);
    let decisions = json_lines(&out);
    let actions: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["kind"] == "action" && d["connector"].is_string())
        .collect();
    assert_eq!(actions.len(), 1, "{out}");
    let id = actions[0]["action_id"].as_str().unwrap();
    let outcomes: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["kind"] == "action_succeeded" || d["kind"] == "action_failed")
        .collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}\n{err}");
    assert_eq!(outcomes[0]["kind"], "action_succeeded", "{err}");
    assert_eq!(outcomes[0]["action_id"], id);
    assert_eq!(outcomes[0]["attempts"], 2);
    assert!(err.contains("attempt 1 of"), "the retry is reported: {err}");

    // The first call was refused; the second attempt looks for a comment with its key
    // (none), then makes it: once.
    let path = "/rest/api/3/issue/CHG-101/comment";
    let lines: Vec<String> = jira.requests().iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            format!("POST {path}"),
            format!("GET {path}?expand=properties"),
            format!("POST {path}"),
        ]
    );
    let requests = jira.requests();
    assert_eq!(requests[0].body, requests[2].body, "the same call again");
    let (arrivals, violations, comments) = jira.with(|t| {
        (
            t.arrivals.clone(),
            t.vendor.violations.clone(),
            t.vendor.issue("CHG-101").unwrap().comments.clone(),
        )
    });
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_secs(1),
        "retried {gap:?} after a 429 with Retry-After: 1"
    );
    assert_eq!(violations, Vec::<String>::new());
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].body, adf("Change recorded"));
    assert_eq!(
        comments[0].properties["steward"],
        json!({"idempotency_key": id})
    );
    let rows = outbox(&dir.path().join("steward.db"));
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("done", 2));
    eprintln!("429 with Retry-After: 1, retried {gap:?} later; the comment made once");
}
