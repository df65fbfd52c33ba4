//! The ruleset: checked Steward files compiled into the form the engine runs.
//!
//! Every name is resolved to an index, every expression compiled to a CEL
//! [`Program`], every duration to seconds and a calendar; events are routed by an index
//! on their type. Compilation assumes the files passed `steward_dsl::check`; anything it
//! still cannot resolve is reported as a [`CompileError`], never a panic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;
use steward_dsl::ast::{self, CalendarUnit};
use steward_dsl::cel::{Expr, Program, SharedNames, Value};

use crate::time::{BusinessCalendar, RecurringFreeze, Schedule, resolve_local, weekday};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub message: String,
}

fn err(message: impl Into<String>) -> CompileError {
    CompileError {
        message: message.into(),
    }
}

/// An event type pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// `"jira:*"` matches every type starting with `jira:`.
    Prefix(String),
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        match text.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_string()),
            None => Pattern::Exact(text.to_string()),
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::Exact(t) => t == event_type,
            Pattern::Prefix(p) => event_type.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub pattern: Pattern,
    pub condition: Option<Program>,
}

#[derive(Debug, Clone)]
pub struct Control {
    pub clause: String,
    pub statement: String,
    pub kind: ast::Enforcement,
}

/// A duration resolved to seconds, with the calendar it is counted on when it is
/// business time.
#[derive(Debug, Clone)]
pub struct TimeSpec {
    pub seconds: i64,
    pub unit: ast::TimeUnit,
    pub amount: i64,
    pub business: Option<Arc<BusinessCalendar>>,
}

#[derive(Debug, Clone)]
pub enum TemplatePart {
    Text(String),
    Expr(Program),
}

/// A connector call argument: an expression, or a string with `${expr}` parts.
#[derive(Debug, Clone)]
pub enum ArgValue {
    Expr(Program),
    Template(Vec<TemplatePart>),
}

#[derive(Debug, Clone)]
pub enum Quorum {
    Count(Program),
    All,
    Majority,
    Percent(u32),
}

#[derive(Debug, Clone)]
pub enum Action {
    Call {
        connector: String,
        op: String,
        args: Vec<(Option<String>, ArgValue)>,
    },
    Emit {
        event_type: String,
        fields: Vec<(String, Program)>,
    },
    Violation(Vec<TemplatePart>),
    Evidence {
        message: Vec<TemplatePart>,
        fields: Vec<(String, Program)>,
    },
    Set {
        name: String,
        value: Program,
    },
    Goto(usize),
    Escalate(usize),
    RequestApproval(Arc<ApprovalSpec>),
}

/// A compiled `request approval` (docs/language.md, "Approval requests").
#[derive(Debug, Clone)]
pub struct ApprovalSpec {
    /// Its position in [`Workflow::approvals`]: how an open request finds its spec again.
    pub index: usize,
    /// Each group with its quorum, in the order written; all must be met.
    pub roles: Vec<(String, Quorum)>,
    pub excluding: Vec<Program>,
    /// How many rejections reject (1 by default).
    pub veto: usize,
    /// The material field paths as written (`event.data.issue.fields.summary`).
    pub material: Vec<(String, Program)>,
    pub within: Option<TimeSpec>,
}

/// `repeat` and `only in working hours of` of an escalation step.
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    /// `repeat every D [times N]`: the interval, and how many repetitions (unbounded
    /// when `None`).
    pub repeat: Option<(TimeSpec, Option<u64>)>,
    /// `only in working hours of CAL`: the calendar's name and hours.
    pub working: Option<(String, Arc<BusinessCalendar>)>,
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub target: Option<usize>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone)]
pub struct State {
    pub name: String,
    pub is_final: bool,
    pub enter: Vec<Action>,
    pub exit: Vec<Action>,
    pub on_event: Vec<(Trigger, Transition)>,
    pub on_approval: Vec<(ast::ApprovalOutcome, Transition)>,
    pub timers: Vec<(TimeSpec, Transition)>,
    /// `on action succeeded|failed …`: reactions to the outcomes of this instance's
    /// actions, first match wins.
    pub on_action: Vec<(ActionTrigger, Transition)>,
}

/// `on action succeeded|failed [connector[.op]] [when cond]`; the condition sees `result`.
#[derive(Debug, Clone)]
pub struct ActionTrigger {
    pub outcome: ast::ActionOutcome,
    pub connector: Option<String>,
    pub op: Option<String>,
    pub condition: Option<Program>,
}

#[derive(Debug, Clone)]
pub struct Ladder {
    pub name: String,
    pub stop: Vec<Trigger>,
    pub steps: Vec<(TimeSpec, Vec<Action>)>,
    /// Per step, in the order of `steps`.
    pub options: Vec<StepOptions>,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub key: Program,
    pub controls: Vec<Control>,
    pub starts: Vec<Trigger>,
    pub states: Vec<State>,
    pub ladders: Vec<Ladder>,
    /// Its approval requests, in the order compiled (see [`ApprovalSpec::index`]).
    pub approvals: Vec<Arc<ApprovalSpec>>,
    /// `name@version` of the policies it reads, recorded with its decisions.
    pub policy: Option<Arc<str>>,
    /// SLA clocks, in declaration order.
    pub slas: Vec<Sla>,
}

