//! `steward run`: the embedded engine. State in one SQLite file (or a PostgreSQL
//! database, given a `postgres://` URL); events from a JSON-lines file, stdin, or a
//! watched directory; the wall clock.
//!
//! Each batch of events is committed (state, timers, evidence, outbox, seen ids) in
//! one transaction before the next is read; unusable lines are dead-lettered in the
//! store with their reason and the engine goes on. Connector calls are recorded in the
//! outbox and printed. With `[connectors.NAME]` tables in the configuration, the outbox
//! dispatcher (`steward_engine::dispatch`) runs beside intake: it executes them through
//! the WebAssembly connector host, retries, dead-letters, and hands each outcome to this
//! loop, which applies it (`Engine::apply_outcome`) and commits its decisions together
//! with the end of the action. When the event input ends, the run waits until the
//! outbox is settled; on Ctrl-C it waits for calls in flight up to `[dispatch]
//! shutdown_ms`. Without connectors, actions are recorded and printed only.
//!
//! With `--listen ADDR` (or `[webhook] listen`), an HTTP endpoint takes Jira and
//! ServiceNow webhooks (`POST /webhooks/jira`, `POST /webhooks/servicenow`, `GET
//! /healthz`). Each delivery is mapped to an event (`steward_engine::webhook`) and
//! handed to this same single-threaded loop over a channel; the HTTP answer is sent
//! only after the event was applied and committed, so a 2xx loses nothing.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use steward_engine::core::{Applied, Engine, World};
use steward_engine::decision::Decision;
use steward_engine::dispatch::{Call, CallError, DispatchConfig, Dispatcher, Finished, Invoker};
use steward_engine::event::Event;
use steward_engine::replay::decode_line;
use steward_engine::ruleset::Ruleset;
use steward_engine::store::{AnyStore, DeadLetter, Meta, Settlement, Store};
use steward_engine::webhook::{self, WebhookConfig, WebhookError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

pub struct Options {
    pub files: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub watch: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub listen: Option<String>,
    /// `--ops-listen`: `/healthz`, `/readyz` and `/metrics` on this address.
    pub ops_listen: Option<String>,
}

/// `steward.toml`. Every value can be overridden by an environment variable:
/// `STEWARD_STORE__PATH`, `STEWARD_SOURCE__EVENTS`, `STEWARD_SOURCE__WATCH`,
/// `STEWARD_SOURCE__POLL_MS`, `STEWARD_ENGINE__BATCH`, `STEWARD_WEBHOOK__LISTEN`,
/// `STEWARD_DISPATCH__MAX_ATTEMPTS`, `STEWARD_OPS__LISTEN`, `STEWARD_LOG__FORMAT`, ….
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    pub source: SourceConfig,
    pub engine: EngineConfig,
    pub webhook: WebhookSection,
    /// `[connectors.NAME]`: the connectors rules may call (component, hosts, secrets,
    /// settings, limits).
    pub connectors: std::collections::BTreeMap<String, steward_connectors::ConnectorConfig>,
    /// `[dispatch]`: retries and limits of the outbox dispatcher (used when there are
    /// connectors).
    pub dispatch: DispatchConfig,
    /// `[amqp]`: consume events from RabbitMQ instead of a file (see `cli::amqp`).
    pub amqp: Option<super::amqp::AmqpConfig>,
    /// `[cluster]`: several processes share partitioned queues and one PostgreSQL
    /// database (see `cli::cluster`); off unless `partitions` is set.
    pub cluster: super::cluster::ClusterConfig,
    /// `[outbound]`: publish emitted events and routed actions to RabbitMQ through the
    /// outbox (see `cli::publish`).
    pub outbound: Option<super::publish::OutboundConfig>,
    /// `[ops]`: health, readiness and metrics endpoint (see `cli::ops`).
    pub ops: super::ops::OpsConfig,
    /// `[log]`: format and level of the diagnostics on stderr.
    pub log: super::ops::LogConfig,
}

/// `[webhook]`: the inbound HTTP endpoint. Secrets are never in the file: the
/// `*_secret_env` values name the environment variables that hold them.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSection {
    /// Address to serve on, e.g. `127.0.0.1:8080`; no endpoint when unset.
    pub listen: Option<String>,
    /// Name of the environment variable holding Jira's webhook secret; when set,
    /// every Jira delivery must carry a valid `X-Hub-Signature`.
    pub jira_secret_env: Option<String>,
    /// The `source` of Jira events (e.g. `https://acme.atlassian.net`); default `jira`.
    pub jira_source: Option<String>,
    /// Name of the environment variable holding the ServiceNow secret (`X-Signature`).
    pub servicenow_secret_env: Option<String>,
    /// The `source` of ServiceNow events; default the payload's `source`, else
    /// `servicenow`.
    pub servicenow_source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file, or a `postgres://` / `postgresql://` URL.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("steward.db"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// A JSON-lines file, or `-` for stdin.
    pub events: Option<PathBuf>,
    /// A directory of `.jsonl` files, read as they appear and grow.
    pub watch: Option<PathBuf>,
    /// How often the watched directory is scanned.
    pub poll_ms: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            events: None,
            watch: None,
            poll_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Events per committed batch.
    pub batch: usize,
    /// The longest an event or a fired timer waits for its batch to fill before the
    /// batch is committed (and its decisions printed), in ms. For AMQP, the wait for
    /// more messages after one that came after a quiet spell (see `amqp::Source`).
    pub linger_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch: 256,
            linger_ms: 2,
        }
    }
}

pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = path {
        anyhow::ensure!(
            path.is_file(),
            "configuration file {} not found",
            path.display()
        );
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(Env::prefixed("STEWARD_").split("__"))
        .extract()
        .context("invalid configuration")
}

pub fn run(opts: Options) -> Result<ExitCode> {
    let mut config = load_config(opts.config.as_deref())?;
    super::ops::init_logs(&config.log)?;
    if let Some(ops_listen) = opts.ops_listen {
        config.ops.listen = Some(ops_listen);
    }
    if let Some(db) = opts.db {
        config.store.path = db;
    }
    if let Some(events) = opts.events {
        config.source.events = Some(events);
        config.source.watch = None;
    }
    if let Some(watch) = opts.watch {
        config.source.watch = Some(watch);
        config.source.events = None;
    }
    if let Some(listen) = opts.listen {
        config.webhook.listen = Some(listen);
    }
    let hooks = match &config.webhook.listen {
        Some(_) => Some(Hooks::from_config(&config.webhook)?),
        None => None,
    };
    let rules = super::load_rules(&opts.files)?;
    let host = load_connectors(&config)?;
    if config.cluster.partitions > 0 {
        anyhow::ensure!(
            hooks.is_none(),
            "[webhook] listen is not available with [cluster]: publish webhook events to the exchange instead"
        );
        return super::cluster::run(config, rules, host);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let ops = super::ops::start(&config.ops, config.webhook.listen.as_deref()).await?;
        let store = AnyStore::open(&config.store.path)
            .await
            .with_context(|| format!("opening {}", AnyStore::describe(&config.store.path)))?
            .dispatch_emitted(config.outbound.as_ref().is_some_and(|o| o.emitted));
        ops.store_opened(&store);
        let world = load_world(&store, &rules, &AnyStore::describe(&config.store.path)).await?;
        let mut engine = Engine::with_world(rules.clone(), world);
        engine.start(Utc::now());
        let webhooks = match (hooks, &config.webhook.listen) {
            (Some(hooks), Some(addr)) => Some(hooks.serve(addr).await?),
            _ => None,
        };
        let listening = webhooks.is_some();
        let mut runner = Runner::new(engine, store, &config, host);
        runner.webhooks = webhooks;
        runner.tick().await?;
        // What the start scheduled (cadences) is durable before any input is taken.
        runner.commit().await?;
        super::ops::set_check("engine", Ok(()));
        let interrupted = match (&config.source.events, &config.source.watch) {
            _ if config.amqp.is_some() => runner.amqp(&config).await?,
            (_, Some(dir)) => runner.watch(dir, Duration::from_millis(config.source.poll_ms.max(10))).await?,
            (Some(path), None) if path.as_os_str() == "-" => {
                let stdin = BufReader::new(tokio::io::stdin());
                runner.lines(stdin, "stdin").await?
            }
            (Some(path), None) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("reading {}", path.display()))?;
                runner.lines(BufReader::new(file), &path.display().to_string()).await?
            }
            // Only webhooks: no stdin.
            (None, None) if listening => false,
            (None, None) => {
                let stdin = BufReader::new(tokio::io::stdin());
                runner.lines(stdin, "stdin").await?
            }
        };
        let interrupted = if listening && !interrupted {
            runner.serve().await?
        } else {
            interrupted
        };
        super::ops::set_check("engine", Err("the input ended; finishing".to_string()));
        if !interrupted {
            runner.drain(Duration::from_millis(config.dispatch.poll_ms.max(10))).await?;
        }
        runner.stop_dispatch().await?;
        runner.tick().await?;
        runner.commit().await?;
        let stats = runner.engine.stats;
        let pending_timers = runner.engine.world().timers.len();
        tracing::info!(
            applied = stats.applied,
            unrouted = stats.unrouted,
            duplicates = stats.duplicates,
            dead_lettered = runner.dead,
            timers_fired = stats.timers_fired,
            decisions = stats.decisions,
            pending_timers,
            "processed: {} applied, {} unrouted, {} duplicates, {} dead-lettered, {} timers fired, {} decisions; pending timers: {}",
            stats.applied,
            stats.unrouted,
            stats.duplicates,
            runner.dead,
            stats.timers_fired,
            stats.decisions,
            pending_timers
        );
        if !config.connectors.is_empty() || config.outbound.is_some() {
            tracing::info!(
                executed = runner.executed,
                dead_lettered = runner.failed,
                "actions: {} executed, {} dead-lettered",
                runner.executed,
                runner.failed
            );
        }
        Ok(ExitCode::SUCCESS)
    });
    // A connector call given up on at shutdown may still run on a blocking thread: do
    // not wait for it (its row is claimed again after its lease).
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

