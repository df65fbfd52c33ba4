//! The host: loads connectors, runs calls with limits, provides the imports.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::config::{ConnectorConfig, HostSettings, LogLevel, LogRecord, LogSink, SecretSource};
use crate::error::{ConnectorError, LoadError};
use crate::http::{self, AllowList, Outcome};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "connector",
    });
}

use bindings::steward::connector::host as wit_host;
use bindings::steward::connector::types as wit_types;
use bindings::{Connector, ConnectorPre};

/// What the engine knows about one call (the WIT `context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// Deterministic action id; connectors pass it on as the vendor's idempotency key.
    pub idempotency_key: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// Milliseconds since the Unix epoch after which the call is stopped; 0 for none
    /// (the connector's `timeout_ms` applies either way).
    pub deadline_ms: u64,
}

/// One operation a connector offers (from `describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its name.
    pub name: String,
    /// One line of documentation.
    pub doc: String,
    /// JSON Schema of its arguments object.
    pub args_schema: String,
}

/// What a connector says about itself (from `describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The connector's own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its operations.
    pub operations: Vec<Operation>,
}

/// Per-connector data shared by its calls.
struct Shared {
    name: String,
    allow: AllowList,
    secrets: HashMap<String, SecretSource>,
    settings: HashMap<String, String>,
    agent: ureq::Agent,
    timeout: Duration,
    memory_bytes: usize,
    max_response_bytes: u64,
    log: LogSink,
}

struct Loaded {
    shared: Arc<Shared>,
    pre: ConnectorPre<State>,
}

/// The store's limiter: the memory cap, remembering that it was hit.
struct Limits {
    memory_bytes: usize,
    memory_hit: bool,
}

/// Core instances one component may create: a component from `wit-component` has a
/// handful (the module, its shims); this leaves room and stops pathological ones.
const MAX_INSTANCES_PER_CALL: usize = 32;
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// See `make_engine`.
const KEEP_RESIDENT_BYTES: usize = 256 * 1024;

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_hit = true;
            wasmtime::bail!("memory limit of {} bytes reached", self.memory_bytes);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.memory_hit = true;
            wasmtime::bail!("table limit of {MAX_TABLE_ELEMENTS} elements reached");
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES_PER_CALL
    }
    fn memories(&self) -> usize {
        MAX_INSTANCES_PER_CALL
    }
    fn tables(&self) -> usize {
        MAX_INSTANCES_PER_CALL
    }
}

/// A failure the host observed during the call; it decides the call's outcome whatever
/// the guest returns afterwards.
enum HostFailure {
    Denied(String),
    Http {
        status: Option<u16>,
        message: String,
    },
}

/// The store's data for one call.
struct State {
    shared: Arc<Shared>,
    limits: Limits,
    deadline: Instant,
    failure: Option<HostFailure>,
    /// Secret values handed to the guest in this call, redacted from logs and errors.
    revealed: Vec<String>,
}

impl State {
    fn redact(&self, text: &str) -> String {
        redact(text, &self.revealed)
    }
}

fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "[REDACTED]");
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl wit_types::Host for State {}

impl wit_host::Host for State {
    fn http(&mut self, request: wit_host::HttpRequest) -> Result<wit_host::HttpResponse, String> {
        let uri: ureq::http::Uri = match request.url.parse() {
            Ok(u) => u,
            Err(e) => {
                return Err(format!(
                    "invalid URL ({e}): only absolute http(s) URLs are allowed"
                ));
            }
        };
        let Some(host) = http::target_host(&uri) else {
            return Err("only absolute http(s) URLs are allowed".to_owned());
        };
        if !self.shared.allow.allows(&host) {
            let message = format!("capability denied: HTTP to `{host}` is not allowed");
            if self.failure.is_none() {
                self.failure = Some(HostFailure::Denied(host));
            }
            return Err(message);
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err("deadline exceeded".to_owned());
        }
        let outcome = http::perform(
            &self.shared.agent,
            http::Request {
                method: request.method,
                uri,
                headers: request
                    .headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
                body: request.body,
            },
            remaining,
            self.shared.max_response_bytes,
        );
        match outcome {
            Outcome::Response {
                status,
                headers,
                body,
            } => Ok(wit_host::HttpResponse {
                status,
                headers: headers
                    .into_iter()
                    .map(|(name, value)| wit_host::Header { name, value })
                    .collect(),
                body,
            }),
            Outcome::TooLarge { status } => {
                let message = format!(
                    "response body over the {}-byte limit",
                    self.shared.max_response_bytes
                );
                self.record_http(Some(status), &message);
                Err(message)
            }
            Outcome::Transport(message) => {
                let message = self.redact(&message);
                self.record_http(None, &message);
                Err(message)
            }
        }
    }

    fn secret(&mut self, name: String) -> Option<String> {
        let value = self.shared.secrets.get(&name)?.read()?;
        if !self.revealed.contains(&value) {
            self.revealed.push(value.clone());
        }
        Some(value)
    }

