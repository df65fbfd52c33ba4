//! The committed first-party components (connectors/dist/*.wasm) load in the host and
//! describe exactly the operations of the connector contract, with valid argument
//! schemas (property order, required lists, `additionalProperties: false`); bad
//! arguments are refused with a permanent error before anything is sent.
//!
//! CI rebuilds connectors/dist from source (steward-connector-build) before the tests,
//! so these run on fresh builds there and on the committed ones in a fresh clone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};
use steward_connectors::{CallContext, ConnectorConfig, ConnectorError, Host, HostSettings};

/// The contract: per connector, its operations in order, and per operation its
/// properties in order as `name[*]:type` (`*` required, type `any` for no type).
const CONTRACT: &[(&str, &[(&str, &str)])] = &[
    (
        "jira",
        &[
            (
                "create_issue",
                "project*:string issuetype:string summary*:string description:string labels:array",
            ),
            ("transition", "issue*:string status*:string"),
            ("comment", "issue*:string body*:string"),
            ("add_label", "issue*:string label*:string"),
            ("get_issue", "issue*:string fields:array"),
        ],
    ),
    (
        "servicenow",
        &[
            ("create_record", "table*:string fields*:object"),
            (
                "update_record",
                "table*:string sys_id*:string fields*:object",
            ),
            ("get_record", "table*:string sys_id*:string"),
            ("add_work_note", "table*:string sys_id*:string text*:string"),
            ("request_approval", "sys_id*:string approver*:string"),
            ("get_approvals", "sys_id*:string"),
        ],
    ),
    ("slack", &[("post", "text*:string blocks:array")]),
    (
        "pagerduty",
        &[
            (
                "trigger",
                "summary*:string source:string severity:string dedup_key:string custom_details:object",
            ),
            ("acknowledge", "dedup_key*:string"),
            ("resolve", "dedup_key*:string"),
        ],
    ),
    ("webhook", &[("send", "payload*:any")]),
];

fn component(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../dist/{name}.wasm"))
}

/// A host with every dist component, configured with nothing: no settings, no
/// secrets, no allowed hosts (so nothing can be sent). One for all tests: compiling
/// the components is the slow part.
fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let configs = CONTRACT
            .iter()
            .map(|(name, _)| ConnectorConfig::new(*name, component(name)))
            .collect();
        Host::new(HostSettings::default(), configs).unwrap()
    })
}

fn ctx() -> CallContext {
    CallContext {
        idempotency_key: "act-dist-1".to_owned(),
        attempt: 1,
        deadline_ms: 0,
    }
}

fn permanent_message(err: ConnectorError) -> String {
    match err {
        ConnectorError::Connector {
            retryable: false,
            message,
            retry_after_ms: None,
        } => message,
        other => panic!("expected a permanent connector error, got {other:?}"),
    }
}

#[test]
fn every_component_describes_exactly_the_contract() {
    let host = host();
    assert_eq!(
        host.connectors(),
        ["jira", "pagerduty", "servicenow", "slack", "webhook"]
    );
    for (name, operations) in CONTRACT {
        let d = host.describe(name).unwrap();
        assert_eq!(d.name, *name);
        assert_eq!(d.version, "0.1.0", "{name}");
        let names: Vec<&str> = d.operations.iter().map(|o| o.name.as_str()).collect();
        let expected: Vec<&str> = operations.iter().map(|(op, _)| *op).collect();
        assert_eq!(names, expected, "{name}: operations");
        for (op, (_, props)) in d.operations.iter().zip(operations.iter()) {
            let at = format!("{name}.{}", op.name);
            assert!(
                !op.doc.is_empty() && !op.doc.contains('\n'),
                "{at}: one-line doc"
            );
            let schema: Value = serde_json::from_str(&op.args_schema)
                .unwrap_or_else(|e| panic!("{at}: schema is not JSON: {e}"));
            jsonschema::meta::validate(&schema)
                .unwrap_or_else(|e| panic!("{at}: not a valid JSON Schema: {e}"));
            assert_eq!(schema["type"], "object", "{at}");
            assert_eq!(schema["additionalProperties"], false, "{at}");
            let properties = schema["properties"].as_object().unwrap();
            let mut want_order = Vec::new();
            let mut want_required = Vec::new();
            for spec in props.split_whitespace() {
                let (prop, ty) = spec.split_once(':').unwrap();
                let (prop, required) = match prop.strip_suffix('*') {
                    Some(p) => (p, true),
                    None => (prop, false),
                };
                want_order.push(prop);
                if required {
                    want_required.push(prop);
                }
                let p = &properties[prop];
                assert!(
                    p["description"].as_str().is_some_and(|s| !s.is_empty()),
                    "{at}.{prop}: described"
                );
                match ty {
                    "any" => assert!(p.get("type").is_none(), "{at}.{prop}: any JSON"),
                    ty => assert_eq!(p["type"], ty, "{at}.{prop}: type"),
                }
            }
            let order: Vec<&str> = properties.keys().map(String::as_str).collect();
            assert_eq!(order, want_order, "{at}: property order");
            assert_eq!(schema["required"], json!(want_required), "{at}: required");
        }
    }
}