pub(super) struct Runner {
    metrics: super::ops::EngineMetrics,
    pub(super) engine: Engine,
    store: AnyStore,
    batch: usize,
    pending: usize,
    /// When the oldest work not yet committed was done (`None`: nothing pending).
    dirty_since: Option<std::time::Instant>,
    linger: Duration,
    out: Vec<Decision>,
    dead: usize,
    /// Webhook deliveries from the HTTP endpoint, when listening.
    webhooks: Option<mpsc::Receiver<Intake>>,
    /// Actions the dispatcher finished, when there are connectors.
    finished: Option<mpsc::Receiver<Finished>>,
    /// Ends of actions applied since the last commit, committed with their decisions.
    settled: Vec<Settlement>,
    dispatch: Option<Dispatch>,
    executed: u64,
    failed: u64,
}

/// The running dispatcher: how to stop it, and its task.
struct Dispatch {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Dispatch {
    /// A runner dropped without [`Runner::stop_dispatch`] (its partition was taken
    /// away) stops its dispatcher too.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Waits for the next webhook delivery; never, when not listening.
/// Loads the world from `store` (named `what` in the log), and logs what it held and
/// how long that took: a restart of a large store spends its time here.
pub(super) async fn load_world(store: &AnyStore, rules: &Ruleset, what: &str) -> Result<World> {
    let began = std::time::Instant::now();
    let world = store.load(rules).await?;
    let took = began.elapsed();
    let (instances, timers, seen) = (world.instances.len(), world.timers.len(), world.seen.len());
    tracing::info!(
        instances,
        pending_timers = timers,
        seen_events = seen,
        took_ms = took.as_millis() as u64,
        "{what}: loaded {instances} instances, {timers} pending timers and {seen} seen event ids in {:.1} s",
        took.as_secs_f64()
    );
    Ok(world)
}

/// A commit slower than this is logged as a warning.
const SLOW_COMMIT: Duration = Duration::from_secs(1);

async fn next_intake(rx: &mut Option<mpsc::Receiver<Intake>>) -> Option<Intake> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for the next finished action; never, when nothing is dispatched.
async fn next_finished(rx: &mut Option<mpsc::Receiver<Finished>>) -> Option<Finished> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The WebAssembly connector host as the dispatcher's invoker.
struct HostInvoker(steward_connectors::Host);

fn call_error(e: steward_connectors::ConnectorError) -> CallError {
    let retry_after_ms = match &e {
        steward_connectors::ConnectorError::Connector { retry_after_ms, .. } => *retry_after_ms,
        _ => None,
    };
    CallError {
        retryable: e.is_retryable(),
        retry_after_ms,
        message: e.to_string(),
    }
}

impl Invoker for HostInvoker {
    fn has(&self, connector: &str) -> bool {
        self.0.connectors().contains(&connector)
    }

    fn operations(&self, connector: &str) -> Result<Vec<(String, serde_json::Value)>, CallError> {
        let description = self.0.describe(connector).map_err(call_error)?;
        Ok(description
            .operations
            .into_iter()
            .map(|o| {
                let schema = serde_json::from_str(&o.args_schema).unwrap_or_default();
                (o.name, schema)
            })
            .collect())
    }

