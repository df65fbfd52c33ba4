//! Compilation of an [`Expr`] to a [`Program`] (functions resolved, regexes
//! compiled, constants folded) and its evaluation.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;

use super::functions::{Function, Functions, type_denotation};
use super::time;
use super::value::{EvalError, Key, MapValue, Value, cel_eq, try_cel_cmp};
use super::{BinaryOp, Expr, ExprKind, MacroKind, UnaryOp};
use crate::codes::Code;
use crate::diagnostic::Diagnostic;

/// Where free variables get their values.
pub trait Activation {
    fn resolve(&self, name: &str) -> Option<Value>;

    /// Whether bound names may contain dots (`x.y`). When true, `x.y.z` resolves
    /// CEL's way, the longest bound prefix winning, at the cost of a lookup per
    /// segment; when false (the default) `x` is looked up first and longer
    /// prefixes only when `x` is unbound.
    fn qualified_names(&self) -> bool {
        false
    }

    /// Resolves a name written with a leading dot (`.x`): from the root scope,
    /// ignoring any container. Defaults to [`Activation::resolve`].
    fn resolve_root(&self, name: &str) -> Option<Value> {
        self.resolve(name)
    }
}

impl Activation for HashMap<String, Value> {
    fn resolve(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

impl Activation for BTreeMap<String, Value> {
    fn resolve(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

impl Activation for () {
    fn resolve(&self, _: &str) -> Option<Value> {
        None
    }
}

impl<F: Fn(&str) -> Option<Value>> Activation for F {
    fn resolve(&self, name: &str) -> Option<Value> {
        self(name)
    }
}

/// A compiled expression: evaluate it any number of times, from any thread.
#[derive(Clone)]
pub struct Program {
    /// Held inline (not behind a pointer), so evaluating a rule's condition starts in
    /// the rule's own memory.
    root: Node,
    slots: usize,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Node {
    Const(Value),
    /// A macro variable.
    Local(usize),
    /// `a.b.c` rooted at a free name: tries `a`, then `a.b`, then `a.b.c` in the
    /// activation and selects the remaining fields from the first one bound.
    Path {
        /// `a.b.c`: the longest name, tried first where qualified names are answered.
        full: Arc<str>,
        /// Where each shorter name ends in `full` (`a`, `a.b`; then `full` itself).
        ends: Box<[u32]>,
        fields: Box<[Arc<str>]>,
        root: bool,
    },
    Select(Box<Node>, Arc<str>),
    Has(Box<Node>, Arc<str>),
    Index(Box<Node>, Box<Node>),
    Call {
        name: Arc<str>,
        f: Function,
        args: Box<[Node]>,
    },
    Matches(Box<Node>, Arc<Regex>),
    List(Box<[Node]>),
    Map(Box<[(Node, Node)]>),
    Not(Box<Node>),
    Neg(Box<Node>),
    // The operands of the binary operators share one allocation: evaluating reads
    // them from adjacent memory instead of chasing two pointers.
    And(Box<[Node; 2]>),
    Or(Box<[Node; 2]>),
    Binary(BinaryOp, Box<[Node; 2]>),
    Ternary(Box<Node>, Box<Node>, Box<Node>),
    Comprehension {
        kind: MacroKind,
        range: Box<Node>,
        slot: usize,
        slot2: Option<usize>,
        filter: Option<Box<Node>>,
        body: Box<Node>,
    },
    /// An error known at compile time but only raised when evaluated (lenient mode).
    Fail(EvalError),
}

/// The names of free paths (`event.data.priority`) shared by the programs compiled
/// with it: rules reading the same field hold one string, which stays in cache
/// however many rules there are.
#[derive(Debug, Default)]
pub struct SharedNames {
    names: std::collections::HashSet<Arc<str>>,
}

impl SharedNames {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(shared.clone());
        shared
    }
}

struct Compiler<'f> {
    functions: &'f Functions,
    names: Option<&'f mut SharedNames>,
    scopes: Vec<(String, usize)>,
    slots: usize,
    diags: Vec<Diagnostic>,
    lenient: bool,
}

impl Program {
    /// Resolves function names and arities (E0101, E0102), precompiles constant
    /// regexes for `matches` (E0103) and folds constants.
    pub fn compile(expr: &Expr, functions: &Functions) -> Result<Program, Vec<Diagnostic>> {
        Program::compile_with(expr, functions, false, None)
    }

    /// Like [`Program::compile`], sharing path names with the other programs compiled
    /// with `names` (a ruleset's conditions).
    pub fn compile_shared(
        expr: &Expr,
        functions: &Functions,
        names: &mut SharedNames,
    ) -> Result<Program, Vec<Diagnostic>> {
        Program::compile_with(expr, functions, false, Some(names))
    }

    /// Like [`Program::compile`], but unknown functions, wrong arities and bad
    /// regexes become evaluation errors instead of diagnostics (for expressions
    /// that were not checked, as in some conformance tests).
    pub fn compile_lenient(expr: &Expr, functions: &Functions) -> Program {
        match Program::compile_with(expr, functions, true, None) {
            Ok(p) => p,
            Err(d) => Program {
                root: Node::Fail(EvalError::new(
                    d.first()
                        .map_or("invalid expression".to_string(), |d| d.message.clone()),
                )),
                slots: 0,
            },
        }
    }

    fn compile_with<'f>(
        expr: &Expr,
        functions: &'f Functions,
        lenient: bool,
        names: Option<&'f mut SharedNames>,
    ) -> Result<Program, Vec<Diagnostic>> {
        let mut c = Compiler {
            functions,
            names,
            scopes: Vec::new(),
            slots: 0,
            diags: Vec::new(),
            lenient,
        };
        let root = c.node(expr);
        if !c.diags.is_empty() {
            return Err(c.diags);
        }
        Ok(Program {
            root,
            slots: c.slots,
        })
    }

    pub fn eval(&self, vars: &dyn Activation) -> Result<Value, EvalError> {
        // Most programs bind no macro variables: no allocation for them.
        let locals = if self.slots == 0 {
            Vec::new()
        } else {
            vec![Value::Null; self.slots]
        };
        let mut cx = Ctx { vars, locals };
        cx.eval(&self.root)
    }

    /// The constant value, when the whole expression folded to one.
    pub fn constant(&self) -> Option<&Value> {
        match &self.root {
            Node::Const(v) => Some(v),
            _ => None,
        }
    }
}

fn fold_if_const(node: Node) -> Node {
    let constant = match &node {
        Node::Const(_) | Node::Fail(_) => return node,
        Node::Not(a) | Node::Neg(a) => a.is_const(),
        Node::Select(a, _) | Node::Has(a, _) | Node::Matches(a, _) => a.is_const(),
        Node::Index(a, b) => a.is_const() && b.is_const(),
        Node::And(ab) | Node::Or(ab) | Node::Binary(_, ab) => ab[0].is_const() && ab[1].is_const(),
        Node::Ternary(a, b, c) => a.is_const() && b.is_const() && c.is_const(),
        Node::List(items) => items.iter().all(Node::is_const),
        Node::Map(entries) => entries.iter().all(|(k, v)| k.is_const() && v.is_const()),
        _ => false,
    };
    if !constant {
        return node;
    }
    let mut cx = Ctx {
        vars: &(),
        locals: Vec::new(),
    };
    match cx.eval(&node) {
        Ok(v) => Node::Const(v),
        Err(_) => node,
    }
}

impl Node {
    fn is_const(&self) -> bool {
        matches!(self, Node::Const(_))
    }
}

impl Compiler<'_> {
    fn local(&self, name: &str) -> Option<usize> {
        self.scopes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }

    /// Free dotted path rooted at a name not bound by a macro.
    fn free_path(&self, e: &Expr) -> Option<Vec<String>> {
        match &e.kind {
            ExprKind::Ident(name) => {
                if name.starts_with('.') {
                    return Some(vec![name.clone()]);
                }
                if self.local(name).is_some() {
                    return None;
                }
                Some(vec![name.clone()])
            }
            ExprKind::Select {
                operand,
                field,
                test_only: false,
            } => {
                let mut p = self.free_path(operand)?;
                p.push(field.clone());
                Some(p)
            }
            _ => None,
        }
    }

    fn node(&mut self, e: &Expr) -> Node {
        let node = self.node_inner(e);
        fold_if_const(node)
    }

    fn node_inner(&mut self, e: &Expr) -> Node {
        match &e.kind {
            ExprKind::Literal(v) => Node::Const(v.clone()),
            ExprKind::Ident(name) => {
                if !name.starts_with('.')
                    && let Some(slot) = self.local(name)
                {
                    return Node::Local(slot);
                }
                self.path(vec![name.clone()])
            }
            ExprKind::Select {
                operand,
                field,
                test_only,
            } => {
                if *test_only {
                    return Node::Has(Box::new(self.node(operand)), Arc::from(field.as_str()));
                }
                if let Some(p) = self.free_path(e) {
                    return self.path(p);
                }
                Node::Select(Box::new(self.node(operand)), Arc::from(field.as_str()))
            }
            ExprKind::Index { operand, index } => {
                Node::Index(Box::new(self.node(operand)), Box::new(self.node(index)))
            }
            ExprKind::Call {
                target,
                function,
                args,
            } => self.call(e, target.as_deref(), function, args),
            ExprKind::List(items) => Node::List(items.iter().map(|i| self.node(i)).collect()),
            ExprKind::Map(entries) => Node::Map(
                entries
                    .iter()
                    .map(|(k, v)| (self.node(k), self.node(v)))
                    .collect(),
            ),
            ExprKind::Unary { op, operand } => {
                let a = Box::new(self.node(operand));
                match op {
                    UnaryOp::Not => Node::Not(a),
                    UnaryOp::Neg => Node::Neg(a),
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let operands = Box::new([self.node(lhs), self.node(rhs)]);
                match op {
                    BinaryOp::And => Node::And(operands),
                    BinaryOp::Or => Node::Or(operands),
                    op => Node::Binary(*op, operands),
                }
            }
            ExprKind::Ternary {
                cond,
                then,
                otherwise,
            } => {
                let c = self.node(cond);
                let t = self.node(then);
                let o = self.node(otherwise);
                match c {
                    Node::Const(Value::Bool(true)) => t,
                    Node::Const(Value::Bool(false)) => o,
                    c => Node::Ternary(Box::new(c), Box::new(t), Box::new(o)),
                }
            }
            ExprKind::Comprehension {
                kind,
                range,
                var,
                var2,
                filter,
                body,
            } => {
                let range = Box::new(self.node(range));
                let before = self.scopes.len();
                let slot = self.slots;
                self.slots += 1;
                self.scopes.push((var.clone(), slot));
                let slot2 = var2.as_ref().map(|v2| {
                    let s = self.slots;
                    self.slots += 1;
                    self.scopes.push((v2.clone(), s));
                    s
                });
                let filter = filter.as_ref().map(|f| Box::new(self.node(f)));
                let body = Box::new(self.node(body));
                self.scopes.truncate(before);
                Node::Comprehension {
                    kind: *kind,
                    range,
                    slot,
                    slot2,
                    filter,
                    body,
                }
            }
        }
    }

    /// A free path; a leading dot on the first segment marks it as rooted.
    fn path(&mut self, mut segments: Vec<String>) -> Node {
        let root = segments.first().is_some_and(|s| s.starts_with('.'));
        if let Some(first) = segments.first_mut()
            && root
        {
            first.remove(0);
        }
        let mut ends = Vec::with_capacity(segments.len());
        let mut acc = String::new();
        for s in &segments {
            if !acc.is_empty() {
                acc.push('.');
            }
            acc.push_str(s);
            // Expressions are far shorter than 4 GiB.
            ends.push(u32::try_from(acc.len()).unwrap_or(u32::MAX));
        }
        let full = match self.names.as_deref_mut() {
            Some(names) => names.get(&acc),
            None => Arc::from(acc.as_str()),
        };
        Node::Path {
            full,
            ends: ends.into(),
            fields: segments.iter().map(|s| Arc::from(s.as_str())).collect(),
            root,
        }
    }

    fn fail(&mut self, d: Diagnostic) -> Node {
        if self.lenient {
            Node::Fail(EvalError::new(d.message))
        } else {
            self.diags.push(d);
            Node::Const(Value::Null)
        }
    }

    fn call(&mut self, e: &Expr, target: Option<&Expr>, function: &str, args: &[Expr]) -> Node {
        // `math.greatest(x)`: a namespaced global function, not a member call.
        let qualified = target.and_then(|t| {
            let p = self.free_path(t)?;
            let name = format!("{}.{function}", p.join("."));
            self.functions.contains(&name).then_some(name)
        });
        let (name, target) = match qualified {
            Some(n) => (n, None),
            None => (function.trim_start_matches('.').to_string(), target),
        };
        let Some(entry) = self.functions.get(&name) else {
            let d = Diagnostic::new(
                Code::UnknownFunction,
                e.span,
                format!("unknown function `{name}`"),
            )
            .with_label("not defined");
            return self.fail(d);
        };
        let arities = if target.is_some() {
            &entry.member
        } else {
            &entry.global
        };
        if !arities.contains(&args.len()) {
            let (style, other) = if target.is_some() {
                ("as a method", &entry.global)
            } else {
                ("as a function", &entry.member)
            };
            let mut d = if arities.is_empty() {
                Diagnostic::new(
                    Code::WrongArity,
                    e.span,
                    format!("`{name}` cannot be called {style}"),
                )
                .with_label("wrong call style")
            } else {
                let want: Vec<String> = arities.iter().map(usize::to_string).collect();
                Diagnostic::new(
                    Code::WrongArity,
                    e.span,
                    format!(
                        "`{name}` takes {} argument{}, not {}",
                        want.join(" or "),
                        if arities == &[1] { "" } else { "s" },
                        args.len()
                    ),
                )
                .with_label("wrong number of arguments")
            };
            if arities.is_empty() && !other.is_empty() {
                d = d.with_help(if target.is_some() {
                    format!("call it as `{name}(x, ...)`")
                } else {
                    format!("call it as `x.{name}(...)`")
                });
            }
            return self.fail(d);
        }
        let f = entry.f.clone();
        let pure = entry.pure;
        let mut nodes: Vec<Node> = Vec::with_capacity(args.len() + 1);
        if let Some(t) = target {
            nodes.push(self.node(t));
        }
        for a in args {
            nodes.push(self.node(a));
        }
        // Constant regex: compile once.
        if name == "matches"
            && pure
            && nodes.len() == 2
            && let Some(Node::Const(Value::String(pattern))) = nodes.get(1)
        {
            match Regex::new(pattern) {
                Ok(re) => {
                    let mut it = nodes.into_iter();
                    if let Some(subject) = it.next() {
                        return Node::Matches(Box::new(subject), Arc::new(re));
                    }
                    return Node::Fail(EvalError::new("invalid call"));
                }
                Err(err) => {
                    let span = args.last().map_or(e.span, |a| a.span);
                    let d = Diagnostic::new(
                        Code::InvalidRegex,
                        span,
                        format!("invalid regular expression `{pattern}`"),
                    )
                    .with_label(first_line(&err.to_string()))
                    .with_help("the syntax is RE2's: https://github.com/google/re2/wiki/Syntax");
                    return self.fail(d);
                }
            }
        }
        if pure && nodes.iter().all(Node::is_const) {
            let values: Vec<Value> = nodes
                .iter()
                .filter_map(|n| match n {
                    Node::Const(v) => Some(v.clone()),
                    _ => None,
                })
                .collect();
            if let Ok(v) = f(&values) {
                return Node::Const(v);
            }
        }
        Node::Call {
            name: Arc::from(name.as_str()),
            f,
            args: nodes.into(),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("does not compile")
        .to_lowercase()
}

struct Ctx<'a> {
    vars: &'a dyn Activation,
    locals: Vec<Value>,
}

fn no_overload(op: &str, a: &Value, b: &Value) -> EvalError {
    EvalError::no_overload(&format!("_{op}_"), &[a, b])
}

fn overflow() -> EvalError {
    EvalError::new("integer overflow")
}

fn select(v: &Value, field: &str) -> Result<Value, EvalError> {
    match v {
        Value::Map(m) => m
            .get_str(field)
            .cloned()
            .ok_or_else(|| EvalError::new(format!("no such key `{field}`"))),
        other => Err(EvalError::new(format!(
            "no such field `{field}` on `{}`",
            other.type_name()
        ))),
    }
}

impl Ctx<'_> {
    fn eval(&mut self, node: &Node) -> Result<Value, EvalError> {
        match node {
            Node::Const(v) => Ok(v.clone()),
            Node::Local(slot) => Ok(self.locals.get(*slot).cloned().unwrap_or(Value::Null)),
            Node::Path {
                full,
                ends,
                fields,
                root,
            } => {
                let lookup = |name: &str| {
                    if *root {
                        self.vars.resolve_root(name)
                    } else {
                        self.vars.resolve(name)
                    }
                };
                let name = |i: usize| full.get(..ends[i] as usize).unwrap_or(full);
                let last = ends.len().saturating_sub(1);
                let found = if self.vars.qualified_names() {
                    // The whole path first: usually it is answered at once.
                    lookup(full)
                        .map(|v| (last, v))
                        .or_else(|| (0..last).rev().find_map(|i| Some((i, lookup(name(i))?))))
                } else {
                    (0..ends.len()).find_map(|i| Some((i, lookup(name(i))?)))
                };
                if let Some((i, mut v)) = found {
                    for f in fields.iter().skip(i + 1) {
                        v = select(&v, f)?;
                    }
                    return Ok(v);
                }
                if let Some(t) = type_denotation(full) {
                    return Ok(t);
                }
                let root = fields.first().map_or("", |f| &**f);
                Err(EvalError::new(format!("undeclared reference to `{root}`")))
            }
            Node::Select(operand, field) => {
                let v = self.eval(operand)?;
                select(&v, field)
            }
            Node::Has(operand, field) => match self.eval(operand)? {
                Value::Map(m) => Ok(Value::Bool(m.get_str(field).is_some())),
                other => Err(EvalError::new(format!(
                    "no such field `{field}` on `{}`",
                    other.type_name()
                ))),
            },
            Node::Index(operand, index) => {
                let v = self.eval(operand)?;
                let i = self.eval(index)?;
                index_value(&v, &i)
            }
            Node::Call { name, f, args } => {
                let r = match &**args {
                    [] => f(&[]),
                    [a] => {
                        let a = self.eval(a)?;
                        f(std::slice::from_ref(&a))
                    }
                    [a, b] => {
                        let a = self.eval(a)?;
                        let b = self.eval(b)?;
                        f(&[a, b])
                    }
                    [a, b, c] => {
                        let a = self.eval(a)?;
                        let b = self.eval(b)?;
                        let c = self.eval(c)?;
                        f(&[a, b, c])
                    }
                    many => {
                        let mut vs = Vec::with_capacity(many.len());
                        for a in many {
                            vs.push(self.eval(a)?);
                        }
                        f(&vs)
                    }
                };
                let _ = name;
                r
            }
            Node::Matches(subject, re) => match self.eval(subject)? {
                Value::String(s) => Ok(Value::Bool(re.is_match(&s))),
                other => Err(EvalError::no_overload("matches", &[&other])),
            },
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items.iter() {
                    out.push(self.eval(i)?);
                }
                Ok(Value::List(out.into()))
            }
            Node::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries.iter() {
                    let kv = self.eval(k)?;
                    let key = Key::from_value(&kv).ok_or_else(|| {
                        EvalError::new(format!("unsupported key type `{}`", kv.type_name()))
                    })?;
                    out.push((key, self.eval(v)?));
                }
                Ok(Value::Map(Arc::new(MapValue::from_entries(out)?)))
            }
            Node::Not(a) => match self.eval(a)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                other => Err(EvalError::no_overload("!_", &[&other])),
            },
            Node::Neg(a) => match self.eval(a)? {
                Value::Int(i) => i.checked_neg().map(Value::Int).ok_or_else(overflow),
                Value::Double(d) => Ok(Value::Double(-d)),
                Value::Duration(d) => time::check_duration(-d),
                other => Err(EvalError::no_overload("-_", &[&other])),
            },
            Node::And(ab) => self.logic(&ab[0], &ab[1], false),
            Node::Or(ab) => self.logic(&ab[0], &ab[1], true),
            Node::Ternary(c, t, o) => match self.eval(c)? {
                Value::Bool(true) => self.eval(t),
                Value::Bool(false) => self.eval(o),
                other => Err(EvalError::no_overload("_?_:_", &[&other])),
            },
            Node::Binary(op, ab) => {
                let a = self.eval(&ab[0])?;
                let b = self.eval(&ab[1])?;
                binary(*op, &a, &b)
            }
            Node::Comprehension {
                kind,
                range,
                slot,
                slot2,
                filter,
                body,
            } => {
                let range = self.eval(range)?;
                self.comprehension(*kind, range, *slot, *slot2, filter.as_deref(), body)
            }
            Node::Fail(e) => Err(e.clone()),
        }
    }

    /// `&&` (`decider` false) and `||` (`decider` true): the deciding value wins
    /// over an error on either side.
    fn logic(&mut self, l: &Node, r: &Node, decider: bool) -> Result<Value, EvalError> {
        let op = if decider { "_||_" } else { "_&&_" };
        let left = match self.eval(l) {
            Ok(Value::Bool(b)) if b == decider => return Ok(Value::Bool(decider)),
            Ok(Value::Bool(_)) => Ok(()),
            Ok(other) => Err(EvalError::no_overload(op, &[&other])),
            Err(e) => Err(e),
        };
        let right = match self.eval(r) {
            Ok(Value::Bool(b)) if b == decider => return Ok(Value::Bool(decider)),
            Ok(Value::Bool(_)) => Ok(()),
            Ok(other) => Err(EvalError::no_overload(op, &[&other])),
            Err(e) => Err(e),
        };
        left?;
        right?;
        Ok(Value::Bool(!decider))
    }

    fn set(&mut self, slot: usize, v: Value) {
        if let Some(s) = self.locals.get_mut(slot) {
            *s = v;
        }
    }

    fn comprehension(
        &mut self,
        kind: MacroKind,
        range: Value,
        slot: usize,
        slot2: Option<usize>,
        filter: Option<&Node>,
        body: &Node,
    ) -> Result<Value, EvalError> {
        if kind == MacroKind::Bind {
            self.set(slot, range);
            return self.eval(body);
        }
        // (first variable, second variable) per element.
        let items: Vec<(Value, Value)> = match &range {
            Value::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::Int(i as i64), v.clone()))
                .collect(),
            Value::Map(m) => m.iter().map(|(k, v)| (k.to_value(), v.clone())).collect(),
            other => {
                return Err(EvalError::new(format!(
                    "cannot iterate over `{}`",
                    other.type_name()
                )));
            }
        };
        let is_list = matches!(range, Value::List(_));
        let bind = |cx: &mut Self, first: &Value, second: &Value| match slot2 {
            Some(s2) => {
                cx.set(slot, first.clone());
                cx.set(s2, second.clone());
            }
            None => cx.set(
                slot,
                if is_list {
                    second.clone()
                } else {
                    first.clone()
                },
            ),
        };
        match kind {
            MacroKind::All | MacroKind::Exists => {
                let decider = kind == MacroKind::Exists;
                let mut err = None;
                for (a, b) in &items {
                    bind(self, a, b);
                    match self.eval(body) {
                        Ok(Value::Bool(v)) if v == decider => return Ok(Value::Bool(decider)),
                        Ok(Value::Bool(_)) => {}
                        Ok(other) => {
                            err.get_or_insert(EvalError::no_overload(
                                if decider { "exists" } else { "all" },
                                &[&other],
                            ));
                        }
                        Err(e) => {
                            err.get_or_insert(e);
                        }
                    }
                }
                match err {
                    Some(e) => Err(e),
                    None => Ok(Value::Bool(!decider)),
                }
            }
            MacroKind::ExistsOne => {
                let mut count = 0usize;
                for (a, b) in &items {
                    bind(self, a, b);
                    match self.eval(body)? {
                        Value::Bool(true) => count += 1,
                        Value::Bool(false) => {}
                        other => return Err(EvalError::no_overload("exists_one", &[&other])),
                    }
                }
                Ok(Value::Bool(count == 1))
            }
            MacroKind::Map | MacroKind::Filter => {
                let mut out = Vec::new();
                for (a, b) in &items {
                    bind(self, a, b);
                    if let Some(f) = filter
                        && !self.truth(f, "map")?
                    {
                        continue;
                    }
                    if kind == MacroKind::Filter {
                        if self.truth(body, "filter")? {
                            out.push(if is_list { b.clone() } else { a.clone() });
                        }
                    } else {
                        out.push(self.eval(body)?);
                    }
                }
                Ok(Value::List(out.into()))
            }
            MacroKind::TransformMap => {
                let mut out = MapValue::new();
                for (a, b) in &items {
                    bind(self, a, b);
                    if let Some(f) = filter
                        && !self.truth(f, "transformMap")?
                    {
                        continue;
                    }
                    let key =
                        Key::from_value(a).ok_or_else(|| EvalError::new("unsupported key type"))?;
                    out.insert(key, self.eval(body)?);
                }
                Ok(Value::Map(Arc::new(out)))
            }
            MacroKind::Bind => self.eval(body),
        }
    }

    fn truth(&mut self, node: &Node, what: &str) -> Result<bool, EvalError> {
        match self.eval(node)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError::no_overload(what, &[&other])),
        }
    }
}

