//! The Jira connector (connectors/dist/jira.wasm) against a loopback Jira Cloud that
//! validates every request against Atlassian's OpenAPI spec
//! (../shared/oracles/jira/openapi/); plus the validator's and the server's own tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod vendors;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use vendors::harness::{Rig, assert_operation, expect_permanent, expect_retryable};
use vendors::jira::{Jira, adf_problems, jira_rule_problems, parse_property_jql};
use vendors::openapi::{Request, jira_spec};
use vendors::server::{Down, Reply, Server, basic_auth, send};

const EMAIL: &str = "steward-bot@example.com";
const TOKEN: &str = "ATATT3xJiraTok3n-unit-7f3a9c";

/// Requests validated against the spec by the connector tests of this run.
static VALIDATED: AtomicUsize = AtomicUsize::new(0);

fn validate(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: Option<&Value>,
) -> Result<String, Vec<String>> {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    jira_spec()
        .validate(&Request {
            method,
            path,
            query,
            content_type: body.map(|_| "application/json"),
            body: &bytes,
        })
        .map(|m| m.operation_id)
}

fn adf(lines: &[&str]) -> Value {
    json!({
        "type": "doc",
        "version": 1,
        "content": lines.iter().map(|l| json!({
            "type": "paragraph",
            "content": [{ "type": "text", "text": l }]
        })).collect::<Vec<_>>()
    })
}

fn property(key: &str) -> Value {
    json!([{ "key": "steward", "value": { "idempotency_key": key } }])
}

// ---------------------------------------------------------------------------------
// The validator on its own.

#[test]
fn validator_accepts_a_contract_create_issue_body() {
    let body = json!({
        "fields": {
            "project": { "key": "OPS" },
            "issuetype": { "name": "Task" },
            "summary": "Upgrade PostgreSQL",
            "description": adf(&["line one", "line two"]),
            "labels": ["change", "iso20000"]
        },
        "properties": property("act-1")
    });
    assert_eq!(
        validate("POST", "/rest/api/3/issue", None, Some(&body)).unwrap(),
        "createIssue"
    );
    assert!(
        jira_spec().operation_count() >= 417,
        "the whole spec is loaded"
    );
    let m = jira_spec()
        .validate(&Request {
            method: "POST",
            path: "/rest/api/3/issue",
            query: None,
            content_type: Some("application/json"),
            body: &serde_json::to_vec(&body).unwrap(),
        })
        .unwrap();
    assert!(jira_rule_problems(&m, Some(&body)).is_empty());
}

#[test]
fn validator_rejects_create_issue_without_fields_or_with_wrong_types() {
    // No `fields`: the schema allows it, Jira does not (project, issuetype, summary).
    let m = jira_spec()
        .validate(&Request {
            method: "POST",
            path: "/rest/api/3/issue",
            query: None,
            content_type: Some("application/json"),
            body: b"{\"update\":{}}",
        })
        .unwrap();
    let problems = jira_rule_problems(&m, Some(&json!({ "update": {} })));
    assert!(problems[0].contains("`fields` is required"), "{problems:?}");
    // Wrong types, caught by the spec's schema (IssueUpdateDetails, EntityProperty).
    for (body, at) in [
        (json!({ "fields": "OPS: summary" }), "/fields"),
        (json!({ "fields": {}, "update": [] }), "/update"),
        (
            json!({ "fields": {}, "properties": { "key": "steward" } }),
            "/properties",
        ),
        (
            json!({ "fields": {}, "properties": [{ "key": 7, "value": 1 }] }),
            "/properties/0/key",
        ),
        (
            json!({ "fields": {}, "properties": [{ "key": "a", "value": 1, "extra": 2 }] }),
            "/properties/0",
        ),
        (
            json!({ "fields": {}, "update": { "labels": [{ "add": "x", "append": "y" }] } }),
            "/update/labels/0",
        ),
        (
            json!({ "fields": {}, "transition": { "id": 31 } }),
            "/transition/id",
        ),
    ] {
        let errors = validate("POST", "/rest/api/3/issue", None, Some(&body)).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains(&format!("at {at}:"))),
            "{body}: expected a violation at {at}, got {errors:?}"
        );
    }
    // Missing required body.
    let errors = validate("POST", "/rest/api/3/issue", None, None).unwrap_err();
    assert!(errors[0].contains("request body is required"), "{errors:?}");
}

