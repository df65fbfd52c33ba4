#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Golden tests for the language: every file in `fixtures/ok` checks clean; every file
//! in `fixtures/check` renders exactly the diagnostics in its `.stderr` file
//! (`BLESS=1 cargo test -p steward-dsl --test golden` rewrites them). A group with a
//! `NAME.catalogue.json` is also checked against those connector descriptions; a code's
//! page with a ```json block checks its examples against that catalogue.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use steward_dsl::connectors::{ConnectorCatalogue, Origin, check_with_connectors};
use steward_dsl::{Code, Source, check, render};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "stw"))
        .collect();
    files.sort();
    files
}

fn display_path(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    let dir = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    format!("tests/fixtures/{dir}/{name}")
}

fn run(paths: &[PathBuf]) -> (steward_dsl::CheckResult, Vec<Source>) {
    run_with(paths, None)
}

/// With a catalogue, connector calls are also checked against it.
fn run_with(
    paths: &[PathBuf],
    catalogue: Option<&ConnectorCatalogue>,
) -> (steward_dsl::CheckResult, Vec<Source>) {
    let sources: Vec<Source> = paths
        .iter()
        .map(|p| Source {
            path: display_path(p),
            text: fs::read_to_string(p).unwrap(),
        })
        .collect();
    let result = match catalogue {
        Some(c) => check_with_connectors(&sources, c),
        None => check(&sources),
    };
    (result, sources)
}

/// `check/NAME.catalogue.json`: the connector descriptions a fixture group is checked
/// against (as `steward check --config` would build them from the components).
fn fixture_catalogue(dir: &Path, name: &str) -> Option<ConnectorCatalogue> {
    let text = fs::read_to_string(dir.join(format!("{name}.catalogue.json"))).ok()?;
    Some(ConnectorCatalogue::from_json(&text, Origin::Config("steward.toml".into())).unwrap())
}

/// A page's ```json block, if any: the catalogue its examples are checked against.
fn page_catalogue(page: &str) -> Option<ConnectorCatalogue> {
    let start = page.find("```json\n")? + "```json\n".len();
    let len = page[start..].find("```").unwrap();
    Some(
        ConnectorCatalogue::from_json(
            &page[start..start + len],
            Origin::Config("steward.toml".into()),
        )
        .unwrap(),
    )
}

fn check_page(source: Source, catalogue: Option<&ConnectorCatalogue>) -> steward_dsl::CheckResult {
    match catalogue {
        Some(c) => check_with_connectors(&[source], c),
        None => check(&[source]),
    }
}

fn rendered(result: &steward_dsl::CheckResult, sources: &[Source], index: usize) -> String {
    result
        .diagnostics
        .iter()
        .filter(|(i, _)| *i == index)
        .map(|(_, d)| render(d, &sources[index].path, &sources[index].text))
        .collect()
}

#[test]
fn ok_fixtures_check_clean() {
    let paths = fixtures("ok");
    assert!(!paths.is_empty());
    // Checked together: names are shared across files.
    let (result, sources) = run(&paths);
    let all: String = (0..sources.len())
        .map(|i| rendered(&result, &sources, i))
        .collect();
    assert!(result.is_ok(), "ok fixtures have diagnostics:\n{all}");
    for (i, file) in result.files.iter().enumerate() {
        assert!(
            !file.items.is_empty(),
            "{} parsed to nothing",
            sources[i].path
        );
    }
}

/// Fixtures in `check/`, grouped: `NAME.stw` alone, or `NAME.a.stw`, `NAME.b.stw`
/// checked together; the expected output is `NAME.stderr`.
fn check_groups() -> Vec<(String, Vec<PathBuf>)> {
    let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for path in fixtures("check") {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let name = stem.split('.').next().unwrap().to_string();
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, files)) => files.push(path),
            None => groups.push((name, vec![path])),
        }
    }
    groups
}

