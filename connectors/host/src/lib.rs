//! The connector host: runs Steward's connectors, WebAssembly components implementing
//! the world `steward:connector@0.1.0` (`connectors/wit/connector.wit`), in a sandbox.
//!
//! - Each connector is compiled once (cached on disk, see [`HostSettings::cache_dir`])
//!   and pre-instantiated; each call gets a fresh instance from a pooling allocator.
//! - Each call has a wall-clock deadline (epoch interruption, host HTTP included) and
//!   a memory limit; the output must be JSON and under a size cap.
//! - The guest reaches out only through the host's imports: HTTP performed by the
//!   host to the connector's `allow_hosts` only, secrets and settings by name, logging,
//!   the clock.
//! - Every failure is a typed [`ConnectorError`] and fails that call only.
//!
//! See docs/connectors.md.

mod cache;
mod config;
mod error;
mod host;
mod http;

pub use config::{ConnectorConfig, HostSettings, LogLevel, LogRecord, LogSink, SecretSource};
pub use error::{ConnectorError, LoadError};
pub use host::{CallContext, Description, Host, Operation};
