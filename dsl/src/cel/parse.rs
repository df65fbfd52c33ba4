//! From pest pairs to [`Expr`]: literals decoded, macros expanded, depth bounded.

use std::sync::Arc;

use pest::Parser as _;
use pest::iterators::Pair;

use super::{BinaryOp, Expr, ExprKind, MacroKind, UnaryOp, Value};
use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::parser::{Rule, StewardParser};
use crate::span::Span;

/// The deepest expression tree (and bracket nesting) accepted. Deeper input is
/// rejected with a diagnostic so that nothing recurses without bound.
pub const MAX_DEPTH: usize = 100;

/// Parses a lone CEL expression.
pub fn parse(src: &str) -> Result<Expr, Vec<Diagnostic>> {
    if let Some(at) = too_deep(src) {
        return Err(vec![
            Diagnostic::new(
                Code::ExprSyntax,
                Span::new(at, at + 1),
                format!("expression nested more than {MAX_DEPTH} levels deep"),
            )
            .with_label("too deep")
            .with_help("split the expression or flatten it"),
        ]);
    }
    let mut pairs = StewardParser::parse(Rule::cel_program, src).map_err(|e| vec![syntax(&e)])?;
    let program = pairs.next().ok_or_else(|| vec![empty(src)])?;
    let expr = program
        .into_inner()
        .find(|p| p.as_rule() == Rule::expr)
        .ok_or_else(|| vec![empty(src)])?;
    build(expr)
}

/// Builds an expression from an `expr` pair inside a larger parse; spans stay absolute.
pub fn build(pair: Pair<'_, Rule>) -> Result<Expr, Vec<Diagnostic>> {
    let mut b = Builder { diags: Vec::new() };
    let e = b.expr(pair, 0);
    match e {
        Some(e) if b.diags.is_empty() => Ok(e),
        _ => {
            if b.diags.is_empty() {
                b.diags.push(Diagnostic::new(
                    Code::ExprSyntax,
                    Span::default(),
                    "invalid expression",
                ));
            }
            Err(b.diags)
        }
    }
}

fn empty(src: &str) -> Diagnostic {
    Diagnostic::new(
        Code::ExprSyntax,
        Span::new(0, src.len()),
        "empty expression",
    )
}

/// Where bracket or ternary nesting first exceeds [`MAX_DEPTH`], skipping strings
/// and comments. Checked before parsing because the parser itself recurses.
fn too_deep(src: &str) -> Option<usize> {
    let b = src.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' | b'[' | b'{' | b'?' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'\'' | b'"') => {
                let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q
                        && (!triple || (b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q)))
                    {
                        i += if triple { 2 } else { 0 };
                        break;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn syntax(e: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, t)) => (s, t),
    };
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut words: Vec<&str> = positives.iter().map(|r| rule_word(*r)).collect();
            words.sort_unstable();
            words.dedup();
            words.join(", ")
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let mut d = Diagnostic::new(
        Code::ExprSyntax,
        Span::new(start, end.max(start)),
        "invalid expression",
    )
    .with_label("unexpected input here");
    if !expected.is_empty() {
        d = d.with_help(format!("expected {expected}"));
    }
    d
}

/// Rule names in words users know.
fn rule_word(r: Rule) -> &'static str {
    match r {
        Rule::EOI => "end of expression",
        Rule::cel_rel_op | Rule::cel_add_op | Rule::cel_mul_op | Rule::cel_kw_in => "an operator",
        Rule::cel_question => "`?`",
        Rule::cel_member_call | Rule::cel_select => "`.`",
        Rule::cel_index => "`[`",
        Rule::cel_ident | Rule::cel_ident_expr | Rule::cel_call => "a name",
        Rule::cel_field => "a field name",
        Rule::cel_args => "arguments",
        Rule::cel_entry => "a map entry",
        Rule::cel_string => "a string",
        Rule::cel_int | Rule::cel_uint | Rule::cel_double => "a number",
        _ => "an expression",
    }
}

struct Builder {
    diags: Vec<Diagnostic>,
}

fn span_of(p: &Pair<'_, Rule>) -> Span {
    Span::from_pest(p.as_span())
}

