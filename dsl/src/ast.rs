//! The syntax tree of a Steward rules file. Every node carries the [`Span`] of the
//! source it came from, so the checker and the engine can point back at it.
//!
//! Conditions and values are CEL expressions ([`Expr`]); everything else is Steward's
//! own syntax (see docs/language.md).

use crate::cel::Expr;
use crate::span::Span;

/// A name as written, with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A string literal without interpolation (event types, clause ids, zones, dates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str {
    pub value: String,
    pub span: Span,
}

/// A string with `${expr}` interpolations, used for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Expr(Expr),
}

/// One parsed `.stw` file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `use connector jira`
    UseConnector(Ident),
    Policy(Policy),
    Calendar(Calendar),
    Group(Group),
    Schema(EventSchema),
    Rule(Rule),
    Workflow(Workflow),
    Cadence(Cadence),
    Counter(Counter),
}

/// `policy change_policy version "2026-03" { cab_quorum = 2  review_within = 5 business days }`
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: Ident,
    pub version: Str,
    pub params: Vec<PolicyParam>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyParam {
    pub name: Ident,
    pub value: PolicyValue,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyValue {
    Duration(DurationLit),
    Expr(Expr),
}

/// `calendar office { zone "Europe/Berlin"  hours mon..fri 08:00..18:00  ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub name: Ident,
    pub entries: Vec<CalendarEntry>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CalendarEntry {
    /// `zone "Europe/Berlin"`
    Zone(Str),
    /// `hours mon..fri 08:00..12:00, 13:00..18:00`
    Hours {
        days: DayRange,
        ranges: Vec<ClockRange>,
        span: Span,
    },
    /// `holidays "2026-12-24", "2026-12-25" .. "2026-12-31"`
    Holidays(Vec<DateOrRange>),
    /// `freeze "2026-12-20T00:00" .. "2027-01-04T00:00"`
    Freeze { from: Str, to: Str, span: Span },
    /// `include other_calendar`
    Include(Ident),
    /// `freeze every "0 18 * * fri" for 62 hours`
    FreezeEvery {
        schedule: Str,
        length: DurationLit,
        span: Span,
    },
}

/// `mon..fri` or a single day `sat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRange {
    pub from: Ident,
    pub to: Option<Ident>,
    pub span: Span,
}

/// `08:00..18:00`, minutes after midnight; `end` may be `24:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRange {
    pub start: ClockTime,
    pub end: ClockTime,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockTime {
    pub hour: u32,
    pub minute: u32,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateOrRange {
    pub from: Str,
    pub to: Option<Str>,
    pub span: Span,
}

/// `group cab = ["alice", "bob", "carol"]`
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: Ident,
    pub members: Vec<Str>,
    pub span: Span,
}

/// `event "jira:issue_created" { data.issue.key: string  data.user.accountId: string }`
///
/// Declares the fields rules may read from events of that type; the checker rejects
/// reads of undeclared fields under `event.` for declared types.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSchema {
    pub event_type: Str,
    pub fields: Vec<SchemaField>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchemaField {
    /// Dotted path below the event, such as `data.issue.key`.
    pub path: Vec<Ident>,
    pub ty: Ident,
    pub span: Span,
}

/// `control "8.5.1" "Normal changes are approved by the CAB" detective`
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub clause: Str,
    pub statement: Str,
    pub kind: Enforcement,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    Preventive,
    Detective,
    Corrective,
}

/// An event type pattern: an exact type, or a prefix ending in `*` (`"jira:*"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern {
    pub pattern: Str,
}

/// `on "pattern" when cond`
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub pattern: EventPattern,
    pub condition: Option<Expr>,
    pub span: Span,
}

/// `rule name { control ...  on "type" when cond do { actions } }`
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: Ident,
    pub controls: Vec<Control>,
    pub trigger: Trigger,
    pub actions: Block,
    pub span: Span,
}

/// `workflow change key event.subject { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub name: Ident,
    pub key: Expr,
    pub controls: Vec<Control>,
    pub starts: Vec<Trigger>,
    pub escalations: Vec<Escalation>,
    pub states: Vec<State>,
    /// SLA clocks, `sla resolution { .. }`.
    pub slas: Vec<Sla>,
    pub span: Span,
}

/// `state assessing { enter {..} exit {..} transitions.. }` or `final state done`.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub name: Ident,
    pub is_final: bool,
    pub enter: Option<Block>,
    pub exit: Option<Block>,
    pub transitions: Vec<Transition>,
    pub span: Span,
}

