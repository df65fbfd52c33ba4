//! The RabbitMQ (AMQP 0-9-1) event source of `steward run`, configured by `[amqp]`.
//!
//! A background task consumes on channels of a connection it may share with other
//! sources ([`Broker`]: a `[cluster]` process's partitions share one). It declares
//! the topology from the configuration (exchange, queue, bindings, dead-letter
//! exchange and queue), consumes with manual acknowledgements and a bounded prefetch,
//! decodes each delivery as a CloudEvent (AMQP binding, structured or binary mode)
//! and hands the engine loop
//! batches of messages. The engine loop applies a batch, commits it to the store, and
//! only then settles it ([`Source::settle`]): acknowledges the messages that took
//! effect and dead-letters the others. When the connection drops, the task reconnects
//! with exponential backoff (the first of the sharing tasks to find it closed opens
//! the next one); deliveries that were not acknowledged are redelivered by
//! the broker, and the store's de-duplication by (`source`, `id`) makes a redelivery
//! of an event already committed harmless.
//!
//! Dead-lettering: an unusable message (not JSON, not a CloudEvent, too large, no
//! `time` when one is required, a type no rule listens to) is recorded in the store's
//! dead letters, then republished unchanged to the dead-letter exchange with its
//! reason in the `x-steward-reason` header on a channel in confirm mode, and the
//! original is acknowledged only once the broker confirmed the copy. Should that
//! publish fail, the original is rejected without requeue, so the queue's own
//! `x-dead-letter-exchange` still routes it (without the reason header).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use chrono::Utc;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use steward_engine::decision::{Decision, Kind};
use steward_engine::event::{Event, MAX_EVENT_BYTES, format_time};
use steward_engine::store::DeadLetter;
use tokio::sync::{mpsc, watch};

/// How often a lingering run looks for deliveries, to hand over a full run at once.
const LINGER_TICK: Duration = Duration::from_millis(1);

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a settlement (an ack, or a dead-letter copy and its confirm) waits for
/// the broker. On a connection that died while the batch was being committed (a
/// broker restart), lapin may never complete it; the engine loop must go on, and the
/// broker redelivers whatever was not settled.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// Runs a settlement, failing it after [`SETTLE_WITHIN`].
async fn within<T>(settling: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(SETTLE_WITHIN, settling)
        .await
        .map_err(|_| {
            anyhow!(
                "the broker did not answer within {} s",
                SETTLE_WITHIN.as_secs()
            )
        })?
}

/// Acknowledges one message, within [`SETTLE_WITHIN`].
async fn ack(message: &Message) -> Result<()> {
    within(async {
        let acked = message.delivery.acker.ack(BasicAckOptions::default());
        acked.await?;
        Ok(())
    })
    .await
}

/// The header that carries the reason of a dead-lettered message.
pub const REASON_HEADER: &str = "x-steward-reason";

/// `[amqp]`: where events come from when the engine consumes RabbitMQ. Every key can
/// be overridden by the environment, e.g. `STEWARD_AMQP__URL`, `STEWARD_AMQP__PREFETCH`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (`amqps://` for TLS).
    pub url: String,
    /// The exchange events are published to (declared durable); empty for the default
    /// exchange (then nothing is declared or bound).
    pub exchange: String,
    /// `topic`, `direct`, `fanout` or `headers` (or a plugin's type, e.g.
    /// `x-consistent-hash`).
    pub exchange_type: String,
    /// The queue consumed (declared durable).
    pub queue: String,
    /// One binding key (added to `routing_keys`).
    pub routing_key: Option<String>,
    /// Binding keys of the queue to the exchange; default `#` for a topic exchange,
    /// the queue's name for a direct one, empty otherwise.
    pub routing_keys: Vec<String>,
    /// Unacknowledged deliveries the broker may have in flight to this consumer.
    pub prefetch: u16,
    /// `classic` or `quorum`.
    pub queue_type: QueueType,
    /// Quorum queues: deliveries of one message before the broker dead-letters it
    /// (`x-delivery-limit`), so a message that crashes the engine cannot loop forever.
    pub delivery_limit: Option<u32>,
    /// The dead-letter exchange (declared durable, fanout); also the queue's
    /// `x-dead-letter-exchange`. No dead-lettering to the broker when unset.
    pub dead_letter_exchange: Option<String>,
    /// The queue bound to the dead-letter exchange (declared durable).
    pub dead_letter_queue: Option<String>,
    /// Declare the topology; when false, it must exist (checked passively).
    pub declare: bool,
    /// Dead-letter events that carry no `time`.
    pub require_time: bool,
    /// Dead-letter events whose type no rule listens to (otherwise they are
    /// acknowledged and counted as unrouted).
    pub dead_letter_unrouted: bool,
    /// Largest accepted message body, in bytes (at most the engine's event limit).
    pub max_message_bytes: usize,
    /// First wait before reconnecting; doubled after each failure …
    pub reconnect_min_ms: u64,
    /// … up to this.
    pub reconnect_max_ms: u64,
    /// Declare the queue with `x-single-active-consumer`: of several consumers, the
    /// broker delivers to one at a time (partition queues of `[cluster]` always are).
    pub single_active_consumer: bool,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            exchange: "steward.events".to_string(),
            exchange_type: "topic".to_string(),
            queue: "steward.events".to_string(),
            routing_key: None,
            routing_keys: Vec::new(),
            prefetch: 2048,
            queue_type: QueueType::Classic,
            delivery_limit: None,
            dead_letter_exchange: Some("steward.dead".to_string()),
            dead_letter_queue: Some("steward.dead".to_string()),
            declare: true,
            require_time: false,
            dead_letter_unrouted: true,
            max_message_bytes: MAX_EVENT_BYTES,
            reconnect_min_ms: 100,
            reconnect_max_ms: 10_000,
            single_active_consumer: false,
        }
    }
}