#[test]
fn validator_rejects_unknown_paths_methods_and_parameters() {
    let e = validate("GET", "/rest/api/3/issuez/OPS-1", None, None).unwrap_err();
    assert!(e[0].contains("no path template"), "{e:?}");
    let e = validate("GET", "/rest/api/2/issue/OPS-1", None, None).unwrap_err();
    assert!(e[0].contains("no path template"), "{e:?}");
    let e = validate("PATCH", "/rest/api/3/issue/OPS-1", None, Some(&json!({}))).unwrap_err();
    assert!(e[0].contains("method PATCH is not defined"), "{e:?}");
    let e = validate(
        "GET",
        "/rest/api/3/issue/OPS-1",
        Some("fieldz=status"),
        None,
    )
    .unwrap_err();
    assert!(e[0].contains("unknown query parameter `fieldz`"), "{e:?}");
    let e = validate(
        "GET",
        "/rest/api/3/issue/OPS-1/comment",
        Some("maxResults=many"),
        None,
    )
    .unwrap_err();
    assert!(e[0].contains("not an integer"), "{e:?}");
    let e = validate(
        "GET",
        "/rest/api/3/issue/OPS-1/comment",
        Some("orderBy=newest"),
        None,
    )
    .unwrap_err();
    assert!(e[0].contains("is not one of"), "{e:?}");
    let e = validate("GET", "/rest/api/3/issue/OPS-1", None, Some(&json!({}))).unwrap_err();
    assert!(e[0].contains("takes no request body"), "{e:?}");
    // SearchAndReconcileRequestBean has additionalProperties: false.
    let e = validate(
        "POST",
        "/rest/api/3/search/jql",
        None,
        Some(&json!({ "jql": "x = 1", "startAt": 0 })),
    )
    .unwrap_err();
    assert!(e.iter().any(|v| v.contains("startAt")), "{e:?}");
    // The JSON content type is required for JSON bodies.
    let e = jira_spec()
        .validate(&Request {
            method: "POST",
            path: "/rest/api/3/issue/OPS-1/comment",
            query: None,
            content_type: Some("text/plain"),
            body: br#"{"body":{"type":"doc","version":1,"content":[]}}"#,
        })
        .unwrap_err();
    assert!(e[0].contains("Content-Type"), "{e:?}");
}

#[test]
fn validator_matches_the_most_specific_template() {
    assert_eq!(
        validate(
            "GET",
            "/rest/api/3/issue/OPS-1",
            Some("fields=status,summary"),
            None
        )
        .unwrap(),
        "getIssue"
    );
    assert_eq!(
        validate("GET", "/rest/api/3/issue/OPS-1/transitions", None, None).unwrap(),
        "getTransitions"
    );
    assert_eq!(
        validate(
            "GET",
            "/rest/api/3/issue/createmeta/OPS/issuetypes",
            None,
            None
        )
        .unwrap(),
        "getCreateIssueMetaIssueTypes"
    );
    assert_eq!(
        validate(
            "GET",
            "/rest/api/3/issue/OPS-1/comment",
            Some("expand=properties"),
            None
        )
        .unwrap(),
        "getComments"
    );
    assert_eq!(
        validate(
            "PUT",
            "/rest/api/3/issue/OPS-1",
            None,
            Some(&json!({ "update": { "labels": [{ "add": "x" }] } }))
        )
        .unwrap(),
        "editIssue"
    );
}

