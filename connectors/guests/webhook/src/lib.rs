//! Steward's generic webhook connector: JSON POSTs, optionally signed.
//!
//! Settings: `url`. Secrets: `hmac_secret` (optional). Each request carries
//! `Idempotency-Key` (the action's id, the same on every attempt), `X-Steward-Attempt`,
//! and, with a secret, `X-Steward-Signature: sha256=<hex HMAC-SHA256 of the body>`.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use steward_connector_sdk::{
    Call, Connector, Error, Http, Operation, Prop, Schema, Value, json, require_setting, secret,
};

struct Webhook;

impl Connector for Webhook {
    const NAME: &'static str = "webhook";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn operations() -> Vec<Operation> {
        vec![Operation::new(
            "send",
            "POSTs the payload as JSON to the configured URL (signed when a secret is set)",
            Schema::object().required("payload", Prop::any("The JSON to send")),
            send,
        )]
    }
}

steward_connector_sdk::connector!(Webhook);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    payload: Value,
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
fn signature(secret: &str, body: &[u8]) -> Result<String, Error> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| Error::permanent(format!("secret `hmac_secret` is unusable: {e}")))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

fn send(call: &Call, args: Send) -> Result<Value, Error> {
    let url = require_setting("url")?;
    let body = args.payload.to_string().into_bytes();
    let mut request = Http::for_connector::<Webhook>()
        .request("POST", &url)
        .header("Idempotency-Key", &call.idempotency_key)
        .header("X-Steward-Attempt", &call.attempt.to_string());
    if let Some(key) = secret("hmac_secret").filter(|k| !k.is_empty()) {
        request = request.header("X-Steward-Signature", &signature(&key, &body)?);
    }
    let response = request.body(body, "application/json").send()?;
    Ok(json!({ "status": response.status }))
}
