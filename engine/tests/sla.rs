//! SLA clocks on the virtual clock: business and wall goals, pauses, thresholds that
//! fire once per run, reset, cancel, retroactive starts, expressions, and a restart
//! through the SQLite store that changes nothing.
//!
//! The calendar is `office`: Europe/Berlin, 08:00–18:00 Monday to Friday. In March 2026
//! Berlin is UTC+1 until Sunday 29 March, UTC+2 after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{rules, t};
use serde_json::{Value as Json, json};
use steward_engine::core::Engine;
use steward_engine::decision::{Decision, Kind};
use steward_engine::event::Event;
use steward_engine::replay::Driver;
use steward_engine::ruleset::Ruleset;
use steward_engine::store::sqlite::SqliteStore;
use steward_engine::store::{Meta, Store};

fn event(id: &str, ty: &str, time: &str, data: Json) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": ty,
        "time": time, "subject": "INC-1", "data": data,
    }))
    .unwrap()
}

fn rules_with(goal: &str, extra: &str) -> Arc<Ruleset> {
    rules(&format!(
        r#"
calendar office {{
  zone "Europe/Berlin"
  hours mon..fri 08:00..18:00
}}
workflow incident key event.subject {{
  start on "incident.created"
  sla resolution {{
    goal {goal}
    start on "incident.created" at event.data.opened_at
    pause on "incident.updated" when event.data.status == "on_hold"
    resume on "incident.updated" when event.data.status == "in_progress"
    stop on "incident.resolved"
    reset on "incident.reopened"
    cancel on "incident.cancelled"
    at 50% {{ evidence "${{key}}: half the resolution SLA used" }}
    at 75% {{ evidence "${{key}}: 75% used, ${{sla.resolution.remaining}} left" }}
    at 100% {{ violation "${{key}} breached its resolution SLA" }}
  }}
  {extra}
  state open {{
    on "incident.resolved" -> resolved {{
      evidence "${{key}} resolved" {{
        elapsed: sla.resolution.elapsed,
        remaining: sla.resolution.remaining,
        breached: sla.resolution.breached,
        stopped: sla.resolution.stopped
      }}
    }}
    on "incident.cancelled" -> resolved
  }}
  final state resolved
}}
"#
    ))
}

fn run(rules: &Arc<Ruleset>, events: &[Event], until: &str) -> Vec<Decision> {
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    for e in events {
        driver.feed(e, &mut out);
    }
    driver.advance(t(until), &mut out);
    out
}

/// `(at, transition, threshold)` of every `sla` decision.
fn sla_log(out: &[Decision]) -> Vec<(String, String, Option<u64>)> {
    out.iter()
        .filter(|d| d.kind == Kind::Sla)
        .map(|d| {
            let args = d.args.as_ref().unwrap();
            (
                steward_engine::event::format_time(d.at),
                d.outcome.clone().unwrap(),
                args.get("threshold").and_then(Json::as_u64),
            )
        })
        .collect()
}

fn row(at: &str, what: &str, threshold: Option<u64>) -> (String, String, Option<u64>) {
    (at.to_string(), what.to_string(), threshold)
}

fn arg<'a>(d: &'a Decision, name: &str) -> &'a Json {
    d.args.as_ref().unwrap().get(name).unwrap()
}

/// Created Friday 2026-03-06 17:00 Berlin (16:00Z), on hold from 17:30 to Monday 10:00.
fn weekend_pause() -> Vec<Event> {
    vec![
        event(
            "1",
            "incident.created",
            "2026-03-06T16:00:00Z",
            json!({"opened_at": "2026-03-06T16:00:00Z"}),
        ),
        event(
            "2",
            "incident.updated",
            "2026-03-06T16:30:00Z",
            json!({"status": "on_hold"}),
        ),
        event(
            "3",
            "incident.updated",
            "2026-03-09T09:00:00Z",
            json!({"status": "in_progress"}),
        ),
    ]
}