#[test]
fn validator_checks_answers_against_the_documented_responses() {
    let spec = jira_spec();
    let created = br#"{"id":"10000","key":"ED-24","self":"https://your-domain.atlassian.net/rest/api/3/issue/10000"}"#;
    spec.validate_response("createIssue", 201, created).unwrap();
    let e = spec
        .validate_response("createIssue", 201, br#"{"id":10000}"#)
        .unwrap_err();
    assert!(e[0].contains("/id"), "{e:?}");
    let e = spec.validate_response("createIssue", 418, b"").unwrap_err();
    assert!(e[0].contains("not documented"), "{e:?}");
    spec.validate_response("doTransition", 204, b"").unwrap();
    let e = spec
        .validate_response("getTransitions", 200, br#"{"transitions":{"id":"1"}}"#)
        .unwrap_err();
    assert!(e[0].contains("/transitions"), "{e:?}");
}

/// The spec's own request examples (../shared/oracles/jira/rest-examples/platform/)
/// validate: the validator is not stricter than the spec.
#[test]
fn validator_accepts_the_specs_own_request_examples() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/oracles/jira/rest-examples/platform");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "index.json" {
            continue;
        }
        let ex: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(body) = ex.get("request_example").filter(|b| !b.is_null()) else {
            continue;
        };
        let concrete: String = ex["path"]
            .as_str()
            .unwrap()
            .split('/')
            .map(|s| if s.starts_with('{') { "10000" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let op = validate(ex["method"].as_str().unwrap(), &concrete, None, Some(body))
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert_eq!(
            op,
            ex["operationId"].as_str().unwrap(),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 8,
        "only {checked} request examples found in {}",
        dir.display()
    );
}

#[test]
fn jira_rules_check_adf_and_labels() {
    assert!(adf_problems(&adf(&["a", "b"]), "description").is_empty());
    let empty_text = json!({ "type": "doc", "version": 1, "content": [
        { "type": "paragraph", "content": [{ "type": "text", "text": "" }] }
    ]});
    assert!(adf_problems(&empty_text, "description")[0].contains("non-empty"));
    assert!(adf_problems(&json!("plain text"), "description")[0].contains("Atlassian Document"));
    let blank_line = json!({ "type": "doc", "version": 1, "content": [
        { "type": "paragraph", "content": [{ "type": "text", "text": "a" }] },
        { "type": "paragraph", "content": [] },
        { "type": "paragraph" }
    ]});
    assert!(adf_problems(&blank_line, "description").is_empty());
    assert_eq!(
        parse_property_jql(r#"issue.property[steward].idempotency_key = "act-1""#),
        Some((
            vec!["steward".to_owned(), "idempotency_key".to_owned()],
            "act-1".to_owned()
        ))
    );
}

// ---------------------------------------------------------------------------------
// The server on its own (raw HTTP).

#[test]
fn jira_server_plays_the_api_and_checks_auth() {
    let server = Server::start(Jira::new(EMAIL, TOKEN));
    let auth = basic_auth(EMAIL, TOKEN);
    let json_headers = [
        ("authorization", auth.as_str()),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "steward-connector-jira/test"),
    ];
    let get_headers = [json_headers[0], json_headers[1], json_headers[3]];
    let create = json!({
        "fields": { "project": { "key": "OPS" }, "issuetype": { "name": "Task" }, "summary": "s" },
        "properties": property("k-1")
    });
    let url = server.url();
    let (status, _, text) = send(
        "POST",
        &format!("{url}/rest/api/3/issue"),
        &json_headers,
        create.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["key"], "OPS-1");
    let search = json!({ "jql": "issue.property[steward].idempotency_key = \"k-1\"", "fields": ["key"], "maxResults": 1 });
    let (status, _, text) = send(
        "POST",
        &format!("{url}/rest/api/3/search/jql"),
        &json_headers,
        search.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let found: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(found["issues"][0]["key"], "OPS-1");
    // Transitions in the rest-example shape.
    let (status, _, text) = send(
        "GET",
        &format!("{url}/rest/api/3/issue/OPS-1/transitions"),
        &get_headers,
        b"",
    );
    assert_eq!(status, 200);
    let t: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(t["transitions"][0]["to"]["name"], "In Progress");
    // No or wrong credentials: 401.
    let (status, _, _) = send(
        "GET",
        &format!("{url}/rest/api/3/issue/OPS-1"),
        &[get_headers[1], get_headers[2]],
        b"",
    );
    assert_eq!(status, 401);
    // An invalid request: 400 with the violations, recorded.
    let (status, _, text) = send(
        "POST",
        &format!("{url}/rest/api/3/issue"),
        &json_headers,
        br#"{"fields":"x"}"#,
    );
    assert_eq!(status, 400);
    assert!(text.contains("/fields"), "{text}");
    // Injected faults answer valid requests.
    server.fail_next(
        1,
        Reply::json(429, &json!({ "errorMessages": ["Rate limit exceeded."] }))
            .with_header("retry-after", "3"),
    );
    let (status, headers, _) = send(
        "GET",
        &format!("{url}/rest/api/3/issue/OPS-1"),
        &get_headers,
        b"",
    );
    assert_eq!(status, 429);
    assert!(headers.iter().any(|(n, v)| n == "retry-after" && v == "3"));
    let violations = server.with(|j| j.violations.clone());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(server.requests().len(), 6);
}

// ---------------------------------------------------------------------------------
// The connector.

fn setup() -> (Server<Jira>, Rig) {
    let server = Server::start(Jira::new(EMAIL, TOKEN));
    let rig = Rig::new(
        "jira",
        &[("base_url", server.url().as_str())],
        &[("email", EMAIL), ("api_token", TOKEN)],
    );
    (server, rig)
}

/// Every request of the test validated against the spec and the contract; the
/// credentials were right; no secret was logged.
fn finish(server: &Server<Jira>, rig: &Rig) {
    let (violations, validated, unauthorized) =
        server.with(|j| (j.violations.clone(), j.validated, j.unauthorized));
    assert!(
        violations.is_empty(),
        "Jira saw {} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(validated, server.total_requests());
    assert_eq!(
        unauthorized, 0,
        "requests without the right Basic credentials"
    );
    let auth = basic_auth(EMAIL, TOKEN);
    for r in server.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(auth.as_str()),
            "{}",
            r.line()
        );
    }
    rig.assert_user_agent(&server.requests());
    rig.assert_logs_clean(&[auth.trim_start_matches("Basic ")]);
    let total = VALIDATED.fetch_add(validated, Ordering::SeqCst) + validated;
    eprintln!("jira: {validated} request(s) validated against the OpenAPI spec ({total} so far)");
}

fn lines(server: &Server<Jira>) -> Vec<String> {
    server.requests().iter().map(|r| r.line()).collect()
}

#[test]
fn describe_lists_the_contract_operations() {
    let (_server, rig) = setup();
    let d = rig.describe();
    assert_eq!(d.name, "jira");
    assert!(!d.version.is_empty());
    assert_operation(
        &d,
        "create_issue",
        &["project", "issuetype", "summary", "description", "labels"],
        &["project", "summary"],
    );
    assert_operation(&d, "transition", &["issue", "status"], &["issue", "status"]);
    assert_operation(&d, "comment", &["issue", "body"], &["issue", "body"]);
    assert_operation(&d, "add_label", &["issue", "label"], &["issue", "label"]);
    assert_operation(&d, "get_issue", &["issue", "fields"], &["issue"]);
    assert_eq!(d.operations.len(), 5);
}

#[test]
fn create_issue_sends_adf_and_the_idempotency_property() {
    let (server, rig) = setup();
    let out = rig.ok(
        "create_issue",
        &json!({ "project": "OPS", "issuetype": "Change", "summary": "Upgrade PostgreSQL 15 → 16",
                 "description": "CAB approved.\nWindow 10:00–12:00", "labels": ["change", "iso20000"] }),
        "act-create-1",
        1,
    );
    let issue = server.with(|j| j.issues[0].clone());
    assert_eq!(
        out,
        json!({ "id": issue.id, "key": "OPS-1", "self": format!("{}/rest/api/3/issue/{}", server.url(), issue.id) })
    );
    assert_eq!(lines(&server), ["POST /rest/api/3/issue"]);
    let req = &server.requests()[0];
    assert_eq!(
        req.json(),
        json!({
            "fields": {
                "project": { "key": "OPS" },
                "issuetype": { "name": "Change" },
                "summary": "Upgrade PostgreSQL 15 → 16",
                "description": adf(&["CAB approved.", "Window 10:00–12:00"]),
                "labels": ["change", "iso20000"]
            },
            "properties": property("act-create-1")
        })
    );
    assert!(
        req.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        issue.properties["steward"],
        json!({ "idempotency_key": "act-create-1" })
    );
    finish(&server, &rig);
}

#[test]
fn create_issue_defaults_to_task_and_handles_blank_lines() {
    let (server, rig) = setup();
    // Positional arguments map onto the properties in order.
    let out = rig.ok(
        "create_issue",
        &json!({ "project": "CHG", "summary": "Rotate keys", "description": "a\n\nb" }),
        "act-2",
        1,
    );
    assert_eq!(out["key"], "CHG-1");
    let body = server.requests()[0].json();
    assert_eq!(body["fields"]["issuetype"], json!({ "name": "Task" }));
    assert_eq!(body["fields"]["project"], json!({ "key": "CHG" }));
    // ADF: three paragraphs, the blank one without an (invalid) empty text node.
    let content = body["fields"]["description"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 3, "{body}");
    finish(&server, &rig);
}

#[test]
fn create_issue_retry_returns_the_issue_already_created() {
    let (server, rig) = setup();
    let first = rig.ok(
        "create_issue",
        &json!({ "project": "OPS", "summary": "Once" }),
        "act-dup-1",
        1,
    );
    server.clear_requests();
    // Attempt 2 (the first answer was lost): found by the property, not created again.
    let second = rig.ok(
        "create_issue",
        &json!({ "project": "OPS", "summary": "Once" }),
        "act-dup-1",
        2,
    );
    assert_eq!(second, first);
    assert_eq!(lines(&server), ["POST /rest/api/3/search/jql"]);
    assert_eq!(
        server.requests()[0].json(),
        json!({ "jql": "issue.property[steward].idempotency_key = \"act-dup-1\"", "fields": ["key"], "maxResults": 1 })
    );
    assert_eq!(server.with(|j| j.issues.len()), 1);
    finish(&server, &rig);
}

#[test]
fn create_issue_retry_creates_when_the_first_attempt_never_arrived() {
    let (server, rig) = setup();
    rig.ok(
        "create_issue",
        &json!({ "project": "OPS", "summary": "Other" }),
        "act-other",
        1,
    );
    server.clear_requests();
    let out = rig.ok(
        "create_issue",
        &json!({ "project": "OPS", "summary": "Lost" }),
        "act-lost",
        2,
    );
    assert_eq!(out["key"], "OPS-2");
    assert_eq!(
        lines(&server),
        ["POST /rest/api/3/search/jql", "POST /rest/api/3/issue"]
    );
    assert_eq!(server.with(|j| j.issues.len()), 2);
    finish(&server, &rig);
}

#[test]
fn transition_by_target_status_then_by_transition_name() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    let out = rig.ok(
        "transition",
        &json!({ "issue": key, "status": "in progress" }),
        "act-t1",
        1,
    );
    assert_eq!(out["issue"], key);
    assert_eq!(out["transition_id"], "11");
    assert!(
        out["status"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("in progress"),
        "{out}"
    );
    assert_eq!(
        lines(&server),
        [
            format!("GET /rest/api/3/issue/{key}/transitions"),
            format!("POST /rest/api/3/issue/{key}/transitions")
        ]
    );
    assert_eq!(
        server.requests()[1].json(),
        json!({ "transition": { "id": "11" } })
    );
    rig.ok(
        "transition",
        &json!({ "issue": key, "status": "Done" }),
        "act-t2",
        1,
    );
    // No target status is called "Reopen": the transition of that name is taken.
    let out = rig.ok(
        "transition",
        &json!({ "issue": key, "status": "reopen" }),
        "act-t3",
        1,
    );
    assert_eq!(out["transition_id"], "41");
    assert_eq!(
        server.with(|j| j.issue(&key).unwrap().status.clone()),
        "To Do"
    );
    finish(&server, &rig);
}

#[test]
fn transition_to_an_unavailable_status_lists_the_targets() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    let err = rig.err(
        "transition",
        &json!({ "issue": key, "status": "Closed" }),
        "act-t",
        1,
    );
    let message = expect_permanent(&err, "In Progress");
    assert!(message.contains("Done"), "{message}");
    assert_eq!(
        lines(&server),
        [format!("GET /rest/api/3/issue/{key}/transitions")]
    );
    finish(&server, &rig);
}

#[test]
fn transition_retry_reports_a_status_already_reached() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "In Progress"));
    let out = rig.ok(
        "transition",
        &json!({ "issue": key, "status": "In Progress" }),
        "act-t",
        2,
    );
    assert_eq!(out["already"], true, "{out}");
    assert_eq!(out["issue"], key);
    assert_eq!(
        lines(&server),
        [format!("GET /rest/api/3/issue/{key}?fields=status")]
    );
    // Attempt 2 where the status is not reached yet: checked, then transitioned.
    server.clear_requests();
    let out = rig.ok(
        "transition",
        &json!({ "issue": key, "status": "Done" }),
        "act-t2",
        2,
    );
    assert_eq!(out["transition_id"], "31");
    assert_ne!(out["already"], true);
    assert_eq!(
        lines(&server),
        [
            format!("GET /rest/api/3/issue/{key}?fields=status"),
            format!("GET /rest/api/3/issue/{key}/transitions"),
            format!("POST /rest/api/3/issue/{key}/transitions"),
        ]
    );
    finish(&server, &rig);
}

