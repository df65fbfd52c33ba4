//! SLA clocks in the core: each event is shown to an instance's clocks before its
//! state's transitions; a clock starts, pauses, resumes, stops, resets or is cancelled,
//! and each change is a decision of kind `sla`. Every threshold not yet fired in the
//! clock's run has a durable timer; pausing removes them, resuming arms them again from
//! the counted time left, so they fire once, at the exact instant the share of the goal
//! is used. Clock arithmetic lives in [`crate::sla`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value as Json, json};
use steward_dsl::cel::{Key, MapValue, Value};

use super::{Engine, Owner, Step, TimerKind};
use crate::decision::{Decision, Kind};
use crate::event::format_time;
use crate::ruleset::{Sla, Trigger};
use crate::sla::{Clock, Phase, remaining, share};
use steward_dsl::cel::Program;

/// What an event does to one clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// By the `i`-th `start on` (or with the instance: `None`).
    Start(Option<usize>),
    Pause,
    Resume,
    Stop,
    Reset,
    Cancel,
}

/// The value of `sla` in expressions: one entry per clock of the workflow.
pub(super) fn value(slas: &[Sla], clocks: &BTreeMap<usize, Clock>, now: DateTime<Utc>) -> Value {
    let mut map = MapValue::new();
    for (i, sla) in slas.iter().enumerate() {
        map.insert(
            Key::String(Arc::from(sla.name.as_str())),
            Clock::value(clocks.get(&i), sla, now),
        );
    }
    Value::Map(Arc::new(map))
}

fn duration(d: Duration) -> Json {
    Value::Duration(d).to_json()
}

impl Engine {
    fn clock(&self, w: usize, key: &Arc<str>, i: usize) -> Option<&Clock> {
        self.world
            .instances
            .get(&(w, key.clone()))
            .and_then(|inst| inst.slas.get(&i))
    }

    fn clock_mut(&mut self, w: usize, key: &Arc<str>, i: usize) -> Option<&mut Clock> {
        self.world
            .instances
            .get_mut(&(w, key.clone()))
            .and_then(|inst| inst.slas.get_mut(&i))
    }

    fn any_holds(
        &mut self,
        triggers: &[Trigger],
        w: usize,
        key: &Arc<str>,
        step: &Step<'_>,
        out: &mut Vec<Decision>,
    ) -> bool {
        triggers
            .iter()
            .any(|t| self.condition(t, Owner::Instance(w, key), step, &[], out))
    }

