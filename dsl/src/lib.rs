//! The Steward rules language.
//!
//! - `grammar/steward.pest` and `grammar/cel.pest`: the grammar (one pest parser, [`parser`]).
//! - [`ast`]: the syntax tree with spans; [`cel`]: CEL expressions, compiled and evaluated.
//! - [`check`]: every check that runs before rules run; [`diagnostic`] and [`codes`]:
//!   what it reports, with stable codes; [`render`]: diagnostics as text.
//!
//! Pure: no files, no clock, no async.

pub mod ast;
pub mod cel;
pub mod codes;
pub mod diagnostic;
pub mod parser;
pub mod span;

pub use codes::Code;
pub use diagnostic::Diagnostic;
pub use span::Span;
