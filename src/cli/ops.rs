//! Operating `steward run`: logs, readiness, metrics and their HTTP endpoint.
//!
//! - Logs (`[log]`): `tracing` events to stderr, as text or as JSON lines, filtered by
//!   a `RUST_LOG`-style directive string. Stdout stays the decision stream.
//! - Metrics: recorded through the `metrics` facade (the engine crate records the
//!   dispatcher's, this module the engine loop's) and rendered in the Prometheus text
//!   format by `metrics-exporter-prometheus` (render only; the HTTP side is ours).
//!   Counters on the engine loop are kept as handles (an atomic add each) and fed
//!   once per commit from the engine's own statistics, so the hot path gains no lock
//!   and no allocation.
//! - HTTP (`[ops] listen`): `GET /healthz`, `GET /readyz`, `GET /metrics`. On the
//!   webhook listener's address, the same routes are served by the webhook server.
//!
//! Readiness is process-wide, like the metrics recorder: the parts of the run (the
//! engine loop, the AMQP consumer) report their state with [`set_check`]; the store is
//! probed at each `/readyz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::{HeaderName, StatusCode, header};
use axum::routing::get;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use steward_engine::core::Stats;
use steward_engine::decision::{Decision, Kind};
use steward_engine::store::{AnyStore, Store};
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `[ops]`: the operations endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`, e.g. `127.0.0.1:9464`; none
    /// when unset. On the webhook listener's address, that server serves them.
    pub listen: Option<String>,
}

/// `[log]`: diagnostics on stderr.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (one line each: time, level, message) or `json` (one object per line).
    pub format: LogFormat,
    /// A level (`info`) or `RUST_LOG`-style directives (`warn,steward=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

// ------------------------------------------------------------------- logs

/// Sends `tracing` events (and `log` records of dependencies) to stderr as configured.
pub fn init_logs(config: &LogConfig) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::builder()
        .parse(&config.level)
        .with_context(|| format!("[log] level `{}` is not a level or filter", config.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match config.format {
        LogFormat::Text => builder.event_format(Text).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    // Already installed (a second run in one process): keep the first.
    drop(installed);
    Ok(())
}

/// The text format: `TIME LEVEL message`, then the fields whose values the message does
/// not already say (Steward's messages are written to read on their own; the fields
/// are there for the JSON format). Events of dependencies are prefixed by their target.
struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        write!(writer, "{now} {:>5} ", meta.level())?;
        if !meta.target().starts_with("steward") {
            write!(writer, "{}: ", meta.target())?;
        }
        write!(writer, "{}", fields.message)?;
        for (name, value) in &fields.others {
            if !fields.message.contains(value.as_str()) {
                write!(writer, " {name}={value}")?;
            }
        }
        writeln!(writer)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others.push((field.name(), format!("{value:?}")));
        }
    }
}

// ------------------------------------------------------------------- readiness

/// What the run reported about its parts, by name and partition (`None` outside
/// `[cluster]`): `Ok` when ready, else why not.
type Checks = BTreeMap<(&'static str, Option<u32>), Result<(), String>>;

fn checks() -> &'static Mutex<Checks> {
    static CHECKS: OnceLock<Mutex<Checks>> = OnceLock::new();
    CHECKS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Reports the state of one part of the run (`engine`, `amqp`, …) for `/readyz`.
pub fn set_check(name: &'static str, state: Result<(), String>) {
    set_check_of(name, None, state);
}

/// Reports the state of one part of the run for one `[cluster]` partition (`part`),
/// or for the whole process (`None`). `/readyz` shows one check per name, ready when
/// every partition's is.
pub fn set_check_of(name: &'static str, part: Option<u32>, state: Result<(), String>) {
    if let Ok(mut checks) = checks().lock() {
        checks.insert((name, part), state);
    }
}

/// Forgets a partition's check: the process no longer owns the partition.
pub fn clear_check_of(name: &'static str, part: u32) {
    if let Ok(mut checks) = checks().lock() {
        checks.remove(&(name, Some(part)));
    }
}

/// The checks by name: each ready when all its parts are, else the reasons of those
/// that are not (a partition's prefixed with its number).
fn checks_by_name() -> BTreeMap<&'static str, Result<(), String>> {
    let checks = checks().lock().map(|c| c.clone()).unwrap_or_default();
    let mut by_name: BTreeMap<&'static str, Result<(), String>> = BTreeMap::new();
    for ((name, part), state) in checks {
        let entry = by_name.entry(name).or_insert(Ok(()));
        if let Err(reason) = state {
            let reason = match part {
                Some(i) => format!("partition {i}: {reason}"),
                None => reason,
            };
            *entry = match std::mem::replace(entry, Ok(())) {
                Ok(()) => Err(reason),
                Err(earlier) => Err(format!("{earlier}; {reason}")),
            };
        }
    }
    by_name
}