impl Builder {
    fn error(&mut self, code: Code, span: Span, msg: impl Into<String>, label: &str) {
        self.diags
            .push(Diagnostic::new(code, span, msg).with_label(label));
    }

    fn check_depth(&mut self, depth: usize, span: Span) -> Option<()> {
        if depth > MAX_DEPTH {
            // One diagnostic is enough.
            if !self
                .diags
                .iter()
                .any(|d| d.message.starts_with("expression nested"))
            {
                self.diags.push(
                    Diagnostic::new(
                        Code::ExprSyntax,
                        span,
                        format!("expression nested more than {MAX_DEPTH} levels deep"),
                    )
                    .with_label("too deep")
                    .with_help("split the expression or flatten it"),
                );
            }
            return None;
        }
        Some(())
    }

    /// Builds `pair`, first skipping wrappers with a single child without
    /// recursing: `((1))` costs no stack per level.
    fn expr(&mut self, mut pair: Pair<'_, Rule>, depth: usize) -> Option<Expr> {
        while matches!(
            pair.as_rule(),
            Rule::expr
                | Rule::cel_or
                | Rule::cel_and
                | Rule::cel_rel
                | Rule::cel_add
                | Rule::cel_mul
                | Rule::cel_unary
                | Rule::cel_member
                | Rule::cel_paren
        ) {
            let mut inner = pair.clone().into_inner();
            match (inner.next(), inner.next()) {
                (Some(only), None) => pair = only,
                _ => break,
            }
        }
        self.node(pair, depth)
    }

