//! CEL, the Common Expression Language: parsing (rule `expr` of `cel.pest`), the
//! expression tree with spans, compilation to a [`Program`], and evaluation.
//!
//! PLACEHOLDER — replaced by the full implementation.

use crate::span::Span;

/// A parsed CEL expression with its span in the enclosing source.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Ident(String),
}
