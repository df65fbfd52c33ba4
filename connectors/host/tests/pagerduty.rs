//! The PagerDuty connector (connectors/dist/pagerduty.wasm) against a loopback Events
//! API v2 (../shared/reference/integrations.md §7.1); plus the server's own test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod vendors;

use serde_json::{Value, json};
use vendors::harness::{Rig, assert_operation, expect_permanent, expect_retryable};
use vendors::pagerduty::{PagerDuty, event_problems};
use vendors::server::{Down, Reply, Server, send};

/// A 32-character integration key.
const ROUTING_KEY: &str = "R0UT1NGKEYa1b2c3d4e5f6a7b8c9d0e1";

#[test]
fn pagerduty_server_validates_events() {
    assert_eq!(ROUTING_KEY.len(), 32);
    let trigger = json!({
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "sn:INC0010002",
        "payload": { "summary": "P1 INC0010002 unacknowledged 15m", "source": "servicenow://acme", "severity": "critical",
                     "component": "billing-db", "custom_details": { "rule": "INC-02" } },
        "links": [{ "href": "https://acme.service-now.com/incident.do", "text": "INC0010002" }]
    });
    assert!(
        event_problems(&trigger).is_empty(),
        "{:?}",
        event_problems(&trigger)
    );
    for (event, needle) in [
        (
            json!({ "routing_key": "short", "event_action": "trigger", "payload": trigger["payload"] }),
            "routing_key",
        ),
        (
            json!({ "routing_key": ROUTING_KEY, "event_action": "escalate", "dedup_key": "k" }),
            "event_action",
        ),
        (
            json!({ "routing_key": ROUTING_KEY, "event_action": "resolve" }),
            "dedup_key",
        ),
        (
            json!({ "routing_key": ROUTING_KEY, "event_action": "trigger", "payload": { "summary": "x", "source": "s", "severity": "high" } }),
            "severity",
        ),
        (
            json!({ "routing_key": ROUTING_KEY, "event_action": "trigger", "payload": { "summary": "x", "severity": "info" } }),
            "source",
        ),
        (
            json!({ "routing_key": ROUTING_KEY, "event_action": "trigger", "payload": { "summary": "x".repeat(1025), "source": "s", "severity": "info" } }),
            "summary",
        ),
        (
            json!({ "routing_key": ROUTING_KEY, "event_action": "trigger", "payload": { "summary": "x", "source": "s", "severity": "info", "custom_details": "text" } }),
            "custom_details",
        ),
        (
            json!({ "routing_key": ROUTING_KEY, "event_action": "trigger", "severity": "info", "payload": { "summary": "x", "source": "s", "severity": "info" } }),
            "Unknown field 'severity'",
        ),
    ] {
        let problems = event_problems(&event);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{event}: {problems:?}"
        );
    }
    let server = Server::start(PagerDuty::default());
    let url = format!("{}/v2/enqueue", server.url());
    let h = [
        ("content-type", "application/json"),
        ("user-agent", "steward-connector-pagerduty/test"),
    ];
    let (status, _, text) = send("POST", &url, &h, trigger.to_string().as_bytes());
    assert_eq!(status, 202, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({ "status": "success", "message": "Event processed", "dedup_key": "sn:INC0010002" })
    );
    send("POST", &url, &h, trigger.to_string().as_bytes());
    assert_eq!(
        server.with(|p| (p.opened, p.alerts.values().next().unwrap().triggers)),
        (1, 2)
    );
    let (status, _, text) = send(
        "POST",
        &url,
        &h,
        br#"{"routing_key":"x","event_action":"trigger"}"#,
    );
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "invalid event");
    assert!(body["errors"].as_array().unwrap().len() >= 2);
}

fn setup() -> (Server<PagerDuty>, Rig) {
    let server = Server::start(PagerDuty::default());
    let rig = Rig::new(
        "pagerduty",
        &[("events_url", server.url().as_str())],
        &[("routing_key", ROUTING_KEY)],
    );
    (server, rig)
}