#[test]
fn a_business_goal_counts_working_time_outside_pauses() {
    let out = run(
        &rules_with("4 business hours in office", ""),
        &weekend_pause(),
        "2026-03-10T00:00:00Z",
    );
    // 30 minutes count on Friday (17:00–17:30); Monday 08:00–10:00 is paused. From
    // Monday 10:00 Berlin the remaining 3.5 hours run: 50% (2 h) at 11:30, 75% (3 h) at
    // 12:30, 100% at 13:30 Berlin, that is 10:30Z, 11:30Z, 12:30Z.
    assert_eq!(
        sla_log(&out),
        vec![
            row("2026-03-06T16:00:00Z", "started", None),
            row("2026-03-06T16:30:00Z", "paused", None),
            row("2026-03-09T09:00:00Z", "resumed", None),
            row("2026-03-09T10:30:00Z", "threshold", Some(50)),
            row("2026-03-09T11:30:00Z", "threshold", Some(75)),
            row("2026-03-09T12:30:00Z", "threshold", Some(100)),
        ]
    );
    let paused = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("paused"))
        .unwrap();
    assert_eq!(arg(paused, "elapsed"), "1800s");
    assert_eq!(arg(paused, "remaining"), "12600s");
    assert_eq!(paused.to.as_deref(), Some("resolution"));
    // The 75% action reads the clock: 1 hour left.
    let warning = out
        .iter()
        .find(|d| d.kind == Kind::Evidence && d.message.as_deref().unwrap_or("").contains("75%"))
        .unwrap();
    assert_eq!(
        warning.message.as_deref(),
        Some("INC-1: 75% used, 3600s left")
    );
    let breach = out.iter().find(|d| d.kind == Kind::Violation).unwrap();
    assert_eq!(breach.at, t("2026-03-09T12:30:00Z"));
}

#[test]
fn a_wall_goal_counts_all_time_outside_pauses() {
    let out = run(
        &rules_with("8 hours", ""),
        &weekend_pause(),
        "2026-03-10T00:00:00Z",
    );
    // 30 minutes on Friday, then from Monday 09:00Z: 50% (4 h) at 12:30Z, 75% (6 h) at
    // 14:30Z, 100% (8 h) at 16:30Z.
    let log = sla_log(&out);
    assert_eq!(
        log[3..],
        [
            row("2026-03-09T12:30:00Z", "threshold", Some(50)),
            row("2026-03-09T14:30:00Z", "threshold", Some(75)),
            row("2026-03-09T16:30:00Z", "threshold", Some(100)),
        ]
    );
}

#[test]
fn thresholds_fire_once_per_run_and_a_reset_starts_a_new_run() {
    let mut events = weekend_pause();
    events.extend([
        // After the breach: pausing and resuming again fires nothing twice.
        event(
            "4",
            "incident.updated",
            "2026-03-09T14:00:00Z",
            json!({"status": "on_hold"}),
        ),
        event(
            "5",
            "incident.updated",
            "2026-03-09T15:00:00Z",
            json!({"status": "in_progress"}),
        ),
        // Reopened Tuesday 09:00 Berlin (08:00Z): a new run from zero.
        event("6", "incident.reopened", "2026-03-10T08:00:00Z", json!({})),
    ]);
    let out = run(
        &rules_with("4 business hours in office", ""),
        &events,
        "2026-03-11T00:00:00Z",
    );
    let log = sla_log(&out);
    assert_eq!(
        log[6..],
        [
            row("2026-03-09T14:00:00Z", "paused", None),
            row("2026-03-09T15:00:00Z", "resumed", None),
            row("2026-03-10T08:00:00Z", "reset", None),
            // Tuesday 09:00 Berlin + 2, 3, 4 working hours.
            row("2026-03-10T10:00:00Z", "threshold", Some(50)),
            row("2026-03-10T11:00:00Z", "threshold", Some(75)),
            row("2026-03-10T12:00:00Z", "threshold", Some(100)),
        ]
    );
    let reset = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("reset"))
        .unwrap();
    assert_eq!(
        arg(reset, "run"),
        1,
        "the reset decision records the run that ends"
    );
    let violations = out.iter().filter(|d| d.kind == Kind::Violation).count();
    assert_eq!(violations, 2, "one breach per run");
}