    fn node(&mut self, pair: Pair<'_, Rule>, depth: usize) -> Option<Expr> {
        let span = span_of(&pair);
        self.check_depth(depth, span)?;
        match pair.as_rule() {
            Rule::expr => {
                let mut inner = pair.into_inner();
                let first = inner.next()?;
                if inner.next().is_none() {
                    return self.expr(first, depth);
                }
                let cond = self.expr(first, depth + 1);
                let then = self.expr(inner.next()?, depth + 1);
                let otherwise = self.expr(inner.next()?, depth + 1);
                Some(Expr::new(
                    ExprKind::Ternary {
                        cond: Box::new(cond?),
                        then: Box::new(then?),
                        otherwise: Box::new(otherwise?),
                    },
                    span,
                ))
            }
            Rule::cel_or | Rule::cel_and => {
                let op = if pair.as_rule() == Rule::cel_or {
                    BinaryOp::Or
                } else {
                    BinaryOp::And
                };
                let operands: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
                let n = operands.len().saturating_sub(1);
                self.check_depth(depth + n, span)?;
                let mut acc: Option<Expr> = None;
                let mut ok = true;
                for (i, p) in operands.into_iter().enumerate() {
                    let e = self.expr(p, depth + n - i.saturating_sub(1).min(n));
                    match (acc.take(), e) {
                        (None, Some(e)) if ok => acc = Some(e),
                        (Some(l), Some(r)) if ok => {
                            let s = l.span.to(r.span);
                            acc = Some(binary(op, l, r, s));
                        }
                        _ => ok = false,
                    }
                }
                if ok { acc } else { None }
            }
            Rule::cel_rel | Rule::cel_add | Rule::cel_mul => {
                let items: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
                let n = items.len();
                if n == 1 {
                    return self.expr(items.into_iter().next()?, depth);
                }
                self.check_depth(depth + n / 2, span)?;
                let mut it = items.into_iter();
                let first = it.next()?;
                let mut acc = self.expr(first, depth + n / 2);
                let mut level = n / 2;
                while let Some(op_pair) = it.next() {
                    let rhs_pair = it.next()?;
                    let op = match op_pair.as_str() {
                        "<" => BinaryOp::Lt,
                        "<=" => BinaryOp::Le,
                        ">" => BinaryOp::Gt,
                        ">=" => BinaryOp::Ge,
                        "==" => BinaryOp::Eq,
                        "!=" => BinaryOp::Ne,
                        "+" => BinaryOp::Add,
                        "-" => BinaryOp::Sub,
                        "*" => BinaryOp::Mul,
                        "/" => BinaryOp::Div,
                        "%" => BinaryOp::Rem,
                        _ => BinaryOp::In,
                    };
                    let rhs = self.expr(rhs_pair, depth + level);
                    level = level.saturating_sub(1);
                    acc = match (acc, rhs) {
                        (Some(l), Some(r)) => {
                            let s = l.span.to(r.span);
                            Some(binary(op, l, r, s))
                        }
                        _ => None,
                    };
                }
                acc
            }
            Rule::cel_unary => {
                let mut ops: Vec<(UnaryOp, Span)> = Vec::new();
                let mut member = None;
                for p in pair.into_inner() {
                    if p.as_rule() == Rule::cel_unary_op {
                        let op = if p.as_str() == "!" {
                            UnaryOp::Not
                        } else {
                            UnaryOp::Neg
                        };
                        ops.push((op, span_of(&p)));
                    } else {
                        member = Some(p);
                    }
                }
                let member = member?;
                self.check_depth(depth + ops.len(), span)?;
                // `-9223372036854775808` is a literal, not the negation of one.
                let mut e = if ops.last().map(|o| o.0) == Some(UnaryOp::Neg)
                    && let Some(lit) = lone_int(&member)
                {
                    let (_, neg_span) = ops.pop()?;
                    let s = neg_span.to(span_of(&lit));
                    self.int_literal(&lit, true, s)?
                } else {
                    self.expr(member, depth + ops.len())?
                };
                while let Some((op, s)) = ops.pop() {
                    let sp = s.to(e.span);
                    e = Expr::new(
                        ExprKind::Unary {
                            op,
                            operand: Box::new(e),
                        },
                        sp,
                    );
                }
                Some(e)
            }
            Rule::cel_member => self.member(pair, depth),
            Rule::cel_paren => {
                let inner = pair.into_inner().next()?;
                self.expr(inner, depth)
            }
            Rule::cel_ident_expr => {
                let name: String = pair.as_str().split_whitespace().collect();
                Some(Expr::new(ExprKind::Ident(name), span))
            }
            Rule::cel_call => {
                let mut name = String::new();
                let mut args_pair = None;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::cel_leading_dot => name.push('.'),
                        Rule::cel_ident => name.push_str(p.as_str()),
                        _ => args_pair = Some(p),
                    }
                }
                let args = self.args(args_pair?, depth)?;
                if name == "has" {
                    return self.has(args, span);
                }
                Some(Expr::new(
                    ExprKind::Call {
                        target: None,
                        function: name,
                        args,
                    },
                    span,
                ))
            }
            Rule::cel_list => {
                let mut items = Vec::new();
                let mut ok = true;
                for p in pair.into_inner() {
                    match self.expr(p, depth + 1) {
                        Some(e) => items.push(e),
                        None => ok = false,
                    }
                }
                ok.then(|| Expr::new(ExprKind::List(items), span))
            }
            Rule::cel_map => {
                let mut entries = Vec::new();
                let mut ok = true;
                for entry in pair.into_inner() {
                    let mut kv = entry.into_inner();
                    let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                        ok = false;
                        continue;
                    };
                    match (self.expr(k, depth + 1), self.expr(v, depth + 1)) {
                        (Some(k), Some(v)) => entries.push((k, v)),
                        _ => ok = false,
                    }
                }
                ok.then(|| Expr::new(ExprKind::Map(entries), span))
            }
            Rule::cel_int => self.int_literal(&pair, false, span),
            Rule::cel_uint => {
                let text = pair.as_str();
                let digits = &text[..text.len() - 1];
                let v = match digits
                    .strip_prefix("0x")
                    .or_else(|| digits.strip_prefix("0X"))
                {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => digits.parse::<u64>(),
                };
                match v {
                    Ok(v) => Some(Expr::new(ExprKind::Literal(Value::Uint(v)), span)),
                    Err(_) => {
                        self.error(
                            Code::InvalidLiteral,
                            span,
                            format!("unsigned integer `{text}` out of range"),
                            "too large",
                        );
                        None
                    }
                }
            }
            Rule::cel_double => match pair.as_str().parse::<f64>() {
                Ok(d) => Some(Expr::new(ExprKind::Literal(Value::Double(d)), span)),
                Err(_) => {
                    self.error(
                        Code::InvalidLiteral,
                        span,
                        format!("invalid number `{}`", pair.as_str()),
                        "not a number",
                    );
                    None
                }
            },
            Rule::cel_bool => Some(Expr::new(
                ExprKind::Literal(Value::Bool(pair.as_str() == "true")),
                span,
            )),
            Rule::cel_null => Some(Expr::new(ExprKind::Literal(Value::Null), span)),
            Rule::cel_string => match decode_string(pair.as_str()) {
                Ok(v) => Some(Expr::new(ExprKind::Literal(v), span)),
                Err((offset, msg)) => {
                    let at = span.start + offset;
                    self.diags.push(
                        Diagnostic::new(Code::InvalidLiteral, Span::new(at, at + 1), msg)
                            .with_label("bad escape")
                            .with_help(
                                "escapes are \\n \\t \\\\ \\' \\\" \\xHH \\uHHHH \\UHHHHHHHH and \\ooo; \
                                 prefix the string with `r` to keep backslashes",
                            ),
                    );
                    None
                }
            },
            _ => {
                // Silent wrappers: descend into the single child.
                let mut inner = pair.into_inner();
                match (inner.next(), inner.next()) {
                    (Some(only), None) => self.expr(only, depth),
                    _ => {
                        self.error(
                            Code::ExprSyntax,
                            span,
                            "invalid expression",
                            "not understood",
                        );
                        None
                    }
                }
            }
        }
    }

    fn int_literal(&mut self, pair: &Pair<'_, Rule>, negative: bool, span: Span) -> Option<Expr> {
        let text = pair.as_str();
        let magnitude = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse::<u64>().ok(),
        };
        let value = magnitude.and_then(|m| {
            if negative {
                if m == 1u64 << 63 {
                    Some(i64::MIN)
                } else {
                    i64::try_from(m).ok().map(|v| -v)
                }
            } else {
                i64::try_from(m).ok()
            }
        });
        match value {
            Some(v) => Some(Expr::new(ExprKind::Literal(Value::Int(v)), span)),
            None => {
                self.diags.push(
                    Diagnostic::new(
                        Code::InvalidLiteral,
                        span,
                        format!("integer `{}{text}` out of range", if negative { "-" } else { "" }),
                    )
                    .with_label("does not fit in 64 bits")
                    .with_help("integers range from -9223372036854775808 to 9223372036854775807; add `u` for unsigned"),
                );
                None
            }
        }
    }

    fn args(&mut self, pair: Pair<'_, Rule>, depth: usize) -> Option<Vec<Expr>> {
        let mut args = Vec::new();
        let mut ok = true;
        for p in pair.into_inner() {
            match self.expr(p, depth + 1) {
                Some(e) => args.push(e),
                None => ok = false,
            }
        }
        ok.then_some(args)
    }

    fn has(&mut self, mut args: Vec<Expr>, span: Span) -> Option<Expr> {
        if args.len() == 1
            && let Some(arg) = args.pop()
            && let ExprKind::Select {
                operand,
                field,
                test_only: false,
            } = arg.kind
        {
            return Some(Expr::new(
                ExprKind::Select {
                    operand,
                    field,
                    test_only: true,
                },
                span,
            ));
        }
        self.diags.push(
            Diagnostic::new(Code::ExprSyntax, span, "invalid argument to `has`")
                .with_label("expected a field selection")
                .with_help("write `has(value.field)`"),
        );
        None
    }

    fn member(&mut self, pair: Pair<'_, Rule>, depth: usize) -> Option<Expr> {
        let start = pair.as_span().start();
        let parts: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
        let n = parts.len().saturating_sub(1);
        self.check_depth(depth + n, Span::new(start, start))?;
        let mut it = parts.into_iter();
        let mut e = self.expr(it.next()?, depth + n)?;
        let mut level = n + 1;
        for p in it {
            level -= 1;
            let span = Span::new(start, p.as_span().end());
            match p.as_rule() {
                Rule::cel_select => {
                    let field = field_name(p.into_inner().next()?.as_str());
                    e = Expr::new(
                        ExprKind::Select {
                            operand: Box::new(e),
                            field,
                            test_only: false,
                        },
                        span,
                    );
                }
                Rule::cel_index => {
                    let index = self.expr(p.into_inner().next()?, depth + level + 1)?;
                    e = Expr::new(
                        ExprKind::Index {
                            operand: Box::new(e),
                            index: Box::new(index),
                        },
                        span,
                    );
                }
                _ => {
                    let mut inner = p.into_inner();
                    let function = field_name(inner.next()?.as_str());
                    let args = self.args(inner.next()?, depth + level)?;
                    e = self.member_call(e, function, args, span)?;
                }
            }
        }
        Some(e)
    }

    /// `target.function(args)`, expanding macros.
    fn member_call(
        &mut self,
        target: Expr,
        function: String,
        mut args: Vec<Expr>,
        span: Span,
    ) -> Option<Expr> {
        if matches!(&target.kind, ExprKind::Ident(n) if n == "cel")
            && let Some(e) = block_ext(&function, &mut args, span)
        {
            return Some(e);
        }
        let kind = match (function.as_str(), args.len()) {
            ("all", 2 | 3) => MacroKind::All,
            ("exists", 2 | 3) => MacroKind::Exists,
            ("exists_one" | "existsOne", 2 | 3) => MacroKind::ExistsOne,
            ("map", 2 | 3) => MacroKind::Map,
            ("filter", 2) => MacroKind::Filter,
            ("transformList", 3 | 4) => MacroKind::Map,
            ("transformMap", 3 | 4) => MacroKind::TransformMap,
            ("bind", 3) if matches!(&target.kind, ExprKind::Ident(n) if n == "cel") => {
                MacroKind::Bind
            }
            _ => {
                return Some(Expr::new(
                    ExprKind::Call {
                        target: Some(Box::new(target)),
                        function,
                        args,
                    },
                    span,
                ));
            }
        };
        let two_vars = match function.as_str() {
            "transformList" | "transformMap" => true,
            "map" | "filter" | "bind" => false,
            _ => args.len() == 3,
        };
        let mut names = Vec::new();
        let nvars = if two_vars { 2 } else { 1 };
        for a in args.iter().take(nvars) {
            match &a.kind {
                ExprKind::Ident(n) if !n.starts_with('.') => names.push(n.clone()),
                _ => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::ExprSyntax,
                            a.span,
                            format!("invalid variable in `{function}`"),
                        )
                        .with_label("expected a simple name")
                        .with_help(format!("write `list.{function}(x, ...)`")),
                    );
                    return None;
                }
            }
        }
        if two_vars && names.first() == names.get(1) {
            self.diags.push(
                Diagnostic::new(
                    Code::ExprSyntax,
                    span,
                    format!("`{function}` needs two different variable names"),
                )
                .with_label("same name twice"),
            );
            return None;
        }
        let body = args.pop()?;
        let rest: Vec<Expr> = args.drain(nvars..).collect();
        let filter = rest.into_iter().next().map(Box::new);
        let mut names = names.into_iter();
        let var = names.next()?;
        let var2 = names.next();
        if kind == MacroKind::Bind {
            // cel.bind(var, init, body): `filter` holds the init expression.
            let init = filter?;
            return Some(Expr::new(
                ExprKind::Comprehension {
                    kind,
                    range: init,
                    var,
                    var2: None,
                    filter: None,
                    body: Box::new(body),
                },
                span,
            ));
        }
        Some(Expr::new(
            ExprKind::Comprehension {
                kind,
                range: Box::new(target),
                var,
                var2,
                filter,
                body: Box::new(body),
            },
            span,
        ))
    }
}

