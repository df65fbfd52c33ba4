//! The registry of diagnostic codes. Numbers are explicit and never reused; each code
//! has a page in docs/errors/ (printed by `steward explain CODE`).
//!
//! Ranges: E00xx syntax, E01xx expressions (CEL), E02xx names and references,
//! E03xx workflow structure, E04xx time, calendars and schedules, E05xx approvals,
//! counters and values, E06xx connector calls checked against the connectors'
//! descriptions (only with a catalogue: `steward check --config` or `--connectors`).

use std::fmt;

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $id:literal, $title:literal; )*) => {
        /// A stable diagnostic code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[$doc])* $name, )*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            pub fn number(self) -> u16 {
                match self { $(Code::$name => $num,)* }
            }

            /// One line saying what the code is about.
            pub fn title(self) -> &'static str {
                match self { $(Code::$name => $title,)* }
            }

            /// The code's page (docs/errors/EXXXX.md): what it means, an example, the fix.
            pub fn explain(self) -> &'static str {
                match self {
                    $(Code::$name => include_str!(concat!("../../docs/errors/", $id, ".md")),)*
                }
            }
        }
    };
}

codes! {
    /// The parser met something it did not expect.
    Syntax = 1, "E0001", "syntax error";
    /// A number too large to be represented.
    NumberTooLarge = 2, "E0002", "number too large";

    /// A CEL expression does not parse.
    ExprSyntax = 100, "E0100", "invalid expression";
    /// A function that CEL and Steward do not define.
    UnknownFunction = 101, "E0101", "unknown function";
    /// A function called with the wrong number of arguments.
    WrongArity = 102, "E0102", "wrong number of arguments";
    /// A regular expression literal that does not compile.
    InvalidRegex = 103, "E0103", "invalid regular expression";
    /// A literal out of range or with a bad escape.
    InvalidLiteral = 104, "E0104", "invalid literal";

    /// Two items of the same kind with one name, in any of the checked files.
    DuplicateItem = 200, "E0200", "duplicate definition";
    /// A `->` or `goto` names a state the workflow does not have.
    UnknownState = 201, "E0201", "unknown state";
    /// Two states of one workflow with one name.
    DuplicateState = 202, "E0202", "duplicate state";
    /// Two parameters of one policy with one name.
    DuplicateParam = 203, "E0203", "duplicate policy parameter";
    /// Two escalations of one workflow with one name.
    DuplicateEscalation = 204, "E0204", "duplicate escalation";
    /// `use connector` twice for one connector in a file.
    DuplicateConnector = 205, "E0205", "duplicate connector";
    /// A call to a connector the file does not declare with `use connector`.
    UnknownConnector = 206, "E0206", "unknown connector";
    /// `escalate` names an escalation the workflow does not have.
    UnknownEscalation = 207, "E0207", "unknown escalation";
    /// `request approval from` names a group that is not defined.
    UnknownGroup = 208, "E0208", "unknown group";
    /// `in` or `include` names a calendar that is not defined.
    UnknownCalendar = 209, "E0209", "unknown calendar";
    /// `policy.param` names a policy that is not defined.
    UnknownPolicy = 210, "E0210", "unknown policy";
    /// `policy.param` names a parameter the policy does not have.
    UnknownParam = 211, "E0211", "unknown policy parameter";
    /// An expression uses a name that is not defined where it is used.
    UnknownName = 212, "E0212", "unknown name";
    /// An expression reads an event field its declared schema does not have.
    UndeclaredField = 213, "E0213", "undeclared event field";
    /// One field twice in an event schema, `emit` or `evidence`, or one argument name twice.
    DuplicateField = 214, "E0214", "duplicate field";
    /// An event type pattern with a `*` anywhere but at the end.
    InvalidPattern = 215, "E0215", "invalid event pattern";
    /// A policy, a group and a calendar are values in expressions under their names,
    /// so two of different kinds cannot share one.
    SharedValueName = 216, "E0216", "name shared by a policy, group or calendar";

    /// A workflow without states.
    NoStates = 300, "E0300", "workflow without states";
    /// A state no transition or `goto` leads to.
    UnreachableState = 301, "E0301", "unreachable state";
    /// A state that is not final and has no way out.
    NoWayOut = 302, "E0302", "state without a way out";
    /// A timer (`after`) in a final state.
    TimerInFinalState = 303, "E0303", "timer in a final state";
    /// A transition or `goto` out of a final state.
    TransitionFromFinal = 304, "E0304", "transition out of a final state";
    /// Two transitions of one state on the same trigger and condition.
    ConflictingTransitions = 305, "E0305", "conflicting transitions";
    /// `on approval ...` in a workflow that never requests approval.
    ApprovalNeverRequested = 306, "E0306", "approval never requested";
    /// A workflow without `start on`.
    MissingStart = 307, "E0307", "workflow without start";
    /// An escalation without steps.
    EmptyEscalation = 308, "E0308", "escalation without steps";

    /// A cron expression that does not parse.
    InvalidCron = 400, "E0400", "invalid cron expression";
    /// A time zone that is not in the IANA database.
    UnknownZone = 401, "E0401", "unknown time zone";
    /// A date or date-time that is not valid.
    InvalidDate = 402, "E0402", "invalid date";
    /// A range that ends before it starts.
    BackwardsRange = 403, "E0403", "range ends before it starts";
    /// A clock time out of range.
    InvalidClockTime = 404, "E0404", "invalid time of day";
    /// Working hours that end before or when they start.
    EmptyHours = 405, "E0405", "empty working hours";
    /// A day name that is not `mon`..`sun`.
    UnknownDay = 406, "E0406", "unknown day";
    /// A duration of zero.
    ZeroDuration = 407, "E0407", "zero duration";
    /// Business time without a calendar to count it on.
    BusinessWithoutCalendar = 408, "E0408", "business time without a calendar";
    /// A calendar without a zone.
    CalendarWithoutZone = 409, "E0409", "calendar without a zone";
    /// A policy parameter used as a duration that is not one.
    NotADuration = 410, "E0410", "not a duration";
    /// A calendar with more than one zone.
    DuplicateZone = 411, "E0411", "calendar with more than one zone";
    /// Calendars that include each other in a cycle.
    IncludeCycle = 412, "E0412", "calendar includes itself";
    /// A recurring freeze whose length is counted in business time.
    BusinessFreeze = 413, "E0413", "freeze length in business time";
    /// A calendar function whose first argument is not a calendar.
    NotACalendar = 414, "E0414", "not a calendar";

    /// A quorum larger than its group.
    QuorumTooLarge = 500, "E0500", "quorum larger than the group";
    /// A quorum of zero.
    ZeroQuorum = 501, "E0501", "zero quorum";
    /// A percentage above 100.
    PercentOutOfRange = 502, "E0502", "percentage out of range";
    /// A control clause id that is not dotted digits.
    InvalidClause = 503, "E0503", "invalid clause id";
    /// A control with an empty statement.
    EmptyStatement = 504, "E0504", "empty control statement";
    /// A counter window that cannot be counted.
    InvalidWindow = 505, "E0505", "invalid counter window";
    /// A group without members.
    EmptyGroup = 506, "E0506", "empty group";
    /// A group named twice in one approval request's quorum.
    DuplicateRole = 520, "E0520", "group twice in one quorum";
    /// `veto 0`: no rejection would be needed to reject.
    ZeroVeto = 521, "E0521", "zero veto";
    /// A `material` entry that is not a field path of the event.
    MaterialNotAField = 522, "E0522", "material value is not an event field";
    /// An escalation step that repeats without end before another step.
    EndlessRepeat = 523, "E0523", "endless repeat before the last step";
    /// `repeat every ... times 0`.
    ZeroRepeat = 524, "E0524", "repeat zero times";
    /// `on approval reopened` in a workflow whose requests have no material fields.
    ReopenedWithoutMaterial = 525, "E0525", "re-opening without material fields";

    /// A declared connector that is not configured or cannot be loaded.
    ConnectorUnavailable = 600, "E0600", "connector not available";
    /// A call to an operation the connector does not offer.
    UnknownOperation = 601, "E0601", "unknown connector operation";
    /// A named argument the operation does not take.
    UnknownArgument = 602, "E0602", "unknown argument";
    /// More positional arguments than the operation takes.
    TooManyArguments = 603, "E0603", "too many arguments";
    /// A required argument of the operation is not given.
    MissingArgument = 604, "E0604", "missing required argument";
    /// An argument whose type is known and does not match the operation's schema.
    ArgumentType = 605, "E0605", "argument of the wrong type";

    /// An `sla` clock with no `goal`.
    SlaWithoutGoal = 700, "E0700", "sla clock without a goal";
    /// `at N%` outside 1..=100.
    ThresholdOutOfRange = 701, "E0701", "sla threshold out of range";
    /// Two `at N%` with the same N in one clock.
    DuplicateThreshold = 702, "E0702", "duplicate sla threshold";
    /// `sla.NAME` naming no clock of the workflow, or a field clocks do not have.
    UnknownSla = 703, "E0703", "unknown sla clock or field";
    /// Two clocks of the same name in one workflow.
    DuplicateSla = 704, "E0704", "duplicate sla clock";
    /// A goal in business days or weeks: not an exact amount of working time.
    SlaGoalInDays = 705, "E0705", "sla goal in business days";
}

impl Code {
    /// `E0100`
    pub fn id(self) -> String {
        format!("E{:04}", self.number())
    }

    /// Parses `E0100` (or `e100`, `100`).
    pub fn parse(text: &str) -> Option<Code> {
        let digits = text.trim_start_matches(['E', 'e']);
        let number: u16 = digits.parse().ok()?;
        Code::ALL.iter().copied().find(|c| c.number() == number)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{:04}", self.number())
    }
}
