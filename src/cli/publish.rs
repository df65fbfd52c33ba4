//! Outbound publishing (`[outbound]`): emitted events, and the actions of connectors
//! routed to a queue, published to RabbitMQ through the outbox.
//!
//! [`Outbound`] is an [`Invoker`] composed with the WebAssembly connector host, so the
//! outbox dispatcher gives publishing what it gives connector calls: claims and
//! leases, retries with backoff, dead-lettering after the last try, and outcomes
//! committed with the end of the row. A publish is one persistent message on a channel
//! in confirm mode, `mandatory` set; it succeeds only once the broker acknowledged it.
//! A negative acknowledgement, a message returned as unroutable, a lost connection or
//! no confirm in time is a retryable error. The message id is the action id, which is
//! deterministic, so a message published again after a crash or a lost confirm can be
//! recognised by consumers.
//!
//! - An emitted event (outbox row `steward`/`emit`) is a structured-mode CloudEvent
//!   (`application/cloudevents+json`): `id` the action id, `source` `steward`, its
//!   `type`, `subject` and `data`; routing key: the event type.
//! - A routed action is JSON `{connector, op, args, action_id}` (the arguments as the
//!   rule wrote them: an array for positional ones), routing key
//!   `action.<connector>.<op>`, the action id also in the `idempotency-key` header.
//!
//! One connection and channel serve every publish; when either is lost, the next
//! publish opens new ones. The dispatcher calls invokers on blocking threads: a
//! publish runs there on the engine's runtime ([`tokio::runtime::Handle::block_on`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use steward_engine::dispatch::{Call, CallError, Invoker};
use steward_engine::event::Event;

use super::amqp::AmqpConfig;

/// The connector name of emitted events' outbox rows.
const EMIT_CONNECTOR: &str = "steward";
const EMIT_OP: &str = "emit";

/// How long opening the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest AMQP short string (routing keys, message ids).
const SHORT_STRING: usize = 255;

/// `[outbound]`: where emitted events and routed actions are published. Every key can
/// be overridden by the environment, e.g. `STEWARD_OUTBOUND__EXCHANGE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// The broker; default the `[amqp]` URL (or the local broker without `[amqp]`).
    pub url: Option<String>,
    /// The exchange messages are published to; empty for the default exchange (then
    /// the routing key is a queue's name, and nothing is declared).
    pub exchange: String,
    /// `topic`, `direct`, `fanout` or `headers`.
    pub exchange_type: String,
    /// Declare the exchange durable (it survives a broker restart).
    pub durable: bool,
    /// Declare the exchange; when false, it must exist (checked passively).
    pub declare: bool,
    /// Publish emitted events (`emit "type" {..}`).
    pub emitted: bool,
    /// Connectors whose actions are published as messages for a worker elsewhere,
    /// instead of being executed by a WebAssembly connector.
    pub routes: Vec<String>,
    /// How long a publish waits for the broker's confirm before it counts as failed
    /// (and is retried).
    pub timeout_ms: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            url: None,
            exchange: "steward.out".to_string(),
            exchange_type: "topic".to_string(),
            durable: true,
            declare: true,
            emitted: true,
            routes: Vec::new(),
            timeout_ms: 10_000,
        }
    }
}

impl OutboundConfig {
    /// Checks the section against the names of the configured connectors.
    fn check(&self, connectors: &[&str]) -> Result<()> {
        for route in &self.routes {
            if route == EMIT_CONNECTOR {
                bail!(
                    "[outbound] routes names `{EMIT_CONNECTOR}`, which is not a connector (emitted events are published with `emitted = true`)"
                );
            }
            if connectors.contains(&route.as_str()) {
                bail!(
                    "[outbound] routes names `{route}`, which also has a [connectors.{route}] table; an action is either published or executed: remove one"
                );
            }
        }
        if self.timeout_ms == 0 {
            bail!("[outbound] timeout_ms must be at least 1");
        }
        Ok(())
    }
}

/// Composes the outbound publisher with the connector host (`host`, with its longest
/// call time); without `[outbound]`, the host is returned as it is.
pub fn compose(
    outbound: Option<&OutboundConfig>,
    amqp: Option<&AmqpConfig>,
    connectors: &BTreeMap<String, steward_connectors::ConnectorConfig>,
    host: Option<(Arc<dyn Invoker>, u64)>,
) -> Result<Option<(Arc<dyn Invoker>, u64)>> {
    let Some(config) = outbound else {
        return Ok(host);
    };
    let names: Vec<&str> = connectors.keys().map(String::as_str).collect();
    config.check(&names)?;
    let url = match (&config.url, amqp) {
        (Some(url), _) => url.clone(),
        (None, Some(amqp)) => amqp.url.clone(),
        (None, None) => AmqpConfig::default().url,
    };
    if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
        bail!(
            "[outbound] url `{}` is not an AMQP URI: {e}",
            display_url(&url)
        );
    }
    let (host, longest) = match host {
        Some((host, longest)) => (Some(host), longest),
        None => (None, 0),
    };
    let outbound = Outbound {
        host,
        emitted: config.emitted,
        routes: config.routes.iter().cloned().collect(),
        publisher: Publisher {
            url,
            config: config.clone(),
            session: tokio::sync::Mutex::new(None),
        },
    };
    // A publish may first have to connect, then waits for its confirm.
    let publish_ms = config
        .timeout_ms
        .saturating_add(CONNECT_TIMEOUT.as_millis() as u64);
    Ok(Some((Arc::new(outbound), longest.max(publish_ms))))
}