/// The kind of the consumed queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    Quorum,
}

impl AmqpConfig {
    /// The binding keys actually used.
    fn bindings(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.routing_key.iter().cloned().collect();
        keys.extend(self.routing_keys.iter().cloned());
        if keys.is_empty() {
            keys.push(match self.exchange_type.as_str() {
                "topic" => "#".to_string(),
                "direct" => self.queue.clone(),
                _ => String::new(),
            });
        }
        keys
    }

    /// The URL without its password, for messages.
    pub fn display_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &self.url[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{}{user}:***{}", &self.url[..scheme + 3], &self.url[at..])
            }
            _ => self.url.clone(),
        }
    }

    fn check(&self) -> Result<()> {
        if let Err(e) = self.url.parse::<lapin::uri::AMQPUri>() {
            bail!(
                "[amqp] url `{}` is not an AMQP URI: {e}",
                self.display_url()
            );
        }
        if self.queue.is_empty() {
            bail!("[amqp] queue must not be empty");
        }
        if self.delivery_limit.is_some() && self.queue_type != QueueType::Quorum {
            bail!("[amqp] delivery_limit needs queue_type = \"quorum\"");
        }
        if self.dead_letter_queue.is_some() && self.dead_letter_exchange.is_none() {
            bail!("[amqp] dead_letter_queue needs a dead_letter_exchange to be bound to");
        }
        if self.prefetch == 0 {
            bail!("[amqp] prefetch must be at least 1");
        }
        Ok(())
    }
}

/// One consumed message, decoded.
pub struct Message {
    /// Where it came from, for dead letters and messages: `amqp:QUEUE#TAG`.
    pub origin: String,
    /// The event, or why it is unusable (already shaped as the store's dead letter).
    pub content: Result<Box<Event>, DeadLetter>,
    /// When the consumer task took it from lapin (read off the connection).
    pub received: std::time::Instant,
    delivery: lapin::message::Delivery,
    /// The connection it came on.
    link: Arc<Link>,
}

/// What the messages of one connection share: where their dead-letter copies go.
struct Link {
    /// A channel in confirm mode for dead-letter copies.
    publisher: Channel,
    dead_letter_exchange: Option<String>,
}

/// What to do with a message once its batch is committed.
pub enum Settle {
    /// It took effect (or was a duplicate): acknowledge it.
    Ack,
    /// Unusable: republish it to the dead-letter exchange with this reason.
    DeadLetter(String),
}

/// Messages consumed together, committed together, then settled: all from one
/// connection.
pub struct Batch {
    messages: Vec<Message>,
    link: Arc<Link>,
}

impl Batch {
    /// The messages, in delivery order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Acknowledges or dead-letters each message (call only after the commit). Errors
    /// are reported, never fatal: an unacknowledged message is redelivered, and the
    /// store drops it as a duplicate. Returns how many messages could not be settled.
    ///
    /// When every message is acknowledged, the one `multiple` ack is handed to lapin
    /// and, unless it is already written, left in `acking` to be awaited later (see
    /// [`Source::settle`]).
    async fn settle(self, outcomes: &[Settle], acking: &mut Option<Acking>) -> usize {
        let Batch { messages, link } = self;
        let mut unsettled = 0;
        // All acknowledged: one `multiple` ack for the batch (its tags are on one
        // channel, and earlier batches are settled before this one).
        if outcomes.len() == messages.len() && outcomes.iter().all(|o| matches!(o, Settle::Ack)) {
            let Some(last) = messages.last() else {
                return 0;
            };
            let (acker, origin, count) = (
                last.delivery.acker.clone(),
                last.origin.clone(),
                messages.len(),
            );
            let mut ack: Acking = Box::pin(async move {
                let acked = within(async {
                    acker.ack(BasicAckOptions { multiple: true }).await?;
                    Ok(())
                })
                .await;
                match acked {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::warn!(
                            origin = %origin,
                            error = %e,
                            "amqp: acknowledging up to {origin}: {e} (the messages will be redelivered)"
                        );
                        count
                    }
                }
            });
            // The first poll hands the frame to lapin, which writes frames in order:
            // the ack goes out before anything sent after it.
            match futures_lite::future::poll_once(&mut ack).await {
                Some(failed) => return failed,
                None => *acking = Some(ack),
            }
            return 0;
        }
        for (message, outcome) in messages.iter().zip(outcomes) {
            let done = match outcome {
                Settle::Ack => ack(message).await,
                Settle::DeadLetter(reason) => {
                    let exchange = link.dead_letter_exchange.as_deref();
                    within(dead_letter(&link.publisher, exchange, message, reason)).await
                }
            };
            if let Err(e) = done {
                tracing::warn!(
                    origin = %message.origin,
                    error = %e,
                    "amqp: settling {}: {e} (it will be redelivered)",
                    message.origin
                );
                unsettled += 1;
            }
        }
        unsettled
    }
}