#[test]
fn comment_posts_adf_with_the_idempotency_property() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    let out = rig.ok(
        "comment",
        &json!({ "issue": key, "body": "CAB quorum not met (1/2).\nReverted." }),
        "act-c1",
        1,
    );
    let comment = server.with(|j| j.issue(&key).unwrap().comments[0].clone());
    assert_eq!(out, json!({ "id": comment.id }));
    assert_eq!(
        lines(&server),
        [format!("POST /rest/api/3/issue/{key}/comment")]
    );
    assert_eq!(
        server.requests()[0].json(),
        json!({ "body": adf(&["CAB quorum not met (1/2).", "Reverted."]), "properties": property("act-c1") })
    );
    finish(&server, &rig);
}

#[test]
fn comment_retry_is_not_duplicated() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    let first = rig.ok(
        "comment",
        &json!({ "issue": key, "body": "Once." }),
        "act-c",
        1,
    );
    server.clear_requests();
    let second = rig.ok(
        "comment",
        &json!({ "issue": key, "body": "Once." }),
        "act-c",
        2,
    );
    assert_eq!(second["id"], first["id"]);
    assert_eq!(
        lines(&server),
        [format!(
            "GET /rest/api/3/issue/{key}/comment?expand=properties"
        )]
    );
    assert_eq!(server.with(|j| j.issue(&key).unwrap().comments.len()), 1);
    // A retry of another action whose first attempt never arrived: posted.
    server.clear_requests();
    let third = rig.ok(
        "comment",
        &json!({ "issue": key, "body": "Twice." }),
        "act-c2",
        3,
    );
    assert_ne!(third["id"], first["id"]);
    assert_eq!(
        lines(&server),
        [
            format!("GET /rest/api/3/issue/{key}/comment?expand=properties"),
            format!("POST /rest/api/3/issue/{key}/comment")
        ]
    );
    assert_eq!(server.with(|j| j.issue(&key).unwrap().comments.len()), 2);
    finish(&server, &rig);
}