/// An SLA clock of a workflow (see [`crate::sla`] for its arithmetic).
#[derive(Debug, Clone)]
pub struct Sla {
    pub name: String,
    /// The goal as written (`4 business hours in office`), for messages.
    pub goal_text: String,
    pub goal: chrono::Duration,
    /// Business time is counted on this calendar; wall time when absent.
    pub calendar: Option<Arc<BusinessCalendar>>,
    /// `start with instance` (or no `start` at all).
    pub with_instance: bool,
    /// `start on TRIGGER [at EXPR]`.
    pub starts: Vec<(Trigger, Option<Program>)>,
    pub pauses: Vec<Trigger>,
    pub resumes: Vec<Trigger>,
    pub stops: Vec<Trigger>,
    pub resets: Vec<Trigger>,
    pub cancels: Vec<Trigger>,
    /// Thresholds by rising percentage; 100 is always present (the breach), with no
    /// actions unless declared.
    pub thresholds: Vec<(u64, Vec<Action>)>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub controls: Vec<Control>,
    pub trigger: Trigger,
    pub actions: Vec<Action>,
    /// `name@version` of the policies it reads, recorded with its decisions.
    pub policy: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct Expect {
    pub trigger: Trigger,
    pub within: TimeSpec,
    pub otherwise: Vec<Action>,
}

#[derive(Debug, Clone)]
pub struct Cadence {
    pub name: String,
    pub schedule: Schedule,
    pub controls: Vec<Control>,
    pub actions: Vec<Action>,
    pub expect: Option<Expect>,
    /// `name@version` of the policies it reads, recorded with its decisions.
    pub policy: Option<Arc<str>>,
    /// What the runs missed while the engine was down do.
    pub catch_up: ast::CatchUp,
}

#[derive(Debug, Clone)]
pub enum Window {
    Sliding(i64),
    Calendar(CalendarUnit, Tz),
}

#[derive(Debug, Clone)]
pub struct Counter {
    pub name: String,
    pub controls: Vec<Control>,
    pub trigger: Trigger,
    pub by: Program,
    pub window: Window,
    pub threshold: Program,
    pub actions: Vec<Action>,
    /// `name@version` of the policies it reads, recorded with its decisions.
    pub policy: Option<Arc<str>>,
}

/// Where events of one type go: rule, workflow, cadence-expectation and counter
/// indices, each group in declaration order.
///
/// Compact, because it is read for every event: the indices of the four groups sit
/// back to back, inline for the usual handful, so a route costs the engine one cache
/// line rather than a pointer chase per group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    items: SmallVec<[u32; 8]>,
    /// Where each group ends in `items`.
    ends: [u32; 4],
}

impl Targets {
    fn group(&self, g: usize) -> &[u32] {
        let start = if g == 0 { 0 } else { self.ends[g - 1] as usize };
        &self.items[start..self.ends[g] as usize]
    }

    pub fn rules(&self) -> &[u32] {
        self.group(0)
    }

    pub fn workflows(&self) -> &[u32] {
        self.group(1)
    }

    pub fn expects(&self) -> &[u32] {
        self.group(2)
    }