/// Republishes a message to the dead-letter exchange with its reason, waits for the
/// broker's confirm, then acknowledges the original; rejects it without requeue when
/// there is no dead-letter exchange or the copy was not confirmed.
async fn dead_letter(
    publisher: &Channel,
    exchange: Option<&str>,
    message: &Message,
    reason: &str,
) -> Result<()> {
    let delivery = &message.delivery;
    let confirmed = match exchange {
        Some(exchange) => {
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            headers.insert(
                REASON_HEADER.into(),
                AMQPValue::LongString(LongString::from(reason)),
            );
            headers.insert(
                "x-steward-origin".into(),
                AMQPValue::LongString(LongString::from(message.origin.as_str())),
            );
            headers.insert(
                "x-original-exchange".into(),
                AMQPValue::LongString(LongString::from(delivery.exchange.as_str())),
            );
            headers.insert(
                "x-original-routing-key".into(),
                AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
            );
            let properties = delivery
                .properties
                .clone()
                .with_headers(headers)
                .with_delivery_mode(2);
            let publish = publisher
                .basic_publish(
                    ShortString::from(exchange),
                    delivery.routing_key.clone(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    properties,
                )
                .await;
            match publish {
                Ok(confirm) => match confirm.await {
                    Ok(Confirmation::Ack(_)) => true,
                    Ok(other) => {
                        tracing::warn!(
                            origin = %message.origin,
                            "amqp: the dead-letter copy of {} was not confirmed ({other:?}); rejecting it",
                            message.origin
                        );
                        false
                    }
                    Err(e) => {
                        tracing::warn!(
                            origin = %message.origin,
                            error = %e,
                            "amqp: publishing the dead-letter copy of {}: {e}; rejecting it",
                            message.origin
                        );
                        false
                    }
                },
                Err(e) => {
                    tracing::warn!(
                        origin = %message.origin,
                        error = %e,
                        "amqp: publishing the dead-letter copy of {}: {e}; rejecting it",
                        message.origin
                    );
                    false
                }
            }
        }
        None => false,
    };
    if confirmed {
        delivery.acker.ack(BasicAckOptions::default()).await?;
    } else {
        delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await?;
    }
    Ok(())
}

/// Most sources on one connection. Each has three channels (consuming, dead-letter
/// copies, queue depth), so a connection stays well under the broker's limit of
/// channels per connection (2,047 by default) however many partitions a process owns.
pub const SOURCES_PER_CONNECTION: u32 = 128;

/// The connection (or connections) to the broker that sources share, each consuming
/// on channels of its own: a `[cluster]` process's partitions share one, so the
/// broker holds one connection per process rather than one per partition
/// (BENCHMARKS.md, "Intake, seventeenth day").
///
/// A source whose session ended asks for the connection again: the first to find it
/// closed opens the next one, and the others take that. So a connection cut by the
/// broker ends every source's session on it (each consumer fails with it) and each
/// reconnects on its own backoff, while a source that stops (a partition handed over)
/// closes only its channels. [`Broker::close`] closes the connections once every
/// source has stopped.
#[derive(Clone)]
pub struct Broker {
    connections: Arc<Connections>,
    /// Which connection this handle's source uses.
    slot: u32,
    /// The `[cluster]` partition this handle's source consumes for: its readiness is
    /// that partition's `amqp` check, forgotten when the source stops.
    part: Option<u32>,
}

struct Connections {
    url: String,
    /// The connection's name, as the broker's tools show it.
    name: String,
    slots: tokio::sync::Mutex<HashMap<u32, Slot>>,
}

/// One connection's state.
#[derive(Default)]
struct Slot {
    open: Option<Arc<Connection>>,
    /// When the last attempt to open it failed, and why.
    failed: Option<(tokio::time::Instant, String)>,
}

impl Broker {
    /// Connections to `url` named `name`; none is opened until a source asks.
    pub fn new(url: &str, name: impl Into<String>) -> Broker {
        Broker {
            connections: Arc::new(Connections {
                url: url.to_string(),
                name: name.into(),
                slots: tokio::sync::Mutex::new(HashMap::new()),
            }),
            slot: 0,
            part: None,
        }
    }

    /// The handle for partition `i`'s source: sources `0..SOURCES_PER_CONNECTION`
    /// share the first connection, and so on.
    pub fn source(&self, i: u32) -> Broker {
        Broker {
            connections: self.connections.clone(),
            slot: i / SOURCES_PER_CONNECTION,
            part: Some(i),
        }
    }

    /// Reports the state of this handle's source for `/readyz`.
    fn check(&self, state: Result<(), String>) {
        super::ops::set_check_of("amqp", self.part, state);
    }

    /// The open connection of this handle's slot, opened if there is none or it was
    /// lost. Sources that asked while an attempt was under way share its outcome, so
    /// a broker that does not answer costs them one timeout, not one each in turn.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let asked = tokio::time::Instant::now();
        let shared = &self.connections;
        let mut slots = shared.slots.lock().await;
        let slot = slots.entry(self.slot).or_default();
        if let Some(connection) = &slot.open
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        if let Some((at, why)) = &slot.failed
            && *at >= asked
        {
            bail!("{why}");
        }
        let name = match self.slot {
            0 => shared.name.clone(),
            n => format!("{} ({n})", shared.name),
        };
        let properties =
            ConnectionProperties::default().with_connection_name(LongString::from(name));
        // Bounded, so a stop is noticed even while a broker does not answer.
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&shared.url, properties),
        )
        .await
        .map_err(|_| anyhow!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
        .and_then(|c| c.map_err(anyhow::Error::from))
        .context("connecting");
        match connected {
            Ok(connection) => {
                let connection = Arc::new(connection);
                *slot = Slot {
                    open: Some(connection.clone()),
                    failed: None,
                };
                Ok(connection)
            }
            Err(e) => {
                slot.failed = Some((tokio::time::Instant::now(), format!("{e:#}")));
                Err(e)
            }
        }
    }

    /// Closes every connection (once its sources have stopped).
    pub async fn close(&self) {
        let slots = std::mem::take(&mut *self.connections.slots.lock().await);
        for connection in slots.into_values().filter_map(|slot| slot.open) {
            if !connection.status().connected() {
                continue;
            }
            if let Err(e) = connection
                .close(200, ShortString::from("steward stopping"))
                .await
            {
                tracing::warn!(error = %e, "amqp: closing the connection: {e}");
            }
        }
    }
}

