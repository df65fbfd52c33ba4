//! The core driven directly: events in, decisions out, on a virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use chrono::Duration;
use common::{rules, t};
use serde_json::json;
use steward_engine::core::{Applied, Engine};
use steward_engine::decision::{Decision, Kind, verify_chain};
use steward_engine::event::Event;
use steward_engine::replay::Driver;

fn event(id: &str, ty: &str, time: &str, subject: &str, data: serde_json::Value) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": ty,
        "time": time, "subject": subject, "data": data,
    }))
    .unwrap()
}

fn kinds(out: &[Decision]) -> Vec<(Kind, Option<String>)> {
    out.iter()
        .map(|d| (d.kind, d.outcome.clone().or_else(|| d.to.clone())))
        .collect()
}

const CHANGE: &str = r#"
use connector jira
group cab = ["alice", "bob", "carol"]
workflow change key event.subject {
  control "8.5.1" "Changes are approved" detective
  start on "change.created"
  state assessing {
    enter {
      set requester = event.data.requester
      request approval from cab quorum majority excluding requester within 2 days
    }
    on approval granted -> approved
    on approval rejected -> rejected
    on approval expired -> rejected { violation "no decision on ${key}" }
    after 1 day { jira.comment(key, "reminder") }
  }
  state approved {
    enter { jira.comment(key, "approved") }
    on "change.closed" -> closed
  }
  final state rejected
  final state closed
}
"#;

fn decide(id: &str, time: &str, who: &str, verdict: &str) -> Event {
    event(
        id,
        "approval.decided",
        time,
        "C-1",
        json!({"approver": who, "decision": verdict}),
    )
}

#[test]
fn quorum_counts_eligible_distinct_approvers_only() {
    let mut driver = Driver::new(Engine::new(rules(CHANGE)));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "change.created",
            "2026-03-02T09:00:00Z",
            "C-1",
            json!({"requester": "carol"}),
        ),
        &mut out,
    );
    // carol is the requester: the majority of the 2 eligible (alice, bob) is 2.
    let requested = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("requested"))
        .unwrap();
    assert_eq!(
        requested.message.as_deref(),
        Some("2 of 2 eligible in `cab`")
    );
    out.clear();
    driver.feed(
        &decide("2", "2026-03-02T10:00:00Z", "carol", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("3", "2026-03-02T10:01:00Z", "alice", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("4", "2026-03-02T10:02:00Z", "alice", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("5", "2026-03-02T10:03:00Z", "zoe", "approve"),
        &mut out,
    );
    assert_eq!(
        kinds(&out),
        vec![
            (Kind::Approval, Some("refused".into())),
            (Kind::Approval, Some("approved".into())),
            (Kind::Approval, Some("refused".into())),
            (Kind::Approval, Some("refused".into())),
        ]
    );
    out.clear();
    driver.feed(
        &decide("6", "2026-03-02T11:00:00Z", "bob", "approve"),
        &mut out,
    );
    assert_eq!(
        kinds(&out),
        vec![
            (Kind::Approval, Some("approved".into())),
            (Kind::Approval, Some("granted".into())),
            (Kind::Transition, Some("approved".into())),
            (Kind::Action, None),
        ]
    );
}

#[test]
fn one_rejection_vetoes() {
    let mut driver = Driver::new(Engine::new(rules(CHANGE)));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "change.created",
            "2026-03-02T09:00:00Z",
            "C-1",
            json!({"requester": "erin"}),
        ),
        &mut out,
    );
    driver.feed(
        &decide("2", "2026-03-02T09:30:00Z", "alice", "approve"),
        &mut out,
    );
    out.clear();
    driver.feed(
        &decide("3", "2026-03-02T09:45:00Z", "bob", "reject"),
        &mut out,
    );
    let outcomes: Vec<_> = out
        .iter()
        .filter_map(|d| d.outcome.clone().or(d.to.clone()))
        .collect();
    assert_eq!(outcomes, ["rejected", "vetoed", "rejected"]);
    // Finished: the pending reminder and expiry timers are gone.
    assert!(driver.engine.world().timers.is_empty());
    assert!(driver.engine.world().instances.is_empty());
}