#[test]
fn check_fixtures_match_their_stderr() {
    let bless = std::env::var_os("BLESS").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check");
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    let groups = check_groups();
    assert!(!groups.is_empty());
    for (name, paths) in groups {
        let catalogue = fixture_catalogue(&dir, &name);
        let (result, sources) = run_with(&paths, catalogue.as_ref());
        assert!(!result.is_ok(), "{name}: expected diagnostics");
        seen.extend(result.diagnostics.iter().map(|(_, d)| d.code));
        let actual: String = (0..sources.len())
            .map(|i| rendered(&result, &sources, i))
            .collect();
        let expected_path = dir.join(format!("{name}.stderr"));
        if bless {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{name}: output differs (BLESS=1 to update)\n--- expected\n{expected}\n--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let missing: Vec<String> = Code::ALL
        .iter()
        .filter(|c| !seen.contains(c))
        .map(|c| c.id())
        .collect();
    assert!(
        missing.is_empty(),
        "codes no fixture exercises: {missing:?}"
    );
}

#[test]
fn every_code_has_a_page() {
    let mut numbers = BTreeSet::new();
    for &code in Code::ALL {
        assert!(numbers.insert(code.number()), "{code} is used twice");
        assert_eq!(Code::parse(&code.id()), Some(code));
        let page = steward_dsl::explain(code);
        assert!(
            page.starts_with(&format!("# {}: ", code.id())),
            "{code}: the page must start with `# {}: title`",
            code.id()
        );
        for section in ["## Example", "## Fix"] {
            assert!(page.contains(section), "{code}: the page lacks `{section}`");
        }
        assert!(!page.contains("TODO"), "{code}: the page is unfinished");

        // The example triggers the code; the fixed version checks clean.
        let catalogue = page_catalogue(page);
        let example = stw_block_after(page, "## Example");
        let result = check_page(
            Source {
                path: "example.stw".into(),
                text: example.clone(),
            },
            catalogue.as_ref(),
        );
        assert!(
            result.diagnostics.iter().any(|(_, d)| d.code == code),
            "{code}: the example does not trigger it; it gives {:?}",
            result.diagnostics
        );
        let fixed = stw_block_after(page, "## Fix");
        let result = check_page(
            Source {
                path: "fixed.stw".into(),
                text: fixed.clone(),
            },
            catalogue.as_ref(),
        );
        let shown: String = result
            .diagnostics
            .iter()
            .map(|(_, d)| render(d, "fixed.stw", &fixed))
            .collect();
        assert!(
            result.is_ok(),
            "{code}: the fixed example has diagnostics:\n{shown}"
        );
    }
}

fn stw_block_after(page: &str, heading: &str) -> String {
    let rest = &page[page.find(heading).unwrap()..];
    let start = rest.find("```stw\n").unwrap() + "```stw\n".len();
    let len = rest[start..].find("```").unwrap();
    rest[start..start + len].to_string()
}

#[test]
fn the_change_example_builds_the_expected_tree() {
    use steward_dsl::ast::*;
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ok/change.stw"),
    )
    .unwrap();
    let (file, diags) = steward_dsl::parse(&text);
    assert!(diags.is_empty(), "{diags:?}");
    let kinds: Vec<&str> = file
        .items
        .iter()
        .map(|i| match i {
            Item::UseConnector(_) => "use",
            Item::Policy(_) => "policy",
            Item::Calendar(_) => "calendar",
            Item::Group(_) => "group",
            Item::Schema(_) => "event",
            Item::Rule(_) => "rule",
            Item::Workflow(_) => "workflow",
            Item::Cadence(_) => "cadence",
            Item::Counter(_) => "counter",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "use", "use", "policy", "calendar", "calendar", "group", "event", "rule", "workflow",
            "cadence", "counter"
        ]
    );
    let span_text = |s: steward_dsl::Span| &text[s.start..s.end];

    let Item::Policy(p) = &file.items[2] else {
        panic!()
    };
    assert_eq!(p.version.value, "2026-03");
    assert!(matches!(&p.params[0].value, PolicyValue::Expr(e) if span_text(e.span).trim() == "2"));
    assert!(matches!(
        p.params[1].value,
        PolicyValue::Duration(DurationLit {
            amount: 5,
            unit: TimeUnit::Day,
            business: true,
            ..
        })
    ));

    let Item::Calendar(c) = &file.items[3] else {
        panic!()
    };
    assert_eq!(c.entries.len(), 6);
    let CalendarEntry::Hours { days, ranges, .. } = &c.entries[2] else {
        panic!()
    };
    assert_eq!((days.from.name.as_str(), days.to.is_none()), ("sat", true));
    assert_eq!(ranges.len(), 2);
    assert_eq!((ranges[1].start.hour, ranges[1].end.hour), (13, 15));
    let CalendarEntry::Holidays(h) = &c.entries[3] else {
        panic!()
    };
    assert_eq!(h[1].to.as_ref().unwrap().value, "2026-12-26");

    let Item::Rule(r) = &file.items[7] else {
        panic!()
    };
    assert_eq!(r.controls[0].kind, Enforcement::Corrective);
    let Action::Call {
        connector,
        op,
        args,
        ..
    } = &r.actions.actions[0]
    else {
        panic!()
    };
    assert_eq!(
        (connector.name.as_str(), op.name.as_str()),
        ("slack", "post")
    );
    let t = args[0].template.as_ref().unwrap();
    assert_eq!(t.parts.len(), 4);
    assert!(matches!(&t.parts[0], TemplatePart::Text(s) if s == "P1 "));
    assert!(matches!(&t.parts[1], TemplatePart::Expr(e) if span_text(e.span) == "event.subject"));

    let Item::Workflow(w) = &file.items[8] else {
        panic!()
    };
    assert_eq!(span_text(w.key.span).trim(), "event.data.issue.key");
    assert_eq!(w.starts.len(), 1);
    assert_eq!(w.escalations[0].steps.len(), 2);
    let names: Vec<(&str, bool)> = w
        .states
        .iter()
        .map(|s| (s.name.name.as_str(), s.is_final))
        .collect();
    assert_eq!(
        names,
        [
            ("assessing", false),
            ("approved", false),
            ("rejected", true),
            ("closed", true)
        ]
    );
    let assessing = &w.states[0];
    let enter = assessing.enter.as_ref().unwrap();
    assert_eq!(enter.actions.len(), 4);
    let Action::RequestApproval(req) = &enter.actions[1] else {
        panic!()
    };
    assert_eq!(req.group.name, "cab");
    assert!(
        matches!(&req.quorum, Quorum::Count(e) if span_text(e.span).trim() == "change_policy.cab_quorum")
    );
    assert_eq!(req.excluding.len(), 2);
    let within = req.within.as_ref().unwrap();
    assert_eq!(within.calendar.as_ref().unwrap().name, "office");
    assert_eq!(assessing.transitions.len(), 5);
    assert!(matches!(
        assessing.transitions[2].on,
        TransitionTrigger::Approval {
            outcome: ApprovalOutcome::Expired,
            ..
        }
    ));
    assert_eq!(
        assessing.transitions[2].target.as_ref().unwrap().name,
        "rejected"
    );
    assert!(assessing.transitions[3].target.is_none());
    let TransitionTrigger::After(spec) = &assessing.transitions[4].on else {
        panic!()
    };
    assert!(
        matches!(&spec.duration, DurationRef::Param { policy, param }
        if policy.name == "change_policy" && param.name == "review_within")
    );
    assert_eq!(
        span_text(spec.span),
        "change_policy.review_within in office"
    );

    let Item::Cadence(cad) = &file.items[9] else {
        panic!()
    };
    assert_eq!(cad.schedule.value, "0 0 9 1 1,4,7,10 *");
    assert_eq!(cad.zone.as_ref().unwrap().value, "Europe/Berlin");
    let expect = cad.expect.as_ref().unwrap();
    assert_eq!(expect.otherwise.actions.len(), 1);

    let Item::Counter(k) = &file.items[10] else {
        panic!()
    };
    assert!(matches!(
        &k.window,
        Window::Calendar { unit: CalendarUnit::Month, zone: Some(z), .. } if z.value == "Europe/Berlin"
    ));
    assert_eq!(span_text(k.threshold.span).trim(), "count >= 2");
}
