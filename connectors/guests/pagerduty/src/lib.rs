//! Steward's PagerDuty connector (Events API v2).
//!
//! Settings: `events_url` (default `https://events.pagerduty.com`). Secrets:
//! `routing_key` (the integration key). A trigger's `dedup_key` defaults to the call's
//! idempotency key, so a retried trigger updates the same alert instead of opening
//! another; acknowledge and resolve are idempotent by nature.

use serde::Deserialize;
use steward_connector_sdk::{
    Call, Connector, Error, Http, Map, Operation, Prop, Schema, Value, json, require_secret,
    setting, url,
};

struct PagerDuty;

const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com";
const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

impl Connector for PagerDuty {
    const NAME: &'static str = "pagerduty";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn operations() -> Vec<Operation> {
        vec![
            Operation::new(
                "trigger",
                "Triggers an alert (dedup_key defaults to the action's idempotency key)",
                Schema::object()
                    .required(
                        "summary",
                        Prop::string("What is wrong, as the alert's title"),
                    )
                    .optional(
                        "source",
                        Prop::string("Where it happened").default(json!("steward")),
                    )
                    .optional(
                        "severity",
                        Prop::string("Severity")
                            .one_of(SEVERITIES)
                            .default(json!("error")),
                    )
                    .optional("dedup_key", Prop::string("De-duplication key of the alert"))
                    .optional(
                        "custom_details",
                        Prop::object("Extra details shown on the alert"),
                    ),
                trigger,
            ),
            Operation::new(
                "acknowledge",
                "Acknowledges the alert with this dedup_key",
                Schema::object()
                    .required("dedup_key", Prop::string("De-duplication key of the alert")),
                acknowledge,
            ),
            Operation::new(
                "resolve",
                "Resolves the alert with this dedup_key",
                Schema::object()
                    .required("dedup_key", Prop::string("De-duplication key of the alert")),
                resolve,
            ),
        ]
    }
}

steward_connector_sdk::connector!(PagerDuty);

/// Sends one event; the answer's `status` and `dedup_key`.
fn enqueue(mut event: Value) -> Result<Value, Error> {
    let base = setting("events_url")
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_EVENTS_URL.to_owned());
    event["routing_key"] = Value::String(require_secret("routing_key")?);
    let sent_key = event["dedup_key"].clone();
    // The routing key first, as PagerDuty documents the event.
    let mut body = Map::new();
    body.insert("routing_key".to_owned(), event["routing_key"].take());
    if let Value::Object(rest) = event {
        body.extend(rest.into_iter().filter(|(k, _)| k != "routing_key"));
    }
    let answer = Http::for_connector::<PagerDuty>()
        .header("Accept", "application/json")
        .request("POST", &url::join(&base, "/v2/enqueue"))
        .json(&Value::Object(body))
        .send()?
        .json()?;
    let dedup_key = match &answer["dedup_key"] {
        Value::String(k) => Value::String(k.clone()),
        _ => sent_key,
    };
    Ok(json!({ "status": answer["status"], "dedup_key": dedup_key }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trigger {
    summary: String,
    source: Option<String>,
    severity: Option<String>,
    dedup_key: Option<String>,
    custom_details: Option<Map<String, Value>>,
}

fn trigger(call: &Call, args: Trigger) -> Result<Value, Error> {
    let severity = args.severity.as_deref().unwrap_or("error");
    if !SEVERITIES.contains(&severity) {
        return Err(Error::permanent(format!(
            "severity `{severity}` is not one of {}",
            SEVERITIES.join(", ")
        )));
    }
    let mut payload = json!({
        "summary": args.summary,
        "source": args.source.as_deref().unwrap_or("steward"),
        "severity": severity,
    });
    if let Some(details) = args.custom_details {
        payload["custom_details"] = Value::Object(details);
    }
    enqueue(json!({
        "routing_key": "",
        "event_action": "trigger",
        "dedup_key": args.dedup_key.unwrap_or_else(|| call.idempotency_key.clone()),
        "payload": payload,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupKey {
    dedup_key: String,
}

fn acknowledge(_call: &Call, args: DedupKey) -> Result<Value, Error> {
    enqueue(
        json!({ "routing_key": "", "event_action": "acknowledge", "dedup_key": args.dedup_key }),
    )
}

fn resolve(_call: &Call, args: DedupKey) -> Result<Value, Error> {
    enqueue(json!({ "routing_key": "", "event_action": "resolve", "dedup_key": args.dedup_key }))
}
