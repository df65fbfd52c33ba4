//! Source text to [`ast::File`](crate::ast::File).
//!
//! pest stops at the first error. To report more than one, a file that fails is cut
//! into items (at lines whose first column starts a top-level keyword) and every item
//! is parsed on its own; each broken item gives one diagnostic and the others still
//! make it into the tree. Items are parsed in a copy of the source whose text before
//! the item is blanked out, so spans stay absolute.

use std::collections::BTreeSet;

use pest::Parser;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

use crate::ast::*;
use crate::cel::{self, Expr, ExprKind};
use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::parser::{Rule, StewardParser};
use crate::span::Span;

/// The name given to expressions that failed to build; the checker skips them.
pub(crate) const ERROR_EXPR: &str = "<error>";

/// Parses one file: the items that parsed, and every syntax error found.
pub fn parse(source: &str) -> (File, Vec<Diagnostic>) {
    let parsed = parse_file(source);
    (parsed.file, parsed.diagnostics)
}

/// What [`parse_file`] found, with the names of items that did not parse (so the
/// checker does not report their uses as unknown).
pub(crate) struct Parsed {
    pub file: File,
    pub diagnostics: Vec<Diagnostic>,
    pub broken_names: BTreeSet<String>,
}

const ITEM_KEYWORDS: &[&str] = &[
    "use", "policy", "calendar", "group", "event", "rule", "workflow", "cadence", "counter",
];

/// Deeper nesting than this is refused before parsing: the parser recurses, and the
/// stack must hold on any input.
pub(crate) const MAX_NESTING: usize = 64;

pub(crate) fn parse_file(source: &str) -> Parsed {
    let mut builder = Builder::new(source);
    let mut broken_names = BTreeSet::new();
    let whole = match too_deep(source) {
        Some(at) => Err(nesting_error(source, at)),
        None => StewardParser::parse(Rule::file, source).map_err(|e| syntax_error(source, &e)),
    };
    let first_error = match whole {
        Ok(pairs) => {
            let mut items = Vec::new();
            for pair in pairs.flatten().filter(|p| is_item(p.as_rule())) {
                builder.push_item(pair, &mut items, &mut broken_names);
            }
            return Parsed {
                file: File { items },
                diagnostics: builder.diags,
                broken_names,
            };
        }
        Err(e) => e,
    };

    let starts = item_starts(source);
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(source.len());
        let Some(chunk) = source.get(start..end) else {
            continue;
        };
        let mut padded = " ".repeat(start);
        padded.push_str(chunk);
        let parsed = match too_deep(chunk) {
            Some(at) => Err(nesting_error(source, start + at)),
            None => StewardParser::parse(Rule::file, &padded).map_err(|e| syntax_error(source, &e)),
        };
        match parsed {
            Ok(pairs) => {
                for pair in pairs.flatten().filter(|p| is_item(p.as_rule())) {
                    builder.push_item(pair, &mut items, &mut broken_names);
                }
            }
            Err(e) => {
                errors.push(e);
                if let Some(name) = item_name_of(chunk) {
                    broken_names.insert(name);
                }
            }
        }
    }
    if errors.is_empty() {
        errors.push(first_error);
    }
    errors.extend(builder.diags);
    Parsed {
        file: File { items },
        diagnostics: errors,
        broken_names,
    }
}

fn is_item(r: Rule) -> bool {
    matches!(
        r,
        Rule::use_connector
            | Rule::policy
            | Rule::calendar
            | Rule::group
            | Rule::event_schema
            | Rule::rule
            | Rule::workflow
            | Rule::cadence
            | Rule::counter
    )
}

/// Byte offsets of the lines that start an item, with 0 first.
fn item_starts(source: &str) -> Vec<usize> {
    let mut starts = vec![0];
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        if offset > 0 && starts_item(line) {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts
}

fn starts_item(line: &str) -> bool {
    ITEM_KEYWORDS.iter().any(|kw| {
        line.strip_prefix(kw)
            .is_some_and(|rest| rest.starts_with([' ', '\t']))
    })
}

/// The name a broken item would have declared (`workflow change ...` gives `change`).
fn item_name_of(chunk: &str) -> Option<String> {
    let mut words = chunk
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    let name = match first {
        "use" => {
            if words.next()? != "connector" {
                return None;
            }
            words.next()?
        }
        "event" => return None,
        _ => words.next()?,
    };
    Some(name.to_string())
}

// ---------------------------------------------------------------- errors

/// The offset where bracket nesting (plus `?` on one line, for CEL's ternaries)
/// first exceeds [`MAX_NESTING`]; strings and comments are skipped.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    // Open brackets; a `${` inside a string remembers the quote to go back to when
    // its `}` closes it.
    let mut stack: Vec<Option<u8>> = Vec::new();
    let mut questions: usize = 0;
    let mut in_string: Option<u8> = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if let Some(quote) = in_string {
            match b {
                b'\\' => i += 1,
                // An unterminated string ends at the line; the parser reports it.
                b'\n' => in_string = None,
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    stack.push(Some(quote));
                    in_string = None;
                    i += 1;
                }
                c if c == quote => in_string = None,
                _ => {}
            }
        } else {
            match b {
                b'"' | b'\'' => in_string = Some(b),
                b'#' => {
                    while bytes.get(i).is_some_and(|&c| c != b'\n') {
                        i += 1;
                    }
                    continue;
                }
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    while bytes.get(i).is_some_and(|&c| c != b'\n') {
                        i += 1;
                    }
                    continue;
                }
                b'(' | b'[' | b'{' => stack.push(None),
                b')' | b']' | b'}' => {
                    if let Some(Some(quote)) = stack.pop() {
                        in_string = Some(quote);
                    }
                }
                b'?' => questions += 1,
                b'\n' => questions = 0,
                _ => {}
            }
        }
        if stack.len() + questions > MAX_NESTING {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn nesting_error(source: &str, at: usize) -> Diagnostic {
    let at = floor_char_boundary(source, at);
    let end = floor_char_boundary(source, at + 1).max(at);
    Diagnostic::new(Code::Syntax, Span::new(at, end), "nesting too deep")
        .with_label(format!("more than {MAX_NESTING} levels of brackets"))
        .with_help("split the expression, or give parts of it names with `set`")
}

fn syntax_error(source: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let pos = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let pos = floor_char_boundary(source, pos);
    let (found, span) = found_at(source, pos);
    let words = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => expected_words(positives),
        ErrorVariant::CustomError { message } => vec![message.clone()],
    };
    let message = if words.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {}", join_or(&words))
    };
    let mut diag =
        Diagnostic::new(Code::Syntax, span, message).with_label(format!("unexpected {found}"));
    if let Some(word) = source.get(span.start..span.end)
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        let keywords: Vec<&str> = words
            .iter()
            .filter_map(|w| w.strip_prefix('`').and_then(|w| w.strip_suffix('`')))
            .collect();
        if let Some(best) = crate::check::closest(word, keywords.iter().copied()) {
            diag = diag.with_help(format!("did you mean `{best}`?"));
        }
    }
    diag
}

