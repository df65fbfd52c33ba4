//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use steward_dsl::Source;
use steward_engine::ruleset::Ruleset;

/// `text` as one rules file, checked (its diagnostics fail the test) and compiled.
pub fn rules(text: &str) -> Arc<Ruleset> {
    let sources = [Source {
        path: "test.stw".into(),
        text: text.into(),
    }];
    let checked = steward_dsl::check(&sources);
    assert!(
        checked.is_ok(),
        "{}",
        checked
            .diagnostics
            .iter()
            .map(|(_, d)| steward_dsl::render(d, "test.stw", text))
            .collect::<String>()
    );
    Arc::new(Ruleset::compile(&checked.files, &[text]).unwrap())
}

/// An RFC 3339 time.
pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}
