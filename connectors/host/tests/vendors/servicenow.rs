//! ServiceNow's Table API (`/api/now/table/{table}[/{sys_id}]`), shapes per
//! ../shared/reference/integrations.md §6.2 and the recorded responses in
//! ../shared/oracles/servicenow/table-api/ (the `incident` table starts with the
//! recorded incidents).
//!
//! - Responses wrap in `{"result": …}`; every value is a string; reference fields come
//!   back as `{"link", "value"}`; new records get a 32-hex `sys_id`, a `number`, and
//!   the `sys_*` fields; `POST` answers 201 with `Location`, `PATCH`/`PUT` merge the
//!   given fields (200), journal fields (`work_notes`, `comments`) append to the
//!   journal and read back as `""`.
//! - Tables: `change_request`, `incident`, `sysapproval_approver`; any other is 400
//!   `Invalid table`. `GET` lists take `sysparm_query` (`field=value` terms joined by
//!   `^`, `field!=value`, `ORDERBY…`), `sysparm_fields`, `sysparm_limit`, … .
//! - Wrong shapes (a body that is not a JSON object of scalar values, an unknown
//!   `sysparm_*`, a write to a `sys_*` field, an approval row without `sysapproval` and
//!   `approver` sys_ids or with an unknown `state`, a missing JSON `Content-Type` or
//!   `Accept`, a wrong `User-Agent`) are recorded as violations; those of the request
//!   itself are answered 400 with ServiceNow's error body.
//! - Basic auth; a wrong one is 401.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::server::{Recorded, Reply, Vendor, basic_auth};

/// Tables the server knows, with their reference fields (field → referenced table).
pub const TABLES: [(&str, &[(&str, &str)]); 3] = [
    (
        "change_request",
        &[
            ("assignment_group", "sys_user_group"),
            ("assigned_to", "sys_user"),
            ("requested_by", "sys_user"),
            ("cmdb_ci", "cmdb_ci"),
        ],
    ),
    (
        "incident",
        &[
            ("assignment_group", "sys_user_group"),
            ("assigned_to", "sys_user"),
            ("caller_id", "sys_user"),
            ("cmdb_ci", "cmdb_ci"),
            ("rfc", "change_request"),
            ("caused_by", "change_request"),
        ],
    ),
    (
        "sysapproval_approver",
        &[
            ("approver", "sys_user"),
            ("sysapproval", "task"),
            ("document_id", "task"),
            ("group", "sysapproval_group"),
        ],
    ),
];

/// Journal fields: written by PATCH, read back empty.
pub const JOURNAL_FIELDS: [&str; 2] = ["work_notes", "comments"];

/// Choice values of `sysapproval_approver.state`.
pub const APPROVAL_STATES: [&str; 7] = [
    "requested",
    "approved",
    "rejected",
    "cancelled",
    "not requested",
    "not_required",
    "duplicate",
];

const KNOWN_SYSPARMS: [&str; 11] = [
    "sysparm_query",
    "sysparm_fields",
    "sysparm_display_value",
    "sysparm_exclude_reference_link",
    "sysparm_limit",
    "sysparm_offset",
    "sysparm_no_count",
    "sysparm_view",
    "sysparm_query_category",
    "sysparm_suppress_pagination_header",
    "sysparm_input_display_value",
];

/// One journal entry (a work note or a comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The table.
    pub table: String,
    /// The record.
    pub sys_id: String,
    /// `work_notes` or `comments`.
    pub field: String,
    /// The text.
    pub text: String,
}

/// A ServiceNow instance.
#[derive(Debug)]
pub struct ServiceNow {
    auth: String,
    user: String,
    /// Records by table.
    pub tables: BTreeMap<String, Vec<Map<String, Value>>>,
    /// Work notes and comments, in order.
    pub journal: Vec<JournalEntry>,
    /// Every violation seen, one line each.
    pub violations: Vec<String>,
    /// Requests answered 401.
    pub unauthorized: usize,
    next: u64,
}