pub(crate) fn floor_char_boundary(source: &str, pos: usize) -> usize {
    let mut pos = pos.min(source.len());
    while pos > 0 && !source.is_char_boundary(pos) {
        pos -= 1;
    }
    pos
}

/// What the parser found at `pos`, for the message, and its span.
fn found_at(source: &str, pos: usize) -> (String, Span) {
    let rest = source.get(pos..).unwrap_or("");
    let Some(first) = rest.chars().next() else {
        return ("end of file".to_string(), Span::new(pos, pos));
    };
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let len = if is_word(first) {
        rest.char_indices()
            .find(|&(_, c)| !is_word(c))
            .map_or(rest.len(), |(i, _)| i)
    } else {
        first.len_utf8()
    };
    let text = rest.get(..len).unwrap_or("");
    let shown = match first {
        '\n' | '\r' => "end of line".to_string(),
        '`' => "a backtick".to_string(),
        _ => format!("`{text}`"),
    };
    (shown, Span::new(pos, pos + len))
}

fn join_or(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

const ACTION_WORDS: &[&str] = &[
    "`set`",
    "`goto`",
    "`escalate`",
    "`request`",
    "`emit`",
    "`violation`",
    "`evidence`",
];

fn expected_words(rules: &[Rule]) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for &r in rules {
        if let Some(w) = rule_words(r)
            && !words.iter().any(|x| x == w)
        {
            words.push(w.to_string());
        }
    }
    if words.iter().any(|w| w == "an expression") {
        words.retain(|w| w != "a number");
    }
    // Collapse long keyword lists into what users think of.
    let item_words: Vec<String> = ITEM_KEYWORDS.iter().map(|k| format!("`{k}`")).collect();
    if item_words.iter().filter(|w| words.contains(w)).count() >= 5 {
        words.retain(|w| !item_words.contains(w));
        words.insert(0, "an item (`use`, `policy`, `calendar`, `group`, `event`, `rule`, `workflow`, `cadence` or `counter`)".to_string());
    }
    if ACTION_WORDS
        .iter()
        .filter(|w| words.iter().any(|x| x == *w))
        .count()
        >= 5
    {
        words.retain(|w| !ACTION_WORDS.contains(&w.as_str()) && w != "a connector name");
        words.insert(0, "an action".to_string());
    }
    words
}