fn display_url(url: &str) -> String {
    AmqpConfig {
        url: url.to_string(),
        ..AmqpConfig::default()
    }
    .display_url()
}

/// The publisher in front of the connector host.
pub struct Outbound {
    host: Option<Arc<dyn Invoker>>,
    emitted: bool,
    routes: BTreeSet<String>,
    publisher: Publisher,
}

impl Outbound {
    /// Whether calls of this connector are published rather than executed.
    fn publishes(&self, connector: &str) -> bool {
        (self.emitted && connector == EMIT_CONNECTOR) || self.routes.contains(connector)
    }
}

fn permanent(message: String) -> CallError {
    CallError {
        retryable: false,
        retry_after_ms: None,
        message,
    }
}

fn retryable(message: String) -> CallError {
    CallError {
        retryable: true,
        retry_after_ms: None,
        message,
    }
}

impl Invoker for Outbound {
    fn has(&self, connector: &str) -> bool {
        self.publishes(connector) || self.host.as_ref().is_some_and(|h| h.has(connector))
    }

    fn operations(&self, connector: &str) -> Result<Vec<(String, Json)>, CallError> {
        match &self.host {
            Some(host) if !self.publishes(connector) => host.operations(connector),
            // Not asked for published connectors (`checks_operations` is false).
            _ => Ok(Vec::new()),
        }
    }

    fn checks_operations(&self, connector: &str) -> bool {
        match &self.host {
            _ if self.publishes(connector) => false,
            Some(host) => host.checks_operations(connector),
            None => true,
        }
    }

