//! The deterministic core: applies events and fires timers, returning decisions.
//!
//! Invariant: the core performs no I/O and never reads the system clock; `now` is
//! passed in. The same ruleset, inputs and times give the same decisions, byte for
//! byte. Actions are decided here and only recorded (decision + outbox entry); a
//! runtime executes them later.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value as Json};
use steward_dsl::ast::ApprovalOutcome;
use steward_dsl::cel::{Activation, Program, Value};

use crate::decision::{ChainHead, Decision, EvidenceRecord, Kind};
use crate::event::{Event, EventIdentity, format_time};
use crate::ruleset::{
    APPROVAL_EVENT, Action, ArgValue, Control, DELEGATION_EVENT, Ruleset, Targets, TemplatePart,
    TimeSpec, Transition, Trigger, Window,
};
use crate::seen::SeenSet;
use crate::time::{period_id, period_unit};

mod approval;
mod clocks;
mod escalation;
pub mod outcome;

use escalation::EscalationAt;

/// How many generations of emitted events are fed back within one input.
const MAX_EMIT_DEPTH: usize = 8;
/// How many state entries one step may chain through `goto` and transitions.
const MAX_TRANSITIONS_PER_STEP: usize = 64;

/// The engine's lookup tables (event identities seen, instances, routes) hash with
/// foldhash, seeded per process: much cheaper than SipHash, and an attacker who picks
/// event ids still cannot aim collisions at a known seed. Nothing iterates these
/// tables to decide output: they are only looked up, and whatever leaves them in order
/// goes through a `BTreeMap` first, so the seed never changes a decision.
pub type Hashing = foldhash::fast::RandomState;
/// A `HashMap` with the engine's hasher.
pub type FastMap<K, V> = HashMap<K, V, Hashing>;
/// A `HashSet` with the engine's hasher.
pub type FastSet<K> = HashSet<K, Hashing>;

/// A workflow instance's identity: workflow index and key.
pub type InstanceKey = (usize, Arc<str>);

/// A live workflow instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub state: usize,
    /// Number of state entries so far.
    pub seq: u64,
    /// Number of steps (events or timers) that touched the instance; action ids use it.
    pub step: u64,
    pub vars: BTreeMap<String, Value>,
    pub approval: Option<Approval>,
    /// Active escalation ladders: (ladder index, run id).
    pub ladders: Vec<(usize, u64)>,
    /// Timers of the current state, cancelled when it is left.
    pub state_timers: Vec<u64>,
    /// SLA clocks started so far, by their index in the workflow.
    pub slas: BTreeMap<usize, crate::sla::Clock>,
}

/// An open or decided approval request (the rules are in core/approval.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Each group with who may approve in it and how many must, in the order written.
    pub roles: Vec<ApprovalRole>,
    pub excluded: Vec<String>,
    /// Everyone whose approval counted, in order (a delegate's under the delegator).
    pub approvals: Vec<String>,
    /// Everyone whose rejection counted, in order.
    pub rejections: Vec<String>,
    /// How many rejections reject.
    pub veto: usize,
    /// Delegations in force: (from, to).
    pub delegations: Vec<(String, String)>,
    pub open: bool,
    /// The quorum was met (and no material change has re-opened it since).
    pub granted: bool,
    /// The step that requested it; stale expiry timers compare against it.
    pub request: u64,
    /// Which of the workflow's requests it is ([`crate::ruleset::ApprovalSpec::index`]).
    pub spec: usize,
    /// The material fields' values that are being (or were) approved, by path.
    pub material: Map<String, Json>,
}

/// One group of an approval request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRole {
    pub group: String,
    pub eligible: Vec<String>,
    pub required: usize,
    /// Whose approvals counted in this group.
    pub approvals: Vec<String>,
}

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerKind {
    /// The `index`-th `after` of `state`, armed when the instance entered it for the `seq`-th time.
    State {
        workflow: usize,
        key: Arc<str>,
        state: usize,
        seq: u64,
        index: usize,
    },
    ApprovalExpiry {
        workflow: usize,
        key: Arc<str>,
        request: u64,
    },
    Escalation {
        workflow: usize,
        key: Arc<str>,
        ladder: usize,
        run: u64,
        step: usize,
        /// How many times the step ran before (`repeat every`); 0 for its first run.
        repeat: u64,
    },
    Cadence {
        cadence: usize,
    },
    Expect {
        cadence: usize,
        period: String,
    },
    /// The `percent` % threshold of SLA clock `sla`, armed in its run `run`.
    Sla {
        workflow: usize,
        key: Arc<str>,
        sla: usize,
        run: u64,
        percent: u64,
    },
}

impl TimerKind {
    /// The instance a timer belongs to; cadence timers belong to none.
    pub fn owner(&self) -> Option<InstanceKey> {
        match self {
            TimerKind::State { workflow, key, .. }
            | TimerKind::ApprovalExpiry { workflow, key, .. }
            | TimerKind::Escalation { workflow, key, .. }
            | TimerKind::Sla { workflow, key, .. } => Some((*workflow, key.clone())),
            TimerKind::Cadence { .. } | TimerKind::Expect { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub id: u64,
    pub due: DateTime<Utc>,
    pub kind: TimerKind,
}

/// A counter's state for one key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CounterState {
    /// Sliding windows: the times of counted events.
    pub times: VecDeque<DateTime<Utc>>,
    /// Calendar windows: the current period and its count.
    pub period: String,
    pub count: u64,
}

/// A cadence period's expected evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub due: DateTime<Utc>,
    pub timer: u64,
}

/// A connector call or emitted event, to be executed after commit.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub action_id: String,
    pub at: DateTime<Utc>,
    pub connector: String,
    pub op: String,
    pub args: Json,
}

/// The engine's whole state: what the store persists.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub instances: FastMap<InstanceKey, Instance>,
    pub timers: BTreeMap<(DateTime<Utc>, u64), TimerKind>,
    pub next_timer: u64,
    pub seen: SeenSet,
    pub counters: FastMap<(usize, String), CounterState>,
    pub expectations: BTreeMap<(usize, String), Expectation>,
    pub chain: ChainHead,
    /// The latest time the engine has reached.
    pub now: Option<DateTime<Utc>>,
    pub cadences_scheduled: bool,
}

/// What changed since the last [`Engine::take_changes`]: what a store commits.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Instances to write (`Some`) or delete (`None`, finished).
    pub instances: BTreeMap<InstanceKey, Option<Instance>>,
    pub timers_added: Vec<Timer>,
    pub timers_removed: Vec<u64>,
    pub seen: Vec<EventIdentity>,
    pub counters: BTreeMap<(usize, String), CounterState>,
    pub expectations: BTreeMap<(usize, String), Option<Expectation>>,
    pub evidence: Vec<EvidenceRecord>,
    pub outbox: Vec<OutboxEntry>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
            && self.timers_added.is_empty()
            && self.timers_removed.is_empty()
            && self.seen.is_empty()
            && self.counters.is_empty()
            && self.expectations.is_empty()
            && self.evidence.is_empty()
            && self.outbox.is_empty()
    }
}

