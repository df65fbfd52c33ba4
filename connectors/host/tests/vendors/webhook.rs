//! A generic webhook receiver: takes `POST` JSON at its path, verifies
//! `X-Steward-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>` (constant-time)
//! when it has a secret, and de-duplicates deliveries by `Idempotency-Key`.
//!
//! Answers: `401` for a missing or wrong signature, `400` for a body that is not JSON
//! (or a missing JSON `Content-Type`), `404` for another path, else `status` (200
//! unless set) with `{"received": true, "duplicate": bool}`.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::server::{Recorded, Reply, Vendor};

/// One accepted delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `X-Steward-Attempt` header.
    pub attempt: Option<String>,
    /// The body, parsed.
    pub payload: Value,
    /// Whether a delivery with the same key was accepted before.
    pub duplicate: bool,
}

/// The receiver.
#[derive(Debug)]
pub struct Receiver {
    /// The path it listens on.
    pub path: String,
    /// The HMAC secret; `None` accepts unsigned deliveries.
    pub secret: Option<String>,
    /// The status of a successful answer.
    pub status: u16,
    /// Deliveries accepted, in order (duplicates included, marked).
    pub deliveries: Vec<Delivery>,
    /// Requests refused and why.
    pub violations: Vec<String>,
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` under `secret` (constant-time compare).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

impl Receiver {
    /// A receiver at `path`, verifying signatures with `secret` if given.
    pub fn new(path: &str, secret: Option<&str>) -> Receiver {
        Receiver {
            path: path.to_owned(),
            secret: secret.map(str::to_owned),
            status: 200,
            deliveries: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// Deliveries that were not duplicates.
    pub fn processed(&self) -> Vec<&Delivery> {
        self.deliveries.iter().filter(|d| !d.duplicate).collect()
    }
}

impl Vendor for Receiver {
    fn check(&mut self, req: &Recorded) -> Option<Reply> {
        let line = req.line();
        if req.path != self.path || req.method != "POST" {
            self.violations
                .push(format!("{line}: not the webhook endpoint"));
            return Some(Reply::json(404, &json!({ "error": "not found" })));
        }
        if let Some(secret) = &self.secret {
            match req.header("x-steward-signature") {
                Some(sig) if verify(secret, &req.body, sig) => {}
                Some(sig) => {
                    self.violations
                        .push(format!("{line}: wrong signature {sig}"));
                    return Some(Reply::json(401, &json!({ "error": "invalid signature" })));
                }
                None => {
                    self.violations.push(format!("{line}: unsigned delivery"));
                    return Some(Reply::json(
                        401,
                        &json!({ "error": "missing X-Steward-Signature" }),
                    ));
                }
            }
        }
        if !req
            .header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
        {
            self.violations.push(format!(
                "{line}: Content-Type {:?}",
                req.header("content-type")
            ));
            return Some(Reply::json(
                400,
                &json!({ "error": "expected application/json" }),
            ));
        }
        if req.body_json().is_none() {
            self.violations
                .push(format!("{line}: the body is not JSON"));
            return Some(Reply::json(
                400,
                &json!({ "error": "the body is not JSON" }),
            ));
        }
        match req.header("user-agent") {
            Some(ua) if ua.starts_with("steward-connector-webhook/") => {}
            other => self.violations.push(format!(
                "contract: {line}: User-Agent {other:?}, expected steward-connector-webhook/VERSION"
            )),
        }
        None
    }

    fn handle(&mut self, req: &Recorded) -> Reply {
        let key = req.header("idempotency-key").map(str::to_owned);
        let duplicate = key.is_some() && self.deliveries.iter().any(|d| d.idempotency_key == key);
        self.deliveries.push(Delivery {
            idempotency_key: key,
            attempt: req.header("x-steward-attempt").map(str::to_owned),
            payload: req.json(),
            duplicate,
        });
        Reply::json(
            self.status,
            &json!({ "received": true, "duplicate": duplicate }),
        )
    }
}