// ------------------------------------------------------------------- metrics

/// Names of the metrics recorded here (the dispatcher's are in `steward_engine::dispatch`).
mod name {
    pub const RECEIVED: &str = "steward_events_received_total";
    pub const APPLIED: &str = "steward_events_applied_total";
    pub const DUPLICATES: &str = "steward_events_duplicates_total";
    pub const UNROUTED: &str = "steward_events_unrouted_total";
    pub const DEAD: &str = "steward_events_dead_lettered_total";
    pub const DECISIONS: &str = "steward_decisions_total";
    pub const TIMERS_FIRED: &str = "steward_timers_fired_total";
    pub const COMMIT: &str = "steward_commit_duration_seconds";
    pub const AMQP_ACK_DELAY: &str = "steward_amqp_ack_delay_seconds";
    pub const TIMERS_PENDING: &str = "steward_timers_pending";
    pub const OUTBOX_OPEN: &str = "steward_outbox_open";
    pub const LAG: &str = "steward_consumer_lag_messages";
    pub const BUILD: &str = "steward_build_info";
    pub const CLUSTER_MEMBERS: &str = "steward_cluster_members";
    pub const CLUSTER_OWNED: &str = "steward_cluster_partitions_owned";
    pub const CLUSTER_CHANGES: &str = "steward_cluster_partition_changes_total";
}

/// Where events come from, as the `source` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A JSON-lines file or a watched directory.
    File,
    Stdin,
    Amqp,
    Webhook,
}

impl SourceKind {
    const ALL: [SourceKind; 4] = [
        SourceKind::File,
        SourceKind::Stdin,
        SourceKind::Amqp,
        SourceKind::Webhook,
    ];

    fn label(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Stdin => "stdin",
            SourceKind::Amqp => "amqp",
            SourceKind::Webhook => "webhook",
        }
    }

    /// The intake of a file source's origin (`stdin` or a path).
    pub fn of_origin(origin: &str) -> SourceKind {
        if origin == "stdin" {
            SourceKind::Stdin
        } else {
            SourceKind::File
        }
    }
}

const KINDS: [Kind; 13] = [
    Kind::Transition,
    Kind::Action,
    Kind::Violation,
    Kind::Evidence,
    Kind::Timer,
    Kind::Escalation,
    Kind::Approval,
    Kind::Cadence,
    Kind::Counter,
    Kind::Sla,
    Kind::Error,
    Kind::ActionSucceeded,
    Kind::ActionFailed,
];

/// The `kind` label: the decision's `kind` field.
fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Transition => "transition",
        Kind::Action => "action",
        Kind::Violation => "violation",
        Kind::Evidence => "evidence",
        Kind::Timer => "timer",
        Kind::Escalation => "escalation",
        Kind::Approval => "approval",
        Kind::Cadence => "cadence",
        Kind::Counter => "counter",
        Kind::Sla => "sla",
        Kind::Error => "error",
        Kind::ActionSucceeded => "action_succeeded",
        Kind::ActionFailed => "action_failed",
    }
}

/// The engine loop's metrics, as handles registered once (no-ops when no recorder
/// is installed). Counts the engine keeps itself are added at each commit.
pub struct EngineMetrics {
    received: [Counter; 4],
    dead: [Counter; 4],
    applied: Counter,
    duplicates: Counter,
    unrouted: Counter,
    timers_fired: Counter,
    decisions: [Counter; KINDS.len()],
    commit: Histogram,
    amqp_ack_delay: Histogram,
    timers_pending: Gauge,
    /// The timers pending this loop last added to the gauge: the gauge is the
    /// process's total, over every `[cluster]` partition's loop.
    pending: usize,
    /// The engine's statistics at the last commit.
    last: Stats,
}