    fn setting(&mut self, name: String) -> Option<String> {
        self.shared.settings.get(&name).cloned()
    }

    fn log(&mut self, level: wit_host::LogLevel, message: String) {
        let level = match level {
            wit_host::LogLevel::Debug => LogLevel::Debug,
            wit_host::LogLevel::Info => LogLevel::Info,
            wit_host::LogLevel::Warn => LogLevel::Warn,
            wit_host::LogLevel::Error => LogLevel::Error,
        };
        let record = LogRecord {
            connector: self.shared.name.clone(),
            level,
            message: self.redact(&message),
        };
        (self.shared.log)(&record);
    }

    fn now_ms(&mut self) -> u64 {
        now_ms()
    }
}

impl State {
    fn record_http(&mut self, status: Option<u16>, message: &str) {
        if self.failure.is_none() {
            self.failure = Some(HostFailure::Http {
                status,
                message: message.to_owned(),
            });
        }
    }
}

/// Increments the engine's epoch every tick until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, LoadError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("steward-connector-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs connectors: each call in a fresh instance (from the pool) with its own time
/// and memory limits, reaching out only through the host's imports.
///
/// `Host` is `Send + Sync`; calls may run concurrently from several threads, up to
/// `HostSettings::max_concurrent_calls` at once. Calls block (host HTTP is blocking):
/// from async code, run them on a blocking thread.
pub struct Host {
    engine: Engine,
    connectors: HashMap<String, Loaded>,
    tick: Duration,
    _ticker: Ticker,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.connectors.keys().collect();
        names.sort();
        f.debug_struct("Host").field("connectors", &names).finish()
    }
}

fn default_log_sink() -> LogSink {
    Arc::new(|r: &LogRecord| eprintln!("[connector {}] {:?}: {}", r.connector, r.level, r.message))
}