    pub fn counters(&self) -> &[u32] {
        self.group(3)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// [`Targets`] while the index is built.
#[derive(Debug, Clone, Default)]
struct TargetLists {
    rules: Vec<usize>,
    workflows: Vec<usize>,
    expects: Vec<usize>,
    counters: Vec<usize>,
}

impl TargetLists {
    fn compact(&self) -> Targets {
        let mut items = SmallVec::new();
        let mut ends = [0u32; 4];
        for (g, list) in [&self.rules, &self.workflows, &self.expects, &self.counters]
            .into_iter()
            .enumerate()
        {
            // Indices of rules, workflows, cadences and counters: far below 2^32.
            items.extend(list.iter().map(|&i| i as u32));
            ends[g] = items.len() as u32;
        }
        Targets { items, ends }
    }

    fn extend(&mut self, other: &TargetLists) {
        self.rules.extend(&other.rules);
        self.workflows.extend(&other.workflows);
        self.expects.extend(&other.expects);
        self.counters.extend(&other.counters);
        for list in [
            &mut self.rules,
            &mut self.workflows,
            &mut self.expects,
            &mut self.counters,
        ] {
            list.sort_unstable();
            list.dedup();
        }
    }
}

/// The compiled ruleset.
#[derive(Debug, Clone)]
pub struct Ruleset {
    pub rules: Vec<Rule>,
    pub workflows: Vec<Workflow>,
    pub cadences: Vec<Cadence>,
    pub counters: Vec<Counter>,
    pub groups: HashMap<String, Vec<String>>,
    /// Policies and groups as CEL values, visible by name in every expression.
    pub globals: HashMap<String, Value>,
    /// The version of every policy, by name.
    pub policy_versions: BTreeMap<String, String>,
    /// The business calendars, by name (what the calendar functions read).
    pub calendars: HashMap<String, Arc<BusinessCalendar>>,
    /// The first 8 bytes of the SHA-256 of the sources, in hex: the rules' version.
    pub version: String,
    exact: HashMap<String, TargetLists>,
    prefixes: Vec<(String, TargetLists)>,
}

/// Approval decisions arrive as events of this type (see docs/language.md).
pub const APPROVAL_EVENT: &str = "approval.decided";
/// Delegations of an approver's decision arrive as events of this type.
pub const DELEGATION_EVENT: &str = "approval.delegated";

impl Ruleset {
    /// Compiles checked files. `sources` are the texts, used only for the version hash.
    pub fn compile(files: &[ast::File], sources: &[&str]) -> Result<Ruleset, CompileError> {
        let mut hasher = Sha256::new();
        for s in sources {
            hasher.update((s.len() as u64).to_le_bytes());
            hasher.update(s.as_bytes());
        }
        let version = hex::encode(&hasher.finalize()[..8]);
        let mut cx = Compiler::default();
        let items: Vec<&ast::Item> = files.iter().flat_map(|f| &f.items).collect();
        // Declarations first, so uses may precede them.
        for item in &items {
            match item {
                ast::Item::Policy(p) => cx.policy(p)?,
                ast::Item::Group(g) => {
                    let members: Vec<String> = g.members.iter().map(|m| m.value.clone()).collect();
                    cx.globals.insert(
                        g.name.name.clone(),
                        Value::from_json(&serde_json::json!(members)),
                    );
                    cx.groups.insert(g.name.name.clone(), members);
                }
                _ => {}
            }
        }
        cx.calendars(&items)?;
        let mut set = Ruleset {
            rules: Vec::new(),
            workflows: Vec::new(),
            cadences: Vec::new(),
            counters: Vec::new(),
            groups: HashMap::new(),
            globals: HashMap::new(),
            policy_versions: BTreeMap::new(),
            calendars: HashMap::new(),
            version,
            exact: HashMap::new(),
            prefixes: Vec::new(),
        };
        for item in &items {
            match item {
                ast::Item::Rule(r) => set.rules.push(cx.rule(r)?),
                ast::Item::Workflow(w) => set.workflows.push(cx.workflow(w)?),
                ast::Item::Cadence(c) => set.cadences.push(cx.cadence(c)?),
                ast::Item::Counter(c) => set.counters.push(cx.counter(c)?),
                _ => {}
            }
        }
        set.groups = cx.groups;
        set.globals = cx.globals;
        set.policy_versions = cx.policy_versions;
        set.calendars = cx.calendars;
        set.build_index();
        Ok(set)
    }

    fn build_index(&mut self) {
        let mut entries: Vec<(Pattern, usize, u8)> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            entries.push((r.trigger.pattern.clone(), i, 0));
        }
        for (i, w) in self.workflows.iter().enumerate() {
            let mut patterns: Vec<&Pattern> = w.starts.iter().map(|t| &t.pattern).collect();
            for s in &w.states {
                patterns.extend(s.on_event.iter().map(|(t, _)| &t.pattern));
            }
            for l in &w.ladders {
                patterns.extend(l.stop.iter().map(|t| &t.pattern));
            }
            for c in &w.slas {
                patterns.extend(c.starts.iter().map(|(t, _)| &t.pattern));
                for list in [&c.pauses, &c.resumes, &c.stops, &c.resets, &c.cancels] {
                    patterns.extend(list.iter().map(|t| &t.pattern));
                }
            }
            let approval = Pattern::Exact(APPROVAL_EVENT.to_string());
            if w.states.iter().any(|s| !s.on_approval.is_empty()) || !w.approvals.is_empty() {
                entries.push((approval, i, 1));
                entries.push((Pattern::Exact(DELEGATION_EVENT.to_string()), i, 1));
            }
            for p in patterns {
                entries.push((p.clone(), i, 1));
            }
        }
        for (i, c) in self.cadences.iter().enumerate() {
            if let Some(e) = &c.expect {
                entries.push((e.trigger.pattern.clone(), i, 2));
            }
        }
        for (i, c) in self.counters.iter().enumerate() {
            entries.push((c.trigger.pattern.clone(), i, 3));
        }
        let mut prefixes: BTreeMap<String, TargetLists> = BTreeMap::new();
        for (pattern, index, kind) in entries {
            let targets = match pattern {
                Pattern::Exact(t) => self.exact.entry(t).or_default(),
                Pattern::Prefix(p) => prefixes.entry(p).or_default(),
            };
            let list = match kind {
                0 => &mut targets.rules,
                1 => &mut targets.workflows,
                2 => &mut targets.expects,
                _ => &mut targets.counters,
            };
            if list.last() != Some(&index) {
                list.push(index);
            }
        }
        self.prefixes = prefixes.into_iter().collect();
    }

    /// Everything interested in events of `event_type`, each list in declaration order.
    pub fn targets(&self, event_type: &str) -> Targets {
        let exact = self.exact.get(event_type);
        let mut prefixed = self
            .prefixes
            .iter()
            .filter(|(prefix, _)| event_type.starts_with(prefix.as_str()))
            .peekable();
        match (exact, prefixed.peek()) {
            (Some(lists), None) => lists.compact(),
            (None, None) => Targets::default(),
            _ => {
                let mut out = exact.cloned().unwrap_or_default();
                for (_, lists) in prefixed {
                    out.extend(lists);
                }
                out.compact()
            }
        }
    }

    pub fn has_prefix_patterns(&self) -> bool {
        !self.prefixes.is_empty()
    }
}

#[derive(Default)]
struct Compiler {
    globals: HashMap<String, Value>,
    groups: HashMap<String, Vec<String>>,
    policy_versions: BTreeMap<String, String>,
    durations: HashMap<(String, String), ast::DurationLit>,
    calendars: HashMap<String, Arc<BusinessCalendar>>,
    /// Steward's functions, the calendar functions bound to `calendars`.
    functions: Option<steward_dsl::cel::Functions>,
    /// Policies read by the item being compiled.
    used: std::cell::RefCell<std::collections::BTreeSet<String>>,
    /// Path names shared by all the ruleset's expressions.
    names: std::cell::RefCell<SharedNames>,
    /// The approval requests of the workflow being compiled.
    approvals: std::cell::RefCell<Vec<Arc<ApprovalSpec>>>,
}

fn compile_expr(expr: &Expr) -> Result<Program, CompileError> {
    Program::compile(expr, steward_dsl::stdlib::functions()).map_err(|diags| compile_error(&diags))
}

fn compile_error(diags: &[steward_dsl::diagnostic::Diagnostic]) -> CompileError {
    err(diags
        .first()
        .map_or_else(|| "invalid expression".to_string(), |d| d.message.clone()))
}

fn controls(list: &[ast::Control]) -> Vec<Control> {
    list.iter()
        .map(|c| Control {
            clause: c.clause.value.clone(),
            statement: c.statement.value.clone(),
            kind: c.kind,
        })
        .collect()
}

fn zone(name: &str) -> Result<Tz, CompileError> {
    name.parse::<Tz>()
        .map_err(|_| err(format!("unknown time zone `{name}`")))
}

impl Compiler {
    /// Compiles an expression, noting the policies it reads.
    fn program(&self, expr: &Expr) -> Result<Program, CompileError> {
        for r in expr.references() {
            if let Some(root) = r.path.first()
                && self.policy_versions.contains_key(root)
            {
                self.used.borrow_mut().insert(root.clone());
            }
        }
        let mut names = self.names.borrow_mut();
        let functions = match &self.functions {
            Some(f) => f,
            None => steward_dsl::stdlib::functions(),
        };
        Program::compile_shared(expr, functions, &mut names).map_err(|diags| compile_error(&diags))
    }

