//! The generic webhook connector (connectors/dist/webhook.wasm) against a loopback
//! receiver that verifies the HMAC-SHA256 signature and de-duplicates by
//! `Idempotency-Key`; plus the receiver's own test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod vendors;

use serde_json::{Value, json};
use vendors::harness::{Rig, assert_operation, expect_permanent, expect_retryable};
use vendors::server::{Down, Reply, Server, send};
use vendors::webhook::{Receiver, signature, verify};

const PATH: &str = "/hooks/steward";
const SECRET: &str = "whsec-5teward-t3st-41c9";

#[test]
fn receiver_verifies_signatures_and_deduplicates() {
    let body = br#"{"a":1}"#;
    let sig = signature(SECRET, body);
    assert!(verify(SECRET, body, &sig));
    assert!(!verify(SECRET, br#"{"a":2}"#, &sig));
    assert!(!verify("other", body, &sig));
    assert!(!verify(SECRET, body, sig.trim_start_matches("sha256=")));
    let server = Server::start(Receiver::new(PATH, Some(SECRET)));
    let url = format!("{}{PATH}", server.url());
    let signed = |key: &'static str, sig: &str| -> (u16, String) {
        let (s, _, t) = send(
            "POST",
            &url,
            &[
                ("content-type", "application/json"),
                ("idempotency-key", key),
                ("x-steward-signature", sig),
                ("user-agent", "steward-connector-webhook/test"),
            ],
            body,
        );
        (s, t)
    };
    assert_eq!(signed("k1", &sig).0, 200);
    let (status, text) = signed("k1", &sig);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["duplicate"],
        true
    );
    assert_eq!(signed("k2", &signature("wrong", body)).0, 401);
    let (status, _, _) = send("POST", &url, &[("content-type", "application/json")], body);
    assert_eq!(status, 401);
    assert_eq!(server.with(|r| r.processed().len()), 1);
    assert_eq!(server.with(|r| r.violations.len()), 2);
}

fn setup(secret: Option<&str>) -> (Server<Receiver>, Rig) {
    let server = Server::start(Receiver::new(PATH, secret));
    let url = format!("{}{PATH}", server.url());
    let secrets: Vec<(&str, &str)> = secret.map(|s| ("hmac_secret", s)).into_iter().collect();
    let rig = Rig::new("webhook", &[("url", url.as_str())], &secrets);
    (server, rig)
}

fn finish(server: &Server<Receiver>, rig: &Rig) {
    let violations = server.with(|r| r.violations.clone());
    assert!(
        violations.is_empty(),
        "the receiver saw {} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    rig.assert_user_agent(&server.requests());
    rig.assert_logs_clean(&[]);
}

#[test]
fn describe_lists_the_contract_operations() {
    let (_server, rig) = setup(Some(SECRET));
    let d = rig.describe();
    assert_eq!(d.name, "webhook");
    assert_operation(&d, "send", &["payload"], &["payload"]);
    assert_eq!(d.operations.len(), 1);
}

#[test]
fn send_posts_the_payload_signed_with_the_idempotency_key() {
    let (server, rig) = setup(Some(SECRET));
    let payload = json!({ "event": "change.approved", "change": "CHG-42", "approvers": ["dana", "ravi"], "quorum": 2 });
    let out = rig.ok("send", &json!({ "payload": payload }), "act-wh-1", 1);
    assert_eq!(out, json!({ "status": 200 }));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.line(), format!("POST {PATH}"));
    // The body is the payload, compact, in the given key order.
    assert_eq!(r.body, serde_json::to_vec(&payload).unwrap());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.header("idempotency-key"), Some("act-wh-1"));
    assert_eq!(r.header("x-steward-attempt"), Some("1"));
    assert_eq!(
        r.header("x-steward-signature"),
        Some(signature(SECRET, &r.body).as_str())
    );
    assert!(
        r.header("user-agent")
            .unwrap()
            .starts_with("steward-connector-webhook/")
    );
    finish(&server, &rig);
}

#[test]
fn a_retry_carries_the_same_key_and_the_receiver_deduplicates() {
    let (server, rig) = setup(Some(SECRET));
    rig.ok("send", &json!({ "payload": { "n": 1 } }), "act-wh-r", 1);
    rig.ok("send", &json!({ "payload": { "n": 1 } }), "act-wh-r", 2);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("idempotency-key"), Some("act-wh-r"));
    assert_eq!(reqs[1].header("x-steward-attempt"), Some("2"));
    assert_eq!(reqs[0].body, reqs[1].body);
    assert_eq!(server.with(|r| r.processed().len()), 1);
    finish(&server, &rig);
}

