//! CEL, the Common Expression Language: parsing (rule `expr` of `cel.pest`), the
//! expression tree with spans, compilation to a [`Program`], and evaluation.
//!
//! - [`parse`] / [`build`]: source to [`Expr`]; macros (`has`, `all`, `exists`,
//!   `exists_one`, `map`, `filter` and the two-variable forms) are expanded here.
//! - [`Program::compile`]: resolves functions once, precompiles constant regexes and
//!   folds constants; [`Program::eval`] runs against an [`Activation`].
//! - [`Value`]: the runtime values, cheap to clone.
//! - [`Functions`]: the function registry, [`Functions::standard`] is CEL's library.
//! - [`conformance`]: runs google/cel-spec test vectors.

pub mod conformance;
mod eval;
mod ext;
mod functions;
mod parse;
mod time;
mod value;

use crate::span::Span;

pub use eval::{Activation, Program, SharedNames};
pub use functions::{Function, Functions};
pub use parse::{MAX_DEPTH, build, parse};
pub use value::{EvalError, Key, MapValue, Value};

/// A parsed CEL expression with its span in the enclosing source.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `null`, `true`, `1`, `1u`, `1.5`, `'s'`, `b'x'`.
    Literal(Value),
    /// A name; a leading dot (`.y`, resolved from the root scope) is kept in the name.
    Ident(String),
    /// `operand.field`; `test_only` for `has(operand.field)`.
    Select {
        operand: Box<Expr>,
        field: String,
        test_only: bool,
    },
    /// `operand[index]`.
    Index {
        operand: Box<Expr>,
        index: Box<Expr>,
    },
    /// `function(args)` or `target.function(args)`.
    Call {
        target: Option<Box<Expr>>,
        function: String,
        args: Vec<Expr>,
    },
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Ternary {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// An expanded macro over `range`: `range.all(var, body)`,
    /// `range.map(var, filter, body)`, `range.all(var, var2, body)`, ...
    /// With two variables, `var` is the index (lists) or key (maps) and `var2` the value.
    Comprehension {
        kind: MacroKind,
        range: Box<Expr>,
        var: String,
        var2: Option<String>,
        filter: Option<Box<Expr>>,
        body: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::In => "in",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }
}

/// The macros that expand to comprehensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacroKind {
    /// `all`: true when `body` holds for every element.
    All,
    /// `exists`: true when `body` holds for some element.
    Exists,
    /// `exists_one` / `existsOne`: true when `body` holds for exactly one element.
    ExistsOne,
    /// `map` / `transformList`: a list of `body` (for elements passing `filter`).
    Map,
    /// `filter`: the elements for which `body` holds.
    Filter,
    /// `transformMap`: a map from each key to `body` (for entries passing `filter`).
    TransformMap,
    /// `cel.bind(var, range, body)`: `body` with `var` bound to `range`.
    Bind,
}

/// A free reference: a dotted path into the activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub path: Vec<String>,
    pub span: Span,
}

impl Expr {
    pub(crate) fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }

    /// Calls `f` on this expression and every sub-expression, parents first.
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Literal(_) | ExprKind::Ident(_) => {}
            ExprKind::Select { operand, .. } => operand.walk(f),
            ExprKind::Index { operand, index } => {
                operand.walk(f);
                index.walk(f);
            }
            ExprKind::Call { target, args, .. } => {
                if let Some(t) = target {
                    t.walk(f);
                }
                for a in args {
                    a.walk(f);
                }
            }
            ExprKind::List(items) => items.iter().for_each(|e| e.walk(f)),
            ExprKind::Map(entries) => {
                for (k, v) in entries {
                    k.walk(f);
                    v.walk(f);
                }
            }
            ExprKind::Unary { operand, .. } => operand.walk(f),
            ExprKind::Binary { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
            ExprKind::Ternary {
                cond,
                then,
                otherwise,
            } => {
                cond.walk(f);
                then.walk(f);
                otherwise.walk(f);
            }
            ExprKind::Comprehension {
                range,
                filter,
                body,
                ..
            } => {
                range.walk(f);
                if let Some(p) = filter {
                    p.walk(f);
                }
                body.walk(f);
            }
        }
    }

    /// Free references: dotted paths from identifiers not bound by a macro, e.g.
    /// `event.data.issue.key` gives `["event","data","issue","key"]`; a constant
    /// string index `event.data["x"]` adds a segment; the path stops at a
    /// non-constant index or a call. `has(event.data.x)` gives `["event","data","x"]`.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        let mut bound = Vec::new();
        collect_refs(self, &mut bound, &mut out);
        out
    }

    /// The dotted path this expression denotes, if it is one.
    fn path(&self, bound: &[String]) -> Option<Vec<String>> {
        match &self.kind {
            ExprKind::Ident(name) => {
                let name = name.strip_prefix('.').unwrap_or(name);
                if !self.is_root_ident() && bound.iter().any(|b| b == name) {
                    return None;
                }
                Some(vec![name.to_string()])
            }
            ExprKind::Select { operand, field, .. } => {
                let mut p = operand.path(bound)?;
                p.push(field.clone());
                Some(p)
            }
            ExprKind::Index { operand, index } => match &index.kind {
                ExprKind::Literal(Value::String(s)) => {
                    let mut p = operand.path(bound)?;
                    p.push(s.to_string());
                    Some(p)
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn is_root_ident(&self) -> bool {
        matches!(&self.kind, ExprKind::Ident(n) if n.starts_with('.'))
    }
}

fn collect_refs(e: &Expr, bound: &mut Vec<String>, out: &mut Vec<Reference>) {
    if let Some(path) = e.path(bound) {
        out.push(Reference { path, span: e.span });
        return;
    }
    match &e.kind {
        ExprKind::Literal(_) | ExprKind::Ident(_) => {}
        ExprKind::Select { operand, .. } => collect_refs(operand, bound, out),
        ExprKind::Index { operand, index } => {
            collect_refs(operand, bound, out);
            collect_refs(index, bound, out);
        }
        ExprKind::Call { target, args, .. } => {
            if let Some(t) = target {
                collect_refs(t, bound, out);
            }
            for a in args {
                collect_refs(a, bound, out);
            }
        }
        ExprKind::List(items) => items.iter().for_each(|i| collect_refs(i, bound, out)),
        ExprKind::Map(entries) => {
            for (k, v) in entries {
                collect_refs(k, bound, out);
                collect_refs(v, bound, out);
            }
        }
        ExprKind::Unary { operand, .. } => collect_refs(operand, bound, out),
        ExprKind::Binary { lhs, rhs, .. } => {
            collect_refs(lhs, bound, out);
            collect_refs(rhs, bound, out);
        }
        ExprKind::Ternary {
            cond,
            then,
            otherwise,
        } => {
            collect_refs(cond, bound, out);
            collect_refs(then, bound, out);
            collect_refs(otherwise, bound, out);
        }
        ExprKind::Comprehension {
            range,
            var,
            var2,
            filter,
            body,
            ..
        } => {
            collect_refs(range, bound, out);
            let before = bound.len();
            bound.push(var.clone());
            if let Some(v2) = var2 {
                bound.push(v2.clone());
            }
            if let Some(p) = filter {
                collect_refs(p, bound, out);
            }
            collect_refs(body, bound, out);
            bound.truncate(before);
        }
    }
}

#[cfg(test)]
mod tests;
