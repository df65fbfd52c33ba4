//! The Steward rules language.
//!
//! - `grammar/steward.pest` and `grammar/cel.pest`: the grammar (one pest parser, [`parser`]).
//! - [`ast`]: the syntax tree with spans; [`cel`]: CEL expressions, compiled and evaluated.
//! - [`mod@parse`]: source to [`ast::File`], all syntax errors of a file.
//! - [`mod@check`]: every check that runs before rules run; [`diagnostic`] and [`codes`]:
//!   what it reports, with stable codes; [`mod@render`]: diagnostics as text.
//! - [`connectors`]: connector calls checked against the connectors' descriptions (a
//!   [`connectors::ConnectorCatalogue`], plain data built by the caller).
//!
//! Pure: no files, no clock, no async.

pub mod ast;
pub mod cel;
pub mod check;
pub mod codes;
pub mod connectors;
pub mod cron;
pub mod diagnostic;
pub mod parse;
pub mod parser;
pub mod render;
pub mod span;
pub mod stdlib;

pub use check::{CheckResult, Source, check};
pub use codes::Code;
pub use diagnostic::Diagnostic;
pub use parse::parse;
pub use render::render;
pub use span::Span;

/// The documentation page of a code (docs/errors/EXXXX.md), for `steward explain`.
pub fn explain(code: Code) -> &'static str {
    code.explain()
}