    fn invoke(&self, call: &Call<'_>) -> Result<String, CallError> {
        let ctx = steward_connectors::CallContext {
            idempotency_key: call.idempotency_key.to_string(),
            attempt: call.attempt,
            deadline_ms: call.deadline_ms,
        };
        self.0
            .invoke(call.connector, call.op, call.args, &ctx)
            .map_err(call_error)
    }
}

/// Loads the `[connectors.NAME]` components (compiled once, checked against the
/// world), behind the `[outbound]` publisher when there is one; `None` when there is
/// neither. Also returns the longest call time.
fn load_connectors(config: &Config) -> Result<Option<(Arc<dyn Invoker>, u64)>> {
    let host = load_host(config)?;
    super::publish::compose(
        config.outbound.as_ref(),
        config.amqp.as_ref(),
        &config.connectors,
        host,
    )
}

fn load_host(config: &Config) -> Result<Option<(Arc<dyn Invoker>, u64)>> {
    if config.connectors.is_empty() {
        return Ok(None);
    }
    let connectors: Vec<steward_connectors::ConnectorConfig> = config
        .connectors
        .iter()
        .map(|(name, c)| {
            let mut c = c.clone();
            c.name = name.clone();
            c
        })
        .collect();
    let longest = connectors.iter().map(|c| c.timeout_ms).max().unwrap_or(0);
    let settings = steward_connectors::HostSettings {
        max_concurrent_calls: config.dispatch.concurrency.max(1) + 1,
        cache_dir: config.dispatch.cache_dir.clone(),
        ..steward_connectors::HostSettings::default()
    };
    let host = steward_connectors::Host::new(settings, connectors).context("loading connectors")?;
    Ok(Some((Arc::new(HostInvoker(host)), longest)))
}

impl Runner {
    /// A runner over `engine` and its `store`, with a dispatcher for the outbox when
    /// there are connectors (`host`).
    pub(super) fn new(
        engine: Engine,
        store: AnyStore,
        config: &Config,
        host: Option<(Arc<dyn Invoker>, u64)>,
    ) -> Runner {
        let dispatch = host.map(|(invoker, longest)| {
            let (tx, rx) = mpsc::channel(64);
            let (stop, stopped) = watch::channel(false);
            let dispatcher =
                Dispatcher::new(store.clone(), invoker, config.dispatch.clone(), longest, tx);
            let task = Some(tokio::spawn(dispatcher.run(stopped)));
            (Dispatch { stop, task }, rx)
        });
        let (dispatch, finished) = match dispatch {
            Some((d, rx)) => (Some(d), Some(rx)),
            None => (None, None),
        };
        Runner {
            metrics: super::ops::EngineMetrics::new(engine.stats),
            engine,
            store,
            batch: config.engine.batch.max(1),
            pending: 0,
            dirty_since: None,
            linger: Duration::from_millis(config.engine.linger_ms),
            out: Vec::new(),
            dead: 0,
            webhooks: None,
            finished,
            settled: Vec::new(),
            dispatch,
            executed: 0,
            failed: 0,
        }
    }

    fn print(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.metrics.decisions(&self.out);
        // Rust's stdout flushes at every newline; one buffer makes it one write.
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        for d in self.out.drain(..) {
            writeln!(w, "{}", d.to_json_line())?;
        }
        w.flush()?;
        Ok(())
    }

    pub(super) async fn commit(&mut self) -> Result<()> {
        let changes = self.engine.take_changes();
        if !changes.is_empty() || !self.settled.is_empty() {
            let meta = Meta::of(self.engine.world());
            let rules = self.engine.ruleset().clone();
            let began = std::time::Instant::now();
            self.store
                .commit_settled(&rules, &changes, &meta, &self.settled)
                .await?;
            let took = began.elapsed();
            self.metrics.commit_took(took);
            if took >= SLOW_COMMIT {
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    instances = changes.instances.len(),
                    evidence = changes.evidence.len(),
                    "a commit took {:.1} s ({} instances and {} evidence records written): the store is slow",
                    took.as_secs_f64(),
                    changes.instances.len(),
                    changes.evidence.len()
                );
            }
            self.settled.clear();
        }
        self.pending = 0;
        self.dirty_since = None;
        self.metrics
            .committed(&self.engine.stats, self.engine.world().timers.len());
        self.print()
    }

    /// Applies a finished action's outcome and commits it with the end of its row, so
    /// neither is kept without the other.
    async fn finished(&mut self, finished: Finished) -> Result<()> {
        let (id, attempt) = (&finished.settlement.action_id, finished.settlement.attempt);
        if self.settled.iter().any(|s| s.action_id == *id)
            || !self.store.claim_holds(id, attempt).await?
        {
            // Its lease ran out before this outcome arrived and the action was claimed
            // again: the newer claim reports the outcome.
            tracing::info!(
                action = %id,
                attempt,
                "action {id}: outcome of attempt {attempt} is stale (taken over); ignored"
            );
            return Ok(());
        }
        let now = Utc::now();
        self.engine.advance(now, &mut self.out);
        self.engine
            .apply_outcome(&finished.outcome, now, &mut self.out);
        if finished.outcome.result.is_ok() {
            self.executed += 1;
        } else {
            self.failed += 1;
        }
        self.settled.push(finished.settlement);
        self.commit().await
    }