/// One way out of (or reaction within) a state.
///
/// With a `target` it is a transition (`-> approved`); without, the actions run and the
/// instance stays where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub on: TransitionTrigger,
    pub target: Option<Ident>,
    pub actions: Option<Block>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransitionTrigger {
    /// `on "jira:issue_updated" when cond`
    Event(Trigger),
    /// `on approval granted|rejected|expired`
    Approval {
        outcome: ApprovalOutcome,
        span: Span,
    },
    /// `after 2 days`, `after 2 business days in office`
    After(TimeSpec),
    /// `on action failed jira.comment when result.attempts > 2`
    Action(ActionTrigger),
}

/// `on action succeeded|failed [CONNECTOR[.OP]] [when COND]`: an action this instance
/// decided ended — executed (`result` is the connector's result) or given up after its
/// attempts (`result` is `{"reason", "attempts"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionTrigger {
    pub outcome: ActionOutcome,
    /// Only actions of this connector (any when absent).
    pub connector: Option<Ident>,
    /// Only this operation of the connector (any when absent).
    pub op: Option<Ident>,
    pub condition: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionOutcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalOutcome {
    Granted,
    Rejected,
    Expired,
    /// A material field changed after the decisions: they are void, approval is asked again.
    Reopened,
}

/// `escalation ladder { stop on "pagerduty:incident.acknowledged"  after 15 minutes { .. } .. }`
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub name: Ident,
    pub stop: Vec<Trigger>,
    pub steps: Vec<EscalationStep>,
    pub span: Span,
}

/// `after 15 minutes { actions }`: waits are measured from the previous step.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationStep {
    pub wait: TimeSpec,
    pub actions: Block,
    pub span: Span,
    /// `repeat every 4 hours [times 3]`
    pub repeat: Option<Repeat>,
    /// `only in working hours of office`
    pub working: Option<Ident>,
}

/// `repeat every 4 hours times 3`: after its first run, a step runs again every 4
/// hours, 3 more times (until the ladder stops, without `times`).
#[derive(Debug, Clone, PartialEq)]
pub struct Repeat {
    pub every: TimeSpec,
    pub times: Option<(u64, Span)>,
    pub span: Span,
}

/// `cadence review every "0 0 9 1 1,4,7,10 *" in "Europe/Berlin" { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct Cadence {
    pub name: Ident,
    pub schedule: Str,
    pub zone: Option<Str>,
    pub controls: Vec<Control>,
    /// `catch up skip|once|all`; `None` means `all`.
    pub catch_up: Option<CatchUp>,
    pub actions: Option<Block>,
    pub expect: Option<Expect>,
    pub span: Span,
}

/// What a cadence does with the runs that fell due while the engine was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Missed runs are recorded as skipped, none is executed.
    Skip,
    /// Only the latest missed run is executed, the others are recorded as skipped.
    Once,
    /// Every missed run is executed, in order.
    #[default]
    All,
}

/// `expect "jira:issue_updated" when resolved(event) within 14 days else { .. }`
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub trigger: Trigger,
    pub within: TimeSpec,
    pub otherwise: Block,
    pub span: Span,
}