/// Closes a stopping session's channels: the broker requeues what they had not
/// acknowledged, for the next consumer.
async fn close_channels(channels: [&Channel; 2]) {
    for channel in channels {
        if !channel.status().connected() {
            continue;
        }
        if let Err(e) = channel
            .close(200, ShortString::from("steward stopping"))
            .await
        {
            tracing::warn!(error = %e, "amqp: closing a channel: {e}");
        }
    }
}

/// What the engine loop asks of the source task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    /// Stop consuming and hand over nothing more.
    Stop,
    /// Everything is settled: close the connection.
    Close,
}

/// An acknowledgement handed to lapin whose writing is not yet confirmed; resolves to
/// the number of messages it failed to settle.
type Acking = Pin<Box<dyn Future<Output = usize> + Send>>;

/// The running source: batches to apply, and how to stop it.
///
/// The consumer task hands over messages in runs: the first delivery after a quiet
/// spell, plus whatever arrives until it is `linger` old (up to `batch`); while
/// deliveries keep coming faster than that (a backlog), each run is whatever lapin has
/// already received, without waiting. A batch is the runs that have arrived when the
/// engine loop asks, up to `batch` messages. So a loop that keeps up with a slow
/// stream commits each message within `linger`, one that is behind takes a full batch
/// at once, and while a run lingers nothing is woken for each delivery. (Without the
/// linger, a loop that keeps up takes a few messages at a time, and a commit and an
/// acknowledgement per few messages cost more CPU than a machine shared with the
/// broker has: BENCHMARKS.md, "Intake, eighth day".)
pub struct Source {
    rx: mpsc::Receiver<Vec<Message>>,
    /// Received but left for the next batch: past `batch`, or from a later connection.
    held: Vec<Message>,
    batch: usize,
    phase: watch::Sender<Phase>,
    task: tokio::task::JoinHandle<()>,
    /// The last batch's acknowledgement, until lapin confirms it was written.
    acking: Option<Acking>,
}

impl Source {
    /// Starts consuming in the background (connecting, declaring and reconnecting as
    /// needed). Batches hold at most `batch` messages.
    pub fn start(
        config: AmqpConfig,
        broker: Broker,
        batch: usize,
        linger: Duration,
    ) -> Result<Source> {
        config.check()?;
        if config.max_message_bytes > MAX_EVENT_BYTES {
            bail!(
                "[amqp] max_message_bytes is {}, above the engine's event limit of {MAX_EVENT_BYTES}",
                config.max_message_bytes
            );
        }
        let batch = batch.max(1);
        // The broker has at most `prefetch` messages unacknowledged, each run holds at
        // least one, and each stays until its batch is settled: the task never waits
        // for room.
        let (tx, rx) = mpsc::channel(usize::from(config.prefetch).max(1));
        let (phase, watcher) = watch::channel(Phase::Run);
        broker.check(Err("connecting".to_string()));
        let runs = Runs { batch, linger };
        let task = tokio::spawn(consume(config, broker, runs, tx, watcher));
        Ok(Source {
            rx,
            held: Vec::new(),
            batch,
            phase,
            task,
            acking: None,
        })
    }

    /// The next batch: what the consumer task has handed over, up to `batch` messages;
    /// `None` once the source stopped handing over messages. Cancel safe: what it has
    /// received stays held for the next call.
    pub async fn next(&mut self) -> Option<Batch> {
        if self.held.is_empty() {
            self.held = self.rx.recv().await?;
        }
        while self.held.len() < self.batch
            && let Ok(more) = self.rx.try_recv()
        {
            self.held.extend(more);
        }
        // One batch, one connection: its acknowledgement is one `multiple` ack.
        let link = self.held[0].link.clone();
        let full = self.held.len().min(self.batch);
        let cut = self.held[..full]
            .iter()
            .position(|m| !Arc::ptr_eq(&m.link, &link))
            .unwrap_or(full);
        let rest = self.held.split_off(cut);
        let messages = std::mem::replace(&mut self.held, rest);
        Some(Batch { messages, link })
    }

    /// Stops consuming: messages not yet handed over stay unacknowledged and go back
    /// to the queue when the connection closes. Batches already handed over are still
    /// returned by [`Source::next`] until it returns `None`.
    pub fn stop(&self) {
        let _ = self.phase.send(Phase::Stop);
    }

