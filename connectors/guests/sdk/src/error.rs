//! A connector's errors and the contract's mapping of HTTP answers onto them.

use serde_json::Value;

use crate::bindings::steward::connector::types::{CallError, RetryInfo};

/// Why an operation failed: whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Worth trying again (rate limit, vendor or network down), optionally not before
    /// `retry_after_ms` milliseconds.
    Retryable {
        /// What happened.
        message: String,
        /// The vendor's `Retry-After`, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// Trying again cannot help (bad arguments, missing configuration, refused by the
    /// vendor); the message says why, in the vendor's words where it gave some.
    Permanent(String),
}

impl Error {
    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Error::Permanent(message.into())
    }

    /// A retryable error without a retry-after.
    pub fn retryable(message: impl Into<String>) -> Self {
        Error::Retryable {
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Error::Retryable { message, .. } | Error::Permanent(message) => message,
        }
    }

    /// The same error with `context: ` in front of its message.
    #[must_use]
    pub fn context(self, context: &str) -> Self {
        match self {
            Error::Retryable {
                message,
                retry_after_ms,
            } => Error::Retryable {
                message: format!("{context}: {message}"),
                retry_after_ms,
            },
            Error::Permanent(message) => Error::Permanent(format!("{context}: {message}")),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        match e {
            Error::Retryable {
                message,
                retry_after_ms,
            } => CallError::Retryable(RetryInfo {
                message,
                retry_after_ms,
            }),
            Error::Permanent(message) => CallError::Permanent(message),
        }
    }
}

/// The longest vendor text quoted in an error.
const MAX_QUOTED: usize = 500;

/// The error for an HTTP answer, or `None` for a success (2xx).
///
/// 429 and 5xx are retryable, with `Retry-After` (seconds) as `retry_after_ms`; any
/// other status is permanent. The message is `HTTP STATUS: ` and the vendor's own
/// message (see [`vendor_message`]).
pub fn status_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> Option<Error> {
    if (200..300).contains(&status) {
        return None;
    }
    let message = match vendor_message(body) {
        Some(m) => format!("HTTP {status}: {m}"),
        None => format!("HTTP {status}"),
    };
    Some(if status == 429 || (500..600).contains(&status) {
        Error::Retryable {
            message,
            retry_after_ms: retry_after.and_then(retry_after_ms),
        }
    } else {
        Error::Permanent(message)
    })
}

/// A `Retry-After` value in seconds (`"30"`, `"1.5"`) as milliseconds; `None` for the
/// HTTP-date form or anything unreadable.
pub fn retry_after_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let secs = value.parse::<f64>().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let ms = (secs * 1000.0).ceil();
    // Saturates at u64::MAX for absurd values (float-to-int `as` saturates).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(ms as u64)
}

/// What the vendor said in an error body: the message fields of Jira
/// (`errorMessages`, `errors`), ServiceNow (`error.message`, `error.detail`),
/// PagerDuty (`message`, `errors`) and common shapes (`message`, `error`,
/// `error_description`, `detail`), else the body's text (Slack's `invalid_payload`),
/// at most 500 characters; `None` for an empty body.
pub fn vendor_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let message = match serde_json::from_str::<Value>(text) {
        Ok(json) => json_message(&json).unwrap_or_else(|| text.to_owned()),
        Err(_) => text.to_owned(),
    };
    Some(truncate(&message, MAX_QUOTED))
}

fn json_message(json: &Value) -> Option<String> {
    let obj = json.as_object()?;
    let mut parts: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        let s = s.trim();
        if !s.is_empty() && !parts.iter().any(|p| p == s) {
            parts.push(s.to_owned());
        }
    };
    // Jira: {"errorMessages": [..], "errors": {"field": "message"}}.
    if let Some(list) = obj.get("errorMessages").and_then(Value::as_array) {
        list.iter().filter_map(Value::as_str).for_each(&mut push);
    }
    match obj.get("errors") {
        Some(Value::Object(fields)) => {
            for (field, message) in fields {
                if let Some(m) = message.as_str() {
                    push(&format!("{field}: {m}"));
                }
            }
        }
        // PagerDuty: {"status", "message", "errors": ["..."]}.
        Some(Value::Array(list)) => {
            if let Some(m) = obj.get("message").and_then(Value::as_str) {
                push(m);
            }
            list.iter().filter_map(Value::as_str).for_each(&mut push);
        }
        _ => {}
    }
    match obj.get("error") {
        // ServiceNow: {"error": {"message", "detail"}, "status": "failure"}.
        Some(Value::Object(e)) => {
            for key in ["message", "detail"] {
                if let Some(m) = e.get(key).and_then(Value::as_str) {
                    push(m);
                }
            }
        }
        Some(Value::String(m)) => push(m),
        _ => {}
    }
    for key in ["message", "error_description", "detail"] {
        if let Some(m) = obj.get(key).and_then(Value::as_str) {
            push(m);
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn statuses_map_per_the_contract() {
        assert_eq!(status_error(201, None, b""), None);
        assert_eq!(
            status_error(429, Some("3"), b""),
            Some(Error::Retryable {
                message: "HTTP 429".to_owned(),
                retry_after_ms: Some(3000)
            })
        );
        assert!(matches!(
            status_error(503, None, b"down"),
            Some(Error::Retryable {
                retry_after_ms: None,
                ..
            })
        ));
        assert_eq!(
            status_error(
                400,
                None,
                br#"{"errorMessages":["bad"],"errors":{"summary":"required"}}"#
            ),
            Some(Error::Permanent(
                "HTTP 400: bad; summary: required".to_owned()
            ))
        );
        assert_eq!(
            status_error(
                404,
                None,
                br#"{"error":{"message":"No Record found","detail":"gone"},"status":"failure"}"#
            ),
            Some(Error::Permanent(
                "HTTP 404: No Record found; gone".to_owned()
            ))
        );
        assert_eq!(
            status_error(400, None, b"invalid_payload"),
            Some(Error::Permanent("HTTP 400: invalid_payload".to_owned()))
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(retry_after_ms(" 2 "), Some(2000));
        assert_eq!(retry_after_ms("1.5"), Some(1500));
        assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_ms("-1"), None);
    }
}