/// `counter supplier_breaches { count "sla.breached" by event.data.supplier per month in "UTC"  when count >= 2 do { .. } }`
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub name: Ident,
    pub controls: Vec<Control>,
    pub trigger: Trigger,
    pub by: Expr,
    pub window: Window,
    pub threshold: Expr,
    pub actions: Block,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Window {
    /// `within 7 days`: the events of the last 7 days, sliding.
    Sliding(DurationLit),
    /// `per month in "Europe/Berlin"`: calendar periods in a zone.
    Calendar {
        unit: CalendarUnit,
        zone: Option<Str>,
        span: Span,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CalendarUnit {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// A duration as written: `15 minutes`, `3 business days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationLit {
    pub amount: u64,
    pub unit: TimeUnit,
    pub business: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
}

impl TimeUnit {
    pub fn seconds(self) -> u64 {
        match self {
            TimeUnit::Second => 1,
            TimeUnit::Minute => 60,
            TimeUnit::Hour => 3_600,
            TimeUnit::Day => 86_400,
            TimeUnit::Week => 604_800,
        }
    }
}

/// When a timer fires: a duration (literal or a policy parameter) and, for business
/// time, the calendar it is counted on.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSpec {
    pub duration: DurationRef,
    pub calendar: Option<Ident>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DurationRef {
    Literal(DurationLit),
    /// `change_policy.review_within`
    Param {
        policy: Ident,
        param: Ident,
    },
}

/// `{ action* }`
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub actions: Vec<Action>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `jira.comment(key, "CAB review requested")`, `jira.create_issue(project: "SMS")`
    Call {
        connector: Ident,
        op: Ident,
        args: Vec<Arg>,
        span: Span,
    },
    /// `emit "change.approved" { key: key, by: approvers }`
    Emit {
        event_type: Str,
        fields: Vec<(Ident, Expr)>,
        span: Span,
    },
    /// `violation "Implementation started before CAB approval"`
    Violation { message: Template, span: Span },
    /// `evidence "PIR held" { outcome: event.data.outcome }`
    Evidence {
        message: Template,
        fields: Vec<(Ident, Expr)>,
        span: Span,
    },
    /// `set requester = event.data.user.accountId`
    Set {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `goto approved`
    Goto { state: Ident, span: Span },
    /// `escalate ladder`
    Escalate { ladder: Ident, span: Span },
    /// `request approval from cab quorum 2 excluding requester within 3 days`
    RequestApproval(Box<ApprovalRequest>),
}

impl Action {
    pub fn span(&self) -> Span {
        match self {
            Action::Call { span, .. }
            | Action::Emit { span, .. }
            | Action::Violation { span, .. }
            | Action::Evidence { span, .. }
            | Action::Set { span, .. }
            | Action::Goto { span, .. }
            | Action::Escalate { span, .. } => *span,
            Action::RequestApproval(r) => r.span,
        }
    }
}

/// A connector call argument, positional or named.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    /// When the value is a lone string literal with `${expr}` interpolations
    /// (`text: "CAB: ${key} waits"`), the same string as a template; the engine
    /// interpolates it instead of using `value`.
    pub template: Option<Template>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    pub group: Ident,
    pub quorum: Quorum,
    /// Expressions naming people who may not approve (`requester`, `event.data.assignee`).
    pub excluding: Vec<Expr>,
    pub within: Option<TimeSpec>,
    pub span: Span,
    /// `quorum 1 from security, 2 from cab`: the groups after the first (which is
    /// `group` and `quorum`), each with its own quorum.
    pub more_roles: Vec<RoleQuorum>,
    /// `veto 2`: how many rejections reject (one when absent).
    pub veto: Option<(u64, Span)>,
    /// `material event.data.issue.fields.summary, ...`: field paths whose values are
    /// what is approved; a change re-opens the approval.
    pub material: Vec<Expr>,
}

/// `2 from cab` in `quorum 1 from security, 2 from cab`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleQuorum {
    pub quorum: Quorum,
    pub group: Ident,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Quorum {
    /// `quorum 2`, `quorum change_policy.cab_quorum`
    Count(Expr),
    /// `quorum all`
    All(Span),
    /// `quorum majority`
    Majority(Span),
    /// `quorum 60%`
    Percent(u32, Span),
}

/// `sla resolution { goal 4 business hours in office  start on ..  pause on ..  at 75% {..} }`:
/// an SLA clock of a workflow instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Sla {
    pub name: Ident,
    /// `goal 4 business hours in office`; more than one is reported by the checker.
    pub goals: Vec<TimeSpec>,
    pub starts: Vec<SlaStart>,
    pub pauses: Vec<Trigger>,
    pub resumes: Vec<Trigger>,
    pub stops: Vec<Trigger>,
    pub resets: Vec<Trigger>,
    pub cancels: Vec<Trigger>,
    pub thresholds: Vec<SlaThreshold>,
    pub span: Span,
}

/// `start with instance`, or `start on "type" when COND at EXPR`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaStart {
    /// `None`: the clock starts with the instance.
    pub trigger: Option<Trigger>,
    /// `at EXPR`: the instant the clock counts from (a timestamp or an RFC 3339 string).
    pub since: Option<Expr>,
    pub span: Span,
}

/// `at 75% { actions }`
#[derive(Debug, Clone, PartialEq)]
pub struct SlaThreshold {
    pub percent: u64,
    /// The span of `75%`.
    pub percent_span: Span,
    pub actions: Block,
    pub span: Span,
}
