//! Jira Cloud REST v3, played statefully enough for the connector contract, with every
//! request validated against Atlassian's OpenAPI spec (see [`super::openapi`]).
//!
//! Each request goes through, in order:
//! 1. the spec (method, path template, parameters, body schema): a violation is
//!    recorded and answered `400 {"errorMessages": [...]}`;
//! 2. what Jira Cloud enforces beyond the schema (fields a create needs, Atlassian
//!    Document Format for rich text, labels without spaces, …): recorded and answered
//!    400 the same way;
//! 3. the contract's headers (`User-Agent: steward-connector-jira/…`, `Accept` and
//!    `Content-Type` JSON): recorded as violations (answered normally);
//! 4. Basic auth: a wrong or missing `Authorization` is answered 401.
//!
//! The server's own answers are validated against the responses the spec documents
//! for the operation (status and schema); a mismatch is recorded as a `server:`
//! violation, so the fake stays faithful to Jira.
//!
//! Workflow: `To Do` → (`Start Progress`) → `In Progress` → (`Done`) → `Done`
//! → (`Reopen`) → `To Do`; `Done` is also reachable from `To Do`, and `Stop Progress`
//! leads back from `In Progress`. Transition ids: 11 Start Progress, 21 Stop Progress,
//! 31 Done, 41 Reopen. Changes (as in examples/iso20000) follow `Submitted` →
//! (`Assess`) → `Assessing` → (`Reject`) → `Rejected`, and `Reject` is also available
//! from `Submitted`: ids 51 Assess, 61 Reject.

use serde_json::{Map, Value, json};

use super::openapi::{Matched, Request, jira_spec};
use super::server::{Recorded, Reply, Vendor, basic_auth};

/// A status of the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Its id.
    pub id: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Its category: (id, key, name, colour).
    pub category: (u32, &'static str, &'static str, &'static str),
}

/// `To Do`, `In Progress`, `Done`; `Submitted`, `Assessing`, `Rejected`.
pub const STATUSES: [Status; 6] = [
    Status {
        id: "10000",
        name: "To Do",
        category: (2, "new", "To Do", "blue-gray"),
    },
    Status {
        id: "10001",
        name: "In Progress",
        category: (4, "indeterminate", "In Progress", "yellow"),
    },
    Status {
        id: "10002",
        name: "Done",
        category: (3, "done", "Done", "green"),
    },
    Status {
        id: "10003",
        name: "Submitted",
        category: (2, "new", "To Do", "blue-gray"),
    },
    Status {
        id: "10004",
        name: "Assessing",
        category: (4, "indeterminate", "In Progress", "yellow"),
    },
    Status {
        id: "10005",
        name: "Rejected",
        category: (3, "done", "Done", "green"),
    },
];

/// (from status, transition id, transition name, to status).
pub const TRANSITIONS: [(&str, &str, &str, &str); 8] = [
    ("To Do", "11", "Start Progress", "In Progress"),
    ("To Do", "31", "Done", "Done"),
    ("In Progress", "21", "Stop Progress", "To Do"),
    ("In Progress", "31", "Done", "Done"),
    ("Done", "41", "Reopen", "To Do"),
    ("Submitted", "51", "Assess", "Assessing"),
    ("Submitted", "61", "Reject", "Rejected"),
    ("Assessing", "61", "Reject", "Rejected"),
];

/// Comments per page of `GET …/comment` when `maxResults` is not given (the spec's
/// default).
pub const COMMENT_PAGE: usize = 100;

/// Issue types the projects accept.
pub const ISSUE_TYPES: [&str; 4] = ["Task", "Bug", "Story", "Change"];

/// A comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// Its id.
    pub id: String,
    /// Its body (ADF).
    pub body: Value,
    /// Its entity properties, key → value.
    pub properties: Map<String, Value>,
}

/// An issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Numeric id, as a string.
    pub id: String,
    /// `PROJ-N`.
    pub key: String,
    /// Project key.
    pub project: String,
    /// Issue type name.
    pub issuetype: String,
    /// Summary.
    pub summary: String,
    /// Description (ADF), if any.
    pub description: Option<Value>,
    /// Labels.
    pub labels: Vec<String>,
    /// Current status name.
    pub status: String,
    /// Entity properties, key → value.
    pub properties: Map<String, Value>,
    /// Comments, oldest first.
    pub comments: Vec<Comment>,
}