    /// After the event input ended: runs until the outbox is settled (every action
    /// executed or dead-lettered), firing timers meanwhile; Ctrl-C stops waiting.
    async fn drain(&mut self, poll: Duration) -> Result<()> {
        if self.dispatch.is_none() {
            return Ok(());
        }
        let mut finished = self.finished.take();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut announced = false;
        loop {
            self.commit().await?;
            let backlog = self.store.outbox_backlog().await?;
            if backlog.open == 0 {
                break;
            }
            if !announced {
                tracing::info!(
                    open = backlog.open,
                    "input ended; waiting for {} action(s) in the outbox (Ctrl-C stops)",
                    backlog.open
                );
                announced = true;
            }
            tokio::select! {
                Some(f) = next_finished(&mut finished) => self.finished(f).await?,
                _ = tokio::time::sleep(self.until_due().min(poll)) => self.tick().await?,
                _ = &mut interrupted => {
                    tracing::info!("interrupted: committing and stopping");
                    break;
                }
            }
        }
        self.finished = finished;
        Ok(())
    }

    /// Stops the dispatcher: no new calls; the calls in flight are waited for (up to
    /// `[dispatch] shutdown_ms`) and their outcomes applied and committed.
    pub(super) async fn stop_dispatch(&mut self) -> Result<()> {
        let Some(mut dispatch) = self.dispatch.take() else {
            return Ok(());
        };
        let _ = dispatch.stop.send(true);
        if let Some(mut rx) = self.finished.take() {
            // The channel closes when the dispatcher and its calls are done.
            while let Some(f) = rx.recv().await {
                self.finished(f).await?;
            }
        }
        if let Some(task) = dispatch.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "dispatcher stopped abnormally: {e}");
        }
        self.commit().await
    }

    /// Fires what the wall clock says is due.
    pub(super) async fn tick(&mut self) -> Result<()> {
        self.engine.advance(Utc::now(), &mut self.out);
        if !self.out.is_empty() {
            self.commit().await?;
        }
        Ok(())
    }

    async fn line(&mut self, origin: &str, number: usize, text: &str) -> Result<()> {
        let decoded = decode_line(number, text, false);
        if decoded.is_some() {
            self.metrics
                .received(super::ops::SourceKind::of_origin(origin), 1);
        }
        match decoded {
            None => {}
            Some(Err(bad)) => {
                self.dead += 1;
                self.metrics
                    .dead_lettered(super::ops::SourceKind::of_origin(origin));
                tracing::warn!(
                    origin = %format_args!("{origin}:{number}"),
                    reason = %bad.reason,
                    "{origin}:{number}: dead-lettered: {}",
                    bad.reason
                );
                self.store
                    .dead_letter(&DeadLetter {
                        received_at: Utc::now(),
                        origin: format!("{origin}:{number}"),
                        reason: bad.reason,
                        body: text.to_string(),
                    })
                    .await?;
            }
            Some(Ok(event)) => {
                let now = Utc::now();
                self.engine.advance(now, &mut self.out);
                self.engine.apply(&event, now, &mut self.out);
                self.pending += 1;
                self.dirty_since.get_or_insert_with(std::time::Instant::now);
                if self.pending >= self.batch {
                    self.commit().await?;
                }
            }
        }
        Ok(())
    }

    /// Applies one webhook delivery and commits before answering, so the sender's 2xx
    /// means the event is in the store. A failed commit drops the reply (the sender
    /// sees 503) and stops the run.
    async fn intake(&mut self, intake: Intake) -> Result<()> {
        self.metrics.received(super::ops::SourceKind::Webhook, 1);
        match intake {
            Intake::Event(event, reply) => {
                let now = Utc::now();
                self.engine.advance(now, &mut self.out);
                let before = self.out.len();
                let applied = self.engine.apply(&event, now, &mut self.out);
                let decisions = self.out.len() - before;
                self.pending += 1;
                self.commit().await?;
                let _ = reply.send(Accepted { applied, decisions });
            }
            Intake::Dead(letter, reply) => {
                self.dead += 1;
                self.metrics.dead_lettered(super::ops::SourceKind::Webhook);
                tracing::warn!(
                    origin = %letter.origin,
                    reason = %letter.reason,
                    "{}: dead-lettered: {}",
                    letter.origin,
                    letter.reason
                );
                self.store.dead_letter(&letter).await?;
                let _ = reply.send(Accepted {
                    applied: Applied::Unrouted,
                    decisions: 0,
                });
            }
        }
        Ok(())
    }

    /// Reads lines to the end, committing when a batch fills or input pauses, and
    /// firing timers while waiting. Webhook deliveries are taken in between. True
    /// when stopped by Ctrl-C.
    async fn lines<R: tokio::io::AsyncBufRead + Unpin>(
        &mut self,
        reader: R,
        origin: &str,
    ) -> Result<bool> {
        let mut lines = reader.lines();
        let mut number = 0;
        let mut webhooks = self.webhooks.take();
        let mut finished = self.finished.take();
        let mut stopped = false;
        // One signal listener for the whole loop: a Ctrl-C that arrives while a line is
        // being processed is kept, not lost with a per-iteration listener.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            let wait = self.until_due();
            tokio::select! {
                line = lines.next_line() => {
                    let Some(line) = line.with_context(|| format!("reading {origin}"))? else { break };
                    number += 1;
                    self.line(origin, number, &line).await?;
                }
                Some(intake) = next_intake(&mut webhooks) => self.intake(intake).await?,
                Some(f) = next_finished(&mut finished) => self.finished(f).await?,
                _ = tokio::time::sleep(wait) => {
                    self.commit().await?;
                    self.tick().await?;
                }
                _ = &mut interrupted => {
                    tracing::info!("interrupted: committing and stopping");
                    stopped = true;
                    break;
                }
            }
        }
        self.webhooks = webhooks;
        self.finished = finished;
        self.commit().await?;
        Ok(stopped)
    }

    /// Events from RabbitMQ (`[amqp]`) until SIGTERM or Ctrl-C; webhooks and finished
    /// actions are taken in between. Each batch is applied, committed, and only then
    /// acknowledged (or dead-lettered). On a signal, consuming stops, the batches
    /// already received are committed and settled, and the connection is closed.
    /// Returns true (stopped by a signal).
    async fn amqp(&mut self, config: &Config) -> Result<bool> {
        let Some(amqp) = config.amqp.clone() else {
            return Ok(false);
        };
        anyhow::ensure!(
            config.source.events.is_none() && config.source.watch.is_none(),
            "[amqp] and an event file or watched directory are both configured; choose one"
        );
        let name = format!("steward run: {}", amqp.queue);
        let broker = super::amqp::Broker::new(&amqp.url, name);
        let consumed = self
            .consume(amqp, broker.clone(), super::amqp::shutdown_signal())
            .await;
        broker.close().await;
        consumed?;
        Ok(true)
    }

    /// Consumes the queue of `amqp` until `stop` resolves: each batch is applied,
    /// committed, and only then acknowledged (or dead-lettered); webhooks and finished
    /// actions are taken in between, on channels of `broker`'s connection. On `stop`,
    /// consuming ends, the batches already received are committed and settled, and the
    /// channels are closed.
    pub(super) async fn consume(
        &mut self,
        amqp: super::amqp::AmqpConfig,
        broker: super::amqp::Broker,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let unrouted = amqp.dead_letter_unrouted;
        let mut source = super::amqp::Source::start(amqp, broker, self.batch, self.linger)?;
        let mut webhooks = self.webhooks.take();
        let mut finished = self.finished.take();
        tokio::pin!(stop);
        loop {
            let wait = self.until_due();
            tokio::select! {
                batch = source.next() => {
                    let Some(batch) = batch else {
                        anyhow::bail!("the AMQP source stopped");
                    };
                    self.amqp_batch(&mut source, batch, unrouted).await?;
                }
                Some(intake) = next_intake(&mut webhooks) => self.intake(intake).await?,
                Some(f) = next_finished(&mut finished) => self.finished(f).await?,
                _ = tokio::time::sleep(wait) => {
                    self.commit().await?;
                    self.tick().await?;
                }
                _ = &mut stop => {
                    tracing::info!("stopping: committing and acknowledging what was received");
                    break;
                }
            }
        }
        source.stop();
        while let Some(batch) = source.next().await {
            self.amqp_batch(&mut source, batch, unrouted).await?;
        }
        source.close().await;
        self.webhooks = webhooks;
        self.finished = finished;
        self.commit().await?;
        Ok(())
    }

    /// Applies one batch of AMQP messages, commits, then settles each message.
    async fn amqp_batch(
        &mut self,
        source: &mut super::amqp::Source,
        batch: super::amqp::Batch,
        unrouted: bool,
    ) -> Result<()> {
        use super::amqp::Settle;
        let oldest = batch.messages().first().map(|m| m.received);
        let mut outcomes = Vec::with_capacity(batch.messages().len());
        self.metrics
            .received(super::ops::SourceKind::Amqp, batch.messages().len());
        for message in batch.messages() {
            let dead = match &message.content {
                Ok(event) => {
                    let now = Utc::now();
                    self.engine.advance(now, &mut self.out);
                    let before = self.out.len();
                    let applied = self.engine.apply(event, now, &mut self.out);
                    self.pending += 1;
                    let letter = |reason| DeadLetter {
                        received_at: now,
                        origin: message.origin.clone(),
                        reason,
                        body: event.to_json().to_string(),
                    };
                    match applied {
                        Applied::Unrouted if unrouted => Some(letter(format!(
                            "no rule listens to events of type `{}`",
                            event.event_type
                        ))),
                        // Its effects, the error decisions included, are committed;
                        // a copy goes to the dead letters with the failure.
                        Applied::Applied => {
                            super::amqp::rule_failure(&self.out[before..]).map(letter)
                        }
                        _ => None,
                    }
                }
                Err(letter) => Some(letter.clone()),
            };
            outcomes.push(match dead {
                None => Settle::Ack,
                Some(letter) => {
                    self.dead += 1;
                    self.metrics.dead_lettered(super::ops::SourceKind::Amqp);
                    tracing::warn!(
                        origin = %letter.origin,
                        reason = %letter.reason,
                        "{}: dead-lettered: {}",
                        letter.origin,
                        letter.reason
                    );
                    self.store.dead_letter(&letter).await?;
                    Settle::DeadLetter(letter.reason)
                }
            });
        }
        self.commit().await?;
        source.settle(batch, &outcomes).await;
        if let Some(oldest) = oldest {
            self.metrics.amqp_settled(oldest.elapsed());
        }
        Ok(())
    }

    /// Only webhooks (the event input has ended or there is none), until Ctrl-C;
    /// returns true then.
    async fn serve(&mut self) -> Result<bool> {
        let mut webhooks = self.webhooks.take();
        let mut finished = self.finished.take();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        tracing::info!("serving webhooks (Ctrl-C stops)");
        loop {
            let wait = self.until_due();
            tokio::select! {
                Some(intake) = next_intake(&mut webhooks) => self.intake(intake).await?,
                Some(f) = next_finished(&mut finished) => self.finished(f).await?,
                _ = tokio::time::sleep(wait) => {
                    self.commit().await?;
                    self.tick().await?;
                }
                _ = &mut interrupted => {
                    tracing::info!("interrupted: committing and stopping");
                    break;
                }
            }
        }
        self.webhooks = webhooks;
        self.finished = finished;
        self.commit().await?;
        Ok(true)
    }

    /// How long the loop may wait for input: until the next timer is due, or until
    /// uncommitted work has lingered `[engine] linger_ms`.
    fn until_due(&self) -> Duration {
        let idle = Duration::from_millis(200);
        let wait = match self.engine.next_due() {
            Some(due) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(idle),
            None => idle,
        };
        match self.dirty_since {
            Some(since) => {
                wait.min((since + self.linger).saturating_duration_since(std::time::Instant::now()))
            }
            None => wait,
        }
    }

    /// Follows every `.jsonl` file in `dir`: new files and appended complete lines.
    async fn watch(&mut self, dir: &Path, every: Duration) -> Result<bool> {
        let mut offsets: HashMap<PathBuf, (u64, usize)> = HashMap::new();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        tracing::info!(
            directory = %dir.display(),
            "watching {} for .jsonl files (Ctrl-C stops)",
            dir.display()
        );
        loop {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("reading directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            entries.sort();
            for path in entries {
                let (offset, number) = offsets.get(&path).copied().unwrap_or((0, 0));
                let mut file = tokio::fs::File::open(&path).await?;
                let len = file.metadata().await?.len();
                if len <= offset {
                    continue;
                }
                file.seek(std::io::SeekFrom::Start(offset)).await?;
                let mut buf = Vec::new();
                file.read_to_end(&mut buf).await?;
                // Only complete lines; a partial last line is read when it is finished.
                let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let text = String::from_utf8_lossy(&buf[..complete]).into_owned();
                let origin = path.display().to_string();
                let mut n = number;
                for line in text.lines() {
                    n += 1;
                    self.line(&origin, n, line).await?;
                }
                offsets.insert(path, (offset + complete as u64, n));
                self.commit().await?;
            }
            let mut webhooks = self.webhooks.take();
            let mut finished = self.finished.take();
            let sleep = tokio::time::sleep(every);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(intake) = next_intake(&mut webhooks) => self.intake(intake).await?,
                    Some(f) = next_finished(&mut finished) => self.finished(f).await?,
                    _ = &mut interrupted => {
                        tracing::info!("interrupted: committing and stopping");
                        self.webhooks = webhooks;
                        self.finished = finished;
                        self.commit().await?;
                        return Ok(true);
                    }
                }
            }
            self.webhooks = webhooks;
            self.finished = finished;
            self.tick().await?;
        }
    }
}