    /// Settles a committed batch: acknowledges or dead-letters each message (see
    /// [`Batch::settle`]); returns how many could not be settled, its own and the
    /// previous batch's acknowledgement's. A batch that took effect whole is
    /// acknowledged with one frame that is sent at once, and whose writing the next
    /// settlement (or [`Source::close`]) waits for: the engine loop goes on to the
    /// next batch meanwhile instead of waiting for lapin's I/O thread.
    pub async fn settle(&mut self, batch: Batch, outcomes: &[Settle]) -> usize {
        let earlier = self.acked().await;
        earlier + batch.settle(outcomes, &mut self.acking).await
    }

    /// Waits until the acknowledgement in flight, if any, is written.
    async fn acked(&mut self) -> usize {
        match self.acking.take() {
            Some(acking) => acking.await,
            None => 0,
        }
    }

    /// Closes the connection (after the last batch was settled and its acknowledgement
    /// written) and waits for the task.
    pub async fn close(mut self) {
        self.acked().await;
        let _ = self.phase.send(Phase::Close);
        let Source { rx, task, .. } = self;
        drop(rx);
        if let Err(e) = task.await {
            tracing::error!(error = %e, "amqp: the consumer task failed: {e}");
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "amqp: cannot listen for SIGTERM ({e}); Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How a session ended.
enum End {
    /// Stopped on request (or the engine loop is gone): do not reconnect.
    Stopped,
}

/// How the consumer task groups deliveries into runs (see [`Source`]).
#[derive(Debug, Clone, Copy)]
struct Runs {
    /// The most messages in one run.
    batch: usize,
    /// How long a run waits for more after a delivery that came after a quiet spell.
    linger: Duration,
}

/// The task: sessions, with backoff between them, until stopped.
async fn consume(
    config: AmqpConfig,
    broker: Broker,
    runs: Runs,
    tx: mpsc::Sender<Vec<Message>>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut tx = Some(tx);
    let min = Duration::from_millis(config.reconnect_min_ms.max(1));
    let max = Duration::from_millis(config.reconnect_max_ms.max(config.reconnect_min_ms.max(1)));
    let mut backoff = min;
    loop {
        if *phase.borrow() != Phase::Run {
            break;
        }
        match session(
            &config,
            &broker,
            runs,
            &mut tx,
            &mut phase,
            &mut backoff,
            min,
        )
        .await
        {
            Ok(End::Stopped) => break,
            Err(e) => {
                broker.check(Err(format!("{}: {e:#}", config.display_url())));
                tracing::warn!(
                    url = %config.display_url(),
                    error = %format_args!("{e:#}"),
                    "amqp: {}: {e:#}; reconnecting in {} ms",
                    config.display_url(),
                    backoff.as_millis()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = phase.wait_for(|p| *p != Phase::Run) => break,
                }
                backoff = (backoff * 2).min(max);
            }
        }
    }
    // Nothing more is handed over. A partition's source stops because the process
    // no longer owns it: it has nothing to be ready for.
    match broker.part {
        Some(i) => {
            super::ops::clear_check_of("amqp", i);
            super::ops::queue_left(&config.queue);
        }
        None => broker.check(Err("stopped".to_string())),
    }
    tx.take();
}

/// One session on the broker's connection: declare, consume, hand over messages;
/// returns when stopped, or fails when the connection or channel is lost.
async fn session(
    config: &AmqpConfig,
    broker: &Broker,
    runs: Runs,
    tx: &mut Option<mpsc::Sender<Vec<Message>>>,
    phase: &mut watch::Receiver<Phase>,
    backoff: &mut Duration,
    min: Duration,
) -> Result<End> {
    // A stop while the broker does not answer (up to `CONNECT_TIMEOUT`) ends the
    // session at once: nothing was received on it.
    let connection = tokio::select! {
        biased;
        _ = phase.wait_for(|p| *p != Phase::Run) => {
            tx.take();
            return Ok(End::Stopped);
        }
        connection = broker.connection() => connection?,
    };
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    declare(&channel, config).await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .context("setting the prefetch")?;
    let publisher = connection
        .create_channel()
        .await
        .context("opening the dead-letter channel")?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("enabling publisher confirms")?;
    let link = Arc::new(Link {
        publisher,
        dead_letter_exchange: config.dead_letter_exchange.clone(),
    });
    let tag = format!("steward-{}", std::process::id());
    let mut consumer = channel
        .basic_consume(
            ShortString::from(config.queue.as_str()),
            ShortString::from(tag.as_str()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming from queue `{}`", config.queue))?;
    tracing::info!(
        queue = %config.queue,
        url = %config.display_url(),
        prefetch = config.prefetch,
        "amqp: consuming from queue `{}` on {} (prefetch {})",
        config.queue,
        config.display_url(),
        config.prefetch
    );
    broker.check(Ok(()));
    let _depth = super::ops::sample_queue(&connection, &config.queue).await;
    *backoff = min;
    // Whether the last run ended because nothing more had arrived.
    let mut quiet = true;
    'deliveries: loop {
        let next = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p != Phase::Run) => None,
            delivery = consumer.next() => Some(delivery),
        };
        let Some(delivery) = next else {
            if let Err(e) = channel
                .basic_cancel(
                    ShortString::from(tag.as_str()),
                    BasicCancelOptions::default(),
                )
                .await
            {
                tracing::warn!(error = %e, "amqp: cancelling the consumer: {e}");
            }
            // The engine loop drains what it was handed, settles it, then asks to
            // close; deliveries never handed over are requeued by the broker.
            tx.take();
            let _ = phase.wait_for(|p| *p == Phase::Close).await;
            close_channels([&channel, &link.publisher]).await;
            return Ok(End::Stopped);
        };
        let delivery = match delivery {
            None => bail!("the broker cancelled the consumer"),
            Some(d) => d.context("receiving")?,
        };
        let mut run = Vec::with_capacity(runs.batch.min(256));
        run.push(decode(config, delivery, &link));
        let mut lost = None;
        if quiet && !runs.linger.is_zero() {
            // Deliveries meanwhile wait in lapin's buffer, waking nobody; the run
            // looks at it once per tick of the clock, to stop early once full.
            let until = tokio::time::Instant::now() + runs.linger;
            while run.len() < runs.batch && lost.is_none() {
                let now = tokio::time::Instant::now();
                if now >= until {
                    break;
                }
                tokio::select! {
                    biased;
                    // Not handed over: requeued when the connection closes.
                    _ = phase.wait_for(|p| *p != Phase::Run) => continue 'deliveries,
                    _ = tokio::time::sleep_until(until.min(now + LINGER_TICK)) => {}
                }
                lost = arrived(&mut consumer, config, &link, &mut run, runs.batch).err();
            }
        }
        if lost.is_none() {
            lost = arrived(&mut consumer, config, &link, &mut run, runs.batch).err();
        }
        // A full run means a backlog: the next one does not wait.
        quiet = run.len() < runs.batch;
        let sent = match tx.as_ref() {
            Some(sender) => sender.send(run).await.is_ok(),
            None => false,
        };
        if !sent {
            // The engine loop is gone (its partition was stopped at once): close the
            // channels, so the broker requeues every unacknowledged delivery for the
            // next consumer.
            close_channels([&channel, &link.publisher]).await;
            return Ok(End::Stopped);
        }
        if let Some(e) = lost {
            return Err(e);
        }
    }
}

/// Adds to `run` what lapin has already received, up to `batch` messages, without
/// waiting or asking to be woken; fails when the consumer has ended.
fn arrived(
    consumer: &mut lapin::Consumer,
    config: &AmqpConfig,
    link: &Arc<Link>,
    run: &mut Vec<Message>,
    batch: usize,
) -> Result<()> {
    let mut cx = std::task::Context::from_waker(Waker::noop());
    while run.len() < batch {
        match consumer.poll_next(&mut cx) {
            Poll::Ready(Some(Ok(d))) => run.push(decode(config, d, link)),
            Poll::Ready(Some(Err(e))) => return Err(anyhow::Error::from(e).context("receiving")),
            Poll::Ready(None) => bail!("the broker cancelled the consumer"),
            Poll::Pending => break,
        }
    }
    Ok(())
}

pub fn exchange_kind(name: &str) -> ExchangeKind {
    match name {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_string()),
    }
}

/// Declares (or, with `declare = false`, checks) the exchange, queue, bindings and the
/// dead-letter exchange and queue.
async fn declare(channel: &Channel, config: &AmqpConfig) -> Result<()> {
    let passive = !config.declare;
    let exchange_options = ExchangeDeclareOptions {
        passive,
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let queue_options = QueueDeclareOptions {
        passive,
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let queue_type = match config.queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    if let Some(dlx) = &config.dead_letter_exchange {
        channel
            .exchange_declare(
                ShortString::from(dlx.as_str()),
                ExchangeKind::Fanout,
                exchange_options,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring the dead-letter exchange `{dlx}`"))?;
        if let Some(dlq) = &config.dead_letter_queue {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from(queue_type)),
            );
            channel
                .queue_declare(ShortString::from(dlq.as_str()), queue_options, args)
                .await
                .with_context(|| format!("declaring the dead-letter queue `{dlq}`"))?;
            channel
                .queue_bind(
                    ShortString::from(dlq.as_str()),
                    ShortString::from(dlx.as_str()),
                    ShortString::from(""),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding `{dlq}` to `{dlx}`"))?;
        }
    }
    if !config.exchange.is_empty() {
        channel
            .exchange_declare(
                ShortString::from(config.exchange.as_str()),
                exchange_kind(&config.exchange_type),
                exchange_options,
                FieldTable::default(),
            )
            .await
            .with_context(|| match config.exchange_type.as_str() {
            "x-consistent-hash" => format!(
                "declaring the exchange `{}` (type x-consistent-hash needs the broker plugin: `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`)",
                config.exchange
            ),
            _ => format!("declaring the exchange `{}`", config.exchange),
        })?;
    }
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(queue_type)),
    );
    if let Some(dlx) = &config.dead_letter_exchange {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(dlx.as_str())),
        );
    }
    if config.single_active_consumer {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    if let Some(limit) = config.delivery_limit {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(limit)),
        );
    }
    channel
        .queue_declare(
            ShortString::from(config.queue.as_str()),
            queue_options,
            args,
        )
        .await
        .with_context(|| format!("declaring the queue `{}`", config.queue))?;
    if !config.exchange.is_empty() && config.declare {
        for key in config.bindings() {
            channel
                .queue_bind(
                    ShortString::from(config.queue.as_str()),
                    ShortString::from(config.exchange.as_str()),
                    ShortString::from(key.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| {
                    format!(
                        "binding `{}` to `{}` with `{key}`",
                        config.queue, config.exchange
                    )
                })?;
        }
    }
    Ok(())
}

