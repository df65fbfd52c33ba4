//! Durable timers over a month of generated events, on the virtual clock: no timer fires
//! early, none fires twice, they fire in due order, and an engine stopped at random
//! points and resumed from its SQLite store decides exactly what one uninterrupted run
//! decides.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use common::{rules, t};
use steward_engine::core::Engine;
use steward_engine::decision::{Decision, Kind, verify_chain};
use steward_engine::event::Event;
use steward_engine::replay::Driver;
use steward_engine::ruleset::Ruleset;
use steward_engine::store::sqlite::SqliteStore;
use steward_engine::store::{Meta, Store};

/// State timers of several lengths, a timer restarted by re-entering its state, an
/// escalation ladder stopped by an acknowledgement, business time on a calendar, and
/// a daily cadence.
const RULES: &str = r#"
calendar office {
  zone "Europe/Berlin"
  hours mon..fri 08:00..18:00
  holidays "2026-03-06"
}

workflow item key event.subject {
  control "8.6.1" "Items are handled in time" detective
  start on "item.opened"
  escalation chase {
    stop on "item.acked"
    after 5 minutes { evidence "chase 1 of ${key}" }
    after 50 minutes { evidence "chase 2 of ${key}" }
  }
  state fresh {
    enter { escalate chase }
    after 7 minutes -> triage
    on "item.poked" -> fresh
  }
  state triage {
    after 2 business hours in office -> working
    on "item.poked" -> fresh
  }
  state working {
    after 3 hours -> waiting
    on "item.closed" -> done
  }
  state waiting {
    after 1 day -> done
    on "item.closed" -> done
  }
  final state done
}

