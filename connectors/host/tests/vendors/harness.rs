//! Runs a first-party connector (`connectors/dist/NAME.wasm`) in the steward-connectors
//! host against a loopback vendor server.
//!
//! Components are compiled once per build of the component: the host's disk cache lives
//! in `CARGO_TARGET_TMPDIR`, and the first test of a binary fills it while the others
//! wait. Secrets are files in a per-test temporary directory (`SecretSource::File`),
//! so tests need not touch the process environment.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use steward_connectors::{
    CallContext, ConnectorConfig, ConnectorError, Description, Host, HostSettings, LogRecord,
    SecretSource,
};

/// `connectors/dist/NAME.wasm`; the test fails (it does not skip) when it is missing.
pub fn component(name: &str) -> PathBuf {
    let path = super::host_dir()
        .join("../dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: the first-party connectors are built from source into connectors/dist/",
        path.display()
    );
    path
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("steward-connector-cache")
}

/// Compiles `name` into the cache once per test binary (other tests wait for it).
fn warm(name: &str) {
    static WARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warmed = WARMED.lock().unwrap_or_else(|p| p.into_inner());
    if warmed.iter().any(|w| w == name) {
        return;
    }
    let settings = HostSettings {
        cache_dir: Some(cache_dir()),
        max_concurrent_calls: 1,
        ..HostSettings::default()
    };
    Host::new(settings, vec![ConnectorConfig::new(name, component(name))])
        .unwrap_or_else(|e| panic!("cannot load connectors/dist/{name}.wasm: {e}"));
    warmed.push(name.to_owned());
}

/// The call context of attempt `attempt` of the action `key`.
pub fn ctx(key: &str, attempt: u32) -> CallContext {
    CallContext {
        idempotency_key: key.to_owned(),
        attempt,
        deadline_ms: 0,
    }
}

/// One connector loaded in a host of its own, its log lines captured.
pub struct Rig {
    /// The host.
    pub host: Host,
    /// The connector's name (also the component's).
    pub name: String,
    logs: Arc<Mutex<Vec<LogRecord>>>,
    secrets: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Loads `connectors/dist/NAME.wasm` with `allow_hosts = ["127.0.0.1"]`, the given
    /// settings, and the given secrets (each written to a file).
    pub fn new(name: &str, settings: &[(&str, &str)], secrets: &[(&str, &str)]) -> Rig {
        Rig::configured(name, settings, secrets, |_| {})
    }

    /// Like [`Rig::new`], then `adjust` may change the configuration (limits, hosts).
    pub fn configured(
        name: &str,
        settings: &[(&str, &str)],
        secrets: &[(&str, &str)],
        adjust: impl FnOnce(&mut ConnectorConfig),
    ) -> Rig {
        warm(name);
        let dir = tempfile::tempdir().unwrap();
        let mut config = ConnectorConfig::new(name, component(name));
        config.allow_hosts = vec!["127.0.0.1".into()];
        config.timeout_ms = 5_000;
        for (k, v) in settings {
            config.settings.insert((*k).to_owned(), (*v).to_owned());
        }
        for (k, v) in secrets {
            let path = dir.path().join(k);
            std::fs::write(&path, v).unwrap();
            config
                .secrets
                .insert((*k).to_owned(), SecretSource::File(path));
        }
        adjust(&mut config);
        let logs: Arc<Mutex<Vec<LogRecord>>> = Arc::default();
        let sink = Arc::clone(&logs);
        let host_settings = HostSettings {
            cache_dir: Some(cache_dir()),
            max_concurrent_calls: 2,
            log_sink: Some(Arc::new(move |r: &LogRecord| {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(r.clone());
            })),
            ..HostSettings::default()
        };
        let host = Host::new(host_settings, vec![config])
            .unwrap_or_else(|e| panic!("cannot load connectors/dist/{name}.wasm: {e}"));
        Rig {
            host,
            name: name.to_owned(),
            logs,
            secrets: secrets.iter().map(|(_, v)| (*v).to_owned()).collect(),
            _dir: dir,
        }
    }