#[test]
fn a_cancelled_clock_fires_nothing_more() {
    let events = vec![
        event(
            "1",
            "incident.created",
            "2026-03-09T08:00:00Z",
            json!({"opened_at": "2026-03-09T08:00:00Z"}),
        ),
        event("2", "incident.cancelled", "2026-03-09T09:00:00Z", json!({})),
    ];
    let out = run(
        &rules_with("4 business hours in office", ""),
        &events,
        "2026-03-20T00:00:00Z",
    );
    // Monday 09:00 Berlin + 2 h = 11:00 Berlin (10:00Z) would be 50%: cancelled before.
    assert_eq!(
        sla_log(&out),
        vec![
            row("2026-03-09T08:00:00Z", "started", None),
            row("2026-03-09T09:00:00Z", "cancelled", None),
        ]
    );
    let cancelled = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("cancelled"))
        .unwrap();
    assert_eq!(arg(cancelled, "elapsed"), "3600s");
}

#[test]
fn a_retroactive_start_fires_passed_thresholds_at_once_in_order() {
    // Opened at 09:00Z, reported at 12:30Z on a wall goal of 4 hours: 50% (11:00Z) and
    // 75% (12:00Z) have passed and fire at once, in order; 100% is due at 13:00Z.
    let events = vec![event(
        "1",
        "incident.created",
        "2026-03-09T12:30:00Z",
        json!({"opened_at": "2026-03-09T09:00:00Z"}),
    )];
    let out = run(&rules_with("4 hours", ""), &events, "2026-03-10T00:00:00Z");
    assert_eq!(
        sla_log(&out),
        vec![
            row("2026-03-09T12:30:00Z", "started", None),
            row("2026-03-09T12:30:00Z", "threshold", Some(50)),
            row("2026-03-09T12:30:00Z", "threshold", Some(75)),
            row("2026-03-09T13:00:00Z", "threshold", Some(100)),
        ]
    );
    let reached: Vec<&Json> = out
        .iter()
        .filter(|d| d.outcome.as_deref() == Some("threshold"))
        .map(|d| arg(d, "reached"))
        .collect();
    assert_eq!(
        reached,
        [
            "2026-03-09T11:00:00Z",
            "2026-03-09T12:00:00Z",
            "2026-03-09T13:00:00Z"
        ]
    );
    let started = &out[0..2].iter().find(|d| d.kind == Kind::Sla).unwrap();
    assert_eq!(arg(started, "started"), "2026-03-09T09:00:00Z");
    assert_eq!(arg(started, "elapsed"), "12600s");
    // The two thresholds' actions have distinct action ids (their own steps), and
    // the clock's decisions come before the instance enters its first state.
    let first_transition = out.iter().position(|d| d.kind == Kind::Transition).unwrap();
    let last_catch_up = out
        .iter()
        .rposition(|d| d.at == t("2026-03-09T12:30:00Z") && d.kind == Kind::Sla)
        .unwrap();
    assert!(last_catch_up < first_transition);
}

#[test]
fn a_start_time_that_is_not_a_time_is_reported_and_the_clock_counts_from_the_event() {
    let events = vec![event(
        "1",
        "incident.created",
        "2026-03-09T12:00:00Z",
        json!({"opened_at": "yesterday"}),
    )];
    let out = run(&rules_with("4 hours", ""), &events, "2026-03-09T12:00:00Z");
    let error = out.iter().find(|d| d.kind == Kind::Error).unwrap();
    assert!(
        error
            .message
            .as_deref()
            .unwrap()
            .contains("`yesterday` is not an RFC 3339 time")
    );
    let started = out.iter().find(|d| d.kind == Kind::Sla).unwrap();
    assert_eq!(arg(started, "started"), "2026-03-09T12:00:00Z");
}

#[test]
fn stopping_records_the_figures_and_expressions_read_them() {
    let mut events = weekend_pause();
    // Monday 11:00 Berlin (10:00Z): 30 min Friday + 1 h Monday = 1.5 h of 4.
    events.push(event(
        "4",
        "incident.resolved",
        "2026-03-09T10:00:00Z",
        json!({}),
    ));
    let out = run(
        &rules_with("4 business hours in office", ""),
        &events,
        "2026-03-20T00:00:00Z",
    );
    let stopped = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("stopped"))
        .unwrap();
    assert_eq!(arg(stopped, "elapsed"), "5400s");
    assert_eq!(arg(stopped, "remaining"), "9000s");
    let evidence = out
        .iter()
        .find(|d| d.message.as_deref() == Some("INC-1 resolved"))
        .unwrap();
    assert_eq!(
        evidence.args,
        Some(json!({"elapsed": "5400s", "remaining": "9000s", "breached": false, "stopped": true}))
    );
    // Nothing fires after the stop.
    assert!(!sla_log(&out).iter().any(|r| r.1 == "threshold"));
}