cadence daily every "0 0 9 * * *" in "Europe/Berlin" {
  control "9.1" "A daily look at the open items" detective
  do { evidence "daily look ${period}" }
}
"#;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A month (March 2026, across the DST change) of events for 600 items: each opened at
/// a random instant, then poked, acknowledged and closed at random delays.
fn month(seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed);
    let start = t("2026-03-01T00:00:00Z");
    let mut events: Vec<(DateTime<Utc>, String, String)> = Vec::new();
    for i in 0..600 {
        let key = format!("IT-{i}");
        let opened = start + TimeDelta::seconds(rng.below(30 * 86_400) as i64);
        events.push((opened, "item.opened".into(), key.clone()));
        let mut at = opened;
        for ty in ["item.poked", "item.acked", "item.poked", "item.closed"] {
            // Some steps are skipped; delays from seconds to two days.
            if rng.below(3) == 0 {
                continue;
            }
            at += TimeDelta::seconds(rng.below(2 * 86_400) as i64 + 1);
            events.push((at, ty.into(), key.clone()));
        }
    }
    events.sort();
    events
        .into_iter()
        .enumerate()
        .map(|(n, (at, ty, key))| {
            let json = serde_json::json!({
                "specversion": "1.0", "id": format!("e{n}"), "source": "month",
                "type": ty, "subject": key,
                "time": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            Event::from_json_str(&json.to_string()).unwrap()
        })
        .collect()
}

fn until() -> DateTime<Utc> {
    t("2026-04-05T00:00:00Z")
}

fn uninterrupted(rules: &Arc<Ruleset>, events: &[Event]) -> Vec<Decision> {
    let mut driver = Driver::new(Engine::new(rules.clone()));
    let mut out = Vec::new();
    for e in events {
        driver.feed(e, &mut out);
    }
    driver.advance(until(), &mut out);
    out
}

struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

async fn commit(store: &SqliteStore, driver: &mut Driver) {
    let changes = driver.engine.take_changes();
    let meta = Meta::of(driver.engine.world());
    store
        .commit(driver.engine.ruleset(), &changes, &meta)
        .await
        .unwrap();
}

/// The same stream, stopped after each event in `cuts` (sometimes also after the
/// clock moved on to fire timers alone), committed, dropped, and resumed from the
/// store.
async fn with_restarts(
    rules: &Arc<Ruleset>,
    events: &[Event],
    cuts: &[usize],
    seed: u64,
) -> Vec<Decision> {
    let db = TempDb(
        std::env::temp_dir().join(format!("steward-timers-{}-{seed}.db", std::process::id())),
    );
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut next = 0;
    for &cut in cuts.iter().chain(std::iter::once(&events.len())) {
        let store = SqliteStore::open(&db.0).await.unwrap();
        let mut driver = Driver::new(Engine::with_world(
            rules.clone(),
            store.load(rules).await.unwrap(),
        ));
        for (i, e) in events[next..cut].iter().enumerate() {
            driver.feed(e, &mut out);
            if i % 7 == 6 {
                commit(&store, &mut driver).await;
            }
        }
        next = cut;
        if cut == events.len() {
            driver.advance(until(), &mut out);
        } else if rng.below(2) == 0 {
            // Stop between events, after timers alone fired.
            let gap = events[cut].time.unwrap() - driver.clock().unwrap();
            let part = TimeDelta::seconds(rng.below(gap.num_seconds().max(1) as u64) as i64);
            driver.advance(driver.clock().unwrap() + part, &mut out);
        }
        commit(&store, &mut driver).await;
        if cut == events.len() {
            let evidence = store.evidence(0).await.unwrap();
            assert_eq!(verify_chain(&evidence), Ok(out.len() as u64));
        }
    }
    out
}

fn lines(out: &[Decision]) -> Vec<String> {
    out.iter().map(Decision::to_json_line).collect()
}

/// Each timer decision fires at or after its due instant, which is the entry of its
/// state plus its delay; no timer fires twice; decisions never go back in time.
fn check_timers(out: &[Decision]) {
    let mut entered: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut fired: HashMap<(String, String, DateTime<Utc>), usize> = HashMap::new();
    let mut last = DateTime::<Utc>::MIN_UTC;
    for d in out {
        assert!(d.at >= last, "decisions went back in time at {d:?}");
        last = d.at;
        let key = d.key.clone().unwrap_or_default();
        if d.kind == Kind::Timer {
            let state = d.state.clone().unwrap_or_default();
            let since = entered[&format!("{key}/{state}")];
            let message = d.message.clone().unwrap_or_default();
            let wall = match message.as_str() {
                "after 7 minutes" => Some(TimeDelta::minutes(7)),
                "after 3 hours" => Some(TimeDelta::hours(3)),
                "after 1 day" => Some(TimeDelta::days(1)),
                _ => None,
            };
            match wall {
                Some(delay) => assert_eq!(d.at, since + delay, "{d:?}"),
                // Business time: at least the delay of wall time.
                None => assert!(d.at >= since + TimeDelta::hours(2), "{d:?}"),
            }
            let n = fired.entry((key.clone(), message, since)).or_default();
            *n += 1;
            assert_eq!(*n, 1, "a timer fired twice: {d:?}");
        }
        if let (Some(to), Kind::Transition) = (&d.to, d.kind) {
            entered.insert(format!("{key}/{to}"), d.at);
        }
    }
    assert!(
        fired.len() > 500,
        "the month should fire many timers: {}",
        fired.len()
    );
}

#[tokio::test]
async fn a_month_of_timers_fires_on_time_and_once() {
    let rules = rules(RULES);
    let events = month(7);
    let out = uninterrupted(&rules, &events);
    check_timers(&out);
}

#[tokio::test]
async fn stopping_anywhere_in_a_month_and_resuming_changes_nothing() {
    let rules = rules(RULES);
    let events = month(11);
    let expected = lines(&uninterrupted(&rules, &events));
    for seed in 1..=4u64 {
        let mut rng = Rng(seed * 7919);
        let mut cuts: Vec<usize> = (0..6)
            .map(|_| 1 + rng.below(events.len() as u64 - 1) as usize)
            .collect();
        cuts.sort();
        cuts.dedup();
        let got = lines(&with_restarts(&rules, &events, &cuts, seed).await);
        if got != expected {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            panic!(
                "stopping after events {cuts:?} changed the decisions at line {at}:\n  got:      {}\n  expected: {}",
                got.get(at).map_or("<end>", String::as_str),
                expected.get(at).map_or("<end>", String::as_str)
            );
        }
    }
}
