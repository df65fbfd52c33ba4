//! Steward's Jira Cloud connector (REST API v3).
//!
//! Settings: `base_url` (`https://acme.atlassian.net`). Secrets: `email`, `api_token`
//! (basic auth). Descriptions and comments are plain text, sent as Atlassian Document
//! Format (one paragraph per line).
//!
//! Idempotency (Jira has no idempotency header): created issues and comments carry
//! the call's idempotency key as the entity property `steward`; a retry first looks for
//! an issue or comment with that property and returns it instead of creating another.
//! A retried transition whose target status is already reached reports success.

use serde::Deserialize;
use steward_connector_sdk::{
    Call, Connector, Error, Http, Operation, Prop, Schema, Value, json, require_secret,
    require_setting, url,
};

struct Jira;

impl Connector for Jira {
    const NAME: &'static str = "jira";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn operations() -> Vec<Operation> {
        vec![
            Operation::new(
                "create_issue",
                "Creates an issue (description as plain text, one paragraph per line)",
                Schema::object()
                    .required("project", Prop::string("Project key, e.g. CHG"))
                    .optional(
                        "issuetype",
                        Prop::string("Issue type name").default(json!("Task")),
                    )
                    .required("summary", Prop::string("Summary"))
                    .optional("description", Prop::string("Description, plain text"))
                    .optional("labels", Prop::string_array("Labels")),
                create_issue,
            ),
            Operation::new(
                "transition",
                "Moves an issue to a status, by the status's (or transition's) name",
                Schema::object()
                    .required("issue", Prop::string("Issue key or id"))
                    .required("status", Prop::string("Target status name")),
                transition,
            ),
            Operation::new(
                "comment",
                "Adds a plain-text comment to an issue",
                Schema::object()
                    .required("issue", Prop::string("Issue key or id"))
                    .required("body", Prop::string("Comment, plain text")),
                comment,
            ),
            Operation::new(
                "add_label",
                "Adds a label to an issue",
                Schema::object()
                    .required("issue", Prop::string("Issue key or id"))
                    .required("label", Prop::string("Label to add")),
                add_label,
            ),
            Operation::new(
                "get_issue",
                "Reads an issue, optionally only some fields",
                Schema::object()
                    .required("issue", Prop::string("Issue key or id"))
                    .optional("fields", Prop::string_array("Fields to return")),
                get_issue,
            ),
        ]
    }
}

steward_connector_sdk::connector!(Jira);

/// The configured site and an authenticated client.
struct Site {
    base: String,
    http: Http,
}

impl Site {
    fn open() -> Result<Self, Error> {
        let base = require_setting("base_url")?;
        let email = require_secret("email")?;
        let token = require_secret("api_token")?;
        let http = Http::for_connector::<Jira>()
            .basic_auth(&email, &token)
            .header("Accept", "application/json");
        Ok(Site { base, http })
    }

    fn url(&self, path: &str) -> String {
        url::join(&self.base, path)
    }

    fn issue_url(&self, issue: &str, rest: &str) -> String {
        self.url(&format!("/rest/api/3/issue/{}{rest}", url::encode(issue)))
    }
}

/// The entity property that marks what a call created.
fn idempotency_property(call: &Call) -> Value {
    json!([{ "key": "steward", "value": { "idempotency_key": call.idempotency_key } }])
}