#[test]
fn timers_fire_once_at_their_time_and_never_after_the_state_is_left() {
    let mut driver = Driver::new(Engine::new(rules(CHANGE)));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "change.created",
            "2026-03-02T09:00:00Z",
            "C-1",
            json!({"requester": "erin"}),
        ),
        &mut out,
    );
    out.clear();
    driver.advance(t("2026-03-03T08:59:59Z"), &mut out);
    assert!(out.is_empty(), "nothing is due yet: {out:?}");
    driver.advance(t("2026-03-03T09:00:00Z"), &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].kind, Kind::Timer);
    assert_eq!(out[0].at, t("2026-03-03T09:00:00Z"));
    assert_eq!(out[1].op.as_deref(), Some("comment"));
    out.clear();
    driver.advance(t("2026-03-04T09:00:00Z"), &mut out);
    let outcomes: Vec<_> = out.iter().map(|d| (d.kind, d.at)).collect();
    assert_eq!(
        outcomes,
        vec![
            (Kind::Approval, t("2026-03-04T09:00:00Z")),
            (Kind::Violation, t("2026-03-04T09:00:00Z")),
            (Kind::Transition, t("2026-03-04T09:00:00Z")),
        ]
    );
    out.clear();
    driver.advance(t("2026-04-01T00:00:00Z"), &mut out);
    assert!(out.is_empty(), "fired twice: {out:?}");
}

#[test]
fn duplicates_take_effect_once() {
    let mut engine = Engine::new(rules(CHANGE));
    let mut out = Vec::new();
    let created = event(
        "1",
        "change.created",
        "2026-03-02T09:00:00Z",
        "C-1",
        json!({"requester": "erin"}),
    );
    let now = t("2026-03-02T09:00:00Z");
    assert_eq!(engine.apply(&created, now, &mut out), Applied::Applied);
    let n = out.len();
    assert_eq!(engine.apply(&created, now, &mut out), Applied::Duplicate);
    assert_eq!(out.len(), n);
    assert_eq!(engine.stats.duplicates, 1);
}

#[test]
fn escalation_ladder_stops_on_acknowledgement() {
    let rules = rules(
        r#"
use connector pagerduty
workflow incident key event.subject {
  start on "incident.created" when event.data.priority == "P1"
  escalation page {
    stop on "incident.acknowledged"
    after 15 minutes { pagerduty.trigger(dedup_key: key) }
    after 15 minutes { violation "${key} unacknowledged for 30 minutes" }
  }
  state open {
    enter { escalate page }
    on "incident.resolved" -> resolved
  }
  final state resolved
}
"#,
    );
    let mut driver = Driver::new(Engine::new(rules));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "incident.created",
            "2026-03-10T02:00:00Z",
            "INC-1",
            json!({"priority": "P1"}),
        ),
        &mut out,
    );
    driver.feed(
        &event(
            "2",
            "incident.acknowledged",
            "2026-03-10T02:20:00Z",
            "INC-1",
            json!({}),
        ),
        &mut out,
    );
    driver.advance(t("2026-03-10T05:00:00Z"), &mut out);
    let steps: Vec<_> = out
        .iter()
        .filter(|d| d.kind == Kind::Escalation)
        .map(|d| (d.at, d.outcome.clone().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (t("2026-03-10T02:00:00Z"), "started".to_string()),
            (t("2026-03-10T02:15:00Z"), "step 1".to_string()),
            (t("2026-03-10T02:20:00Z"), "stopped".to_string()),
        ]
    );
    assert!(!out.iter().any(|d| d.kind == Kind::Violation));
}

#[test]
fn sliding_window_counter_per_key() {
    let rules = rules(
        r#"
counter repeats {
  count "incident.created"
  by event.data.ci
  within 7 days
  when count >= 3 do { violation "${count} incidents on ${key} within 7 days" }
}
"#,
    );
    let mut driver = Driver::new(Engine::new(rules));
    let mut out = Vec::new();
    let days = ["01", "04", "09", "10", "11"];
    for (i, d) in days.iter().enumerate() {
        driver.feed(
            &event(
                &i.to_string(),
                "incident.created",
                &format!("2026-03-{d}T12:00:00Z"),
                "x",
                json!({"ci": "db1"}),
            ),
            &mut out,
        );
    }
    // The window is the 7 days up to now, excluding its start: on the 9th the 1st has
    // left it (2 in it); the 10th and 11th count 3 each: (04, 09, 10) and (09, 10, 11).
    let violations: Vec<_> = out
        .iter()
        .filter(|d| d.kind == Kind::Violation)
        .map(|d| d.message.clone().unwrap())
        .collect();
    assert_eq!(
        violations,
        [
            "3 incidents on db1 within 7 days",
            "3 incidents on db1 within 7 days"
        ]
    );
}