    /// Shows the event of `step` to every clock of the instance; `new_instance` when the
    /// event just created it (clocks that start with the instance start now).
    pub(super) fn sla_event(
        &mut self,
        w: usize,
        key: &Arc<str>,
        step: &mut Step<'_>,
        new_instance: bool,
        out: &mut Vec<Decision>,
    ) {
        let rules = self.rules.clone();
        for (i, sla) in rules.workflows[w].slas.iter().enumerate() {
            if !self.world.instances.contains_key(&(w, key.clone())) {
                return;
            }
            let phase = self.clock(w, key, i).map(|c| c.phase);
            // One change per clock and event, the first that applies in this order.
            let change = match phase {
                Some(p) if p.is_open() => {
                    if self.any_holds(&sla.cancels, w, key, step, out) {
                        Some(Change::Cancel)
                    } else if self.any_holds(&sla.stops, w, key, step, out) {
                        Some(Change::Stop)
                    } else if self.any_holds(&sla.resets, w, key, step, out) {
                        Some(Change::Reset)
                    } else if p == Phase::Running && self.any_holds(&sla.pauses, w, key, step, out)
                    {
                        Some(Change::Pause)
                    } else if p == Phase::Paused && self.any_holds(&sla.resumes, w, key, step, out)
                    {
                        Some(Change::Resume)
                    } else {
                        None
                    }
                }
                _ => {
                    let by_event = sla.starts.iter().position(|(t, _)| {
                        self.condition(t, Owner::Instance(w, key), step, &[], out)
                    });
                    match by_event {
                        Some(s) => Some(Change::Start(Some(s))),
                        None if new_instance && phase.is_none() && sla.with_instance => {
                            Some(Change::Start(None))
                        }
                        None => None,
                    }
                }
            };
            if let Some(change) = change {
                self.change_clock(w, key, i, sla, change, step, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn change_clock(
        &mut self,
        w: usize,
        key: &Arc<str>,
        i: usize,
        sla: &Sla,
        change: Change,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let now = step.now;
        let ik = (w, key.clone());
        self.mark(&ik);
        match change {
            Change::Start(by) => {
                let since = match by.and_then(|s| sla.starts[s].1.as_ref()) {
                    Some(p) => self.sla_since(p, w, key, sla, step, out),
                    None => now,
                };
                let run = self.clock(w, key, i).map_or(1, |c| c.run + 1);
                if let Some(inst) = self.world.instances.get_mut(&ik) {
                    inst.slas.insert(i, Clock::start(run, since));
                }
                let message = if since < now {
                    format!(
                        "{}: started, counting from {}, goal {}",
                        sla.name,
                        format_time(since),
                        sla.goal_text
                    )
                } else {
                    format!("{}: started, goal {}", sla.name, sla.goal_text)
                };
                self.sla_decision(w, key, i, sla, "started", message, step, out);
                // A retroactive start may have passed thresholds: they fire now, in order.
                for (percent, _) in &sla.thresholds {
                    let Some(clock) = self.clock(w, key, i) else {
                        return;
                    };
                    let target = share(sla, *percent);
                    if clock.phase != Phase::Running || clock.elapsed(sla, now) < target {
                        break;
                    }
                    let reached = clock.due(sla, target).unwrap_or(now).min(now);
                    self.sla_threshold(w, key, i, sla, *percent, reached, step, out);
                }
                self.arm(w, key, i, sla);
            }
            Change::Pause | Change::Stop | Change::Cancel => {
                let (phase, word) = match change {
                    Change::Pause => (Phase::Paused, "paused"),
                    Change::Stop => (Phase::Stopped, "stopped"),
                    _ => (Phase::Cancelled, "cancelled"),
                };
                self.disarm(w, key, i);
                if let Some(clock) = self.clock_mut(w, key, i) {
                    clock.settle(sla, now, phase);
                }
                let message = format!("{}: {word}", sla.name);
                self.sla_decision(w, key, i, sla, word, message, step, out);
            }
            Change::Resume => {
                if let Some(clock) = self.clock_mut(w, key, i) {
                    clock.since = now;
                    clock.phase = Phase::Running;
                }
                let message = format!("{}: resumed", sla.name);
                self.sla_decision(w, key, i, sla, "resumed", message, step, out);
                self.arm(w, key, i, sla);
            }
            Change::Reset => {
                self.disarm(w, key, i);
                // The decision records the time counted by the run that ends.
                let message = format!("{}: reset, counting again from zero", sla.name);
                self.sla_decision(w, key, i, sla, "reset", message, step, out);
                if let Some(clock) = self.clock_mut(w, key, i) {
                    *clock = Clock::start(clock.run + 1, now);
                }
                self.arm(w, key, i, sla);
            }
        }
    }

    /// The instant a retroactive start counts from; an unusable value is reported and
    /// the clock counts from now. An instant after now counts from now.
    fn sla_since(
        &mut self,
        program: &Program,
        w: usize,
        key: &Arc<str>,
        sla: &Sla,
        step: &Step<'_>,
        out: &mut Vec<Decision>,
    ) -> DateTime<Utc> {
        let owner = Owner::Instance(w, key);
        let problem = match self.eval(program, &owner, step, &[]) {
            Ok(Value::Timestamp(t)) => return t.min(step.now),
            Ok(Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) => return t.with_timezone(&Utc).min(step.now),
                Err(_) => format!("`{s}` is not an RFC 3339 time"),
            },
            Ok(v) => format!("it is `{}`, not a timestamp", v.type_name()),
            Err(e) => e,
        };
        let message = format!(
            "sla clock `{}`: start `at`: {problem}; counting from the event",
            sla.name
        );
        self.error(&owner, step, message, out);
        step.now
    }

    /// Arms a timer for every threshold of the running clock not yet fired in its run.
    fn arm(&mut self, w: usize, key: &Arc<str>, i: usize, sla: &Sla) {
        let Some(clock) = self.clock(w, key, i).cloned() else {
            return;
        };
        if clock.phase != Phase::Running {
            return;
        }
        let mut armed = Vec::new();
        for (percent, _) in &sla.thresholds {
            if clock.fired.contains(percent) {
                continue;
            }
            let Some(due) = clock.due(sla, share(sla, *percent)) else {
                continue; // no working time left in the calendar's horizon
            };
            armed.push(self.add_timer(
                due,
                TimerKind::Sla {
                    workflow: w,
                    key: key.clone(),
                    sla: i,
                    run: clock.run,
                    percent: *percent,
                },
            ));
        }
        if let Some(clock) = self.clock_mut(w, key, i) {
            clock.timers.extend(armed);
        }
    }

    fn disarm(&mut self, w: usize, key: &Arc<str>, i: usize) {
        let timers = self
            .clock_mut(w, key, i)
            .map(|c| std::mem::take(&mut c.timers))
            .unwrap_or_default();
        for id in timers {
            self.remove_timer(None, id);
        }
    }

    /// A threshold timer is due.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sla_timer(
        &mut self,
        id: u64,
        w: usize,
        key: &Arc<str>,
        i: usize,
        run: u64,
        percent: u64,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let rules = self.rules.clone();
        let Some(sla) = rules.workflows[w].slas.get(i) else {
            return;
        };
        let Some(clock) = self.clock_mut(w, key, i) else {
            return;
        };
        clock.timers.retain(|t| *t != id);
        if clock.run != run || clock.phase != Phase::Running || clock.fired.contains(&percent) {
            return; // stale: the run ended or the clock was paused
        }
        self.mark(&(w, key.clone()));
        let now = step.now;
        self.sla_threshold(w, key, i, sla, percent, now, step, out);
    }

    /// Records that a threshold was reached (at `reached`) and runs its actions.
    #[allow(clippy::too_many_arguments)]
    fn sla_threshold(
        &mut self,
        w: usize,
        key: &Arc<str>,
        i: usize,
        sla: &Sla,
        percent: u64,
        reached: DateTime<Utc>,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let ik = (w, key.clone());
        let Some(inst) = self.world.instances.get_mut(&ik) else {
            return;
        };
        // Each threshold's actions get their own step, so their action ids differ when
        // several fire at once.
        inst.step += 1;
        if let Some(clock) = inst.slas.get_mut(&i) {
            clock.fired.push(percent);
        }
        self.mark(&ik);
        let message = if percent >= 100 {
            format!("{}: goal of {} breached", sla.name, sla.goal_text)
        } else {
            format!("{}: {percent}% of {} used", sla.name, sla.goal_text)
        };
        let mut d = self.sla_base(w, key, i, sla, "threshold", message, step);
        if let Some(Json::Object(args)) = d.args.as_mut() {
            args.insert("threshold".into(), json!(percent));
            args.insert("reached".into(), json!(format_time(reached)));
        }
        self.decide(d, out);
        let Some((_, actions)) = sla.thresholds.iter().find(|(p, _)| *p == percent) else {
            return;
        };
        let goto = self.run(actions, Owner::Instance(w, key), step, &[], out);
        if let Some(target) = goto {
            // On the event that creates the instance, clocks run before it enters its
            // first state: a `goto` then is its first state, left from nowhere.
            let from = self
                .world
                .instances
                .get(&ik)
                .filter(|i| i.seq > 0)
                .map(|i| i.state);
            self.enter(w, key, target, from, step, out);
        }
    }

    /// The instance finished: its open clocks stop with it.
    pub(super) fn stop_all_clocks(
        &mut self,
        w: usize,
        key: &Arc<str>,
        step: &Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let rules = self.rules.clone();
        for (i, sla) in rules.workflows[w].slas.iter().enumerate() {
            if !self.clock(w, key, i).is_some_and(|c| c.phase.is_open()) {
                continue;
            }
            self.disarm(w, key, i);
            if let Some(clock) = self.clock_mut(w, key, i) {
                clock.settle(sla, step.now, Phase::Stopped);
            }
            let message = format!("{}: stopped, workflow finished", sla.name);
            let d = self.sla_base(w, key, i, sla, "stopped", message, step);
            self.decide(d, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn sla_decision(
        &mut self,
        w: usize,
        key: &Arc<str>,
        i: usize,
        sla: &Sla,
        transition: &str,
        message: String,
        step: &Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let d = self.sla_base(w, key, i, sla, transition, message, step);
        self.decide(d, out);
    }

    /// A decision of kind `sla`: `to` is the clock, `outcome` the transition, `args`
    /// the clock's figures at that moment.
    #[allow(clippy::too_many_arguments)]
    fn sla_base(
        &self,
        w: usize,
        key: &Arc<str>,
        i: usize,
        sla: &Sla,
        transition: &str,
        message: String,
        step: &Step<'_>,
    ) -> Decision {
        let mut d = self.base(&Owner::Instance(w, key), step, Kind::Sla);
        let clock = self.clock(w, key, i);
        let elapsed = clock.map_or(Duration::zero(), |c| c.elapsed(sla, step.now));
        d.to = Some(sla.name.clone());
        d.outcome = Some(transition.to_string());
        d.message = Some(message);
        let mut args = json!({
            "sla": sla.name,
            "transition": transition,
            "goal": duration(sla.goal),
            "elapsed": duration(elapsed),
            "remaining": duration(remaining(sla, elapsed)),
        });
        if let (Some(c), Some(map)) = (clock, args.as_object_mut()) {
            map.insert("started".into(), json!(format_time(c.started)));
            map.insert("run".into(), json!(c.run));
        }
        d.args = Some(args);
        d
    }
}