#[test]
fn any_json_payload_and_the_receivers_status() {
    let (server, rig) = setup(Some(SECRET));
    server.with(|r| r.status = 202);
    let payloads = [
        json!(["a", 1, null]),
        json!("text"),
        json!(42),
        json!({ "nested": { "ü": "✓" } }),
    ];
    for (i, payload) in payloads.into_iter().enumerate() {
        let out = rig.ok(
            "send",
            &json!({ "payload": payload }),
            &format!("act-any-{i}"),
            1,
        );
        assert_eq!(out, json!({ "status": 202 }));
        let r = server.requests().pop().unwrap();
        assert_eq!(r.body, serde_json::to_vec(&payload).unwrap());
    }
    finish(&server, &rig);
}

#[test]
fn without_a_secret_nothing_is_signed() {
    let (server, rig) = setup(None);
    rig.ok("send", &json!({ "payload": { "n": 1 } }), "act-ns", 1);
    let r = &server.requests()[0];
    assert_eq!(r.header("x-steward-signature"), None);
    assert_eq!(r.header("idempotency-key"), Some("act-ns"));
    finish(&server, &rig);
}

#[test]
fn a_wrong_secret_is_refused_and_stays_secret() {
    let server = Server::start(Receiver::new(PATH, Some(SECRET)));
    let wrong = "whsec-r0tated-0ld-k3y";
    let rig = Rig::new(
        "webhook",
        &[("url", format!("{}{PATH}", server.url()).as_str())],
        &[("hmac_secret", wrong)],
    );
    let err = rig.err("send", &json!({ "payload": { "n": 1 } }), "act-wrong", 1);
    let message = expect_permanent(&err, "invalid signature");
    assert!(!message.contains(wrong));
    assert_eq!(server.with(|r| r.processed().len()), 0);
    rig.assert_logs_clean(&[]);
}

#[test]
fn errors_map_to_retryable_and_permanent() {
    let (server, rig) = setup(Some(SECRET));
    server.fail_next(
        1,
        Reply::json(429, &json!({ "error": "slow down" })).with_header("retry-after", "4"),
    );
    let (_, after) = expect_retryable(&rig.err("send", &json!({ "payload": {} }), "act-e", 1));
    assert_eq!(after, Some(4000));
    server.fail_next(1, Reply::json(503, &json!({ "error": "maintenance" })));
    expect_retryable(&rig.err("send", &json!({ "payload": {} }), "act-e", 2));
    server.fail_next(
        1,
        Reply::json(422, &json!({ "error": "unknown event type" })),
    );
    expect_permanent(
        &rig.err("send", &json!({ "payload": {} }), "act-e", 3),
        "unknown event type",
    );
    assert_eq!(server.with(|r| r.deliveries.len()), 0);
    finish(&server, &rig);
}

#[test]
fn invalid_arguments_and_missing_url_fail_before_any_request() {
    let (server, rig) = setup(Some(SECRET));
    for args in [json!({}), json!({ "payload": 1, "extra": 2 })] {
        let err = rig.err("send", &args, "act-bad", 1);
        assert!(!err.is_retryable(), "{args}: {err:?}");
    }
    let unconfigured = Rig::new("webhook", &[], &[("hmac_secret", SECRET)]);
    expect_permanent(
        &unconfigured.err("send", &json!({ "payload": 1 }), "act-nourl", 1),
        "url",
    );
    assert!(server.requests().is_empty());
}

/// The receiver did the work but answered after the call's deadline: the call fails
/// retryably within the deadline, and the retry (same key) is de-duplicated.
#[test]
fn a_slow_receiver_times_out_retryably_and_the_retry_is_deduplicated() {
    let server = Server::start(Receiver::new(PATH, Some(SECRET)));
    let url = format!("{}{PATH}", server.url());
    let rig = Rig::configured(
        "webhook",
        &[("url", url.as_str())],
        &[("hmac_secret", SECRET)],
        |c| {
            c.timeout_ms = 1_000;
        },
    );
    server.delay_next(1, 4_000);
    let started = std::time::Instant::now();
    let err = rig.err("send", &json!({ "payload": { "n": 1 } }), "act-slow", 1);
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3_000),
        "{:?}",
        started.elapsed()
    );
    rig.ok("send", &json!({ "payload": { "n": 1 } }), "act-slow", 2);
    assert_eq!(
        server.with(|r| (r.deliveries.len(), r.processed().len())),
        (2, 1)
    );
    finish(&server, &rig);
}

#[test]
fn unreachable_receiver_is_retryable() {
    let down = Down::start();
    let rig = Rig::new(
        "webhook",
        &[("url", format!("{}{PATH}", down.url()).as_str())],
        &[("hmac_secret", SECRET)],
    );
    let err = rig.err("send", &json!({ "payload": { "n": 1 } }), "act-down", 1);
    assert!(err.is_retryable(), "{err:?}");
}