impl Host {
    /// Sets up the engine (pooling allocator sized from `settings` and the largest
    /// `memory_mb`), then loads and links every connector: compiled once (or loaded
    /// from the cache), checked against the world, pre-instantiated.
    pub fn new(
        settings: HostSettings,
        connectors: Vec<ConnectorConfig>,
    ) -> Result<Self, LoadError> {
        let mut seen = std::collections::HashSet::new();
        for c in &connectors {
            let fail = |message: String| LoadError::Config {
                connector: c.name.clone(),
                message,
            };
            if c.name.is_empty() {
                return Err(fail("empty name".to_owned()));
            }
            if !seen.insert(c.name.clone()) {
                return Err(fail("defined twice".to_owned()));
            }
            if c.timeout_ms == 0 || c.memory_mb == 0 || c.max_response_bytes == 0 {
                return Err(fail(
                    "timeout_ms, memory_mb and max_response_bytes must be above 0".to_owned(),
                ));
            }
            if c.memory_mb > 4096 {
                return Err(fail(
                    "memory_mb is at most 4096 (32-bit linear memory)".to_owned(),
                ));
            }
        }
        let max_memory_mb = connectors.iter().map(|c| c.memory_mb).max().unwrap_or(64);
        let engine = make_engine(&settings, max_memory_mb)?;
        let mut linker: Linker<State> = Linker::new(&engine);
        Connector::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let log = settings.log_sink.clone().unwrap_or_else(default_log_sink);

        let mut loaded = HashMap::new();
        for c in connectors {
            let bytes = std::fs::read(&c.component).map_err(|source| LoadError::Read {
                connector: c.name.clone(),
                path: c.component.clone(),
                source,
            })?;
            let component_err = |e: wasmtime::Error| LoadError::Component {
                connector: c.name.clone(),
                message: format!("{e:#}"),
            };
            let component = crate::cache::load(&engine, &bytes, settings.cache_dir.as_deref())
                .map_err(component_err)?;
            let instance_pre = linker.instantiate_pre(&component).map_err(component_err)?;
            let pre = ConnectorPre::new(instance_pre).map_err(component_err)?;
            let allow = AllowList::new(&c.allow_hosts).map_err(|message| LoadError::Config {
                connector: c.name.clone(),
                message,
            })?;
            let shared = Shared {
                name: c.name.clone(),
                allow,
                secrets: c.secrets.into_iter().collect(),
                settings: c.settings.into_iter().collect(),
                agent: http::agent(),
                timeout: Duration::from_millis(c.timeout_ms),
                memory_bytes: usize::try_from(c.memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
                max_response_bytes: c.max_response_bytes,
                log: Arc::clone(&log),
            };
            loaded.insert(
                c.name,
                Loaded {
                    shared: Arc::new(shared),
                    pre,
                },
            );
        }
        let tick = settings.epoch_tick.max(Duration::from_millis(1));
        let ticker = Ticker::start(engine.clone(), tick)?;
        Ok(Host {
            engine,
            connectors: loaded,
            tick,
            _ticker: ticker,
        })
    }

    /// Names of the loaded connectors, sorted.
    pub fn connectors(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.connectors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// A store for one call, its deadline set.
    fn store(&self, loaded: &Loaded, deadline_ms: u64) -> Result<Store<State>, ConnectorError> {
        let mut budget = loaded.shared.timeout;
        if deadline_ms > 0 {
            let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
            budget = budget.min(left);
        }
        if budget.is_zero() {
            return Err(ConnectorError::Timeout);
        }
        let state = State {
            shared: Arc::clone(&loaded.shared),
            limits: Limits {
                memory_bytes: loaded.shared.memory_bytes,
                memory_hit: false,
            },
            deadline: Instant::now() + budget,
            failure: None,
            revealed: Vec::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // The epoch advances once per tick; one more tick than the budget needs so a
        // call is never stopped early (it is stopped within two ticks after).
        let ticks = u64::try_from(budget.as_nanos().div_ceil(self.tick.as_nanos()))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        store.set_epoch_deadline(ticks);
        Ok(store)
    }

    fn loaded(&self, name: &str) -> Result<&Loaded, ConnectorError> {
        self.connectors
            .get(name)
            .ok_or_else(|| ConnectorError::NotFound(name.to_owned()))
    }

    /// Calls `invoke(operation, args, ctx)` of the connector `name` in a fresh instance.
    ///
    /// Returns the connector's JSON result, or why the call failed. Whatever the guest
    /// does, only this call fails.
    pub fn invoke(
        &self,
        name: &str,
        operation: &str,
        args_json: &str,
        ctx: &CallContext,
    ) -> Result<String, ConnectorError> {
        let loaded = self.loaded(name)?;
        let mut store = self.store(loaded, ctx.deadline_ms)?;
        let wit_ctx = wit_types::Context {
            idempotency_key: ctx.idempotency_key.clone(),
            attempt: ctx.attempt,
            deadline_ms: ctx.deadline_ms,
        };
        let instance = loaded
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, e, true))?;
        let result = instance
            .call_invoke(&mut store, operation, args_json, &wit_ctx)
            .map_err(|e| classify(&store, e, false))?;
        let state = store.data();
        if let Some(failure) = &state.failure {
            return Err(match failure {
                HostFailure::Denied(host) => {
                    ConnectorError::CapabilityDenied { host: host.clone() }
                }
                HostFailure::Http { status, message } => ConnectorError::Http {
                    status: *status,
                    message: message.clone(),
                },
            });
        }
        match result {
            Ok(output) => check_output(output, state.shared.max_response_bytes),
            Err(wit_types::CallError::Retryable(info)) => Err(ConnectorError::Connector {
                retryable: true,
                message: state.redact(&info.message),
                retry_after_ms: info.retry_after_ms,
            }),
            Err(wit_types::CallError::Permanent(message)) => Err(ConnectorError::Connector {
                retryable: false,
                message: state.redact(&message),
                retry_after_ms: None,
            }),
        }
    }

    /// Calls `describe()` of the connector `name`, with the same limits as `invoke`.
    pub fn describe(&self, name: &str) -> Result<Description, ConnectorError> {
        let loaded = self.loaded(name)?;
        let mut store = self.store(loaded, 0)?;
        let instance = loaded
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, e, true))?;
        let d = instance
            .call_describe(&mut store)
            .map_err(|e| classify(&store, e, false))?;
        Ok(Description {
            name: d.name,
            version: d.version,
            operations: d
                .operations
                .into_iter()
                .map(|o| Operation {
                    name: o.name,
                    doc: o.doc,
                    args_schema: o.args_schema,
                })
                .collect(),
        })
    }
}

fn check_output(output: String, max: u64) -> Result<String, ConnectorError> {
    let len = u64::try_from(output.len()).unwrap_or(u64::MAX);
    if len > max {
        return Err(ConnectorError::BadOutput(format!(
            "{len} bytes, over the {max}-byte limit"
        )));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        return Err(ConnectorError::BadOutput(format!("not JSON: {e}")));
    }
    Ok(output)
}

/// Turns a wasmtime error from instantiating or calling into the call's error.
fn classify(store: &Store<State>, err: wasmtime::Error, instantiating: bool) -> ConnectorError {
    let state = store.data();
    if state.limits.memory_hit {
        return ConnectorError::MemoryLimit;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => ConnectorError::Timeout,
        Some(trap) => ConnectorError::Trap(state.redact(&trap.to_string())),
        None if instantiating => ConnectorError::Instantiate(state.redact(&format!("{err:#}"))),
        None => ConnectorError::Trap(state.redact(&format!("{err:#}"))),
    }
}

fn make_engine(settings: &HostSettings, max_memory_mb: u64) -> Result<Engine, LoadError> {
    let calls = settings.max_concurrent_calls.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(calls)
        .total_core_instances(calls.saturating_mul(8))
        .total_memories(calls.saturating_mul(2))
        .total_tables(calls.saturating_mul(8))
        .max_memory_size(usize::try_from(max_memory_mb * 1024 * 1024).unwrap_or(usize::MAX))
        // Reset the first pages of a returned memory or table with a memset instead of
        // giving them back to the OS: most calls touch little memory, and the madvise
        // and page faults cost more than the memset.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))
}