#[test]
fn clocks_that_start_with_the_instance_and_several_clocks_per_instance() {
    let extra = r#"
  sla response {
    goal 30 minutes
    start with instance
    stop on "incident.acknowledged"
    at 100% { violation "${key} not acknowledged within 30 minutes" }
  }"#;
    let events = vec![
        event(
            "1",
            "incident.created",
            "2026-03-09T09:00:00Z",
            json!({"opened_at": "2026-03-09T09:00:00Z"}),
        ),
        event(
            "2",
            "incident.acknowledged",
            "2026-03-09T09:45:00Z",
            json!({}),
        ),
    ];
    let out = run(
        &rules_with("4 business hours in office", extra),
        &events,
        "2026-03-09T12:00:00Z",
    );
    let response: Vec<(String, String)> = out
        .iter()
        .filter(|d| d.kind == Kind::Sla && d.to.as_deref() == Some("response"))
        .map(|d| {
            (
                steward_engine::event::format_time(d.at),
                d.outcome.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        response,
        [
            ("2026-03-09T09:00:00Z".to_string(), "started".to_string()),
            ("2026-03-09T09:30:00Z".to_string(), "threshold".to_string()),
            ("2026-03-09T09:45:00Z".to_string(), "stopped".to_string()),
        ]
    );
    // The resolution clock is unaffected: Monday 10:00 Berlin + 2 h = 12:00 Berlin.
    assert!(sla_log(&out).contains(&row("2026-03-09T11:00:00Z", "threshold", Some(50))));
}

#[test]
fn the_same_events_give_the_same_decisions_byte_for_byte() {
    let rules = rules_with("4 business hours in office", "");
    let a = run(&rules, &weekend_pause(), "2026-03-10T00:00:00Z");
    let b = run(&rules, &weekend_pause(), "2026-03-10T00:00:00Z");
    let lines = |out: &[Decision]| out.iter().map(Decision::to_json_line).collect::<Vec<_>>();
    assert_eq!(lines(&a), lines(&b));
}

/// Stops after every event (and once mid-pause, once mid-run), saving the world to a
/// SQLite store and loading it back; the decisions are those of one uninterrupted run.
#[tokio::test]
async fn a_restart_through_the_store_changes_no_decision() {
    let rules = rules_with("4 business hours in office", "");
    let mut events = weekend_pause();
    events.push(event(
        "4",
        "incident.updated",
        "2026-03-09T11:00:00Z",
        json!({"status": "on_hold"}),
    ));
    events.push(event(
        "5",
        "incident.updated",
        "2026-03-09T11:20:00Z",
        json!({"status": "in_progress"}),
    ));
    events.push(event(
        "6",
        "incident.resolved",
        "2026-03-10T09:00:00Z",
        json!({}),
    ));
    let until = "2026-03-11T00:00:00Z";
    let want: Vec<String> = run(&rules, &events, until)
        .iter()
        .map(Decision::to_json_line)
        .collect();
    assert!(
        want.iter().any(|l| l.contains("\"threshold\":100")),
        "{want:#?}"
    );

    let dir = std::env::temp_dir().join(format!("steward-sla-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.db");
    let _ = std::fs::remove_file(&path);
    let mut got = Vec::new();
    // Stops: after each event, and at two instants between them (mid-pause on Saturday,
    // and Monday 10:45Z, between the 50% and the next event).
    let stops: Vec<(usize, Option<&str>)> = vec![
        (1, None),
        (2, Some("2026-03-07T12:00:00Z")),
        (3, Some("2026-03-09T10:45:00Z")),
        (4, None),
        (5, None),
        (6, None),
    ];
    let mut fed = 0;
    for (upto, advance) in stops {
        let store = SqliteStore::open(&path).await.unwrap();
        let world = store.load(&rules).await.unwrap();
        let mut driver = Driver::new(Engine::with_world(rules.clone(), world));
        for e in &events[fed..upto] {
            driver.feed(e, &mut got);
        }
        fed = upto;
        if let Some(at) = advance {
            driver.advance(t(at), &mut got);
        }
        let changes = driver.engine.take_changes();
        let meta = Meta::of(driver.engine.world());
        store.commit(&rules, &changes, &meta).await.unwrap();
        // What was saved loads back as the same world.
        let loaded = store.load(&rules).await.unwrap();
        assert_eq!(loaded.instances, driver.engine.world().instances);
        assert_eq!(
            loaded.timers.iter().collect::<Vec<_>>(),
            driver.engine.world().timers.iter().collect::<Vec<_>>()
        );
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let mut driver = Driver::new(Engine::with_world(
        rules.clone(),
        store.load(&rules).await.unwrap(),
    ));
    driver.advance(t(until), &mut got);
    let got: Vec<String> = got.iter().map(Decision::to_json_line).collect();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_threshold_may_move_the_instance_and_the_sla_value_reads_in_conditions() {
    let rules = rules(
        r#"
workflow incident key event.subject {
  start on "incident.created"
  sla resolution {
    goal 2 hours
    stop on "incident.resolved"
    at 100% { goto breached }
  }
  state open {
    on "incident.resolved" when sla.resolution.remaining > duration("1h") -> done {
      evidence "fast"
    }
    on "incident.resolved" -> done
  }
  state breached {
    enter { evidence "${key} breached after ${sla.resolution.elapsed}" }
    on "incident.resolved" -> done
  }
  final state done
}
"#,
    );
    let events = vec![
        event("1", "incident.created", "2026-03-09T08:00:00Z", json!({})),
        event("2", "incident.resolved", "2026-03-09T11:00:00Z", json!({})),
    ];
    let out = run(&rules, &events, "2026-03-10T00:00:00Z");
    let entered: Vec<(String, String)> = out
        .iter()
        .filter(|d| d.kind == Kind::Transition)
        .map(|d| {
            (
                steward_engine::event::format_time(d.at),
                d.to.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entered,
        [
            ("2026-03-09T08:00:00Z".to_string(), "open".to_string()),
            ("2026-03-09T10:00:00Z".to_string(), "breached".to_string()),
            ("2026-03-09T11:00:00Z".to_string(), "done".to_string()),
        ]
    );
    let evidence: Vec<&str> = out
        .iter()
        .filter(|d| d.kind == Kind::Evidence)
        .map(|d| d.message.as_deref().unwrap())
        .collect();
    assert_eq!(evidence, ["INC-1 breached after 7200s"]);

    // Resolved within the first hour: the condition on `remaining` holds.
    let events = vec![
        event("1", "incident.created", "2026-03-09T08:00:00Z", json!({})),
        event("2", "incident.resolved", "2026-03-09T08:30:00Z", json!({})),
    ];
    let out = run(&rules, &events, "2026-03-10T00:00:00Z");
    assert!(out.iter().any(|d| d.message.as_deref() == Some("fast")));
    assert!(
        !out.iter()
            .any(|d| d.outcome.as_deref() == Some("threshold"))
    );
}

#[test]
fn a_breach_already_passed_at_creation_may_choose_the_first_state() {
    let rules = rules(
        r#"
workflow incident key event.subject {
  start on "incident.created"
  sla resolution {
    goal 2 hours
    start on "incident.created" at event.data.opened_at
    at 100% { goto breached }
  }
  state open { on "incident.resolved" -> done }
  state breached {
    exit { evidence "left breached" }
    on "incident.resolved" -> done
  }
  final state done
}
"#,
    );
    let events = vec![event(
        "1",
        "incident.created",
        "2026-03-09T12:00:00Z",
        json!({"opened_at": "2026-03-09T09:00:00Z"}),
    )];
    let out = run(&rules, &events, "2026-03-10T00:00:00Z");
    let transitions: Vec<(Option<String>, Option<String>)> = out
        .iter()
        .filter(|d| d.kind == Kind::Transition)
        .map(|d| (d.from.clone(), d.to.clone()))
        .collect();
    // The instance starts in `breached`, not in `open` (no exit block ran, no second
    // entry into `open` followed).
    assert_eq!(transitions, [(None, Some("breached".to_string()))]);
    assert!(!out.iter().any(|d| d.kind == Kind::Evidence));
    let breach = out
        .iter()
        .find(|d| d.outcome.as_deref() == Some("threshold"))
        .unwrap();
    assert_eq!(arg(breach, "reached"), "2026-03-09T11:00:00Z");
}