/// A webhook delivery handed to the engine loop, with where to send the outcome.
enum Intake {
    Event(Box<Event>, oneshot::Sender<Accepted>),
    /// A payload refused as unusable (400): kept as a dead letter.
    Dead(DeadLetter, oneshot::Sender<Accepted>),
}

/// What became of a delivery, sent after the commit.
struct Accepted {
    applied: Applied,
    decisions: usize,
}

/// The HTTP side: the mapping configuration and the channel into the engine loop.
#[derive(Clone)]
struct Hooks {
    jira: Arc<WebhookConfig>,
    servicenow: Arc<WebhookConfig>,
    tx: Option<mpsc::Sender<Intake>>,
}

fn secret_from_env(var: Option<&str>, what: &str) -> Result<Option<Vec<u8>>> {
    let Some(var) = var else {
        tracing::warn!(
            "no `{what}_secret_env` in [webhook]: {what} deliveries are accepted unsigned"
        );
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(secret) if !secret.is_empty() => Ok(Some(secret.into_bytes())),
        _ => anyhow::bail!(
            "[webhook] {what}_secret_env names the environment variable `{var}`, which is not set"
        ),
    }
}

impl Hooks {
    fn from_config(section: &WebhookSection) -> Result<Hooks> {
        Ok(Hooks {
            jira: Arc::new(WebhookConfig {
                source: section.jira_source.clone(),
                secret: secret_from_env(section.jira_secret_env.as_deref(), "jira")?,
            }),
            servicenow: Arc::new(WebhookConfig {
                source: section.servicenow_source.clone(),
                secret: secret_from_env(section.servicenow_secret_env.as_deref(), "servicenow")?,
            }),
            tx: None,
        })
    }