/// What became of one input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It matched something and took effect (possibly deciding nothing).
    Applied,
    /// Nothing in the ruleset listens to its type.
    Unrouted,
    /// Same `source` and `id` as an event already applied: dropped.
    Duplicate,
}

/// Statistics, for reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub applied: u64,
    pub unrouted: u64,
    pub duplicates: u64,
    pub timers_fired: u64,
    pub decisions: u64,
}

/// An event type as a route key. Types are short (`jira:issue_updated`), so most are
/// held inline: confirming a lookup compares bytes in the table's own slot instead of
/// following a pointer to the key.
#[derive(Clone)]
enum TypeKey {
    Inline { len: u8, bytes: [u8; 30] },
    Heap(Box<str>),
}

impl TypeKey {
    fn new(event_type: &str) -> TypeKey {
        let mut bytes = [0u8; 30];
        match bytes.get_mut(..event_type.len()) {
            Some(prefix) => {
                prefix.copy_from_slice(event_type.as_bytes());
                TypeKey::Inline {
                    len: event_type.len() as u8,
                    bytes,
                }
            }
            None => TypeKey::Heap(Box::from(event_type)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Whole UTF-8 strings copied in `new`: the check cannot fail.
            TypeKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            TypeKey::Heap(s) => s,
        }
    }
}

impl std::borrow::Borrow<str> for TypeKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for TypeKey {
    fn eq(&self, other: &TypeKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TypeKey {}

impl std::hash::Hash for TypeKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// The deterministic engine core.
pub struct Engine {
    rules: Arc<Ruleset>,
    world: World,
    /// Targets by event type, filled as types are first seen.
    routes: FastMap<TypeKey, Targets>,
    dirty: FastSet<InstanceKey>,
    changes: Changes,
    record_changes: bool,
    /// Each pending timer's due time, so a timer is removed by id without a scan.
    timer_due: FastMap<u64, DateTime<Utc>>,
    /// The pending timers of each instance, so finishing an instance, stopping a
    /// ladder or closing an approval never scans every pending timer.
    instance_timers: FastMap<InstanceKey, Vec<u64>>,
    pub stats: Stats,
    /// The instant of the last [`Engine::start`]: cadence runs due before it were
    /// missed (the engine was down) and follow their cadence's `catch up` policy.
    started: Option<DateTime<Utc>>,
}

/// The `event` an expression sees, built on first use: most expressions select a few
/// fields (`event.data.priority`), which are read straight from the event.
struct EventValue<'a> {
    event: &'a Event,
    value: std::cell::OnceCell<Value>,
}

impl<'a> EventValue<'a> {
    fn new(event: &'a Event) -> Self {
        EventValue {
            event,
            value: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> &Value {
        self.value.get_or_init(|| self.event.to_value())
    }
}

/// What an expression can see.
struct Scope<'a> {
    event: Option<&'a EventValue<'a>>,
    now: Value,
    key: Option<&'a str>,
    /// The instance key as shared, so `key` resolves without copying it.
    key_arc: Option<&'a Arc<str>>,
    state: Option<&'a str>,
    vars: Option<&'a BTreeMap<String, Value>>,
    extra: &'a [(&'static str, Value)],
    globals: &'a HashMap<String, Value>,
    /// The instance's SLA clocks, as `sla.NAME`.
    clocks: Option<(
        &'a [crate::ruleset::Sla],
        &'a BTreeMap<usize, crate::sla::Clock>,
    )>,
}

impl Activation for Scope<'_> {
    fn resolve(&self, name: &str) -> Option<Value> {
        if let Some((head, path)) = crate::event::split_dot(name) {
            // Only `event.…` is answered as a whole path; everything else falls back
            // to its first segment, as with unqualified names.
            return match (head, self.event) {
                ("event", Some(e)) => e.event.value_at(path),
                _ => None,
            };
        }
        match name {
            "event" => return self.event.map(|e| e.get().clone()),
            "now" => return Some(self.now.clone()),
            "key" => {
                if let Some(k) = self.key_arc {
                    return Some(Value::String(k.clone()));
                }
                if let Some(k) = self.key {
                    return Some(Value::String(Arc::from(k)));
                }
            }
            "state" => {
                if let Some(s) = self.state {
                    return Some(Value::String(Arc::from(s)));
                }
            }
            "sla" => {
                if let (Some((slas, clocks)), Value::Timestamp(now)) = (self.clocks, &self.now)
                    && !slas.is_empty()
                {
                    return Some(clocks::value(slas, clocks, *now));
                }
            }
            _ => {}
        }
        if let Some(v) = self.extra.iter().find(|(n, _)| *n == name) {
            return Some(v.1.clone());
        }
        if let Some(v) = self.vars.and_then(|vars| vars.get(name)) {
            return Some(v.clone());
        }
        self.globals.get(name).cloned()
    }

    fn qualified_names(&self) -> bool {
        true
    }
}

/// Where actions run: a rule, a workflow instance, a cadence or a counter.
#[derive(Clone)]
enum Owner<'a> {
    /// Only the event and the globals: workflow keys.
    Bare,
    Rule(usize),
    Instance(usize, &'a Arc<str>),
    Cadence(usize, &'a str),
    Counter(usize, &'a str, u64, &'a str),
}

/// Per-step context shared by the actions of one reaction.
struct Step<'a> {
    now: DateTime<Utc>,
    event: Option<&'a Event>,
    event_value: Option<&'a EventValue<'a>>,
    emitted: Vec<Event>,
    transitions: usize,
}

fn value_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Uint(u) => Some(u.to_string()),
        _ => None,
    }
}

fn render(parts: &[TemplatePart], scope: &Scope<'_>) -> Result<String, String> {
    let mut out = String::new();
    for part in parts {
        match part {
            TemplatePart::Text(t) => out.push_str(t),
            TemplatePart::Expr(p) => match p.eval(scope).map_err(|e| e.to_string())? {
                Value::String(s) => out.push_str(&s),
                other => {
                    let json = other.to_json();
                    match json {
                        Json::String(s) => out.push_str(&s),
                        j => out.push_str(&j.to_string()),
                    }
                }
            },
        }
    }
    Ok(out)
}

fn first_clause(controls: &[Control]) -> Option<String> {
    controls.first().map(|c| c.clause.clone())
}

impl Engine {
    pub fn new(rules: Arc<Ruleset>) -> Self {
        Engine::with_world(rules, World::default())
    }

    /// Resumes from a persisted world.
    pub fn with_world(rules: Arc<Ruleset>, world: World) -> Self {
        let timer_due = world.timers.keys().map(|&(due, id)| (id, due)).collect();
        let mut instance_timers: FastMap<InstanceKey, Vec<u64>> = FastMap::default();
        for (&(_, id), kind) in &world.timers {
            if let Some(owner) = kind.owner() {
                instance_timers.entry(owner).or_default().push(id);
            }
        }
        Engine {
            timer_due,
            instance_timers,
            rules,
            world,
            routes: FastMap::default(),
            dirty: FastSet::default(),
            changes: Changes::default(),
            record_changes: true,
            stats: Stats::default(),
            started: None,
        }
    }