/// The prefixes of CloudEvents attributes in binary mode's application properties.
const PREFIXES: [&str; 3] = ["cloudEvents_", "cloudEvents:", "cloud_events_"];

fn decode(config: &AmqpConfig, delivery: lapin::message::Delivery, link: &Arc<Link>) -> Message {
    let received = std::time::Instant::now();
    let origin = format!("amqp:{}#{}", config.queue, delivery.delivery_tag);
    let content = decode_event(
        delivery
            .properties
            .content_type()
            .as_ref()
            .map(ShortString::as_str),
        delivery.properties.headers().as_ref(),
        &delivery.data,
        config.max_message_bytes,
        config.require_time,
    )
    .map(Box::new)
    .map_err(|reason| DeadLetter {
        received_at: Utc::now(),
        origin: origin.clone(),
        reason,
        body: stored_body(&delivery.data),
    });
    Message {
        origin,
        content,
        received,
        delivery,
        link: link.clone(),
    }
}

/// The body kept in the store's dead letter: text as it is, up to 64 KiB (the
/// dead-letter queue keeps the whole message).
fn stored_body(data: &[u8]) -> String {
    const KEEP: usize = 64 * 1024;
    if data.len() <= KEEP {
        return String::from_utf8_lossy(data).into_owned();
    }
    format!(
        "{}… ({} bytes in all)",
        String::from_utf8_lossy(&data[..KEEP]),
        data.len()
    )
}

