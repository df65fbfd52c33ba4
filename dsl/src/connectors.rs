//! Connector calls checked against what the connectors say about themselves.
//!
//! A connector's `describe` lists its operations, each with a JSON Schema of its
//! arguments object. Given those descriptions as a [`ConnectorCatalogue`],
//! [`check_calls`] reports, for every call in the rules:
//!
//! - an operation the connector does not offer (E0601), in a call or in
//!   `on action succeeded|failed CONNECTOR.OP`;
//! - a named argument the schema does not have, when it says
//!   `additionalProperties: false` (E0602);
//! - more positional arguments than the schema has properties (E0603); positional
//!   arguments map onto the schema's `properties` in the order they are listed;
//! - a required argument not given (E0604);
//! - an argument whose type is known without running anything (string, number,
//!   boolean, null, list and map literals, `${..}` templates, string concatenation)
//!   and does not match the schema's `type` or `enum` (E0605). Anything dynamic
//!   (`key`, `event.data.x`, function calls) is left alone.
//!
//! A connector the file declares (`use connector x`) that the catalogue does not have,
//! or could not describe, is reported at that line (E0600), and its calls are not
//! checked further.
//!
//! The catalogue is plain data: the CLI builds it from the connector host, tests from
//! JSON ([`ConnectorCatalogue::from_json`]). This crate never loads a component.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use crate::ast::{Action, ActionTrigger, Arg, Block, File, Ident, Item, TransitionTrigger};
use crate::cel::{BinaryOp, Expr, ExprKind, UnaryOp, Value};
use crate::check::{CheckResult, Source, check, closest};
use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::span::Span;

/// Where the catalogue's connectors come from; says what to fix when one is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `[connectors.NAME]` tables of this configuration file.
    Config(String),
    /// `NAME.wasm` components in this directory.
    Directory(String),
}

/// What the connectors say about themselves: for each connector, its operations and
/// their argument schemas, or why it could not be described.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorCatalogue {
    origin: Origin,
    connectors: BTreeMap<String, CatalogueEntry>,
}

/// One connector in a [`ConnectorCatalogue`].
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogueEntry {
    /// Its operations, in the order `describe` listed them.
    Described(Vec<OperationSpec>),
    /// It could not be loaded or described; the reason.
    Unavailable(String),
    /// Its actions are published to a queue for a worker elsewhere (`[outbound]
    /// routes`), so any operation and arguments are accepted.
    Published,
}

/// One operation: its name, doc line and arguments (from the JSON Schema).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationSpec {
    pub name: String,
    pub doc: String,
    /// The schema's `properties`, in order (positional arguments map onto them).
    pub params: Vec<ParamSpec>,
    /// Whether names outside `params` are accepted (`additionalProperties` is not
    /// `false`).
    pub open: bool,
}

/// One argument of an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    /// Listed in the schema's `required`.
    pub required: bool,
    /// The property's own JSON Schema.
    pub schema: Json,
}

impl OperationSpec {
    /// Reads an operation's argument schema (`type: object`, `properties`, `required`,
    /// `additionalProperties`). Fails when the schema is not a JSON object schema.
    pub fn from_schema(name: &str, doc: &str, schema: &Json) -> Result<Self, String> {
        let Some(obj) = schema.as_object() else {
            return Err(format!(
                "the argument schema of `{name}` is not a JSON object"
            ));
        };
        if let Some(ty) = obj.get("type")
            && ty.as_str() != Some("object")
        {
            return Err(format!(
                "the argument schema of `{name}` has type {ty}, not \"object\""
            ));
        }
        let required: BTreeSet<&str> = obj
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let params = match obj.get("properties") {
            None => Vec::new(),
            Some(Json::Object(props)) => props
                .iter()
                .map(|(p, s)| ParamSpec {
                    name: p.clone(),
                    required: required.contains(p.as_str()),
                    schema: s.clone(),
                })
                .collect(),
            Some(_) => {
                return Err(format!(
                    "the `properties` of `{name}`'s argument schema are not a JSON object"
                ));
            }
        };
        Ok(OperationSpec {
            name: name.to_owned(),
            doc: doc.to_owned(),
            params,
            open: obj.get("additionalProperties") != Some(&Json::Bool(false)),
        })
    }

