//! The Slack connector (connectors/dist/slack.wasm) against a loopback incoming
//! webhook (../shared/reference/integrations.md §7.2); plus the server's own test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod vendors;

use serde_json::json;
use vendors::harness::{Rig, assert_operation, expect_permanent, expect_retryable};
use vendors::server::{Down, Reply, Server, send};
use vendors::slack::Slack;

/// The webhook's path: the secret part of its URL.
const HOOK_PATH: &str = "/services/T0STEWARD/B0STEWARD/xoxWebh00kS3cretZ9";
const HOOK_SECRET_PART: &str = "xoxWebh00kS3cretZ9";

#[test]
fn slack_server_plays_the_webhook() {
    let server = Server::start(Slack::new(HOOK_PATH));
    let url = format!("{}{HOOK_PATH}", server.url());
    let json_ct = [
        ("content-type", "application/json"),
        ("user-agent", "steward-connector-slack/test"),
    ];
    let (status, headers, text) = send("POST", &url, &json_ct, br#"{"text":"hi"}"#);
    assert_eq!((status, text.as_str()), (200, "ok"));
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("text/plain"))
    );
    for (body, status, error) in [
        (r#"{"text":""}"#, 400, "no_text"),
        (r#"{}"#, 400, "no_text"),
        (r#"["hi"]"#, 400, "invalid_payload"),
        (r#"not json"#, 400, "invalid_payload"),
        (
            r#"{"text":"x","blocks":[{"text":"no type"}]}"#,
            400,
            "invalid_blocks",
        ),
    ] {
        let (s, _, text) = send("POST", &url, &json_ct, body.as_bytes());
        assert_eq!((s, text.as_str()), (status, error), "{body}");
    }
    let (s, _, text) = send(
        "POST",
        &format!("{}/services/T0/B0/other", server.url()),
        &json_ct,
        br#"{"text":"hi"}"#,
    );
    assert_eq!((s, text.as_str()), (404, "no_service"));
    assert_eq!(server.with(|s| s.messages.len()), 1);
    assert_eq!(server.with(|s| s.violations.len()), 6);
}

fn setup() -> (Server<Slack>, Rig) {
    let server = Server::start(Slack::new(HOOK_PATH));
    let url = format!("{}{HOOK_PATH}", server.url());
    let rig = Rig::new("slack", &[], &[("webhook_url", url.as_str())]);
    (server, rig)
}

fn finish(server: &Server<Slack>, rig: &Rig) {
    let violations = server.with(|s| s.violations.clone());
    assert!(
        violations.is_empty(),
        "Slack saw {} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    rig.assert_user_agent(&server.requests());
    rig.assert_logs_clean(&[HOOK_SECRET_PART]);
}

#[test]
fn describe_lists_the_contract_operations() {
    let (_server, rig) = setup();
    let d = rig.describe();
    assert_eq!(d.name, "slack");
    assert_operation(&d, "post", &["text", "blocks"], &["text"]);
    assert_eq!(d.operations.len(), 1);
}

#[test]
fn post_sends_text() {
    let (server, rig) = setup();
    let out = rig.ok(
        "post",
        &json!({ "text": "Scheduled change CHG-42 on billing-db 10:00–12:00 CET" }),
        "act-s",
        1,
    );
    assert_eq!(out, json!({ "ok": true }));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].line(), format!("POST {HOOK_PATH}"));
    assert_eq!(
        reqs[0].json(),
        json!({ "text": "Scheduled change CHG-42 on billing-db 10:00–12:00 CET" })
    );
    assert!(
        reqs[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    finish(&server, &rig);
}

#[test]
fn post_sends_text_and_blocks() {
    let (server, rig) = setup();
    // The example of integrations.md §7.2.
    let blocks = json!([
        { "type": "section", "text": { "type": "mrkdwn", "text": "*Scheduled change* <https://acme.atlassian.net/browse/CHG-42|CHG-42>: Upgrade PostgreSQL 15→16" } },
        { "type": "context", "elements": [{ "type": "mrkdwn", "text": "iso20k-engine · rule CHG-09 v2" }] }
    ]);
    let out = rig.ok(
        "post",
        &json!({ "text": "Scheduled change CHG-42", "blocks": blocks }),
        "act-s",
        1,
    );
    assert_eq!(out, json!({ "ok": true }));
    assert_eq!(
        server.requests()[0].json(),
        json!({ "text": "Scheduled change CHG-42", "blocks": blocks })
    );
    assert_eq!(server.with(|s| s.messages.len()), 1);
    finish(&server, &rig);
}

#[test]
fn rejected_payloads_are_permanent_with_slacks_error() {
    let (server, rig) = setup();
    let err = rig.err(
        "post",
        &json!({ "text": "x", "blocks": [{ "text": "a block without a type" }] }),
        "act-b",
        1,
    );
    expect_permanent(&err, "invalid_blocks");
    server.fail_next(1, Reply::text(410, "channel_is_archived"));
    expect_permanent(
        &rig.err("post", &json!({ "text": "x" }), "act-410", 1),
        "channel_is_archived",
    );
    server.fail_next(1, Reply::text(403, "action_prohibited"));
    expect_permanent(
        &rig.err("post", &json!({ "text": "x" }), "act-403", 1),
        "action_prohibited",
    );
    // The real rejection was recorded by the server; nothing else.
    let violations = server.with(|s| std::mem::take(&mut s.violations));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("invalid_blocks"));
    finish(&server, &rig);
}

#[test]
fn wrong_webhook_path_is_permanent_and_the_url_stays_secret() {
    let server = Server::start(Slack::new(HOOK_PATH));
    let url = format!(
        "{}/services/T0STEWARD/B0STEWARD/xoxRevokedH00k",
        server.url()
    );
    let rig = Rig::new("slack", &[], &[("webhook_url", url.as_str())]);
    let err = rig.err("post", &json!({ "text": "x" }), "act-404", 1);
    let message = expect_permanent(&err, "no_service");
    assert!(!message.contains("xoxRevokedH00k"), "{message}");
    rig.assert_logs_clean(&["xoxRevokedH00k"]);
}

#[test]
fn rate_limit_and_server_errors_are_retryable() {
    let (server, rig) = setup();
    server.fail_next(
        1,
        Reply::text(429, "rate_limited").with_header("retry-after", "30"),
    );
    let (_, after) = expect_retryable(&rig.err("post", &json!({ "text": "x" }), "act-r", 1));
    assert_eq!(after, Some(30_000));
    server.fail_next(1, Reply::text(500, "rollup_error"));
    let (_, after) = expect_retryable(&rig.err("post", &json!({ "text": "x" }), "act-r", 2));
    assert_eq!(after, None);
    assert_eq!(server.with(|s| s.messages.len()), 0);
    finish(&server, &rig);
}

#[test]
fn unreachable_webhook_is_retryable_and_the_url_stays_secret() {
    let down = Down::start();
    let url = format!("{}{HOOK_PATH}", down.url());
    let rig = Rig::new("slack", &[], &[("webhook_url", url.as_str())]);
    let err = rig.err("post", &json!({ "text": "x" }), "act-down", 1);
    assert!(err.is_retryable(), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(HOOK_SECRET_PART), "{text}");
    rig.assert_logs_clean(&[HOOK_SECRET_PART]);
}

#[test]
fn invalid_arguments_fail_before_any_request() {
    let (server, rig) = setup();
    for args in [
        json!({}),
        json!({ "text": 5 }),
        json!({ "text": "x", "blocks": "not a list" }),
        json!({ "text": "x", "channel": "#ops" }),
    ] {
        let err = rig.err("post", &args, "act-bad", 1);
        assert!(!err.is_retryable(), "{args}: {err:?}");
    }
    assert!(server.requests().is_empty());
}