/// The block extension (`cel.block([e0, e1], r)`, `cel.index(0)`,
/// `cel.iterVar(0, 0)`), written by optimizers: slots become names users cannot
/// write (`@index0`) bound like `cel.bind`.
fn block_ext(function: &str, args: &mut Vec<Expr>, span: Span) -> Option<Expr> {
    let int = |e: &Expr| match e.kind {
        ExprKind::Literal(Value::Int(i)) => Some(i),
        _ => None,
    };
    match (function, args.as_slice()) {
        ("index", [i]) => Some(Expr::new(
            ExprKind::Ident(format!("@index{}", int(i)?)),
            span,
        )),
        ("iterVar", [i, j]) => Some(Expr::new(
            ExprKind::Ident(format!("@it:{}:{}", int(i)?, int(j)?)),
            span,
        )),
        ("block", [list, _]) if matches!(list.kind, ExprKind::List(_)) => {
            let result = args.pop()?;
            let ExprKind::List(slots) = args.pop()?.kind else {
                return None;
            };
            let mut e = result;
            for (i, init) in slots.into_iter().enumerate().rev() {
                e = Expr::new(
                    ExprKind::Comprehension {
                        kind: MacroKind::Bind,
                        range: Box::new(init),
                        var: format!("@index{i}"),
                        var2: None,
                        filter: None,
                        body: Box::new(e),
                    },
                    span,
                );
            }
            Some(e)
        }
        _ => None,
    }
}