/// The Jira Cloud site.
#[derive(Debug)]
pub struct Jira {
    auth: String,
    /// Project keys that exist.
    pub projects: Vec<String>,
    /// Issues, in creation order.
    pub issues: Vec<Issue>,
    /// Every violation seen (spec, Jira rules, contract headers), one line each.
    pub violations: Vec<String>,
    /// Requests validated against the spec (valid or not).
    pub validated: usize,
    /// Requests answered 401.
    pub unauthorized: usize,
    next_id: u64,
    next_comment: u64,
    /// The operation the request being served matched (set by `check`).
    matched: Option<Matched>,
}

impl Jira {
    /// A site with projects `OPS` and `CHG`, accepting Basic `email:token`.
    pub fn new(email: &str, token: &str) -> Jira {
        Jira {
            auth: basic_auth(email, token),
            projects: vec!["OPS".into(), "CHG".into()],
            issues: Vec::new(),
            violations: Vec::new(),
            validated: 0,
            unauthorized: 0,
            next_id: 10000,
            next_comment: 10100,
            matched: None,
        }
    }

    /// Adds an issue directly (not through the API); returns its key.
    pub fn seed_issue(&mut self, project: &str, summary: &str, status: &str) -> String {
        self.next_id += 1;
        let n = self.issues.iter().filter(|i| i.project == project).count() + 1;
        let issue = Issue {
            id: self.next_id.to_string(),
            key: format!("{project}-{n}"),
            project: project.to_owned(),
            issuetype: "Task".into(),
            summary: summary.to_owned(),
            description: None,
            labels: Vec::new(),
            status: status.to_owned(),
            properties: Map::new(),
            comments: Vec::new(),
        };
        let key = issue.key.clone();
        self.issues.push(issue);
        key
    }

    /// Adds `n` comments to an issue directly; the one at index `marked` (if any) carries
    /// the `steward` property with `key`. Returns the marked comment's id.
    pub fn seed_comments(
        &mut self,
        issue: &str,
        n: usize,
        marked: Option<(usize, &str)>,
    ) -> Option<String> {
        let mut marked_id = None;
        for i in 0..n {
            self.next_comment += 1;
            let id = self.next_comment.to_string();
            let mut properties = Map::new();
            if let Some((at, key)) = marked
                && at == i
            {
                properties.insert("steward".into(), json!({ "idempotency_key": key }));
                marked_id = Some(id.clone());
            }
            let body = json!({ "type": "doc", "version": 1, "content": [
                { "type": "paragraph", "content": [{ "type": "text", "text": format!("comment {i}") }] }
            ]});
            if let Some(target) = self.issue_mut(issue) {
                target.comments.push(Comment {
                    id,
                    body,
                    properties,
                });
            }
        }
        marked_id
    }

    /// The issue with this key or id.
    pub fn issue(&self, id_or_key: &str) -> Option<&Issue> {
        self.issues
            .iter()
            .find(|i| i.key == id_or_key || i.id == id_or_key)
    }

    fn issue_mut(&mut self, id_or_key: &str) -> Option<&mut Issue> {
        self.issues
            .iter_mut()
            .find(|i| i.key == id_or_key || i.id == id_or_key)
    }

    fn reject(&mut self, violations: Vec<String>) -> Reply {
        self.violations.extend(violations.iter().cloned());
        Reply::json(400, &json!({ "errorMessages": violations, "errors": {} }))
    }
}

/// Jira's error body.
pub fn jira_error(messages: &[&str], errors: Value) -> Value {
    json!({ "errorMessages": messages, "errors": errors })
}

fn not_found() -> Reply {
    Reply::json(
        404,
        &jira_error(
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        ),
    )
}

fn status(name: &str) -> Option<&'static Status> {
    STATUSES.iter().find(|s| s.name == name)
}

fn status_json(base: &str, s: &Status) -> Value {
    let (cid, ckey, cname, colour) = s.category;
    json!({
        "self": format!("{base}/rest/api/3/status/{}", s.id),
        "description": "",
        "iconUrl": format!("{base}/images/icons/statuses/generic.png"),
        "name": s.name,
        "id": s.id,
        "statusCategory": {
            "self": format!("{base}/rest/api/3/statuscategory/{cid}"),
            "id": cid, "key": ckey, "colorName": colour, "name": cname
        }
    })
}