/// Jira pages comments (`maxResults` defaults to 100): a retry must find its comment
/// on any page, else the comment is posted twice.
#[test]
fn comment_retry_finds_its_comment_beyond_the_first_page() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Busy issue", "In Progress"));
    let mine = server.with(|j| j.seed_comments(&key, 150, Some((120, "act-paged"))));
    let out = rig.ok(
        "comment",
        &json!({ "issue": key, "body": "Once." }),
        "act-paged",
        2,
    );
    assert_eq!(out["id"], json!(mine.unwrap()));
    assert_eq!(server.with(|j| j.issue(&key).unwrap().comments.len()), 150);
    assert!(
        server.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        lines(&server)
    );
    finish(&server, &rig);
}

#[test]
fn add_label_updates_the_labels() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    let out = rig.ok(
        "add_label",
        &json!({ "issue": key, "label": "nonconformity" }),
        "act-l",
        1,
    );
    assert_eq!(out, json!({ "issue": key, "label": "nonconformity" }));
    assert_eq!(lines(&server), [format!("PUT /rest/api/3/issue/{key}")]);
    assert_eq!(
        server.requests()[0].json(),
        json!({ "update": { "labels": [{ "add": "nonconformity" }] } })
    );
    assert_eq!(
        server.with(|j| j.issue(&key).unwrap().labels.clone()),
        ["nonconformity"]
    );
    // Idempotent by nature: again, same answer, one label.
    rig.ok(
        "add_label",
        &json!({ "issue": key, "label": "nonconformity" }),
        "act-l",
        2,
    );
    assert_eq!(server.with(|j| j.issue(&key).unwrap().labels.len()), 1);
    finish(&server, &rig);
}