    /// Reads an operation whose schema is JSON text (as `describe` returns it).
    pub fn from_schema_text(name: &str, doc: &str, schema: &str) -> Result<Self, String> {
        let json: Json = serde_json::from_str(schema)
            .map_err(|e| format!("the argument schema of `{name}` is not JSON: {e}"))?;
        Self::from_schema(name, doc, &json)
    }

    /// `(issue, status, fields?)`: the arguments in order, optional ones marked `?`.
    pub fn signature(&self) -> String {
        let names: Vec<String> = self
            .params
            .iter()
            .map(|p| {
                if p.required {
                    p.name.clone()
                } else {
                    format!("{}?", p.name)
                }
            })
            .collect();
        format!("({})", names.join(", "))
    }
}

impl ParamSpec {
    /// The argument's type in a few characters: `string`, `[string]`, `map`, `any`,
    /// `string: critical|error|warning|info`.
    pub fn type_name(&self) -> String {
        type_name(&self.schema)
    }
}

/// A JSON Schema's type in a few characters (see [`ParamSpec::type_name`]).
pub fn type_name(schema: &Json) -> String {
    let base = match types(schema) {
        None => "any".to_owned(),
        Some(list) => list
            .iter()
            .map(|t| match *t {
                "array" => match schema.get("items") {
                    Some(items) if items.is_object() => format!("[{}]", type_name(items)),
                    _ => "list".to_owned(),
                },
                "object" => "map".to_owned(),
                "boolean" => "bool".to_owned(),
                other => other.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" | "),
    };
    match schema.get("enum").and_then(Json::as_array) {
        Some(values) => {
            let values: Vec<String> = values.iter().map(plain).collect();
            format!("{base}: {}", values.join("|"))
        }
        None => base,
    }
}

/// A JSON value as a user would write it: strings without quotes.
fn plain(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The schema's `type`, as a list; `None` when it does not restrict the type.
fn types(schema: &Json) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Json::String(t) => Some(vec![t.as_str()]),
        Json::Array(ts) => Some(ts.iter().filter_map(Json::as_str).collect()),
        _ => None,
    }
}

impl ConnectorCatalogue {
    /// An empty catalogue whose connectors come from `origin`.
    pub fn new(origin: Origin) -> Self {
        ConnectorCatalogue {
            origin,
            connectors: BTreeMap::new(),
        }
    }

    /// Adds a connector and its operations.
    pub fn insert_described(&mut self, name: impl Into<String>, operations: Vec<OperationSpec>) {
        self.connectors
            .insert(name.into(), CatalogueEntry::Described(operations));
    }

    /// Adds a connector that could not be loaded or described, with the reason.
    /// Records a connector whose actions are published, not executed: its calls are
    /// not checked.
    pub fn insert_published(&mut self, name: impl Into<String>) {
        self.connectors
            .insert(name.into(), CatalogueEntry::Published);
    }

    pub fn insert_unavailable(&mut self, name: impl Into<String>, reason: impl Into<String>) {
        self.connectors
            .insert(name.into(), CatalogueEntry::Unavailable(reason.into()));
    }

    /// The entry of one connector.
    pub fn get(&self, name: &str) -> Option<&CatalogueEntry> {
        self.connectors.get(name)
    }

