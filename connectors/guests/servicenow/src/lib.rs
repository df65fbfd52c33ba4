//! Steward's ServiceNow connector (Table API).
//!
//! Settings: `instance_url` (`https://acme.service-now.com`). Secrets: `username`,
//! `password` (basic auth). Records of `change_request`, `incident` and
//! `sysapproval_approver`; answers are unwrapped from ServiceNow's `{"result": …}`.
//! The Table API has no idempotency key: updates are idempotent by nature, creates
//! are not de-duplicated.

use serde::Deserialize;
use steward_connector_sdk::{
    Call, Connector, Error, Http, Map, Operation, Prop, Schema, Value, json, require_secret,
    require_setting, url,
};

struct ServiceNow;

/// The tables operations may name.
const TABLES: &[&str] = &["change_request", "incident", "sysapproval_approver"];

fn table() -> Prop {
    Prop::string("Table name").one_of(TABLES)
}

impl Connector for ServiceNow {
    const NAME: &'static str = "servicenow";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn operations() -> Vec<Operation> {
        vec![
            Operation::new(
                "create_record",
                "Creates a record in a table",
                Schema::object()
                    .required("table", table())
                    .required("fields", Prop::object("Field values")),
                create_record,
            ),
            Operation::new(
                "update_record",
                "Updates fields of a record",
                Schema::object()
                    .required("table", table())
                    .required("sys_id", Prop::string("The record's sys_id"))
                    .required("fields", Prop::object("Field values to set")),
                update_record,
            ),
            Operation::new(
                "get_record",
                "Reads a record",
                Schema::object()
                    .required("table", table())
                    .required("sys_id", Prop::string("The record's sys_id")),
                get_record,
            ),
            Operation::new(
                "add_work_note",
                "Adds a work note to a record",
                Schema::object()
                    .required("table", table())
                    .required("sys_id", Prop::string("The record's sys_id"))
                    .required("text", Prop::string("The work note")),
                add_work_note,
            ),
            Operation::new(
                "request_approval",
                "Asks a user to approve a change or incident",
                Schema::object()
                    .required("sys_id", Prop::string("sys_id of the change or incident"))
                    .required("approver", Prop::string("sys_id of the approving sys_user")),
                request_approval,
            ),
            Operation::new(
                "get_approvals",
                "Lists the approvals of a change or incident",
                Schema::object()
                    .required("sys_id", Prop::string("sys_id of the change or incident")),
                get_approvals,
            ),
        ]
    }
}

steward_connector_sdk::connector!(ServiceNow);

/// The configured instance and an authenticated client.
struct Instance {
    base: String,
    http: Http,
}

impl Instance {
    fn open() -> Result<Self, Error> {
        let base = require_setting("instance_url")?;
        let user = require_secret("username")?;
        let password = require_secret("password")?;
        let http = Http::for_connector::<ServiceNow>()
            .basic_auth(&user, &password)
            .header("Accept", "application/json");
        Ok(Instance { base, http })
    }

    /// `/api/now/table/{table}[/{sys_id}]`, the table checked.
    fn table_url(&self, table: &str, sys_id: Option<&str>) -> Result<String, Error> {
        check_table(table)?;
        let mut path = format!("/api/now/table/{table}");
        if let Some(id) = sys_id {
            path.push('/');
            path.push_str(&url::encode(id));
        }
        Ok(url::join(&self.base, &path))
    }
}

/// Refuses a table outside [`TABLES`] (before anything is sent).
fn check_table(table: &str) -> Result<(), Error> {
    if TABLES.contains(&table) {
        Ok(())
    } else {
        Err(Error::permanent(format!(
            "table `{table}` is not one of {}",
            TABLES.join(", ")
        )))
    }
}

/// The `result` of a Table API answer.
fn result(answer: Value) -> Result<Value, Error> {
    match answer {
        Value::Object(mut m) if m.contains_key("result") => {
            Ok(m.remove("result").unwrap_or_default())
        }
        other => Err(Error::permanent(format!(
            "ServiceNow answered without a `result`: {}",
            truncate(&other.to_string())
        ))),
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRecord {
    table: String,
    fields: Map<String, Value>,
}

fn create_record(_call: &Call, args: CreateRecord) -> Result<Value, Error> {
    check_table(&args.table)?;
    let sn = Instance::open()?;
    let url = sn.table_url(&args.table, None)?;
    result(sn.http.post_json(&url, &Value::Object(args.fields))?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRecord {
    table: String,
    sys_id: String,
    fields: Map<String, Value>,
}

fn update_record(_call: &Call, args: UpdateRecord) -> Result<Value, Error> {
    check_table(&args.table)?;
    let sn = Instance::open()?;
    let url = sn.table_url(&args.table, Some(&args.sys_id))?;
    result(sn.http.patch_json(&url, &Value::Object(args.fields))?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetRecord {
    table: String,
    sys_id: String,
}

fn get_record(_call: &Call, args: GetRecord) -> Result<Value, Error> {
    check_table(&args.table)?;
    let sn = Instance::open()?;
    let url = sn.table_url(&args.table, Some(&args.sys_id))?;
    result(sn.http.get_json(&url)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddWorkNote {
    table: String,
    sys_id: String,
    text: String,
}

fn add_work_note(_call: &Call, args: AddWorkNote) -> Result<Value, Error> {
    check_table(&args.table)?;
    let sn = Instance::open()?;
    let url = sn.table_url(&args.table, Some(&args.sys_id))?;
    result(
        sn.http
            .patch_json(&url, &json!({ "work_notes": args.text }))?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestApproval {
    sys_id: String,
    approver: String,
}

fn request_approval(_call: &Call, args: RequestApproval) -> Result<Value, Error> {
    let sn = Instance::open()?;
    let url = sn.table_url("sysapproval_approver", None)?;
    let body =
        json!({ "sysapproval": args.sys_id, "approver": args.approver, "state": "requested" });
    result(sn.http.post_json(&url, &body)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetApprovals {
    sys_id: String,
}

fn get_approvals(_call: &Call, args: GetApprovals) -> Result<Value, Error> {
    // The sys_id goes into an encoded query: letters, digits, `_` and `-` only, so it
    // cannot add terms (`^OR…`) or operators.
    if args.sys_id.is_empty()
        || !args
            .sys_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::permanent(format!(
            "sys_id `{}` is not a sys_id (letters, digits, `_` and `-` only)",
            args.sys_id
        )));
    }
    let sn = Instance::open()?;
    let url = format!(
        "{}?sysparm_query=sysapproval={}",
        sn.table_url("sysapproval_approver", None)?,
        url::encode(&args.sys_id)
    );
    let approvals = result(sn.http.get_json(&url)?)?;
    Ok(json!({ "approvals": approvals }))
}