/// Problems with an Atlassian Document Format document, as Jira reports them (an
/// empty list when it is a valid `doc`).
pub fn adf_problems(doc: &Value, field: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if doc.get("type") != Some(&json!("doc")) {
        problems.push(format!(
            "{field}: Operation value must be an Atlassian Document (type \"doc\"), got {doc}"
        ));
        return problems;
    }
    if doc.get("version") != Some(&json!(1)) {
        problems.push(format!(
            "{field}: an Atlassian Document needs \"version\": 1"
        ));
    }
    let Some(content) = doc.get("content").and_then(Value::as_array) else {
        problems.push(format!(
            "{field}: an Atlassian Document needs a \"content\" array"
        ));
        return problems;
    };
    for (i, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("paragraph") => {
                for (j, inline) in block
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    match inline.get("type").and_then(Value::as_str) {
                        Some("text") => match inline.get("text").and_then(Value::as_str) {
                            Some(t) if !t.is_empty() => {}
                            _ => problems.push(format!(
                                "{field}: content[{i}].content[{j}]: a text node needs a non-empty \"text\" (INVALID_INPUT)"
                            )),
                        },
                        Some("hardBreak") => {}
                        other => problems.push(format!(
                            "{field}: content[{i}].content[{j}]: unexpected inline node {other:?}"
                        )),
                    }
                }
            }
            Some(
                "heading" | "bulletList" | "orderedList" | "codeBlock" | "blockquote" | "rule"
                | "panel" | "table",
            ) => {}
            other => problems.push(format!(
                "{field}: content[{i}]: unexpected block node {other:?}"
            )),
        }
    }
    problems
}

fn label_problems(label: &Value) -> Option<String> {
    match label.as_str() {
        Some(l) if !l.is_empty() && !l.contains(char::is_whitespace) && l.len() <= 255 => None,
        _ => Some(format!(
            "labels: The label {label} is invalid (a non-empty string without spaces, at most 255 characters)"
        )),
    }
}

fn property_problems(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, p) in body
        .get("properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !p.get("key").is_some_and(Value::is_string) || p.get("value").is_none() {
            problems.push(format!(
                "properties[{i}]: `key` and `value` are required on create and update"
            ));
        }
    }
    problems
}