    /// Where the connectors come from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Reads a catalogue from JSON: an object whose keys are connector names and
    /// whose values are either a description as `steward connector describe --json`
    /// prints it (`{"operations": [{"name", "doc", "args_schema"}]}`, `args_schema` a
    /// JSON object or JSON text; other keys ignored) or `{"error": "reason"}`.
    pub fn from_json(text: &str, origin: Origin) -> Result<Self, String> {
        let json: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Json::Object(entries) = json else {
            return Err("the catalogue is not a JSON object".to_owned());
        };
        let mut catalogue = ConnectorCatalogue::new(origin);
        for (name, entry) in entries {
            if let Some(reason) = entry.get("error") {
                catalogue.insert_unavailable(name, plain(reason));
                continue;
            }
            let Some(ops) = entry.get("operations").and_then(Json::as_array) else {
                return Err(format!("`{name}`: no `operations` list and no `error`"));
            };
            let mut specs = Vec::new();
            for op in ops {
                let op_name = op.get("name").and_then(Json::as_str).unwrap_or_default();
                let doc = op.get("doc").and_then(Json::as_str).unwrap_or_default();
                let spec = match op.get("args_schema") {
                    Some(Json::String(text)) => OperationSpec::from_schema_text(op_name, doc, text),
                    Some(schema) => OperationSpec::from_schema(op_name, doc, schema),
                    None => Err(format!("operation `{op_name}` has no `args_schema`")),
                };
                specs.push(spec.map_err(|e| format!("`{name}`: {e}"))?);
            }
            catalogue.insert_described(name, specs);
        }
        Ok(catalogue)
    }
}