/// Rule names as users know them (pest's `renamed_rules`).
pub(crate) fn rule_words(r: Rule) -> Option<&'static str> {
    let w = match r {
        Rule::EOI => "end of file",
        Rule::item_name => "a name",
        Rule::state_name => "a state name",
        Rule::var_name => "a variable name",
        Rule::calendar_name => "a calendar name",
        Rule::group_name => "a group name",
        Rule::escalation_name => "an escalation name",
        Rule::connector_name => "a connector name",
        Rule::op_name => "an operation name",
        Rule::field_name => "a field name",
        Rule::arg_name => "an argument name",
        Rule::param_name => "a parameter name",
        Rule::policy_name => "a policy name",
        Rule::day_name => "a day (`mon` to `sun`)",
        Rule::type_name => "a type name",
        Rule::int => "a number",
        Rule::lbrace => "`{`",
        Rule::rbrace => "`}`",
        Rule::lparen => "`(`",
        Rule::rparen => "`)`",
        Rule::lbracket => "`[`",
        Rule::rbracket => "`]`",
        Rule::comma => "`,`",
        Rule::colon => "`:`",
        Rule::dot => "`.`",
        Rule::dotdot => "`..`",
        Rule::assign => "`=`",
        Rule::arrow => "`->`",
        Rule::percent => "`%`",
        Rule::str | Rule::template | Rule::trigger => "a string",
        Rule::str_text | Rule::tpl_text => "the end of the string",
        Rule::escape => "an escape such as `\\n`",
        Rule::tpl_interp => "`${`",
        Rule::enforcement => "`preventive`, `detective` or `corrective`",
        Rule::approval_outcome => "`granted`, `rejected` or `expired`",
        Rule::action_outcome => "`succeeded` or `failed`",
        Rule::action_target => "a connector name",
        Rule::time_unit => "a time unit (`seconds`, `minutes`, `hours`, `days` or `weeks`)",
        Rule::window_unit => "`day`, `week`, `month`, `quarter` or `year`",
        Rule::quorum_all => "`all`",
        Rule::quorum_majority => "`majority`",
        Rule::clock_time => "a time of day (`HH:MM`)",
        Rule::duration | Rule::time_spec => "a duration",
        Rule::param_ref => "a policy parameter",
        Rule::block => "`{`",
        Rule::final_mark => "`final`",
        Rule::business => "`business`",
        Rule::kw_use => "`use`",
        Rule::kw_connector => "`connector`",
        Rule::kw_policy => "`policy`",
        Rule::kw_version => "`version`",
        Rule::kw_calendar => "`calendar`",
        Rule::kw_zone => "`zone`",
        Rule::kw_hours => "`hours`",
        Rule::kw_holidays => "`holidays`",
        Rule::kw_freeze => "`freeze`",
        Rule::kw_include => "`include`",
        Rule::kw_group => "`group`",
        Rule::kw_event => "`event`",
        Rule::kw_rule => "`rule`",
        Rule::kw_control => "`control`",
        Rule::kw_on => "`on`",
        Rule::kw_when => "`when`",
        Rule::kw_do => "`do`",
        Rule::kw_workflow => "`workflow`",
        Rule::kw_key => "`key`",
        Rule::kw_start => "`start`",
        Rule::kw_state => "`state`",
        Rule::kw_final => "`final`",
        Rule::kw_enter => "`enter`",
        Rule::kw_exit => "`exit`",
        Rule::kw_after => "`after`",
        Rule::kw_within => "`within`",
        Rule::kw_in => "`in`",
        Rule::kw_escalation => "`escalation`",
        Rule::kw_stop => "`stop`",
        Rule::kw_cadence => "`cadence`",
        Rule::kw_every => "`every`",
        Rule::kw_expect => "`expect`",
        Rule::kw_else => "`else`",
        Rule::kw_counter => "`counter`",
        Rule::kw_count => "`count`",
        Rule::kw_by => "`by`",
        Rule::kw_per => "`per`",
        Rule::kw_set => "`set`",
        Rule::kw_goto => "`goto`",
        Rule::kw_escalate => "`escalate`",
        Rule::kw_request => "`request`",
        Rule::kw_approval => "`approval`",
        Rule::kw_from => "`from`",
        Rule::kw_quorum => "`quorum`",
        Rule::kw_excluding => "`excluding`",
        Rule::kw_emit => "`emit`",
        Rule::kw_violation => "`violation`",
        Rule::kw_evidence => "`evidence`",
        Rule::kw_business => "`business`",
        Rule::kw_action => "`action`",
        Rule::kw_for => "`for`",
        Rule::kw_catch => "`catch`",
        Rule::kw_up => "`up`",
        Rule::catch_policy => "`skip`, `once` or `all`",
        Rule::catch_up => "`catch`",
        Rule::cal_freeze_every => "`freeze`",
        Rule::kw_veto => "`veto`",
        Rule::kw_material => "`material`",
        Rule::kw_repeat => "`repeat`",
        Rule::kw_times => "`times`",
        Rule::kw_only => "`only`",
        Rule::kw_working => "`working`",
        Rule::kw_of => "`of`",
        Rule::expr => "an expression",
        // Composite rules, reported when several of their parts failed at one place.
        Rule::use_connector => "`use`",
        Rule::policy => "`policy`",
        Rule::calendar => "`calendar`",
        Rule::group => "`group`",
        Rule::event_schema => "`event`",
        Rule::rule => "`rule`",
        Rule::workflow => "`workflow`",
        Rule::cadence => "`cadence`",
        Rule::counter => "`counter`",
        Rule::policy_param => "a parameter",
        Rule::cal_zone => "`zone`",
        Rule::cal_hours => "`hours`",
        Rule::cal_holidays => "`holidays`",
        Rule::cal_freeze => "`freeze`",
        Rule::cal_include => "`include`",
        Rule::day_range => "a day (`mon` to `sun`)",
        Rule::clock_range => "a time of day (`HH:MM`)",
        Rule::date_or_range => "a string",
        Rule::schema_field | Rule::field_path | Rule::field_init => "a field name",
        Rule::control => "`control`",
        Rule::start => "`start`",
        Rule::escalation => "`escalation`",
        Rule::esc_stop => "`stop`",
        Rule::esc_step | Rule::after_timer => "`after`",
        Rule::state => "`state`",
        Rule::enter => "`enter`",
        Rule::exit => "`exit`",
        Rule::transition => "a transition (`on` or `after`)",
        Rule::on_approval | Rule::on_action | Rule::on_event => "`on`",
        Rule::cadence_do => "`do`",
        Rule::expect => "`expect`",
        Rule::window_per => "`per`",
        Rule::window_within => "`within`",
        Rule::act_set => "`set`",
        Rule::act_goto => "`goto`",
        Rule::act_escalate => "`escalate`",
        Rule::act_request => "`request`",
        Rule::act_emit => "`emit`",
        Rule::act_violation => "`violation`",
        Rule::act_evidence => "`evidence`",
        Rule::act_call => "a connector name",
        Rule::quorum => "a quorum (`all`, `majority`, a number or a percentage)",
        Rule::quorum_percent => "a percentage",
        Rule::excluding => "`excluding`",
        Rule::role_quorum => "a quorum (`all`, `majority`, a number or a percentage)",
        Rule::veto => "`veto`",
        Rule::material => "`material`",
        Rule::esc_repeat => "`repeat`",
        Rule::esc_working => "`only`",
        Rule::field_list => "`{`",
        Rule::call_arg => "an argument",
        Rule::sla_name => "a clock name",
        Rule::kw_sla | Rule::sla => "`sla`",
        Rule::kw_goal | Rule::sla_goal => "`goal`",
        Rule::kw_pause | Rule::sla_pause => "`pause`",
        Rule::kw_resume | Rule::sla_resume => "`resume`",
        Rule::kw_reset | Rule::sla_reset => "`reset`",
        Rule::kw_cancel | Rule::sla_cancel => "`cancel`",
        Rule::kw_at | Rule::sla_at | Rule::sla_since => "`at`",
        Rule::kw_with | Rule::sla_with => "`with`",
        Rule::kw_instance => "`instance`",
        Rule::sla_start => "`start`",
        Rule::sla_stop => "`stop`",
        Rule::file | Rule::template_only => return None,
        other => {
            // CEL's rules (cel.pest): operators after an operand, else an operand.
            let name = format!("{other:?}");
            if !name.starts_with("cel_") {
                return None;
            }
            if name.ends_with("_op") || name == "cel_question" || name == "cel_kw_in" {
                "an operator"
            } else if matches!(
                name.as_str(),
                "cel_select" | "cel_member_call" | "cel_index" | "cel_field"
            ) {
                return None;
            } else {
                "an expression"
            }
        }
    };
    Some(w)
}