fn finish(server: &Server<PagerDuty>, rig: &Rig) {
    let violations = server.with(|p| p.violations.clone());
    assert!(
        violations.is_empty(),
        "PagerDuty saw {} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    for r in server.requests() {
        assert_eq!(r.line(), "POST /v2/enqueue");
        assert!(
            r.header("authorization").is_none(),
            "the Events API takes no auth header"
        );
    }
    rig.assert_user_agent(&server.requests());
    rig.assert_logs_clean(&[]);
}

#[test]
fn describe_lists_the_contract_operations() {
    let (_server, rig) = setup();
    let d = rig.describe();
    assert_eq!(d.name, "pagerduty");
    assert_operation(
        &d,
        "trigger",
        &[
            "summary",
            "source",
            "severity",
            "dedup_key",
            "custom_details",
        ],
        &["summary"],
    );
    assert_operation(&d, "acknowledge", &["dedup_key"], &["dedup_key"]);
    assert_operation(&d, "resolve", &["dedup_key"], &["dedup_key"]);
    let trigger: Value = serde_json::from_str(
        &d.operations
            .iter()
            .find(|o| o.name == "trigger")
            .unwrap()
            .args_schema,
    )
    .unwrap();
    assert_eq!(
        trigger["properties"]["severity"]["enum"],
        json!(["critical", "error", "warning", "info"])
    );
}

#[test]
fn trigger_defaults_dedup_key_to_the_idempotency_key() {
    let (server, rig) = setup();
    let out = rig.ok(
        "trigger",
        &json!({ "summary": "billing-db down" }),
        "act-pd-1",
        1,
    );
    assert_eq!(out["status"], "success");
    assert_eq!(out["dedup_key"], "act-pd-1");
    let mut body = server.requests()[0].json();
    // `custom_details` may be left out when not given.
    if let Some(payload) = body["payload"].as_object_mut()
        && payload
            .get("custom_details")
            .is_some_and(|d| d.is_null() || d == &json!({}))
    {
        payload.remove("custom_details");
    }
    assert_eq!(
        body,
        json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "act-pd-1",
            "payload": { "summary": "billing-db down", "source": "steward", "severity": "error" }
        })
    );
    assert!(
        server.requests()[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    finish(&server, &rig);
}

#[test]
fn trigger_with_every_argument() {
    let (server, rig) = setup();
    let details = json!({ "rule": "INC-02", "step": 1 });
    let out = rig.ok(
        "trigger",
        &json!({ "summary": "P1 INC0010002 unacknowledged 15m", "source": "servicenow://acme", "severity": "critical",
                 "dedup_key": "sn:INC0010002", "custom_details": details }),
        "act-pd-2",
        1,
    );
    assert_eq!(out["dedup_key"], "sn:INC0010002");
    assert_eq!(
        server.requests()[0].json(),
        json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "sn:INC0010002",
            "payload": { "summary": "P1 INC0010002 unacknowledged 15m", "source": "servicenow://acme",
                         "severity": "critical", "custom_details": details }
        })
    );
    finish(&server, &rig);
}

#[test]
fn a_retried_trigger_is_deduplicated_into_one_alert() {
    let (server, rig) = setup();
    rig.ok("trigger", &json!({ "summary": "db down" }), "act-pd-r", 1);
    rig.ok("trigger", &json!({ "summary": "db down" }), "act-pd-r", 2);
    let (opened, alerts) = server.with(|p| (p.opened, p.alerts.clone()));
    assert_eq!(opened, 1);
    let alert = &alerts[&(ROUTING_KEY.to_owned(), "act-pd-r".to_owned())];
    assert_eq!(alert.triggers, 2);
    finish(&server, &rig);
}