/// Plain text as an Atlassian Document Format document: one paragraph per line (an
/// empty line is an empty paragraph).
pub fn adf(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .lines()
        .map(|line| {
            if line.is_empty() {
                json!({ "type": "paragraph", "content": [] })
            } else {
                json!({ "type": "paragraph", "content": [{ "type": "text", "text": line }] })
            }
        })
        .collect();
    json!({ "type": "doc", "version": 1, "content": paragraphs })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateIssue {
    project: String,
    issuetype: Option<String>,
    summary: String,
    description: Option<String>,
    labels: Option<Vec<String>>,
}

fn created(issue: &Value) -> Value {
    json!({ "id": issue["id"], "key": issue["key"], "self": issue["self"] })
}

fn create_issue(call: &Call, args: CreateIssue) -> Result<Value, Error> {
    let site = Site::open()?;
    if call.is_retry() {
        let jql = format!(
            "issue.property[steward].idempotency_key = \"{}\"",
            call.idempotency_key
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        );
        let found = site.http.post_json(
            &site.url("/rest/api/3/search/jql"),
            &json!({ "jql": jql, "fields": ["key"], "maxResults": 1 }),
        )?;
        if let Some(issue) = found["issues"].as_array().and_then(|l| l.first()) {
            return Ok(created(issue));
        }
    }
    let mut fields = json!({
        "project": { "key": args.project },
        "issuetype": { "name": args.issuetype.as_deref().unwrap_or("Task") },
        "summary": args.summary,
    });
    if let Some(text) = &args.description {
        fields["description"] = adf(text);
    }
    if let Some(labels) = &args.labels {
        fields["labels"] = json!(labels);
    }
    let body = json!({ "fields": fields, "properties": idempotency_property(call) });
    let issue = site.http.post_json(&site.url("/rest/api/3/issue"), &body)?;
    Ok(created(&issue))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transition {
    issue: String,
    status: String,
}

fn transition(call: &Call, args: Transition) -> Result<Value, Error> {
    let site = Site::open()?;
    if call.is_retry() {
        let issue = site
            .http
            .get_json(&site.issue_url(&args.issue, "?fields=status"))?;
        if let Some(current) = issue["fields"]["status"]["name"].as_str()
            && current.eq_ignore_ascii_case(&args.status)
        {
            return Ok(json!({
                "issue": args.issue,
                "transition_id": Value::Null,
                "status": current,
                "already": true,
            }));
        }
    }
    let transitions_url = site.issue_url(&args.issue, "/transitions");
    let listed = site.http.get_json(&transitions_url)?;
    let transitions = listed["transitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let matches = |t: &&Value, key: &str| {
        t.pointer(key)
            .and_then(Value::as_str)
            .is_some_and(|name| name.eq_ignore_ascii_case(&args.status))
    };
    let Some(chosen) = transitions
        .iter()
        .find(|t| matches(t, "/to/name"))
        .or_else(|| transitions.iter().find(|t| matches(t, "/name")))
    else {
        let mut available: Vec<&str> = Vec::new();
        for name in transitions
            .iter()
            .filter_map(|t| t.pointer("/to/name").and_then(Value::as_str))
        {
            if !available.contains(&name) {
                available.push(name);
            }
        }
        return Err(Error::permanent(format!(
            "no transition of `{}` leads to status `{}`; available: {}",
            args.issue,
            args.status,
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            }
        )));
    };
    let id = match &chosen["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(Error::permanent(format!(
                "Jira listed a transition without an id for `{}`",
                args.issue
            )));
        }
    };
    site.http
        .request("POST", &transitions_url)
        .json(&json!({ "transition": { "id": id } }))
        .send()?;
    let status = chosen
        .pointer("/to/name")
        .and_then(Value::as_str)
        .unwrap_or(&args.status);
    Ok(json!({ "issue": args.issue, "transition_id": id, "status": status }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Comment {
    issue: String,
    body: String,
}

fn comment(call: &Call, args: Comment) -> Result<Value, Error> {
    let site = Site::open()?;
    let comments_url = site.issue_url(&args.issue, "/comment");
    if call.is_retry()
        && let Some(id) = find_comment(&site, &comments_url, &call.idempotency_key)?
    {
        return Ok(json!({ "id": id }));
    }
    let body = json!({ "body": adf(&args.body), "properties": idempotency_property(call) });
    let created = site.http.post_json(&comments_url, &body)?;
    Ok(json!({ "id": created["id"] }))
}

/// Pages read at most when looking for a retried comment (Jira pages comments by up
/// to 100 or more; the call's deadline bounds it too).
const MAX_COMMENT_PAGES: usize = 200;

/// The id of the comment of `comments_url` that carries the idempotency property
/// `key`, reading every page (`startAt`) of the issue's comments.
fn find_comment(site: &Site, comments_url: &str, key: &str) -> Result<Option<Value>, Error> {
    let mut start = 0u64;
    for _ in 0..MAX_COMMENT_PAGES {
        let url = if start == 0 {
            format!("{comments_url}?expand=properties")
        } else {
            format!("{comments_url}?expand=properties&startAt={start}")
        };
        let page = site.http.get_json(&url)?;
        let comments = page["comments"].as_array().cloned().unwrap_or_default();
        let mine = comments.iter().find(|c| {
            c["properties"].as_array().is_some_and(|props| {
                props
                    .iter()
                    .any(|p| p["key"] == "steward" && p["value"]["idempotency_key"] == key)
            })
        });
        if let Some(c) = mine {
            return Ok(Some(c["id"].clone()));
        }
        let count = u64::try_from(comments.len()).unwrap_or(u64::MAX);
        let first = page["startAt"].as_u64().unwrap_or(start);
        let next = first.saturating_add(count);
        match page["total"].as_u64() {
            Some(total) if count > 0 && next < total => start = next,
            _ => return Ok(None),
        }
    }
    Err(Error::retryable(format!(
        "looking for the retried comment: more than {MAX_COMMENT_PAGES} pages of comments"
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLabel {
    issue: String,
    label: String,
}

fn add_label(_call: &Call, args: AddLabel) -> Result<Value, Error> {
    let site = Site::open()?;
    site.http
        .request("PUT", &site.issue_url(&args.issue, ""))
        .json(&json!({ "update": { "labels": [{ "add": args.label }] } }))
        .send()?;
    Ok(json!({ "issue": args.issue, "label": args.label }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIssue {
    issue: String,
    fields: Option<Vec<String>>,
}

fn get_issue(_call: &Call, args: GetIssue) -> Result<Value, Error> {
    let site = Site::open()?;
    let query = match &args.fields {
        Some(fields) if !fields.is_empty() => {
            let list: Vec<String> = fields.iter().map(|f| url::encode(f)).collect();
            format!("?fields={}", list.join(","))
        }
        _ => String::new(),
    };
    site.http.get_json(&site.issue_url(&args.issue, &query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_has_one_paragraph_per_line() {
        assert_eq!(
            adf("Deploy 1.2\n\nRollback: revert"),
            json!({ "type": "doc", "version": 1, "content": [
                { "type": "paragraph", "content": [{ "type": "text", "text": "Deploy 1.2" }] },
                { "type": "paragraph", "content": [] },
                { "type": "paragraph", "content": [{ "type": "text", "text": "Rollback: revert" }] },
            ]})
        );
        assert_eq!(adf("a\r\nb")["content"].as_array().map(Vec::len), Some(2));
    }
}