/// Tokens carry no information for the tree; the builder skips them.
fn is_token(r: Rule) -> bool {
    matches!(
        r,
        Rule::lbrace
            | Rule::rbrace
            | Rule::lparen
            | Rule::rparen
            | Rule::lbracket
            | Rule::rbracket
            | Rule::comma
            | Rule::colon
            | Rule::dot
            | Rule::dotdot
            | Rule::assign
            | Rule::arrow
            | Rule::percent
            | Rule::kw_use
            | Rule::kw_connector
            | Rule::kw_policy
            | Rule::kw_version
            | Rule::kw_calendar
            | Rule::kw_zone
            | Rule::kw_hours
            | Rule::kw_holidays
            | Rule::kw_freeze
            | Rule::kw_include
            | Rule::kw_for
            | Rule::kw_catch
            | Rule::kw_up
            | Rule::kw_group
            | Rule::kw_event
            | Rule::kw_rule
            | Rule::kw_control
            | Rule::kw_on
            | Rule::kw_when
            | Rule::kw_do
            | Rule::kw_workflow
            | Rule::kw_key
            | Rule::kw_start
            | Rule::kw_state
            | Rule::kw_final
            | Rule::kw_enter
            | Rule::kw_exit
            | Rule::kw_after
            | Rule::kw_within
            | Rule::kw_in
            | Rule::kw_escalation
            | Rule::kw_stop
            | Rule::kw_cadence
            | Rule::kw_every
            | Rule::kw_expect
            | Rule::kw_else
            | Rule::kw_counter
            | Rule::kw_count
            | Rule::kw_by
            | Rule::kw_per
            | Rule::kw_set
            | Rule::kw_goto
            | Rule::kw_escalate
            | Rule::kw_request
            | Rule::kw_approval
            | Rule::kw_from
            | Rule::kw_quorum
            | Rule::kw_excluding
            | Rule::kw_emit
            | Rule::kw_violation
            | Rule::kw_evidence
            | Rule::kw_business
            | Rule::kw_action
            | Rule::kw_sla
            | Rule::kw_goal
            | Rule::kw_pause
            | Rule::kw_resume
            | Rule::kw_reset
            | Rule::kw_cancel
            | Rule::kw_at
            | Rule::kw_with
            | Rule::kw_instance
            | Rule::kw_veto
            | Rule::kw_material
            | Rule::kw_repeat
            | Rule::kw_times
            | Rule::kw_only
            | Rule::kw_working
            | Rule::kw_of
            | Rule::EOI
    )
}

// ---------------------------------------------------------------- tree

type P<'i> = Pair<'i, Rule>;

/// The span of a pair without the whitespace and comments pest skips after its last
/// part (a rule ending in an optional part would otherwise include them).
fn span(p: &P<'_>) -> Span {
    let whole = Span::from_pest(p.as_span());
    let mut end = whole.end;
    let mut last = p.clone().into_inner().last();
    while let Some(l) = last {
        end = l.as_span().end();
        last = l.into_inner().last();
    }
    Span::new(whole.start, end.max(whole.start))
}

fn ident(p: &P<'_>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(p),
    }
}

/// The meaningful children of a pair, tokens left out.
fn kids<'i>(p: &P<'i>) -> impl Iterator<Item = P<'i>> + use<'i> {
    p.clone().into_inner().filter(|c| !is_token(c.as_rule()))
}

struct Builder<'s> {
    source: &'s str,
    diags: Vec<Diagnostic>,
}

impl<'s> Builder<'s> {
    fn new(source: &'s str) -> Self {
        Builder {
            source,
            diags: Vec::new(),
        }
    }

    fn push_item(&mut self, pair: P<'_>, items: &mut Vec<Item>, broken: &mut BTreeSet<String>) {
        match self.item(&pair) {
            Some(item) => items.push(item),
            None => {
                if let Some(name) = item_name_of(pair.as_str()) {
                    broken.insert(name);
                }
            }
        }
    }

    fn item(&mut self, p: &P<'_>) -> Option<Item> {
        let mut k = kids(p);
        let item = match p.as_rule() {
            Rule::use_connector => Item::UseConnector(ident(&k.next()?)),
            Rule::policy => {
                let name = ident(&k.next()?);
                let version = self.str(&k.next()?);
                let params = k.map(|q| self.policy_param(&q)).collect();
                Item::Policy(Policy {
                    name,
                    version,
                    params,
                    span: span(p),
                })
            }
            Rule::calendar => {
                let name = ident(&k.next()?);
                let entries = k.filter_map(|e| self.calendar_entry(&e)).collect();
                Item::Calendar(Calendar {
                    name,
                    entries,
                    span: span(p),
                })
            }
            Rule::group => Item::Group(Group {
                name: ident(&k.next()?),
                members: k.map(|m| self.str(&m)).collect(),
                span: span(p),
            }),
            Rule::event_schema => {
                let event_type = self.str(&k.next()?);
                let mut fields = Vec::new();
                for f in k {
                    let mut fk = kids(&f);
                    let path = kids(&fk.next()?).map(|n| ident(&n)).collect();
                    let ty = ident(&fk.next()?);
                    fields.push(SchemaField {
                        path,
                        ty,
                        span: span(&f),
                    });
                }
                Item::Schema(EventSchema {
                    event_type,
                    fields,
                    span: span(p),
                })
            }
            Rule::rule => {
                let name = ident(&k.next()?);
                let mut controls = Vec::new();
                let mut trigger = None;
                let mut actions = None;
                for c in k {
                    match c.as_rule() {
                        Rule::control => controls.push(self.control(&c)?),
                        Rule::trigger => trigger = Some(self.trigger(&c)),
                        Rule::block => actions = Some(self.block(&c)),
                        _ => {}
                    }
                }
                Item::Rule(Rule_ {
                    name,
                    controls,
                    trigger: trigger?,
                    actions: actions?,
                    span: span(p),
                })
            }
            Rule::workflow => Item::Workflow(self.workflow(p)?),
            Rule::cadence => Item::Cadence(self.cadence(p)?),
            Rule::counter => Item::Counter(self.counter(p)?),
            _ => return None,
        };
        Some(item)
    }