    fn invoke(&self, call: &Call<'_>) -> Result<String, CallError> {
        if !self.publishes(call.connector) {
            return match &self.host {
                Some(host) => host.invoke(call),
                None => Err(permanent(format!(
                    "no connector `{}` is configured",
                    call.connector
                ))),
            };
        }
        let message = if call.connector == EMIT_CONNECTOR {
            emitted_message(call)?
        } else {
            routed_message(call)?
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| permanent(format!("publishing needs the engine's runtime: {e}")))?;
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let left = Duration::from_millis(call.deadline_ms.saturating_sub(now).max(1));
        let wait = Duration::from_millis(self.publisher.config.timeout_ms).min(left);
        runtime.block_on(self.publisher.publish(&message, wait))?;
        Ok(json!({
            "exchange": self.publisher.config.exchange,
            "routing_key": message.routing_key,
            "message_id": message.message_id,
        })
        .to_string())
    }
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub routing_key: String,
    /// The action id, or `sha256:HEX` of it when it is longer than an AMQP message id
    /// may be (the `x-steward-action-id` header always holds it whole).
    pub message_id: String,
    pub content_type: &'static str,
    /// The AMQP `type` property: the event type, or `action`.
    pub kind: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Outgoing {
    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in &self.headers {
            headers.insert(
                ShortString::from(*name),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        BasicProperties::default()
            .with_content_type(ShortString::from(self.content_type))
            .with_message_id(ShortString::from(self.message_id.as_str()))
            .with_type(ShortString::from(self.kind.as_str()))
            .with_app_id(ShortString::from("steward"))
            .with_delivery_mode(2)
            .with_headers(headers)
    }
}

/// The message id for an action id: itself when it fits in a short string.
fn message_id(action_id: &str) -> String {
    if action_id.len() <= SHORT_STRING {
        return action_id.to_string();
    }
    format!("sha256:{:x}", Sha256::digest(action_id.as_bytes()))
}

fn routing_key(key: String) -> Result<String, CallError> {
    if key.len() > SHORT_STRING {
        return Err(permanent(format!(
            "routing key `{}…` is longer than {SHORT_STRING} bytes",
            key.chars().take(40).collect::<String>()
        )));
    }
    Ok(key)
}

fn headers(call: &Call<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("x-steward-action-id", call.idempotency_key.to_string()),
        ("x-steward-attempt", call.attempt.to_string()),
    ]
}

/// An emitted event's outbox row (`{"type", "subject", "data"}`) as a structured-mode
/// CloudEvent whose id is the action id.
pub fn emitted_message(call: &Call<'_>) -> Result<Outgoing, CallError> {
    if call.op != EMIT_OP {
        return Err(permanent(format!(
            "`{EMIT_CONNECTOR}` has no operation `{}` (only `{EMIT_OP}`)",
            call.op
        )));
    }
    let args: Json = serde_json::from_str(call.args)
        .map_err(|e| permanent(format!("stored emit arguments are not JSON: {e}")))?;
    let Some(event_type) = args.get("type").and_then(Json::as_str) else {
        return Err(permanent(
            "stored emit arguments have no `type`".to_string(),
        ));
    };
    let event = Event {
        id: call.idempotency_key.to_string(),
        source: EMIT_CONNECTOR.to_string(),
        event_type: event_type.to_string(),
        time: None,
        subject: args
            .get("subject")
            .and_then(Json::as_str)
            .map(str::to_string),
        datacontenttype: Some("application/json".to_string()),
        dataschema: None,
        data: args.get("data").cloned(),
        data_base64: None,
        extensions: serde_json::Map::new(),
    };
    Ok(Outgoing {
        routing_key: routing_key(event_type.to_string())?,
        message_id: message_id(call.idempotency_key),
        content_type: "application/cloudevents+json",
        kind: event_type.to_string(),
        headers: headers(call),
        body: event.to_json().to_string().into_bytes(),
    })
}

/// A routed action as JSON `{connector, op, args, action_id}`.
pub fn routed_message(call: &Call<'_>) -> Result<Outgoing, CallError> {
    let args: Json = serde_json::from_str(call.args)
        .map_err(|e| permanent(format!("stored arguments are not JSON: {e}")))?;
    let body = json!({
        "connector": call.connector,
        "op": call.op,
        "args": args,
        "action_id": call.idempotency_key,
    });
    let mut headers = headers(call);
    headers.push(("idempotency-key", call.idempotency_key.to_string()));
    Ok(Outgoing {
        routing_key: routing_key(format!("action.{}.{}", call.connector, call.op))?,
        message_id: message_id(call.idempotency_key),
        content_type: "application/json",
        kind: "action".to_string(),
        headers,
        body: body.to_string().into_bytes(),
    })
}

/// The long-lived connection and its confirm-mode channel.
struct Session {
    connection: Connection,
    channel: Channel,
}

struct Publisher {
    url: String,
    config: OutboundConfig,
    session: tokio::sync::Mutex<Option<Session>>,
}

impl Publisher {
    /// The channel of the current session, opening one when there is none or it was
    /// lost.
    async fn channel(&self) -> Result<Channel, CallError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref() {
            if s.connection.status().connected() && s.channel.status().connected() {
                return Ok(s.channel.clone());
            }
            eprintln!(
                "outbound: the connection to {} was lost; reconnecting",
                display_url(&self.url)
            );
            *session = None;
        }
        let opened = self
            .open()
            .await
            .map_err(|e| retryable(format!("outbound: {}: {e:#}", display_url(&self.url))))?;
        let channel = opened.channel.clone();
        *session = Some(opened);
        Ok(channel)
    }