    /// Binds `addr` and serves in the background; returns the engine loop's end of
    /// the channel.
    async fn serve(mut self, addr: &str) -> Result<mpsc::Receiver<Intake>> {
        use axum::Router;
        use axum::routing::{get, post};
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        self.tx = Some(tx);
        let hooks = Router::new()
            .route("/webhooks/jira", post(jira_hook))
            .route("/webhooks/servicenow", post(servicenow_hook));
        // `[ops] listen` on the same address: its routes (and its `/healthz`) join.
        let app = match super::ops::routes_for(addr) {
            Some(ops) => hooks.with_state(self).merge(ops),
            None => hooks.route("/healthz", get(healthz)).with_state(self),
        };
        tracing::info!(address = %local, "listening on http://{local} for webhooks");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "webhook endpoint stopped: {e}");
            }
        });
        Ok(rx)
    }
}

type Reply = (
    axum::http::StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
);

fn reply(status: axum::http::StatusCode, body: serde_json::Value) -> Reply {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}

async fn healthz(axum::extract::State(hooks): axum::extract::State<Hooks>) -> Reply {
    use axum::http::StatusCode;
    match &hooks.tx {
        Some(tx) if !tx.is_closed() => reply(StatusCode::OK, serde_json::json!({"status": "ok"})),
        _ => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "engine stopped"}),
        ),
    }
}