    fn trigger(&self, t: &ast::Trigger) -> Result<Trigger, CompileError> {
        Ok(Trigger {
            pattern: Pattern::new(&t.pattern.pattern.value),
            condition: t.condition.as_ref().map(|c| self.program(c)).transpose()?,
        })
    }

    /// `name@version` of the policies read since the last call, for the decisions of
    /// the rule, workflow, cadence or counter just compiled.
    fn take_policy_label(&self) -> Option<Arc<str>> {
        let used = std::mem::take(&mut *self.used.borrow_mut());
        if used.is_empty() {
            return None;
        }
        let label = used
            .iter()
            .filter_map(|n| self.policy_versions.get(n).map(|v| format!("{n}@{v}")))
            .collect::<Vec<_>>()
            .join(",");
        Some(Arc::from(label.as_str()))
    }

    fn policy(&mut self, p: &ast::Policy) -> Result<(), CompileError> {
        let mut map = serde_json::Map::new();
        let mut values: Vec<(String, Value)> = Vec::new();
        for param in &p.params {
            match &param.value {
                ast::PolicyValue::Duration(d) => {
                    self.durations
                        .insert((p.name.name.clone(), param.name.name.clone()), *d);
                    let secs = d.amount.saturating_mul(d.unit.seconds());
                    map.insert(param.name.name.clone(), format!("{secs}s").into());
                }
                ast::PolicyValue::Expr(e) => {
                    let value = compile_expr(e)?
                        .eval(&HashMap::<String, Value>::new())
                        .map_err(|e| {
                            err(format!(
                                "policy `{}` parameter `{}`: {e}",
                                p.name.name, param.name.name
                            ))
                        })?;
                    values.push((param.name.name.clone(), value.clone()));
                    map.insert(param.name.name.clone(), value.to_json());
                }
            }
        }
        self.globals.insert(
            p.name.name.clone(),
            Value::from_json(&serde_json::Value::Object(map)),
        );
        self.policy_versions
            .insert(p.name.name.clone(), p.version.value.clone());
        Ok(())
    }