impl EngineMetrics {
    /// Registers the handles; `stats` are the engine's counts so far (not reported).
    pub fn new(stats: Stats) -> EngineMetrics {
        EngineMetrics {
            received: SourceKind::ALL
                .map(|i| metrics::counter!(name::RECEIVED, "source" => i.label())),
            dead: SourceKind::ALL.map(|i| metrics::counter!(name::DEAD, "source" => i.label())),
            applied: metrics::counter!(name::APPLIED),
            duplicates: metrics::counter!(name::DUPLICATES),
            unrouted: metrics::counter!(name::UNROUTED),
            timers_fired: metrics::counter!(name::TIMERS_FIRED),
            decisions: KINDS.map(|k| metrics::counter!(name::DECISIONS, "kind" => kind_label(k))),
            commit: metrics::histogram!(name::COMMIT),
            amqp_ack_delay: metrics::histogram!(name::AMQP_ACK_DELAY),
            timers_pending: metrics::gauge!(name::TIMERS_PENDING),
            pending: 0,
            last: stats,
        }
    }

    /// `n` messages, lines or deliveries taken in (usable or not).
    pub fn received(&self, intake: SourceKind, n: usize) {
        self.received[intake as usize].increment(n as u64);
    }

    /// One input kept as a dead letter.
    pub fn dead_lettered(&self, intake: SourceKind) {
        self.dead[intake as usize].increment(1);
    }

    /// A store commit took `took`.
    pub fn commit_took(&self, took: Duration) {
        self.commit.record(took.as_secs_f64());
    }

    /// An AMQP batch was settled after its commit, `waited` after its oldest delivery
    /// arrived.
    pub fn amqp_settled(&self, waited: Duration) {
        self.amqp_ack_delay.record(waited.as_secs_f64());
    }

    /// After a commit: what the engine counted since the last one, and the timers
    /// pending now.
    pub fn committed(&mut self, stats: &Stats, timers_pending: usize) {
        let last = std::mem::replace(&mut self.last, *stats);
        self.applied
            .increment(stats.applied.saturating_sub(last.applied));
        self.duplicates
            .increment(stats.duplicates.saturating_sub(last.duplicates));
        self.unrouted
            .increment(stats.unrouted.saturating_sub(last.unrouted));
        self.timers_fired
            .increment(stats.timers_fired.saturating_sub(last.timers_fired));
        let before = std::mem::replace(&mut self.pending, timers_pending);
        self.timers_pending
            .increment(timers_pending as f64 - before as f64);
    }

    /// Decisions about to be printed, counted by kind.
    pub fn decisions(&self, out: &[Decision]) {
        let mut counts = [0u64; KINDS.len()];
        for d in out {
            if let Some(n) = counts.get_mut(d.kind as usize) {
                *n += 1;
            }
        }
        for (counter, n) in self.decisions.iter().zip(counts) {
            if n > 0 {
                counter.increment(n);
            }
        }
    }
}

impl Drop for EngineMetrics {
    /// A loop that ends (its partition handed over) takes its timers out of the total.
    fn drop(&mut self) {
        self.timers_pending.decrement(self.pending as f64);
    }
}

/// `[cluster]`: how many processes hold a member lock, read at each rebalancing round.
pub fn cluster_members(members: u32) {
    metrics::gauge!(name::CLUSTER_MEMBERS).set(f64::from(members));
}

/// `[cluster]`: how many partitions this process owns.
pub fn cluster_owned(owned: usize) {
    metrics::gauge!(name::CLUSTER_OWNED).set(owned as f64);
}

/// `[cluster]`: a change of a partition's owner, as this process made it: `taken`,
/// `handed_over` (balance or stop), `ended` (its loop failed and it was given back)
/// or `dropped` (the control connection was lost).
pub fn cluster_change(change: &'static str, n: usize) {
    metrics::counter!(name::CLUSTER_CHANGES, "change" => change).increment(n as u64);
}