/// What Jira Cloud rejects beyond the spec's schemas, for the operations of the
/// connector contract.
pub fn jira_rule_problems(matched: &Matched, body: Option<&Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = json!({});
    let body = body.unwrap_or(&empty);
    match matched.operation_id.as_str() {
        "createIssue" => {
            let Some(fields) = body.get("fields").and_then(Value::as_object) else {
                problems.push(
                    "fields: `fields` is required to create an issue (project, issuetype, summary)"
                        .into(),
                );
                return problems;
            };
            let project_ok = fields.get("project").is_some_and(|p| {
                p.get("key").is_some_and(Value::is_string)
                    || p.get("id").is_some_and(Value::is_string)
            });
            if !project_ok {
                problems.push(
                    "project: Specify a valid project ID or key ({\"key\": …} or {\"id\": …})"
                        .into(),
                );
            }
            let type_ok = fields.get("issuetype").is_some_and(|t| {
                t.get("name").is_some_and(Value::is_string)
                    || t.get("id").is_some_and(Value::is_string)
            });
            if !type_ok {
                problems
                    .push("issuetype: Specify an issue type ({\"name\": …} or {\"id\": …})".into());
            }
            match fields.get("summary").and_then(Value::as_str) {
                Some(s) if !s.trim().is_empty() => {}
                _ => problems.push("summary: You must specify a summary of the issue.".into()),
            }
            if let Some(d) = fields.get("description") {
                problems.extend(adf_problems(d, "description"));
            }
            if let Some(labels) = fields.get("labels") {
                match labels.as_array() {
                    Some(list) => problems.extend(list.iter().filter_map(label_problems)),
                    None => problems.push("labels: must be an array of strings".into()),
                }
            }
            problems.extend(property_problems(body));
        }
        "addComment" => {
            match body.get("body") {
                Some(b) => problems.extend(adf_problems(b, "body")),
                None => problems.push("body: Comment body can not be empty!".into()),
            }
            problems.extend(property_problems(body));
        }
        "doTransition"
            if !body
                .get("transition")
                .and_then(|t| t.get("id"))
                .is_some_and(Value::is_string) =>
        {
            problems.push("transition: `transition.id` is required to perform a transition".into());
        }
        "editIssue" => {
            for op in body
                .get("update")
                .and_then(|u| u.get("labels"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for (verb, value) in op.as_object().into_iter().flatten() {
                    if verb != "add" && verb != "remove" && verb != "set" {
                        problems.push(format!("labels: unsupported operation `{verb}`"));
                    } else if verb != "set" {
                        problems.extend(label_problems(value));
                    }
                }
            }
        }
        "searchAndReconsileIssuesUsingJqlPost"
            if !body.get("jql").is_some_and(Value::is_string) =>
        {
            problems.push("jql: a bounded JQL query is required".into());
        }
        _ => {}
    }
    problems
}

impl Jira {
    fn base(req: &Recorded) -> String {
        format!("http://{}", req.header("host").unwrap_or("127.0.0.1"))
    }

    fn issue_json(&self, base: &str, issue: &Issue, fields: Option<&[String]>) -> Value {
        let st = status(&issue.status).unwrap_or(&STATUSES[0]);
        let all = json!({
            "summary": issue.summary,
            "status": status_json(base, st),
            "issuetype": { "name": issue.issuetype, "subtask": false },
            "project": { "key": issue.project, "name": format!("Project {}", issue.project) },
            "labels": issue.labels,
            "description": issue.description.clone().unwrap_or(Value::Null),
        });
        let selected = match fields {
            None => all,
            Some(names) if names.iter().any(|n| n == "*all" || n == "*navigable") => all,
            Some(names) => {
                let mut m = Map::new();
                for n in names {
                    if let Some(v) = all.get(n) {
                        m.insert(n.clone(), v.clone());
                    }
                }
                Value::Object(m)
            }
        };
        json!({
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue.id,
            "self": format!("{base}/rest/api/3/issue/{}", issue.id),
            "key": issue.key,
            "fields": selected,
        })
    }

    fn comment_json(base: &str, issue: &Issue, c: &Comment, with_properties: bool) -> Value {
        let author = json!({
            "accountId": "5b10a2844c20165700ede21g",
            "active": true,
            "displayName": "Steward Automation",
            "self": format!("{base}/rest/api/3/user?accountId=5b10a2844c20165700ede21g")
        });
        let mut v = json!({
            "self": format!("{base}/rest/api/3/issue/{}/comment/{}", issue.id, c.id),
            "id": c.id,
            "author": author,
            "body": c.body,
            "updateAuthor": author,
            "created": "2026-01-17T12:34:00.000+0000",
            "updated": "2026-01-17T12:34:00.000+0000",
            "jsdPublic": true
        });
        if with_properties {
            v["properties"] = Value::Array(
                c.properties
                    .iter()
                    .map(|(k, val)| json!({ "key": k, "value": val }))
                    .collect(),
            );
        }
        v
    }

    fn contract_headers(&mut self, req: &Recorded) {
        let line = req.line();
        match req.header("user-agent") {
            Some(ua) if ua.starts_with("steward-connector-jira/") => {}
            other => self.violations.push(format!(
                "contract: {line}: User-Agent {other:?}, expected steward-connector-jira/VERSION"
            )),
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
    }

    fn dispatch(&mut self, req: &Recorded, m: &Matched, body: Option<Value>) -> Reply {
        let base = Self::base(req);
        let issue_ref = m
            .path_params
            .get("issueIdOrKey")
            .cloned()
            .unwrap_or_default();
        let body = body.unwrap_or(Value::Null);
        match m.operation_id.as_str() {
            "createIssue" => {
                let fields = &body["fields"];
                let project = fields["project"]["key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if !self.projects.contains(&project) {
                    return Reply::json(
                        400,
                        &jira_error(&[], json!({ "project": "valid project is required" })),
                    );
                }
                let issuetype = fields["issuetype"]["name"]
                    .as_str()
                    .unwrap_or("Task")
                    .to_owned();
                if !ISSUE_TYPES.contains(&issuetype.as_str()) {
                    return Reply::json(
                        400,
                        &jira_error(&[], json!({ "issuetype": "Specify a valid issue type" })),
                    );
                }
                self.next_id += 1;
                let n = self.issues.iter().filter(|i| i.project == project).count() + 1;
                let mut properties = Map::new();
                for p in body["properties"].as_array().into_iter().flatten() {
                    if let Some(k) = p["key"].as_str() {
                        properties.insert(k.to_owned(), p["value"].clone());
                    }
                }
                let issue = Issue {
                    id: self.next_id.to_string(),
                    key: format!("{project}-{n}"),
                    project,
                    issuetype,
                    summary: fields["summary"].as_str().unwrap_or_default().to_owned(),
                    description: fields.get("description").cloned(),
                    labels: fields["labels"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l.as_str().map(str::to_owned))
                        .collect(),
                    status: "To Do".into(),
                    properties,
                    comments: Vec::new(),
                };
                let reply = json!({
                    "id": issue.id,
                    "key": issue.key,
                    "self": format!("{base}/rest/api/3/issue/{}", issue.id),
                });
                self.issues.push(issue);
                Reply::json(201, &reply)
            }
            "getIssue" => {
                let fields: Option<Vec<String>> = {
                    let list: Vec<String> = req
                        .query_pairs()
                        .into_iter()
                        .filter(|(n, _)| n == "fields")
                        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if list.is_empty() { None } else { Some(list) }
                };
                match self.issue(&issue_ref) {
                    Some(issue) => {
                        Reply::json(200, &self.issue_json(&base, issue, fields.as_deref()))
                    }
                    None => not_found(),
                }
            }
            "getTransitions" => {
                let Some(issue) = self.issue(&issue_ref) else {
                    return not_found();
                };
                let transitions: Vec<Value> = TRANSITIONS
                    .iter()
                    .filter(|(from, ..)| *from == issue.status)
                    .map(|(_, id, name, to)| {
                        json!({
                            "id": id,
                            "name": name,
                            "to": status_json(&base, status(to).unwrap_or(&STATUSES[0])),
                            "hasScreen": false,
                            "isGlobal": false,
                            "isInitial": false,
                            "isAvailable": true,
                            "isConditional": false
                        })
                    })
                    .collect();
                Reply::json(
                    200,
                    &json!({ "expand": "transitions", "transitions": transitions }),
                )
            }
            "doTransition" => {
                let id = body["transition"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let Some(issue) = self.issue_mut(&issue_ref) else {
                    return not_found();
                };
                match TRANSITIONS
                    .iter()
                    .find(|(from, tid, ..)| *from == issue.status && *tid == id)
                {
                    Some((.., to)) => {
                        issue.status = (*to).to_owned();
                        Reply::empty(204)
                    }
                    None => Reply::json(
                        400,
                        &jira_error(
                            &[&format!(
                                "Transition id '{id}' is not valid for this issue."
                            )],
                            json!({}),
                        ),
                    ),
                }
            }
            "addComment" => {
                self.next_comment += 1;
                let id = self.next_comment.to_string();
                let Some(issue) = self.issue_mut(&issue_ref) else {
                    return not_found();
                };
                let mut properties = Map::new();
                for p in body["properties"].as_array().into_iter().flatten() {
                    if let Some(k) = p["key"].as_str() {
                        properties.insert(k.to_owned(), p["value"].clone());
                    }
                }
                let comment = Comment {
                    id,
                    body: body["body"].clone(),
                    properties,
                };
                issue.comments.push(comment.clone());
                let issue = issue.clone();
                Reply::json(201, &Self::comment_json(&base, &issue, &comment, false))
            }
            "getComments" => {
                let Some(issue) = self.issue(&issue_ref) else {
                    return not_found();
                };
                let expand = req.query_param("expand").unwrap_or_default();
                let with_properties = expand.split(',').any(|e| e.trim() == "properties");
                // Paged as the spec says: startAt (0), maxResults (default 100), orderBy.
                let start: usize = req
                    .query_param("startAt")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let max: usize = req
                    .query_param("maxResults")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(COMMENT_PAGE);
                let mut ordered: Vec<&Comment> = issue.comments.iter().collect();
                if req.query_param("orderBy").as_deref() == Some("-created") {
                    ordered.reverse();
                }
                let comments: Vec<Value> = ordered
                    .into_iter()
                    .skip(start)
                    .take(max)
                    .map(|c| Self::comment_json(&base, issue, c, with_properties))
                    .collect();
                Reply::json(
                    200,
                    &json!({
                        "comments": comments,
                        "maxResults": max,
                        "startAt": start,
                        "total": issue.comments.len()
                    }),
                )
            }
            "editIssue" => {
                let Some(issue) = self.issue_mut(&issue_ref) else {
                    return not_found();
                };
                if let Some(labels) = body["fields"]["labels"].as_array() {
                    issue.labels = labels
                        .iter()
                        .filter_map(|l| l.as_str().map(str::to_owned))
                        .collect();
                }
                for op in body["update"]["labels"].as_array().into_iter().flatten() {
                    if let Some(l) = op["add"].as_str()
                        && !issue.labels.iter().any(|x| x == l)
                    {
                        issue.labels.push(l.to_owned());
                    }
                    if let Some(l) = op["remove"].as_str() {
                        issue.labels.retain(|x| x != l);
                    }
                }
                Reply::empty(204)
            }
            "searchAndReconsileIssuesUsingJqlPost" => {
                let jql = body["jql"].as_str().unwrap_or_default();
                let Some(wanted) = parse_property_jql(jql) else {
                    let message = format!("unsupported JQL in this test server: {jql}");
                    self.violations
                        .push(format!("jira: {}: {message}", req.line()));
                    return Reply::json(400, &jira_error(&[&message], json!({})));
                };
                let (path, value) = wanted;
                let max = body["maxResults"].as_u64().unwrap_or(50) as usize;
                let issues: Vec<Value> = self
                    .issues
                    .iter()
                    .filter(|i| {
                        property_at(&i.properties, &path) == Some(&Value::String(value.clone()))
                    })
                    .take(max)
                    .map(|i| {
                        json!({
                            "expand": "",
                            "id": i.id,
                            "key": i.key,
                            "self": format!("{base}/rest/api/3/issue/{}", i.id),
                            "fields": {}
                        })
                    })
                    .collect();
                Reply::json(200, &json!({ "issues": issues, "isLast": true }))
            }
            other => {
                let message = format!("operation {other} is not part of the connector contract");
                self.violations
                    .push(format!("contract: {}: {message}", req.line()));
                Reply::json(501, &jira_error(&[&message], json!({})))
            }
        }
    }
}

/// `issue.property[steward].idempotency_key = "KEY"` → (["steward", "idempotency_key"], KEY).
pub fn parse_property_jql(jql: &str) -> Option<(Vec<String>, String)> {
    let rest = jql.trim().strip_prefix("issue.property[")?;
    let (key, rest) = rest.split_once(']')?;
    let rest = rest.strip_prefix('.')?;
    let (path, value) = rest.split_once('=')?;
    let value = value.trim();
    let value = value.strip_prefix('"')?.strip_suffix('"')?;
    if value.contains('"') && !value.contains("\\\"") {
        return None;
    }
    let mut segments = vec![key.trim().to_owned()];
    segments.extend(path.trim().split('.').map(str::to_owned));
    Some((segments, value.replace("\\\"", "\"")))
}

fn property_at<'a>(properties: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = properties.get(first)?;
    for seg in rest {
        v = v.get(seg)?;
    }
    Some(v)
}

impl Vendor for Jira {
    fn check(&mut self, req: &Recorded) -> Option<Reply> {
        self.validated += 1;
        let matched = match jira_spec().validate(&Request {
            method: &req.method,
            path: &req.path,
            query: req.query.as_deref(),
            content_type: req.header("content-type"),
            body: &req.body,
        }) {
            Ok(m) => m,
            Err(violations) => {
                let v = violations
                    .into_iter()
                    .map(|v| format!("spec: {v}"))
                    .collect();
                return Some(self.reject(v));
            }
        };
        let body = req.body_json();
        let problems = jira_rule_problems(&matched, body.as_ref());
        if !problems.is_empty() {
            let line = req.line();
            return Some(
                self.reject(
                    problems
                        .into_iter()
                        .map(|p| format!("jira: {line}: {p}"))
                        .collect(),
                ),
            );
        }
        self.contract_headers(req);
        self.matched = Some(matched);
        if req.header("authorization") != Some(self.auth.as_str()) {
            self.unauthorized += 1;
            return Some(Reply::json(
                401,
                &jira_error(
                    &["Client must be authenticated to access this resource."],
                    json!({}),
                ),
            ));
        }
        None
    }

    fn handle(&mut self, req: &Recorded) -> Reply {
        let Some(matched) = self.matched.take() else {
            return Reply::json(500, &jira_error(&["request was not checked"], json!({})));
        };
        let reply = self.dispatch(req, &matched, req.body_json());
        // The answer must follow the spec too: this server plays Jira faithfully.
        if let Err(errors) =
            jira_spec().validate_response(&matched.operation_id, reply.status, &reply.body)
        {
            let line = req.line();
            self.violations
                .extend(errors.into_iter().map(|e| format!("server: {line}: {e}")));
        }
        reply
    }
}
