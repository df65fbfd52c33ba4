//! Typed errors of the connector host.

/// Why one connector call failed. Every variant fails that call only: the host stays
/// usable for the next call, to the same connector or another.
///
/// Messages are redacted: any secret value the guest obtained during the call is
/// replaced by `[REDACTED]` before it reaches an error or a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// No connector of that name is loaded.
    #[error("no connector named `{0}`")]
    NotFound(String),
    /// The guest trapped (`unreachable`, out-of-bounds access, a malformed value
    /// handed to the host, …).
    #[error("connector trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline (the connector's `timeout_ms`, or the context's
    /// `deadline-ms` if earlier) and was interrupted.
    #[error("connector call timed out")]
    Timeout,
    /// The guest tried to grow its memory past the connector's `memory_mb`.
    #[error("connector exceeded its memory limit")]
    MemoryLimit,
    /// The guest asked the host for HTTP to a host its configuration does not allow.
    /// Nothing was sent.
    #[error("capability denied: HTTP to `{host}` is not allowed")]
    CapabilityDenied {
        /// The host the guest asked for.
        host: String,
    },
    /// The guest returned something the host refuses: too large, or not JSON.
    #[error("connector returned bad output: {0}")]
    BadOutput(String),
    /// An HTTP exchange performed by the host for the guest failed: a transport error
    /// (`status` is `None`: connection, TLS, timeout) or a response the host refused
    /// (`status` is the response's, e.g. a body over `max_response_bytes`).
    #[error("HTTP failed{}: {message}", status.map(|s| format!(" (status {s})")).unwrap_or_default())]
    Http {
        /// The response status, when a response arrived.
        status: Option<u16>,
        /// What went wrong.
        message: String,
    },
    /// The connector's own error (`call-error`): retryable or not, optionally with the
    /// delay the vendor asked for (e.g. a 429's `Retry-After`).
    #[error("connector error{}: {message}", if *retryable { " (retryable)" } else { "" })]
    Connector {
        /// Whether trying again can help.
        retryable: bool,
        /// The connector's message.
        message: String,
        /// Not before this many milliseconds, if the connector said so.
        retry_after_ms: Option<u64>,
    },
    /// The host could not create an instance for this call (e.g. the instance pool is
    /// exhausted by concurrent calls).
    #[error("could not instantiate connector: {0}")]
    Instantiate(String),
}

impl ConnectorError {
    /// Whether the same call may succeed if tried again later (the dispatcher's
    /// retry policy starts from this).
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Timeout | ConnectorError::Instantiate(_) => true,
            ConnectorError::Http { status, .. } => status.is_none(),
            ConnectorError::Connector { retryable, .. } => *retryable,
            ConnectorError::NotFound(_)
            | ConnectorError::Trap(_)
            | ConnectorError::MemoryLimit
            | ConnectorError::CapabilityDenied { .. }
            | ConnectorError::BadOutput(_) => false,
        }
    }
}

/// Why the host could not load its connectors.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is invalid (message says which field).
    #[error("connector `{connector}`: {message}")]
    Config {
        /// The connector's name.
        connector: String,
        /// What is wrong.
        message: String,
    },
    /// The component file could not be read.
    #[error("connector `{connector}`: cannot read {path}: {source}")]
    Read {
        /// The connector's name.
        connector: String,
        /// The component's path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The component does not compile or does not implement `steward:connector@0.1.0`.
    #[error("connector `{connector}`: {message}")]
    Component {
        /// The connector's name.
        connector: String,
        /// Wasmtime's explanation.
        message: String,
    },
    /// The wasmtime engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}