/// Buckets (seconds) of the commit duration: from a sub-millisecond SQLite commit to
/// a slow PostgreSQL one.
const COMMIT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets (seconds) of a connector call: up to the longest connector timeouts.
const ACTION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        name::CLUSTER_MEMBERS,
        "[cluster]: processes holding a member lock, at the last rebalancing round"
    );
    describe_gauge!(
        name::CLUSTER_OWNED,
        "[cluster]: partitions this process owns"
    );
    describe_counter!(
        name::CLUSTER_CHANGES,
        "[cluster]: partitions this process took, handed over, gave back after a failure (ended) or dropped with the control connection"
    );
    describe_counter!(
        name::RECEIVED,
        "Events taken in (lines, deliveries, webhook calls), usable or not, by source"
    );
    describe_counter!(name::APPLIED, "Events applied to the rules");
    describe_counter!(
        name::DUPLICATES,
        "Events dropped as duplicates (same source and id seen before)"
    );
    describe_counter!(name::UNROUTED, "Events of a type no rule listens to");
    describe_counter!(
        name::DEAD,
        "Inputs kept as dead letters (unusable, or unrouted when so configured), by source"
    );
    describe_counter!(name::DECISIONS, "Decisions made, by kind");
    describe_counter!(name::TIMERS_FIRED, "Timers fired");
    describe_histogram!(
        name::COMMIT,
        Unit::Seconds,
        "Time to commit a batch (state, timers, evidence, outbox) to the store"
    );
    describe_histogram!(
        name::AMQP_ACK_DELAY,
        Unit::Seconds,
        "Time from the arrival of each AMQP batch's oldest delivery to the batch's acknowledgement, after its commit"
    );
    describe_gauge!(name::TIMERS_PENDING, "Timers waiting to fire");
    describe_gauge!(
        name::OUTBOX_OPEN,
        "Outbox actions not yet settled (pending, in flight or waiting for a retry), read at each scrape"
    );
    describe_gauge!(
        name::LAG,
        "Messages ready in the consumed queue (AMQP), sampled every 5 s"
    );
    describe_gauge!(name::BUILD, "Always 1; the version in a label");
    describe_histogram!(
        steward_engine::dispatch::metric::ACTION_DURATION,
        Unit::Seconds,
        "Connector calls made by the dispatcher, by connector, operation and outcome (ok, retry, failed)"
    );
    describe_counter!(
        steward_engine::dispatch::metric::CONNECTOR_ERRORS,
        "Connector calls that failed, by connector and whether the error was retryable"
    );
    describe_counter!(
        steward_engine::store::postgres::metric::GROUP_STATEMENTS,
        "Statements a [cluster] group committer sent, commits tried again alone included"
    );
    describe_counter!(
        steward_engine::store::postgres::metric::GROUP_COMMITS,
        "Partition commits a [cluster] group committer took"
    );
}

// ------------------------------------------------------------------- HTTP

/// Whether metrics are recorded (`[ops] listen` is set).
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Inner {
    prometheus: PrometheusHandle,
    stores: Mutex<Stores>,
}

/// The stores `/readyz` probes and `/metrics` reads the outbox from.
enum Stores {
    /// Not open yet (a run loading its store).
    Unopened,
    /// The run's store.
    One(AnyStore),
    /// `[cluster]`: the store of each partition this process owns (none, on a process
    /// with no partition to own, is ready).
    Partitions(BTreeMap<u32, AnyStore>),
}

impl Stores {
    /// Each store, with the partition it belongs to (`None`: the run's).
    fn each(&self) -> Vec<(Option<u32>, AnyStore)> {
        match self {
            Stores::Unopened => Vec::new(),
            Stores::One(store) => vec![(None, store.clone())],
            Stores::Partitions(stores) => stores
                .iter()
                .map(|(i, store)| (Some(*i), store.clone()))
                .collect(),
        }
    }
}

/// Routes to be served by the webhook server, when `[ops] listen` is its address.
fn shared() -> &'static Mutex<Option<(String, Router)>> {
    static SHARED: OnceLock<Mutex<Option<(String, Router)>>> = OnceLock::new();
    SHARED.get_or_init(|| Mutex::new(None))
}

