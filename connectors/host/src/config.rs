//! Configuration of the host and of each connector.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One connector: which component, what it may reach, and its limits.
///
/// In `steward.toml` this is a `[connectors.NAME]` table; `name` is taken from the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The connector's name, as rules refer to it.
    #[serde(default)]
    pub name: String,
    /// Path of the component (`.wasm`).
    pub component: PathBuf,
    /// Hosts the connector may reach over HTTP(S): an exact host (`example.com`) or a
    /// wildcard for subdomains (`*.atlassian.net`, which does not match
    /// `atlassian.net` itself). Case-insensitive; any port.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Secrets the connector may ask for by name, and where each comes from.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Non-secret settings the connector reads by name (`base_url`, …).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Wall-clock limit of one call, host HTTP included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Limit of the guest's linear memory, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Largest output the guest may return, and largest HTTP response body the host
    /// reads on its behalf, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_memory_mb() -> u64 {
    64
}
fn default_max_response_bytes() -> u64 {
    1024 * 1024
}

impl ConnectorConfig {
    /// A connector with the default limits (10 s, 64 MiB, 1 MiB), no hosts and no
    /// secrets.
    pub fn new(name: impl Into<String>, component: impl Into<PathBuf>) -> Self {
        ConnectorConfig {
            name: name.into(),
            component: component.into(),
            allow_hosts: Vec::new(),
            secrets: BTreeMap::new(),
            settings: BTreeMap::new(),
            timeout_ms: default_timeout_ms(),
            memory_mb: default_memory_mb(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

/// Where a secret's value is read from, at the moment the guest asks for it (so a
/// rotated secret is picked up without a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the host process.
    Env(String),
    /// A file; its content with trailing line breaks removed.
    File(PathBuf),
}

impl SecretSource {
    pub(crate) fn read(&self) -> Option<String> {
        match self {
            SecretSource::Env(var) => std::env::var(var).ok(),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned()),
        }
    }
}

/// Severity of a guest's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// One line a guest logged (secrets it obtained in the call already redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The connector that logged.
    pub connector: String,
    /// Its severity.
    pub level: LogLevel,
    /// The message.
    pub message: String,
}

/// Where guests' log lines go.
pub type LogSink = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Settings of the host itself (not of one connector).
#[derive(Clone)]
pub struct HostSettings {
    /// Where compiled components are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
    /// Calls that may run at once; sizes the instance pool.
    pub max_concurrent_calls: u32,
    /// Granularity of deadlines: a call is stopped within about two ticks after its
    /// deadline.
    pub epoch_tick: Duration,
    /// Receives the guests' log lines; `None` writes them to standard error.
    pub log_sink: Option<LogSink>,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            cache_dir: None,
            max_concurrent_calls: 16,
            epoch_tick: Duration::from_millis(5),
            log_sink: None,
        }
    }
}

impl std::fmt::Debug for HostSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSettings")
            .field("cache_dir", &self.cache_dir)
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .field("epoch_tick", &self.epoch_tick)
            .field("log_sink", &self.log_sink.as_ref().map(|_| "…"))
            .finish()
    }
}