    fn policy_param(&mut self, p: &P<'_>) -> PolicyParam {
        let mut k = kids(p);
        let name = k.next().map(|n| ident(&n)).unwrap_or_else(|| Ident {
            name: String::new(),
            span: span(p),
        });
        let value = match k.next() {
            Some(v) if v.as_rule() == Rule::duration => PolicyValue::Duration(self.duration(&v)),
            Some(v) => PolicyValue::Expr(self.expr(&v)),
            None => PolicyValue::Expr(self.error_expr(span(p))),
        };
        PolicyParam {
            name,
            value,
            span: span(p),
        }
    }

    fn calendar_entry(&mut self, e: &P<'_>) -> Option<CalendarEntry> {
        let mut k = kids(e);
        let entry = match e.as_rule() {
            Rule::cal_zone => CalendarEntry::Zone(self.str(&k.next()?)),
            Rule::cal_hours => {
                let d = k.next()?;
                let mut dk = kids(&d);
                let days = DayRange {
                    from: ident(&dk.next()?),
                    to: dk.next().map(|t| ident(&t)),
                    span: span(&d),
                };
                let mut ranges = Vec::new();
                for r in k {
                    let mut rk = kids(&r);
                    ranges.push(ClockRange {
                        start: clock_time(&rk.next()?),
                        end: clock_time(&rk.next()?),
                        span: span(&r),
                    });
                }
                CalendarEntry::Hours {
                    days,
                    ranges,
                    span: span(e),
                }
            }
            Rule::cal_holidays => {
                let mut dates = Vec::new();
                for d in k {
                    let mut dk = kids(&d);
                    dates.push(DateOrRange {
                        from: self.str(&dk.next()?),
                        to: dk.next().map(|t| self.str(&t)),
                        span: span(&d),
                    });
                }
                CalendarEntry::Holidays(dates)
            }
            Rule::cal_freeze => CalendarEntry::Freeze {
                from: self.str(&k.next()?),
                to: self.str(&k.next()?),
                span: span(e),
            },
            Rule::cal_include => CalendarEntry::Include(ident(&k.next()?)),
            Rule::cal_freeze_every => CalendarEntry::FreezeEvery {
                schedule: self.str(&k.next()?),
                length: self.duration(&k.next()?),
                span: span(e),
            },
            _ => return None,
        };
        Some(entry)
    }

    fn control(&mut self, p: &P<'_>) -> Option<Control> {
        let mut k = kids(p);
        let clause = self.str(&k.next()?);
        let statement = self.str(&k.next()?);
        let kind = match k.next()?.as_str() {
            "preventive" => Enforcement::Preventive,
            "corrective" => Enforcement::Corrective,
            _ => Enforcement::Detective,
        };
        Some(Control {
            clause,
            statement,
            kind,
            span: span(p),
        })
    }

    fn trigger(&mut self, p: &P<'_>) -> Trigger {
        let mut k = kids(p);
        let pattern = match k.next() {
            Some(s) => self.str(&s),
            None => Str {
                value: String::new(),
                span: span(p),
            },
        };
        let condition = k.next().map(|c| self.expr(&c));
        Trigger {
            pattern: EventPattern { pattern },
            condition,
            span: span(p),
        }
    }

    fn workflow(&mut self, p: &P<'_>) -> Option<Workflow> {
        let mut k = kids(p);
        let name = ident(&k.next()?);
        let key = self.expr(&k.next()?);
        let mut wf = Workflow {
            name,
            key,
            controls: Vec::new(),
            starts: Vec::new(),
            escalations: Vec::new(),
            states: Vec::new(),
            slas: Vec::new(),
            span: span(p),
        };
        for m in k {
            match m.as_rule() {
                Rule::control => wf.controls.push(self.control(&m)?),
                Rule::start => wf.starts.push(self.trigger(&kids(&m).next()?)),
                Rule::escalation => {
                    let mut ek = kids(&m);
                    let name = ident(&ek.next()?);
                    let mut esc = Escalation {
                        name,
                        stop: Vec::new(),
                        steps: Vec::new(),
                        span: span(&m),
                    };
                    for s in ek {
                        let mut sk = kids(&s);
                        match s.as_rule() {
                            Rule::esc_stop => esc.stop.push(self.trigger(&sk.next()?)),
                            Rule::esc_step => {
                                let wait = self.time_spec(&sk.next()?)?;
                                let mut repeat = None;
                                let mut working = None;
                                let mut actions = None;
                                for part in sk {
                                    match part.as_rule() {
                                        Rule::esc_repeat => repeat = self.esc_repeat(&part),
                                        Rule::esc_working => {
                                            working = kids(&part).next().map(|c| ident(&c))
                                        }
                                        _ => actions = Some(self.block(&part)),
                                    }
                                }
                                esc.steps.push(EscalationStep {
                                    wait,
                                    actions: actions?,
                                    span: span(&s),
                                    repeat,
                                    working,
                                });
                            }
                            _ => {}
                        }
                    }
                    wf.escalations.push(esc);
                }
                Rule::state => wf.states.push(self.state(&m)?),
                Rule::sla => wf.slas.push(self.sla(&m)?),
                _ => {}
            }
        }
        Some(wf)
    }

