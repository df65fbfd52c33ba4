//! Outcomes of executed actions, fed back into the core as inputs.
//!
//! The dispatcher runs an outbox action and reports how it ended: executed (with the
//! connector's result) or given up (with the reason). [`Engine::apply_outcome`] records
//! that as an evidence decision (`action_succeeded` / `action_failed`, part of the hash
//! chain like every decision) and lets the instance that decided the action react:
//! its current state's first matching `on action succeeded|failed` transition runs,
//! with `result` in scope. The instance is the outbox row's workflow and key, not a
//! key computed from an event.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use steward_dsl::ast::ActionOutcome;
use steward_dsl::cel::Value;

use super::{Engine, Event, Owner, Step};
use crate::decision::{Decision, Kind};

/// What became of one outbox action, as the dispatcher reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The action's id (its idempotency key).
    pub action_id: String,
    /// The workflow and key of the instance that decided it (from the outbox row).
    pub workflow: Option<String>,
    pub key: Option<String>,
    pub connector: String,
    pub op: String,
    /// How many calls were made (1 when the first succeeded).
    pub attempts: u32,
    /// The connector's result JSON, or why the action was given up.
    pub result: Result<Json, String>,
}

impl Outcome {
    /// What rules see as `result`: the connector's result, or `{"reason", "attempts"}`.
    pub fn result_value(&self) -> Json {
        match &self.result {
            Ok(result) => result.clone(),
            Err(reason) => serde_json::json!({"reason": reason, "attempts": self.attempts}),
        }
    }
}

impl Engine {
    /// Applies an action's outcome at `now`: decides its evidence record, then runs
    /// the first `on action …` transition of the deciding instance's current state
    /// that matches (outcome, connector, operation, condition). An instance that has
    /// finished, or an action not decided by a workflow, gets the evidence only.
    pub fn apply_outcome(
        &mut self,
        outcome: &Outcome,
        now: DateTime<Utc>,
        out: &mut Vec<Decision>,
    ) {
        self.touch_time(now);
        let rules = self.rules.clone();
        let succeeded = outcome.result.is_ok();
        let kind = if succeeded {
            Kind::ActionSucceeded
        } else {
            Kind::ActionFailed
        };
        let instance = outcome
            .workflow
            .as_deref()
            .and_then(|name| rules.workflows.iter().position(|w| w.name == name))
            .zip(outcome.key.as_deref())
            .map(|(w, key)| (w, Arc::<str>::from(key)));
        let mut step = Step {
            now,
            event: None,
            event_value: None,
            emitted: Vec::new(),
            transitions: 0,
        };

        let mut d = match &instance {
            Some((w, key)) => self.base(&Owner::Instance(*w, key), &step, kind),
            None => {
                let mut d = Decision::new(now, kind);
                d.workflow = outcome.workflow.clone();
                d.key = outcome.key.clone();
                d
            }
        };
        d.connector = Some(outcome.connector.clone());
        d.op = Some(outcome.op.clone());
        d.action_id = Some(outcome.action_id.clone());
        d.attempts = Some(u64::from(outcome.attempts));
        match &outcome.result {
            Ok(result) => d.result = Some(result.clone()),
            Err(reason) => d.message = Some(reason.clone()),
        }
        self.decide(d, out);

        let Some((w, key)) = instance else { return };
        let ik = (w, key.clone());
        let Some(state) = self.world.instances.get(&ik).map(|i| i.state) else {
            return;
        };
        let wanted = if succeeded {
            ActionOutcome::Succeeded
        } else {
            ActionOutcome::Failed
        };
        let extra = [("result", Value::from_json(&outcome.result_value()))];
        let owner = Owner::Instance(w, &key);
        let mut fired = None;
        for (trigger, transition) in &rules.workflows[w].states[state].on_action {
            if trigger.outcome != wanted
                || trigger
                    .connector
                    .as_ref()
                    .is_some_and(|c| *c != outcome.connector)
                || trigger.op.as_ref().is_some_and(|o| *o != outcome.op)
            {
                continue;
            }
            let holds = match &trigger.condition {
                None => true,
                Some(cond) => match self.eval(cond, &owner, &step, &extra) {
                    Ok(Value::Bool(b)) => b,
                    Ok(other) => {
                        let msg = format!("condition is `{}`, not a bool", other.type_name());
                        self.error(&owner, &step, msg, out);
                        false
                    }
                    Err(e) => {
                        self.error(&owner, &step, format!("condition: {e}"), out);
                        false
                    }
                },
            };
            if holds {
                fired = Some(transition);
                break;
            }
        }
        let Some(transition) = fired else { return };
        // A reaction is a step of the instance: its actions get ids of their own.
        if let Some(inst) = self.world.instances.get_mut(&ik) {
            inst.step += 1;
        }
        self.mark(&ik);
        let goto = self.run(&transition.actions, owner, &mut step, &extra, out);
        if let Some(target) = transition.target.or(goto) {
            let from = self.world.instances.get(&ik).map(|i| i.state);
            self.enter(w, &key, target, from, &mut step, out);
        }
        // Events the reaction emitted are fed back at the same instant, as in `apply`.
        let mut queue: VecDeque<(Event, usize)> = step.emitted.drain(..).map(|e| (e, 1)).collect();
        while let Some((emitted, depth)) = queue.pop_front() {
            self.apply_one(&emitted, now, out, &mut queue, depth);
        }
    }
}