/// The connectors the files declare with `use connector`, sorted.
pub fn used_connectors(files: &[File]) -> BTreeSet<String> {
    files
        .iter()
        .flat_map(|f| &f.items)
        .filter_map(|i| match i {
            Item::UseConnector(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect()
}

/// Parses and checks the files ([`check`]), then checks their connector calls against
/// the catalogue ([`check_calls`]).
pub fn check_with_connectors(sources: &[Source], catalogue: &ConnectorCatalogue) -> CheckResult {
    let mut result = check(sources);
    check_calls(&mut result, catalogue);
    result
}

/// Adds the diagnostics of the connector calls in `result.files` checked against the
/// catalogue; diagnostics stay ordered by file and position.
pub fn check_calls(result: &mut CheckResult, catalogue: &ConnectorCatalogue) {
    for (i, file) in result.files.iter().enumerate() {
        let mut pass = Pass {
            catalogue,
            declared: BTreeMap::new(),
            diags: Vec::new(),
        };
        pass.file(file);
        result
            .diagnostics
            .extend(pass.diags.into_iter().map(|d| (i, d)));
    }
    result.diagnostics.sort_by_key(|(i, d)| (*i, d.span.start));
}

struct Pass<'c> {
    catalogue: &'c ConnectorCatalogue,
    /// The file's declared connectors that the catalogue describes.
    declared: BTreeMap<String, &'c [OperationSpec]>,
    diags: Vec<Diagnostic>,
}

impl<'c> Pass<'c> {
    fn file(&mut self, file: &File) {
        let mut seen = BTreeSet::new();
        for item in &file.items {
            if let Item::UseConnector(c) = item
                && seen.insert(c.name.as_str())
            {
                self.use_connector(c);
            }
        }
        for item in &file.items {
            match item {
                Item::Rule(r) => self.block(&r.actions),
                Item::Workflow(w) => {
                    for s in &w.states {
                        for b in [&s.enter, &s.exit].into_iter().flatten() {
                            self.block(b);
                        }
                        for t in &s.transitions {
                            if let TransitionTrigger::Action(ActionTrigger {
                                connector: Some(c),
                                op: Some(op),
                                ..
                            }) = &t.on
                            {
                                self.operation(c, op);
                            }
                            if let Some(b) = &t.actions {
                                self.block(b);
                            }
                        }
                    }
                    for e in &w.escalations {
                        for step in &e.steps {
                            self.block(&step.actions);
                        }
                    }
                    for sla in &w.slas {
                        for t in &sla.thresholds {
                            self.block(&t.actions);
                        }
                    }
                }
                Item::Cadence(c) => {
                    if let Some(b) = &c.actions {
                        self.block(b);
                    }
                    if let Some(e) = &c.expect {
                        self.block(&e.otherwise);
                    }
                }
                Item::Counter(c) => self.block(&c.actions),
                _ => {}
            }
        }
    }

    fn use_connector(&mut self, c: &Ident) {
        let name = c.name.as_str();
        match self.catalogue.get(name) {
            Some(CatalogueEntry::Described(ops)) => {
                self.declared.insert(name.to_owned(), ops.as_slice());
            }
            Some(CatalogueEntry::Published) => {}
            Some(CatalogueEntry::Unavailable(reason)) => {
                let d = Diagnostic::new(
                    Code::ConnectorUnavailable,
                    c.span,
                    format!("connector `{name}` cannot be loaded"),
                )
                .with_label(reason.clone())
                .with_help(
                    "`steward connector list` shows every connector's state; its calls were not checked",
                );
                self.diags.push(d);
            }
            None => {
                let (label, fix) = match &self.catalogue.origin {
                    Origin::Config(path) => (
                        format!("no `[connectors.{name}]` in `{path}`"),
                        format!(
                            "add a `[connectors.{name}]` table with its `component` to `{path}`"
                        ),
                    ),
                    Origin::Directory(dir) => (
                        format!("no `{name}.wasm` in `{dir}`"),
                        format!("put the connector's component at `{dir}/{name}.wasm`"),
                    ),
                };
                let known = self.catalogue.connectors.keys().map(String::as_str);
                let help = match closest(name, known) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => fix,
                };
                self.diags.push(
                    Diagnostic::new(
                        Code::ConnectorUnavailable,
                        c.span,
                        format!("connector `{name}` is not available"),
                    )
                    .with_label(label)
                    .with_help(help),
                );
            }
        }
    }

    fn block(&mut self, b: &Block) {
        for a in &b.actions {
            if let Action::Call {
                connector,
                op,
                args,
                ..
            } = a
            {
                self.call(connector, op, args);
            }
        }
    }

    /// The operation `connector.op` as described; reports it when the connector is
    /// described and does not offer it. `None` also when the connector is not checked.
    fn operation(&mut self, connector: &Ident, op: &Ident) -> Option<&'c OperationSpec> {
        let ops = self.declared.get(&connector.name).copied()?;
        let conn = connector.name.as_str();
        if let Some(spec) = ops.iter().find(|o| o.name == op.name) {
            return Some(spec);
        }
        let names = ops.iter().map(|o| o.name.as_str());
        let help = match closest(&op.name, names.clone()) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!(
                "`{conn}` offers {}",
                names
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.diags.push(
            Diagnostic::new(
                Code::UnknownOperation,
                op.span,
                format!("connector `{conn}` has no operation `{}`", op.name),
            )
            .with_label("not in the connector's description")
            .with_help(help),
        );
        None
    }

    fn call(&mut self, connector: &Ident, op: &Ident, args: &[Arg]) {
        let Some(spec) = self.operation(connector, op) else {
            return;
        };
        let call = format!("{}.{}", connector.name, spec.name);
        let takes = format!("`{call}` takes {}", spec.signature());
        // Which argument gives each parameter.
        let mut given: Vec<Option<&Arg>> = vec![None; spec.params.len()];
        let mut extra: Vec<&Arg> = Vec::new();
        let mut positional = 0usize;
        for arg in args {
            let index = match &arg.name {
                None => {
                    positional += 1;
                    if positional > spec.params.len() {
                        extra.push(arg);
                        continue;
                    }
                    positional - 1
                }
                Some(n) => match spec.params.iter().position(|p| p.name == n.name) {
                    Some(i) => {
                        if given[i].is_some_and(|g| g.name.is_none()) {
                            self.diags.push(
                                Diagnostic::new(
                                    Code::DuplicateField,
                                    n.span,
                                    format!(
                                        "argument `{}` is given by position and by name",
                                        n.name
                                    ),
                                )
                                .with_label("given again here")
                                .with_help(takes.clone()),
                            );
                            continue;
                        }
                        i
                    }
                    None => {
                        if !spec.open {
                            let names = spec.params.iter().map(|p| p.name.as_str());
                            let help = match closest(&n.name, names) {
                                Some(c) => format!("did you mean `{c}`?"),
                                None => takes.clone(),
                            };
                            self.diags.push(
                                Diagnostic::new(
                                    Code::UnknownArgument,
                                    n.span,
                                    format!("`{call}` has no argument `{}`", n.name),
                                )
                                .with_label("not in the operation's arguments")
                                .with_help(help),
                            );
                        }
                        continue;
                    }
                },
            };
            if given[index].is_none() {
                given[index] = Some(arg);
            }
            if let Some(param) = spec.params.get(index) {
                self.arg_type(&call, param, arg, &takes);
            }
        }
        if let (Some(first), Some(last)) = (extra.first(), extra.last()) {
            let n = spec.params.len();
            self.diags.push(
                Diagnostic::new(
                    Code::TooManyArguments,
                    first.span.to(last.span),
                    format!(
                        "`{call}` takes {n} argument{}, {positional} given",
                        if n == 1 { "" } else { "s" },
                    ),
                )
                .with_label(if extra.len() == 1 {
                    "not expected".to_owned()
                } else {
                    format!("{} not expected", extra.len())
                })
                .with_help(takes.clone()),
            );
        }
        let missing: Vec<String> = spec
            .params
            .iter()
            .zip(&given)
            .filter(|(p, g)| p.required && g.is_none())
            .map(|(p, _)| format!("`{}`", p.name))
            .collect();
        if !missing.is_empty() {
            let (noun, list) = if missing.len() == 1 {
                ("argument", missing.join(""))
            } else {
                ("arguments", missing.join(", "))
            };
            self.diags.push(
                Diagnostic::new(
                    Code::MissingArgument,
                    connector.span.to(op.span),
                    format!("`{call}` is missing the required {noun} {list}"),
                )
                .with_label(format!("{list} not given"))
                .with_help(takes),
            );
        }
    }

    fn arg_type(&mut self, call: &str, param: &ParamSpec, arg: &Arg, takes: &str) {
        let kind = if arg.template.is_some() {
            Some(Kind::String)
        } else {
            kind_of(&arg.value)
        };
        let Some(kind) = kind else { return };
        let Some((span, found)) = mismatch(&arg.value, kind, &param.schema) else {
            return;
        };
        self.diags.push(
            Diagnostic::new(
                Code::ArgumentType,
                if span == arg.value.span {
                    arg.span
                } else {
                    span
                },
                format!(
                    "argument `{}` of `{call}` must be {}",
                    param.name,
                    expected(&param.schema)
                ),
            )
            .with_label(found)
            .with_help(takes.to_owned()),
        );
    }
}

/// The JSON type an expression is known to have without evaluating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    Number,
    Bool,
    Null,
    List,
    Map,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Integer | Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
            Kind::List => "a list",
            Kind::Map => "a map",
        }
    }

    fn fits(self, json_type: &str) -> bool {
        matches!(
            (self, json_type),
            (Kind::String, "string")
                | (Kind::Integer, "integer" | "number")
                | (Kind::Number, "number")
                | (Kind::Bool, "boolean")
                | (Kind::Null, "null")
                | (Kind::List, "array")
                | (Kind::Map, "object")
        )
    }
}

