#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Connector-call checking never panics: every fixture, whole and cut short at many
//! places (broken trees, error expressions, half-written calls), checked against the
//! fixture catalogue.

use std::fs;
use std::path::Path;

use steward_dsl::Source;
use steward_dsl::connectors::{ConnectorCatalogue, Origin, check_with_connectors};

fn catalogue() -> ConnectorCatalogue {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/check/connectors.catalogue.json");
    ConnectorCatalogue::from_json(
        &fs::read_to_string(path).unwrap(),
        Origin::Directory("dist".into()),
    )
    .unwrap()
}

#[test]
fn cut_fixtures_check_without_panicking() {
    let catalogue = catalogue();
    let mut checked = 0;
    for dir in ["check", "ok"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(dir);
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "stw") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap();
            let cuts = (0..text.len())
                .step_by(23)
                .chain([text.len()])
                .filter(|&i| text.is_char_boundary(i));
            for cut in cuts {
                let source = Source {
                    path: "cut.stw".into(),
                    text: text[..cut].to_owned(),
                };
                let result = check_with_connectors(&[source], &catalogue);
                // Ordered by position, as `check` orders them.
                let starts: Vec<usize> = result
                    .diagnostics
                    .iter()
                    .map(|(_, d)| d.span.start)
                    .collect();
                assert!(
                    starts.windows(2).all(|w| w[0] <= w[1]),
                    "{}",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn a_catalogue_that_is_not_one_is_refused_with_the_reason() {
    let origin = || Origin::Config("steward.toml".into());
    let err = |text: &str| ConnectorCatalogue::from_json(text, origin()).unwrap_err();
    assert!(err("[").starts_with("not JSON"));
    assert_eq!(err("[]"), "the catalogue is not a JSON object");
    assert_eq!(
        err(r#"{"jira": {}}"#),
        "`jira`: no `operations` list and no `error`"
    );
    assert_eq!(
        err(r#"{"jira": {"operations": [{"name": "x"}]}}"#),
        "`jira`: operation `x` has no `args_schema`"
    );
    assert!(
        err(r#"{"jira": {"operations": [{"name": "x", "args_schema": "{"}]}}"#)
            .starts_with("`jira`: the argument schema of `x` is not JSON")
    );
}
