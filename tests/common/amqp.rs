//! The test broker: RabbitMQ on 127.0.0.1:5672. A [`Session`] is one test's connection
//! to it; it skips the test (or fails it, with `STEWARD_REQUIRE_SERVICES=1`) when the
//! broker is unreachable, publishes with confirms, and deletes the test's uniquely
//! named queues and exchanges when dropped. The broker-side controls (closing a
//! connection, restarting the broker) go through `rabbitmqctl`.

use std::process::Command;
use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Whether the services must be there (`STEWARD_REQUIRE_SERVICES=1`, as on CI).
pub fn required() -> bool {
    std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// A name no other test run uses: `steward-test-TAG-PID-NANOS`.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("steward-test-{tag}-{}-{nanos}", std::process::id())
}

/// One test's connection to the broker, with a channel in confirm mode.
pub struct Session {
    pub rt: tokio::runtime::Runtime,
    pub channel: Channel,
    pub connection: Connection,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

/// A message to publish: routing key, properties, body.
pub type Message<'a> = (&'a str, BasicProperties, &'a [u8]);

impl Session {
    /// Connects, or skips (`None`, saying why on stderr) when the broker is
    /// unreachable; panics instead when the services are [`required`].
    pub fn connect(test: &str) -> Option<Session> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connected = rt.block_on(async {
            let connect = Connection::connect(URL, ConnectionProperties::default());
            tokio::time::timeout(Duration::from_secs(5), connect).await
        });
        let connection = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return skip(test, &e.to_string()),
            Err(_) => return skip(test, "timed out"),
        };
        let channel = confirming(&rt, &connection);
        Some(Session {
            rt,
            channel,
            connection,
            queues: Vec::new(),
            exchanges: Vec::new(),
        })
    }

    /// Deletes these queues and exchanges when the session is dropped.
    pub fn owns<Q, X>(&mut self, queues: Q, exchanges: X)
    where
        Q: IntoIterator<Item = String>,
        X: IntoIterator<Item = String>,
    {
        self.queues.extend(queues);
        self.exchanges.extend(exchanges);
    }

    /// Publishes to `exchange`, waiting for the broker to confirm every message.
    pub fn publish<'a>(&self, exchange: &str, messages: impl IntoIterator<Item = Message<'a>>) {
        let mut messages = messages.into_iter().peekable();
        self.rt.block_on(async {
            while messages.peek().is_some() {
                let mut confirms = Vec::new();
                for (key, properties, body) in messages.by_ref().take(5000) {
                    let confirm = self
                        .channel
                        .basic_publish(
                            exchange.into(),
                            key.into(),
                            BasicPublishOptions::default(),
                            body,
                            properties,
                        )
                        .await
                        .unwrap();
                    confirms.push(confirm);
                }
                for c in confirms {
                    assert!(c.await.unwrap().is_ack(), "the broker refused a message");
                }
            }
        });
    }

    /// The ready messages of a queue; `None` while it is not declared (asked on a
    /// channel of its own: a passive declare of a missing queue closes its channel).
    pub fn count(&self, queue: &str) -> Option<u32> {
        self.rt.block_on(async {
            let ch = self.connection.create_channel().await.ok()?;
            let declared = ch
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let _ = ch.close(200, "done".into()).await;
            Some(declared.ok()?.message_count())
        })
    }

    /// Takes every message of a queue.
    pub fn take_all(&self, queue: &str) -> Vec<BasicGetMessage> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            while let Some(m) = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                out.push(m);
            }
            out
        })
    }

    /// Connects again, after the broker closed the connection (a restart); retries for
    /// up to a minute.
    pub fn reopen(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let connection = loop {
            let connected = self.rt.block_on(async {
                let connect = Connection::connect(URL, ConnectionProperties::default());
                tokio::time::timeout(Duration::from_secs(5), connect).await
            });
            match connected {
                Ok(Ok(c)) => break c,
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                other => panic!("the broker is not back: {other:?}"),
            }
        };
        self.channel = confirming(&self.rt, &connection);
        self.connection = connection;
    }
}

/// A new channel of `connection`, in confirm mode.
fn confirming(rt: &tokio::runtime::Runtime, connection: &Connection) -> Channel {
    rt.block_on(async {
        let ch = connection.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        ch
    })
}

fn skip(test: &str, why: &str) -> Option<Session> {
    assert!(
        !required(),
        "RabbitMQ at {URL} is required (STEWARD_REQUIRE_SERVICES=1): {why}"
    );
    eprintln!("SKIPPED {test}: RabbitMQ at {URL} is unreachable ({why})");
    None
}

impl Drop for Session {
    fn drop(&mut self) {
        let ch = self.channel.clone();
        let (queues, exchanges) = (
            std::mem::take(&mut self.queues),
            std::mem::take(&mut self.exchanges),
        );
        self.rt.block_on(async move {
            for q in queues {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for x in exchanges {
                let _ = ch
                    .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        });
    }
}

/// The broker's id of the connection whose client properties mention `needle` (steward
/// names its connections after its queue or exchange); `None` when `rabbitmqctl` is
/// not usable here.
pub fn connection_of(needle: &str) -> Option<String> {
    let found = connections_of(needle)?;
    let text = found
        .first()
        .unwrap_or_else(|| panic!("no connection for {needle}"));
    Some(text.clone())
}

/// The broker's ids of every connection whose client properties mention `needle`;
/// `None` when `rabbitmqctl` is not usable here.
pub fn connections_of(needle: &str) -> Option<Vec<String>> {
    let list = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .ok()?;
    if !list.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&list.stdout);
    let pids = text
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    Some(pids)
}

/// Closes a connection from the broker's side.
pub fn close_connection(pid: &str) {
    let status = Command::new("rabbitmqctl")
        .args(["-q", "close_connection", pid, "closed by the steward test"])
        .status()
        .unwrap();
    assert!(status.success(), "rabbitmqctl close_connection failed");
}

/// Restarts the broker (`rabbitmqctl stop_app`, a pause of `down_for`, `start_app`):
/// every connection is closed, and durable queues come back with their persistent
/// messages. Returns `false`, having done nothing, when `rabbitmqctl` is not usable
/// here; panics if the broker does not come back.
pub fn restart_broker(down_for: Duration) -> bool {
    let ctl = |args: &[&str]| {
        Command::new("rabbitmqctl")
            .arg("-q")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ctl(&["status"]) {
        return false;
    }
    let stopped = ctl(&["stop_app"]);
    std::thread::sleep(down_for);
    // Started whatever stop_app said, so that a failure never leaves the broker down.
    let started = ctl(&["start_app"]) && ctl(&["await_startup", "--timeout", "120"]);
    assert!(stopped, "rabbitmqctl stop_app failed");
    assert!(started, "the broker did not start again");
    true
}