fn kind_of(e: &Expr) -> Option<Kind> {
    match &e.kind {
        ExprKind::Literal(v) => match v {
            Value::String(_) => Some(Kind::String),
            Value::Int(_) | Value::Uint(_) => Some(Kind::Integer),
            Value::Double(d) if d.fract() == 0.0 && d.is_finite() => Some(Kind::Integer),
            Value::Double(_) => Some(Kind::Number),
            Value::Bool(_) => Some(Kind::Bool),
            Value::Null => Some(Kind::Null),
            _ => None,
        },
        ExprKind::List(_) => Some(Kind::List),
        ExprKind::Map(_) => Some(Kind::Map),
        ExprKind::Unary {
            op: UnaryOp::Neg,
            operand,
        } => kind_of(operand).filter(|k| matches!(k, Kind::Integer | Kind::Number)),
        ExprKind::Unary {
            op: UnaryOp::Not,
            operand,
        } => kind_of(operand).filter(|k| *k == Kind::Bool),
        // CEL's `+` on a string only takes a string: the sum is one.
        ExprKind::Binary {
            op: BinaryOp::Add,
            lhs,
            rhs,
        } => {
            let (l, r) = (kind_of(lhs), kind_of(rhs));
            if l == Some(Kind::String) || r == Some(Kind::String) {
                Some(Kind::String)
            } else if l == Some(Kind::List) || r == Some(Kind::List) {
                Some(Kind::List)
            } else {
                None
            }
        }
        ExprKind::Ternary {
            then, otherwise, ..
        } => {
            let k = kind_of(then)?;
            (kind_of(otherwise) == Some(k)).then_some(k)
        }
        _ => None,
    }
}