fn index_value(v: &Value, i: &Value) -> Result<Value, EvalError> {
    match v {
        Value::List(items) => {
            let idx: i64 = match i {
                Value::Int(n) => *n,
                Value::Uint(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                Value::Double(d) if d.fract() == 0.0 && d.is_finite() => *d as i64,
                other => {
                    return Err(EvalError::new(format!(
                        "invalid list index of type `{}`",
                        other.type_name()
                    )));
                }
            };
            usize::try_from(idx)
                .ok()
                .and_then(|u| items.get(u))
                .cloned()
                .ok_or_else(|| EvalError::new(format!("index `{idx}` out of range")))
        }
        Value::Map(m) => m.get(i).cloned().ok_or_else(|| match i {
            Value::String(s) => EvalError::new(format!("no such key `{s}`")),
            other => EvalError::new(format!("no such key `{}`", other.display())),
        }),
        other => Err(EvalError::no_overload("_[_]", &[other, i])),
    }
}

fn cmp_result(op: BinaryOp, a: &Value, b: &Value) -> Result<Value, EvalError> {
    // The operator's name is only formatted for the error.
    let ord = try_cel_cmp(a, b).ok_or_else(|| no_overload(op.symbol(), a, b))?;
    let r = match ord {
        None => false,
        Some(o) => match op {
            BinaryOp::Lt => o == Ordering::Less,
            BinaryOp::Le => o != Ordering::Greater,
            BinaryOp::Gt => o == Ordering::Greater,
            _ => o != Ordering::Less,
        },
    };
    Ok(Value::Bool(r))
}

pub(crate) fn binary(op: BinaryOp, a: &Value, b: &Value) -> Result<Value, EvalError> {
    use Value as V;
    let sym = op.symbol();
    match op {
        BinaryOp::Eq => Ok(V::Bool(cel_eq(a, b))),
        BinaryOp::Ne => Ok(V::Bool(!cel_eq(a, b))),
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => cmp_result(op, a, b),
        BinaryOp::In => match b {
            V::List(items) => Ok(V::Bool(items.iter().any(|x| cel_eq(a, x)))),
            V::Map(m) => Ok(V::Bool(m.get(a).is_some())),
            _ => Err(no_overload(sym, a, b)),
        },
        BinaryOp::Add => match (a, b) {
            (V::Int(x), V::Int(y)) => x.checked_add(*y).map(V::Int).ok_or_else(overflow),
            (V::Uint(x), V::Uint(y)) => x.checked_add(*y).map(V::Uint).ok_or_else(overflow),
            (V::Double(x), V::Double(y)) => Ok(V::Double(x + y)),
            (V::String(x), V::String(y)) => {
                let mut s = String::with_capacity(x.len() + y.len());
                s.push_str(x);
                s.push_str(y);
                Ok(V::String(Arc::from(s)))
            }
            (V::Bytes(x), V::Bytes(y)) => Ok(V::Bytes(x.iter().chain(y.iter()).copied().collect())),
            (V::List(x), V::List(y)) => Ok(V::List(x.iter().chain(y.iter()).cloned().collect())),
            (V::Timestamp(t), V::Duration(d)) | (V::Duration(d), V::Timestamp(t)) => t
                .checked_add_signed(*d)
                .ok_or_else(|| EvalError::new("timestamp out of range"))
                .and_then(time::check_timestamp),
            (V::Duration(x), V::Duration(y)) => {
                time::duration_from_nanos(time::duration_nanos(x) + time::duration_nanos(y))
            }
            _ => Err(no_overload(sym, a, b)),
        },
        BinaryOp::Sub => match (a, b) {
            (V::Int(x), V::Int(y)) => x.checked_sub(*y).map(V::Int).ok_or_else(overflow),
            (V::Uint(x), V::Uint(y)) => x.checked_sub(*y).map(V::Uint).ok_or_else(overflow),
            (V::Double(x), V::Double(y)) => Ok(V::Double(x - y)),
            (V::Timestamp(t), V::Duration(d)) => t
                .checked_sub_signed(*d)
                .ok_or_else(|| EvalError::new("timestamp out of range"))
                .and_then(time::check_timestamp),
            (V::Timestamp(x), V::Timestamp(y)) => {
                let n = i128::from(x.timestamp()) * 1_000_000_000
                    + i128::from(x.timestamp_subsec_nanos())
                    - i128::from(y.timestamp()) * 1_000_000_000
                    - i128::from(y.timestamp_subsec_nanos());
                time::duration_from_nanos(n)
            }
            (V::Duration(x), V::Duration(y)) => {
                time::duration_from_nanos(time::duration_nanos(x) - time::duration_nanos(y))
            }
            _ => Err(no_overload(sym, a, b)),
        },
        BinaryOp::Mul => match (a, b) {
            (V::Int(x), V::Int(y)) => x.checked_mul(*y).map(V::Int).ok_or_else(overflow),
            (V::Uint(x), V::Uint(y)) => x.checked_mul(*y).map(V::Uint).ok_or_else(overflow),
            (V::Double(x), V::Double(y)) => Ok(V::Double(x * y)),
            _ => Err(no_overload(sym, a, b)),
        },
        BinaryOp::Div => match (a, b) {
            (V::Int(_), V::Int(0)) | (V::Uint(_), V::Uint(0)) => {
                Err(EvalError::new("division by zero"))
            }
            (V::Int(x), V::Int(y)) => x.checked_div(*y).map(V::Int).ok_or_else(overflow),
            (V::Uint(x), V::Uint(y)) => Ok(V::Uint(x / y)),
            (V::Double(x), V::Double(y)) => Ok(V::Double(x / y)),
            _ => Err(no_overload(sym, a, b)),
        },
        BinaryOp::Rem => match (a, b) {
            (V::Int(_), V::Int(0)) | (V::Uint(_), V::Uint(0)) => {
                Err(EvalError::new("modulus by zero"))
            }
            (V::Int(x), V::Int(y)) => x.checked_rem(*y).map(V::Int).ok_or_else(overflow),
            (V::Uint(x), V::Uint(y)) => Ok(V::Uint(x % y)),
            _ => Err(no_overload(sym, a, b)),
        },
        BinaryOp::And | BinaryOp::Or => Err(no_overload(sym, a, b)),
    }
}
