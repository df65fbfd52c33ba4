//! Diagnostics as text, rustc style:
//!
//! ```text
//! examples/x.stw:12:28: error[E0201]: unknown state `aproved`
//!    |
//! 12 |     on approval granted -> aproved
//!    |                            ^^^^^^^ no state of workflow `change` has this name
//!    |
//!    = help: did you mean `approved`?
//! ```
//!
//! The first line is a contract (`path:line:col: error[CODE]: message`); columns are
//! 1-based and count characters. Spans past the end or inside a character are clamped.

use std::fmt::Write;

use crate::diagnostic::Diagnostic;
use crate::span::line_col;

/// Renders one diagnostic of the file at `path` with text `source`.
pub fn render(diag: &Diagnostic, path: &str, source: &str) -> String {
    let start = clamp(source, diag.span.start);
    let end = clamp(source, diag.span.end.max(diag.span.start)).max(start);
    let (line, col) = line_col(source, start);

    let line_start = source
        .get(..start)
        .and_then(|s| s.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line_end = source
        .get(start..)
        .and_then(|s| s.find('\n'))
        .map_or(source.len(), |i| start + i);
    let text = source.get(line_start..line_end).unwrap_or("");
    let text = text.strip_suffix('\r').unwrap_or(text);

    let before = source.get(line_start..start).unwrap_or("");
    let marked = source.get(start..end.min(line_end)).unwrap_or("");
    let pad: String = before
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let carets = "^".repeat(marked.trim_end_matches('\r').chars().count().max(1));

    let gutter = line.to_string().len();
    let blank = " ".repeat(gutter);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{path}:{line}:{col}: error[{}]: {}",
        diag.code, diag.message
    );
    let _ = writeln!(out, "{blank} |");
    let _ = writeln!(out, "{line} | {text}");
    match &diag.label {
        Some(label) => {
            let _ = writeln!(out, "{blank} | {pad}{carets} {label}");
        }
        None => {
            let _ = writeln!(out, "{blank} | {pad}{carets}");
        }
    }
    if let Some(help) = &diag.help {
        let _ = writeln!(out, "{blank} |");
        let _ = writeln!(out, "{blank} = help: {help}");
    }
    out
}

fn clamp(source: &str, pos: usize) -> usize {
    crate::parse::floor_char_boundary(source, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;
    use crate::span::Span;

    #[test]
    fn renders_the_contract_format() {
        let src = "workflow w key k {\n    on approval granted -> aproved\n}\n";
        let start = src.find("aproved").unwrap_or(0);
        let d = Diagnostic::new(
            Code::UnknownState,
            Span::new(start, start + 7),
            "unknown state `aproved`",
        )
        .with_label("no state of workflow `w` has this name")
        .with_help("did you mean `approved`?");
        let expected = "x.stw:2:28: error[E0201]: unknown state `aproved`
  |
2 |     on approval granted -> aproved
  |                            ^^^^^^^ no state of workflow `w` has this name
  |
  = help: did you mean `approved`?
";
        assert_eq!(render(&d, "x.stw", src), expected);
    }

    #[test]
    fn survives_bad_spans() {
        let src = "é\nß";
        for (s, e) in [(0, 1), (1, 1), (5, 9), (3, 2), (usize::MAX, usize::MAX)] {
            let d = Diagnostic::new(Code::Syntax, Span::new(s, e), "m");
            let _ = render(&d, "p", src);
        }
        let d = Diagnostic::new(Code::Syntax, Span::new(0, 0), "m");
        assert!(render(&d, "p", "").starts_with("p:1:1: error[E0001]: m\n"));
    }
}