/// Where and how a value of a known kind does not fit the schema: the span to point
/// at (the value, or one list item) and what it is.
fn mismatch(e: &Expr, kind: Kind, schema: &Json) -> Option<(Span, String)> {
    if let Some(ts) = types(schema)
        && !ts.iter().any(|t| kind.fits(t))
    {
        return Some((e.span, format!("this is {}", kind.noun())));
    }
    if let (Some(values), ExprKind::Literal(v)) =
        (schema.get("enum").and_then(Json::as_array), &e.kind)
    {
        let json = match v {
            Value::String(s) => Some(Json::String(s.to_string())),
            Value::Bool(b) => Some(Json::Bool(*b)),
            Value::Int(i) => Some(Json::from(*i)),
            Value::Uint(u) => Some(Json::from(*u)),
            _ => None,
        };
        if let Some(json) = json
            && !values.contains(&json)
        {
            return Some((e.span, "not one of the allowed values".to_owned()));
        }
    }
    if let (ExprKind::List(items), Some(item_schema)) = (&e.kind, schema.get("items"))
        && item_schema.is_object()
    {
        for item in items {
            if let Some(k) = kind_of(item)
                && let Some((span, found)) = mismatch(item, k, item_schema)
            {
                let found = found.replacen("this is", "this item is", 1);
                return Some((span, found));
            }
        }
    }
    None
}

/// What a schema expects, for a message: `a string`, `a list of strings`,
/// `one of `a`, `b``.
fn expected(schema: &Json) -> String {
    if let Some(values) = schema.get("enum").and_then(Json::as_array) {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", plain(v))).collect();
        return format!("one of {}", values.join(", "));
    }
    let Some(ts) = types(schema) else {
        return "any value".to_owned();
    };
    let nouns: Vec<String> = ts
        .iter()
        .map(|t| match *t {
            "string" => "a string".to_owned(),
            "integer" => "an integer".to_owned(),
            "number" => "a number".to_owned(),
            "boolean" => "a boolean".to_owned(),
            "null" => "null".to_owned(),
            "object" => "a map".to_owned(),
            "array" => match schema.get("items").filter(|i| i.is_object()) {
                Some(items) => {
                    let inner = expected(items);
                    let inner = inner
                        .strip_prefix("a ")
                        .or_else(|| inner.strip_prefix("an "))
                        .map(|s| format!("{s}s"))
                        .unwrap_or(inner);
                    format!("a list of {inner}")
                }
                None => "a list".to_owned(),
            },
            other => format!("`{other}`"),
        })
        .collect();
    nouns.join(" or ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn type_names_and_signatures() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "summary": {"type": "string"},
                "severity": {"type": "string", "enum": ["critical", "error"]},
                "labels": {"type": "array", "items": {"type": "string"}},
                "custom_details": {"type": "object"},
                "payload": {}
            },
            "required": ["summary"],
            "additionalProperties": false
        });
        let op = OperationSpec::from_schema("trigger", "", &schema).unwrap();
        assert!(!op.open);
        assert_eq!(
            op.signature(),
            "(summary, severity?, labels?, custom_details?, payload?)"
        );
        let names: Vec<String> = op.params.iter().map(ParamSpec::type_name).collect();
        assert_eq!(
            names,
            ["string", "string: critical|error", "[string]", "map", "any"]
        );
        assert_eq!(expected(&op.params[2].schema), "a list of strings");
        assert_eq!(expected(&op.params[1].schema), "one of `critical`, `error`");
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert!(OperationSpec::from_schema_text("x", "", "{").is_err());
        assert!(OperationSpec::from_schema_text("x", "", "[]").is_err());
        assert!(OperationSpec::from_schema_text("x", "", r#"{"type":"string"}"#).is_err());
        assert!(OperationSpec::from_schema_text("x", "", r#"{"properties":[]}"#).is_err());
        let open = OperationSpec::from_schema_text("x", "", "{}").unwrap();
        assert!(open.open && open.params.is_empty());
    }
}