async fn jira_hook(
    axum::extract::State(hooks): axum::extract::State<Hooks>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    let headers = header_pairs(&headers);
    let mapped = webhook::jira_event(&hooks.jira, &headers, &body, Utc::now());
    deliver(&hooks, "webhook jira", mapped, &body).await
}

async fn servicenow_hook(
    axum::extract::State(hooks): axum::extract::State<Hooks>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    let headers = header_pairs(&headers);
    let mapped = webhook::servicenow_event(&hooks.servicenow, &headers, &body, Utc::now());
    deliver(&hooks, "webhook servicenow", mapped, &body).await
}

fn header_pairs(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// 401 for authentication failures (nothing is kept); 400 with the reason for bad
/// payloads (kept as a dead letter); 200 once applied and committed; 503 when the
/// engine loop is gone.
async fn deliver(
    hooks: &Hooks,
    origin: &str,
    mapped: Result<Event, WebhookError>,
    body: &[u8],
) -> Reply {
    use axum::http::StatusCode;
    use serde_json::json;
    let unavailable = || {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the engine is not running; retry later"}),
        )
    };
    let Some(tx) = &hooks.tx else {
        return unavailable();
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    match mapped {
        Err(e) if e.is_auth() => reply(StatusCode::UNAUTHORIZED, json!({"error": e.to_string()})),
        Err(e) => {
            let letter = DeadLetter {
                received_at: Utc::now(),
                origin: origin.to_string(),
                reason: e.to_string(),
                body: String::from_utf8_lossy(body).into_owned(),
            };
            if tx.send(Intake::Dead(letter, reply_tx)).await.is_err() || reply_rx.await.is_err() {
                return unavailable();
            }
            reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}))
        }
        Ok(event) => {
            let (id, source) = (event.id.clone(), event.source.clone());
            if tx
                .send(Intake::Event(Box::new(event), reply_tx))
                .await
                .is_err()
            {
                return unavailable();
            }
            match reply_rx.await {
                Ok(accepted) => {
                    let outcome = match accepted.applied {
                        Applied::Applied => "applied",
                        Applied::Unrouted => "unrouted",
                        Applied::Duplicate => "duplicate",
                    };
                    reply(
                        StatusCode::OK,
                        json!({"id": id, "source": source, "outcome": outcome, "decisions": accepted.decisions}),
                    )
                }
                Err(_) => unavailable(),
            }
        }
    }
}
