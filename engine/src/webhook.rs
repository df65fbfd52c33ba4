//! Inbound webhooks mapped to CloudEvents: pure functions of the headers, the raw
//! body bytes and the receive time, with no I/O.
//!
//! **Jira** (`POST /webhooks/jira`): `type` is `jira:` followed by `webhookEvent`
//! (whose own `jira:` prefix is not doubled: `jira:issue_created` stays,
//! `comment_created` becomes `jira:comment_created`); a payload without
//! `webhookEvent` falls back to `issue_event_type_name`. `id` is the
//! `X-Atlassian-Webhook-Identifier` header, stable across Jira's retries, so a
//! redelivery de-duplicates; without it, `sha256:` and the hex SHA-256 of the body.
//! `subject` is `issue.key`, `time` the payload's `timestamp` (epoch milliseconds) or
//! else the receive time, and `data` the whole payload, changelog included.
//!
//! **ServiceNow** (`POST /webhooks/servicenow`): ServiceNow has no fixed webhook
//! payload; a business rule posts a JSON object with at least `sys_id`, `number` and
//! `table` (and optionally `operation`, `event_id`, `source`). `type` is
//! `servicenow:<table>.<operation>` (`updated` without an operation), `subject` the
//! `number`, `id` the `event_id` field, else the `X-Event-Id` header, else the body
//! hash.
//!
//! **Signatures**: with a secret configured, the body must carry an HMAC-SHA256 of
//! the raw bytes as `sha256=<hex>` — Jira in `X-Hub-Signature`, ServiceNow in
//! `X-Signature` — compared in constant time.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::event::{Event, MAX_EVENT_BYTES};

/// Jira's per-delivery identifier, the same on every retry of one delivery.
pub const JIRA_ID_HEADER: &str = "X-Atlassian-Webhook-Identifier";
/// Jira's signature header: `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const JIRA_SIGNATURE_HEADER: &str = "X-Hub-Signature";
/// The ServiceNow event id header, used when the body has no `event_id`.
pub const SERVICENOW_ID_HEADER: &str = "X-Event-Id";
/// The ServiceNow signature header, same format as Jira's.
pub const SERVICENOW_SIGNATURE_HEADER: &str = "X-Signature";

/// Why a delivery was refused. [`WebhookError::is_auth`] tells 401 from 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("unsigned: a secret is configured and the `{0}` header is missing")]
    Unsigned(&'static str),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("missing field `{0}`")]
    MissingField(String),
    #[error("payload is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

impl WebhookError {
    /// Authentication failures (unsigned, bad signature), as opposed to bad payloads.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            WebhookError::Unsigned(_) | WebhookError::BadSignature(_)
        )
    }
}

/// How one webhook source is mapped.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// The CloudEvents `source` (e.g. `https://acme.atlassian.net`); default `jira` or
    /// `servicenow`.
    pub source: Option<String>,
    /// The HMAC secret; when set, every delivery must be signed with it.
    pub secret: Option<Vec<u8>>,
}

/// Header value by case-insensitive name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Checks `sha256=<hex>` in `header_name` against HMAC-SHA256(secret, body), in
/// constant time.
pub fn verify_signature(
    secret: &[u8],
    headers: &[(String, String)],
    header_name: &'static str,
    body: &[u8],
) -> Result<(), WebhookError> {
    let value = header(headers, header_name).ok_or(WebhookError::Unsigned(header_name))?;
    let hex_sig = value.trim().strip_prefix("sha256=").ok_or_else(|| {
        WebhookError::BadSignature(format!("`{header_name}` must be `sha256=<hex>`"))
    })?;
    let expected = hex::decode(hex_sig)
        .map_err(|_| WebhookError::BadSignature(format!("`{header_name}` is not hexadecimal")))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|e| WebhookError::BadSignature(e.to_string()))?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| {
        WebhookError::BadSignature("the HMAC-SHA256 of the body does not match".to_string())
    })
}

