//! The ServiceNow connector (connectors/dist/servicenow.wasm) against a loopback Table
//! API with the shapes of ../shared/reference/integrations.md §6.2 and the recorded
//! responses in ../shared/oracles/servicenow/; plus the server's own tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod vendors;

use serde_json::{Value, json};
use vendors::harness::{Rig, assert_operation, expect_permanent, expect_retryable};
use vendors::server::{Down, Reply, Server, basic_auth, send};
use vendors::servicenow::{ServiceNow, recorded_incidents, shape_problems, sn_error};

const USER: &str = "steward.integration";
const PASSWORD: &str = "SnP4ss-w0rd-3e1f9a";

// ---------------------------------------------------------------------------------
// The server on its own (raw HTTP).

#[test]
fn servicenow_server_plays_the_table_api() {
    let server = Server::start(ServiceNow::new(USER, PASSWORD));
    let auth = basic_auth(USER, PASSWORD);
    let h = [
        ("authorization", auth.as_str()),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "steward-connector-servicenow/test"),
    ];
    let url = server.url();
    let (status, headers, text) = send(
        "POST",
        &format!("{url}/api/now/table/change_request"),
        &h,
        br#"{"short_description":"Upgrade","risk":3}"#,
    );
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let sys_id = created["result"]["sys_id"].as_str().unwrap().to_owned();
    assert_eq!(sys_id.len(), 32);
    assert_eq!(
        created["result"]["risk"], "3",
        "values come back as strings"
    );
    assert_eq!(created["result"]["number"], "CHG0030001");
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "location" && v.ends_with(&sys_id))
    );
    // PATCH merges; journal fields go to the journal and read back empty.
    let (status, _, text) = send(
        "PATCH",
        &format!("{url}/api/now/table/change_request/{sys_id}"),
        &h,
        br#"{"state":"-1","work_notes":"started"}"#,
    );
    assert_eq!(status, 200, "{text}");
    let patched: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(patched["result"]["state"], "-1");
    assert_eq!(patched["result"]["short_description"], "Upgrade");
    assert_eq!(patched["result"]["sys_mod_count"], "1");
    assert_eq!(patched["result"]["work_notes"], "");
    assert_eq!(server.with(|s| s.journal[0].text.clone()), "started");
    // Approvals: reference fields come back as {link, value}; sysparm_query filters.
    let approver = "6816f79cc0a8016401c5a33be04be441";
    let body = json!({ "sysapproval": sys_id, "approver": approver, "state": "requested" });
    let (status, _, text) = send(
        "POST",
        &format!("{url}/api/now/table/sysapproval_approver"),
        &h,
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{text}");
    let row: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(row["result"]["approver"]["value"], approver);
    assert_eq!(row["result"]["source_table"], "change_request");
    let (status, headers, text) = send(
        "GET",
        &format!("{url}/api/now/table/sysapproval_approver?sysparm_query=sysapproval%3D{sys_id}"),
        &[h[0], h[1], h[3]],
        b"",
    );
    assert_eq!(status, 200, "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["result"].as_array().unwrap().len(), 1);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "x-total-count" && v == "1")
    );
    // Records have the recorded answers' shape (the recorded ones too).
    for r in recorded_incidents() {
        assert_eq!(shape_problems(&r), Vec::<String>::new());
    }
    assert_eq!(
        shape_problems(row["result"].as_object().unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        shape_problems(patched["result"].as_object().unwrap()),
        Vec::<String>::new()
    );
    // The recorded incidents are there.
    let first = recorded_incidents()[0].clone();
    let id = first["sys_id"].as_str().unwrap();
    let (status, _, text) = send(
        "GET",
        &format!("{url}/api/now/table/incident/{id}"),
        &[h[0], h[1], h[3]],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["result"],
        Value::Object(first)
    );
    assert!(
        server.with(|s| s.violations.is_empty()),
        "{:?}",
        server.with(|s| s.violations.clone())
    );
    // Wrong shapes: 400, recorded.
    for (method, path, body, why) in [
        (
            "POST",
            "/api/now/table/cmdb_ci",
            "{}",
            "Invalid table cmdb_ci",
        ),
        (
            "POST",
            "/api/now/table/incident",
            r#"{"short_description":{"text":"x"}}"#,
            "a field value is a string",
        ),
        ("POST", "/api/now/table/incident", r#"[1]"#, "JSON object"),
        (
            "POST",
            "/api/now/table/incident",
            r#"{"sys_id":"x"}"#,
            "system field",
        ),
        (
            "POST",
            "/api/now/table/sysapproval_approver",
            r#"{"approver":"bob"}"#,
            "32-hex sys_id",
        ),
        (
            "GET",
            "/api/now/table/incident?sysparm_query=priority%3C%3D2",
            "",
            "unsupported operator",
        ),
        (
            "GET",
            "/api/now/table/incident?limit=5",
            "",
            "unknown query parameter",
        ),
        ("PATCH", "/api/now/table/incident", "{}", "not allowed"),
    ] {
        let (status, _, text) = send(method, &format!("{url}{path}"), &h, body.as_bytes());
        assert_eq!(status, 400, "{method} {path}: {text}");
        let last = server.with(|s| s.violations.last().cloned().unwrap_or_default());
        assert!(last.contains(why), "{method} {path}: {last}");
    }
    // Authentication.
    let (status, _, text) = send(
        "GET",
        &format!("{url}/api/now/table/incident"),
        &[h[1]],
        b"",
    );
    assert_eq!(status, 401);
    assert!(text.contains("User Not Authenticated"));
}

// ---------------------------------------------------------------------------------
// The connector.

fn setup() -> (Server<ServiceNow>, Rig) {
    let server = Server::start(ServiceNow::new(USER, PASSWORD));
    let rig = Rig::new(
        "servicenow",
        &[("instance_url", server.url().as_str())],
        &[("username", USER), ("password", PASSWORD)],
    );
    (server, rig)
}

/// Every request followed the Table API shapes and the contract; the credentials were
/// right; no secret was logged.
fn finish(server: &Server<ServiceNow>, rig: &Rig) {
    let (violations, unauthorized) = server.with(|s| (s.violations.clone(), s.unauthorized));
    assert!(
        violations.is_empty(),
        "ServiceNow saw {} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(unauthorized, 0);
    let auth = basic_auth(USER, PASSWORD);
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
}

fn lines(server: &Server<ServiceNow>) -> Vec<String> {
    server.requests().iter().map(|r| r.line()).collect()
}

#[test]
fn describe_lists_the_contract_operations() {
    let (_server, rig) = setup();
    let d = rig.describe();
    assert_eq!(d.name, "servicenow");
    assert_operation(
        &d,
        "create_record",
        &["table", "fields"],
        &["table", "fields"],
    );
    assert_operation(
        &d,
        "update_record",
        &["table", "sys_id", "fields"],
        &["table", "sys_id", "fields"],
    );
    assert_operation(&d, "get_record", &["table", "sys_id"], &["table", "sys_id"]);
    assert_operation(
        &d,
        "add_work_note",
        &["table", "sys_id", "text"],
        &["table", "sys_id", "text"],
    );
    assert_operation(
        &d,
        "request_approval",
        &["sys_id", "approver"],
        &["sys_id", "approver"],
    );
    assert_operation(&d, "get_approvals", &["sys_id"], &["sys_id"]);
    for op in ["create_record", "update_record", "get_record"] {
        let schema: Value = serde_json::from_str(
            &d.operations
                .iter()
                .find(|o| o.name == op)
                .unwrap()
                .args_schema,
        )
        .unwrap();
        let mut tables: Vec<&str> = schema["properties"]["table"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        tables.sort_unstable();
        assert_eq!(
            tables,
            ["change_request", "incident", "sysapproval_approver"],
            "{op}"
        );
    }
}

#[test]
fn create_record_posts_the_fields_and_returns_the_result() {
    let (server, rig) = setup();
    let fields = json!({ "short_description": "Upgrade PostgreSQL on billing-db", "type": "normal", "risk": "3" });
    let out = rig.ok(
        "create_record",
        &json!({ "table": "change_request", "fields": fields }),
        "act-sn-1",
        1,
    );
    assert_eq!(lines(&server), ["POST /api/now/table/change_request"]);
    let req = &server.requests()[0];
    assert_eq!(req.json(), fields);
    assert!(
        req.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let stored = server.with(|s| s.tables["change_request"][0].clone());
    assert_eq!(out, Value::Object(stored), "the connector returns `result`");
    assert_eq!(
        shape_problems(out.as_object().unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(out["number"], "CHG0030001");
    assert_eq!(out["sys_id"].as_str().unwrap().len(), 32);
    let out = rig.ok("create_record", &json!({ "table": "incident", "fields": { "short_description": "db down", "urgency": "1" } }), "act-sn-2", 1);
    assert_eq!(out["state"], "1");
    finish(&server, &rig);
}

#[test]
fn update_record_patches_only_the_given_fields() {
    let (server, rig) = setup();
    let id = server.with(|s| {
        s.seed(
            "change_request",
            &[("short_description", "Upgrade"), ("state", "-2")],
        )
    });
    let out = rig.ok(
        "update_record",
        &json!({ "table": "change_request", "sys_id": id, "fields": { "state": "-3" } }),
        "act-u",
        1,
    );
    assert_eq!(
        lines(&server),
        [format!("PATCH /api/now/table/change_request/{id}")]
    );
    assert_eq!(server.requests()[0].json(), json!({ "state": "-3" }));
    assert_eq!(out["state"], "-3");
    assert_eq!(out["short_description"], "Upgrade");
    assert_eq!(out["sys_mod_count"], "1");
    finish(&server, &rig);
}

#[test]
fn get_record_returns_the_recorded_incident() {
    let (server, rig) = setup();
    let recorded = recorded_incidents()[1].clone();
    let id = recorded["sys_id"].as_str().unwrap().to_owned();
    let out = rig.ok(
        "get_record",
        &json!({ "table": "incident", "sys_id": id }),
        "act-g",
        1,
    );
    assert_eq!(out, Value::Object(recorded));
    assert_eq!(
        lines(&server),
        [format!("GET /api/now/table/incident/{id}")]
    );
    assert!(server.requests()[0].body.is_empty());
    finish(&server, &rig);
}

#[test]
fn add_work_note_patches_the_journal_field() {
    let (server, rig) = setup();
    let id = server.with(|s| s.seed("incident", &[("short_description", "db down")]));
    rig.ok(
        "add_work_note",
        &json!({ "table": "incident", "sys_id": id, "text": "Escalated by rule INC-02 (15 min unacknowledged)." }),
        "act-w",
        1,
    );
    assert_eq!(
        lines(&server),
        [format!("PATCH /api/now/table/incident/{id}")]
    );
    assert_eq!(
        server.requests()[0].json(),
        json!({ "work_notes": "Escalated by rule INC-02 (15 min unacknowledged)." })
    );
    let journal = server.with(|s| s.journal.clone());
    assert_eq!(journal.len(), 1);
    assert_eq!(
        (journal[0].field.as_str(), journal[0].sys_id.as_str()),
        ("work_notes", id.as_str())
    );
    finish(&server, &rig);
}

#[test]
fn request_approval_creates_an_approver_row() {
    let (server, rig) = setup();
    let change = server.with(|s| s.seed("change_request", &[("short_description", "Upgrade")]));
    let approver = "6816f79cc0a8016401c5a33be04be441";
    let out = rig.ok(
        "request_approval",
        &json!({ "sys_id": change, "approver": approver }),
        "act-a",
        1,
    );
    assert_eq!(lines(&server), ["POST /api/now/table/sysapproval_approver"]);
    assert_eq!(
        server.requests()[0].json(),
        json!({ "sysapproval": change, "approver": approver, "state": "requested" })
    );
    assert_eq!(out["state"], "requested");
    assert_eq!(out["approver"]["value"], approver);
    assert_eq!(out["sysapproval"]["value"], change);
    finish(&server, &rig);
}

#[test]
fn get_approvals_queries_by_the_record() {
    let (server, rig) = setup();
    let (change, other) = server.with(|s| {
        let change = s.seed("change_request", &[("short_description", "Upgrade")]);
        let other = s.seed("change_request", &[("short_description", "Other")]);
        let a = s.new_sys_id();
        let b = s.new_sys_id();
        s.seed(
            "sysapproval_approver",
            &[
                ("sysapproval", change.as_str()),
                ("approver", a.as_str()),
                ("state", "approved"),
            ],
        );
        s.seed(
            "sysapproval_approver",
            &[
                ("sysapproval", change.as_str()),
                ("approver", b.as_str()),
                ("state", "requested"),
            ],
        );
        s.seed(
            "sysapproval_approver",
            &[
                ("sysapproval", other.as_str()),
                ("approver", a.as_str()),
                ("state", "rejected"),
            ],
        );
        (change, other)
    });
    let out = rig.ok("get_approvals", &json!({ "sys_id": change }), "act-q", 1);
    let approvals = out["approvals"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(approvals.len(), 2, "{out}");
    let mut states: Vec<&str> = approvals
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    states.sort_unstable();
    assert_eq!(states, ["approved", "requested"]);
    let req = &server.requests()[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/api/now/table/sysapproval_approver")
    );
    assert_eq!(
        req.query_param("sysparm_query"),
        Some(format!("sysapproval={change}"))
    );
    assert_eq!(server.requests().len(), 1);
    let out = rig.ok("get_approvals", &json!({ "sys_id": other }), "act-q2", 1);
    assert_eq!(out["approvals"].as_array().unwrap().len(), 1);
    finish(&server, &rig);
}

#[test]
fn tables_outside_the_contract_are_refused_before_any_request() {
    let (server, rig) = setup();
    for args in [
        json!({ "table": "sys_user", "fields": { "name": "x" } }),
        json!({ "table": "incident" }),
        json!({ "table": "incident", "fields": "short_description=x" }),
    ] {
        let err = rig.err("create_record", &args, "act-x", 1);
        assert!(!err.is_retryable(), "{args}: {err:?}");
    }
    let err = rig.err(
        "get_record",
        &json!({ "table": "cmdb_ci", "sys_id": "x" }),
        "act-x",
        1,
    );
    assert!(!err.is_retryable(), "{err:?}");
    assert!(server.requests().is_empty(), "{:?}", lines(&server));
}

#[test]
fn rate_limit_and_server_errors_are_retryable() {
    let (server, rig) = setup();
    let id = server.with(|s| s.seed("incident", &[("short_description", "db down")]));
    // integrations.md §6.3: 429 + Retry-After + this body.
    server.fail_next(
        1,
        Reply::json(
            429,
            &json!({ "error": { "message": "Rate limit exceeded", "detail": "Rate limit of 10 requests per hour for Table API exceeded" }, "status": "failure" }),
        )
        .with_header("retry-after", "5"),
    );
    let (_, after) = expect_retryable(&rig.err(
        "get_record",
        &json!({ "table": "incident", "sys_id": id }),
        "act-r",
        1,
    ));
    assert_eq!(after, Some(5000));
    for status in [500, 503] {
        server.fail_next(1, Reply::json(status, &sn_error("Internal error", None)));
        let err = rig.err(
            "add_work_note",
            &json!({ "table": "incident", "sys_id": id, "text": "x" }),
            "act-5",
            1,
        );
        expect_retryable(&err);
    }
    assert!(server.with(|s| s.journal.is_empty()));
    finish(&server, &rig);
}

#[test]
fn client_errors_are_permanent_with_the_vendors_message() {
    let (server, rig) = setup();
    let missing = "0123456789abcdef0123456789abcdef";
    let err = rig.err(
        "get_record",
        &json!({ "table": "incident", "sys_id": missing }),
        "act-404",
        1,
    );
    expect_permanent(&err, "No Record found");
    let err = rig.err(
        "update_record",
        &json!({ "table": "change_request", "sys_id": missing, "fields": { "state": "-1" } }),
        "act-404b",
        1,
    );
    expect_permanent(&err, "No Record found");
    server.fail_next(
        1,
        Reply::json(
            403,
            &sn_error(
                "Operation Failed",
                Some("ACL Exception Update Failed due to security constraints"),
            ),
        ),
    );
    let id = server.with(|s| s.seed("incident", &[]));
    let err = rig.err(
        "update_record",
        &json!({ "table": "incident", "sys_id": id, "fields": { "state": "6" } }),
        "act-403",
        1,
    );
    expect_permanent(&err, "Operation Failed");
    finish(&server, &rig);
}

#[test]
fn wrong_credentials_are_permanent_and_secrets_stay_out() {
    let server = Server::start(ServiceNow::new(USER, PASSWORD));
    let wrong = "SnWr0ng-pa55-77c1";
    let rig = Rig::new(
        "servicenow",
        &[("instance_url", server.url().as_str())],
        &[("username", USER), ("password", wrong)],
    );
    let err = rig.err(
        "get_approvals",
        &json!({ "sys_id": "0123456789abcdef0123456789abcdef" }),
        "act-401",
        1,
    );
    expect_permanent(&err, "User Not Authenticated");
    assert_eq!(server.with(|s| s.unauthorized), 1);
    rig.assert_logs_clean(&[]);
    // A vendor echoing the password: redacted by the host.
    let (server, rig) = setup();
    server.fail_next(
        1,
        Reply::json(400, &sn_error(&format!("bad password {PASSWORD}"), None)),
    );
    let err = rig.err(
        "get_approvals",
        &json!({ "sys_id": "0123456789abcdef0123456789abcdef" }),
        "act-echo",
        1,
    );
    let message = expect_permanent(&err, "bad password");
    assert!(!message.contains(PASSWORD));
    finish(&server, &rig);
}

/// A `sys_id` argument cannot add terms to the encoded query of `get_approvals`
/// (`^` separates terms, `^OR` adds alternatives): it is refused before any request,
/// or sent so that ServiceNow reads it as one value.
#[test]
fn get_approvals_cannot_be_widened_by_the_sys_id() {
    let (server, rig) = setup();
    let change = server.with(|s| s.seed("change_request", &[("short_description", "Upgrade")]));
    let hostile = format!("{change}^ORsysapproval!={change}");
    let out = rig.call("get_approvals", &json!({ "sys_id": hostile }), "act-inj", 1);
    if let Ok(out) = &out {
        assert_eq!(out["approvals"], json!([]), "{out}");
    }
    let violations = server.with(|s| s.violations.clone());
    assert!(violations.is_empty(), "{violations:?}");
    for r in server.requests() {
        let q = r.query_param("sysparm_query").unwrap_or_default();
        assert!(!q.contains('^'), "the sys_id added query terms: {q}");
    }
}

#[test]
fn unreachable_instance_is_retryable() {
    let down = Down::start();
    let rig = Rig::new(
        "servicenow",
        &[("instance_url", down.url().as_str())],
        &[("username", USER), ("password", PASSWORD)],
    );
    let err = rig.err(
        "get_record",
        &json!({ "table": "incident", "sys_id": "0123456789abcdef0123456789abcdef" }),
        "act-down",
        1,
    );
    assert!(err.is_retryable(), "{err:?}");
}
