//! Escalation ladder steps: repetition (`repeat every D [times N]`) and working hours
//! (`only in working hours of CAL`).
//!
//! A step's timer carries its repetition count. When it fires outside the working
//! hours its step asks for, the step does not run: the timer is set again for the next
//! working instant and the deferral is recorded. After a step runs, it repeats while
//! it has repetitions left; then the next step is scheduled, measured from this run.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Engine, Owner, Step, TimerKind};
use crate::decision::{Decision, Kind};
use crate::event::format_time;

/// Which run of which ladder step a timer is for.
pub(super) struct EscalationAt {
    pub workflow: usize,
    pub ladder: usize,
    pub run: u64,
    pub index: usize,
    pub repeat: u64,
}

impl EscalationAt {
    fn timer(&self, key: &Arc<str>, index: usize, repeat: u64) -> TimerKind {
        TimerKind::Escalation {
            workflow: self.workflow,
            key: key.clone(),
            ladder: self.ladder,
            run: self.run,
            step: index,
            repeat,
        }
    }
}

impl Engine {
    /// When the step is due outside the working hours it is restricted to, sets its
    /// timer again for the next working instant, records that, and returns true.
    pub(super) fn defer_escalation(
        &mut self,
        key: &Arc<str>,
        at: &EscalationAt,
        step: &Step<'_>,
        out: &mut Vec<Decision>,
    ) -> bool {
        let rules = self.rules.clone();
        let l = &rules.workflows[at.workflow].ladders[at.ladder];
        let Some((calendar, hours)) = l.options.get(at.index).and_then(|o| o.working.as_ref())
        else {
            return false;
        };
        if hours.is_working(step.now) {
            return false;
        }
        let Some(next) = hours.next_working_instant(step.now) else {
            return false; // no working hours at all: run rather than never
        };
        self.add_timer(next, at.timer(key, at.index, at.repeat));
        let mut d = self.base(&Owner::Instance(at.workflow, key), step, Kind::Escalation);
        d.to = Some(l.name.clone());
        d.outcome = Some("deferred".to_string());
        d.message = Some(format!(
            "step {} is due outside the working hours of `{calendar}`; it runs at {}",
            at.index + 1,
            format_time(next)
        ));
        d.args = Some(serde_json::json!({
            "ladder": l.name, "step": at.index + 1, "repeat": at.repeat,
        }));
        self.decide(d, out);
        true
    }

    /// After a step ran at `ran`: its next repetition, else the next step, else the
    /// ladder is done.
    pub(super) fn schedule_next_escalation(
        &mut self,
        key: &Arc<str>,
        at: &EscalationAt,
        ran: DateTime<Utc>,
    ) {
        let rules = self.rules.clone();
        let l = &rules.workflows[at.workflow].ladders[at.ladder];
        let repeat = l
            .options
            .get(at.index)
            .and_then(|o| o.repeat.as_ref())
            .filter(|(_, times)| times.is_none_or(|n| at.repeat < n));
        if let Some((every, _)) = repeat {
            let due = self.due(ran, every);
            self.add_timer(due, at.timer(key, at.index, at.repeat + 1));
        } else if let Some((wait, _)) = l.steps.get(at.index + 1) {
            let due = self.due(ran, wait);
            self.add_timer(due, at.timer(key, at.index + 1, 0));
        } else if let Some(inst) = self.world.instances.get_mut(&(at.workflow, key.clone())) {
            inst.ladders.retain(|x| *x != (at.ladder, at.run));
        }
    }
}