/// The running operations side.
#[derive(Clone)]
pub struct Ops {
    inner: Option<Arc<Inner>>,
}

/// Installs the metrics recorder and serves `/healthz`, `/readyz` and `/metrics` on
/// `[ops] listen`, unless that is the webhook listener's address (`webhook`): then the
/// webhook server takes the routes ([`routes_for`]). Without `[ops] listen`, nothing is
/// recorded or served.
pub async fn start(config: &OpsConfig, webhook: Option<&str>) -> Result<Ops> {
    set_check("engine", Err("loading the store".to_string()));
    let Some(addr) = config.listen.as_deref() else {
        return Ok(Ops { inner: None });
    };
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(name::COMMIT.to_string()), &COMMIT_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(name::AMQP_ACK_DELAY.to_string()),
                &COMMIT_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(steward_engine::dispatch::metric::ACTION_DURATION.to_string()),
                &ACTION_BUCKETS,
            )
        })
        .context("configuring the metrics")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe_metrics();
    RECORDING.store(true, std::sync::atomic::Ordering::Relaxed);
    metrics::gauge!(name::BUILD, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let inner = Arc::new(Inner {
        prometheus: prometheus.clone(),
        stores: Mutex::new(Stores::Unopened),
    });
    // Histograms are drained at each scrape; this bounds them when nobody scrapes.
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            prometheus.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(inner.clone());
    if webhook.is_some_and(|w| w.trim() == addr.trim()) {
        if let Ok(mut shared) = shared().lock() {
            *shared = Some((addr.trim().to_string(), app));
        }
        return Ok(Ops { inner: Some(inner) });
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("[ops] listening on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "ops: serving /healthz, /readyz and /metrics on http://{local}");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "ops endpoint stopped: {e}");
        }
    });
    Ok(Ops { inner: Some(inner) })
}

/// The operations routes, when they are to be served on the webhook listener's `addr`.
pub fn routes_for(addr: &str) -> Option<Router> {
    let mut shared = shared().lock().ok()?;
    match shared.take() {
        Some((at, routes)) if at == addr.trim() => Some(routes),
        other => {
            *shared = other;
            None
        }
    }
}

impl Ops {
    /// The store is open: `/readyz` probes it, `/metrics` reads the outbox from it.
    pub fn store_opened(&self, store: &AnyStore) {
        self.set_stores(|stores| *stores = Stores::One(store.clone()));
    }

    /// `[cluster]`: from now on the stores are those of the partitions this process
    /// owns ([`Ops::partition_opened`], [`Ops::partition_closed`]).
    pub fn partitions_follow(&self) {
        self.set_stores(|stores| *stores = Stores::Partitions(BTreeMap::new()));
    }

    /// `[cluster]`: partition `i`'s store is open.
    pub fn partition_opened(&self, i: u32, store: &AnyStore) {
        self.set_stores(|stores| {
            if let Stores::Partitions(map) = stores {
                map.insert(i, store.clone());
            }
        });
    }

    /// `[cluster]`: this process no longer owns partition `i`.
    pub fn partition_closed(&self, i: u32) {
        self.set_stores(|stores| {
            if let Stores::Partitions(map) = stores {
                map.remove(&i);
            }
        });
    }

    fn set_stores(&self, change: impl FnOnce(&mut Stores)) {
        if let Some(inner) = &self.inner
            && let Ok(mut stores) = inner.stores.lock()
        {
            change(&mut stores);
        }
    }
}