#[test]
fn get_issue_with_and_without_fields() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "In Progress"));
    let all = rig.ok("get_issue", &json!({ "issue": key }), "act-g", 1);
    assert_eq!(all["key"], key);
    assert_eq!(all["fields"]["summary"], "Deploy");
    assert_eq!(all["fields"]["status"]["name"], "In Progress");
    let some = rig.ok(
        "get_issue",
        &json!({ "issue": key, "fields": ["status", "labels"] }),
        "act-g2",
        1,
    );
    let names: Vec<&String> = some["fields"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["status", "labels"]);
    let reqs = server.requests();
    assert_eq!(reqs[0].line(), format!("GET /rest/api/3/issue/{key}"));
    assert_eq!(reqs[1].path, format!("/rest/api/3/issue/{key}"));
    let fields: Vec<String> = reqs[1]
        .query_pairs()
        .into_iter()
        .filter(|(n, _)| n == "fields")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(fields, ["status", "labels"]);
    finish(&server, &rig);
}

#[test]
fn rate_limit_is_retryable_after_the_vendors_delay() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    server.fail_next(
        1,
        Reply::json(
            429,
            &json!({ "errorMessages": ["Rate limit exceeded."], "errors": {} }),
        )
        .with_header("retry-after", "7")
        .with_header("ratelimit-reason", "jira-burst-based"),
    );
    let err = rig.err("get_issue", &json!({ "issue": key }), "act-r", 1);
    let (_, after) = expect_retryable(&err);
    assert_eq!(after, Some(7000));
    assert!(err.is_retryable());
    finish(&server, &rig);
}