#[test]
fn schemas_carry_the_contracts_enums_and_defaults() {
    let host = host();
    let schema = |name: &str, op: &str| -> Value {
        let d = host.describe(name).unwrap();
        let o = d.operations.iter().find(|o| o.name == op).unwrap();
        serde_json::from_str(&o.args_schema).unwrap()
    };
    let tables = json!(["change_request", "incident", "sysapproval_approver"]);
    for op in ["create_record", "update_record", "get_record"] {
        assert_eq!(
            schema("servicenow", op)["properties"]["table"]["enum"],
            tables,
            "{op}"
        );
    }
    let trigger = schema("pagerduty", "trigger");
    assert_eq!(
        trigger["properties"]["severity"]["enum"],
        json!(["critical", "error", "warning", "info"])
    );
    assert_eq!(trigger["properties"]["severity"]["default"], "error");
    assert_eq!(trigger["properties"]["source"]["default"], "steward");
    let create = schema("jira", "create_issue");
    assert_eq!(create["properties"]["issuetype"]["default"], "Task");
    assert_eq!(create["properties"]["labels"]["items"]["type"], "string");
    // The schemas accept what the contract allows and refuse the rest.
    let v = jsonschema::validator_for(&create).unwrap();
    assert!(v.is_valid(&json!({"project": "CHG", "summary": "s", "labels": ["a"]})));
    assert!(!v.is_valid(&json!({"project": "CHG"})));
    assert!(!v.is_valid(&json!({"project": "CHG", "summary": "s", "priority": "High"})));
    let v = jsonschema::validator_for(&trigger).unwrap();
    assert!(!v.is_valid(&json!({"summary": "s", "severity": "fatal"})));
}

#[test]
fn bad_arguments_are_permanent_errors_and_nothing_is_sent() {
    let host = host();
    for (name, operations) in CONTRACT {
        for (op, props) in *operations {
            let at = format!("{name}.{op}");
            let unknown = permanent_message(
                host.invoke(name, op, r#"{"no_such_argument": 1}"#, &ctx())
                    .unwrap_err(),
            );
            assert!(unknown.contains("no_such_argument"), "{at}: {unknown}");
            let not_object =
                permanent_message(host.invoke(name, op, "[1, 2]", &ctx()).unwrap_err());
            assert!(not_object.contains("JSON object"), "{at}: {not_object}");
            let not_json = permanent_message(host.invoke(name, op, "{nope", &ctx()).unwrap_err());
            assert!(not_json.contains("not JSON"), "{at}: {not_json}");
            // The first required argument missing.
            let first = props.split_whitespace().next().unwrap();
            let first = first.split_once(':').unwrap().0.trim_end_matches('*');
            let missing = permanent_message(host.invoke(name, op, "{}", &ctx()).unwrap_err());
            assert!(
                missing.contains("missing field") && missing.contains(first),
                "{at}: {missing}"
            );
        }
    }
    // Wrong types and values outside an enum.
    for (name, op, args, says) in [
        (
            "jira",
            "create_issue",
            r#"{"project": 7, "summary": "s"}"#,
            "invalid type",
        ),
        (
            "jira",
            "create_issue",
            r#"{"project": "P", "summary": "s", "labels": "x"}"#,
            "invalid type",
        ),
        (
            "servicenow",
            "get_record",
            r#"{"table": "sys_user", "sys_id": "1"}"#,
            "sys_user",
        ),
        (
            "servicenow",
            "create_record",
            r#"{"table": "incident", "fields": []}"#,
            "invalid type",
        ),
        (
            "pagerduty",
            "trigger",
            r#"{"summary": "s", "severity": "fatal"}"#,
            "fatal",
        ),
        (
            "slack",
            "post",
            r#"{"text": "t", "blocks": {}}"#,
            "invalid type",
        ),
    ] {
        let message = permanent_message(host.invoke(name, op, args, &ctx()).unwrap_err());
        assert!(message.contains(says), "{name}.{op} {args}: {message}");
    }
    let message = permanent_message(
        host.invoke("jira", "delete_issue", "{}", &ctx())
            .unwrap_err(),
    );
    assert!(
        message.contains("unknown operation `delete_issue`") && message.contains("create_issue"),
        "{message}"
    );
}

#[test]
fn missing_configuration_is_a_permanent_error_naming_it() {
    let host = host();
    for (name, op, args, says) in [
        (
            "jira",
            "get_issue",
            r#"{"issue": "CHG-1"}"#,
            "setting `base_url`",
        ),
        (
            "servicenow",
            "get_approvals",
            r#"{"sys_id": "a1"}"#,
            "setting `instance_url`",
        ),
        ("slack", "post", r#"{"text": "hi"}"#, "secret `webhook_url`"),
        (
            "pagerduty",
            "resolve",
            r#"{"dedup_key": "k"}"#,
            "secret `routing_key`",
        ),
        (
            "webhook",
            "send",
            r#"{"payload": {"a": 1}}"#,
            "setting `url`",
        ),
    ] {
        let message = permanent_message(host.invoke(name, op, args, &ctx()).unwrap_err());
        assert!(message.contains(says), "{name}.{op}: {message}");
    }
}
