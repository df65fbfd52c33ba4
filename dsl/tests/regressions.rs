//! Bugs fixed, kept fixed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use steward_dsl::{Source, check};

/// The pre-parse nesting guard used to count a bracket after a `${...}` template on
/// the same line as still open, so many one-line rules were "nested too deep".
#[test]
fn templates_do_not_leak_nesting_depth() {
    let text: String = (0..200)
        .map(|i| format!("rule r{i} {{ on \"x\" do {{ violation \"x ${{event.id}} {{not a bracket}}\" }} }}\n"))
        .collect();
    let result = check(&[Source {
        path: "many.stw".into(),
        text,
    }]);
    assert!(result.is_ok(), "{:?}", result.diagnostics.first());
}

#[test]
fn deep_nesting_inside_templates_is_still_refused() {
    let deep = format!(
        "rule r {{ on \"x\" do {{ violation \"${{{}1{}}}\" }} }}",
        "(".repeat(200),
        ")".repeat(200)
    );
    let result = check(&[Source {
        path: "deep.stw".into(),
        text: deep,
    }]);
    assert!(
        result
            .diagnostics
            .iter()
            .any(|(_, d)| d.message == "nesting too deep"),
        "{:?}",
        result.diagnostics
    );
}