    fn calendars(&mut self, items: &[&ast::Item]) -> Result<(), CompileError> {
        let decls: HashMap<&str, &ast::Calendar> = items
            .iter()
            .filter_map(|i| match i {
                ast::Item::Calendar(c) => Some((c.name.name.as_str(), c)),
                _ => None,
            })
            .collect();
        let mut names: Vec<&str> = decls.keys().copied().collect();
        names.sort_unstable();
        for name in names {
            let cal = build_calendar(name, &decls, 0)?;
            self.calendars.insert(name.to_string(), Arc::new(cal));
            // A calendar's name is a value in expressions, for the calendar functions.
            self.globals
                .entry(name.to_string())
                .or_insert_with(|| Value::String(Arc::from(name)));
        }
        self.functions = Some(crate::calendar_fns::functions(&self.calendars));
        Ok(())
    }

    fn time_spec(&self, t: &ast::TimeSpec) -> Result<TimeSpec, CompileError> {
        let lit = match &t.duration {
            ast::DurationRef::Literal(d) => *d,
            ast::DurationRef::Param { policy, param } => {
                self.used.borrow_mut().insert(policy.name.clone());
                *self
                    .durations
                    .get(&(policy.name.clone(), param.name.clone()))
                    .ok_or_else(|| {
                        err(format!(
                            "`{}.{}` is not a duration parameter",
                            policy.name, param.name
                        ))
                    })?
            }
        };
        let amount = i64::try_from(lit.amount).map_err(|_| err("duration too large"))?;
        let seconds = amount
            .checked_mul(lit.unit.seconds() as i64)
            .ok_or_else(|| err("duration too large"))?;
        let business = if lit.business {
            let name = t
                .calendar
                .as_ref()
                .ok_or_else(|| err("business time needs a calendar (`in CALENDAR`)"))?;
            Some(
                self.calendars
                    .get(&name.name)
                    .cloned()
                    .ok_or_else(|| err(format!("unknown calendar `{}`", name.name)))?,
            )
        } else {
            None
        };
        Ok(TimeSpec {
            seconds,
            unit: lit.unit,
            amount,
            business,
        })
    }

    fn template(&self, t: &ast::Template) -> Result<Vec<TemplatePart>, CompileError> {
        t.parts
            .iter()
            .map(|p| {
                Ok(match p {
                    ast::TemplatePart::Text(s) => TemplatePart::Text(s.clone()),
                    ast::TemplatePart::Expr(e) => TemplatePart::Expr(self.program(e)?),
                })
            })
            .collect()
    }

    fn fields(
        &self,
        fields: &[(ast::Ident, Expr)],
    ) -> Result<Vec<(String, Program)>, CompileError> {
        fields
            .iter()
            .map(|(n, e)| Ok((n.name.clone(), self.program(e)?)))
            .collect()
    }

    fn actions(
        &self,
        block: Option<&ast::Block>,
        states: &HashMap<String, usize>,
        ladders: &HashMap<String, usize>,
    ) -> Result<Vec<Action>, CompileError> {
        let Some(block) = block else {
            return Ok(Vec::new());
        };
        block
            .actions
            .iter()
            .map(|a| {
                Ok(match a {
                    ast::Action::Call {
                        connector,
                        op,
                        args,
                        ..
                    } => Action::Call {
                        connector: connector.name.clone(),
                        op: op.name.clone(),
                        args: args
                            .iter()
                            .map(|a| {
                                let value = match &a.template {
                                    Some(t) => ArgValue::Template(self.template(t)?),
                                    None => ArgValue::Expr(self.program(&a.value)?),
                                };
                                Ok((a.name.as_ref().map(|n| n.name.clone()), value))
                            })
                            .collect::<Result<_, CompileError>>()?,
                    },
                    ast::Action::Emit {
                        event_type, fields, ..
                    } => Action::Emit {
                        event_type: event_type.value.clone(),
                        fields: self.fields(fields)?,
                    },
                    ast::Action::Violation { message, .. } => {
                        Action::Violation(self.template(message)?)
                    }
                    ast::Action::Evidence {
                        message, fields, ..
                    } => Action::Evidence {
                        message: self.template(message)?,
                        fields: self.fields(fields)?,
                    },
                    ast::Action::Set { name, value, .. } => Action::Set {
                        name: name.name.clone(),
                        value: self.program(value)?,
                    },
                    ast::Action::Goto { state, .. } => Action::Goto(
                        *states
                            .get(&state.name)
                            .ok_or_else(|| err(format!("unknown state `{}`", state.name)))?,
                    ),
                    ast::Action::Escalate { ladder, .. } => Action::Escalate(
                        *ladders
                            .get(&ladder.name)
                            .ok_or_else(|| err(format!("unknown escalation `{}`", ladder.name)))?,
                    ),
                    ast::Action::RequestApproval(r) => Action::RequestApproval(self.approval(r)?),
                })
            })
            .collect()
    }