    fn sla(&mut self, p: &P<'_>) -> Option<Sla> {
        let mut k = kids(p);
        let mut sla = Sla {
            name: ident(&k.next()?),
            goals: Vec::new(),
            starts: Vec::new(),
            pauses: Vec::new(),
            resumes: Vec::new(),
            stops: Vec::new(),
            resets: Vec::new(),
            cancels: Vec::new(),
            thresholds: Vec::new(),
            span: span(p),
        };
        for m in k {
            let mut mk = kids(&m);
            match m.as_rule() {
                Rule::sla_goal => sla.goals.push(self.time_spec(&mk.next()?)?),
                Rule::sla_start => {
                    let first = mk.next()?;
                    let (trigger, since) = if first.as_rule() == Rule::sla_with {
                        (None, None)
                    } else {
                        let since = mk
                            .next()
                            .and_then(|s| kids(&s).next())
                            .map(|e| self.expr(&e));
                        (Some(self.trigger(&first)), since)
                    };
                    sla.starts.push(SlaStart {
                        trigger,
                        since,
                        span: span(&m),
                    });
                }
                Rule::sla_pause => sla.pauses.push(self.trigger(&mk.next()?)),
                Rule::sla_resume => sla.resumes.push(self.trigger(&mk.next()?)),
                Rule::sla_stop => sla.stops.push(self.trigger(&mk.next()?)),
                Rule::sla_reset => sla.resets.push(self.trigger(&mk.next()?)),
                Rule::sla_cancel => sla.cancels.push(self.trigger(&mk.next()?)),
                Rule::sla_at => {
                    let n = mk.next()?;
                    let percent = self.int(&n);
                    let block = self.block(&mk.next()?);
                    let start = span(&n).start;
                    let end = m
                        .clone()
                        .into_inner()
                        .find(|c| c.as_rule() == Rule::percent)
                        .map_or(span(&n).end, |c| c.as_span().end());
                    sla.thresholds.push(SlaThreshold {
                        percent,
                        percent_span: Span::new(start, end),
                        actions: block,
                        span: span(&m),
                    });
                }
                _ => {}
            }
        }
        Some(sla)
    }

    fn state(&mut self, p: &P<'_>) -> Option<State> {
        let mut k = kids(p).peekable();
        let is_final = k.next_if(|f| f.as_rule() == Rule::final_mark).is_some();
        let name = ident(&k.next()?);
        let mut state = State {
            name,
            is_final,
            enter: None,
            exit: None,
            transitions: Vec::new(),
            span: span(p),
        };
        for m in k {
            match m.as_rule() {
                Rule::enter | Rule::exit => {
                    let block = self.block(&kids(&m).next()?);
                    let slot = if m.as_rule() == Rule::enter {
                        &mut state.enter
                    } else {
                        &mut state.exit
                    };
                    if slot.is_some() {
                        let word = m.as_str().split_whitespace().next().unwrap_or("");
                        self.diags.push(
                            Diagnostic::new(
                                Code::Syntax,
                                span(&m),
                                format!("second `{word}` block in state `{}`", state.name.name),
                            )
                            .with_label("already given above")
                            .with_help(format!("merge the actions into one `{word}` block")),
                        );
                    } else {
                        *slot = Some(block);
                    }
                }
                Rule::transition => state.transitions.push(self.transition(&m)?),
                _ => {}
            }
        }
        Some(state)
    }

    fn transition(&mut self, p: &P<'_>) -> Option<Transition> {
        let mut k = kids(p);
        let t = k.next()?;
        let on = match t.as_rule() {
            Rule::on_approval => {
                let o = kids(&t).next()?;
                let outcome = match o.as_str() {
                    "granted" => ApprovalOutcome::Granted,
                    "rejected" => ApprovalOutcome::Rejected,
                    "reopened" => ApprovalOutcome::Reopened,
                    _ => ApprovalOutcome::Expired,
                };
                TransitionTrigger::Approval {
                    outcome,
                    span: span(&t),
                }
            }
            Rule::on_event => TransitionTrigger::Event(self.trigger(&kids(&t).next()?)),
            Rule::on_action => TransitionTrigger::Action(self.action_trigger(&t)?),
            _ => TransitionTrigger::After(self.time_spec(&kids(&t).next()?)?),
        };
        let mut target = None;
        let mut actions = None;
        for c in k {
            match c.as_rule() {
                Rule::state_name => target = Some(ident(&c)),
                Rule::block => actions = Some(self.block(&c)),
                _ => {}
            }
        }
        Some(Transition {
            on,
            target,
            actions,
            span: span(p),
        })
    }

    /// `on action succeeded|failed [CONNECTOR[.OP]] [when COND]`
    fn action_trigger(&mut self, p: &P<'_>) -> Option<ActionTrigger> {
        let mut k = kids(p);
        let outcome = match k.next()?.as_str() {
            "succeeded" => ActionOutcome::Succeeded,
            _ => ActionOutcome::Failed,
        };
        let (mut connector, mut op, mut condition) = (None, None, None);
        for c in k {
            match c.as_rule() {
                Rule::action_target => {
                    for part in kids(&c) {
                        match part.as_rule() {
                            Rule::connector_name => connector = Some(ident(&part)),
                            Rule::op_name => op = Some(ident(&part)),
                            _ => {}
                        }
                    }
                }
                Rule::expr => condition = Some(self.expr(&c)),
                _ => {}
            }
        }
        Some(ActionTrigger {
            outcome,
            connector,
            op,
            condition,
            span: span(p),
        })
    }