/// Decodes one message by the CloudEvents AMQP binding: structured mode when the
/// content type is `application/cloudevents+json`, binary mode when attributes are in
/// prefixed application properties, and (leniently) a plain JSON body that is itself
/// an event. The error is the reason for dead-lettering it.
pub fn decode_event(
    content_type: Option<&str>,
    headers: Option<&FieldTable>,
    body: &[u8],
    max_bytes: usize,
    require_time: bool,
) -> std::result::Result<Event, String> {
    if body.len() > max_bytes {
        return Err(format!(
            "message of {} bytes is larger than the limit of {max_bytes} bytes",
            body.len()
        ));
    }
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    let attributes: Vec<(&str, &AMQPValue)> = headers
        .map(|h| {
            h.inner()
                .iter()
                .filter_map(|(k, v)| {
                    PREFIXES
                        .iter()
                        .find_map(|p| k.as_str().strip_prefix(p))
                        .map(|name| (name, v))
                })
                .collect()
        })
        .unwrap_or_default();
    let event = match media.as_deref() {
        Some(m) if m.starts_with("application/cloudevents-batch") => {
            return Err("batch mode is not part of the CloudEvents AMQP binding".to_string());
        }
        Some(m) if m.starts_with("application/cloudevents") => {
            if m != "application/cloudevents+json" {
                return Err(format!("unsupported event format `{m}` (only JSON is read)"));
            }
            structured(body)?
        }
        _ if !attributes.is_empty() => binary(content_type, media.as_deref(), &attributes, body)?,
        None | Some("application/json") => structured(body).map_err(|e| {
            format!("not a CloudEvent: no cloudevents content type nor `cloudEvents_` properties, and the body is not an event ({e})")
        })?,
        Some(m) => {
            return Err(format!(
                "not a CloudEvent: content type `{m}` without `cloudEvents_` properties"
            ));
        }
    };
    if require_time && event.time.is_none() {
        return Err(format!("event `{}`: missing `time`", event.id));
    }
    Ok(event)
}

fn structured(body: &[u8]) -> std::result::Result<Event, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    Event::from_json_str(text).map_err(|e| e.to_string())
}

fn binary(
    content_type: Option<&str>,
    media: Option<&str>,
    attributes: &[(&str, &AMQPValue)],
    body: &[u8],
) -> std::result::Result<Event, String> {
    let mut object = Map::new();
    for (name, value) in attributes {
        if *name == "data" || *name == "datacontenttype" {
            return Err(format!(
                "binary mode: `{name}` must not be an application property"
            ));
        }
        if let Some(json) = attribute_json(name, value)? {
            object.insert((*name).to_string(), json);
        }
    }
    if let Some(ct) = content_type {
        object.insert("datacontenttype".to_string(), Json::String(ct.to_string()));
    }
    if !body.is_empty() {
        let json_like = media
            .is_none_or(|m| m == "application/json" || m == "text/json" || m.ends_with("+json"));
        let text_like = media.is_some_and(|m| m.starts_with("text/"));
        if json_like {
            match serde_json::from_slice::<Json>(body) {
                Ok(data) => {
                    object.insert("data".to_string(), data);
                }
                Err(e) if media.is_some() => {
                    return Err(format!(
                        "binary mode: the body is not the JSON its content type says: {e}"
                    ));
                }
                Err(_) => {
                    object.insert(
                        "data_base64".to_string(),
                        Json::String(base64::engine::general_purpose::STANDARD.encode(body)),
                    );
                }
            }
        } else if text_like {
            let text = std::str::from_utf8(body)
                .map_err(|e| format!("binary mode: the text body is not UTF-8: {e}"))?;
            object.insert("data".to_string(), Json::String(text.to_string()));
        } else {
            object.insert(
                "data_base64".to_string(),
                Json::String(base64::engine::general_purpose::STANDARD.encode(body)),
            );
        }
    }
    Event::from_json(Json::Object(object)).map_err(|e| format!("binary mode: {e}"))
}