/// `sha256=<hex>`: the signature a sender puts in the header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error branch is unreachable.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// `sha256:<hex>` of the body: the id of a delivery that carries none.
pub fn body_id(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

fn object(body: &[u8]) -> Result<Map<String, Json>, WebhookError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(WebhookError::TooLarge {
            size: body.len(),
            limit: MAX_EVENT_BYTES,
        });
    }
    match serde_json::from_slice::<Json>(body) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(WebhookError::NotJson("expected a JSON object".to_string())),
        Err(e) => Err(WebhookError::NotJson(e.to_string())),
    }
}

fn non_empty<'a>(map: &'a Map<String, Json>, name: &str) -> Option<&'a str> {
    map.get(name)
        .and_then(Json::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn required<'a>(map: &'a Map<String, Json>, name: &str) -> Result<&'a str, WebhookError> {
    non_empty(map, name).ok_or_else(|| WebhookError::MissingField(name.to_string()))
}

/// Maps a Jira webhook delivery to an event, verifying its signature first when a
/// secret is configured.
pub fn jira_event(
    config: &WebhookConfig,
    headers: &[(String, String)],
    body: &[u8],
    received: DateTime<Utc>,
) -> Result<Event, WebhookError> {
    if let Some(secret) = &config.secret {
        verify_signature(secret, headers, JIRA_SIGNATURE_HEADER, body)?;
    }
    let payload = object(body)?;
    let name = non_empty(&payload, "webhookEvent")
        .or_else(|| non_empty(&payload, "issue_event_type_name"))
        .ok_or_else(|| WebhookError::MissingField("webhookEvent".to_string()))?;
    let event_type = format!("jira:{}", name.strip_prefix("jira:").unwrap_or(name));
    let subject = payload
        .get("issue")
        .and_then(|i| i.get("key"))
        .and_then(Json::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    let time = payload
        .get("timestamp")
        .and_then(Json::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(received);
    let id = header(headers, JIRA_ID_HEADER)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or_else(|| body_id(body), str::to_string);
    Ok(Event {
        id,
        source: config.source.clone().unwrap_or_else(|| "jira".to_string()),
        event_type,
        time: Some(time),
        subject,
        datacontenttype: Some("application/json".to_string()),
        dataschema: None,
        data: Some(Json::Object(payload)),
        data_base64: None,
        extensions: Map::new(),
    })
}

/// Maps a ServiceNow business-rule delivery (a JSON object with `sys_id`, `number`,
/// `table`) to an event, verifying its signature first when a secret is configured.
pub fn servicenow_event(
    config: &WebhookConfig,
    headers: &[(String, String)],
    body: &[u8],
    received: DateTime<Utc>,
) -> Result<Event, WebhookError> {
    if let Some(secret) = &config.secret {
        verify_signature(secret, headers, SERVICENOW_SIGNATURE_HEADER, body)?;
    }
    let payload = object(body)?;
    required(&payload, "sys_id")?;
    let number = required(&payload, "number")?.to_string();
    let table = required(&payload, "table")?;
    let operation = non_empty(&payload, "operation").unwrap_or("updated");
    let event_type = format!("servicenow:{table}.{operation}");
    let id = non_empty(&payload, "event_id")
        .or_else(|| header(headers, SERVICENOW_ID_HEADER).filter(|s| !s.trim().is_empty()))
        .map_or_else(|| body_id(body), |s| s.trim().to_string());
    let source = config
        .source
        .clone()
        .or_else(|| non_empty(&payload, "source").map(str::to_string))
        .unwrap_or_else(|| "servicenow".to_string());
    Ok(Event {
        id,
        source,
        event_type,
        time: Some(received),
        subject: Some(number),
        datacontenttype: Some("application/json".to_string()),
        dataschema: None,
        data: Some(Json::Object(payload)),
        data_base64: None,
        extensions: Map::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn jira_type_subject_time_and_id() {
        let body = br#"{"timestamp":1550286678321,"webhookEvent":"comment_created","issue":{"key":"TES-41"}}"#;
        let e = jira_event(
            &WebhookConfig::default(),
            &h(&[("x-atlassian-webhook-identifier", "d-1")]),
            body,
            at(),
        )
        .unwrap();
        assert_eq!(e.event_type, "jira:comment_created");
        assert_eq!(e.subject.as_deref(), Some("TES-41"));
        assert_eq!(e.id, "d-1");
        assert_eq!(e.source, "jira");
        assert_eq!(e.time.unwrap().timestamp_millis(), 1550286678321);
        // Without the header: a stable hash of the body; without timestamp: received.
        let body = br#"{"webhookEvent":"jira:issue_created"}"#;
        let a = jira_event(&WebhookConfig::default(), &[], body, at()).unwrap();
        let b = jira_event(&WebhookConfig::default(), &[], body, at()).unwrap();
        assert_eq!(a.event_type, "jira:issue_created");
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("sha256:"));
        assert_eq!(a.time, Some(at()));
        assert_eq!(a.subject, None);
    }

    #[test]
    fn jira_rejections_say_why() {
        let c = WebhookConfig::default();
        let e = jira_event(&c, &[], b"{}", at()).unwrap_err();
        assert_eq!(e.to_string(), "missing field `webhookEvent`");
        let e = jira_event(&c, &[], b"[1]", at()).unwrap_err();
        assert_eq!(e.to_string(), "not JSON: expected a JSON object");
        assert!(matches!(
            jira_event(&c, &[], b"nope", at()),
            Err(WebhookError::NotJson(_))
        ));
    }

    #[test]
    fn signatures() {
        let c = WebhookConfig {
            source: None,
            secret: Some(b"s3cret".to_vec()),
        };
        let body = br#"{"webhookEvent":"jira:issue_created"}"#;
        let good = sign(b"s3cret", body);
        assert!(jira_event(&c, &h(&[("X-Hub-Signature", &good)]), body, at()).is_ok());
        let e = jira_event(&c, &[], body, at()).unwrap_err();
        assert!(e.is_auth());
        assert_eq!(
            e.to_string(),
            "unsigned: a secret is configured and the `X-Hub-Signature` header is missing"
        );
        let wrong = sign(b"other", body);
        let e = jira_event(&c, &h(&[("x-hub-signature", &wrong)]), body, at()).unwrap_err();
        assert!(matches!(e, WebhookError::BadSignature(_)), "{e}");
        let e = jira_event(&c, &h(&[("x-hub-signature", "sha1=ab")]), body, at()).unwrap_err();
        assert!(matches!(e, WebhookError::BadSignature(_)), "{e}");
        // A signed body that was altered does not verify.
        let e = jira_event(
            &c,
            &h(&[("x-hub-signature", &good)]),
            br#"{"webhookEvent":"jira:issue_deleted"}"#,
            at(),
        )
        .unwrap_err();
        assert!(e.is_auth());
    }

    #[test]
    fn servicenow_mapping() {
        let c = WebhookConfig::default();
        let body = br#"{"sys_id":"abc","number":"CHG0030001","table":"change_request","operation":"insert","event_id":"g-1"}"#;
        let e = servicenow_event(&c, &[], body, at()).unwrap();
        assert_eq!(e.event_type, "servicenow:change_request.insert");
        assert_eq!(e.subject.as_deref(), Some("CHG0030001"));
        assert_eq!(e.id, "g-1");
        assert_eq!(e.source, "servicenow");
        let body = br#"{"sys_id":"abc","number":"INC1","table":"incident"}"#;
        let e = servicenow_event(&c, &h(&[("x-event-id", "h-1")]), body, at()).unwrap();
        assert_eq!(e.event_type, "servicenow:incident.updated");
        assert_eq!(e.id, "h-1");
        let e = servicenow_event(&c, &[], br#"{"sys_id":"abc","number":"INC1"}"#, at());
        assert_eq!(e.unwrap_err().to_string(), "missing field `table`");
    }
}
