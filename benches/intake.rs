//! RabbitMQ intake, end to end, against the broker and PostgreSQL on this machine:
//! `cargo bench --bench intake` (results and method in BENCHMARKS.md, "Intake").
//!
//! Rows, measured in one run on the same messages:
//! - **ceiling**: lapin alone consuming and acknowledging a queue filled beforehand
//!   (the same prefetch as steward's, one `multiple` ack per 256);
//! - **steward, SQLite** and **steward, PostgreSQL**: `steward run` with `[amqp]` on a
//!   queue filled beforehand, from the first consumed message to the last event's
//!   decision printed (decisions are printed after their commit; the bench reads them
//!   a pipe-full at a time, see [`watch`]), with steward's CPU per event (user +
//!   system, all its threads, from `/proc`);
//! - these three in rounds (`BENCH_ROUNDS`, default 5): the ceiling, SQLite, the
//!   ceiling, PostgreSQL, the ceiling, and so on, so each of steward's drains lies
//!   between two ceiling runs and is compared with their mean. The summary gives the
//!   medians: of the rates, of the CPU per event, and of the drains' ratios. (A drain's
//!   rate varies by a fifth from run to run, mostly with the broker's garbage
//!   collection, and the broker's rate drifts between runs a few seconds apart.)
//! - **cluster, PostgreSQL, 1 and 3 processes**: `[cluster]` with 6 partitions;
//! - **sustained**: steward (SQLite) consuming while the events are published as fast
//!   as the broker takes them, on the same machine: the rate kept with events arriving;
//! - **latency**: events published at half the SQLite rate (then a quarter and an
//!   eighth, then half the sustained rate), each stamped; the time from publish to its
//!   first decision on stdout, p50 and p99; before each, its peer: the time from
//!   publish to delivery for lapin alone consuming the same paced stream on the same
//!   topology (for `[cluster]`, the partition queues behind a consistent-hash exchange,
//!   a consumer on each; steward's line gives its p99 as a multiple of the peer's).
//!
//! - **latency, PostgreSQL and `[cluster]`**: the sustained row and the latency row at
//!   half of it (with its peer) for one process on PostgreSQL and for `[cluster]` with
//!   one process and with three (6 partitions), events published with their keys to the
//!   partitions' exchange once the processes have shared the partitions out.
//!
//! The publisher and the readers share the two cores with the broker and with what
//! they measure, so they are kept light: publishes go out in bursts (see [`burst`]),
//! a reader takes a pipe-full at a time, and the maps they fill are sized up front.
//!
//! - **commit**: no broker: `steward run` on a file of 20,000 of the same events with
//!   `[engine] batch` 1, 16 and 256, for the store's cost per commit.
//!
//! Arguments: `--events N` (default 100000), `--only NAME` (ceiling, sqlite,
//! postgres, cluster1, cluster3, commit, latency, latency-postgres, latency-cluster);
//! `--help` lists them and the settings below.
//! `BENCH_LATENCIES=PREFIX` writes each latency event's publish offset and latency (ms)
//! to `PREFIX.TAG` for each latency row (`peersqlite0`, `latsqlite0` at half the drain
//! rate, `peersqlite1`, `latsqlite1` at a quarter, …, `latpostgres0`, `latcluster10`,
//! `latcluster30`), to see when the slow ones came. `BENCH_RATES=R1,R2,…` runs the
//! latency rows at those rates (events/s) only, to compare binaries or settings at the
//! same rates. `BENCH_PARTITIONS=N` gives the `[cluster]` rows N partitions instead of 6.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind,
    PublisherConfirm,
};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The partitions of every `[cluster]` row: `BENCH_PARTITIONS`, default 6.
fn partitions() -> u32 {
    std::env::var("BENCH_PARTITIONS")
        .ok()
        .map(|v| v.parse().expect("BENCH_PARTITIONS: a number of partitions"))
        .unwrap_or(6)
}

/// The prefetch of every consumer: `BENCH_PREFETCH`, default steward's (2048).
fn prefetch() -> String {
    std::env::var("BENCH_PREFETCH").unwrap_or_else(|_| "2048".to_string())
}

/// The ordered-ticket workflow of `tests/cluster.rs`.
const RULES: &str = include_str!("../tests/fixtures/tickets.stw");

/// Events for `keys` tickets: opened, `updates` updates, closed; interleaved. Each is
/// (routing key, event id, body), with a per-run prefix so runs never collide.
fn events(run: &str, n: usize) -> Vec<(String, String, Vec<u8>)> {
    let updates = 18;
    let keys = n.div_ceil(updates + 2);
    let mut out = Vec::with_capacity(n);
    'all: for step in 0..updates + 2 {
        for k in 0..keys {
            if out.len() == n {
                break 'all;
            }
            let key = format!("{run}-{k}");
            let (ty, data) = match step {
                0 => ("ticket.opened", "{}".to_string()),
                s if s <= updates => ("ticket.updated", format!("{{\"seq\":{s}}}")),
                _ => ("ticket.closed", "{}".to_string()),
            };
            let id = format!("{key}-{step}");
            let body = format!(
                "{{\"specversion\":\"1.0\",\"id\":\"{id}\",\"source\":\"bench\",\"type\":\"{ty}\",\
                 \"time\":\"2026-11-02T09:00:00Z\",\"subject\":\"{key}\",\"data\":{data}}}"
            );
            out.push((key, id, body.into_bytes()));
        }
    }
    out
}

