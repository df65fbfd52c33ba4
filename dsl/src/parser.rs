//! The one pest parser for Steward files and CEL expressions: `grammar/cel.pest`
//! defines the expression rules (entry `expr`, and `cel_program` for a lone
//! expression), `grammar/steward.pest` the rest (entry `file`).

use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "grammar/cel.pest"]
#[grammar = "grammar/steward.pest"]
pub struct StewardParser;