    fn cadence(&mut self, p: &P<'_>) -> Option<Cadence> {
        let mut k = kids(p).peekable();
        let name = ident(&k.next()?);
        let schedule = self.str(&k.next()?);
        let zone = k
            .next_if(|z| z.as_rule() == Rule::str)
            .map(|z| self.str(&z));
        let mut cadence = Cadence {
            name,
            schedule,
            zone,
            controls: Vec::new(),
            catch_up: None,
            actions: None,
            expect: None,
            span: span(p),
        };
        for m in k {
            match m.as_rule() {
                Rule::control => cadence.controls.push(self.control(&m)?),
                Rule::catch_up => {
                    cadence.catch_up = Some(match kids(&m).next()?.as_str() {
                        "skip" => CatchUp::Skip,
                        "once" => CatchUp::Once,
                        _ => CatchUp::All,
                    })
                }
                Rule::cadence_do => cadence.actions = Some(self.block(&kids(&m).next()?)),
                Rule::expect => {
                    let mut ek = kids(&m);
                    let trigger = self.trigger(&ek.next()?);
                    let within = self.time_spec(&ek.next()?)?;
                    let o = ek.next()?;
                    let otherwise = if o.as_rule() == Rule::block {
                        self.block(&o)
                    } else {
                        Block {
                            actions: vec![self.action(&o)?],
                            span: span(&o),
                        }
                    };
                    cadence.expect = Some(Expect {
                        trigger,
                        within,
                        otherwise,
                        span: span(&m),
                    });
                }
                _ => {}
            }
        }
        Some(cadence)
    }

    fn counter(&mut self, p: &P<'_>) -> Option<Counter> {
        let mut k = kids(p).peekable();
        let name = ident(&k.next()?);
        let mut controls = Vec::new();
        while let Some(c) = k.next_if(|c| c.as_rule() == Rule::control) {
            controls.push(self.control(&c)?);
        }
        let trigger = self.trigger(&k.next()?);
        let by = self.expr(&k.next()?);
        let w = k.next()?;
        let mut wk = kids(&w);
        let window = if w.as_rule() == Rule::window_within {
            Window::Sliding(self.duration(&wk.next()?))
        } else {
            let unit = match wk.next()?.as_str() {
                "day" => CalendarUnit::Day,
                "week" => CalendarUnit::Week,
                "month" => CalendarUnit::Month,
                "quarter" => CalendarUnit::Quarter,
                _ => CalendarUnit::Year,
            };
            Window::Calendar {
                unit,
                zone: wk.next().map(|z| self.str(&z)),
                span: span(&w),
            }
        };
        let threshold = self.expr(&k.next()?);
        let actions = self.block(&k.next()?);
        Some(Counter {
            name,
            controls,
            trigger,
            by,
            window,
            threshold,
            actions,
            span: span(p),
        })
    }

    fn duration(&mut self, p: &P<'_>) -> DurationLit {
        let mut amount = 0;
        let mut unit = TimeUnit::Second;
        let mut business = false;
        for c in kids(p) {
            match c.as_rule() {
                Rule::int => amount = self.int(&c),
                Rule::business => business = true,
                Rule::time_unit => {
                    unit = match c.as_str().trim_end_matches('s') {
                        "minute" => TimeUnit::Minute,
                        "hour" => TimeUnit::Hour,
                        "day" => TimeUnit::Day,
                        "week" => TimeUnit::Week,
                        _ => TimeUnit::Second,
                    }
                }
                _ => {}
            }
        }
        DurationLit {
            amount,
            unit,
            business,
            span: span(p),
        }
    }

