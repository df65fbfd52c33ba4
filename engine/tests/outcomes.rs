//! Action outcomes fed back into the core: evidence decisions in the chain, and
//! `on action succeeded|failed` transitions of the instance that decided the action.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{rules, t};
use serde_json::json;
use steward_engine::core::Engine;
use steward_engine::core::outcome::Outcome;
use steward_engine::decision::{Decision, Kind, verify_chain};
use steward_engine::event::Event;

fn created(key: &str) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": format!("e-{key}"), "source": "/test",
        "type": "change.created", "time": "2026-03-02T09:00:00Z", "subject": key,
    }))
    .unwrap()
}

const NOTIFY: &str = r#"
use connector webhook
use connector jira
workflow notify key event.subject {
  control "8.5.1" "Changes are announced" detective
  start on "change.created"
  state sending {
    enter { webhook.send(payload: {"change": key}) }
    on action succeeded webhook.send when result.status == 200 -> sent {
      evidence "delivered with ${result.status}"
    }
    on action failed webhook -> unreachable {
      violation "notification for ${key} failed after ${result.attempts} attempts: ${result.reason}"
      jira.comment(key, "notification failed: ${result.reason}")
    }
  }
  state sent { on "change.closed" -> closed }
  state unreachable { on "change.closed" -> closed }
  final state closed
}
"#;

/// Starts an instance for `key`; returns the engine and the action it decided.
fn started(key: &str) -> (Engine, Decision) {
    let mut engine = Engine::new(rules(NOTIFY));
    let mut out = Vec::new();
    engine.apply(&created(key), t("2026-03-02T09:00:00Z"), &mut out);
    let action = out
        .iter()
        .find(|d| d.kind == Kind::Action)
        .cloned()
        .unwrap();
    (engine, action)
}

fn outcome(action: &Decision, attempts: u32, result: Result<serde_json::Value, String>) -> Outcome {
    Outcome {
        action_id: action.action_id.clone().unwrap(),
        workflow: action.workflow.clone(),
        key: action.key.clone(),
        connector: action.connector.clone().unwrap(),
        op: action.op.clone().unwrap(),
        attempts,
        result,
    }
}

fn summary(out: &[Decision]) -> Vec<(Kind, Option<String>)> {
    out.iter()
        .map(|d| (d.kind, d.to.clone().or_else(|| d.message.clone())))
        .collect()
}

#[test]
fn success_is_evidence_and_drives_the_transition() {
    let (mut engine, action) = started("CHG-1");
    assert_eq!(action.action_id.as_deref(), Some("notify/CHG-1/1/0"));
    let mut out = Vec::new();
    let at = t("2026-03-02T09:00:01Z");
    engine.apply_outcome(
        &outcome(&action, 1, Ok(json!({"status": 200}))),
        at,
        &mut out,
    );
    assert_eq!(
        summary(&out),
        [
            (Kind::ActionSucceeded, None),
            (Kind::Evidence, Some("delivered with 200".into())),
            (Kind::Transition, Some("sent".into())),
        ]
    );
    let d = &out[0];
    assert_eq!(
        d.to_json_line(),
        r#"{"at":"2026-03-02T09:00:01Z","kind":"action_succeeded","workflow":"notify","key":"CHG-1","control":"8.5.1","state":"sending","connector":"webhook","op":"send","attempts":1,"result":{"status":200},"action_id":"notify/CHG-1/1/0"}"#
    );
    // Part of the chain, like every decision.
    let changes = engine.take_changes();
    assert_eq!(changes.evidence.len(), 5);
    assert_eq!(verify_chain(&changes.evidence), Ok(5));
    assert!(
        changes.evidence[2]
            .record
            .contains(r#""kind":"action_succeeded""#)
    );
}

#[test]
fn failure_runs_on_action_failed_with_result() {
    let (mut engine, action) = started("CHG-2");
    let mut out = Vec::new();
    let at = t("2026-03-02T09:05:00Z");
    engine.apply_outcome(
        &outcome(&action, 5, Err("HTTP 503 (retryable)".into())),
        at,
        &mut out,
    );
    assert_eq!(
        summary(&out),
        [
            (Kind::ActionFailed, Some("HTTP 503 (retryable)".into())),
            (
                Kind::Violation,
                Some("notification for CHG-2 failed after 5 attempts: HTTP 503 (retryable)".into())
            ),
            (Kind::Action, None),
            (Kind::Transition, Some("unreachable".into())),
        ]
    );
    assert_eq!(out[0].attempts, Some(5));
    assert_eq!(out[0].result, None);
    // The reaction's call is a new action of its own, with the reason in its args.
    let call = &out[2];
    assert_eq!(call.action_id.as_deref(), Some("notify/CHG-2/2/1"));
    assert_eq!(
        call.args,
        Some(json!([
            "CHG-2",
            "notification failed: HTTP 503 (retryable)"
        ]))
    );
    assert_eq!(engine.take_changes().outbox.len(), 2);
}

#[test]
fn unmatched_outcomes_are_evidence_only() {
    // Wrong status: the condition does not hold.
    let (mut engine, action) = started("CHG-3");
    let mut out = Vec::new();
    let at = t("2026-03-02T09:00:01Z");
    engine.apply_outcome(
        &outcome(&action, 2, Ok(json!({"status": 202}))),
        at,
        &mut out,
    );
    assert_eq!(summary(&out), [(Kind::ActionSucceeded, None)]);
    // Another connector's failure: `on action failed webhook` does not match.
    let mut other = outcome(&action, 1, Err("nope".into()));
    other.connector = "slack".into();
    out.clear();
    engine.apply_outcome(&other, at, &mut out);
    assert_eq!(summary(&out), [(Kind::ActionFailed, Some("nope".into()))]);
    // An action no instance decided (a rule's), or of a finished instance.
    let mut orphan = outcome(&action, 1, Ok(json!({})));
    orphan.workflow = None;
    orphan.key = None;
    out.clear();
    engine.apply_outcome(&orphan, at, &mut out);
    assert_eq!(summary(&out), [(Kind::ActionSucceeded, None)]);
    assert_eq!(out[0].workflow, None);
    let mut gone = outcome(&action, 1, Ok(json!({"status": 200})));
    gone.key = Some("CHG-404".into());
    out.clear();
    engine.apply_outcome(&gone, at, &mut out);
    assert_eq!(summary(&out), [(Kind::ActionSucceeded, None)]);
    assert_eq!(out[0].key.as_deref(), Some("CHG-404"));
    // The instance is still where it was.
    assert_eq!(
        engine
            .world()
            .instances
            .values()
            .map(|i| i.state)
            .collect::<Vec<_>>(),
        [0]
    );
}