/// A field name as written, without quoting backticks.
fn field_name(text: &str) -> String {
    text.strip_prefix('`')
        .and_then(|t| t.strip_suffix('`'))
        .unwrap_or(text)
        .to_string()
}

fn binary(op: BinaryOp, lhs: Expr, rhs: Expr, span: Span) -> Expr {
    Expr::new(
        ExprKind::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        },
        span,
    )
}

/// The `cel_int` pair when `member` is nothing but an integer literal.
fn lone_int<'i>(member: &Pair<'i, Rule>) -> Option<Pair<'i, Rule>> {
    let mut inner = member.clone().into_inner();
    let first = inner.next()?;
    if inner.next().is_some() || first.as_rule() != Rule::cel_int {
        return None;
    }
    Some(first)
}

/// Decodes a string or bytes literal as written (prefix and quotes included).
/// On error returns the byte offset (in `text`) and a message.
pub(crate) fn decode_string(text: &str) -> Result<Value, (usize, String)> {
    let prefix_len = text
        .find(['\'', '"'])
        .ok_or((0, "invalid string literal".to_string()))?;
    let prefix = &text[..prefix_len];
    let raw = prefix.contains(['r', 'R']);
    let bytes = prefix.contains(['b', 'B']);
    let rest = &text[prefix_len..];
    let q = if rest.starts_with("'''") || rest.starts_with("\"\"\"") {
        3
    } else {
        1
    };
    if rest.len() < 2 * q {
        return Err((0, "invalid string literal".to_string()));
    }
    let body = &rest[q..rest.len() - q];
    let body_offset = prefix_len + q;
    if raw {
        return Ok(if bytes {
            Value::Bytes(Arc::from(body.as_bytes()))
        } else {
            Value::String(Arc::from(body))
        });
    }
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    let bad = |i: usize, m: &str| (body_offset + i, m.to_string());
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some((_, e)) = chars.next() else {
            return Err(bad(i, "unfinished escape"));
        };
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '\'' => Some(b'\''),
            '"' => Some(b'"'),
            '`' => Some(b'`'),
            '?' => Some(b'?'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let (digits, radix) = match e {
            'x' | 'X' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='3' => (2, 8),
            _ => return Err(bad(i, &format!("unknown escape `\\{e}`"))),
        };
        let mut code: u32 = if radix == 8 { e as u32 - '0' as u32 } else { 0 };
        for _ in 0..digits {
            let d = chars
                .next()
                .and_then(|(_, d)| d.to_digit(radix))
                .ok_or_else(|| bad(i, "escape with too few digits"))?;
            code = code * radix + d;
        }
        let byte_escape = matches!(e, 'x' | 'X' | '0'..='3');
        if bytes && byte_escape {
            out.push(code as u8);
        } else if bytes && !byte_escape {
            return Err(bad(i, "unicode escapes are not allowed in bytes"));
        } else {
            let ch =
                char::from_u32(code).ok_or_else(|| bad(i, "escape is not a valid code point"))?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
    if bytes {
        Ok(Value::Bytes(Arc::from(out)))
    } else {
        String::from_utf8(out)
            .map(|s| Value::String(Arc::from(s)))
            .map_err(|_| bad(0, "string is not valid text"))
    }
}
