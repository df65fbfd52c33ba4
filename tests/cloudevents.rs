//! The CloudEvents decoder against the outside world's word: the sdk-java fixtures
//! (accept / reject) and the JSON-format examples of the specification, in
//! `../shared/oracles/cloudevents` (see its README).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::Value;
use steward_engine::event::{Event, EventError};

fn oracles() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/oracles/cloudevents");
    assert!(
        dir.is_dir(),
        "{} is missing: the oracles live beside the repository",
        dir.display()
    );
    dir
}

fn read(relative: &str) -> String {
    let path = oracles().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn index(relative: &str) -> Value {
    serde_json::from_str(&read(relative)).unwrap()
}

/// The attribute names that occur in a fixture and break the rules the oracle's note
/// describes: names not `[a-z0-9]`, or extension values that are not CloudEvents types.
fn offending_attributes(text: &str) -> Vec<String> {
    let Value::Object(map) = serde_json::from_str::<Value>(text).unwrap() else {
        panic!("fixture is not an object")
    };
    map.iter()
        .filter(|(name, value)| {
            !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                || matches!(value, Value::Number(n) if n.as_i64().is_none_or(|v| i32::try_from(v).is_err()))
        })
        .filter(|(name, _)| name.as_str() != "data_base64")
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn sdk_java_fixtures_are_accepted_or_rejected_as_the_sdk_does() {
    let index = index("sdk-java-fixtures/index.json");
    let fixtures = index["fixtures"].as_array().unwrap();
    assert!(fixtures.len() >= 17);
    let mut failures = Vec::new();
    for f in fixtures {
        let file = f["file"].as_str().unwrap();
        let expect = f["expect"].as_str().unwrap();
        let text = read(file);
        let result = Event::from_json_str(&text);
        match (expect, &result) {
            ("accept", Ok(_)) => {}
            ("accept", Err(e)) => failures.push(format!("{file}: must be accepted, got: {e}")),
            ("reject" | "reject_or_ignore_attr" | "reject_or_lowercase", Err(e)) => {
                let offending = offending_attributes(&text);
                assert!(
                    !offending.is_empty(),
                    "{file}: test cannot tell the attribute"
                );
                let reason = e.to_string();
                if !offending.iter().any(|a| reason.contains(&format!("`{a}`"))) {
                    failures.push(format!(
                        "{file}: rejected, but the reason `{reason}` names none of {offending:?}"
                    ));
                }
                if !matches!(e, EventError::Invalid { id, .. } if id == "1") {
                    failures.push(format!("{file}: the reason should name the event: {e:?}"));
                }
            }
            ("reject", Ok(_)) => failures.push(format!("{file}: must be rejected")),
            ("reject_or_ignore_attr", Ok(event)) => {
                // Accepted only by dropping the invalid attribute.
                for a in offending_attributes(&text) {
                    if event.extensions.contains_key(&a) {
                        failures.push(format!("{file}: kept invalid attribute `{a}`"));
                    }
                }
            }
            ("reject_or_lowercase", Ok(event)) => {
                for a in offending_attributes(&text) {
                    if !event.extensions.contains_key(&a.to_lowercase()) {
                        failures.push(format!("{file}: `{a}` neither rejected nor lower-cased"));
                    }
                }
            }
            (other, _) => panic!("{file}: unknown expectation `{other}`"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn decode(file: &str) -> Event {
    Event::from_json_str(&read(&format!("sdk-java-fixtures/{file}")))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn sdk_java_fixtures_decode_to_the_right_values() {
    // min_subject_null: `subject: null` is absent, so it equals min.json.
    assert_eq!(decode("min_subject_null.json"), decode("min.json"));
    let min = decode("min.json");
    assert_eq!(
        (
            min.id.as_str(),
            min.source.as_str(),
            min.event_type.as_str()
        ),
        ("1", "http://localhost/source", "mock.test")
    );
    assert_eq!(min.subject, None);
    assert_eq!(min.time, None);

    // base64 'e30=' is '{}': the same data as json_data.json.
    let b64 = decode("base64_json_data.json");
    assert_eq!(b64.data_base64.as_deref(), Some(b"{}".as_slice()));
    assert_eq!(b64.to_value(), decode("json_data.json").to_value());
    let text = decode("base64_text_data.json");
    assert_eq!(
        text.data_base64.as_deref(),
        Some(b"Hello World Lorena!".as_slice())
    );
    assert_eq!(text.to_value(), decode("text_data.json").to_value());

    // Times with offsets and fractions.
    let json = decode("json_data.json");
    assert_eq!(json.time.unwrap().to_rfc3339(), "2018-04-26T12:48:09+00:00");
    let frac = decode("json_data_with_fractional_time.json");
    assert_eq!(
        steward_engine::event::format_time(frac.time.unwrap()),
        "2018-04-26T14:48:09.123400Z"
    );
    assert_eq!(json.subject.as_deref(), Some("sub"));
    assert_eq!(json.dataschema.as_deref(), Some("http://localhost/schema"));

    // Extensions keep their JSON types.
    let ext = decode("json_data_with_ext.json");
    assert_eq!(ext.extensions["astring"], "aaa");
    assert_eq!(ext.extensions["aboolean"], true);
    assert_eq!(ext.extensions["anumber"], 10);
    let num = decode("numeric_ext.json");
    assert_eq!(num.extensions["integer"], 42);
    assert_eq!(num.extensions["decimal"], "42.42");
    let binary = decode("binary_attr.json");
    assert_eq!(binary.extensions["binary"], "4P8ARKo=");
}

/// Decodes one spec example, or each element of a batch.
fn spec_events(file: &str, is_batch: bool) -> Vec<(Value, Result<Event, EventError>)> {
    let value: Value = serde_json::from_str(&read(file)).unwrap();
    if is_batch {
        // A batch is not one event.
        assert!(matches!(
            Event::from_json_str(&read(file)),
            Err(EventError::NotCloudEvent(_))
        ));
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v.clone(), Event::from_json(v.clone())))
            .collect()
    } else {
        vec![(value.clone(), Event::from_json(value))]
    }
}

#[test]
fn spec_examples_decode() {
    let index = index("spec-examples/index.json");
    let examples = index["examples"].as_array().unwrap();
    assert!(examples.len() >= 9);
    let mut decoded = 0;
    let mut failures = Vec::new();
    for ex in examples {
        let file = ex["file"].as_str().unwrap();
        let is_batch = ex["is_batch"].as_bool().unwrap();
        let placeholder = ex["note"]
            .as_str()
            .is_some_and(|n| n.contains("placeholder"));
        for (json, result) in spec_events(file, is_batch) {
            let b64_placeholder = placeholder
                || json["data_base64"]
                    .as_str()
                    .is_some_and(|s| s.contains(' '));
            match result {
                Ok(event) => {
                    decoded += 1;
                    assert_eq!(event.id, json["id"].as_str().unwrap());
                    assert_eq!(event.source, json["source"].as_str().unwrap());
                    assert_eq!(event.event_type, json["type"].as_str().unwrap());
                    if let Some(ext) = json.get("comexampleothervalue") {
                        assert_eq!(&event.extensions["comexampleothervalue"], ext);
                    }
                    // Non-binary data is kept as it is, JSON or not.
                    if let Some(data) = json.get("data") {
                        assert_eq!(event.data.as_ref(), Some(data), "{file}");
                    }
                    assert_eq!(
                        Event::from_json(event.to_json()).unwrap(),
                        event,
                        "{file}: to_json does not round-trip"
                    );
                }
                // The spec's text shows `... base64 encoded string ...` in place of
                // bytes; refusing it is right, but the reason must say where.
                Err(e) if b64_placeholder => {
                    assert!(e.to_string().contains("`data_base64`"), "{file}: {e}");
                }
                Err(e) => failures.push(format!("{file}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 02, 03, 04, 05, 06, 07's second event and spec.md's.
    assert!(decoded >= 7, "only {decoded} spec events decoded");

    // json-format-06: real base64 of a JSON text, but no datacontenttype.
    let e = Event::from_json_str(&read("spec-examples/json-format-06.json")).unwrap();
    assert_eq!(
        e.data_base64.as_deref(),
        Some(br#"{ "xyz": 123 }"#.as_slice())
    );
}

#[test]
fn missing_or_mistyped_required_attributes_are_named() {
    let cases = [
        (r#"{"id":"1","source":"/s","type":"t"}"#, "`specversion`"),
        (r#"{"specversion":"1.0","id":"1","type":"t"}"#, "`source`"),
        (r#"{"specversion":"1.0","id":"1","source":"/s"}"#, "`type`"),
        (r#"{"specversion":"1.0","source":"/s","type":"t"}"#, "`id`"),
        (
            r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#,
            "`id`",
        ),
        (
            r#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#,
            "`id`",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"","type":"t"}"#,
            "`source`",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"noon"}"#,
            "`time`",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":5}"#,
            "`subject`",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{},"data_base64":"e30="}"#,
            "`data_base64`",
        ),
    ];
    for (text, attr) in cases {
        let e = Event::from_json_str(text).expect_err(text);
        assert!(
            e.to_string().contains(attr),
            "{text}: `{e}` does not name {attr}"
        );
    }
}
