//! Approvals in full — quorum per group, veto threshold, separation of duties,
//! delegation, business-time expiry, re-opening on a material change, refusals and
//! the hash of what was approved — and escalation ladders that repeat and keep to
//! working hours; all on a virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{rules, t};
use serde_json::json;
use sha2::{Digest, Sha256};
use steward_engine::core::Engine;
use steward_engine::decision::{Decision, Kind, canonical_json};
use steward_engine::event::Event;
use steward_engine::replay::Driver;

fn event(id: &str, ty: &str, time: &str, subject: &str, data: serde_json::Value) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": ty,
        "time": time, "subject": subject, "data": data,
    }))
    .unwrap()
}

fn decide(id: &str, time: &str, who: &str, verdict: &str) -> Event {
    event(
        id,
        "approval.decided",
        time,
        "C-1",
        json!({"approver": who, "decision": verdict}),
    )
}

fn delegate(id: &str, time: &str, from: &str, to: &str) -> Event {
    event(
        id,
        "approval.delegated",
        time,
        "C-1",
        json!({"from": from, "to": to}),
    )
}

/// The approval decisions: (approver, outcome, message).
fn approvals(out: &[Decision]) -> Vec<(String, String, String)> {
    out.iter()
        .filter(|d| d.kind == Kind::Approval)
        .map(|d| {
            (
                d.approver.clone().unwrap_or_default(),
                d.outcome.clone().unwrap_or_default(),
                d.message.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn transitions(out: &[Decision]) -> Vec<String> {
    out.iter()
        .filter(|d| d.kind == Kind::Transition)
        .map(|d| d.to.clone().unwrap())
        .collect()
}

fn row(approver: &str, outcome: &str, message: &str) -> (String, String, String) {
    (approver.into(), outcome.into(), message.into())
}

const ROLES: &str = r#"
group security = ["sam", "alice"]
group cab = ["alice", "bob", "carol"]
workflow change key event.subject {
  start on "change.created"
  state assessing {
    enter {
      set requester = event.data.requester
      request approval quorum 1 from security, 2 from cab excluding requester
    }
    on approval granted -> approved
    on approval rejected -> rejected
  }
  final state approved
  final state rejected
}
"#;

#[test]
fn every_group_quorum_must_be_met_and_an_approver_counts_in_one_group() {
    let mut driver = Driver::new(Engine::new(rules(ROLES)));
    let mut out = Vec::new();
    let created = event(
        "1",
        "change.created",
        "2026-03-02T09:00:00Z",
        "C-1",
        json!({"requester": "carol"}),
    );
    driver.feed(&created, &mut out);
    assert_eq!(
        approvals(&out),
        [row(
            "",
            "requested",
            "1 of 2 eligible in `security`; 2 of 2 eligible in `cab`"
        )]
    );
    out.clear();
    // alice is in both groups: she counts in security, the first that needs her.
    driver.feed(
        &decide("2", "2026-03-02T10:00:00Z", "alice", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("3", "2026-03-02T10:01:00Z", "bob", "approve"),
        &mut out,
    );
    // carol requested the change; dave is in neither group; alice decided already.
    driver.feed(
        &decide("4", "2026-03-02T10:02:00Z", "carol", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("5", "2026-03-02T10:03:00Z", "dave", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("6", "2026-03-02T10:04:00Z", "alice", "approve"),
        &mut out,
    );
    assert_eq!(
        approvals(&out),
        [
            row("alice", "approved", "security 1 of 1, cab 0 of 2"),
            row("bob", "approved", "security 1 of 1, cab 1 of 2"),
            row(
                "carol",
                "refused",
                "`carol` may not decide: separation of duties"
            ),
            row(
                "dave",
                "refused",
                "`dave` is not in groups `security`, `cab`"
            ),
            row("alice", "refused", "`alice` already approved"),
        ]
    );
    assert_eq!(out[0].args.as_ref().unwrap()["group"], "security");
    assert!(transitions(&out).is_empty(), "cab still needs one");
    out.clear();
    // sam can only count in security: alice moves to cab, and both quorums are met.
    driver.feed(
        &decide("7", "2026-03-02T10:05:00Z", "sam", "approve"),
        &mut out,
    );
    assert_eq!(
        approvals(&out),
        [
            row("sam", "approved", "security 1 of 1, cab 2 of 2"),
            row("", "granted", ""),
        ]
    );
    assert_eq!(transitions(&out), ["approved"]);
}

const VETO: &str = r#"
group cab = ["alice", "bob", "carol", "dave"]
workflow change key event.subject {
  start on "change.created"
  state assessing {
    enter { request approval from cab quorum 3 veto 2 }
    on approval granted -> approved
    on approval rejected -> rejected
  }
  final state approved
  final state rejected
}
"#;

#[test]
fn a_veto_threshold_needs_that_many_rejections() {
    let mut driver = Driver::new(Engine::new(rules(VETO)));
    let mut out = Vec::new();
    let created = event(
        "1",
        "change.created",
        "2026-03-02T09:00:00Z",
        "C-1",
        json!({}),
    );
    driver.feed(&created, &mut out);
    out.clear();
    driver.feed(
        &decide("2", "2026-03-02T10:00:00Z", "alice", "reject"),
        &mut out,
    );
    driver.feed(
        &decide("3", "2026-03-02T10:01:00Z", "alice", "reject"),
        &mut out,
    );
    driver.feed(
        &decide("4", "2026-03-02T10:02:00Z", "bob", "approve"),
        &mut out,
    );
    assert!(
        transitions(&out).is_empty(),
        "one rejection of two does not reject"
    );
    driver.feed(
        &decide("5", "2026-03-02T10:03:00Z", "carol", "reject"),
        &mut out,
    );
    assert_eq!(
        approvals(&out),
        [
            row("alice", "rejected", "1 of 2 rejections"),
            row("alice", "refused", "`alice` already rejected"),
            row("bob", "approved", "1 of 3"),
            row("carol", "rejected", "2 of 2 rejections"),
            row("", "vetoed", ""),
        ]
    );
    assert_eq!(transitions(&out), ["rejected"]);
}

const DUTIES: &str = r#"
group cab = ["alice", "bob", "carol", "dave", "erin"]
workflow change key event.subject {
  start on "change.created"
  state assessing {
    enter {
      set requester = event.data.requester
      set implementer = event.data.implementer
      request approval from cab quorum all
        excluding requester, implementer, event.data.assignee, event.data.watchers
    }
    on approval granted -> approved
  }
  final state approved
}
"#;

#[test]
fn exclusions_come_from_variables_and_event_fields() {
    let mut driver = Driver::new(Engine::new(rules(DUTIES)));
    let mut out = Vec::new();
    let created = event(
        "1",
        "change.created",
        "2026-03-02T09:00:00Z",
        "C-1",
        json!({"requester": "alice", "implementer": "bob", "assignee": "carol", "watchers": ["dave"]}),
    );
    driver.feed(&created, &mut out);
    let requested = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("requested"))
        .unwrap();
    assert_eq!(
        requested.args.as_ref().unwrap()["excluded"],
        json!(["alice", "bob", "carol", "dave"])
    );
    assert_eq!(
        requested.args.as_ref().unwrap()["eligible"],
        json!(["erin"])
    );
    out.clear();
    for (i, who) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
        let e = decide(&format!("d{i}"), "2026-03-02T10:00:00Z", who, "approve");
        driver.feed(&e, &mut out);
    }
    assert!(
        approvals(&out)
            .iter()
            .all(|(_, o, m)| o == "refused" && m.ends_with("separation of duties")),
        "{:?}",
        approvals(&out)
    );
    driver.feed(
        &decide("e", "2026-03-02T10:05:00Z", "erin", "approve"),
        &mut out,
    );
    assert_eq!(transitions(&out), ["approved"]);
}

const DELEGATION: &str = r#"
group cab = ["alice", "bob", "carol"]
workflow change key event.subject {
  start on "change.created"
  state assessing {
    enter {
      set requester = event.data.requester
      request approval from cab quorum 2 excluding requester
    }
    on approval granted -> approved
  }
  final state approved
}
"#;

#[test]
fn a_delegate_decides_for_the_delegator_and_excluded_people_cannot_be_delegates() {
    let mut driver = Driver::new(Engine::new(rules(DELEGATION)));
    let mut out = Vec::new();
    let created = event(
        "1",
        "change.created",
        "2026-03-02T09:00:00Z",
        "C-1",
        json!({"requester": "carol"}),
    );
    driver.feed(&created, &mut out);
    out.clear();
    // To the requester: refused. From an outsider: refused. bob to dave: in force.
    driver.feed(
        &delegate("2", "2026-03-02T09:10:00Z", "bob", "carol"),
        &mut out,
    );
    driver.feed(
        &delegate("3", "2026-03-02T09:11:00Z", "zoe", "dave"),
        &mut out,
    );
    driver.feed(
        &delegate("4", "2026-03-02T09:12:00Z", "bob", "dave"),
        &mut out,
    );
    driver.feed(
        &delegate("5", "2026-03-02T09:13:00Z", "bob", "erin"),
        &mut out,
    );
    driver.feed(
        &delegate("5b", "2026-03-02T09:14:00Z", "carol", "alice"),
        &mut out,
    );
    assert_eq!(
        approvals(&out),
        [
            row(
                "bob",
                "refused",
                "`carol` may not decide: separation of duties, so cannot be delegated to"
            ),
            row("zoe", "refused", "`zoe` is not in group `cab`"),
            row("bob", "delegated", "`dave` decides for `bob`"),
            row("bob", "refused", "`bob` already delegated to `dave`"),
            row(
                "carol",
                "refused",
                "`carol` may not decide: separation of duties"
            ),
        ]
    );
    // The delegation is evidence: who, to whom, over what.
    let delegated = &out[2];
    assert_eq!(delegated.args.as_ref().unwrap()["from"], "bob");
    assert_eq!(delegated.args.as_ref().unwrap()["to"], "dave");
    out.clear();
    driver.feed(
        &decide("6", "2026-03-02T10:00:00Z", "dave", "approve"),
        &mut out,
    );
    // dave's delegation is used up: a second decision is his own, and he is no member.
    driver.feed(
        &decide("7", "2026-03-02T10:01:00Z", "dave", "approve"),
        &mut out,
    );
    assert_eq!(
        approvals(&out),
        [
            row("dave", "approved", "1 of 2"),
            row("dave", "refused", "`dave` is not in group `cab`"),
        ]
    );
    assert_eq!(out[0].args.as_ref().unwrap()["for"], "bob");
    // bob's own decision now comes too late: his delegate decided for him.
    out.clear();
    driver.feed(
        &decide("8", "2026-03-02T10:02:00Z", "bob", "approve"),
        &mut out,
    );
    assert_eq!(
        approvals(&out),
        [row("bob", "refused", "`bob` already approved")]
    );
    driver.feed(
        &decide("9", "2026-03-02T10:03:00Z", "alice", "approve"),
        &mut out,
    );
    assert_eq!(transitions(&out), ["approved"]);
}

const EXPIRY: &str = r#"
calendar office {
  zone "Europe/Berlin"
  hours mon..fri 08:00..18:00
  holidays "2026-04-03", "2026-04-06"
}
group cab = ["alice", "bob"]
workflow change key event.subject {
  start on "change.created"
  state assessing {
    enter { request approval from cab quorum 2 within 2 business days in office }
    on approval granted -> approved
    on approval expired -> rejected { violation "no decision on ${key} in time" }
  }
  final state approved
  final state rejected
}
"#;

#[test]
fn approval_expires_after_business_days_skipping_weekends_and_holidays() {
    let mut driver = Driver::new(Engine::new(rules(EXPIRY)));
    let mut out = Vec::new();
    // Thursday 2026-04-02 10:00 Berlin (CEST). Good Friday and Easter Monday are
    // holidays: the 2 business days are Tuesday 7 and Wednesday 8 April, so the request
    // expires on Wednesday at 10:00 Berlin, 08:00 UTC.
    let created = event(
        "1",
        "change.created",
        "2026-04-02T08:00:00Z",
        "C-1",
        json!({}),
    );
    driver.feed(&created, &mut out);
    driver.feed(
        &decide("2", "2026-04-07T09:00:00Z", "alice", "approve"),
        &mut out,
    );
    out.clear();
    driver.advance(t("2026-04-08T07:59:59Z"), &mut out);
    assert!(approvals(&out).is_empty());
    driver.advance(t("2026-04-08T12:00:00Z"), &mut out);
    let expired = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("expired"))
        .unwrap();
    assert_eq!(expired.at, t("2026-04-08T08:00:00Z"));
    assert_eq!(transitions(&out), ["rejected"]);
    assert_eq!(out.iter().filter(|d| d.kind == Kind::Violation).count(), 1);
}

const MATERIAL: &str = r#"
group cab = ["alice", "bob", "carol"]
workflow change key event.subject {
  start on "change.created"
  state assessing {
    enter {
      request approval from cab quorum 2
        material event.data.summary, event.data.plan
        within 3 days
    }
    on approval granted -> approved
    on approval reopened { evidence "approval of ${key} asked again" }
    on approval expired -> lapsed
  }
  state approved {
    on approval reopened -> reassessing
    on "change.implemented" -> done
  }
  state reassessing {
    on approval granted -> approved
    on approval expired -> lapsed
  }
  final state done
  final state lapsed
}
"#;

fn hash_of(material: serde_json::Value) -> String {
    hex::encode(Sha256::digest(canonical_json(&material).as_bytes()))
}

fn edit(id: &str, time: &str, data: serde_json::Value) -> Event {
    event(id, "change.updated", time, "C-1", data)
}

#[test]
fn a_material_edit_voids_the_decisions_and_reopens_the_approval() {
    // `change.updated` reaches the workflow only through a trigger: add one that never holds.
    let text = MATERIAL.replace(
        "on approval expired -> lapsed\n  }\n  state approved",
        "on approval expired -> lapsed\n    on \"change.updated\" when false -> lapsed\n  }\n  state approved",
    );
    let mut driver = Driver::new(Engine::new(rules(&text)));
    let mut out = Vec::new();
    let v1 = json!({"summary": "Upgrade db", "plan": "v1"});
    driver.feed(
        &event(
            "1",
            "change.created",
            "2026-03-02T09:00:00Z",
            "C-1",
            v1.clone(),
        ),
        &mut out,
    );
    let first = hash_of(json!({"event.data.summary": "Upgrade db", "event.data.plan": "v1"}));
    let requested = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("requested"))
        .unwrap();
    assert_eq!(requested.args.as_ref().unwrap()["sha256"], first);
    out.clear();

    // While pending: alice approves, the plan changes, her approval is void.
    driver.feed(
        &decide("2", "2026-03-02T10:00:00Z", "alice", "approve"),
        &mut out,
    );
    assert_eq!(out[0].args.as_ref().unwrap()["sha256"], first);
    driver.feed(
        &edit(
            "3",
            "2026-03-02T11:00:00Z",
            json!({"summary": "Upgrade db", "plan": "v2"}),
        ),
        &mut out,
    );
    // An edit that changes nothing material changes nothing.
    driver.feed(
        &edit(
            "4",
            "2026-03-02T11:30:00Z",
            json!({"summary": "Upgrade db", "plan": "v2", "note": "x"}),
        ),
        &mut out,
    );
    let second = hash_of(json!({"event.data.summary": "Upgrade db", "event.data.plan": "v2"}));
    let reopened = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("reopened"))
        .unwrap();
    assert_eq!(
        reopened.args.as_ref().unwrap()["changed"],
        json!(["event.data.plan"])
    );
    assert_eq!(reopened.args.as_ref().unwrap()["previous_sha256"], first);
    assert_eq!(reopened.args.as_ref().unwrap()["sha256"], second);
    assert_eq!(
        out.iter().filter(|d| d.kind == Kind::Evidence).count(),
        1,
        "`on approval reopened` ran once"
    );
    out.clear();
    // alice decides again (her first decision is void) and bob joins: granted, over v2.
    driver.feed(
        &decide("5", "2026-03-02T12:00:00Z", "alice", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("6", "2026-03-02T12:01:00Z", "bob", "approve"),
        &mut out,
    );
    assert_eq!(
        approvals(&out),
        [
            row("alice", "approved", "1 of 2"),
            row("bob", "approved", "2 of 2"),
            row("", "granted", ""),
        ]
    );
    assert!(
        out.iter()
            .filter(|d| d.kind == Kind::Approval)
            .all(|d| d.args.as_ref().unwrap()["sha256"] == second)
    );
    assert_eq!(transitions(&out), ["approved"]);
    out.clear();

    // After approval: the summary changes, approval is re-opened and the instance
    // waits again; the old expiry is gone, a new one runs from the edit.
    driver.feed(
        &edit(
            "7",
            "2026-03-03T09:00:00Z",
            json!({"summary": "Upgrade db and cache", "plan": "v2"}),
        ),
        &mut out,
    );
    assert_eq!(transitions(&out), ["reassessing"]);
    assert_eq!(approvals(&out)[0].1, "reopened");
    assert!(approvals(&out)[0].2.contains("after approval"));
    out.clear();
    // Before the original deadline (03-05 09:00) the new one counts: none at 03-05.
    driver.advance(t("2026-03-05T12:00:00Z"), &mut out);
    assert!(out.is_empty(), "{out:?}");
    driver.feed(
        &decide("8", "2026-03-05T13:00:00Z", "carol", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("9", "2026-03-05T13:01:00Z", "bob", "approve"),
        &mut out,
    );
    assert_eq!(transitions(&out), ["approved"]);
    out.clear();
    driver.feed(
        &event(
            "10",
            "change.implemented",
            "2026-03-06T09:00:00Z",
            "C-1",
            json!({}),
        ),
        &mut out,
    );
    assert_eq!(transitions(&out), ["done"]);
}

#[test]
fn a_reopened_approval_expires_from_the_edit() {
    let text = MATERIAL.replace(
        "on approval expired -> lapsed\n  }\n  state approved",
        "on approval expired -> lapsed\n    on \"change.updated\" when false -> lapsed\n  }\n  state approved",
    );
    let mut driver = Driver::new(Engine::new(rules(&text)));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "change.created",
            "2026-03-02T09:00:00Z",
            "C-1",
            json!({"summary": "a", "plan": "p"}),
        ),
        &mut out,
    );
    driver.feed(
        &edit("2", "2026-03-03T09:00:00Z", json!({"summary": "b"})),
        &mut out,
    );
    out.clear();
    driver.advance(t("2026-03-07T00:00:00Z"), &mut out);
    let expired: Vec<_> = out
        .iter()
        .filter(|d| d.outcome.as_deref() == Some("expired"))
        .map(|d| d.at)
        .collect();
    assert_eq!(expired, [t("2026-03-06T09:00:00Z")]);
    assert_eq!(transitions(&out), ["lapsed"]);
}

const LADDERS: &str = r#"
calendar office {
  zone "Europe/Berlin"
  hours mon..fri 08:00..18:00
}
workflow incident key event.subject {
  start on "incident.created"
  escalation chase {
    stop on "incident.acknowledged"
    after 1 hour { evidence "paged ${key}" }
    after 2 hours repeat every 1 hour times 2 only in working hours of office {
      evidence "manager told about ${key}"
    }
  }
  escalation nag {
    stop on "incident.acknowledged"
    after 10 minutes repeat every 10 minutes { evidence "still open" }
  }
  state open {
    enter { escalate chase }
    on "incident.nag" { escalate nag }
    on "incident.resolved" -> resolved
  }
  final state resolved
}
"#;

fn ladder_steps(
    out: &[Decision],
) -> Vec<(chrono::DateTime<chrono::Utc>, String, serde_json::Value)> {
    out.iter()
        .filter(|d| d.kind == Kind::Escalation)
        .map(|d| {
            (
                d.at,
                d.outcome.clone().unwrap(),
                d.args.clone().unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

#[test]
fn a_step_outside_working_hours_waits_and_repeats_a_bounded_number_of_times() {
    let mut driver = Driver::new(Engine::new(rules(LADDERS)));
    let mut out = Vec::new();
    // Friday 2026-03-13 15:00 Berlin (CET). Step 2 falls due at 18:00 Berlin, the end
    // of the working day: it waits for Monday 08:00 Berlin (07:00 UTC), then repeats
    // twice an hour apart.
    driver.feed(
        &event(
            "1",
            "incident.created",
            "2026-03-13T14:00:00Z",
            "INC-1",
            json!({}),
        ),
        &mut out,
    );
    driver.advance(t("2026-03-16T15:00:00Z"), &mut out);
    let step = |s: u64, r: u64| json!({"ladder": "chase", "step": s, "repeat": r});
    assert_eq!(
        ladder_steps(&out),
        vec![
            (
                t("2026-03-13T14:00:00Z"),
                "started".to_string(),
                serde_json::Value::Null
            ),
            (t("2026-03-13T15:00:00Z"), "step 1".to_string(), step(1, 0)),
            (
                t("2026-03-13T17:00:00Z"),
                "deferred".to_string(),
                step(2, 0)
            ),
            (t("2026-03-16T07:00:00Z"), "step 2".to_string(), step(2, 0)),
            (t("2026-03-16T08:00:00Z"), "step 2".to_string(), step(2, 1)),
            (t("2026-03-16T09:00:00Z"), "step 2".to_string(), step(2, 2)),
        ]
    );
    assert_eq!(out.iter().filter(|d| d.kind == Kind::Evidence).count(), 4);
}

#[test]
fn an_endless_last_step_repeats_until_the_ladder_stops() {
    let mut driver = Driver::new(Engine::new(rules(LADDERS)));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "incident.created",
            "2026-03-16T09:00:00Z",
            "INC-1",
            json!({}),
        ),
        &mut out,
    );
    driver.feed(
        &event(
            "2",
            "incident.nag",
            "2026-03-16T09:00:00Z",
            "INC-1",
            json!({}),
        ),
        &mut out,
    );
    driver.feed(
        &event(
            "3",
            "incident.acknowledged",
            "2026-03-16T09:35:00Z",
            "INC-1",
            json!({}),
        ),
        &mut out,
    );
    driver.advance(t("2026-03-17T09:00:00Z"), &mut out);
    let nag: Vec<(String, u64)> = out
        .iter()
        .filter(|d| d.kind == Kind::Escalation && d.to.as_deref() == Some("nag"))
        .map(|d| {
            (
                d.outcome.clone().unwrap(),
                d.args
                    .as_ref()
                    .map_or(0, |a| a["repeat"].as_u64().unwrap_or(0)),
            )
        })
        .collect();
    assert_eq!(
        nag,
        [
            ("started".to_string(), 0),
            ("step 1".to_string(), 0),
            ("step 1".to_string(), 1),
            ("step 1".to_string(), 2),
            ("stopped".to_string(), 0),
        ]
    );
}

#[test]
fn an_edit_that_reopens_the_approval_does_not_also_take_the_old_states_transition() {
    let text = MATERIAL.replace(
        "on \"change.implemented\" -> done",
        "on \"change.implemented\" -> done\n    on \"change.updated\" when event.data.close == true -> done",
    );
    let mut driver = Driver::new(Engine::new(rules(&text)));
    let mut out = Vec::new();
    let v1 = json!({"summary": "a", "plan": "p", "close": false});
    driver.feed(
        &event("1", "change.created", "2026-03-02T09:00:00Z", "C-1", v1),
        &mut out,
    );
    driver.feed(
        &decide("2", "2026-03-02T10:00:00Z", "alice", "approve"),
        &mut out,
    );
    driver.feed(
        &decide("3", "2026-03-02T10:01:00Z", "bob", "approve"),
        &mut out,
    );
    out.clear();
    // The edit re-opens the approval (-> reassessing); its `close` is not also acted
    // on as if the instance were still approved.
    driver.feed(
        &edit(
            "4",
            "2026-03-02T11:00:00Z",
            json!({"summary": "b", "plan": "p", "close": true}),
        ),
        &mut out,
    );
    assert_eq!(transitions(&out), ["reassessing"]);
}

const STORED: &str = r#"
calendar office {
  zone "Europe/Berlin"
  hours mon..fri 08:00..18:00
}
group security = ["sam", "alice"]
group cab = ["alice", "bob", "carol"]
workflow change key event.subject {
  start on "change.created"
  escalation nag {
    stop on "change.closed"
    after 1 hour repeat every 1 hour times 5 only in working hours of office { evidence "nag" }
  }
  state assessing {
    enter {
      set requester = event.data.requester
      request approval quorum 1 from security, 2 from cab
        excluding requester veto 2 material event.data.summary within 2 days
      escalate nag
    }
    on approval granted -> approved
    on "change.updated" when false -> approved
  }
  final state approved
}
"#;

#[test]
fn approvals_and_repeating_ladders_survive_the_store_encoding() {
    use steward_engine::store::codec::{
        decode_instance, decode_timer, encode_instance, encode_timer,
    };
    let rules = rules(STORED);
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    driver.feed(
        &event(
            "1",
            "change.created",
            "2026-03-02T09:00:00Z",
            "C-1",
            json!({"requester": "carol", "summary": "s"}),
        ),
        &mut out,
    );
    driver.feed(
        &delegate("2", "2026-03-02T09:10:00Z", "bob", "dave"),
        &mut out,
    );
    driver.feed(
        &decide("3", "2026-03-02T09:20:00Z", "alice", "reject"),
        &mut out,
    );
    driver.feed(
        &decide("4", "2026-03-02T09:30:00Z", "sam", "approve"),
        &mut out,
    );
    driver.advance(t("2026-03-02T11:30:00Z"), &mut out);
    let world = driver.engine.world();
    let (&(w, _), inst) = world.instances.iter().next().unwrap();
    let approval = inst.approval.as_ref().unwrap();
    assert_eq!(
        approval.delegations,
        [("bob".to_string(), "dave".to_string())]
    );
    assert_eq!(approval.rejections, ["alice"]);
    assert_eq!(approval.veto, 2);
    assert_eq!(approval.roles.len(), 2);
    assert_eq!(approval.material["event.data.summary"], "s");
    let encoded: serde_json::Value =
        serde_json::from_str(&encode_instance(&rules, w, inst)).unwrap();
    assert_eq!(decode_instance(&rules, w, &encoded).as_ref(), Some(inst));
    let mut repeated = 0;
    for kind in world.timers.values() {
        if let steward_engine::core::TimerKind::Escalation { repeat, .. } = kind {
            repeated = repeated.max(*repeat);
        }
        let encoded = encode_timer(&rules, kind);
        assert_eq!(decode_timer(&rules, &encoded).as_ref(), Some(kind));
    }
    assert_eq!(
        repeated, 2,
        "the ladder's timer is for its second repetition"
    );
}
