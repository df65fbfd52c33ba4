//! Steward's Slack connector: messages through an incoming webhook.
//!
//! Secrets: `webhook_url` (the webhook is its own credential; allow `hooks.slack.com`).
//! Slack answers `200 ok` (text); errors such as `invalid_payload` come as 4xx text
//! and are permanent. Incoming webhooks take no idempotency key.

use serde::Deserialize;
use steward_connector_sdk::{
    Call, Connector, Error, Http, Operation, Prop, Schema, Value, json, require_secret,
};

struct Slack;

impl Connector for Slack {
    const NAME: &'static str = "slack";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn operations() -> Vec<Operation> {
        vec![Operation::new(
            "post",
            "Posts a message (text, optionally Block Kit blocks) to the webhook's channel",
            Schema::object()
                .required(
                    "text",
                    Prop::string("Message text (the notification fallback with blocks)"),
                )
                .optional("blocks", Prop::array("Block Kit blocks")),
            post,
        )]
    }
}

steward_connector_sdk::connector!(Slack);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Post {
    text: String,
    blocks: Option<Vec<Value>>,
}

fn post(_call: &Call, args: Post) -> Result<Value, Error> {
    let webhook_url = require_secret("webhook_url")?;
    let mut body = json!({ "text": args.text });
    if let Some(blocks) = args.blocks {
        body["blocks"] = Value::Array(blocks);
    }
    Http::for_connector::<Slack>()
        .request("POST", &webhook_url)
        .json(&body)
        .send()?;
    Ok(json!({ "ok": true }))
}