    /// Turns change tracking off, for pure in-memory replays that never commit.
    pub fn without_change_tracking(mut self) -> Self {
        self.record_changes = false;
        self
    }

    pub fn ruleset(&self) -> &Arc<Ruleset> {
        &self.rules
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// The time of the earliest pending timer.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.world.timers.keys().next().map(|(t, _)| *t)
    }

    /// Takes what changed since the last call (for the store to commit).
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = std::mem::take(&mut self.changes);
        for key in self.dirty.drain() {
            let inst = self.world.instances.get(&key).cloned();
            changes.instances.insert(key, inst);
        }
        // A timer added and removed in the same batch never reaches the store.
        let removed: HashSet<u64> = changes.timers_removed.iter().copied().collect();
        let added: HashSet<u64> = changes.timers_added.iter().map(|t| t.id).collect();
        changes.timers_added.retain(|t| !removed.contains(&t.id));
        changes.timers_removed.retain(|id| !added.contains(id));
        changes
    }

    /// Schedules each cadence's first run at or after `start` (once per world). On a
    /// resumed world, cadence runs due before `start` were missed while the engine was
    /// down: each cadence's `catch up` policy says which of them run.
    pub fn start(&mut self, start: DateTime<Utc>) {
        self.started = Some(start);
        if self.world.cadences_scheduled {
            return;
        }
        self.world.cadences_scheduled = true;
        let rules = self.rules.clone();
        for (i, c) in rules.cadences.iter().enumerate() {
            if let Some(due) = c.schedule.next_from(start) {
                self.add_timer(due, TimerKind::Cadence { cadence: i });
            }
        }
        self.touch_time(start);
    }

    fn touch_time(&mut self, now: DateTime<Utc>) {
        if self.world.now.is_none_or(|t| t < now) {
            self.world.now = Some(now);
        }
    }

    fn add_timer(&mut self, due: DateTime<Utc>, kind: TimerKind) -> u64 {
        self.world.next_timer += 1;
        let id = self.world.next_timer;
        if let Some(owner) = kind.owner() {
            self.instance_timers.entry(owner).or_default().push(id);
        }
        self.world.timers.insert((due, id), kind.clone());
        self.timer_due.insert(id, due);
        if self.record_changes {
            self.changes.timers_added.push(Timer { id, due, kind });
        }
        id
    }

    /// Forgets a timer that left `world.timers` in the index of its instance.
    fn unindex(&mut self, kind: &TimerKind, id: u64) {
        if let Some(owner) = kind.owner()
            && let Some(ids) = self.instance_timers.get_mut(&owner)
        {
            ids.retain(|t| *t != id);
            if ids.is_empty() {
                self.instance_timers.remove(&owner);
            }
        }
    }

    /// The pending timers of an instance for which `pick` holds: (due, id).
    fn timers_of(
        &self,
        w: usize,
        key: &Arc<str>,
        pick: impl Fn(&TimerKind) -> bool,
    ) -> Vec<(DateTime<Utc>, u64)> {
        let Some(ids) = self.instance_timers.get(&(w, key.clone())) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|&id| {
                let due = *self.timer_due.get(&id)?;
                pick(self.world.timers.get(&(due, id))?).then_some((due, id))
            })
            .collect()
    }

    fn remove_timer(&mut self, due_hint: Option<DateTime<Utc>>, id: u64) {
        let key = match due_hint {
            Some(due) => Some((due, id)),
            None => self.timer_due.get(&id).map(|&due| (due, id)),
        };
        if let Some(key) = key
            && let Some(kind) = self.world.timers.remove(&key)
        {
            self.timer_due.remove(&id);
            self.unindex(&kind, id);
            if self.record_changes {
                self.changes.timers_removed.push(id);
            }
        }
    }

    fn mark(&mut self, key: &InstanceKey) {
        if self.record_changes {
            self.dirty.insert(key.clone());
        }
    }

    fn decide(&mut self, decision: Decision, out: &mut Vec<Decision>) {
        if self.record_changes {
            let record = self.world.chain.append(&decision);
            self.changes.evidence.push(record);
        } else {
            self.world.chain.advance(&decision);
        }
        self.stats.decisions += 1;
        out.push(decision);
    }

    /// Fires every timer due at or before `now`, in due order, each at its own time.
    pub fn advance(&mut self, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        while let Some((&(due, id), _)) = self.world.timers.iter().next() {
            if due > now {
                break;
            }
            let Some(kind) = self.world.timers.remove(&(due, id)) else {
                break;
            };
            self.timer_due.remove(&id);
            self.unindex(&kind, id);
            if self.record_changes {
                self.changes.timers_removed.push(id);
            }
            self.touch_time(due);
            self.stats.timers_fired += 1;
            self.fire(id, due, kind, out);
        }
        self.touch_time(now);
    }

    /// Applies one event at `now` (timers due before it must have been fired first).
    pub fn apply(&mut self, event: &Event, now: DateTime<Utc>, out: &mut Vec<Decision>) -> Applied {
        self.touch_time(now);
        let fresh = self.world.seen.insert(&event.source, &event.id);
        if fresh && self.record_changes {
            self.changes.seen.push(event.identity());
        }
        if !fresh {
            self.stats.duplicates += 1;
            return Applied::Duplicate;
        }
        let mut queue: VecDeque<(Event, usize)> = VecDeque::new();
        let result = self.apply_one(event, now, out, &mut queue, 0);
        while let Some((emitted, depth)) = queue.pop_front() {
            self.apply_one(&emitted, now, out, &mut queue, depth);
        }
        match result {
            Applied::Applied => self.stats.applied += 1,
            Applied::Unrouted => self.stats.unrouted += 1,
            Applied::Duplicate => self.stats.duplicates += 1,
        }
        result
    }

    /// The targets of an event type (a copy: inline, so no allocation for the usual
    /// handful of listeners).
    fn route(&mut self, event_type: &str) -> Targets {
        if let Some(t) = self.routes.get(event_type) {
            return t.clone();
        }
        let targets = self.rules.targets(event_type);
        if self.routes.len() < 100_000 {
            self.routes
                .insert(TypeKey::new(event_type), targets.clone());
        }
        targets
    }

    fn apply_one(
        &mut self,
        event: &Event,
        now: DateTime<Utc>,
        out: &mut Vec<Decision>,
        queue: &mut VecDeque<(Event, usize)>,
        depth: usize,
    ) -> Applied {
        let targets = self.route(&event.event_type);
        if targets.is_empty() {
            return Applied::Unrouted;
        }
        let rules = self.rules.clone();
        let value = EventValue::new(event);
        let mut step = Step {
            now,
            event: Some(event),
            event_value: Some(&value),
            emitted: Vec::new(),
            transitions: 0,
        };
        for &r in targets.rules() {
            let r = r as usize;
            let rule = &rules.rules[r];
            // A rule's only trigger is what the route was indexed by: its pattern holds.
            if self.condition_holds(&rule.trigger, Owner::Rule(r), &step, &[], out) {
                self.run(&rule.actions, Owner::Rule(r), &mut step, &[], out);
            }
        }
        for &w in targets.workflows() {
            self.workflow_event(w as usize, &mut step, out);
        }
        for &c in targets.expects() {
            self.expect_event(c as usize, &step, out);
        }
        for &c in targets.counters() {
            self.counter_event(c as usize, &mut step, out);
        }
        if depth < MAX_EMIT_DEPTH {
            for e in step.emitted.drain(..) {
                queue.push_back((e, depth + 1));
            }
        }
        Applied::Applied
    }

    // ---------------------------------------------------------------- expressions

    fn scope<'a>(
        &'a self,
        owner: &'a Owner<'a>,
        step: &Step<'a>,
        extra: &'a [(&'static str, Value)],
    ) -> Scope<'a> {
        let key_arc = match owner {
            Owner::Instance(_, key) => Some(*key),
            _ => None,
        };
        let (key, state, vars) = match owner {
            Owner::Instance(w, key) => {
                let inst = self.world.instances.get(&(*w, (*key).clone()));
                (
                    Some(key.as_ref()),
                    inst.map(|i| self.rules.workflows[*w].states[i.state].name.as_str()),
                    inst.map(|i| &i.vars),
                )
            }
            Owner::Counter(_, key, _, _) => (Some(*key), None, None),
            _ => (None, None, None),
        };
        let clocks = match owner {
            Owner::Instance(w, key) if !self.rules.workflows[*w].slas.is_empty() => self
                .world
                .instances
                .get(&(*w, (*key).clone()))
                .map(|i| (self.rules.workflows[*w].slas.as_slice(), &i.slas)),
            _ => None,
        };
        Scope {
            event: step.event_value,
            now: Value::Timestamp(step.now),
            key,
            key_arc,
            state,
            vars,
            extra,
            globals: &self.rules.globals,
            clocks,
        }
    }

    fn eval(
        &self,
        program: &Program,
        owner: &Owner<'_>,
        step: &Step<'_>,
        extra: &[(&'static str, Value)],
    ) -> Result<Value, String> {
        let scope = self.scope(owner, step, extra);
        program.eval(&scope).map_err(|e| e.to_string())
    }

    /// Whether a trigger's condition holds; an error counts as false and is reported.
    fn condition(
        &mut self,
        trigger: &Trigger,
        owner: Owner<'_>,
        step: &Step<'_>,
        extra: &[(&'static str, Value)],
        out: &mut Vec<Decision>,
    ) -> bool {
        let Some(event) = step.event else {
            return false;
        };
        if !trigger.pattern.matches(&event.event_type) {
            return false;
        }
        self.condition_holds(trigger, owner, step, extra, out)
    }

    /// Whether a trigger's condition holds, its pattern known to match.
    fn condition_holds(
        &mut self,
        trigger: &Trigger,
        owner: Owner<'_>,
        step: &Step<'_>,
        extra: &[(&'static str, Value)],
        out: &mut Vec<Decision>,
    ) -> bool {
        if step.event.is_none() {
            return false;
        }
        let Some(cond) = &trigger.condition else {
            return true;
        };
        match self.eval(cond, &owner, step, extra) {
            Ok(Value::Bool(b)) => b,
            Ok(other) => {
                let msg = format!("condition is `{}`, not a bool", other.type_name());
                self.error(&owner, step, msg, out);
                false
            }
            Err(e) => {
                self.error(&owner, step, format!("condition: {e}"), out);
                false
            }
        }
    }

    fn base(&self, owner: &Owner<'_>, step: &Step<'_>, kind: Kind) -> Decision {
        let mut d = Decision::new(step.now, kind);
        d.event = step.event.map(|e| e.id.clone());
        match owner {
            Owner::Bare => {}
            Owner::Rule(r) => {
                let rule = &self.rules.rules[*r];
                d.rule = Some(rule.name.clone());
                d.control = first_clause(&rule.controls);
            }
            Owner::Instance(w, key) => {
                let wf = &self.rules.workflows[*w];
                d.workflow = Some(wf.name.clone());
                d.key = Some(key.to_string());
                d.control = first_clause(&wf.controls);
                if let Some(inst) = self.world.instances.get(&(*w, (*key).clone())) {
                    d.state = Some(wf.states[inst.state].name.clone());
                }
            }
            Owner::Cadence(c, period) => {
                let cadence = &self.rules.cadences[*c];
                d.cadence = Some(cadence.name.clone());
                d.control = first_clause(&cadence.controls);
                d.period = Some(period.to_string());
            }
            Owner::Counter(c, key, _, period) => {
                let counter = &self.rules.counters[*c];
                d.counter = Some(counter.name.clone());
                d.control = first_clause(&counter.controls);
                if !key.is_empty() {
                    d.key = Some(key.to_string());
                }
                if !period.is_empty() {
                    d.period = Some(period.to_string());
                }
            }
        }
        let policy = match owner {
            Owner::Bare => None,
            Owner::Rule(r) => self.rules.rules[*r].policy.as_deref(),
            Owner::Instance(w, _) => self.rules.workflows[*w].policy.as_deref(),
            Owner::Cadence(c, _) => self.rules.cadences[*c].policy.as_deref(),
            Owner::Counter(c, ..) => self.rules.counters[*c].policy.as_deref(),
        };
        d.policy = policy.map(str::to_string);
        d
    }

    fn error(
        &mut self,
        owner: &Owner<'_>,
        step: &Step<'_>,
        message: String,
        out: &mut Vec<Decision>,
    ) {
        let mut d = self.base(owner, step, Kind::Error);
        d.message = Some(message);
        self.decide(d, out);
    }

    // ---------------------------------------------------------------- actions

    fn action_id(&self, owner: &Owner<'_>, step: &Step<'_>, position: usize) -> String {
        match owner {
            Owner::Bare => format!("event/{position}"),
            Owner::Rule(r) => {
                let e = step
                    .event
                    .map_or(String::new(), |e| format!("{}/{}", e.source, e.id));
                format!("rule/{}/{}/{}", self.rules.rules[*r].name, e, position)
            }
            Owner::Instance(w, key) => {
                let s = self
                    .world
                    .instances
                    .get(&(*w, (*key).clone()))
                    .map_or(0, |i| i.step);
                format!(
                    "{}/{}/{}/{}",
                    self.rules.workflows[*w].name, key, s, position
                )
            }
            Owner::Cadence(c, period) => {
                format!(
                    "cadence/{}/{}/{}",
                    self.rules.cadences[*c].name, period, position
                )
            }
            Owner::Counter(c, key, count, period) => format!(
                "counter/{}/{}/{}/{}/{}",
                self.rules.counters[*c].name, key, period, count, position
            ),
        }
    }

    /// Runs actions in order; returns the state a `goto` asked for.
    fn run(
        &mut self,
        actions: &[Action],
        owner: Owner<'_>,
        step: &mut Step<'_>,
        extra: &[(&'static str, Value)],
        out: &mut Vec<Decision>,
    ) -> Option<usize> {
        let mut goto = None;
        for (position, action) in actions.iter().enumerate() {
            if let Err(e) = self.run_one(action, position, &owner, step, extra, out, &mut goto) {
                self.error(&owner, step, e, out);
            }
        }
        goto
    }

    #[allow(clippy::too_many_arguments)]
    fn run_one(
        &mut self,
        action: &Action,
        position: usize,
        owner: &Owner<'_>,
        step: &mut Step<'_>,
        extra: &[(&'static str, Value)],
        out: &mut Vec<Decision>,
        goto: &mut Option<usize>,
    ) -> Result<(), String> {
        match action {
            Action::Call {
                connector,
                op,
                args,
            } => {
                let args = self.args(args, owner, step, extra)?;
                let id = self.action_id(owner, step, position);
                let mut d = self.base(owner, step, Kind::Action);
                d.connector = Some(connector.clone());
                d.op = Some(op.clone());
                d.args = Some(args.clone());
                d.action_id = Some(id.clone());
                if self.record_changes {
                    self.changes.outbox.push(OutboxEntry {
                        action_id: id,
                        at: step.now,
                        connector: connector.clone(),
                        op: op.clone(),
                        args,
                    });
                }
                self.decide(d, out);
            }
            Action::Emit { event_type, fields } => {
                let data = self.fields(fields, owner, step, extra)?;
                let id = self.action_id(owner, step, position);
                let subject = match owner {
                    Owner::Instance(_, key) => Some(key.to_string()),
                    _ => None,
                };
                let mut d = self.base(owner, step, Kind::Action);
                d.op = Some("emit".to_string());
                d.to = Some(event_type.clone());
                d.args = Some(data.clone());
                d.action_id = Some(id.clone());
                if self.record_changes {
                    self.changes.outbox.push(OutboxEntry {
                        action_id: id.clone(),
                        at: step.now,
                        connector: "steward".to_string(),
                        op: "emit".to_string(),
                        args: serde_json::json!({"type": event_type, "subject": subject, "data": data}),
                    });
                }
                self.decide(d, out);
                step.emitted.push(Event {
                    id,
                    source: "steward".to_string(),
                    event_type: event_type.clone(),
                    time: Some(step.now),
                    subject,
                    datacontenttype: Some("application/json".to_string()),
                    dataschema: None,
                    data: Some(data),
                    data_base64: None,
                    extensions: Map::new(),
                });
            }
            Action::Violation(template) => {
                let message = render(template, &self.scope(owner, step, extra))?;
                let mut d = self.base(owner, step, Kind::Violation);
                d.message = Some(message);
                self.decide(d, out);
            }
            Action::Evidence { message, fields } => {
                let text = render(message, &self.scope(owner, step, extra))?;
                let data = self.fields(fields, owner, step, extra)?;
                let mut d = self.base(owner, step, Kind::Evidence);
                d.message = Some(text);
                if !fields.is_empty() {
                    d.args = Some(data);
                }
                self.decide(d, out);
            }
            Action::Set { name, value } => {
                let v = self.eval(value, owner, step, extra)?;
                if let Owner::Instance(w, key) = owner {
                    let ik = (*w, (*key).clone());
                    if let Some(inst) = self.world.instances.get_mut(&ik) {
                        inst.vars.insert(name.clone(), v);
                    }
                    self.mark(&ik);
                }
            }
            Action::Goto(state) => *goto = Some(*state),
            Action::Escalate(ladder) => {
                if let Owner::Instance(w, key) = owner {
                    self.start_ladder(*w, key, *ladder, step, out);
                }
            }
            Action::RequestApproval(spec) => {
                if let Owner::Instance(w, key) = owner {
                    self.request_approval(*w, key, spec, step, extra, out)?;
                }
            }
        }
        Ok(())
    }

    fn args(
        &self,
        args: &[(Option<String>, ArgValue)],
        owner: &Owner<'_>,
        step: &Step<'_>,
        extra: &[(&'static str, Value)],
    ) -> Result<Json, String> {
        let mut positional = Vec::new();
        let mut named = Map::new();
        for (name, arg) in args {
            let v = match arg {
                ArgValue::Expr(p) => self.eval(p, owner, step, extra)?.to_json(),
                ArgValue::Template(t) => Json::String(render(t, &self.scope(owner, step, extra))?),
            };
            match name {
                Some(n) => {
                    named.insert(n.clone(), v);
                }
                None => positional.push(v),
            }
        }
        Ok(match (positional.is_empty(), named.is_empty()) {
            (true, _) => Json::Object(named),
            (false, true) => Json::Array(positional),
            (false, false) => {
                positional.push(Json::Object(named));
                Json::Array(positional)
            }
        })
    }

    fn fields(
        &self,
        fields: &[(String, Program)],
        owner: &Owner<'_>,
        step: &Step<'_>,
        extra: &[(&'static str, Value)],
    ) -> Result<Json, String> {
        let mut map = Map::new();
        for (name, p) in fields {
            map.insert(name.clone(), self.eval(p, owner, step, extra)?.to_json());
        }
        Ok(Json::Object(map))
    }

    fn due(&self, from: DateTime<Utc>, spec: &TimeSpec) -> DateTime<Utc> {
        let far = from + Duration::days(36_500);
        match &spec.business {
            None => from + Duration::seconds(spec.seconds),
            Some(cal) => match spec.unit {
                steward_dsl::ast::TimeUnit::Day => cal.add_working_days(from, spec.amount),
                steward_dsl::ast::TimeUnit::Week => cal.add_working_days(from, spec.amount * 5),
                _ => cal.add_working_time(from, spec.seconds),
            }
            .unwrap_or(far),
        }
    }

    // ---------------------------------------------------------------- workflows

    fn workflow_event(&mut self, w: usize, step: &mut Step<'_>, out: &mut Vec<Decision>) {
        let rules = self.rules.clone();
        let wf = &rules.workflows[w];
        let Some(event) = step.event else { return };
        // A string key (the usual case) is used as evaluated, without a copy.
        let key: Option<Arc<str>> = match self.eval(&wf.key, &Owner::Bare, step, &[]) {
            Ok(Value::String(s)) => Some(s),
            Ok(v) => value_key(&v).map(|k| Arc::from(k.as_str())),
            Err(_) => None,
        }
        .or_else(|| event.subject.as_deref().map(Arc::from));
        let Some(key) = key else { return };
        let ik = (w, key.clone());
        if let Some(inst) = self.world.instances.get_mut(&ik) {
            inst.step += 1;
            let state = inst.state;
            let seq = inst.seq;
            let before = out.len();
            // SLA clocks see the event first, so a transition it causes finds them
            // already stopped or paused (docs/language.md, "What happens at run time").
            let state = if wf.slas.is_empty() {
                state
            } else {
                self.sla_event(w, &key, step, false, out);
                match self.world.instances.get(&ik) {
                    Some(inst) => inst.state,
                    None => return, // a threshold's `goto` finished the instance
                }
            };
            let owner = Owner::Instance(w, &key);
            if event.event_type == APPROVAL_EVENT {
                self.approval_decision(w, &key, step, out);
            } else if event.event_type == DELEGATION_EVENT {
                self.approval_delegation(w, &key, step, out);
            } else {
                self.material_check(w, &key, step, out);
            }
            // An approval outcome that moved the instance has used the event up.
            let moved = self.world.instances.get(&ik).is_none_or(|i| i.seq != seq);
            self.stop_ladders(w, &key, step, out);
            // The first transition of the current state whose trigger holds.
            let fired = wf.states[state]
                .on_event
                .iter()
                .filter(|_| !moved)
                .find(|(trigger, _)| self.condition(trigger, owner.clone(), step, &[], out))
                .map(|(_, t)| t);
            if let Some(transition) = fired {
                self.take(w, &key, transition, step, out);
            }
            if out.len() == before {
                // Nothing happened: the step number stays, so action ids do not
                // depend on how many unrelated events an instance saw.
                if let Some(inst) = self.world.instances.get_mut(&ik) {
                    inst.step -= 1;
                }
            } else {
                self.mark(&ik);
            }
            return;
        }
        for trigger in &wf.starts {
            if self.condition(trigger, Owner::Instance(w, &key), step, &[], out) {
                let inst = Instance {
                    state: 0,
                    seq: 0,
                    step: 1,
                    vars: BTreeMap::new(),
                    approval: None,
                    ladders: Vec::new(),
                    state_timers: Vec::new(),
                    slas: BTreeMap::new(),
                };
                self.world.instances.insert(ik.clone(), inst);
                self.mark(&ik);
                if !wf.slas.is_empty() {
                    self.sla_event(w, &key, step, true, out);
                    let entered = self.world.instances.get(&ik).is_some_and(|i| i.seq > 0);
                    if entered || !self.world.instances.contains_key(&ik) {
                        return; // a threshold's `goto` already moved it
                    }
                }
                self.enter(w, &key, 0, None, step, out);
                return;
            }
        }
    }

    /// Runs a transition's actions, then enters its target (or a `goto`'s).
    fn take(
        &mut self,
        w: usize,
        key: &Arc<str>,
        transition: &Transition,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let goto = self.run(&transition.actions, Owner::Instance(w, key), step, &[], out);
        if let Some(target) = transition.target.or(goto) {
            let from = self.world.instances.get(&(w, key.clone())).map(|i| i.state);
            self.enter(w, key, target, from, step, out);
        }
    }

    fn enter(
        &mut self,
        w: usize,
        key: &Arc<str>,
        target: usize,
        from: Option<usize>,
        step: &mut Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        step.transitions += 1;
        let rules = self.rules.clone();
        let wf = &rules.workflows[w];
        let ik = (w, key.clone());
        if step.transitions > MAX_TRANSITIONS_PER_STEP {
            self.error(
                &Owner::Instance(w, key),
                step,
                format!("more than {MAX_TRANSITIONS_PER_STEP} transitions in one step; stopped"),
                out,
            );
            return;
        }
        if let Some(from) = from {
            let goto = self.run(
                &wf.states[from].exit,
                Owner::Instance(w, key),
                step,
                &[],
                out,
            );
            let _ = goto; // exit blocks cannot redirect the transition in progress
            self.stop_all_ladders(w, key, step, "state left", out);
            let timers = self
                .world
                .instances
                .get_mut(&ik)
                .map(|i| std::mem::take(&mut i.state_timers))
                .unwrap_or_default();
            for id in timers {
                self.remove_timer(None, id);
            }
        }
        let Some(inst) = self.world.instances.get_mut(&ik) else {
            return;
        };
        inst.state = target;
        inst.seq += 1;
        let seq = inst.seq;
        self.mark(&ik);
        let state = &wf.states[target];
        let mut d = self.base(&Owner::Instance(w, key), step, Kind::Transition);
        d.from = from.map(|f| wf.states[f].name.clone());
        d.to = Some(state.name.clone());
        self.decide(d, out);
        let mut armed = Vec::new();
        for (index, (spec, _)) in state.timers.iter().enumerate() {
            let due = self.due(step.now, spec);
            armed.push(self.add_timer(
                due,
                TimerKind::State {
                    workflow: w,
                    key: key.clone(),
                    state: target,
                    seq,
                    index,
                },
            ));
        }
        if let Some(inst) = self.world.instances.get_mut(&ik) {
            inst.state_timers = armed;
        }
        let goto = self.run(&state.enter, Owner::Instance(w, key), step, &[], out);
        let still_here = self.world.instances.get(&ik).is_some_and(|i| i.seq == seq);
        if let (Some(next), true) = (goto, still_here) {
            self.enter(w, key, next, Some(target), step, out);
            return;
        }
        if state.is_final && still_here {
            self.finish(w, key, step, out);
        }
    }

    /// Stops every running ladder of an instance (its pending steps become stale).
    fn stop_all_ladders(
        &mut self,
        w: usize,
        key: &Arc<str>,
        step: &Step<'_>,
        why: &str,
        out: &mut Vec<Decision>,
    ) {
        let ik = (w, key.clone());
        let ladders = self
            .world
            .instances
            .get_mut(&ik)
            .map(|i| std::mem::take(&mut i.ladders))
            .unwrap_or_default();
        if ladders.is_empty() {
            return;
        }
        self.mark(&ik);
        for (ladder, _) in ladders {
            let mut d = self.base(&Owner::Instance(w, key), step, Kind::Escalation);
            d.to = Some(self.rules.workflows[w].ladders[ladder].name.clone());
            d.outcome = Some("stopped".to_string());
            d.message = Some(why.to_string());
            self.decide(d, out);
        }
    }

    /// A final state: stop ladders, close approvals, forget the instance.
    fn finish(&mut self, w: usize, key: &Arc<str>, step: &Step<'_>, out: &mut Vec<Decision>) {
        let ik = (w, key.clone());
        self.stop_all_ladders(w, key, step, "workflow finished", out);
        self.stop_all_clocks(w, key, step, out);
        let timers = self.timers_of(w, key, |_| true);
        for (due, id) in timers {
            self.remove_timer(Some(due), id);
        }
        self.world.instances.remove(&ik);
        self.mark(&ik);
    }

    // ---------------------------------------------------------------- escalation

    fn start_ladder(
        &mut self,
        w: usize,
        key: &Arc<str>,
        ladder: usize,
        step: &Step<'_>,
        out: &mut Vec<Decision>,
    ) {
        let ik = (w, key.clone());
        let Some(run) = self.world.instances.get(&ik).map(|i| i.step) else {
            return;
        };
        let rules = self.rules.clone();
        let l = &rules.workflows[w].ladders[ladder];
        if let Some(inst) = self.world.instances.get_mut(&ik) {
            if inst.ladders.iter().any(|(i, _)| *i == ladder) {
                return; // already running
            }
            inst.ladders.push((ladder, run));
        }
        self.mark(&ik);
        let mut d = self.base(&Owner::Instance(w, key), step, Kind::Escalation);
        d.to = Some(l.name.clone());
        d.outcome = Some("started".to_string());
        self.decide(d, out);
        if let Some((wait, _)) = l.steps.first() {
            let due = self.due(step.now, wait);
            self.add_timer(
                due,
                TimerKind::Escalation {
                    workflow: w,
                    key: key.clone(),
                    ladder,
                    run,
                    step: 0,
                    repeat: 0,
                },
            );
        }
    }

    fn stop_ladders(&mut self, w: usize, key: &Arc<str>, step: &Step<'_>, out: &mut Vec<Decision>) {
        let ik = (w, key.clone());
        let active = self
            .world
            .instances
            .get(&ik)
            .map(|i| i.ladders.clone())
            .unwrap_or_default();
        let rules = self.rules.clone();
        for (ladder, run) in active {
            let l = &rules.workflows[w].ladders[ladder];
            let stop = l
                .stop
                .iter()
                .any(|t| self.condition(t, Owner::Instance(w, key), step, &[], out));
            if !stop {
                continue;
            }
            if let Some(inst) = self.world.instances.get_mut(&ik) {
                inst.ladders.retain(|(l, r)| !(*l == ladder && *r == run));
            }
            self.mark(&ik);
            let timers = self.timers_of(w, key, |k| {
                matches!(k, TimerKind::Escalation { ladder: l, run: r, .. } if *l == ladder && *r == run)
            });
            for (due, id) in timers {
                self.remove_timer(Some(due), id);
            }
            let mut d = self.base(&Owner::Instance(w, key), step, Kind::Escalation);
            d.to = Some(l.name.clone());
            d.outcome = Some("stopped".to_string());
            self.decide(d, out);
        }
    }

    // ---------------------------------------------------------------- timers

    fn fire(&mut self, id: u64, due: DateTime<Utc>, kind: TimerKind, out: &mut Vec<Decision>) {
        let rules = self.rules.clone();
        let mut step = Step {
            now: due,
            event: None,
            event_value: None,
            emitted: Vec::new(),
            transitions: 0,
        };
        match kind {
            TimerKind::State {
                workflow,
                key,
                state,
                seq,
                index,
            } => {
                let ik = (workflow, key.clone());
                let Some(inst) = self.world.instances.get_mut(&ik) else {
                    return;
                };
                if inst.state != state || inst.seq != seq {
                    return; // the state was left: the timer is stale
                }
                inst.step += 1;
                inst.state_timers.retain(|t| *t != id);
                self.mark(&ik);
                let wf = &rules.workflows[workflow];
                let Some((spec, transition)) = wf.states[state].timers.get(index) else {
                    return;
                };
                let mut d = self.base(&Owner::Instance(workflow, &key), &step, Kind::Timer);
                d.message = Some(format!("after {} {}", spec.amount, unit_name(spec)));
                self.decide(d, out);
                self.take(workflow, &key, transition, &mut step, out);
            }
            TimerKind::ApprovalExpiry {
                workflow,
                key,
                request,
            } => {
                let ik = (workflow, key.clone());
                let open = self
                    .world
                    .instances
                    .get(&ik)
                    .and_then(|i| i.approval.as_ref())
                    .is_some_and(|a| a.open && a.request == request);
                if open {
                    if let Some(inst) = self.world.instances.get_mut(&ik) {
                        inst.step += 1;
                    }
                    self.approval_outcome(workflow, &key, ApprovalOutcome::Expired, &mut step, out);
                }
            }
            TimerKind::Escalation {
                workflow,
                key,
                ladder,
                run,
                step: index,
                repeat,
            } => {
                let ik = (workflow, key.clone());
                let active = self
                    .world
                    .instances
                    .get(&ik)
                    .is_some_and(|i| i.ladders.contains(&(ladder, run)));
                if !active {
                    return;
                }
                if let Some(inst) = self.world.instances.get_mut(&ik) {
                    inst.step += 1;
                }
                self.mark(&ik);
                let l = &rules.workflows[workflow].ladders[ladder];
                let Some((_, actions)) = l.steps.get(index) else {
                    return;
                };
                let at = EscalationAt {
                    workflow,
                    ladder,
                    run,
                    index,
                    repeat,
                };
                if self.defer_escalation(&key, &at, &step, out) {
                    return;
                }
                let mut d = self.base(&Owner::Instance(workflow, &key), &step, Kind::Escalation);
                d.to = Some(l.name.clone());
                d.outcome = Some(format!("step {}", index + 1));
                d.args = Some(
                    serde_json::json!({"ladder": l.name, "step": index + 1, "repeat": repeat}),
                );
                self.decide(d, out);
                let goto = self.run(
                    actions,
                    Owner::Instance(workflow, &key),
                    &mut step,
                    &[],
                    out,
                );
                self.schedule_next_escalation(&key, &at, due);
                if let Some(target) = goto {
                    let from = self.world.instances.get(&ik).map(|i| i.state);
                    self.enter(workflow, &key, target, from, &mut step, out);
                }
            }
            TimerKind::Cadence { cadence } => self.run_cadence(cadence, &mut step, out),
            TimerKind::Sla {
                workflow,
                key,
                sla,
                run,
                percent,
            } => self.sla_timer(id, workflow, &key, sla, run, percent, &mut step, out),
            TimerKind::Expect { cadence, period } => {
                let Some(exp) = self.world.expectations.remove(&(cadence, period.clone())) else {
                    return;
                };
                let _ = exp;
                if self.record_changes {
                    self.changes
                        .expectations
                        .insert((cadence, period.clone()), None);
                }
                let c = &rules.cadences[cadence];
                let owner = Owner::Cadence(cadence, &period);
                let mut d = self.base(&owner, &step, Kind::Cadence);
                d.outcome = Some("missed".to_string());
                d.message = Some("expected evidence did not arrive in time".to_string());
                self.decide(d, out);
                if let Some(expect) = &c.expect {
                    let extra = [("period", Value::String(Arc::from(period.as_str())))];
                    self.run(&expect.otherwise, owner, &mut step, &extra, out);
                }
            }
        }
        // Events emitted by timer reactions are applied at the timer's time.
        let emitted: Vec<Event> = step.emitted.drain(..).collect();
        let mut queue: VecDeque<(Event, usize)> = emitted.into_iter().map(|e| (e, 1)).collect();
        while let Some((e, depth)) = queue.pop_front() {
            self.apply_one(&e, due, out, &mut queue, depth);
        }
    }

    // ---------------------------------------------------------------- cadences

    fn run_cadence(&mut self, cadence: usize, step: &mut Step<'_>, out: &mut Vec<Decision>) {
        let rules = self.rules.clone();
        let c = &rules.cadences[cadence];
        let now = step.now;
        let next = c.schedule.next_after(now);
        let period = match period_unit(now, next) {
            Some(unit) => period_id(unit, now, c.schedule.zone),
            None => format_time(now),
        };
        let owner = Owner::Cadence(cadence, &period);
        let missed = self.started.is_some_and(|s| now < s);
        if missed && !runs_when_missed(c.catch_up, next, self.started) {
            let mut d = self.base(&owner, step, Kind::Cadence);
            d.outcome = Some("skipped".to_string());
            d.message = Some(format!(
                "missed while the engine was down (catch up {})",
                catch_up_word(c.catch_up)
            ));
            self.decide(d, out);
            if let Some(next) = next {
                self.add_timer(next, TimerKind::Cadence { cadence });
            }
            return;
        }
        let mut d = self.base(&owner, step, Kind::Cadence);
        d.outcome = Some("ran".to_string());
        if missed {
            d.message = Some(format!(
                "missed while the engine was down, run on restart (catch up {})",
                catch_up_word(c.catch_up)
            ));
        }
        self.decide(d, out);
        let extra = [
            ("period", Value::String(Arc::from(period.as_str()))),
            ("cadence", Value::String(Arc::from(c.name.as_str()))),
        ];
        self.run(&c.actions, owner, step, &extra, out);
        if let Some(expect) = &c.expect {
            let due = self.due(now, &expect.within);
            let timer = self.add_timer(
                due,
                TimerKind::Expect {
                    cadence,
                    period: period.clone(),
                },
            );
            let exp = Expectation { due, timer };
            self.world
                .expectations
                .insert((cadence, period.clone()), exp.clone());
            if self.record_changes {
                self.changes
                    .expectations
                    .insert((cadence, period), Some(exp));
            }
        }
        if let Some(next) = next {
            self.add_timer(next, TimerKind::Cadence { cadence });
        }
    }

    fn expect_event(&mut self, cadence: usize, step: &Step<'_>, out: &mut Vec<Decision>) {
        let rules = self.rules.clone();
        let Some(expect) = &rules.cadences[cadence].expect else {
            return;
        };
        // The oldest open period of this cadence is the one the evidence is for.
        let Some((period, exp)) = self
            .world
            .expectations
            .iter()
            .filter(|((c, _), _)| *c == cadence)
            .min_by_key(|(_, e)| (e.due, e.timer))
            .map(|((_, p), e)| (p.clone(), e.clone()))
        else {
            return;
        };
        let extra = [("period", Value::String(Arc::from(period.as_str())))];
        if !self.condition(
            &expect.trigger,
            Owner::Cadence(cadence, &period),
            step,
            &extra,
            out,
        ) {
            return;
        }
        self.world.expectations.remove(&(cadence, period.clone()));
        self.remove_timer(Some(exp.due), exp.timer);
        if self.record_changes {
            self.changes
                .expectations
                .insert((cadence, period.clone()), None);
        }
        let mut d = self.base(&Owner::Cadence(cadence, &period), step, Kind::Cadence);
        d.outcome = Some("met".to_string());
        self.decide(d, out);
    }

    // ---------------------------------------------------------------- counters

    fn counter_event(&mut self, counter: usize, step: &mut Step<'_>, out: &mut Vec<Decision>) {
        let rules = self.rules.clone();
        let c = &rules.counters[counter];
        let owner = Owner::Counter(counter, "", 0, "");
        if !self.condition(&c.trigger, owner.clone(), step, &[], out) {
            return;
        }
        let key = match self.eval(&c.by, &owner, step, &[]) {
            Ok(v) => match value_key(&v) {
                Some(k) => k,
                None => {
                    self.error(
                        &owner,
                        step,
                        format!("counter key is `{}`", v.type_name()),
                        out,
                    );
                    return;
                }
            },
            Err(e) => {
                self.error(&owner, step, format!("counter key: {e}"), out);
                return;
            }
        };
        let now = step.now;
        let state = self
            .world
            .counters
            .entry((counter, key.clone()))
            .or_default();
        let (count, period) = match &c.window {
            Window::Sliding(secs) => {
                let horizon = now - Duration::seconds(*secs);
                while state.times.front().is_some_and(|t| *t <= horizon) {
                    state.times.pop_front();
                }
                state.times.push_back(now);
                (state.times.len() as u64, String::new())
            }
            Window::Calendar(unit, tz) => {
                let period = period_id(*unit, now, *tz);
                if state.period != period {
                    state.period = period.clone();
                    state.count = 0;
                }
                state.count += 1;
                (state.count, period)
            }
        };
        if self.record_changes {
            let snapshot = state.clone();
            self.changes
                .counters
                .insert((counter, key.clone()), snapshot);
        }
        let extra = [
            (
                "count",
                Value::Int(i64::try_from(count).unwrap_or(i64::MAX)),
            ),
            ("period", Value::String(Arc::from(period.as_str()))),
        ];
        let owner = Owner::Counter(counter, &key, count, &period);
        match self.eval(&c.threshold, &owner, step, &extra) {
            Ok(Value::Bool(true)) => {
                let mut d = self.base(&owner, step, Kind::Counter);
                d.outcome = Some("threshold".to_string());
                d.message = Some(format!("count {count}"));
                self.decide(d, out);
                self.run(&c.actions, owner, step, &extra, out);
            }
            Ok(Value::Bool(false)) => {}
            Ok(v) => self.error(
                &owner,
                step,
                format!("threshold is `{}`, not a bool", v.type_name()),
                out,
            ),
            Err(e) => self.error(&owner, step, format!("threshold: {e}"), out),
        }
    }
}

pub(crate) fn unit_name(spec: &TimeSpec) -> String {
    let unit = match spec.unit {
        steward_dsl::ast::TimeUnit::Second => "second",
        steward_dsl::ast::TimeUnit::Minute => "minute",
        steward_dsl::ast::TimeUnit::Hour => "hour",
        steward_dsl::ast::TimeUnit::Day => "day",
        steward_dsl::ast::TimeUnit::Week => "week",
    };
    let plural = if spec.amount == 1 { "" } else { "s" };
    if spec.business.is_some() {
        format!("business {unit}{plural}")
    } else {
        format!("{unit}{plural}")
    }
}

/// Whether a missed cadence run executes: all of them with `all`, none with `skip`,
/// with `once` only the latest (the one whose next run is not missed).
fn runs_when_missed(
    policy: steward_dsl::ast::CatchUp,
    next: Option<DateTime<Utc>>,
    started: Option<DateTime<Utc>>,
) -> bool {
    use steward_dsl::ast::CatchUp;
    match policy {
        CatchUp::All => true,
        CatchUp::Skip => false,
        CatchUp::Once => match (next, started) {
            (Some(next), Some(started)) => next >= started,
            _ => true,
        },
    }
}

fn catch_up_word(policy: steward_dsl::ast::CatchUp) -> &'static str {
    use steward_dsl::ast::CatchUp;
    match policy {
        CatchUp::All => "all",
        CatchUp::Skip => "skip",
        CatchUp::Once => "once",
    }
}
