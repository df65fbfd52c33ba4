//! Every check that runs before rules run. See docs/errors/ for each code.

use crate::ast::File;
use crate::diagnostic::Diagnostic;

/// One source file to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: String,
    pub text: String,
}

/// The files as parsed (same order as the sources) and every diagnostic, with the
/// index of the source it belongs to.
#[derive(Debug, Clone, Default)]
pub struct CheckResult {
    pub files: Vec<File>,
    pub diagnostics: Vec<(usize, Diagnostic)>,
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Parses and checks the files together: names are shared across files.
pub fn check(sources: &[Source]) -> CheckResult {
    let mut result = CheckResult::default();
    for (i, s) in sources.iter().enumerate() {
        let parsed = crate::parse::parse_file(&s.text);
        result.files.push(parsed.file);
        result
            .diagnostics
            .extend(parsed.diagnostics.into_iter().map(|d| (i, d)));
    }
    result
}

/// The candidate closest to `word` by edit distance, when close enough to suggest.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}