    fn quorum(&self, q: &ast::Quorum) -> Result<Quorum, CompileError> {
        Ok(match q {
            ast::Quorum::Count(e) => Quorum::Count(self.program(e)?),
            ast::Quorum::All(_) => Quorum::All,
            ast::Quorum::Majority(_) => Quorum::Majority,
            ast::Quorum::Percent(p, _) => Quorum::Percent(*p),
        })
    }

    fn approval(&self, r: &ast::ApprovalRequest) -> Result<Arc<ApprovalSpec>, CompileError> {
        let mut roles = vec![(r.group.name.clone(), self.quorum(&r.quorum)?)];
        for role in &r.more_roles {
            roles.push((role.group.name.clone(), self.quorum(&role.quorum)?));
        }
        let material = r
            .material
            .iter()
            .map(|e| {
                let path = e
                    .references()
                    .first()
                    .map(|r| r.path.join("."))
                    .ok_or_else(|| err("a material value is not an event field"))?;
                Ok((path, self.program(e)?))
            })
            .collect::<Result<_, CompileError>>()?;
        let mut list = self.approvals.borrow_mut();
        let spec = Arc::new(ApprovalSpec {
            index: list.len(),
            roles,
            excluding: r
                .excluding
                .iter()
                .map(|e| self.program(e))
                .collect::<Result<_, _>>()?,
            veto: r
                .veto
                .map_or(1, |(n, _)| usize::try_from(n).unwrap_or(usize::MAX).max(1)),
            material,
            within: r.within.as_ref().map(|t| self.time_spec(t)).transpose()?,
        });
        list.push(spec.clone());
        Ok(spec)
    }

    fn step_options(&self, s: &ast::EscalationStep) -> Result<StepOptions, CompileError> {
        let working = match &s.working {
            Some(name) => Some((
                name.name.clone(),
                self.calendars
                    .get(&name.name)
                    .cloned()
                    .ok_or_else(|| err(format!("unknown calendar `{}`", name.name)))?,
            )),
            None => None,
        };
        let repeat = match &s.repeat {
            Some(r) => Some((self.time_spec(&r.every)?, r.times.map(|(n, _)| n))),
            None => None,
        };
        Ok(StepOptions { repeat, working })
    }

    fn rule(&self, r: &ast::Rule) -> Result<Rule, CompileError> {
        self.used.borrow_mut().clear();
        let none = HashMap::new();
        let mut compiled = Rule {
            name: r.name.name.clone(),
            controls: controls(&r.controls),
            trigger: self.trigger(&r.trigger)?,
            actions: self.actions(Some(&r.actions), &none, &none)?,
            policy: None,
        };
        compiled.policy = self.take_policy_label();
        Ok(compiled)
    }

