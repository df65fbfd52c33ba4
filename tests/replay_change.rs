//! `steward replay` over the ISO 20000 example's change management (change.stw): the
//! CAB quorum is reached only by eligible, distinct approvers; a material edit after
//! approval re-opens it; an emergency change's post-implementation review is due
//! within 5 business days of its implementation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

fn decisions() -> Vec<Value> {
    let (out, _) = replay(&iso(), &iso_events(), &["--until", "2026-07-20T00:00:00Z"]);
    json_lines(&out)
}

fn s(d: &Value, k: &str) -> String {
    d[k].as_str().unwrap_or("").to_string()
}

fn of<'a>(all: &'a [Value], key: &str) -> Vec<&'a Value> {
    all.iter().filter(|d| s(d, "key") == key).collect()
}

#[test]
fn the_cab_quorum_counts_only_eligible_distinct_approvers() {
    let all = decisions();
    let chg = of(&all, "CHG-201");
    // Before the edit (evt-0108): the requester, a second approval and an outsider
    // are refused, each with the reason; alice and bob grant.
    let first: Vec<(String, String, String)> = chg
        .iter()
        .filter(|d| s(d, "kind") == "approval" && s(d, "at").as_str() < "2026-04-29")
        .map(|d| (s(d, "approver"), s(d, "outcome"), s(d, "message")))
        .collect();
    let row = |a: &str, o: &str, m: &str| (a.to_string(), o.to_string(), m.to_string());
    assert_eq!(
        first,
        [
            row("", "requested", "2 of 4 eligible in `cab`"),
            row(
                "erin",
                "refused",
                "`erin` may not decide: separation of duties"
            ),
            row("alice", "approved", "1 of 2"),
            row("alice", "refused", "`alice` already approved"),
            row("mallory", "refused", "`mallory` is not in group `cab`"),
            row("bob", "approved", "2 of 2"),
            row("", "granted", ""),
        ]
    );
    // Every decision carries the hash of what it is about: the summary and description.
    let requested = chg.iter().find(|d| s(d, "outcome") == "requested").unwrap();
    let hash = requested["args"]["sha256"].as_str().unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(
        requested["args"]["material"]["event.data.issue.fields.summary"],
        "Upgrade PostgreSQL to 17"
    );
    for d in chg
        .iter()
        .filter(|d| s(d, "kind") == "approval" && s(d, "at").as_str() < "2026-04-29")
    {
        assert_eq!(d["args"]["sha256"], hash, "{d}");
    }
    let approved_at: Vec<String> = chg
        .iter()
        .filter(|d| s(d, "kind") == "transition" && s(d, "to") == "approved")
        .map(|d| s(d, "at"))
        .collect();
    assert_eq!(
        approved_at,
        ["2026-04-28T14:00:00Z", "2026-04-29T09:30:00Z"]
    );
}

#[test]
fn a_material_edit_after_approval_reopens_it() {
    let all = decisions();
    let chg = of(&all, "CHG-201");
    let reopened: Vec<&&Value> = chg
        .iter()
        .filter(|d| s(d, "outcome") == "reopened")
        .collect();
    assert_eq!(reopened.len(), 1);
    let r = reopened[0];
    assert_eq!(s(r, "at"), "2026-04-29T08:00:00Z");
    assert_eq!(s(r, "state"), "approved");
    assert_eq!(
        r["args"]["changed"],
        serde_json::json!(["event.data.issue.fields.summary"])
    );
    assert_ne!(r["args"]["sha256"], r["args"]["previous_sha256"]);
    let new_hash = r["args"]["sha256"].clone();
    // Back to waiting: reassessing, then the CAB decides again on the new content —
    // carol through frank, her delegate — and the change is approved again.
    let after: Vec<(String, String, String, String)> = chg
        .iter()
        .filter(|d| s(d, "at").as_str() >= "2026-04-29T08:00:00Z")
        .filter(|d| matches!(s(d, "kind").as_str(), "approval" | "transition"))
        .map(|d| (s(d, "kind"), s(d, "approver"), s(d, "outcome"), s(d, "to")))
        .collect();
    let row = |k: &str, a: &str, o: &str, t: &str| {
        (k.to_string(), a.to_string(), o.to_string(), t.to_string())
    };
    assert_eq!(
        after,
        [
            row("approval", "", "reopened", ""),
            row("transition", "", "", "reassessing"),
            row("approval", "carol", "delegated", ""),
            row("approval", "frank", "approved", ""),
            row("approval", "dave", "approved", ""),
            row("approval", "", "granted", ""),
            row("transition", "", "", "approved"),
            row("transition", "", "", "closed"),
        ]
    );
    let by_frank = chg.iter().find(|d| s(d, "approver") == "frank").unwrap();
    assert_eq!(by_frank["args"]["for"], "carol");
    assert_eq!(by_frank["args"]["sha256"], new_hash);
    // The deadline of the first request (2026-05-04) was replaced: nothing expired.
    assert!(!chg.iter().any(|d| s(d, "outcome") == "expired"));
}

#[test]
fn an_emergency_change_without_its_review_in_5_business_days_is_a_violation() {
    let all = decisions();
    // CHG-202 was implemented on Wednesday 2026-04-29 at 14:00 UTC, 16:00 in Berlin
    // (CEST). Counting 5 business days of the office calendar: Thursday 30 April (1);
    // Friday 1 May is a holiday; Monday 4 (2), Tuesday 5 (3), Wednesday 6 (4),
    // Thursday 7 May (5) — at 16:00 Berlin, 14:00 UTC.
    let chg = of(&all, "CHG-202");
    let violations: Vec<(String, String)> = chg
        .iter()
        .filter(|d| s(d, "kind") == "violation")
        .map(|d| (s(d, "at"), s(d, "message")))
        .collect();
    assert_eq!(
        violations,
        [(
            "2026-05-07T14:00:00Z".to_string(),
            "post-implementation review of emergency change CHG-202 not held within 5 business days"
                .to_string()
        )]
    );
    assert_eq!(s(chg.last().unwrap(), "to"), "review_overdue");
    // CHG-203 was reviewed two days after its implementation: no violation.
    let reviewed = of(&all, "CHG-203");
    assert!(!reviewed.iter().any(|d| s(d, "kind") == "violation"));
    assert_eq!(s(reviewed.last().unwrap(), "to"), "reviewed");
}
