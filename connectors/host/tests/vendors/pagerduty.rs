//! PagerDuty Events API v2 (integrations.md §7.1): `POST /v2/enqueue`.
//!
//! Valid events are answered `202 {"status":"success","message":"Event processed",
//! "dedup_key"}`; invalid ones `400 {"status":"invalid event","message":"Event object
//! is invalid","errors":[…]}`. Checked: `routing_key` (32 characters), `event_action`
//! (`trigger|acknowledge|resolve`), `dedup_key` (≤ 255, required to acknowledge or
//! resolve), for `trigger` the `payload` (`summary` ≤ 1024 and `source` required,
//! `severity` one of `critical|error|warning|info`, `custom_details` an object), no
//! unknown keys. Alerts are kept by (routing key, dedup key): a trigger with the dedup
//! key of an open alert adds to it instead of opening another.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::server::{Recorded, Reply, Vendor};

/// An alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `triggered`, `acknowledged` or `resolved`.
    pub status: String,
    /// Trigger events that reached it (deduplicated into it).
    pub triggers: usize,
    /// Its summary (from the first trigger).
    pub summary: String,
}

/// The Events API.
#[derive(Debug, Default)]
pub struct PagerDuty {
    /// Every accepted event, in order.
    pub events: Vec<Value>,
    /// Alerts by (routing key, dedup key); a resolved one is replaced by a new trigger.
    pub alerts: BTreeMap<(String, String), Alert>,
    /// Alerts opened in total (a re-trigger after resolution opens a new one).
    pub opened: usize,
    /// Events rejected and why.
    pub violations: Vec<String>,
    generated: u64,
}

const TOP_KEYS: [&str; 8] = [
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "images",
    "links",
    "client",
    "client_url",
];
const PAYLOAD_KEYS: [&str; 8] = [
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
];
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// What PagerDuty rejects in an event (empty when valid).
pub fn event_problems(event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(obj) = event.as_object() else {
        return vec!["Event object is not a JSON object".into()];
    };
    for k in obj.keys() {
        if !TOP_KEYS.contains(&k.as_str()) {
            errors.push(format!("Unknown field '{k}'"));
        }
    }
    match obj.get("routing_key").and_then(Value::as_str) {
        Some(k) if k.len() == 32 => {}
        Some(_) => {
            errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into())
        }
        None => errors.push("'routing_key' is missing or blank".into()),
    }
    let action = obj
        .get("event_action")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errors.push(
            "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)".into(),
        );
    }
    match obj.get("dedup_key") {
        None if action == "acknowledge" || action == "resolve" => {
            errors.push(format!("'dedup_key' is required to {action}"));
        }
        None => {}
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => {}
        Some(other) => errors.push(format!(
            "'dedup_key' must be a non-empty string of at most 255 characters, got {other}"
        )),
    }
    if action == "trigger" {
        match obj.get("payload").and_then(Value::as_object) {
            None => errors.push("'payload' is missing or not an object".into()),
            Some(p) => {
                for k in p.keys() {
                    if !PAYLOAD_KEYS.contains(&k.as_str()) {
                        errors.push(format!("Unknown field 'payload.{k}'"));
                    }
                }
                match p.get("summary").and_then(Value::as_str) {
                    Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
                    _ => errors.push(
                        "'payload.summary' is missing, blank or longer than 1024 characters".into(),
                    ),
                }
                match p.get("source").and_then(Value::as_str) {
                    Some(s) if !s.is_empty() => {}
                    _ => errors.push("'payload.source' is missing or blank".into()),
                }
                if !p
                    .get("severity")
                    .and_then(Value::as_str)
                    .is_some_and(|s| SEVERITIES.contains(&s))
                {
                    errors.push("'payload.severity' is invalid (must be one of: critical, error, warning, info)".into());
                }
                if p.get("custom_details").is_some_and(|d| !d.is_object()) {
                    errors.push("'payload.custom_details' must be an object".into());
                }
            }
        }
    } else if obj.contains_key("payload") {
        errors.push(format!("'payload' is not used to {action}"));
    }
    errors
}

impl Vendor for PagerDuty {
    fn check(&mut self, req: &Recorded) -> Option<Reply> {
        if req.path != "/v2/enqueue" || req.method != "POST" {
            self.violations
                .push(format!("{}: not the Events API v2 endpoint", req.line()));
            return Some(Reply::json(
                404,
                &json!({ "status": "Not Found", "message": "Not Found" }),
            ));
        }
        let mut errors = Vec::new();
        if !req
            .header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
        {
            errors.push(format!(
                "Content-Type {:?} is not application/json",
                req.header("content-type")
            ));
        }
        match req.body_json() {
            None => errors.push("Invalid JSON".into()),
            Some(event) => errors.extend(event_problems(&event)),
        }
        if !errors.is_empty() {
            self.violations
                .extend(errors.iter().map(|e| format!("{}: {e}", req.line())));
            return Some(Reply::json(
                400,
                &json!({ "status": "invalid event", "message": "Event object is invalid", "errors": errors }),
            ));
        }
        match req.header("user-agent") {
            Some(ua) if ua.starts_with("steward-connector-pagerduty/") => {}
            other => self.violations.push(format!(
                "contract: {}: User-Agent {other:?}, expected steward-connector-pagerduty/VERSION",
                req.line()
            )),
        }
        None
    }

    fn handle(&mut self, req: &Recorded) -> Reply {
        let event = req.json();
        let routing = event["routing_key"].as_str().unwrap_or_default().to_owned();
        let action = event["event_action"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let dedup = match event["dedup_key"].as_str() {
            Some(k) => k.to_owned(),
            None => {
                self.generated += 1;
                hex::encode(Sha256::digest(format!("pd-{}", self.generated)))[..32].to_owned()
            }
        };
        let key = (routing, dedup.clone());
        match action.as_str() {
            "trigger" => match self.alerts.get_mut(&key) {
                Some(a) if a.status != "resolved" => a.triggers += 1,
                _ => {
                    self.opened += 1;
                    self.alerts.insert(
                        key,
                        Alert {
                            status: "triggered".into(),
                            triggers: 1,
                            summary: event["payload"]["summary"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        },
                    );
                }
            },
            "acknowledge" => {
                if let Some(a) = self.alerts.get_mut(&key)
                    && a.status == "triggered"
                {
                    a.status = "acknowledged".into();
                }
            }
            _ => {
                if let Some(a) = self.alerts.get_mut(&key) {
                    a.status = "resolved".into();
                }
            }
        }
        self.events.push(event);
        Reply::json(
            202,
            &json!({ "status": "success", "message": "Event processed", "dedup_key": dedup }),
        )
    }
}