    /// Invokes `operation` with `args`, as attempt `attempt` of the action `key`; the
    /// result is parsed as JSON. Every error is checked to carry no secret.
    pub fn call(
        &self,
        operation: &str,
        args: &Value,
        key: &str,
        attempt: u32,
    ) -> Result<Value, ConnectorError> {
        let out = self
            .host
            .invoke(&self.name, operation, &args.to_string(), &ctx(key, attempt));
        match out {
            Ok(text) => Ok(serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{operation}: result is not JSON ({e}): {text}"))),
            Err(e) => {
                self.assert_no_secret_in(&format!("{e} {e:?}"), "an error");
                Err(e)
            }
        }
    }

    /// Invokes and expects success.
    pub fn ok(&self, operation: &str, args: &Value, key: &str, attempt: u32) -> Value {
        self.call(operation, args, key, attempt)
            .unwrap_or_else(|e| panic!("{operation} {args} failed: {e:?}"))
    }

    /// Invokes and expects failure.
    pub fn err(&self, operation: &str, args: &Value, key: &str, attempt: u32) -> ConnectorError {
        match self.call(operation, args, key, attempt) {
            Ok(v) => panic!("{operation} {args} succeeded with {v}, expected an error"),
            Err(e) => e,
        }
    }

    /// `describe()`.
    pub fn describe(&self) -> Description {
        self.host
            .describe(&self.name)
            .unwrap_or_else(|e| panic!("describe {}: {e:?}", self.name))
    }

    /// The `User-Agent` every request must carry: `steward-connector-NAME/VERSION`,
    /// as the component describes itself.
    pub fn user_agent(&self) -> String {
        let d = self.describe();
        format!("steward-connector-{}/{}", d.name, d.version)
    }

    /// Fails unless every request carries [`Rig::user_agent`].
    pub fn assert_user_agent(&self, requests: &[super::server::Recorded]) {
        let ua = self.user_agent();
        for r in requests {
            assert_eq!(r.header("user-agent"), Some(ua.as_str()), "{}", r.line());
        }
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fails when a configured secret value (or an extra sensitive value, such as a
    /// Basic credential) appears in `text`.
    pub fn assert_no_secret_in(&self, text: &str, what: &str) {
        for s in self.secrets.iter().filter(|s| s.len() >= 4) {
            assert!(
                !text.contains(s.as_str()),
                "a secret appears in {what}: {text}"
            );
        }
    }

    /// Fails when a secret (or one of `extra`) appears in any log line.
    pub fn assert_logs_clean(&self, extra: &[&str]) {
        for r in self.logs() {
            self.assert_no_secret_in(&r.message, "a log line");
            for e in extra {
                assert!(
                    !r.message.contains(e),
                    "{e:?} appears in a log line: {}",
                    r.message
                );
            }
        }
    }
}

/// Expects a retryable connector error; returns its message and `retry_after_ms`.
pub fn expect_retryable(err: &ConnectorError) -> (String, Option<u64>) {
    match err {
        ConnectorError::Connector {
            retryable: true,
            message,
            retry_after_ms,
        } => (message.clone(), *retry_after_ms),
        other => panic!("expected a retryable connector error, got {other:?}"),
    }
}

/// Expects a permanent connector error whose message contains `needle`.
pub fn expect_permanent(err: &ConnectorError, needle: &str) -> String {
    match err {
        ConnectorError::Connector {
            retryable: false,
            message,
            ..
        } => {
            assert!(
                message.contains(needle),
                "permanent error {message:?} does not contain {needle:?}"
            );
            message.clone()
        }
        other => panic!("expected a permanent connector error ({needle:?}), got {other:?}"),
    }
}

/// Checks an operation of `describe`: its argument schema is an object with exactly
/// these properties in this order, these required, and no additional properties.
pub fn assert_operation(d: &Description, name: &str, properties: &[&str], required: &[&str]) {
    let op = d
        .operations
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("{}: no operation `{name}`", d.name));
    assert!(!op.doc.trim().is_empty(), "{name}: empty doc");
    assert!(
        !op.doc.contains('\n'),
        "{name}: doc is not one line: {:?}",
        op.doc
    );
    let schema: Value = serde_json::from_str(&op.args_schema)
        .unwrap_or_else(|e| panic!("{name}: args schema is not JSON ({e}): {}", op.args_schema));
    assert_eq!(schema["type"], "object", "{name}: {schema}");
    let props: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: no properties: {schema}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(props, properties, "{name}: properties (in order)");
    let mut req: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    req.sort_unstable();
    let mut want = required.to_vec();
    want.sort_unstable();
    assert_eq!(req, want, "{name}: required");
    assert_eq!(
        schema["additionalProperties"], false,
        "{name}: additionalProperties"
    );
}