/// The recorded `GET /api/now/table/incident` response's records.
pub fn recorded_incidents() -> Vec<Map<String, Value>> {
    let path = super::host_dir().join(
        "../../../shared/oracles/servicenow/table-api/jupiterone-recorded/incident_incident_2.json",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["response"]["body"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no response.body.result", path.display()))
        .iter()
        .filter_map(|r| r.as_object().cloned())
        .collect()
}

/// ServiceNow's error body.
pub fn sn_error(message: &str, detail: Option<&str>) -> Value {
    json!({ "error": { "message": message, "detail": detail }, "status": "failure" })
}

fn is_sys_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn references(table: &str) -> &'static [(&'static str, &'static str)] {
    TABLES
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, r)| *r)
        .unwrap_or(&[])
}

impl ServiceNow {
    /// An instance accepting Basic `user:password`, with the recorded incidents.
    pub fn new(user: &str, password: &str) -> ServiceNow {
        let mut tables = BTreeMap::new();
        for (t, _) in TABLES {
            tables.insert(t.to_owned(), Vec::new());
        }
        tables.insert("incident".to_owned(), recorded_incidents());
        ServiceNow {
            auth: basic_auth(user, password),
            user: user.to_owned(),
            tables,
            journal: Vec::new(),
            violations: Vec::new(),
            unauthorized: 0,
            next: 0,
        }
    }

    /// A new 32-hex sys_id.
    pub fn new_sys_id(&mut self) -> String {
        self.next += 1;
        hex::encode(Sha256::digest(format!("steward-test-{}", self.next)))[..32].to_owned()
    }

    fn now(&self) -> String {
        format!(
            "2026-01-07 10:{:02}:{:02}",
            (self.next / 60) % 60,
            self.next % 60
        )
    }

    /// The record `sys_id` of `table`.
    pub fn record(&self, table: &str, sys_id: &str) -> Option<&Map<String, Value>> {
        self.tables
            .get(table)?
            .iter()
            .find(|r| r.get("sys_id").and_then(Value::as_str) == Some(sys_id))
    }

    /// Inserts a record directly (not through the API) with the given string fields;
    /// returns its sys_id.
    pub fn seed(&mut self, table: &str, fields: &[(&str, &str)]) -> String {
        let base = "https://instance.service-now.com";
        let fields: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let record = self.new_record(base, table, &fields);
        let id = record["sys_id"].as_str().unwrap_or_default().to_owned();
        self.tables
            .entry(table.to_owned())
            .or_default()
            .push(record);
        id
    }

    fn value(base: &str, table: &str, field: &str, v: &Value) -> Value {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        match references(table).iter().find(|(f, _)| *f == field) {
            Some((_, target)) if !text.is_empty() => json!({
                "link": format!("{base}/api/now/table/{target}/{text}"),
                "value": text
            }),
            _ => Value::String(text),
        }
    }

    fn new_record(
        &mut self,
        base: &str,
        table: &str,
        fields: &Map<String, Value>,
    ) -> Map<String, Value> {
        let sys_id = self.new_sys_id();
        let now = self.now();
        let count = self.tables.get(table).map_or(0, Vec::len) + 1;
        let mut r = Map::new();
        match table {
            "change_request" => {
                r.insert("number".into(), json!(format!("CHG{:07}", 30000 + count)));
                r.insert("state".into(), json!("-5"));
                r.insert("approval".into(), json!("not requested"));
                r.insert("type".into(), json!("normal"));
                r.insert("active".into(), json!("true"));
                r.insert("short_description".into(), json!(""));
            }
            "incident" => {
                r.insert("number".into(), json!(format!("INC{:07}", 10000 + count)));
                r.insert("state".into(), json!("1"));
                r.insert("active".into(), json!("true"));
                r.insert("short_description".into(), json!(""));
            }
            "sysapproval_approver" => {
                r.insert("state".into(), json!("requested"));
                r.insert("comments".into(), json!(""));
            }
            _ => {}
        }
        for j in JOURNAL_FIELDS {
            r.insert(j.into(), json!(""));
        }
        for (k, v) in fields {
            if !JOURNAL_FIELDS.contains(&k.as_str()) {
                r.insert(k.clone(), Self::value(base, table, k, v));
            }
        }
        if table == "sysapproval_approver"
            && let Some(target) = fields.get("sysapproval").and_then(Value::as_str)
        {
            let source = ["change_request", "incident"]
                .into_iter()
                .find(|t| self.record(t, target).is_some())
                .unwrap_or("change_request");
            r.insert("source_table".into(), json!(source));
            r.insert(
                "document_id".into(),
                Self::value(base, table, "document_id", &json!(target)),
            );
        }
        r.insert("sys_id".into(), json!(sys_id));
        r.insert("sys_class_name".into(), json!(table));
        r.insert("sys_created_on".into(), json!(now));
        r.insert("sys_created_by".into(), json!(self.user));
        r.insert("sys_updated_on".into(), json!(now));
        r.insert("sys_updated_by".into(), json!(self.user));
        r.insert("sys_mod_count".into(), json!("0"));
        r
    }