    fn int(&mut self, p: &P<'_>) -> u64 {
        match p.as_str().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::NumberTooLarge,
                        span(p),
                        format!("number `{}` is too large", p.as_str()),
                    )
                    .with_label("does not fit in 64 bits")
                    .with_help("use a smaller number or a larger unit"),
                );
                u64::MAX
            }
        }
    }

    fn time_spec(&mut self, p: &P<'_>) -> Option<TimeSpec> {
        let mut k = kids(p);
        let d = k.next()?;
        let duration = if d.as_rule() == Rule::param_ref {
            let mut pk = kids(&d);
            DurationRef::Param {
                policy: ident(&pk.next()?),
                param: ident(&pk.next()?),
            }
        } else {
            DurationRef::Literal(self.duration(&d))
        };
        Some(TimeSpec {
            duration,
            calendar: k.next().map(|c| ident(&c)),
            span: span(p),
        })
    }

    fn block(&mut self, p: &P<'_>) -> Block {
        let actions = kids(p).filter_map(|a| self.action(&a)).collect();
        Block {
            actions,
            span: span(p),
        }
    }

    fn fields(&mut self, p: Option<P<'_>>) -> Vec<(Ident, Expr)> {
        let Some(p) = p else { return Vec::new() };
        let mut out = Vec::new();
        for f in kids(&p) {
            let mut fk = kids(&f);
            if let (Some(n), Some(v)) = (fk.next(), fk.next()) {
                out.push((ident(&n), self.expr(&v)));
            }
        }
        out
    }

    fn action(&mut self, p: &P<'_>) -> Option<Action> {
        let mut k = kids(p);
        let sp = span(p);
        let action = match p.as_rule() {
            Rule::act_set => Action::Set {
                name: ident(&k.next()?),
                value: self.expr(&k.next()?),
                span: sp,
            },
            Rule::act_goto => Action::Goto {
                state: ident(&k.next()?),
                span: sp,
            },
            Rule::act_escalate => Action::Escalate {
                ladder: ident(&k.next()?),
                span: sp,
            },
            Rule::act_request => {
                let mut k = k.peekable();
                let mut roles = Vec::new();
                while let Some(r) = k.next_if(|r| r.as_rule() == Rule::role_quorum) {
                    let mut rk = kids(&r);
                    let quorum = self.quorum(&rk.next()?)?;
                    roles.push(RoleQuorum {
                        quorum,
                        group: ident(&rk.next()?),
                        span: span(&r),
                    });
                }
                let (group, quorum) = if roles.is_empty() {
                    let group = ident(&k.next()?);
                    let q = k.next()?;
                    (group, self.quorum(&q)?)
                } else {
                    let first = roles.remove(0);
                    (first.group, first.quorum)
                };
                let mut excluding = Vec::new();
                let mut within = None;
                let mut veto = None;
                let mut material = Vec::new();
                for c in k {
                    match c.as_rule() {
                        Rule::excluding => {
                            excluding = kids(&c).map(|e| self.expr(&e)).collect();
                        }
                        Rule::veto => {
                            let n = kids(&c).next()?;
                            veto = Some((self.int(&n), span(&n)));
                        }
                        Rule::material => {
                            material = kids(&c).map(|e| self.expr(&e)).collect();
                        }
                        Rule::time_spec => within = self.time_spec(&c),
                        _ => {}
                    }
                }
                Action::RequestApproval(Box::new(ApprovalRequest {
                    group,
                    quorum,
                    excluding,
                    within,
                    span: sp,
                    more_roles: roles,
                    veto,
                    material,
                }))
            }
            Rule::act_emit => Action::Emit {
                event_type: self.str(&k.next()?),
                fields: self.fields(k.next()),
                span: sp,
            },
            Rule::act_violation => Action::Violation {
                message: self.template(&k.next()?),
                span: sp,
            },
            Rule::act_evidence => Action::Evidence {
                message: self.template(&k.next()?),
                fields: self.fields(k.next()),
                span: sp,
            },
            Rule::act_call => {
                let connector = ident(&k.next()?);
                let op = ident(&k.next()?);
                let mut args = Vec::new();
                for a in k {
                    let mut ak = kids(&a).peekable();
                    let name = ak
                        .next_if(|n| n.as_rule() == Rule::arg_name)
                        .map(|n| ident(&n));
                    let v = ak.next()?;
                    let template = self.arg_template(&v);
                    args.push(Arg {
                        name,
                        value: self.expr(&v),
                        template,
                        span: span(&a),
                    });
                }
                Action::Call {
                    connector,
                    op,
                    args,
                    span: sp,
                }
            }
            _ => return None,
        };
        Some(action)
    }

    fn esc_repeat(&mut self, p: &P<'_>) -> Option<Repeat> {
        let mut k = kids(p);
        let every = self.time_spec(&k.next()?)?;
        let times = k.next().map(|n| (self.int(&n), span(&n)));
        Some(Repeat {
            every,
            times,
            span: span(p),
        })
    }

    fn quorum(&mut self, p: &P<'_>) -> Option<Quorum> {
        let q = kids(p).next()?;
        let sp = span(&q);
        Some(match q.as_rule() {
            Rule::quorum_all => Quorum::All(sp),
            Rule::quorum_majority => Quorum::Majority(sp),
            Rule::quorum_percent => {
                let n = self.int(&kids(&q).next()?);
                Quorum::Percent(u32::try_from(n).unwrap_or(u32::MAX), sp)
            }
            _ => Quorum::Count(self.expr(&q)),
        })
    }

    /// A plain string: quotes stripped, escapes decoded.
    fn str(&mut self, p: &P<'_>) -> Str {
        let mut value = String::new();
        for c in p.clone().into_inner() {
            match c.as_rule() {
                Rule::escape => value.push(unescape(c.as_str())),
                _ => value.push_str(c.as_str()),
            }
        }
        Str {
            value,
            span: span(p),
        }
    }

    fn template(&mut self, p: &P<'_>) -> Template {
        let mut parts = Vec::new();
        let mut text = String::new();
        for c in p.clone().into_inner() {
            match c.as_rule() {
                Rule::escape => text.push(unescape(c.as_str())),
                Rule::tpl_text => text.push_str(c.as_str()),
                Rule::tpl_interp => {
                    if !text.is_empty() {
                        parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                    }
                    if let Some(e) = kids(&c).find(|e| e.as_rule() == Rule::expr) {
                        parts.push(TemplatePart::Expr(self.expr(&e)));
                    }
                }
                _ => {}
            }
        }
        if !text.is_empty() {
            parts.push(TemplatePart::Text(text));
        }
        Template {
            parts,
            span: span(p),
        }
    }

    /// A connector argument that is one string literal with `${..}` in it, as a template.
    fn arg_template(&mut self, p: &P<'_>) -> Option<Template> {
        let text = p.as_str();
        if !text.starts_with('"') || text.starts_with("\"\"\"") || !text.contains("${") {
            return None;
        }
        let start = p.as_span().start();
        let mut padded = " ".repeat(start);
        padded.push_str(text);
        let pairs = StewardParser::parse(Rule::template_only, &padded).ok()?;
        let t = pairs.flatten().find(|t| t.as_rule() == Rule::template)?;
        Some(self.template(&t))
    }

    fn expr(&mut self, p: &P<'_>) -> Expr {
        match cel::build(p.clone()) {
            Ok(e) => e,
            Err(diags) => {
                self.diags.extend(diags);
                self.error_expr(span(p))
            }
        }
    }

    fn error_expr(&self, span: Span) -> Expr {
        let _ = self.source;
        Expr {
            kind: ExprKind::Ident(ERROR_EXPR.to_string()),
            span,
        }
    }
}

type Rule_ = crate::ast::Rule;

fn clock_time(p: &P<'_>) -> ClockTime {
    let text = p.as_str();
    let (h, m) = text.split_once(':').unwrap_or((text, "0"));
    ClockTime {
        hour: h.parse().unwrap_or(99),
        minute: m.parse().unwrap_or(99),
        span: span(p),
    }
}

fn unescape(esc: &str) -> char {
    match esc.get(1..2) {
        Some("n") => '\n',
        Some("t") => '\t',
        Some("r") => '\r',
        Some("b") => '\u{8}',
        Some("f") => '\u{c}',
        Some("u") => esc
            .get(2..)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}'),
        Some(other) => other.chars().next().unwrap_or('\u{fffd}'),
        None => '\u{fffd}',
    }
}