struct Bench {
    rt: tokio::runtime::Runtime,
    connection: Connection,
    channel: Channel,
    base: String,
    /// Exchanges and queues declared and not yet deleted, deleted when the bench ends
    /// (a failed row's too, so that its messages do not weigh on the broker's later
    /// runs).
    declared: RefCell<(Vec<String>, Vec<String>)>,
    dir: tempfile::TempDir,
    rules: PathBuf,
    steward: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connection = rt
            .block_on(Connection::connect(AMQP, ConnectionProperties::default()))
            .expect("RabbitMQ at 127.0.0.1:5672");
        let channel = rt.block_on(async {
            let ch = connection.create_channel().await.unwrap();
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            ch
        });
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let base = format!("bench{}", nanos % 1_000_000_000);
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(rules.join("tickets.stw"), RULES).unwrap();
        // Steward declares the dead-letter exchange and queue its configuration names.
        let declared = RefCell::new((vec![format!("{base}.dlx")], vec![format!("{base}.dlq")]));
        Bench {
            rt,
            connection,
            channel,
            base,
            declared,
            dir,
            rules,
            steward: PathBuf::from(env!("CARGO_BIN_EXE_steward")),
        }
    }

    /// A durable exchange of `kind` and a durable queue bound to it with `key`.
    fn declare(&self, exchange: &str, kind: ExchangeKind, queues: &[String], key: &str) {
        let ch = self.channel.clone();
        let dlx = format!("{}.dlx", self.base);
        {
            let mut declared = self.declared.borrow_mut();
            declared.0.push(exchange.to_string());
            declared.1.extend(queues.iter().cloned());
        }
        self.rt.block_on(async move {
            ch.exchange_declare(
                exchange.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
            // As `steward run` declares its queue, so that its own declare agrees.
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("classic".into()),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(dlx.as_str().into()),
            );
            for q in queues {
                ch.queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args.clone(),
                )
                .await
                .unwrap();
                ch.queue_bind(
                    q.as_str().into(),
                    exchange.into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            }
        });
    }

    /// A direct exchange and its queue for the row `tag`, bound with the key `#`
    /// (every row publishes with that key); returns their names.
    fn direct(&self, tag: &str) -> (String, String) {
        let exchange = format!("{}.{tag}.x", self.base);
        let queue = format!("{}.{tag}.q", self.base);
        self.declare(
            &exchange,
            ExchangeKind::Direct,
            std::slice::from_ref(&queue),
            "#",
        );
        (exchange, queue)
    }

    fn publish(&self, exchange: &str, events: &[(String, String, Vec<u8>)]) {
        let ch = self.channel.clone();
        self.rt.block_on(async move {
            for chunk in events.chunks(5000) {
                let messages = chunk.iter().map(|(key, _, body)| (key.as_str(), &body[..]));
                for c in burst(&ch, exchange, messages).await {
                    assert!(c.await.unwrap().is_ack());
                }
            }
        });
    }

    fn delete(&self, exchanges: &[String], queues: &[String]) {
        {
            let mut declared = self.declared.borrow_mut();
            declared.0.retain(|x| !exchanges.contains(x));
            declared.1.retain(|q| !queues.contains(q));
        }
        let ch = self.channel.clone();
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

    /// Runs one statement on the `test` database (creating and dropping databases).
    fn sql(&self, statement: &str) {
        self.rt.block_on(async {
            let pool = sqlx::PgPool::connect(PG).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        });
    }

    /// The ceiling: lapin consuming and acknowledging `n` messages of `queue`.
    fn raw(&self, queue: &str, n: usize) -> f64 {
        let connection = &self.connection;
        self.rt.block_on(async move {
            let (c, mut consumer) = consume(connection, queue, "raw").await;
            let mut start = None;
            let mut got = 0;
            while let Some(d) = consumer.next().await {
                let d = d.unwrap();
                start.get_or_insert_with(Instant::now);
                got += 1;
                if got % 256 == 0 || got == n {
                    d.acker
                        .ack(BasicAckOptions { multiple: true })
                        .await
                        .unwrap();
                }
                if got == n {
                    break;
                }
            }
            let _ = c.close(200, "done".into()).await;
            n as f64 / start.unwrap().elapsed().as_secs_f64()
        })
    }

    fn config(
        &self,
        tag: &str,
        store: &str,
        queue: &str,
        exchange: &str,
        cluster: Option<(u32, &str)>,
    ) -> PathBuf {
        let path = self.dir.path().join(format!("{tag}.toml"));
        let mut text = format!(
            "[store]\npath = \"{store}\"\n\n[engine]\nbatch = {batch}\n\n[amqp]\nurl = \"{AMQP}\"\n\
             exchange = \"{exchange}\"\nqueue = \"{queue}\"\nprefetch = {prefetch}\n\
             dead_letter_exchange = \"{b}.dlx\"\ndead_letter_queue = \"{b}.dlq\"\n",
            b = self.base,
            prefetch = prefetch(),
            batch = std::env::var("BENCH_BATCH").unwrap_or_else(|_| "256".to_string()),
        );
        if cluster.is_none() {
            text.push_str("exchange_type = \"direct\"\nrouting_keys = [\"#\"]\n");
        }
        if let Some((partitions, name)) = cluster {
            text.push_str(&format!(
                "\n[cluster]\npartitions = {partitions}\nname = \"{name}\"\nrebalance_ms = 200\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn spawn(&self, config: &Path) -> Child {
        Command::new(&self.steward)
            .arg("run")
            .arg(&self.rules)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let (exchanges, queues) = self.declared.take();
        self.delete(&exchanges, &queues);
    }
}

/// A channel with steward's prefetch, consuming `queue` with manual acks.
async fn consume(connection: &Connection, queue: &str, tag: &str) -> (Channel, Consumer) {
    let c = connection.create_channel().await.unwrap();
    c.basic_qos(
        prefetch().parse().unwrap_or(2048),
        BasicQosOptions::default(),
    )
    .await
    .unwrap();
    let consumer = c
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (c, consumer)
}

/// Each event's first decision, as the readers of [`watch`] saw them.
struct Seen {
    /// When each event id's first decision was read.
    at: HashMap<String, Instant>,
    /// When the first decision line was read, and when the last new id was.
    first: Option<Instant>,
    last: Option<Instant>,
    /// `[cluster]`: partitions taken or handed over, and when the latest was.
    moves: usize,
    moved: Option<Instant>,
}

impl Seen {
    /// Records that a decision on event `id` was seen `at` (only its first counts).
    fn record(&mut self, id: &str, at: Instant) {
        self.first.get_or_insert(at);
        if !self.at.contains_key(id) {
            self.at.insert(id.to_string(), at);
            self.last = Some(at);
        }
    }
}

/// What the readers of [`watch`] share with [`until_all`].
type Watched = Arc<(Mutex<Seen>, Condvar)>;

/// A [`Watched`] with room for `n` events' decisions from the start. Growing the map
/// under the lock moved every id at once (at 57,344 ids, then at 114,688), and the
/// decisions read meanwhile were stamped late by that long: a stall of tens of
/// milliseconds in every latency row, steward's and the peer's alike.
fn watched(n: usize) -> Watched {
    let seen = Seen {
        at: HashMap::with_capacity(n),
        first: None,
        last: None,
        moves: 0,
        moved: None,
    };
    Arc::new((Mutex::new(seen), Condvar::new()))
}

/// Reads the decision lines of several processes, each on a thread of its own, and
/// records when each event's first decision was read.
///
/// A reader takes whatever the pipe holds (steward writes a batch's decisions with one
/// write) and records it under one lock, stamped with one clock reading, and wakes the
/// waiting [`until_all`] only when it has more to see. The bench shares two cores with
/// the broker and steward: a reader that allocated and sent a message for every line,
/// and woke the main thread for each, cost about a tenth of steward's own CPU.
fn watch(children: &mut [Child], n: usize) -> Watched {
    let watched = watched(n);
    for child in children.iter_mut() {
        let mut stdout = child.stdout.take().unwrap();
        let (watched, moves) = (watched.clone(), watched.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            // Bytes of an unfinished line at the start of `buf`.
            let mut kept = 0;
            loop {
                let read = match std::io::Read::read(&mut stdout, &mut buf[kept..]) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                let now = Instant::now();
                let filled = kept + read;
                let Some(end) = memchr::memrchr(b'\n', &buf[..filled]) else {
                    kept = filled;
                    if kept == buf.len() {
                        buf.resize(buf.len() * 2, 0);
                    }
                    continue;
                };
                let (lock, more) = &*watched;
                let mut seen = lock.lock().unwrap();
                seen.first.get_or_insert(now);
                let before = seen.at.len();
                for id in buf[..end].split(|&b| b == b'\n').filter_map(event_id) {
                    seen.record(id, now);
                }
                if seen.at.len() > before {
                    more.notify_all();
                }
                drop(seen);
                buf.copy_within(end + 1..filled, 0);
                kept = filled - end - 1;
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("cluster: taking partition") || line.contains("handing partition")
                {
                    let mut seen = moves.0.lock().unwrap();
                    seen.moves += 1;
                    seen.moved = Some(Instant::now());
                }
                if std::env::var("BENCH_VERBOSE").is_ok() {
                    eprintln!("  | {line}");
                }
            }
        });
    }
    watched
}

/// The event id of a decision line (its `"event"` field).
fn event_id(line: &[u8]) -> Option<&str> {
    const FIELD: &[u8] = b"\"event\":\"";
    let at = memchr::memmem::find(line, FIELD)? + FIELD.len();
    let rest = &line[at..];
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Waits until `n` events had a decision; returns when the first decision was read,
/// when the last event's first one was, and each event's first.
fn until_all(watched: &Watched, n: usize) -> (Instant, Instant, HashMap<String, Instant>) {
    let (lock, more) = &**watched;
    let mut seen = lock.lock().unwrap();
    while seen.at.len() < n {
        let had = seen.at.len();
        let (next, waited) = more.wait_timeout(seen, Duration::from_secs(120)).unwrap();
        seen = next;
        if waited.timed_out() && seen.at.len() == had {
            panic!("stalled at {had} of {n}");
        }
    }
    let at = std::mem::take(&mut seen.at);
    (seen.first.unwrap(), seen.last.unwrap(), at)
}

/// Waits until `[cluster]` processes have shared out `partitions`: at least that many
/// taken, and none taken or handed over for two seconds.
fn settled(watched: &Watched, partitions: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let seen = watched.0.lock().unwrap();
            if seen.moves >= partitions
                && seen
                    .moved
                    .is_some_and(|at| at.elapsed() > Duration::from_secs(2))
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the partitions never settled");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(children: Vec<Child>) {
    for c in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for mut c in children {
        let _ = c.wait();
    }
}

fn drop_schema(rt: &tokio::runtime::Runtime, name: &str) {
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(PG).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    });
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat` (in
/// clock ticks of 1/100 s, Linux's fixed `USER_HZ`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks = |i: usize| fields[i - 3].parse::<f64>().unwrap();
    (ticks(14) + ticks(15)) / 100.0
}

/// Steward unclustered on a queue filled beforehand: events per second, and steward's
/// CPU per event in µs (all its threads, start-up included).
fn single(b: &Bench, tag: &str, store: &str, events: &[(String, String, Vec<u8>)]) -> (f64, f64) {
    let (exchange, queue) = b.direct(tag);
    // Direct exchange bound with "#" only routes the key "#": publish with that key.
    let keyed: Vec<(String, String, Vec<u8>)> = events
        .iter()
        .map(|(_, id, body)| ("#".to_string(), id.clone(), body.clone()))
        .collect();
    b.publish(&exchange, &keyed);
    let config = b.config(tag, store, &queue, &exchange, None);
    let mut child = vec![b.spawn(&config)];
    let watched = watch(&mut child, events.len());
    let (first, last, _) = until_all(&watched, events.len());
    let cpu = cpu_seconds(child[0].id());
    stop(child);
    b.delete(&[exchange], &[queue]);
    (
        events.len() as f64 / (last - first).as_secs_f64(),
        cpu / events.len() as f64 * 1e6,
    )
}

fn cluster(b: &Bench, tag: &str, processes: usize, events: &[(String, String, Vec<u8>)]) -> f64 {
    let (exchange, queue, name) = cluster_names(b, tag);
    let config = b.config(tag, PG, &queue, &exchange, Some((partitions(), &name)));
    // A first start declares the topology; then the queues are filled while no one
    // consumes.
    let mut first = vec![b.spawn(&config)];
    let _watched = watch(&mut first, 0);
    std::thread::sleep(Duration::from_secs(3));
    stop(first);
    b.publish(&exchange, events);
    let mut children: Vec<Child> = (0..processes).map(|_| b.spawn(&config)).collect();
    let watched = watch(&mut children, events.len());
    let (first, last, _) = until_all(&watched, events.len());
    stop(children);
    drop_cluster(b, exchange, &queue, &name);
    events.len() as f64 / (last - first).as_secs_f64()
}

/// A `[cluster]` row's exchange, queue (its partitions' prefix) and cluster name.
fn cluster_names(b: &Bench, tag: &str) -> (String, String, String) {
    (
        format!("{}.{tag}.x", b.base),
        format!("{}.{tag}.q", b.base),
        format!("{}_{tag}", b.base),
    )
}

/// The partition queues of a `[cluster]` row whose queue is `queue`, named as
/// `[cluster]` names them (`QUEUE.pN`).
fn partition_queues(queue: &str) -> Vec<String> {
    (0..partitions()).map(|i| format!("{queue}.p{i}")).collect()
}

/// Deletes what a `[cluster]` row's processes declared: the exchange, the partition
/// queues, and the deployment's schema.
fn drop_cluster(b: &Bench, exchange: String, queue: &str, name: &str) {
    b.delete(&[exchange], &partition_queues(queue));
    drop_schema(&b.rt, name);
}

/// One steward run (of any [`Setup`]) on events published while it consumes.
struct Live {
    /// When publishing began, when each event was sent, and how long it took.
    start: Instant,
    sent: HashMap<String, Instant>,
    published: Duration,
    /// When the first decision came, when the last event's first decision came, and
    /// when each event's first decision came.
    first: Instant,
    last: Instant,
    seen: HashMap<String, Instant>,
}

/// Where a live row's steward keeps its state, and how many processes run.
#[derive(Clone, Copy)]
enum Setup {
    /// One process, a SQLite file (the default).
    Sqlite,
    /// One process, a PostgreSQL database of its own.
    Postgres,
    /// `[cluster]` on PostgreSQL: this many processes sharing 6 partitions.
    Cluster(usize),
}

impl Setup {
    /// The name of its rows.
    fn label(self) -> String {
        match self {
            Setup::Sqlite => "sqlite".to_string(),
            Setup::Postgres => "postgres".to_string(),
            Setup::Cluster(n) => format!("cluster{n}"),
        }
    }
}

/// Starts steward as `setup` says on a queue (or partitions) of its own, publishes
/// `events` at `rate` per second (`f64::INFINITY`: as fast as the broker takes them),
/// and waits for every decision.
fn live(
    b: &Bench,
    tag: &str,
    setup: Setup,
    rate: f64,
    events: &[(String, String, Vec<u8>)],
) -> Live {
    let database = format!("{}_{tag}", b.base);
    let (exchange, queue, config) = match setup {
        Setup::Sqlite => {
            let (exchange, queue) = b.direct(tag);
            let db = b.dir.path().join(format!("{tag}.db"));
            let config = b.config(tag, &db.display().to_string(), &queue, &exchange, None);
            (exchange, queue, config)
        }
        Setup::Postgres => {
            let (exchange, queue) = b.direct(tag);
            b.sql(&format!("CREATE DATABASE \"{database}\""));
            let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
            let config = b.config(tag, &url, &queue, &exchange, None);
            (exchange, queue, config)
        }
        Setup::Cluster(_) => {
            let (exchange, queue, _) = cluster_names(b, tag);
            let config = b.config(tag, PG, &queue, &exchange, Some((partitions(), &database)));
            (exchange, queue, config)
        }
    };
    let processes = match setup {
        Setup::Cluster(n) => n,
        _ => 1,
    };
    let mut children: Vec<Child> = (0..processes).map(|_| b.spawn(&config)).collect();
    let watched = watch(&mut children, events.len());
    if matches!(setup, Setup::Cluster(_)) {
        settled(&watched, partitions() as usize);
    } else {
        std::thread::sleep(Duration::from_secs(1));
    }
    // A direct exchange routes only the key it is bound with; the partitions' exchange
    // hashes each event's key.
    let keyed = matches!(setup, Setup::Cluster(_));
    let (start, sent) = paced(b, &exchange, rate, events, keyed);
    let published = start.elapsed();
    let (first, last, seen) = until_all(&watched, events.len());
    stop(children);
    match setup {
        Setup::Sqlite => b.delete(&[exchange], &[queue]),
        Setup::Postgres => {
            b.delete(&[exchange], &[queue]);
            b.sql(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"));
        }
        Setup::Cluster(_) => drop_cluster(b, exchange, &queue, &database),
    }
    Live {
        start,
        sent,
        published,
        first,
        last,
        seen,
    }
}

/// Publishes at `rate` per second and measures publish-to-decision latency.
fn latency(
    b: &Bench,
    tag: &str,
    setup: Setup,
    rate: f64,
    events: &[(String, String, Vec<u8>)],
) -> Latency {
    let run = live(b, tag, setup, rate, events);
    Latency::of(tag, run.start, &run.sent, &run.seen)
}

/// Steward consuming while the events are published as fast as the broker takes them
/// (persistent, with confirms, on the same machine): the rate it sustains with events
/// arriving. Returns (steward's events/s, the publisher's messages/s).
fn sustained(
    b: &Bench,
    tag: &str,
    setup: Setup,
    events: &[(String, String, Vec<u8>)],
) -> (f64, f64) {
    let run = live(b, tag, setup, f64::INFINITY, events);
    let n = events.len() as f64;
    (
        n / (run.last - run.first).as_secs_f64(),
        n / run.published.as_secs_f64(),
    )
}

/// The peer of [`latency`]: lapin alone consuming the same paced stream on the same
/// topology as `setup`'s (one queue, or a `[cluster]` row's partition queues behind a
/// consistent-hash exchange, each with a consumer of its own on one connection, as a
/// steward process has), stamping each message when it arrives and acknowledging what
/// arrived together with one ack, as steward does (a thread of its own, with its own
/// connection).
fn latency_peer(
    b: &Bench,
    tag: &str,
    setup: Setup,
    rate: f64,
    events: &[(String, String, Vec<u8>)],
) -> Latency {
    let (exchange, queues) = match setup {
        Setup::Cluster(_) => {
            let (exchange, queue, _) = cluster_names(b, tag);
            let queues = partition_queues(&queue);
            // Bound with weight 1 each, as `[cluster]` binds its partitions.
            b.declare(
                &exchange,
                ExchangeKind::Custom("x-consistent-hash".into()),
                &queues,
                "1",
            );
            (exchange, queues)
        }
        _ => {
            let (exchange, queue) = b.direct(tag);
            (exchange, vec![queue])
        }
    };
    let watched = watched(events.len());
    let (n, consumed, recorded) = (events.len(), queues.clone(), watched.clone());
    let consumer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let connection = Connection::connect(AMQP, ConnectionProperties::default())
                .await
                .unwrap();
            // How many ids all the queues' consumers have recorded, kept apart from the
            // map: `until_all` takes the map once it is full, and a consumer still
            // looking would then read it as empty and never end.
            let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for queue in &consumed {
                let (channel, consumer) = consume(&connection, queue, "peer").await;
                let (recorded, got) = (recorded.clone(), got.clone());
                tasks.push(tokio::spawn(async move {
                    peer_consumer(consumer, &recorded, &got, n).await;
                    drop(channel);
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let _ = connection.close(200, "done".into()).await;
        });
    });
    let keyed = matches!(setup, Setup::Cluster(_));
    let (start, sent) = paced(b, &exchange, rate, events, keyed);
    let (_, _, seen) = until_all(&watched, events.len());
    consumer.join().unwrap();
    b.delete(&[exchange], &queues);
    Latency::of(tag, start, &sent, &seen)
}

/// One queue's consumer of [`latency_peer`], until `n` messages have arrived over all
/// its queues. As steward's consumer does, what has arrived is taken at once and
/// acknowledged with one `multiple` ack.
async fn peer_consumer(
    mut consumer: Consumer,
    recorded: &Watched,
    got: &std::sync::atomic::AtomicUsize,
    n: usize,
) {
    use std::sync::atomic::Ordering;
    while got.load(Ordering::Relaxed) < n {
        // Another queue's consumer may take the last message: look again now and then.
        let next = tokio::time::timeout(Duration::from_millis(50), consumer.next()).await;
        let Ok(next) = next else {
            continue;
        };
        let Some(d) = next else {
            break;
        };
        let mut last = d.unwrap();
        let mut batch = vec![(Instant::now(), last.data.clone())];
        while let Ok(Some(d)) = tokio::time::timeout(Duration::ZERO, consumer.next()).await {
            last = d.unwrap();
            batch.push((Instant::now(), last.data.clone()));
        }
        last.acker
            .ack(BasicAckOptions { multiple: true })
            .await
            .unwrap();
        let (lock, more) = &**recorded;
        let mut seen = lock.lock().unwrap();
        for (at, data) in batch {
            let body: serde_json::Value = serde_json::from_slice(&data).unwrap();
            seen.record(body["id"].as_str().unwrap(), at);
        }
        got.store(seen.at.len(), Ordering::Relaxed);
        more.notify_all();
    }
}

/// The most messages [`paced`] publishes in one burst.
const BURST: usize = 256;

/// Publishes `events` to `exchange` at `rate` per second (persistent, with confirms,
/// as in the other rows; each with its key when `keyed`, else with `#`); returns when
/// it began and when each event was sent. Each wake-up publishes every event due by
/// then in one [`burst`] (up to [`BURST`]), stamped with the time of that wake-up.
fn paced(
    b: &Bench,
    exchange: &str,
    rate: f64,
    events: &[(String, String, Vec<u8>)],
    keyed: bool,
) -> (Instant, HashMap<String, Instant>) {
    let ch = b.channel.clone();
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(events.len());
    let start = Instant::now();
    b.rt.block_on(async {
        let mut confirms = Vec::new();
        let mut i = 0;
        while i < events.len() {
            let now = Instant::now();
            // Events i.. are due at start + i / rate.
            let due = ((now - start).as_secs_f64() * rate).floor();
            let end = if due.is_finite() {
                (due as usize + 1).min(events.len())
            } else {
                events.len()
            }
            .min(i + BURST);
            if end <= i {
                tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into())
                    .await;
                continue;
            }
            let now = Instant::now();
            for (_, id, _) in &events[i..end] {
                sent.insert(id.clone(), now);
            }
            let messages = events[i..end]
                .iter()
                .map(|(key, _, body)| (if keyed { key.as_str() } else { "#" }, &body[..]));
            confirms.extend(burst(&ch, exchange, messages).await);
            i = end;
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
    });
    (start, sent)
}

/// Publishes each `(routing key, body)` to `exchange` (persistent) and returns the
/// confirms to await. Every publish is started before any is awaited: a publish
/// resolves once lapin's I/O thread has written its frames, so awaiting each in turn
/// costs two thread wake-ups per message, on the two cores that the broker and the
/// consumer being measured share. Started together, they are written together.
async fn burst<'a>(
    ch: &'a Channel,
    exchange: &'a str,
    messages: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<PublisherConfirm> {
    let mut publishes: Vec<_> = messages
        .map(|(key, body)| {
            Box::pin(ch.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            ))
        })
        .collect();
    // The first poll hands a publish's frames to lapin, in order.
    let mut confirms = Vec::with_capacity(publishes.len());
    let mut ready = Vec::with_capacity(publishes.len());
    for p in &mut publishes {
        ready.push(futures_lite::future::poll_once(p).await);
    }
    for (p, r) in publishes.into_iter().zip(ready) {
        confirms.push(match r {
            Some(done) => done.unwrap(),
            None => p.await.unwrap(),
        });
    }
    confirms
}

/// A latency row: the rate achieved and the percentiles, in ms.
struct Latency {
    rate: f64,
    p50: f64,
    p99: f64,
}

impl Latency {
    fn of(
        tag: &str,
        start: Instant,
        sent: &HashMap<String, Instant>,
        seen: &HashMap<String, Instant>,
    ) -> Latency {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut rows: Vec<(f64, f64)> = seen
            .iter()
            .map(|(id, at)| (ms(sent[id] - start), ms(at.duration_since(sent[id]))))
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        // `BENCH_LATENCIES=PREFIX`: each event's publish offset and latency, in ms.
        if let Ok(prefix) = std::env::var("BENCH_LATENCIES") {
            let text: String = rows
                .iter()
                .map(|(s, l)| format!("{s:.3} {l:.3}\n"))
                .collect();
            std::fs::write(format!("{prefix}.{tag}"), text).unwrap();
        }
        let last = rows.last().map_or(0.0, |r| r.0) / 1000.0;
        let mut lat: Vec<f64> = rows.iter().map(|r| r.1).collect();
        lat.sort_by(f64::total_cmp);
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        Latency {
            rate: lat.len() as f64 / last.max(f64::EPSILON),
            p50: p(0.50),
            p99: p(0.99),
        }
    }
}

/// `steward run` on a file of the same events with `[engine] batch` = `batch`: the
/// store's cost per commit without the broker. Returns (events/s, µs per commit).
fn per_commit(b: &Bench, batch: usize, events: &[(String, String, Vec<u8>)]) -> (f64, f64) {
    let file = b.dir.path().join("commit.jsonl");
    let mut text = Vec::new();
    for (_, _, body) in events {
        text.extend_from_slice(body);
        text.push(b'\n');
    }
    std::fs::write(&file, text).unwrap();
    let db = b.dir.path().join(format!("commit-{batch}.db"));
    let began = Instant::now();
    let out = Command::new(&b.steward)
        .arg("run")
        .arg(&b.rules)
        .arg("--events")
        .arg(&file)
        .arg("--db")
        .arg(&db)
        .env("STEWARD_ENGINE__BATCH", batch.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let took = began.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commits = events.len().div_ceil(batch) as f64;
    (events.len() as f64 / took, took / commits * 1e6)
}

/// The ceiling runs of the drains' rounds, in the order they were measured.
struct Ceilings {
    runs: Vec<f64>,
    /// Events per run.
    n: usize,
}

impl Ceilings {
    /// Measures the ceiling once more.
    fn measure(&mut self, b: &Bench) -> f64 {
        let c = raw_once(b, self.runs.len(), self.n);
        self.runs.push(c);
        c
    }

    /// The last one measured.
    fn last(&self) -> Option<f64> {
        self.runs.last().copied()
    }
}

/// Ceiling run number `r`: a queue of its own filled with `n` events, drained by
/// lapin alone.
fn raw_once(b: &Bench, r: usize, n: usize) -> f64 {
    let (exchange, queue) = b.direct(&format!("raw{r}"));
    let keyed: Vec<(String, String, Vec<u8>)> = events(&format!("raw{r}"), n)
        .into_iter()
        .map(|(_, id, body)| ("#".to_string(), id, body))
        .collect();
    b.publish(&exchange, &keyed);
    let rate = b.raw(&queue, n);
    b.delete(&[exchange], &[queue]);
    rate
}

/// One PostgreSQL run of round `r`, on a database of its own.
fn single_postgres(b: &Bench, r: usize, n: usize) -> (f64, f64) {
    let database = format!("{}_pg{r}", b.base);
    let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    b.sql(&format!("CREATE DATABASE \"{database}\""));
    let tag = format!("postgres{r}");
    let measured = single(b, &tag, &url, &events(&format!("pg{r}"), n));
    b.sql(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"));
    measured
}

/// The median (the mean of the middle two for an even count); NaN for none.
fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The sustained row of `setup`, printed; returns steward's rate.
fn sustained_row(b: &Bench, setup: Setup, n: usize) -> f64 {
    let label = setup.label();
    let (kept, offered) = sustained(
        b,
        &format!("su{label}"),
        setup,
        &events(&format!("su{label}"), n),
    );
    println!(
        "sustained {label:<8} while publishing      {kept:>9.0} ev/s  (published at {offered:.0} msg/s)"
    );
    kept
}

/// A latency row of `setup` at each rate, each after its peer (lapin alone on the same
/// paced stream).
fn latency_rows(b: &Bench, setup: Setup, rates: &[f64]) {
    let label = setup.label();
    for (i, &rate) in rates.iter().enumerate() {
        let m = (rate * 10.0) as usize;
        let tag = format!("peer{label}{i}");
        let peer = latency_peer(b, &tag, setup, rate, &events(&tag, m));
        let queues = match (setup, partitions()) {
            (Setup::Cluster(_), n) if n != 1 => format!("{n} queues"),
            _ => "1 queue".to_string(),
        };
        println!(
            "latency   lapin alone, {queues:<9} at {:>6.0} ev/s  p50 {:>8.2} ms  p99 {:>8.2} ms",
            peer.rate, peer.p50, peer.p99
        );
        let tag = format!("lat{label}{i}");
        let l = latency(b, &tag, setup, rate, &events(&tag, m));
        // The target is absolute (p99 ≤ 20 ms); the peer's p99 on the same stream
        // says how much of a miss is the broker's own.
        println!(
            "latency   {label:<8} at {:>6.0} ev/s        p50 {:>8.2} ms  p99 {:>8.2} ms  ({:.2}× lapin's p99)",
            l.rate,
            l.p50,
            l.p99,
            l.p99 / peer.p99
        );
    }
}

/// The rows `--only` can name.
const ROWS: [&str; 9] = [
    "ceiling",
    "sqlite",
    "postgres",
    "cluster1",
    "cluster3",
    "commit",
    "latency",
    "latency-postgres",
    "latency-cluster",
];

const USAGE: &str = "\
usage: intake [--events N] [--only ROW]

  --events N   events per row (default 100000)
  --only ROW   one row: ceiling, sqlite, postgres, cluster1, cluster3, commit,
               latency, latency-postgres, latency-cluster

environment:
  BENCH_ROUNDS=N        rounds of ceiling, SQLite and PostgreSQL drains (default 5)
  BENCH_RATES=R1,R2,... the latency rows at these rates (events/s) only
  BENCH_PARTITIONS=N    partitions of the [cluster] rows (default 6)
  BENCH_LATENCIES=PATH  each latency row's events (publish offset, latency) to PATH.TAG
  BENCH_PREFETCH=N      the consumers' prefetch (default steward's)

RabbitMQ at 127.0.0.1:5672 and PostgreSQL at 127.0.0.1:5432 are used as they are;
results and method: BENCHMARKS.md, \"Intake\".";

/// `--events N` and `--only ROW` from the command line (`--help` prints [`USAGE`]);
/// anything else ends the bench with the usage, before a row runs.
fn arguments() -> (usize, Option<String>) {
    let mut args = std::env::args().skip(1);
    let (mut n, mut only) = (100_000, None);
    let fail = |why: String| -> ! {
        eprintln!("intake: {why}\n\n{USAGE}");
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            "--events" => match args.next().map(|v| v.parse()) {
                Some(Ok(v)) => n = v,
                _ => fail("--events takes a number of events".to_string()),
            },
            "--only" => match args.next() {
                Some(row) if ROWS.contains(&row.as_str()) => only = Some(row),
                Some(row) => fail(format!("--only: no row `{row}`")),
                None => fail("--only takes a row".to_string()),
            },
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other => fail(format!("unknown argument `{other}`")),
        }
    }
    (n, only)
}

fn main() {
    let (n, only) = arguments();
    let wants = |row: &str| only.as_deref().is_none_or(|o| o == row);
    let b = Bench::new();
    println!(
        "intake: {n} events per row (steward at {})",
        b.steward.display()
    );

    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    // (rate, CPU µs per event, ratio to the ceilings on either side) per round.
    let mut sqlite: Vec<(f64, f64, f64)> = Vec::new();
    let mut postgres: Vec<(f64, f64, f64)> = Vec::new();
    let drains = wants("ceiling") || wants("sqlite") || wants("postgres");
    // `BENCH_RATES=R1,R2,…`: the latency rows at these rates only (events/s), without
    // the drain and the sustained row that otherwise set them, to compare binaries or
    // settings at the same rates.
    let fixed: Option<Vec<f64>> = std::env::var("BENCH_RATES").ok().map(|v| {
        v.split(',')
            .map(|r| {
                r.trim()
                    .parse()
                    .expect("BENCH_RATES: numbers, comma-separated")
            })
            .collect()
    });
    let sqlite_rows = wants("sqlite") || (wants("latency") && fixed.is_none());
    let mut ceilings = Ceilings {
        runs: Vec::new(),
        n,
    };
    if drains {
        ceilings.measure(&b);
    }
    for r in 0..rounds {
        // Without drains, only the latency rows' one SQLite run (for their rates).
        let sqlite_only = sqlite_rows && r == 0;
        if !(drains || sqlite_only) {
            break;
        }
        let mut line = format!("round {r}");
        if let Some(c) = ceilings.last() {
            line.push_str(&format!("  ceiling {c:.0} msg/s"));
        }
        // After a drain, the ceiling again: the drain's ratio is to the mean of the
        // ceiling runs on either side of it, and the new one is the next drain's
        // "before" (the broker's rate drifts between runs a few seconds apart).
        let mut after = |name: &str, rate: f64, cpu: f64, line: &mut String| {
            // Without drains, no ceiling was measured: no ratio.
            let ratio = match ceilings.last() {
                Some(c0) => {
                    let c1 = ceilings.measure(&b);
                    let ratio = rate / ((c0 + c1) / 2.0);
                    line.push_str(&format!(
                        "  {name} {rate:.0} ev/s ({:.1}%, {cpu:.1} µs)  ceiling {c1:.0} msg/s",
                        ratio * 100.0
                    ));
                    ratio
                }
                _ => {
                    line.push_str(&format!("  {name} {rate:.0} ev/s ({cpu:.1} µs)"));
                    f64::NAN
                }
            };
            (rate, cpu, ratio)
        };
        if sqlite_rows {
            let db = b.dir.path().join(format!("single{r}.db"));
            let tag = format!("sqlite{r}");
            let (rate, cpu) = single(&b, &tag, &db.display().to_string(), &events(&tag, n));
            sqlite.push(after("sqlite", rate, cpu, &mut line));
        }
        if wants("postgres") {
            let (rate, cpu) = single_postgres(&b, r, n);
            postgres.push(after("postgres", rate, cpu, &mut line));
        }
        if drains && !(sqlite_rows || wants("postgres")) {
            // The ceiling alone: one more run per round.
            let c = ceilings.measure(&b);
            line.push_str(&format!("  ceiling {c:.0} msg/s"));
        }
        println!("{line}");
    }
    let ceilings = ceilings.runs;
    let ceiling = (!ceilings.is_empty()).then(|| median(&ceilings));
    if let Some(c) = ceiling {
        println!(
            "ceiling   lapin consume + ack            {c:>9.0} msg/s  (median of {})",
            ceilings.len()
        );
    }
    let ratio = |rate: f64| match ceiling {
        Some(c) => format!("{:>5.1}% of the ceiling", rate / c * 100.0),
        None => String::new(),
    };
    let summary = |runs: &[(f64, f64, f64)]| {
        let rate = median(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
        let cpu = median(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
        let paired = median(&runs.iter().map(|r| r.2).collect::<Vec<_>>());
        let paired = if paired.is_nan() {
            String::new()
        } else {
            format!("{:>5.1}% of the ceiling", paired * 100.0)
        };
        (
            rate,
            format!("{rate:>9.0} ev/s  {paired}  {cpu:.1} µs CPU per event"),
        )
    };
    let mut sqlite_rate = None;
    if !sqlite.is_empty() {
        let (rate, text) = summary(&sqlite);
        println!("sqlite    steward run, 1 process         {text}");
        sqlite_rate = Some(rate);
    }
    if !postgres.is_empty() {
        let (_, text) = summary(&postgres);
        println!("postgres  steward run, 1 process         {text}");
    }
    if wants("cluster1") {
        let rate = cluster(&b, "c1", 1, &events("c1", n));
        println!(
            "cluster   PostgreSQL, 1 process, 6 parts {rate:>9.0} ev/s  {}",
            ratio(rate)
        );
    }
    if wants("cluster3") {
        let rate = cluster(&b, "c3", 3, &events("c3", n));
        println!(
            "cluster   PostgreSQL, 3 processes        {rate:>9.0} ev/s  {}",
            ratio(rate)
        );
    }
    if wants("commit") {
        let events = events("fc", 20_000);
        for batch in [1, 16, 256] {
            let (rate, micros) = per_commit(&b, batch, &events);
            println!(
                "commit    file, batch {batch:>3}, 20,000 events {rate:>9.0} ev/s  {micros:.0} µs per commit"
            );
        }
    }
    if wants("latency") {
        let rates = fixed.clone().unwrap_or_else(|| {
            let kept = sustained_row(&b, Setup::Sqlite, n);
            // Half the SQLite rate from a filled queue, a quarter and an eighth, to see
            // where the broker's own latency (the peer's) stops dominating; and half the
            // rate sustained while publishing.
            let half = sqlite_rate.unwrap_or(10_000.0) / 2.0;
            vec![half, half / 2.0, half / 4.0, kept / 2.0]
        });
        latency_rows(&b, Setup::Sqlite, &rates);
    }
    // PostgreSQL, and `[cluster]` with one process and with three: each at half the
    // rate it sustains while publishing.
    for (setup, row) in [
        (Setup::Postgres, "latency-postgres"),
        (Setup::Cluster(1), "latency-cluster"),
        (Setup::Cluster(3), "latency-cluster"),
    ] {
        if wants(row) {
            let rates = fixed
                .clone()
                .unwrap_or_else(|| vec![sustained_row(&b, setup, n) / 2.0]);
            latency_rows(&b, setup, &rates);
        }
    }
}
