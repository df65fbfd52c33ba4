//! Every check that runs before rules run. Each problem has its own code (see
//! docs/errors/); all problems of all files are reported, ordered by position.
//!
//! Names are shared across files: a calendar defined in one file may be used in
//! another. Names of items that did not parse are known to exist, so their uses are
//! not reported again as unknown.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{NaiveDate, NaiveDateTime};

use crate::ast::*;
use crate::cel::{self, Expr, ExprKind};
use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::parse::{ERROR_EXPR, parse_file};
use crate::span::{Span, line_col};

/// One source file to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: String,
    pub text: String,
}

/// The files as parsed (same order as the sources) and every diagnostic, with the
/// index of the source it belongs to.
#[derive(Debug, Clone, Default)]
pub struct CheckResult {
    pub files: Vec<File>,
    pub diagnostics: Vec<(usize, Diagnostic)>,
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Parses and checks the files together.
pub fn check(sources: &[Source]) -> CheckResult {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    let mut broken = BTreeSet::new();
    for (i, s) in sources.iter().enumerate() {
        let parsed = parse_file(&s.text);
        files.push(parsed.file);
        diagnostics.extend(parsed.diagnostics.into_iter().map(|d| (i, d)));
        broken.extend(parsed.broken_names);
    }

    let mut globals = Globals {
        sources,
        broken,
        policies: BTreeMap::new(),
        calendars: BTreeMap::new(),
        groups: BTreeMap::new(),
        schemas: BTreeMap::new(),
    };
    let mut diags = Vec::new();
    collect_globals(&files, &mut globals, &mut diags);
    diags.extend(include_cycles(&files));
    for (i, file) in files.iter().enumerate() {
        let mut checker = Checker {
            globals: &globals,
            file: i,
            connectors: BTreeSet::new(),
            diags: Vec::new(),
        };
        checker.file(file);
        diags.extend(checker.diags.into_iter().map(|d| (i, d)));
    }
    diagnostics.extend(diags);
    diagnostics.sort_by_key(|(i, d)| (*i, d.span.start));
    CheckResult { files, diagnostics }
}

/// Calendars that include themselves, directly or through others: one diagnostic per
/// cycle, at the `include` that closes it.
fn include_cycles(files: &[File]) -> Vec<(usize, Diagnostic)> {
    use crate::ast::{CalendarEntry, Item};
    let mut includes: BTreeMap<&str, Vec<(usize, &crate::ast::Ident)>> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        for item in &file.items {
            if let Item::Calendar(c) = item {
                let list = includes.entry(c.name.name.as_str()).or_default();
                for entry in &c.entries {
                    if let CalendarEntry::Include(name) = entry {
                        list.push((i, name));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for &start in includes.keys() {
        // Depth-first from each calendar, looking for a way back to it.
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((name, path)) = stack.pop() {
            for &(file, next) in includes.get(name).map(Vec::as_slice).unwrap_or_default() {
                if next.name == start {
                    let mut cycle: Vec<&str> = path.clone();
                    cycle.sort_unstable();
                    if reported.insert(cycle) {
                        let chain = path
                            .iter()
                            .chain([&start])
                            .copied()
                            .collect::<Vec<_>>()
                            .join("` includes `");
                        out.push((
                            file,
                            Diagnostic::new(
                                Code::IncludeCycle,
                                next.span,
                                format!("calendar `{start}` includes itself"),
                            )
                            .with_label(format!("`{chain}`"))
                            .with_help("remove one `include` of the cycle"),
                        ));
                    }
                } else if seen.insert(next.name.as_str()) {
                    let mut longer = path.clone();
                    longer.push(next.name.as_str());
                    stack.push((next.name.as_str(), longer));
                }
            }
        }
    }
    out
}

/// The candidate closest to `word` by edit distance, when close enough to suggest.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word && c.chars().count().abs_diff(len) <= limit)
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

// ---------------------------------------------------------------- globals

struct Globals<'a> {
    sources: &'a [Source],
    broken: BTreeSet<String>,
    policies: BTreeMap<String, (usize, &'a Policy)>,
    calendars: BTreeMap<String, (usize, &'a Calendar)>,
    groups: BTreeMap<String, (usize, &'a Group)>,
    /// Declared fields by event type.
    schemas: BTreeMap<String, Vec<Vec<String>>>,
}

impl Globals<'_> {
    fn text(&self, file: usize, span: Span) -> &str {
        self.sources
            .get(file)
            .and_then(|s| s.text.get(span.start..span.end))
            .unwrap_or("")
    }

    fn place(&self, file: usize, span: Span) -> String {
        let Some(source) = self.sources.get(file) else {
            return String::new();
        };
        let (line, col) = line_col(&source.text, span.start);
        format!("{}:{line}:{col}", source.path)
    }

    /// A policy parameter's value written as a whole number, if it is one.
    fn param_int(&self, policy: &str, param: &str) -> Option<u64> {
        let (file, p) = self.policies.get(policy)?;
        let value = p.params.iter().find(|q| q.name.name == param)?;
        match &value.value {
            PolicyValue::Expr(e) => self.text(*file, e.span).trim().parse().ok(),
            PolicyValue::Duration(_) => None,
        }
    }
}

fn collect_globals<'a>(
    files: &'a [File],
    g: &mut Globals<'a>,
    diags: &mut Vec<(usize, Diagnostic)>,
) {
    // First definition of each (kind, name): where it is.
    let mut seen: HashMap<(&'static str, String), (usize, Span)> = HashMap::new();
    // Policies, groups and calendars are values in expressions under their names: the
    // first of them to take each name, and where.
    let mut values: HashMap<String, (&'static str, usize, Span)> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        for item in &file.items {
            let (kind, name, span) = match item {
                Item::UseConnector(_) => continue,
                Item::Policy(p) => {
                    g.policies.entry(p.name.name.clone()).or_insert((i, p));
                    ("policy", p.name.name.clone(), p.name.span)
                }
                Item::Calendar(c) => {
                    g.calendars.entry(c.name.name.clone()).or_insert((i, c));
                    ("calendar", c.name.name.clone(), c.name.span)
                }
                Item::Group(gr) => {
                    g.groups.entry(gr.name.name.clone()).or_insert((i, gr));
                    ("group", gr.name.name.clone(), gr.name.span)
                }
                Item::Schema(s) => {
                    g.schemas
                        .entry(s.event_type.value.clone())
                        .or_insert_with(|| {
                            s.fields
                                .iter()
                                .map(|f| f.path.iter().map(|p| p.name.clone()).collect())
                                .collect()
                        });
                    (
                        "event schema",
                        s.event_type.value.clone(),
                        s.event_type.span,
                    )
                }
                Item::Rule(r) => ("rule", r.name.name.clone(), r.name.span),
                Item::Workflow(w) => ("workflow", w.name.name.clone(), w.name.span),
                Item::Cadence(c) => ("cadence", c.name.name.clone(), c.name.span),
                Item::Counter(c) => ("counter", c.name.name.clone(), c.name.span),
            };
            match seen.get(&(kind, name.clone())) {
                Some(&(file, first)) => diags.push((
                    i,
                    Diagnostic::new(
                        Code::DuplicateItem,
                        span,
                        format!("{kind} `{name}` is defined more than once"),
                    )
                    .with_label("defined again here")
                    .with_help(format!(
                        "the first definition is at {}; rename or remove one of them",
                        g.place(file, first)
                    )),
                )),
                None => {
                    seen.insert((kind, name.clone()), (i, span));
                }
            }
            if !matches!(kind, "policy" | "group" | "calendar") {
                continue;
            }
            match values.get(&name) {
                Some(&(other, file, first)) if other != kind => diags.push((
                    i,
                    Diagnostic::new(
                        Code::SharedValueName,
                        span,
                        format!("{kind} `{name}` has the name of {other} `{name}`"),
                    )
                    .with_label(format!("also the name of a {other}"))
                    .with_help(format!(
                        "policies, groups and calendars are values in expressions under their \
                         names, so `{name}` would mean both; the {other} is at {}; rename one \
                         of them",
                        g.place(file, first)
                    )),
                )),
                Some(_) => {}
                None => {
                    values.insert(name, (kind, i, span));
                }
            }
        }
    }
}

// ---------------------------------------------------------------- context

/// The envelope attributes of a CloudEvent, always readable.
const ENVELOPE: &[&str] = &[
    "id",
    "source",
    "type",
    "time",
    "subject",
    "specversion",
    "datacontenttype",
    "data",
];

/// What `sla.NAME.…` offers in expressions (docs/language.md, "SLA clocks").
const SLA_FIELDS: &[&str] = &[
    "elapsed",
    "remaining",
    "goal",
    "started",
    "running",
    "paused",
    "stopped",
    "cancelled",
    "breached",
];

const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Where an expression is evaluated: the names it may use.
struct Ctx<'w> {
    /// "a rule", "workflow `change`": for messages.
    place: String,
    vars: BTreeSet<String>,
    workflow: Option<&'w Workflow>,
}

impl Ctx<'_> {
    fn global(place: impl Into<String>) -> Ctx<'static> {
        Ctx {
            place: place.into(),
            vars: BTreeSet::new(),
            workflow: None,
        }
    }
}

struct Checker<'a, 'g> {
    globals: &'g Globals<'a>,
    file: usize,
    connectors: BTreeSet<String>,
    diags: Vec<Diagnostic>,
}

impl<'a, 'g> Checker<'a, 'g> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn text(&self, span: Span) -> &str {
        self.globals.text(self.file, span)
    }

    fn is_broken(&self, name: &str) -> bool {
        self.globals.broken.contains(name)
    }

    fn file(&mut self, file: &File) {
        for item in &file.items {
            if let Item::UseConnector(c) = item
                && !self.connectors.insert(c.name.clone())
            {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateConnector,
                        c.span,
                        format!("connector `{}` is used more than once", c.name),
                    )
                    .with_label("used again here")
                    .with_help("remove this line"),
                );
            }
        }
        for item in &file.items {
            match item {
                Item::UseConnector(_) => {}
                Item::Policy(p) => self.policy(p),
                Item::Calendar(c) => self.calendar(c),
                Item::Group(g) => {
                    if g.members.is_empty() {
                        self.push(
                            Diagnostic::new(
                                Code::EmptyGroup,
                                g.name.span,
                                format!("group `{}` has no members", g.name.name),
                            )
                            .with_label("no one can approve for this group")
                            .with_help("list the members: `group cab = [\"alice\", \"bob\"]`"),
                        );
                    }
                }
                Item::Schema(s) => self.schema(s),
                Item::Rule(r) => self.rule(r),
                Item::Workflow(w) => self.workflow(w),
                Item::Cadence(c) => self.cadence(c),
                Item::Counter(c) => self.counter(c),
            }
        }
    }

    // ------------------------------------------------------------ items

    fn policy(&mut self, p: &Policy) {
        let mut seen = BTreeSet::new();
        let ctx = Ctx::global(format!("policy `{}`", p.name.name));
        for param in &p.params {
            if !seen.insert(param.name.name.as_str()) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateParam,
                        param.name.span,
                        format!(
                            "parameter `{}` is defined more than once in policy `{}`",
                            param.name.name, p.name.name
                        ),
                    )
                    .with_label("defined again here")
                    .with_help("remove one of them"),
                );
            }
            match &param.value {
                PolicyValue::Duration(d) => self.duration(d),
                PolicyValue::Expr(e) => self.expr(e, &ctx, None),
            }
        }
    }

    fn calendar(&mut self, c: &Calendar) {
        let mut zones = 0;
        for entry in &c.entries {
            match entry {
                CalendarEntry::Zone(z) => {
                    zones += 1;
                    if zones > 1 {
                        self.push(
                            Diagnostic::new(
                                Code::DuplicateZone,
                                z.span,
                                format!("calendar `{}` has more than one zone", c.name.name),
                            )
                            .with_label("second zone")
                            .with_help("keep one `zone` line; use two calendars for two zones"),
                        );
                    }
                    self.zone(z);
                }
                CalendarEntry::Hours { days, ranges, .. } => {
                    self.days(days);
                    for r in ranges {
                        self.clock_range(r);
                    }
                }
                CalendarEntry::Holidays(dates) => {
                    for d in dates {
                        let from = self.date(&d.from);
                        if let Some(to) = &d.to {
                            let end = self.date(to);
                            if let (Some(a), Some(b)) = (from, end)
                                && b < a
                            {
                                self.backwards(d.span, &d.from.value, &to.value);
                            }
                        }
                    }
                }
                CalendarEntry::Freeze { from, to, span } => {
                    let a = self.date_time(from);
                    let b = self.date_time(to);
                    if let (Some(a), Some(b)) = (a, b)
                        && b <= a
                    {
                        self.backwards(*span, &from.value, &to.value);
                    }
                }
                CalendarEntry::Include(name) => {
                    self.calendar_ref(name);
                }
                CalendarEntry::FreezeEvery {
                    schedule, length, ..
                } => {
                    self.cron(schedule);
                    self.duration(length);
                    if length.business {
                        self.push(
                            Diagnostic::new(
                                Code::BusinessFreeze,
                                length.span,
                                format!(
                                    "freeze length `{}` is counted in business time",
                                    self.text(length.span)
                                ),
                            )
                            .with_label("a freeze lasts elapsed time")
                            .with_help("remove `business`, such as `for 62 hours`"),
                        );
                    }
                }
            }
        }
        if zones == 0 {
            self.push(
                Diagnostic::new(
                    Code::CalendarWithoutZone,
                    c.name.span,
                    format!("calendar `{}` has no zone", c.name.name),
                )
                .with_label("working hours need a time zone")
                .with_help("add a zone such as `zone \"Europe/Berlin\"`"),
            );
        }
    }

    fn backwards(&mut self, span: Span, from: &str, to: &str) {
        self.push(
            Diagnostic::new(
                Code::BackwardsRange,
                span,
                format!("range `{from}` .. `{to}` ends before it starts"),
            )
            .with_label("the end is not after the start")
            .with_help("swap the two ends"),
        );
    }

    fn zone(&mut self, z: &Str) {
        if z.value.parse::<chrono_tz::Tz>().is_err() {
            let mut d = Diagnostic::new(
                Code::UnknownZone,
                z.span,
                format!("unknown time zone `{}`", z.value),
            )
            .with_label("not an IANA time zone");
            let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
            d = match did_you_mean(&z.value, names) {
                Some(h) => d.with_help(h),
                None => d.with_help("use an IANA name such as `Europe/Berlin` or `UTC`"),
            };
            self.push(d);
        }
    }

    fn days(&mut self, days: &DayRange) {
        let from = self.day(&days.from);
        if let Some(to) = &days.to {
            let end = self.day(to);
            if let (Some(a), Some(b)) = (from, end)
                && b < a
            {
                self.push(
                    Diagnostic::new(
                        Code::BackwardsRange,
                        days.span,
                        format!(
                            "range `{}` .. `{}` ends before it starts",
                            days.from.name, to.name
                        ),
                    )
                    .with_label("weeks run from `mon` to `sun`")
                    .with_help("split it in two lines, such as `hours sat..sun` and `hours mon`"),
                );
            }
        }
    }

    fn day(&mut self, day: &Ident) -> Option<usize> {
        let found = DAYS.iter().position(|d| *d == day.name);
        if found.is_none() {
            let mut d = Diagnostic::new(
                Code::UnknownDay,
                day.span,
                format!("unknown day `{}`", day.name),
            )
            .with_label("not a day of the week");
            d = match did_you_mean(&day.name.to_lowercase(), DAYS.iter().copied()) {
                Some(h) => d.with_help(h),
                None => d.with_help("days are `mon`, `tue`, `wed`, `thu`, `fri`, `sat` and `sun`"),
            };
            self.push(d);
        }
        found
    }

    fn clock_range(&mut self, r: &ClockRange) {
        let a = self.clock_time(&r.start);
        let b = self.clock_time(&r.end);
        if a && b && (r.end.hour, r.end.minute) <= (r.start.hour, r.start.minute) {
            self.push(
                Diagnostic::new(
                    Code::EmptyHours,
                    r.span,
                    format!(
                        "working hours `{}` end before they start",
                        self.text(r.span)
                    ),
                )
                .with_label("the end is not after the start")
                .with_help(
                    "hours within one day, such as `08:00..18:00`; use `24:00` for midnight",
                ),
            );
        }
    }

    fn clock_time(&mut self, t: &ClockTime) -> bool {
        let ok = t.minute < 60 && (t.hour < 24 || (t.hour == 24 && t.minute == 0));
        if !ok {
            self.push(
                Diagnostic::new(
                    Code::InvalidClockTime,
                    t.span,
                    format!("invalid time of day `{}`", self.text(t.span)),
                )
                .with_label("hours go from 00 to 24, minutes from 00 to 59")
                .with_help(
                    "write times as `HH:MM`, such as `08:30`; `24:00` is the end of the day",
                ),
            );
        }
        ok
    }

    fn date(&mut self, s: &Str) -> Option<NaiveDate> {
        let parsed = (s.value.len() == 10)
            .then(|| NaiveDate::parse_from_str(&s.value, "%Y-%m-%d").ok())
            .flatten();
        if parsed.is_none() {
            self.push(
                Diagnostic::new(
                    Code::InvalidDate,
                    s.span,
                    format!("invalid date `{}`", s.value),
                )
                .with_label("not a date of the form `YYYY-MM-DD`")
                .with_help("write dates as `YYYY-MM-DD`, such as `2026-12-24`"),
            );
        }
        parsed
    }

    fn date_time(&mut self, s: &Str) -> Option<NaiveDateTime> {
        let parsed = (s.value.len() == 16)
            .then(|| NaiveDateTime::parse_from_str(&s.value, "%Y-%m-%dT%H:%M").ok())
            .flatten();
        if parsed.is_none() {
            self.push(
                Diagnostic::new(
                    Code::InvalidDate,
                    s.span,
                    format!("invalid date and time `{}`", s.value),
                )
                .with_label("not a date and time of the form `YYYY-MM-DDTHH:MM`")
                .with_help("write it as `YYYY-MM-DDTHH:MM`, such as `2026-12-20T00:00`"),
            );
        }
        parsed
    }

    fn calendar_ref(&mut self, name: &Ident) {
        if self.globals.calendars.contains_key(&name.name) || self.is_broken(&name.name) {
            return;
        }
        let mut d = Diagnostic::new(
            Code::UnknownCalendar,
            name.span,
            format!("unknown calendar `{}`", name.name),
        )
        .with_label("no calendar has this name");
        let names = self.globals.calendars.keys().map(String::as_str);
        d = match did_you_mean(&name.name, names) {
            Some(h) => d.with_help(h),
            None => d.with_help(format!(
                "define it: `calendar {} {{ zone \"UTC\" ... }}`",
                name.name
            )),
        };
        self.push(d);
    }

    fn schema(&mut self, s: &EventSchema) {
        let mut seen = BTreeSet::new();
        for f in &s.fields {
            let path: Vec<&str> = f.path.iter().map(|p| p.name.as_str()).collect();
            let joined = path.join(".");
            if !seen.insert(joined.clone()) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateField,
                        f.span,
                        format!("field `{joined}` is declared more than once"),
                    )
                    .with_label("declared again here")
                    .with_help("remove one of them"),
                );
            }
        }
    }

    fn controls(&mut self, controls: &[Control]) {
        for c in controls {
            let valid = !c.clause.value.is_empty()
                && c.clause
                    .value
                    .split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
            if !valid {
                let message = if c.clause.value.is_empty() {
                    "empty clause id".to_string()
                } else {
                    format!("invalid clause id `{}`", c.clause.value)
                };
                self.push(
                    Diagnostic::new(Code::InvalidClause, c.clause.span, message)
                        .with_label("not digits separated by dots")
                        .with_help(
                            "write the clause of ISO/IEC 20000-1 as dotted digits, such as `8.5.1`",
                        ),
                );
            }
            if c.statement.value.trim().is_empty() {
                self.push(
                    Diagnostic::new(
                        Code::EmptyStatement,
                        c.statement.span,
                        format!("control `{}` has an empty statement", c.clause.value),
                    )
                    .with_label("empty")
                    .with_help("say what the control ensures, in one sentence"),
                );
            }
        }
    }

    fn schema_for(&self, pattern: &EventPattern) -> Option<(&'g str, &'g [Vec<String>])> {
        let p = &pattern.pattern.value;
        if p.ends_with('*') {
            return None;
        }
        let globals: &'g Globals<'a> = self.globals;
        globals
            .schemas
            .get_key_value(p)
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    fn rule(&mut self, r: &crate::ast::Rule) {
        self.controls(&r.controls);
        let ctx = Ctx::global("a rule");
        let schema = self.schema_for(&r.trigger.pattern);
        self.trigger(&r.trigger, &ctx, schema);
        self.block(&r.actions, &ctx, schema);
    }

    fn trigger(&mut self, t: &Trigger, ctx: &Ctx<'_>, schema: Option<(&str, &[Vec<String>])>) {
        let pattern = &t.pattern.pattern;
        let prefix = pattern.value.strip_suffix('*').unwrap_or(&pattern.value);
        if pattern.value.is_empty() || prefix.contains('*') {
            self.push(
                Diagnostic::new(
                    Code::InvalidPattern,
                    pattern.span,
                    format!("invalid event pattern `{}`", pattern.value),
                )
                .with_label("`*` may only end a pattern")
                .with_help("write an exact event type such as `\"jira:issue_created\"` or a prefix such as `\"jira:*\"`"),
            );
        }
        if let Some(c) = &t.condition {
            self.expr(c, ctx, schema);
        }
    }

    fn cadence(&mut self, c: &Cadence) {
        self.controls(&c.controls);
        self.cron(&c.schedule);
        if let Some(z) = &c.zone {
            self.zone(z);
        }
        let ctx = Ctx {
            place: format!("cadence `{}`", c.name.name),
            vars: ["period", "cadence"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            workflow: None,
        };
        if let Some(b) = &c.actions {
            self.block(b, &ctx, None);
        }
        if let Some(e) = &c.expect {
            let schema = self.schema_for(&e.trigger.pattern);
            self.trigger(&e.trigger, &ctx, schema);
            self.time_spec(&e.within, &ctx);
            self.block(&e.otherwise, &ctx, None);
        }
    }

    /// A cron expression in Steward's dialect (cadences, recurring freezes).
    fn cron(&mut self, s: &Str) {
        let schedule = &s.value;
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        let parsed = crate::cron::last_day_offset(schedule).and_then(|(expr, _)| {
            match parser.parse(&crate::cron::normalize(&expr)) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let reason = e.to_string().to_lowercase();
                    let reason = reason.trim_end_matches('.');
                    let reason = reason.strip_prefix("component error: ").unwrap_or(reason);
                    let reason = reason.strip_prefix("invalid pattern: ").unwrap_or(reason);
                    Err(reason.to_string())
                }
            }
        });
        if let Err(reason) = parsed {
            self.push(
                Diagnostic::new(
                    Code::InvalidCron,
                    s.span,
                    format!("invalid cron expression `{schedule}`"),
                )
                .with_label(reason)
                .with_help(
                    "use 5 fields (minute hour day month weekday) or 6 with seconds first, such as `0 0 9 1 * *`",
                ),
            );
        }
    }

    fn counter(&mut self, c: &Counter) {
        self.controls(&c.controls);
        let event_ctx = Ctx::global(format!("counter `{}`", c.name.name));
        let schema = self.schema_for(&c.trigger.pattern);
        self.trigger(&c.trigger, &event_ctx, schema);
        self.expr(&c.by, &event_ctx, schema);
        match &c.window {
            Window::Sliding(d) => {
                self.duration(d);
                if d.business {
                    self.push(
                        Diagnostic::new(
                            Code::InvalidWindow,
                            d.span,
                            "a sliding window cannot count business time",
                        )
                        .with_label("counted in business time")
                        .with_help(
                            "remove `business`, or count per calendar period with `per day`, `per week`, ...",
                        ),
                    );
                }
            }
            Window::Calendar { zone, .. } => {
                if let Some(z) = zone {
                    self.zone(z);
                }
            }
        }
        let ctx = Ctx {
            place: format!("counter `{}`", c.name.name),
            vars: ["key", "count", "period"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            workflow: None,
        };
        self.expr(&c.threshold, &ctx, None);
        self.block(&c.actions, &ctx, None);
    }

    // ------------------------------------------------------------ workflows

    fn workflow(&mut self, w: &Workflow) {
        self.controls(&w.controls);
        let mut vars: BTreeSet<String> = ["key", "state"].iter().map(|s| s.to_string()).collect();
        let mut requests_approval = false;
        for_each_block(w, &mut |b| {
            for a in &b.actions {
                match a {
                    Action::Set { name, .. } => {
                        vars.insert(name.name.clone());
                    }
                    Action::RequestApproval(_) => requests_approval = true,
                    _ => {}
                }
            }
        });
        let ctx = Ctx {
            place: format!("workflow `{}`", w.name.name),
            vars,
            workflow: Some(w),
        };
        self.expr(&w.key, &ctx, None);

        if w.starts.is_empty() {
            self.push(
                Diagnostic::new(
                    Code::MissingStart,
                    w.name.span,
                    format!("workflow `{}` never starts", w.name.name),
                )
                .with_label("no `start on` in this workflow")
                .with_help("add `start on \"event.type\"` to say which events create an instance"),
            );
        }
        for s in &w.starts {
            let schema = self.schema_for(&s.pattern);
            self.trigger(s, &ctx, schema);
        }

        let mut escalations = BTreeSet::new();
        for e in &w.escalations {
            if !escalations.insert(e.name.name.as_str()) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateEscalation,
                        e.name.span,
                        format!(
                            "escalation `{}` is defined more than once in workflow `{}`",
                            e.name.name, w.name.name
                        ),
                    )
                    .with_label("defined again here")
                    .with_help("rename or remove one of them"),
                );
            }
            if e.steps.is_empty() {
                self.push(
                    Diagnostic::new(
                        Code::EmptyEscalation,
                        e.name.span,
                        format!("escalation `{}` has no steps", e.name.name),
                    )
                    .with_label("nothing happens when it escalates")
                    .with_help("add steps such as `after 1 hour { slack.post(text: \"...\") }`"),
                );
            }
            for s in &e.stop {
                let schema = self.schema_for(&s.pattern);
                self.trigger(s, &ctx, schema);
            }
            for (i, step) in e.steps.iter().enumerate() {
                self.time_spec(&step.wait, &ctx);
                self.escalation_step_options(step, i + 1 == e.steps.len(), &ctx);
                self.block(&step.actions, &ctx, None);
            }
        }

        self.slas(w, &ctx);

        if w.states.is_empty() {
            self.push(
                Diagnostic::new(
                    Code::NoStates,
                    w.name.span,
                    format!("workflow `{}` has no states", w.name.name),
                )
                .with_label("an instance would have nowhere to be")
                .with_help("add states; the first one is where instances start"),
            );
        }
        let mut states = BTreeSet::new();
        for s in &w.states {
            if !states.insert(s.name.name.as_str()) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateState,
                        s.name.span,
                        format!(
                            "state `{}` is defined more than once in workflow `{}`",
                            s.name.name, w.name.name
                        ),
                    )
                    .with_label("defined again here")
                    .with_help("rename or remove one of them"),
                );
            }
        }
        for s in &w.states {
            self.state(w, s, &ctx, requests_approval);
        }
        self.reachability(w);
    }

    fn state(&mut self, w: &Workflow, s: &State, ctx: &Ctx<'_>, requests_approval: bool) {
        for b in [&s.enter, &s.exit].into_iter().flatten() {
            self.block(b, ctx, None);
            if s.is_final {
                self.gotos_in_final(s, b);
            }
        }
        let mut seen: Vec<(String, Span)> = Vec::new();
        for t in &s.transitions {
            let key = match &t.on {
                TransitionTrigger::Event(trigger) => {
                    let schema = self.schema_for(&trigger.pattern);
                    self.trigger(trigger, ctx, schema);
                    if let Some(b) = &t.actions {
                        self.block(b, ctx, schema);
                    }
                    let cond = trigger
                        .condition
                        .as_ref()
                        .map(|c| normalize(self.text(c.span)))
                        .unwrap_or_default();
                    format!("on {:?} when {cond}", trigger.pattern.pattern.value)
                }
                TransitionTrigger::Approval { outcome, span } => {
                    if !requests_approval {
                        self.push(
                            Diagnostic::new(
                                Code::ApprovalNeverRequested,
                                *span,
                                format!(
                                    "workflow `{}` never requests approval",
                                    w.name.name
                                ),
                            )
                            .with_label("this transition can never happen")
                            .with_help("add `request approval from GROUP quorum N` to an `enter` block, or remove this transition"),
                        );
                    }
                    if *outcome == ApprovalOutcome::Reopened && requests_approval {
                        self.reopened_without_material(w, *span);
                    }
                    if let Some(b) = &t.actions {
                        self.block(b, ctx, None);
                    }
                    format!("on approval {outcome:?}")
                }
                TransitionTrigger::After(spec) => {
                    self.time_spec(spec, ctx);
                    if let Some(b) = &t.actions {
                        self.block(b, ctx, None);
                    }
                    if s.is_final {
                        self.push(
                            Diagnostic::new(
                                Code::TimerInFinalState,
                                t.span,
                                format!("final state `{}` has a timer", s.name.name),
                            )
                            .with_label("never fires: instances in a final state are finished")
                            .with_help("remove the timer, or make the state not final"),
                        );
                    }
                    format!("after {}", normalize(self.text(spec.span)))
                }
                TransitionTrigger::Action(a) => self.on_action(a, t.actions.as_ref(), ctx),
            };
            if s.is_final && !matches!(t.on, TransitionTrigger::After(_)) {
                self.push(
                    Diagnostic::new(
                        Code::TransitionFromFinal,
                        t.span,
                        format!("final state `{}` has a transition", s.name.name),
                    )
                    .with_label("never runs: instances in a final state are finished")
                    .with_help("remove it, or make the state not final"),
                );
            }
            if let Some(b) = &t.actions
                && s.is_final
            {
                self.gotos_in_final(s, b);
            }
            if let Some(target) = &t.target {
                self.state_ref(w, target);
            }
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                let (line, _) = line_col(
                    self.globals
                        .sources
                        .get(self.file)
                        .map_or("", |s| s.text.as_str()),
                    first.start,
                );
                self.push(
                    Diagnostic::new(
                        Code::ConflictingTransitions,
                        t.span,
                        format!(
                            "state `{}` has two transitions on the same trigger",
                            s.name.name
                        ),
                    )
                    .with_label(format!("same trigger as the transition on line {line}"))
                    .with_help("merge them, or give them different `when` conditions"),
                );
            } else {
                seen.push((key, t.span));
            }
        }
    }

    /// `on action succeeded|failed [CONNECTOR[.OP]] [when COND]`: the connector is
    /// declared; the condition and the actions may use `result`. Returns the trigger's
    /// identity for the conflicting-transitions check.
    fn on_action(&mut self, a: &ActionTrigger, actions: Option<&Block>, ctx: &Ctx<'_>) -> String {
        if let Some(connector) = &a.connector
            && !self.connectors.contains(&connector.name)
            && !self.is_broken(&connector.name)
        {
            let mut d = Diagnostic::new(
                Code::UnknownConnector,
                connector.span,
                format!("unknown connector `{}`", connector.name),
            )
            .with_label("not declared in this file");
            d = match did_you_mean(&connector.name, self.connectors.iter().map(String::as_str)) {
                Some(h) => d.with_help(h),
                None => d.with_help(format!(
                    "declare it at the top of the file: `use connector {}`",
                    connector.name
                )),
            };
            self.push(d);
        }
        let mut vars = ctx.vars.clone();
        vars.insert("result".to_string());
        let inner = Ctx {
            place: ctx.place.clone(),
            vars,
            workflow: ctx.workflow,
        };
        if let Some(c) = &a.condition {
            self.expr(c, &inner, None);
        }
        if let Some(b) = actions {
            self.block(b, &inner, None);
        }
        let target = match (&a.connector, &a.op) {
            (Some(c), Some(op)) => format!(" {}.{}", c.name, op.name),
            (Some(c), None) => format!(" {}", c.name),
            _ => String::new(),
        };
        let cond = a
            .condition
            .as_ref()
            .map(|c| normalize(self.text(c.span)))
            .unwrap_or_default();
        format!("on action {:?}{target} when {cond}", a.outcome)
    }

    fn gotos_in_final(&mut self, s: &State, b: &Block) {
        for a in &b.actions {
            if let Action::Goto { span, .. } = a {
                self.push(
                    Diagnostic::new(
                        Code::TransitionFromFinal,
                        *span,
                        format!("final state `{}` has a transition", s.name.name),
                    )
                    .with_label("`goto` out of a final state")
                    .with_help("remove the `goto`, or make the state not final"),
                );
            }
        }
    }

    fn state_ref(&mut self, w: &Workflow, name: &Ident) {
        if w.states.iter().any(|s| s.name.name == name.name) {
            return;
        }
        let mut d = Diagnostic::new(
            Code::UnknownState,
            name.span,
            format!("unknown state `{}`", name.name),
        )
        .with_label(format!(
            "no state of workflow `{}` has this name",
            w.name.name
        ));
        if let Some(h) = did_you_mean(&name.name, w.states.iter().map(|s| s.name.name.as_str())) {
            d = d.with_help(h);
        }
        self.push(d);
    }

    fn reachability(&mut self, w: &Workflow) {
        let index: BTreeMap<&str, usize> = w
            .states
            .iter()
            .enumerate()
            .rev()
            .map(|(i, s)| (s.name.name.as_str(), i))
            .collect();
        let ladders: BTreeMap<&str, &Escalation> = w
            .escalations
            .iter()
            .map(|e| (e.name.name.as_str(), e))
            .collect();
        let edges: Vec<Vec<usize>> = w
            .states
            .iter()
            .map(|s| {
                let mut out = Vec::new();
                let mut targets = |name: &str| {
                    if let Some(&i) = index.get(name) {
                        out.push(i);
                    }
                };
                for t in &s.transitions {
                    if let Some(target) = &t.target {
                        targets(&target.name);
                    }
                }
                let mut blocks: Vec<&Block> = Vec::new();
                blocks.extend(s.enter.iter());
                blocks.extend(s.exit.iter());
                blocks.extend(s.transitions.iter().filter_map(|t| t.actions.as_ref()));
                // An SLA threshold may fire in any state.
                blocks.extend(
                    w.slas
                        .iter()
                        .flat_map(|c| c.thresholds.iter().map(|t| &t.actions)),
                );
                let mut i = 0;
                while let Some(b) = blocks.get(i) {
                    for a in &b.actions {
                        match a {
                            Action::Goto { state, .. } => targets(&state.name),
                            Action::Escalate { ladder, .. } => {
                                if let Some(e) = ladders.get(ladder.name.as_str()) {
                                    for step in &e.steps {
                                        if !blocks.iter().any(|x| std::ptr::eq(*x, &step.actions)) {
                                            blocks.push(&step.actions);
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    i += 1;
                }
                out
            })
            .collect();

        let mut reached = vec![false; w.states.len()];
        let mut todo = vec![0usize];
        while let Some(i) = todo.pop() {
            if let Some(r) = reached.get_mut(i)
                && !*r
            {
                *r = true;
                todo.extend(edges.get(i).into_iter().flatten().copied());
            }
        }
        for (i, s) in w.states.iter().enumerate() {
            if index.get(s.name.name.as_str()) != Some(&i) {
                continue; // a duplicate, reported already
            }
            if !reached.get(i).copied().unwrap_or(true) {
                self.push(
                    Diagnostic::new(
                        Code::UnreachableState,
                        s.name.span,
                        format!("state `{}` is unreachable", s.name.name),
                    )
                    .with_label(format!(
                        "no transition or `goto` leads here from `{}`",
                        w.states.first().map_or("", |f| f.name.name.as_str())
                    ))
                    .with_help("add a transition to it, or remove it"),
                );
            }
            if !s.is_final && edges.get(i).is_none_or(|e| e.is_empty()) {
                self.push(
                    Diagnostic::new(
                        Code::NoWayOut,
                        s.name.span,
                        format!("state `{}` has no way out", s.name.name),
                    )
                    .with_label("no transition with `->` and no `goto`")
                    .with_help("add a transition such as `on approval granted -> done`, or mark it `final state`"),
                );
            }
        }
    }

    // ------------------------------------------------------------ time

    fn duration(&mut self, d: &DurationLit) {
        if d.amount == 0 {
            self.push(
                Diagnostic::new(
                    Code::ZeroDuration,
                    d.span,
                    format!("duration `{}` is zero", self.text(d.span)),
                )
                .with_label("zero")
                .with_help("use a duration of at least 1"),
            );
        }
    }

    fn time_spec(&mut self, t: &TimeSpec, _ctx: &Ctx<'_>) {
        let business = match &t.duration {
            DurationRef::Literal(d) => {
                self.duration(d);
                d.business
            }
            DurationRef::Param { policy, param } => self.duration_param(policy, param),
        };
        match &t.calendar {
            Some(c) => self.calendar_ref(c),
            None if business => {
                self.push(
                    Diagnostic::new(
                        Code::BusinessWithoutCalendar,
                        t.span,
                        format!("business time `{}` without a calendar", self.text(t.span)),
                    )
                    .with_label("business time needs working hours")
                    .with_help(format!(
                        "say which calendar counts it: `{} in office`",
                        self.text(t.span)
                    )),
                );
            }
            None => {}
        }
    }

    /// Checks `policy.param` used as a duration; returns whether it is business time.
    fn duration_param(&mut self, policy: &Ident, param: &Ident) -> bool {
        let Some((_, p)) = self.globals.policies.get(&policy.name) else {
            if !self.is_broken(&policy.name) {
                self.unknown_policy(policy);
            }
            return false;
        };
        let Some(q) = p.params.iter().find(|q| q.name.name == param.name) else {
            self.unknown_param(p, param);
            return false;
        };
        match &q.value {
            PolicyValue::Duration(d) => d.business,
            PolicyValue::Expr(_) => {
                self.push(
                    Diagnostic::new(
                        Code::NotADuration,
                        policy.span.to(param.span),
                        format!("`{}.{}` is not a duration", policy.name, param.name),
                    )
                    .with_label("used as a duration here")
                    .with_help(format!(
                        "give `{}` a duration in policy `{}`, such as `5 business days`",
                        param.name, policy.name
                    )),
                );
                false
            }
        }
    }

    fn unknown_policy(&mut self, policy: &Ident) {
        let mut d = Diagnostic::new(
            Code::UnknownPolicy,
            policy.span,
            format!("unknown policy `{}`", policy.name),
        )
        .with_label("no policy has this name");
        if let Some(h) = did_you_mean(
            &policy.name,
            self.globals.policies.keys().map(String::as_str),
        ) {
            d = d.with_help(h);
        }
        self.push(d);
    }

    fn unknown_param(&mut self, p: &Policy, param: &Ident) {
        let mut d = Diagnostic::new(
            Code::UnknownParam,
            param.span,
            format!("policy `{}` has no parameter `{}`", p.name.name, param.name),
        )
        .with_label("no such parameter");
        let names = p.params.iter().map(|q| q.name.name.as_str());
        d = match did_you_mean(&param.name, names) {
            Some(h) => d.with_help(h),
            None => d.with_help(format!(
                "add `{} = ...` to policy `{}`",
                param.name, p.name.name
            )),
        };
        self.push(d);
    }

    // ------------------------------------------------------------ actions

    fn block(&mut self, b: &Block, ctx: &Ctx<'_>, schema: Option<(&str, &[Vec<String>])>) {
        for a in &b.actions {
            self.action(a, ctx, schema);
        }
    }

    fn fields(
        &mut self,
        fields: &[(Ident, Expr)],
        ctx: &Ctx<'_>,
        schema: Option<(&str, &[Vec<String>])>,
    ) {
        let mut seen = BTreeSet::new();
        for (name, value) in fields {
            if !seen.insert(name.name.as_str()) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateField,
                        name.span,
                        format!("field `{}` is given more than once", name.name),
                    )
                    .with_label("given again here")
                    .with_help("remove one of them"),
                );
            }
            self.expr(value, ctx, schema);
        }
    }

    fn template(&mut self, t: &Template, ctx: &Ctx<'_>, schema: Option<(&str, &[Vec<String>])>) {
        for part in &t.parts {
            if let TemplatePart::Expr(e) = part {
                self.expr(e, ctx, schema);
            }
        }
    }

    fn action(&mut self, a: &Action, ctx: &Ctx<'_>, schema: Option<(&str, &[Vec<String>])>) {
        match a {
            Action::Call {
                connector, args, ..
            } => {
                if !self.connectors.contains(&connector.name) && !self.is_broken(&connector.name) {
                    let mut d = Diagnostic::new(
                        Code::UnknownConnector,
                        connector.span,
                        format!("unknown connector `{}`", connector.name),
                    )
                    .with_label("not declared in this file");
                    d = match did_you_mean(
                        &connector.name,
                        self.connectors.iter().map(String::as_str),
                    ) {
                        Some(h) => d.with_help(h),
                        None => d.with_help(format!(
                            "declare it at the top of the file: `use connector {}`",
                            connector.name
                        )),
                    };
                    self.push(d);
                }
                let mut seen = BTreeSet::new();
                for arg in args {
                    if let Some(n) = &arg.name
                        && !seen.insert(n.name.as_str())
                    {
                        self.push(
                            Diagnostic::new(
                                Code::DuplicateField,
                                n.span,
                                format!("argument `{}` is given more than once", n.name),
                            )
                            .with_label("given again here")
                            .with_help("remove one of them"),
                        );
                    }
                    match &arg.template {
                        Some(t) => self.template(t, ctx, schema),
                        None => self.expr(&arg.value, ctx, schema),
                    }
                }
            }
            Action::Emit { fields, .. } => self.fields(fields, ctx, schema),
            Action::Violation { message, .. } => self.template(message, ctx, schema),
            Action::Evidence {
                message, fields, ..
            } => {
                self.template(message, ctx, schema);
                self.fields(fields, ctx, schema);
            }
            Action::Set { value, .. } => self.expr(value, ctx, schema),
            Action::Goto { state, .. } => match ctx.workflow {
                Some(w) => self.state_ref(w, state),
                None => self.push(
                    Diagnostic::new(
                        Code::UnknownState,
                        state.span,
                        format!("unknown state `{}`", state.name),
                    )
                    .with_label(format!("{} has no states", ctx.place))
                    .with_help("`goto` only works inside a workflow"),
                ),
            },
            Action::Escalate { ladder, .. } => {
                let known = ctx
                    .workflow
                    .is_some_and(|w| w.escalations.iter().any(|e| e.name.name == ladder.name));
                if !known {
                    let mut d = Diagnostic::new(
                        Code::UnknownEscalation,
                        ladder.span,
                        format!("unknown escalation `{}`", ladder.name),
                    )
                    .with_label(format!("no escalation of {} has this name", ctx.place));
                    let names = ctx
                        .workflow
                        .into_iter()
                        .flat_map(|w| w.escalations.iter().map(|e| e.name.name.as_str()));
                    d = match did_you_mean(&ladder.name, names) {
                        Some(h) => d.with_help(h),
                        None => d.with_help(format!(
                            "define it in the workflow: `escalation {} {{ after 1 hour {{ ... }} }}`",
                            ladder.name
                        )),
                    };
                    self.push(d);
                }
            }
            Action::RequestApproval(r) => self.approval(r, ctx, schema),
        }
    }

    fn approval(
        &mut self,
        r: &ApprovalRequest,
        ctx: &Ctx<'_>,
        schema: Option<(&str, &[Vec<String>])>,
    ) {
        self.role_quorum(&r.group, &r.quorum, ctx, schema);
        let mut seen = vec![r.group.name.as_str()];
        for role in &r.more_roles {
            self.role_quorum(&role.group, &role.quorum, ctx, schema);
            if seen.contains(&role.group.name.as_str()) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateRole,
                        role.group.span,
                        format!("group `{}` is named twice in this quorum", role.group.name),
                    )
                    .with_label("named again here")
                    .with_help("give each group one count: `quorum 1 from security, 2 from cab`"),
                );
            }
            seen.push(role.group.name.as_str());
        }
        if let Some((0, span)) = r.veto {
            self.push(
                Diagnostic::new(Code::ZeroVeto, span, "veto is zero")
                    .with_label("no rejection would be needed to reject")
                    .with_help("use `veto 1` (the default) or more"),
            );
        }
        for e in &r.material {
            let refs = e.references();
            let path = match refs.as_slice() {
                [one] if one.span == e.span && one.path.len() > 1 && one.path[0] == "event" => {
                    Some(one.path.join("."))
                }
                _ => None,
            };
            if path.is_none() {
                self.push(
                    Diagnostic::new(
                        Code::MaterialNotAField,
                        e.span,
                        format!("`{}` is not a field of the event", self.text(e.span).trim()),
                    )
                    .with_label("material values are read from every later event")
                    .with_help(
                        "name event fields, such as `material event.data.issue.fields.summary`",
                    ),
                );
            }
        }
        for e in &r.excluding {
            self.expr(e, ctx, schema);
        }
        if let Some(t) = &r.within {
            self.time_spec(t, ctx);
        }
    }

    /// `on approval reopened` where no request of the workflow has material fields.
    fn reopened_without_material(&mut self, w: &Workflow, span: Span) {
        let mut material = false;
        for_each_block(w, &mut |b| {
            for a in &b.actions {
                if let Action::RequestApproval(r) = a {
                    material |= !r.material.is_empty();
                }
            }
        });
        if !material {
            self.push(
                Diagnostic::new(
                    Code::ReopenedWithoutMaterial,
                    span,
                    format!(
                        "workflow `{}` requests approval without material fields",
                        w.name.name
                    ),
                )
                .with_label("an approval is only re-opened when a material field changes")
                .with_help(
                    "name what is approved: `request approval ... material event.data.summary`",
                ),
            );
        }
    }

    /// `repeat` and `only in working hours of` of an escalation step.
    fn escalation_step_options(&mut self, step: &EscalationStep, last: bool, ctx: &Ctx<'_>) {
        if let Some(cal) = &step.working {
            self.calendar_ref(cal);
        }
        let Some(repeat) = &step.repeat else { return };
        self.time_spec(&repeat.every, ctx);
        match repeat.times {
            Some((0, span)) => self.push(
                Diagnostic::new(Code::ZeroRepeat, span, "repeat zero times")
                    .with_label("the step would not repeat")
                    .with_help("repeat at least once, or remove `repeat`"),
            ),
            None if !last => self.push(
                Diagnostic::new(
                    Code::EndlessRepeat,
                    repeat.span,
                    "this step repeats without end, so the steps after it never run",
                )
                .with_label("no `times` limit")
                .with_help("add a limit (`repeat every 4 hours times 3`) or make it the last step"),
            ),
            _ => {}
        }
    }

    fn role_quorum(
        &mut self,
        group_name: &Ident,
        quorum: &Quorum,
        ctx: &Ctx<'_>,
        schema: Option<(&str, &[Vec<String>])>,
    ) {
        let group = self.globals.groups.get(&group_name.name).map(|(_, g)| *g);
        if group.is_none() && !self.is_broken(&group_name.name) {
            let mut d = Diagnostic::new(
                Code::UnknownGroup,
                group_name.span,
                format!("unknown group `{}`", group_name.name),
            )
            .with_label("no group has this name");
            d = match did_you_mean(
                &group_name.name,
                self.globals.groups.keys().map(String::as_str),
            ) {
                Some(h) => d.with_help(h),
                None => d.with_help(format!(
                    "define it: `group {} = [\"alice\", \"bob\"]`",
                    group_name.name
                )),
            };
            self.push(d);
        }
        match quorum {
            Quorum::Count(e) => {
                self.expr(e, ctx, schema);
                let text = self.text(e.span).trim().to_string();
                let literal = text.parse::<u64>().ok().or_else(|| {
                    let (p, q) = text.split_once('.')?;
                    self.globals.param_int(p.trim(), q.trim())
                });
                if let Some(n) = literal {
                    if n == 0 {
                        self.push(
                            Diagnostic::new(Code::ZeroQuorum, e.span, "quorum is zero")
                                .with_label("no approval would be needed")
                                .with_help("ask for at least one approval"),
                        );
                    } else if let Some(g) = group
                        && !g.members.is_empty()
                        && n > g.members.len() as u64
                    {
                        self.push(
                            Diagnostic::new(
                                Code::QuorumTooLarge,
                                e.span,
                                format!("quorum {n} is larger than group `{}`", g.name.name),
                            )
                            .with_label(format!(
                                "`{}` has {} member{}",
                                g.name.name,
                                g.members.len(),
                                if g.members.len() == 1 { "" } else { "s" }
                            ))
                            .with_help("lower the quorum, add members, or use `quorum all`"),
                        );
                    }
                }
            }
            Quorum::Percent(p, span) => {
                if *p == 0 {
                    self.push(
                        Diagnostic::new(Code::ZeroQuorum, *span, "quorum is zero")
                            .with_label("no approval would be needed")
                            .with_help("ask for a percentage between 1% and 100%"),
                    );
                } else if *p > 100 {
                    self.push(
                        Diagnostic::new(
                            Code::PercentOutOfRange,
                            *span,
                            format!("quorum {p}% is more than the whole group"),
                        )
                        .with_label("above 100%")
                        .with_help("use a percentage between 1% and 100%, or `quorum all`"),
                    );
                }
            }
            Quorum::All(_) | Quorum::Majority(_) => {}
        }
    }

    // ------------------------------------------------------------ expressions

    fn expr(&mut self, e: &Expr, ctx: &Ctx<'_>, schema: Option<(&str, &[Vec<String>])>) {
        if let ExprKind::Ident(name) = &e.kind
            && name == ERROR_EXPR
        {
            return;
        }
        if let Err(diags) = cel::Program::compile(e, crate::stdlib::functions()) {
            self.diags.extend(diags);
        }
        self.calendar_args(e);
        for r in e.references() {
            let Some(root) = r.path.first() else { continue };
            let root = root.as_str();
            if root == "event" {
                self.event_field(&r.path, r.span, schema);
            } else if root == "sla"
                && let Some(w) = ctx.workflow
                && !w.slas.is_empty()
            {
                self.sla_ref(w, &r.path, r.span);
            } else if root == "now"
                || ctx.vars.contains(root)
                || self.globals.groups.contains_key(root)
                || self.globals.calendars.contains_key(root)
                || self.is_broken(root)
            {
            } else if let Some((_, p)) = self.globals.policies.get(root) {
                if let Some(param) = r.path.get(1)
                    && !p.params.iter().any(|q| q.name.name == *param)
                {
                    let ident = Ident {
                        name: param.clone(),
                        span: r.span,
                    };
                    self.unknown_param(p, &ident);
                }
            } else {
                let mut known: Vec<&str> = vec!["event", "now"];
                known.extend(ctx.vars.iter().map(String::as_str));
                known.extend(self.globals.policies.keys().map(String::as_str));
                known.extend(self.globals.groups.keys().map(String::as_str));
                let mut d =
                    Diagnostic::new(Code::UnknownName, r.span, format!("unknown name `{root}`"))
                        .with_label(format!("not defined in {}", ctx.place));
                d = match did_you_mean(root, known) {
                    Some(h) => d.with_help(h),
                    None => {
                        let mut names = vec!["`event`".to_string(), "`now`".to_string()];
                        names.extend(ctx.vars.iter().map(|v| format!("`{v}`")));
                        names.push("policies".to_string());
                        names.push("groups".to_string());
                        let last = names.pop().unwrap_or_default();
                        d.with_help(format!(
                            "{} can use {} and {last}",
                            ctx.place,
                            names.join(", ")
                        ))
                    }
                };
                self.push(d);
            }
        }
    }

    /// The first argument of a calendar function (`in_working_hours(office, t)`) names
    /// a calendar: a calendar's name, or a string holding one.
    fn calendar_args(&mut self, e: &Expr) {
        let mut bad: Vec<(Span, String)> = Vec::new();
        e.walk(&mut |x| {
            let ExprKind::Call {
                target: None,
                function,
                args,
            } = &x.kind
            else {
                return;
            };
            if !crate::stdlib::CALENDAR_FUNCTIONS.contains(&function.as_str()) {
                return;
            }
            let Some(first) = args.first() else { return };
            let name = match &first.kind {
                ExprKind::Ident(n) => Some(n.as_str()),
                ExprKind::Literal(cel::Value::String(s)) => Some(&**s),
                _ => None,
            };
            match name {
                Some(n) if self.globals.calendars.contains_key(n) || self.is_broken(n) => {}
                // Other names are reported as unknown, or are not calendars.
                Some(n)
                    if matches!(first.kind, ExprKind::Ident(_))
                        && !self.globals.groups.contains_key(n)
                        && !self.globals.policies.contains_key(n)
                        && n != "event"
                        && n != "now" => {}
                _ => bad.push((first.span, function.clone())),
            }
        });
        for (span, function) in bad {
            let mut d = Diagnostic::new(
                Code::NotACalendar,
                span,
                format!("`{function}` needs a calendar, not `{}`", self.text(span)),
            )
            .with_label("not a calendar");
            let names: Vec<&str> = self.globals.calendars.keys().map(String::as_str).collect();
            d = match names.first() {
                Some(n) => d.with_help(format!(
                    "pass a calendar's name, such as `{function}({n}, ...)`"
                )),
                None => d.with_help(format!(
                    "define a calendar (`calendar office {{ zone \"UTC\" ... }}`) and pass its name to `{function}`"
                )),
            };
            self.push(d);
        }
    }

    // ------------------------------------------------------------ SLA clocks

    fn slas(&mut self, w: &Workflow, ctx: &Ctx<'_>) {
        let mut names: BTreeMap<&str, Span> = BTreeMap::new();
        for sla in &w.slas {
            if let Some(first) = names.insert(sla.name.name.as_str(), sla.name.span) {
                let place = self.globals.place(self.file, first);
                self.push(
                    Diagnostic::new(
                        Code::DuplicateSla,
                        sla.name.span,
                        format!(
                            "sla clock `{}` is defined more than once in workflow `{}`",
                            sla.name.name, w.name.name
                        ),
                    )
                    .with_label("defined again here")
                    .with_help(format!(
                        "the first definition is at {place}; rename or remove one of them"
                    )),
                );
            }
            self.sla(sla, ctx);
        }
    }

    fn sla(&mut self, sla: &Sla, ctx: &Ctx<'_>) {
        if sla.goals.is_empty() {
            self.push(
                Diagnostic::new(
                    Code::SlaWithoutGoal,
                    sla.name.span,
                    format!("sla clock `{}` has no goal", sla.name.name),
                )
                .with_label("no `goal` in this clock")
                .with_help(
                    "add its target, such as `goal 4 business hours in office` or `goal 8 hours`",
                ),
            );
        }
        for (i, goal) in sla.goals.iter().enumerate() {
            if i > 0 {
                self.push(
                    Diagnostic::new(
                        Code::Syntax,
                        goal.span,
                        format!("second `goal` in sla clock `{}`", sla.name.name),
                    )
                    .with_label("already given above")
                    .with_help("a clock has one goal; declare another `sla` for another target"),
                );
            }
            self.time_spec(goal, ctx);
            let lit = match &goal.duration {
                DurationRef::Literal(d) => Some(*d),
                DurationRef::Param { policy, param } => self
                    .globals
                    .policies
                    .get(&policy.name)
                    .and_then(|(_, p)| p.params.iter().find(|q| q.name.name == param.name))
                    .and_then(|q| match &q.value {
                        PolicyValue::Duration(d) => Some(*d),
                        PolicyValue::Expr(_) => None,
                    }),
            };
            if let Some(d) = lit
                && d.business
                && matches!(d.unit, TimeUnit::Day | TimeUnit::Week)
            {
                self.push(
                    Diagnostic::new(
                        Code::SlaGoalInDays,
                        goal.span,
                        format!(
                            "sla goal `{}` is in business days",
                            self.text(goal.span).trim()
                        ),
                    )
                    .with_label("working days differ in length")
                    .with_help(
                        "give the goal in business hours or minutes (`20 business hours` for two 10-hour days)",
                    ),
                );
            }
        }
        for start in &sla.starts {
            if let Some(t) = &start.trigger {
                let schema = self.schema_for(&t.pattern);
                self.trigger(t, ctx, schema);
                if let Some(since) = &start.since {
                    self.expr(since, ctx, schema);
                }
            }
        }
        for t in sla
            .pauses
            .iter()
            .chain(&sla.resumes)
            .chain(&sla.stops)
            .chain(&sla.resets)
            .chain(&sla.cancels)
        {
            let schema = self.schema_for(&t.pattern);
            self.trigger(t, ctx, schema);
        }
        let mut seen: BTreeMap<u64, Span> = BTreeMap::new();
        for t in &sla.thresholds {
            if !(1..=100).contains(&t.percent) {
                self.push(
                    Diagnostic::new(
                        Code::ThresholdOutOfRange,
                        t.percent_span,
                        format!("threshold `{}%` is outside 1% to 100%", t.percent),
                    )
                    .with_label("not a share of the goal")
                    .with_help("use a percentage from 1 to 100; 100% is the breach"),
                );
            } else if let Some(first) = seen.insert(t.percent, t.percent_span) {
                let place = self.globals.place(self.file, first);
                self.push(
                    Diagnostic::new(
                        Code::DuplicateThreshold,
                        t.percent_span,
                        format!(
                            "threshold `{}%` is given twice in sla clock `{}`",
                            t.percent, sla.name.name
                        ),
                    )
                    .with_label("given again here")
                    .with_help(format!(
                        "the first is at {place}; merge the actions into one block"
                    )),
                );
            }
            self.block(&t.actions, ctx, None);
        }
    }

    /// `sla.NAME.FIELD` in an expression of a workflow with clocks.
    fn sla_ref(&mut self, w: &Workflow, path: &[String], span: Span) {
        let Some(name) = path.get(1) else { return };
        if !w.slas.iter().any(|s| s.name.name == *name) {
            let mut d = Diagnostic::new(
                Code::UnknownSla,
                span,
                format!("workflow `{}` has no sla clock `{name}`", w.name.name),
            )
            .with_label("no clock of this name");
            let names = w.slas.iter().map(|s| s.name.name.as_str());
            d = match did_you_mean(name, names) {
                Some(h) => d.with_help(h),
                None => {
                    let mut names: Vec<String> = Vec::new();
                    for s in &w.slas {
                        let name = format!("`{}`", s.name.name);
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                    d.with_help(format!("its clocks are {}", names.join(", ")))
                }
            };
            self.push(d);
            return;
        }
        let Some(field) = path.get(2) else { return };
        if !SLA_FIELDS.contains(&field.as_str()) {
            let mut d = Diagnostic::new(
                Code::UnknownSla,
                span,
                format!("sla clocks have no field `{field}`"),
            )
            .with_label("no such field");
            d = match did_you_mean(field, SLA_FIELDS.iter().copied()) {
                Some(h) => d.with_help(h),
                None => d.with_help(format!(
                    "a clock has {}",
                    SLA_FIELDS
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
            self.push(d);
        }
    }

    fn event_field(&mut self, path: &[String], span: Span, schema: Option<(&str, &[Vec<String>])>) {
        let Some((event_type, declared)) = schema else {
            return;
        };
        let Some(first) = path.get(1) else { return };
        let rest = path.get(1..).unwrap_or(&[]);
        if first != "data" && ENVELOPE.contains(&first.as_str()) {
            return;
        }
        if rest.len() == 1 && first == "data" {
            return;
        }
        let ok = declared
            .iter()
            .any(|d| d.len() >= rest.len() && d.iter().zip(rest).all(|(a, b)| a == b));
        if ok {
            return;
        }
        let joined = rest.join(".");
        let candidates: Vec<String> = declared.iter().map(|d| d.join(".")).collect();
        let mut d = Diagnostic::new(
            Code::UndeclaredField,
            span,
            format!("events of type `{event_type}` have no field `{joined}`"),
        )
        .with_label(format!("not declared in `event \"{event_type}\"`"));
        d = match did_you_mean(&joined, candidates.iter().map(String::as_str)) {
            Some(h) => d.with_help(h),
            None => d.with_help(format!(
                "declare it in `event \"{event_type}\" {{ {joined}: string }}`, or read a declared field"
            )),
        };
        self.push(d);
    }
}

/// Calls `f` on every action block of a workflow.
fn for_each_block(w: &Workflow, f: &mut dyn FnMut(&Block)) {
    for sla in &w.slas {
        for t in &sla.thresholds {
            f(&t.actions);
        }
    }
    for e in &w.escalations {
        for s in &e.steps {
            f(&s.actions);
        }
    }
    for s in &w.states {
        for b in [&s.enter, &s.exit].into_iter().flatten() {
            f(b);
        }
        for t in &s.transitions {
            if let Some(b) = &t.actions {
                f(b);
            }
        }
    }
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