#[test]
fn server_errors_are_retryable() {
    let (server, rig) = setup();
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    for status in [500, 502, 503] {
        server.fail_next(
            1,
            Reply::json(
                status,
                &json!({ "errorMessages": ["Internal server error"], "errors": {} }),
            ),
        );
        let err = rig.err("comment", &json!({ "issue": key, "body": "x" }), "act-5", 1);
        let (_, after) = expect_retryable(&err);
        assert_eq!(after, None, "{status}");
    }
    // 503 with Retry-After (Jira sends it on some 503s).
    server.fail_next(
        1,
        Reply::json(503, &json!({ "errorMessages": ["Unavailable"] }))
            .with_header("retry-after", "2"),
    );
    let (_, after) = expect_retryable(&rig.err("get_issue", &json!({ "issue": key }), "act-6", 1));
    assert_eq!(after, Some(2000));
    assert_eq!(server.with(|j| j.issue(&key).unwrap().comments.len()), 0);
    finish(&server, &rig);
}

#[test]
fn client_errors_are_permanent_with_the_vendors_message() {
    let (server, rig) = setup();
    let err = rig.err("get_issue", &json!({ "issue": "OPS-999" }), "act-404", 1);
    expect_permanent(
        &err,
        "Issue does not exist or you do not have permission to see it.",
    );
    let err = rig.err(
        "create_issue",
        &json!({ "project": "NOPE", "summary": "x" }),
        "act-400",
        1,
    );
    expect_permanent(&err, "valid project is required");
    let err = rig.err(
        "create_issue",
        &json!({ "project": "OPS", "issuetype": "Epic", "summary": "x" }),
        "act-400b",
        1,
    );
    expect_permanent(&err, "Specify a valid issue type");
    assert_eq!(server.with(|j| j.issues.len()), 0);
    finish(&server, &rig);
}

#[test]
fn invalid_arguments_fail_before_any_request() {
    let (server, rig) = setup();
    for (op, args) in [
        ("create_issue", json!({ "summary": "no project" })),
        (
            "create_issue",
            json!({ "project": "OPS", "summary": "x", "priority": "High" }),
        ),
        ("transition", json!({ "issue": "OPS-1" })),
        ("comment", json!({ "issue": "OPS-1", "body": 42 })),
    ] {
        let err = rig.err(op, &args, "act-bad", 1);
        assert!(!err.is_retryable(), "{op} {args}: {err:?}");
    }
    let err = rig.err("delete_issue", &json!({ "issue": "OPS-1" }), "act-bad", 1);
    assert!(!err.is_retryable(), "{err:?}");
    assert!(server.requests().is_empty(), "{:?}", lines(&server));
}

#[test]
fn wrong_credentials_and_secrets_stay_out_of_errors_and_logs() {
    let server = Server::start(Jira::new(EMAIL, TOKEN));
    let wrong = "ATATT3xWrongTok3n-9d8e7f";
    let rig = Rig::new(
        "jira",
        &[("base_url", server.url().as_str())],
        &[("email", EMAIL), ("api_token", wrong)],
    );
    let err = rig.err("get_issue", &json!({ "issue": "OPS-1" }), "act-401", 1);
    expect_permanent(&err, "Client must be authenticated");
    assert_eq!(server.with(|j| j.unauthorized), 1);
    assert!(server.with(|j| j.violations.is_empty()));
    // A vendor that echoes the token back: the host redacts it.
    let (server, rig) = setup();
    server.fail_next(
        1,
        Reply::json(
            400,
            &json!({ "errorMessages": [format!("token {TOKEN} is not valid here")] }),
        ),
    );
    let err = rig.err("get_issue", &json!({ "issue": "OPS-1" }), "act-echo", 1);
    let message = expect_permanent(&err, "is not valid here");
    assert!(!message.contains(TOKEN), "{message}");
    rig.assert_logs_clean(&[]);
    finish(&server, &rig);
}