#[test]
fn acknowledge_and_resolve_by_dedup_key() {
    let (server, rig) = setup();
    rig.ok(
        "trigger",
        &json!({ "summary": "db down", "dedup_key": "jira:CHG-42" }),
        "act-1",
        1,
    );
    let out = rig.ok(
        "acknowledge",
        &json!({ "dedup_key": "jira:CHG-42" }),
        "act-2",
        1,
    );
    assert_eq!(out["dedup_key"], "jira:CHG-42");
    assert_eq!(
        server.requests()[1].json(),
        json!({ "routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "jira:CHG-42" })
    );
    let key = (ROUTING_KEY.to_owned(), "jira:CHG-42".to_owned());
    assert_eq!(
        server.with(|p| p.alerts[&key].status.clone()),
        "acknowledged"
    );
    let out = rig.ok(
        "resolve",
        &json!({ "dedup_key": "jira:CHG-42" }),
        "act-3",
        1,
    );
    assert_eq!(out["dedup_key"], "jira:CHG-42");
    assert_eq!(
        server.requests()[2].json(),
        json!({ "routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "jira:CHG-42" })
    );
    assert_eq!(server.with(|p| p.alerts[&key].status.clone()), "resolved");
    finish(&server, &rig);
}

#[test]
fn invalid_events_are_permanent_with_the_vendors_message() {
    let (server, rig) = setup();
    let err = rig.err(
        "trigger",
        &json!({ "summary": "x".repeat(1025) }),
        "act-long",
        1,
    );
    assert!(!err.is_retryable(), "{err:?}");
    // Either refused before sending, or sent and refused by PagerDuty (400).
    let seen = server.with(|p| std::mem::take(&mut p.violations));
    if !seen.is_empty() {
        expect_permanent(&err, "invalid");
    }
    server.fail_next(
        1,
        Reply::json(400, &json!({ "status": "invalid event", "message": "Event object is invalid", "errors": ["'payload.source' is missing or blank"] })),
    );
    let err = rig.err("trigger", &json!({ "summary": "x" }), "act-400", 1);
    expect_permanent(&err, "Event object is invalid");
    finish(&server, &rig);
}

#[test]
fn wrong_routing_key_is_permanent_and_stays_secret() {
    let server = Server::start(PagerDuty::default());
    let bad = "R0UT1NG-too-short-k3y";
    let rig = Rig::new(
        "pagerduty",
        &[("events_url", server.url().as_str())],
        &[("routing_key", bad)],
    );
    let err = rig.err("trigger", &json!({ "summary": "x" }), "act-rk", 1);
    let message = expect_permanent(&err, "invalid");
    assert!(!message.contains(bad), "{message}");
    assert_eq!(server.with(|p| p.violations.len()), 1);
    rig.assert_logs_clean(&[]);
}

#[test]
fn rate_limit_and_server_errors_are_retryable() {
    let (server, rig) = setup();
    server.fail_next(1, Reply::json(429, &json!({ "status": "throttle event", "message": "Requests for this service are arriving too quickly" })).with_header("retry-after", "30"));
    let (_, after) = expect_retryable(&rig.err("trigger", &json!({ "summary": "x" }), "act-r", 1));
    assert_eq!(after, Some(30_000));
    for status in [500, 502, 503] {
        server.fail_next(1, Reply::text(status, "Internal Server Error"));
        expect_retryable(&rig.err("resolve", &json!({ "dedup_key": "k" }), "act-5", 1));
    }
    assert!(server.with(|p| p.events.is_empty()));
    finish(&server, &rig);
}

#[test]
fn invalid_arguments_fail_before_any_request() {
    let (server, rig) = setup();
    for (op, args) in [
        ("trigger", json!({})),
        ("trigger", json!({ "summary": "x", "severity": "high" })),
        (
            "trigger",
            json!({ "summary": "x", "custom_details": "text" }),
        ),
        ("acknowledge", json!({})),
        ("resolve", json!({ "dedup_key": 5 })),
    ] {
        let err = rig.err(op, &args, "act-bad", 1);
        assert!(!err.is_retryable(), "{op} {args}: {err:?}");
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn unreachable_events_api_is_retryable() {
    let down = Down::start();
    let rig = Rig::new(
        "pagerduty",
        &[("events_url", down.url().as_str())],
        &[("routing_key", ROUTING_KEY)],
    );
    let err = rig.err("trigger", &json!({ "summary": "x" }), "act-down", 1);
    assert!(err.is_retryable(), "{err:?}");
    assert!(!format!("{err:?}").contains(ROUTING_KEY));
}