/// An application property as the JSON value of its attribute (canonical string
/// forms and native AMQP types are both accepted); `None` for a void value.
fn attribute_json(name: &str, value: &AMQPValue) -> std::result::Result<Option<Json>, String> {
    Ok(Some(match value {
        AMQPValue::Void => return Ok(None),
        AMQPValue::Boolean(b) => Json::Bool(*b),
        AMQPValue::ShortShortInt(n) => Json::from(*n),
        AMQPValue::ShortShortUInt(n) => Json::from(*n),
        AMQPValue::ShortInt(n) => Json::from(*n),
        AMQPValue::ShortUInt(n) => Json::from(*n),
        AMQPValue::LongInt(n) => Json::from(*n),
        AMQPValue::LongUInt(n) => Json::from(*n),
        AMQPValue::LongLongInt(n) => Json::from(*n),
        AMQPValue::Float(f) => Json::from(f64::from(*f)),
        AMQPValue::Double(f) => Json::from(*f),
        AMQPValue::ShortString(s) => Json::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Json::String(
            std::str::from_utf8(s.as_bytes())
                .map_err(|_| format!("binary mode: property `{name}` is not UTF-8"))?
                .to_string(),
        ),
        AMQPValue::ByteArray(bytes) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()))
        }
        // AMQP 0-9-1 timestamps are seconds since the epoch.
        AMQPValue::Timestamp(seconds) => {
            let time = i64::try_from(*seconds)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .ok_or_else(|| format!("binary mode: property `{name}` is out of range"))?;
            Json::String(format_time(time))
        }
        AMQPValue::DecimalValue(_) | AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => {
            return Err(format!(
                "binary mode: property `{name}` has an AMQP type no attribute can have"
            ));
        }
    }))
}

/// Why applying an event failed, when it did: every `error` decision among
/// `decisions` (a rule's, workflow's, counter's or cadence's expression failed), each
/// named by where it happened. `None` when there is none.
pub fn rule_failure(decisions: &[Decision]) -> Option<String> {
    let failures: Vec<String> = decisions
        .iter()
        .filter(|d| d.kind == Kind::Error)
        .map(|d| {
            let place = match (&d.rule, &d.workflow, &d.counter, &d.cadence) {
                (Some(rule), ..) => format!("rule `{rule}`"),
                (None, Some(workflow), ..) => match &d.key {
                    Some(key) => format!("workflow `{workflow}` (key `{key}`)"),
                    None => format!("workflow `{workflow}`"),
                },
                (None, None, Some(counter), _) => format!("counter `{counter}`"),
                (None, None, None, Some(cadence)) => format!("cadence `{cadence}`"),
                (None, None, None, None) => "a reaction".to_string(),
            };
            let message = d.message.as_deref().unwrap_or("an expression failed");
            format!("{place} failed: {message}")
        })
        .collect();
    if failures.is_empty() {
        return None;
    }
    Some(format!(
        "applied, but {} (its effects are committed; the message is kept here for inspection)",
        failures.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
        }
        t
    }

    #[test]
    fn binary_mode_reads_both_separators_and_json_data() {
        for prefix in PREFIXES {
            let h = headers(&[
                (&format!("{prefix}specversion"), "1.0"),
                (&format!("{prefix}id"), "a-1"),
                (&format!("{prefix}source"), "urn:test"),
                (&format!("{prefix}type"), "t.x"),
                (&format!("{prefix}time"), "2026-03-02T09:00:00Z"),
            ]);
            let e = decode_event(
                Some("application/json"),
                Some(&h),
                br#"{"k": 1}"#,
                1024,
                true,
            )
            .unwrap();
            assert_eq!((e.id.as_str(), e.event_type.as_str()), ("a-1", "t.x"));
            assert_eq!(e.data, Some(serde_json::json!({"k": 1})));
            assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        }
    }

    #[test]
    fn unusable_messages_have_reasons() {
        let too_big = decode_event(None, None, &[b' '; 2048], 1024, false).unwrap_err();
        assert!(too_big.contains("larger than the limit"), "{too_big}");
        let not_json = decode_event(
            Some("application/cloudevents+json"),
            None,
            b"{nope",
            1024,
            false,
        )
        .unwrap_err();
        assert!(!not_json.is_empty());
        let no_time = decode_event(
            Some("application/cloudevents+json"),
            None,
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#,
            1024,
            true,
        )
        .unwrap_err();
        assert!(no_time.contains("missing `time`"), "{no_time}");
        let text = decode_event(Some("text/plain"), None, b"hello", 1024, false).unwrap_err();
        assert!(text.contains("not a CloudEvent"), "{text}");
    }

    #[test]
    fn the_url_is_shown_without_its_password() {
        let c = AmqpConfig {
            url: "amqp://guest:secret@127.0.0.1:5672/%2f".to_string(),
            ..AmqpConfig::default()
        };
        assert_eq!(c.display_url(), "amqp://guest:***@127.0.0.1:5672/%2f");
    }
}