#[test]
fn missing_configuration_is_a_permanent_error_naming_it() {
    let server = Server::start(Jira::new(EMAIL, TOKEN));
    let rig = Rig::new("jira", &[], &[("email", EMAIL), ("api_token", TOKEN)]);
    expect_permanent(
        &rig.err("get_issue", &json!({ "issue": "OPS-1" }), "k", 1),
        "base_url",
    );
    let rig = Rig::new(
        "jira",
        &[("base_url", server.url().as_str())],
        &[("email", EMAIL)],
    );
    expect_permanent(
        &rig.err("get_issue", &json!({ "issue": "OPS-1" }), "k", 1),
        "api_token",
    );
    assert!(server.requests().is_empty());
}

#[test]
fn unreachable_jira_is_retryable() {
    let down = Down::start();
    let rig = Rig::new(
        "jira",
        &[("base_url", down.url().as_str())],
        &[("email", EMAIL), ("api_token", TOKEN)],
    );
    let err = rig.err("get_issue", &json!({ "issue": "OPS-1" }), "act-down", 1);
    assert!(err.is_retryable(), "{err:?}");
}

/// A redirect is not followed (to another server, even an allowed one): the call fails
/// permanently and the credentials go nowhere else.
#[test]
fn redirects_are_not_followed() {
    let (server, rig) = setup();
    let elsewhere = Server::start(Jira::new(EMAIL, TOKEN));
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    server.fail_next(
        1,
        Reply::empty(307).with_header(
            "location",
            &format!("{}/rest/api/3/issue/{key}", elsewhere.url()),
        ),
    );
    let err = rig.err("get_issue", &json!({ "issue": key }), "act-redirect", 1);
    expect_permanent(&err, "307");
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    finish(&server, &rig);
}

fn setup_with_timeout(timeout_ms: u64) -> (Server<Jira>, Rig) {
    // Load the spec now, not while a call's deadline runs.
    jira_spec();
    let server = Server::start(Jira::new(EMAIL, TOKEN));
    let rig = Rig::configured(
        "jira",
        &[("base_url", server.url().as_str())],
        &[("email", EMAIL), ("api_token", TOKEN)],
        |c| c.timeout_ms = timeout_ms,
    );
    (server, rig)
}

/// Jira created the issue but its answer came too late: the call failed (retryable),
/// and the retry finds the issue instead of creating a second one.
#[test]
fn create_issue_whose_answer_was_lost_is_not_duplicated() {
    let (server, rig) = setup_with_timeout(1_000);
    server.delay_next(1, 4_000);
    let err = rig.err(
        "create_issue",
        &json!({ "project": "OPS", "summary": "Once" }),
        "act-lost-answer",
        1,
    );
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(server.with(|j| j.issues.len()), 1, "Jira did create it");
    let out = rig.ok(
        "create_issue",
        &json!({ "project": "OPS", "summary": "Once" }),
        "act-lost-answer",
        2,
    );
    assert_eq!(out["key"], "OPS-1");
    assert_eq!(server.with(|j| j.issues.len()), 1);
    assert_eq!(
        lines(&server),
        ["POST /rest/api/3/issue", "POST /rest/api/3/search/jql"]
    );
    finish(&server, &rig);
}

/// The same for a comment.
#[test]
fn comment_whose_answer_was_lost_is_not_duplicated() {
    let (server, rig) = setup_with_timeout(1_000);
    let key = server.with(|j| j.seed_issue("OPS", "Deploy", "To Do"));
    server.delay_next(1, 4_000);
    let err = rig.err(
        "comment",
        &json!({ "issue": key, "body": "Once." }),
        "act-lost-c",
        1,
    );
    assert!(err.is_retryable(), "{err:?}");
    let out = rig.ok(
        "comment",
        &json!({ "issue": key, "body": "Once." }),
        "act-lost-c",
        2,
    );
    let comments = server.with(|j| j.issue(&key).unwrap().comments.clone());
    assert_eq!(comments.len(), 1);
    assert_eq!(out["id"], json!(comments[0].id));
    finish(&server, &rig);
}