    async fn open(&self) -> Result<Session> {
        use anyhow::Context;
        let properties = ConnectionProperties::default().with_connection_name(LongString::from(
            format!("steward run: outbound to {}", self.config.exchange),
        ));
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.url, properties))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
                .and_then(|c| c.map_err(anyhow::Error::from))
                .context("connecting")?;
        let channel = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        let config = &self.config;
        if !config.exchange.is_empty() {
            channel
                .exchange_declare(
                    ShortString::from(config.exchange.as_str()),
                    super::amqp::exchange_kind(&config.exchange_type),
                    ExchangeDeclareOptions {
                        passive: !config.declare,
                        durable: config.durable,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("declaring the exchange `{}`", config.exchange))?;
        }
        eprintln!(
            "outbound: publishing to exchange `{}` on {}",
            config.exchange,
            display_url(&self.url)
        );
        Ok(Session {
            connection,
            channel,
        })
    }

    /// Drops the session `channel` belongs to (if it is still the current one), so the
    /// next publish opens a new one.
    async fn reset(&self, channel: &Channel) {
        let mut session = self.session.lock().await;
        if session
            .as_ref()
            .is_some_and(|s| s.channel.id() == channel.id())
            && let Some(s) = session.take()
        {
            let _ = s
                .connection
                .close(200, ShortString::from("steward reconnecting"))
                .await;
        }
    }

    /// Publishes one persistent, mandatory message and waits for the broker's confirm.
    async fn publish(&self, message: &Outgoing, wait: Duration) -> Result<(), CallError> {
        let channel = self.channel().await?;
        let exchange = &self.config.exchange;
        let sent = channel
            .basic_publish(
                ShortString::from(exchange.as_str()),
                ShortString::from(message.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties(),
            )
            .await;
        let confirm = match sent {
            Ok(confirm) => confirm,
            Err(e) => {
                self.reset(&channel).await;
                return Err(retryable(format!("publishing to `{exchange}`: {e}")));
            }
        };
        match tokio::time::timeout(wait, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(retryable(format!(
                "unroutable: exchange `{exchange}` has no queue bound for routing key `{}` (the broker returned it: {} {})",
                message.routing_key,
                returned.reply_code,
                returned.reply_text.as_str()
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(retryable(format!(
                "the broker refused the message (negative confirm) on `{exchange}`"
            ))),
            Ok(Ok(Confirmation::NotRequested)) => {
                self.reset(&channel).await;
                Err(retryable(
                    "the channel is not in confirm mode; reconnecting".to_string(),
                ))
            }
            Ok(Err(e)) => {
                self.reset(&channel).await;
                Err(retryable(format!(
                    "waiting for the confirm on `{exchange}`: {e}"
                )))
            }
            Err(_) => {
                self.reset(&channel).await;
                Err(retryable(format!(
                    "no confirm from the broker within {} ms",
                    wait.as_millis()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn call<'a>(connector: &'a str, op: &'a str, args: &'a str, id: &'a str) -> Call<'a> {
        Call {
            connector,
            op,
            args,
            idempotency_key: id,
            attempt: 2,
            deadline_ms: 0,
        }
    }

    #[test]
    fn emitted_events_are_structured_cloudevents_named_by_their_action() {
        let args = r#"{"type":"change.approved","subject":"CHG-1","data":{"by":"alice"}}"#;
        let m = emitted_message(&call("steward", "emit", args, "change/CHG-1/3/0")).unwrap();
        assert_eq!(m.routing_key, "change.approved");
        assert_eq!(m.message_id, "change/CHG-1/3/0");
        assert_eq!(m.content_type, "application/cloudevents+json");
        let body: Json = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(
            body,
            json!({"specversion": "1.0", "id": "change/CHG-1/3/0", "source": "steward",
                   "type": "change.approved", "subject": "CHG-1",
                   "datacontenttype": "application/json", "data": {"by": "alice"}})
        );
        // Without a subject (a stateless rule's emit).
        let m = emitted_message(&call(
            "steward",
            "emit",
            r#"{"type":"t","subject":null,"data":{}}"#,
            "rule/r/s/1/0",
        ))
        .unwrap();
        let body: Json = serde_json::from_slice(&m.body).unwrap();
        assert!(body.get("subject").is_none(), "{body}");
        assert!(
            emitted_message(&call("steward", "other", args, "x"))
                .unwrap_err()
                .message
                .contains("no operation `other`")
        );
    }

    #[test]
    fn routed_actions_carry_their_arguments_as_decided() {
        let m = routed_message(&call("ticketing", "open", r#"["INC-1",{"p":1}]"#, "a/1")).unwrap();
        assert_eq!(m.routing_key, "action.ticketing.open");
        assert_eq!(m.message_id, "a/1");
        assert!(m.headers.contains(&("idempotency-key", "a/1".to_string())));
        let body: Json = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(
            body,
            json!({"connector": "ticketing", "op": "open", "args": ["INC-1", {"p": 1}], "action_id": "a/1"})
        );
    }

    #[test]
    fn long_action_ids_get_a_digest_as_message_id() {
        let id = "x".repeat(300);
        let m = routed_message(&call("t", "o", "{}", &id)).unwrap();
        assert!(m.message_id.starts_with("sha256:"), "{}", m.message_id);
        assert_eq!(m.message_id.len(), "sha256:".len() + 64);
        assert!(m.headers.contains(&("x-steward-action-id", id.clone())));
        let long_type = format!(r#"{{"type":"{}","data":null}}"#, "t".repeat(300));
        let e = emitted_message(&call("steward", "emit", &long_type, "a")).unwrap_err();
        assert!(
            !e.retryable && e.message.contains("longer than 255"),
            "{e:?}"
        );
    }

    #[test]
    fn routes_are_checked_against_the_connectors() {
        let routed = OutboundConfig {
            routes: vec!["jira".to_string()],
            ..OutboundConfig::default()
        };
        assert!(routed.check(&["slack"]).is_ok());
        let e = routed.check(&["jira"]).unwrap_err().to_string();
        assert!(e.contains("[connectors.jira]"), "{e}");
        let steward = OutboundConfig {
            routes: vec!["steward".to_string()],
            ..OutboundConfig::default()
        };
        assert!(steward.check(&[]).is_err());
    }
}