    fn workflow(&self, w: &ast::Workflow) -> Result<Workflow, CompileError> {
        self.used.borrow_mut().clear();
        self.approvals.borrow_mut().clear();
        let states: HashMap<String, usize> = w
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.name.clone(), i))
            .collect();
        let ladder_index: HashMap<String, usize> = w
            .escalations
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.name.clone(), i))
            .collect();
        let transition = |t: &ast::Transition| -> Result<Transition, CompileError> {
            Ok(Transition {
                target: t
                    .target
                    .as_ref()
                    .map(|n| {
                        states
                            .get(&n.name)
                            .copied()
                            .ok_or_else(|| err(format!("unknown state `{}`", n.name)))
                    })
                    .transpose()?,
                actions: self.actions(t.actions.as_ref(), &states, &ladder_index)?,
            })
        };
        let mut compiled_states = Vec::new();
        for s in &w.states {
            let mut state = State {
                name: s.name.name.clone(),
                is_final: s.is_final,
                enter: self.actions(s.enter.as_ref(), &states, &ladder_index)?,
                exit: self.actions(s.exit.as_ref(), &states, &ladder_index)?,
                on_event: Vec::new(),
                on_approval: Vec::new(),
                timers: Vec::new(),
                on_action: Vec::new(),
            };
            for t in &s.transitions {
                match &t.on {
                    ast::TransitionTrigger::Event(trig) => {
                        state.on_event.push((self.trigger(trig)?, transition(t)?));
                    }
                    ast::TransitionTrigger::Approval { outcome, .. } => {
                        state.on_approval.push((*outcome, transition(t)?));
                    }
                    ast::TransitionTrigger::After(spec) => {
                        state.timers.push((self.time_spec(spec)?, transition(t)?));
                    }
                    ast::TransitionTrigger::Action(a) => {
                        let trigger = ActionTrigger {
                            outcome: a.outcome,
                            connector: a.connector.as_ref().map(|c| c.name.clone()),
                            op: a.op.as_ref().map(|o| o.name.clone()),
                            condition: a.condition.as_ref().map(|c| self.program(c)).transpose()?,
                        };
                        state.on_action.push((trigger, transition(t)?));
                    }
                }
            }
            compiled_states.push(state);
        }
        if compiled_states.is_empty() {
            return Err(err(format!("workflow `{}` has no states", w.name.name)));
        }
        let ladders = w
            .escalations
            .iter()
            .map(|l| {
                Ok(Ladder {
                    name: l.name.name.clone(),
                    stop: l
                        .stop
                        .iter()
                        .map(|t| self.trigger(t))
                        .collect::<Result<_, _>>()?,
                    steps: l
                        .steps
                        .iter()
                        .map(|s| {
                            Ok((
                                self.time_spec(&s.wait)?,
                                self.actions(Some(&s.actions), &states, &ladder_index)?,
                            ))
                        })
                        .collect::<Result<_, CompileError>>()?,
                    options: l
                        .steps
                        .iter()
                        .map(|s| self.step_options(s))
                        .collect::<Result<_, CompileError>>()?,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        let mut compiled = Workflow {
            name: w.name.name.clone(),
            key: self.program(&w.key)?,
            controls: controls(&w.controls),
            starts: w
                .starts
                .iter()
                .map(|t| self.trigger(t))
                .collect::<Result<_, _>>()?,
            states: compiled_states,
            ladders,
            approvals: std::mem::take(&mut *self.approvals.borrow_mut()),
            policy: None,
            slas: w
                .slas
                .iter()
                .map(|c| self.sla(c, &states, &ladder_index))
                .collect::<Result<_, _>>()?,
        };
        compiled.policy = self.take_policy_label();
        Ok(compiled)
    }

    fn sla(
        &self,
        c: &ast::Sla,
        states: &HashMap<String, usize>,
        ladders: &HashMap<String, usize>,
    ) -> Result<Sla, CompileError> {
        let spec = c
            .goals
            .first()
            .ok_or_else(|| err(format!("sla clock `{}` has no goal", c.name.name)))?;
        let goal = self.time_spec(spec)?;
        if goal.business.is_some() && matches!(goal.unit, ast::TimeUnit::Day | ast::TimeUnit::Week)
        {
            return Err(err(format!(
                "sla clock `{}`: a goal in business days is not an exact working time",
                c.name.name
            )));
        }
        let unit = crate::core::unit_name(&goal);
        let goal_text = match &goal.business {
            Some(_) => format!(
                "{} {unit} in {}",
                goal.amount,
                spec.calendar.as_ref().map_or("", |n| n.name.as_str())
            ),
            None => format!("{} {unit}", goal.amount),
        };
        let triggers = |list: &[ast::Trigger]| -> Result<Vec<Trigger>, CompileError> {
            list.iter().map(|t| self.trigger(t)).collect()
        };
        let mut thresholds = c
            .thresholds
            .iter()
            .map(|t| Ok((t.percent, self.actions(Some(&t.actions), states, ladders)?)))
            .collect::<Result<Vec<_>, CompileError>>()?;
        if !thresholds.iter().any(|(p, _)| *p == 100) {
            thresholds.push((100, Vec::new()));
        }
        thresholds.sort_by_key(|(p, _)| *p);
        Ok(Sla {
            name: c.name.name.clone(),
            goal_text,
            goal: chrono::Duration::seconds(goal.seconds),
            calendar: goal.business,
            with_instance: c.starts.is_empty() || c.starts.iter().any(|s| s.trigger.is_none()),
            starts: c
                .starts
                .iter()
                .filter_map(|s| s.trigger.as_ref().map(|t| (t, s.since.as_ref())))
                .map(|(t, since)| {
                    Ok((
                        self.trigger(t)?,
                        since.map(|e| self.program(e)).transpose()?,
                    ))
                })
                .collect::<Result<_, CompileError>>()?,
            pauses: triggers(&c.pauses)?,
            resumes: triggers(&c.resumes)?,
            stops: triggers(&c.stops)?,
            resets: triggers(&c.resets)?,
            cancels: triggers(&c.cancels)?,
            thresholds,
        })
    }

    fn cadence(&self, c: &ast::Cadence) -> Result<Cadence, CompileError> {
        self.used.borrow_mut().clear();
        let none = HashMap::new();
        let tz = match &c.zone {
            Some(z) => zone(&z.value)?,
            None => Tz::UTC,
        };
        let schedule = Schedule::parse(&c.schedule.value, tz)
            .map_err(|e| err(format!("cadence `{}`: {e}", c.name.name)))?;
        let mut compiled = Cadence {
            name: c.name.name.clone(),
            schedule,
            controls: controls(&c.controls),
            actions: self.actions(c.actions.as_ref(), &none, &none)?,
            expect: c
                .expect
                .as_ref()
                .map(|e| {
                    Ok::<_, CompileError>(Expect {
                        trigger: self.trigger(&e.trigger)?,
                        within: self.time_spec(&e.within)?,
                        otherwise: self.actions(Some(&e.otherwise), &none, &none)?,
                    })
                })
                .transpose()?,
            policy: None,
            catch_up: c.catch_up.unwrap_or_default(),
        };
        compiled.policy = self.take_policy_label();
        Ok(compiled)
    }

    fn counter(&self, c: &ast::Counter) -> Result<Counter, CompileError> {
        self.used.borrow_mut().clear();
        let none = HashMap::new();
        let window = match &c.window {
            ast::Window::Sliding(d) => Window::Sliding(
                i64::try_from(d.amount.saturating_mul(d.unit.seconds()))
                    .map_err(|_| err("window too large"))?,
            ),
            ast::Window::Calendar { unit, zone: z, .. } => Window::Calendar(
                *unit,
                match z {
                    Some(z) => zone(&z.value)?,
                    None => Tz::UTC,
                },
            ),
        };
        let mut compiled = Counter {
            name: c.name.name.clone(),
            controls: controls(&c.controls),
            trigger: self.trigger(&c.trigger)?,
            by: self.program(&c.by)?,
            window,
            threshold: self.program(&c.threshold)?,
            actions: self.actions(Some(&c.actions), &none, &none)?,
            policy: None,
        };
        compiled.policy = self.take_policy_label();
        Ok(compiled)
    }
}

fn build_calendar(
    name: &str,
    decls: &HashMap<&str, &ast::Calendar>,
    depth: usize,
) -> Result<BusinessCalendar, CompileError> {
    if depth > 16 {
        return Err(err(format!("calendar `{name}` includes itself")));
    }
    let decl = decls
        .get(name)
        .ok_or_else(|| err(format!("unknown calendar `{name}`")))?;
    let tz = decl
        .entries
        .iter()
        .find_map(|e| match e {
            ast::CalendarEntry::Zone(z) => Some(z.value.as_str()),
            _ => None,
        })
        .map_or(Ok(Tz::UTC), zone)?;
    let mut cal = BusinessCalendar::new(tz);
    for entry in &decl.entries {
        match entry {
            ast::CalendarEntry::Zone(_) => {}
            ast::CalendarEntry::Hours { days, ranges, .. } => {
                let from = weekday(&days.from.name)
                    .ok_or_else(|| err(format!("unknown day `{}`", days.from.name)))?;
                let to = match &days.to {
                    Some(d) => {
                        weekday(&d.name).ok_or_else(|| err(format!("unknown day `{}`", d.name)))?
                    }
                    None => from,
                };
                let (a, b) = (from.num_days_from_monday(), to.num_days_from_monday());
                for day in a..=b.max(a) {
                    for r in ranges {
                        cal.hours[day as usize].push((
                            r.start.hour * 60 + r.start.minute,
                            r.end.hour * 60 + r.end.minute,
                        ));
                    }
                    cal.hours[day as usize].sort_unstable();
                }
            }
            ast::CalendarEntry::Holidays(list) => {
                for d in list {
                    let from = date(&d.from.value)?;
                    let to =
                        d.to.as_ref()
                            .map(|t| date(&t.value))
                            .transpose()?
                            .unwrap_or(from);
                    let mut day = from;
                    while day <= to {
                        cal.holidays.insert(day);
                        let Some(next) = day.succ_opt() else { break };
                        day = next;
                    }
                }
            }
            ast::CalendarEntry::Freeze { from, to, .. } => {
                let from = local_datetime(tz, &from.value)?;
                let to = local_datetime(tz, &to.value)?;
                cal.freezes.push((from, to));
            }
            ast::CalendarEntry::Include(other) => {
                let included = build_calendar(&other.name, decls, depth + 1)?;
                cal.include(&included);
            }
            ast::CalendarEntry::FreezeEvery {
                schedule, length, ..
            } => {
                let seconds = i64::try_from(length.amount.saturating_mul(length.unit.seconds()))
                    .map_err(|_| err("freeze length too large"))?;
                let freeze = RecurringFreeze::new(&schedule.value, tz, seconds)
                    .map_err(|e| err(format!("calendar `{name}`: freeze every: {e}")))?;
                cal.recurring_freezes.push(freeze);
            }
        }
    }
    Ok(cal)
}

fn date(text: &str) -> Result<NaiveDate, CompileError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| err(format!("invalid date `{text}`")))
}

fn local_datetime(tz: Tz, text: &str) -> Result<chrono::DateTime<Utc>, CompileError> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| date(text).map(|d| d.and_time(chrono::NaiveTime::MIN)))
        .map_err(|_| err(format!("invalid date-time `{text}`")))?;
    resolve_local(tz, naive).ok_or_else(|| err(format!("invalid local time `{text}`")))
}