#[test]
fn cadence_expects_evidence_per_period() {
    let rules = rules(
        r#"
cadence weekly every "0 0 9 * * MON" in "Europe/Berlin" {
  control "9.1" "Weekly KPI review" detective
  expect "kpi.reviewed" within 2 days
    else violation "KPI review missing for ${period}"
}
"#,
    );
    let mut driver = Driver::new(Engine::new(rules));
    driver.start(t("2026-03-01T00:00:00Z"));
    let mut out = Vec::new();
    // Monday 2026-03-02 09:00 Berlin = 08:00Z; reviewed on Tuesday.
    driver.feed(
        &event("1", "kpi.reviewed", "2026-03-03T10:00:00Z", "w", json!({})),
        &mut out,
    );
    driver.advance(t("2026-03-12T00:00:00Z"), &mut out);
    let summary: Vec<_> = out
        .iter()
        .map(|d| {
            (
                d.kind,
                d.period.clone().unwrap_or_default(),
                d.outcome.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Kind::Cadence, "2026-W10".into(), "ran".into()),
            (Kind::Cadence, "2026-W10".into(), "met".into()),
            (Kind::Cadence, "2026-W11".into(), "ran".into()),
            (Kind::Cadence, "2026-W11".into(), "missed".into()),
            (Kind::Violation, "2026-W11".into(), String::new()),
        ]
    );
    assert_eq!(out[2].at, t("2026-03-09T08:00:00Z"));
    assert_eq!(out[3].at, t("2026-03-11T08:00:00Z"));
}

#[test]
fn emitted_events_feed_other_workflows_and_rules() {
    let rules = rules(
        r#"
use connector slack
rule announce {
  on "change.approved"
  do { slack.post(text: "approved: ${event.data.key}") }
}
workflow w key event.subject {
  start on "go"
  state s {
    enter { emit "change.approved" { key: key } }
    on "stop" -> done
  }
  final state done
}
"#,
    );
    let mut engine = Engine::new(rules);
    let mut out = Vec::new();
    engine.apply(
        &event("1", "go", "2026-03-01T00:00:00Z", "K", json!({})),
        t("2026-03-01T00:00:00Z"),
        &mut out,
    );
    let slack = out
        .iter()
        .find(|d| d.connector.as_deref() == Some("slack"))
        .unwrap();
    assert_eq!(slack.args, Some(json!({"text": "approved: K"})));
}

#[test]
fn runtime_errors_are_decisions_not_panics() {
    let rules = rules(
        r#"
rule r {
  on "x" when event.data.missing == 1
  do { violation "never" }
}
"#,
    );
    let mut engine = Engine::new(rules);
    let mut out = Vec::new();
    engine.apply(
        &event("1", "x", "2026-03-01T00:00:00Z", "K", json!({})),
        t("2026-03-01T00:00:00Z"),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, Kind::Error);
    assert!(
        out[0].message.as_deref().unwrap().contains("missing"),
        "{:?}",
        out[0]
    );
}

#[test]
fn every_decision_is_chained_evidence() {
    let mut driver = Driver::new(Engine::new(rules(CHANGE)));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "change.created",
            "2026-03-02T09:00:00Z",
            "C-1",
            json!({"requester": "erin"}),
        ),
        &mut out,
    );
    driver.advance(t("2026-03-02T09:00:00Z") + Duration::days(5), &mut out);
    let changes = driver.engine.take_changes();
    assert_eq!(changes.evidence.len(), out.len());
    assert_eq!(verify_chain(&changes.evidence), Ok(out.len() as u64));
    let mut tampered = changes.evidence.clone();
    tampered[1].record = tampered[1].record.replace("assessing", "approved");
    assert!(verify_chain(&tampered).is_err());
}

#[test]
fn ladders_stop_when_their_state_is_left() {
    let rules = rules(
        r#"
use connector slack
workflow review key event.subject {
  start on "review.requested"
  escalation chase {
    stop on "review.cancelled"
    after 1 hour { slack.post(text: "review ${key} waits") }
  }
  state waiting {
    enter { escalate chase }
    on "review.taken" -> in_review
  }
  state in_review { on "review.done" -> done }
  final state done
}
"#,
    );
    let mut driver = Driver::new(Engine::new(rules));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "review.requested",
            "2026-03-02T09:00:00Z",
            "R-1",
            json!({}),
        ),
        &mut out,
    );
    driver.feed(
        &event(
            "2",
            "review.taken",
            "2026-03-02T09:30:00Z",
            "R-1",
            json!({}),
        ),
        &mut out,
    );
    driver.advance(t("2026-03-02T12:00:00Z"), &mut out);
    let ladder: Vec<_> = out
        .iter()
        .filter(|d| d.kind == Kind::Escalation)
        .map(|d| (d.outcome.clone().unwrap(), d.message.clone()))
        .collect();
    assert_eq!(
        ladder,
        vec![
            ("started".to_string(), None),
            ("stopped".to_string(), Some("state left".to_string())),
        ]
    );
    assert!(
        !out.iter().any(|d| d.connector.is_some()),
        "a stopped ladder must not post"
    );
}
