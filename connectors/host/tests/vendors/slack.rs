//! A Slack incoming webhook (integrations.md §7.2): `POST` JSON `{"text", "blocks"}` to
//! the webhook's secret path; `200 ok` (text/plain) on success; plain-text errors
//! otherwise: `404 no_service` (wrong path), `400 invalid_payload` (not a JSON object,
//! not JSON), `400 no_text` (neither `text` nor `blocks`), `400 invalid_blocks`
//! (a block without a `type`).

use serde_json::Value;

use super::server::{Recorded, Reply, Vendor};

/// The webhook: its secret path and what it received.
#[derive(Debug)]
pub struct Slack {
    /// `/services/T…/B…/…`: the part of the URL that is the secret.
    pub path: String,
    /// Messages accepted, in order.
    pub messages: Vec<Value>,
    /// Requests rejected and why, one line each.
    pub violations: Vec<String>,
}

impl Slack {
    /// A webhook at `path`.
    pub fn new(path: &str) -> Slack {
        Slack {
            path: path.to_owned(),
            messages: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn reject(&mut self, req: &Recorded, status: u16, error: &str, why: &str) -> Reply {
        self.violations
            .push(format!("{}: {error}: {why}", req.line()));
        Reply::text(status, error)
    }
}

impl Vendor for Slack {
    fn check(&mut self, req: &Recorded) -> Option<Reply> {
        if req.path != self.path || req.query.is_some() {
            return Some(self.reject(req, 404, "no_service", "unknown webhook path"));
        }
        if req.method != "POST" {
            return Some(self.reject(req, 405, "invalid_method", "webhooks take POST"));
        }
        if !req
            .header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
        {
            return Some(self.reject(
                req,
                400,
                "invalid_payload",
                "Content-Type is not application/json",
            ));
        }
        let Some(body) = req.body_json() else {
            return Some(self.reject(req, 400, "invalid_payload", "the body is not JSON"));
        };
        let Some(obj) = body.as_object() else {
            return Some(self.reject(req, 400, "invalid_payload", "the body is not a JSON object"));
        };
        let text_ok = obj
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        let blocks = obj.get("blocks");
        if let Some(b) = blocks {
            let Some(list) = b.as_array() else {
                return Some(self.reject(req, 400, "invalid_blocks", "`blocks` is not an array"));
            };
            if list
                .iter()
                .any(|block| !block.get("type").is_some_and(Value::is_string))
            {
                return Some(self.reject(req, 400, "invalid_blocks", "a block has no `type`"));
            }
        }
        if obj.get("text").is_some_and(|t| !t.is_string()) {
            return Some(self.reject(req, 400, "invalid_payload", "`text` is not a string"));
        }
        let blocks_ok = blocks
            .and_then(Value::as_array)
            .is_some_and(|b| !b.is_empty());
        if !text_ok && !blocks_ok {
            return Some(self.reject(req, 400, "no_text", "neither `text` nor `blocks`"));
        }
        match req.header("user-agent") {
            Some(ua) if ua.starts_with("steward-connector-slack/") => {}
            other => self.violations.push(format!(
                "contract: {}: User-Agent {other:?}, expected steward-connector-slack/VERSION",
                req.line()
            )),
        }
        None
    }

    fn handle(&mut self, req: &Recorded) -> Reply {
        self.messages.push(req.json());
        Reply::text(200, "ok")
    }
}