    fn journal_writes(&mut self, table: &str, sys_id: &str, fields: &Map<String, Value>) {
        for j in JOURNAL_FIELDS {
            if let Some(text) = fields.get(j).and_then(Value::as_str)
                && !text.is_empty()
            {
                self.journal.push(JournalEntry {
                    table: table.to_owned(),
                    sys_id: sys_id.to_owned(),
                    field: j.to_owned(),
                    text: text.to_owned(),
                });
            }
        }
    }

    /// Shape problems of a write body (`POST`/`PATCH`/`PUT`).
    fn body_problems(table: &str, method: &str, body: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(fields) = body.as_object() else {
            problems.push(format!(
                "the body must be a JSON object of field/value pairs, got {body}"
            ));
            return problems;
        };
        for (k, v) in fields {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                problems.push(format!(
                    "`{k}` is not a column name (lower-case letters, digits, `_`)"
                ));
            }
            if k.starts_with("sys_") {
                problems.push(format!("`{k}` is a system field, not writable"));
            }
            if !(v.is_string() || v.is_number() || v.is_boolean()) {
                problems.push(format!(
                    "`{k}`: a field value is a string (or a number/boolean), got {v}"
                ));
            }
        }
        if table == "sysapproval_approver" {
            if method == "POST" {
                for f in ["sysapproval", "approver"] {
                    match fields.get(f).and_then(Value::as_str) {
                        Some(id) if is_sys_id(id) => {}
                        other => problems.push(format!(
                            "sysapproval_approver.{f} must be a 32-hex sys_id, got {other:?}"
                        )),
                    }
                }
            }
            if let Some(state) = fields.get("state")
                && !state.as_str().is_some_and(|s| APPROVAL_STATES.contains(&s))
            {
                problems.push(format!(
                    "sysapproval_approver.state {state} is not one of {APPROVAL_STATES:?}"
                ));
            }
        }
        problems
    }

    fn reject(&mut self, line: &str, problems: Vec<String>) -> Reply {
        let detail = problems.join("; ");
        self.violations
            .extend(problems.into_iter().map(|p| format!("{line}: {p}")));
        Reply::json(400, &sn_error("Bad request", Some(&detail)))
    }

    fn filtered(r: &Map<String, Value>, fields: Option<&str>) -> Value {
        match fields {
            None => Value::Object(r.clone()),
            Some(list) => Value::Object(
                list.split(',')
                    .filter_map(|f| r.get(f.trim()).map(|v| (f.trim().to_owned(), v.clone())))
                    .collect(),
            ),
        }
    }
}

/// A term of an encoded query: (field, negated, value).
type Term = (String, bool, String);
/// An ORDERBY: (field, descending).
type Order = (String, bool);

/// A parsed encoded query: its terms and its ORDERBY.
fn parse_sysparm_query(q: &str) -> Result<(Vec<Term>, Option<Order>), String> {
    let mut terms = Vec::new();
    let mut order = None;
    for term in q.split('^').filter(|t| !t.is_empty()) {
        if let Some(f) = term.strip_prefix("ORDERBYDESC") {
            order = Some((f.to_owned(), true));
        } else if let Some(f) = term.strip_prefix("ORDERBY") {
            order = Some((f.to_owned(), false));
        } else if term.starts_with("OR") || term.starts_with("NQ") {
            return Err(format!(
                "`{term}`: OR/NQ terms are not played by this test server"
            ));
        } else if let Some((f, v)) = term.split_once("!=") {
            terms.push((f.to_owned(), true, v.to_owned()));
        } else if let Some((f, v)) = term.split_once('=') {
            if !f
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
            {
                return Err(format!(
                    "`{term}`: unsupported operator (this server plays `=` and `!=`)"
                ));
            }
            terms.push((f.to_owned(), false, v.to_owned()));
        } else {
            return Err(format!("`{term}`: not a `field=value` term"));
        }
    }
    Ok((terms, order))
}