impl Inner {
    /// Asks every store for its outbox backlog, all at once, each within
    /// [`STORE_PROBE`]: the open actions of those that answered, and what failed (a
    /// partition's prefixed with its number). `None`: no store is open yet.
    async fn probe(&self) -> Option<(u64, Vec<String>)> {
        let stores = match self.stores.lock() {
            Ok(stores) if matches!(*stores, Stores::Unopened) => return None,
            Ok(stores) => stores.each(),
            Err(_) => return None,
        };
        let mut probes = tokio::task::JoinSet::new();
        for (part, store) in stores {
            probes.spawn(async move {
                let answer = match tokio::time::timeout(STORE_PROBE, store.outbox_backlog()).await {
                    Ok(Ok(backlog)) => Ok(backlog.open),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", STORE_PROBE.as_secs_f32())),
                };
                (part, answer)
            });
        }
        let (mut open, mut failed) = (0u64, Vec::new());
        for (part, answer) in probes.join_all().await {
            match (answer, part) {
                (Ok(n), _) => open += n,
                (Err(e), Some(i)) => failed.push(format!("partition {i}: {e}")),
                (Err(e), None) => failed.push(e),
            }
        }
        failed.sort();
        Some((open, failed))
    }
}

type Reply = (StatusCode, [(HeaderName, &'static str); 1], String);

fn json_reply(status: StatusCode, body: serde_json::Value) -> Reply {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}

/// How long `/readyz` and `/metrics` wait for the store.
const STORE_PROBE: Duration = Duration::from_secs(2);

async fn healthz() -> Reply {
    json_reply(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

/// 200 when the engine runs, the store answers and every source is connected; 503
/// with what is not ready otherwise.
async fn readyz(axum::extract::State(inner): axum::extract::State<Arc<Inner>>) -> Reply {
    let mut states = checks_by_name();
    let store = match inner.probe().await {
        None => Err("not open yet".to_string()),
        Some((_, failed)) if failed.is_empty() => Ok(()),
        Some((_, failed)) => Err(failed.join("; ")),
    };
    states.insert("store", store);
    let ready = states.values().all(Result::is_ok);
    let not_ready: Vec<&str> = states
        .iter()
        .filter(|(_, s)| s.is_err())
        .map(|(n, _)| *n)
        .collect();
    let checks: serde_json::Map<String, serde_json::Value> = states
        .into_iter()
        .map(|(name, state)| {
            (
                name.to_string(),
                serde_json::Value::String(match state {
                    Ok(()) => "ok".to_string(),
                    Err(reason) => reason,
                }),
            )
        })
        .collect();
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    json_reply(
        status,
        serde_json::json!({"status": word, "not_ready": not_ready, "checks": checks}),
    )
}

/// The Prometheus text format (0.0.4); the outbox gauge is read from the store first.
async fn render(axum::extract::State(inner): axum::extract::State<Arc<Inner>>) -> Reply {
    if let Some((open, failed)) = inner.probe().await
        && failed.is_empty()
    {
        metrics::gauge!(name::OUTBOX_OPEN).set(open as f64);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        inner.prometheus.render(),
    )
}

// ------------------------------------------------------------------- AMQP lag

/// Samples the ready message count of `queue` (a passive declare on a channel of its
/// own) every 5 s while the returned guard lives, into `steward_consumer_lag_messages`.
/// Nothing when metrics are not served.
pub async fn sample_queue(connection: &lapin::Connection, queue: &str) -> Option<AbortOnDrop> {
    if !RECORDING.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let channel = match connection.create_channel().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(queue, error = %e, "amqp: no channel to sample the queue's depth: {e}");
            return None;
        }
    };
    let gauge = metrics::gauge!(name::LAG, "queue" => queue.to_string());
    let queue = lapin::types::ShortString::from(queue);
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            let options = lapin::options::QueueDeclareOptions {
                passive: true,
                ..lapin::options::QueueDeclareOptions::default()
            };
            match channel
                .queue_declare(queue.clone(), options, lapin::types::FieldTable::default())
                .await
            {
                Ok(q) => gauge.set(f64::from(q.message_count())),
                Err(e) => {
                    tracing::debug!(error = %e, "amqp: sampling the queue's depth stopped: {e}");
                    return;
                }
            }
        }
    });
    Some(AbortOnDrop(task))
}

/// This process no longer consumes `queue` (a `[cluster]` partition moved away): its
/// lag is the new owner's to report, and reads 0 here.
pub fn queue_left(queue: &str) {
    if RECORDING.load(std::sync::atomic::Ordering::Relaxed) {
        metrics::gauge!(name::LAG, "queue" => queue.to_string()).set(0.0);
    }
}

/// Stops a background task when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