fn field_text(r: &Map<String, Value>, f: &str) -> String {
    match r.get(f) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

impl Vendor for ServiceNow {
    fn check(&mut self, req: &Recorded) -> Option<Reply> {
        let line = req.line();
        let segs = req.segments();
        if segs.len() < 4 || segs.len() > 5 || segs[..3] != ["api", "now", "table"] {
            return Some(self.reject(
                &line,
                vec!["not a Table API path (/api/now/table/{table}[/{sys_id}])".into()],
            ));
        }
        let table = segs[3].as_str();
        if !TABLES.iter().any(|(t, _)| *t == table) {
            self.violations
                .push(format!("{line}: Invalid table {table}"));
            return Some(Reply::json(
                400,
                &sn_error(&format!("Invalid table {table}"), None),
            ));
        }
        let with_id = segs.len() == 5;
        let allowed: &[&str] = if with_id {
            &["GET", "PATCH", "PUT", "DELETE"]
        } else {
            &["GET", "POST"]
        };
        if !allowed.contains(&req.method.as_str()) {
            return Some(self.reject(
                &line,
                vec![format!(
                    "method {} is not allowed here ({allowed:?})",
                    req.method
                )],
            ));
        }
        let mut problems = Vec::new();
        for (name, _) in req.query_pairs() {
            if !KNOWN_SYSPARMS.contains(&name.as_str()) {
                problems.push(format!("unknown query parameter `{name}`"));
            }
        }
        if let Some(q) = req.query_param("sysparm_query") {
            if req.method != "GET" || with_id {
                problems.push("sysparm_query applies to GET of a table".into());
            } else if let Err(e) = parse_sysparm_query(&q) {
                problems.push(e);
            }
        }
        if matches!(req.method.as_str(), "POST" | "PATCH" | "PUT") {
            if !req
                .header("content-type")
                .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
            {
                problems.push(format!(
                    "Content-Type {:?}, expected application/json",
                    req.header("content-type")
                ));
            }
            match req.body_json() {
                Some(body) => problems.extend(Self::body_problems(table, &req.method, &body)),
                None => problems.push(format!("the body is not JSON: {:?}", req.text())),
            }
        } else if !req.body.is_empty() {
            problems.push(format!("{} takes no body", req.method));
        }
        if !problems.is_empty() {
            return Some(self.reject(&line, problems));
        }
        if !req
            .header("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("application/json"))
        {
            self.violations.push(format!(
                "contract: {line}: Accept {:?}, expected application/json",
                req.header("accept")
            ));
        }
        match req.header("user-agent") {
            Some(ua) if ua.starts_with("steward-connector-servicenow/") => {}
            other => self.violations.push(format!(
                "contract: {line}: User-Agent {other:?}, expected steward-connector-servicenow/VERSION"
            )),
        }
        if req.header("authorization") != Some(self.auth.as_str()) {
            self.unauthorized += 1;
            return Some(Reply::json(
                401,
                &sn_error(
                    "User Not Authenticated",
                    Some("Required to provide Auth information"),
                ),
            ));
        }
        None
    }

    fn handle(&mut self, req: &Recorded) -> Reply {
        let base = format!("http://{}", req.header("host").unwrap_or("127.0.0.1"));
        let segs = req.segments();
        let table = segs[3].clone();
        let not_found = || {
            Reply::json(
                404,
                &sn_error(
                    "No Record found",
                    Some("Record doesn't exist or ACL restricts the record retrieval"),
                ),
            )
        };
        let fields_param = req.query_param("sysparm_fields");
        match (req.method.as_str(), segs.get(4)) {
            ("POST", None) => {
                let body = req.json();
                let fields = body.as_object().cloned().unwrap_or_default();
                let record = self.new_record(&base, &table, &fields);
                let sys_id = record["sys_id"].as_str().unwrap_or_default().to_owned();
                self.journal_writes(&table, &sys_id, &fields);
                self.tables
                    .entry(table.clone())
                    .or_default()
                    .push(record.clone());
                Reply::json(201, &json!({ "result": record })).with_header(
                    "location",
                    &format!("{base}/api/now/table/{table}/{sys_id}"),
                )
            }
            ("GET", None) => {
                let (terms, order) =
                    parse_sysparm_query(&req.query_param("sysparm_query").unwrap_or_default())
                        .unwrap_or_default();
                let mut rows: Vec<&Map<String, Value>> = self
                    .tables
                    .get(&table)
                    .into_iter()
                    .flatten()
                    .filter(|r| {
                        terms
                            .iter()
                            .all(|(f, neg, v)| (field_text(r, f) == *v) != *neg)
                    })
                    .collect();
                if let Some((f, desc)) = order {
                    rows.sort_by_key(|r| field_text(r, &f));
                    if desc {
                        rows.reverse();
                    }
                }
                let total = rows.len();
                let offset: usize = req
                    .query_param("sysparm_offset")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(0);
                let limit: usize = req
                    .query_param("sysparm_limit")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(10_000);
                let result: Vec<Value> = rows
                    .into_iter()
                    .skip(offset)
                    .take(limit)
                    .map(|r| Self::filtered(r, fields_param.as_deref()))
                    .collect();
                Reply::json(200, &json!({ "result": result }))
                    .with_header("x-total-count", &total.to_string())
            }
            ("GET", Some(id)) => match self.record(&table, id) {
                Some(r) => Reply::json(
                    200,
                    &json!({ "result": Self::filtered(r, fields_param.as_deref()) }),
                ),
                None => not_found(),
            },
            ("PATCH" | "PUT", Some(id)) => {
                let id = id.clone();
                let body = req.json();
                let fields = body.as_object().cloned().unwrap_or_default();
                if self.record(&table, &id).is_none() {
                    return not_found();
                }
                self.journal_writes(&table, &id, &fields);
                self.next += 1;
                let now = self.now();
                let user = self.user.clone();
                let rows = self.tables.get_mut(&table).expect("table");
                let r = rows
                    .iter_mut()
                    .find(|r| r.get("sys_id").and_then(Value::as_str) == Some(id.as_str()))
                    .expect("record");
                for (k, v) in &fields {
                    if !JOURNAL_FIELDS.contains(&k.as_str()) {
                        r.insert(k.clone(), Self::value(&base, &table, k, v));
                    }
                }
                let count: u64 = r
                    .get("sys_mod_count")
                    .and_then(Value::as_str)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                r.insert("sys_mod_count".into(), json!((count + 1).to_string()));
                r.insert("sys_updated_on".into(), json!(now));
                r.insert("sys_updated_by".into(), json!(user));
                Reply::json(200, &json!({ "result": r.clone() }))
            }
            ("DELETE", Some(id)) => {
                let id = id.clone();
                let rows = self.tables.entry(table).or_default();
                let before = rows.len();
                rows.retain(|r| r.get("sys_id").and_then(Value::as_str) != Some(id.as_str()));
                if rows.len() == before {
                    not_found()
                } else {
                    Reply::empty(204)
                }
            }
            _ => Reply::json(400, &sn_error("Bad request", None)),
        }
    }
}

/// How a Table API record departs from the shape of the recorded answers: every value
/// is a string, or a reference `{"link", "value"}` of strings.
pub fn shape_problems(record: &Map<String, Value>) -> Vec<String> {
    record
        .iter()
        .filter(|(_, v)| match v {
            Value::String(_) => false,
            Value::Object(o) => {
                !(o.len() == 2
                    && o.get("link").is_some_and(Value::is_string)
                    && o.get("value").is_some_and(Value::is_string))
            }
            _ => true,
        })
        .map(|(k, v)| format!("`{k}`: {v} is neither a string nor a {{link, value}} reference"))
        .collect()
}
