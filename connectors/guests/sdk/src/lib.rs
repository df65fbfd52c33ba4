//! The guest SDK for Steward connectors: WebAssembly components of the world
//! `steward:connector@0.1.0` (connectors/wit/connector.wit).
//!
//! A connector is a type implementing [`Connector`] (its name, version and a list of
//! typed [`Operation`]s, each with a one-line doc and a JSON [`Schema`] of its
//! arguments) and one [`connector!`] line that exports it. The SDK does the rest:
//! `describe`, dispatch by operation name, argument decoding (serde, unknown fields
//! refused), results as JSON, and errors per the connector contract.
//!
//! Layout:
//! - [`Http`] (http.rs): requests through the host's `http` import, with the
//!   connector's `User-Agent`, default headers and basic auth; non-2xx answers become
//!   [`Error`]s (error.rs: 429, 5xx and transport failures are retryable, honouring
//!   `Retry-After`; other 4xx are permanent, with the vendor's message).
//! - [`Schema`] and [`Prop`] (schema.rs): argument schemas whose properties keep the
//!   order they are listed in (rules may pass arguments positionally in that order).
//! - [`secret`], [`setting`], [`log`], [`now_ms`]: the host's other imports.
//! - [`url`]: percent-encoding of path segments and query values.
//!
//! ```ignore
//! use steward_connector_sdk::{Call, Connector, Error, Operation, Prop, Schema, Value, json};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Ping { text: String }
//!
//! struct Echo;
//! impl Connector for Echo {
//!     const NAME: &'static str = "echo";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     fn operations() -> Vec<Operation> {
//!         vec![Operation::new(
//!             "ping",
//!             "Answers with the text it was given",
//!             Schema::object().required("text", Prop::string("What to answer")),
//!             |_call: &Call, args: Ping| Ok(json!({ "text": args.text })),
//!         )]
//!     }
//! }
//! steward_connector_sdk::connector!(Echo);
//! ```

extern crate self as steward_connector_sdk;

mod connector;
mod error;
mod http;
mod schema;
pub mod url;

/// The bindings `wit-bindgen` generates for the world (used by [`connector!`]).
#[doc(hidden)]
#[allow(missing_docs, clippy::all, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "connector",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "::steward_connector_sdk::bindings",
        runtime_path: "::steward_connector_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use connector::{__describe, __invoke, Call, Connector, Operation};
pub use error::{Error, retry_after_ms, status_error, vendor_message};
pub use http::{Http, Request, Response};
pub use schema::{Prop, Schema};
pub use serde;
pub use serde_json::{self, Map, Value, json};

use bindings::steward::connector::host;

/// A secret by name, as configured in the connector's `secrets` table (never log it;
/// the host redacts it from logs and errors anyway).
pub fn secret(name: &str) -> Option<String> {
    host::secret(name)
}

/// A non-secret setting by name, as configured in the connector's `settings` table.
pub fn setting(name: &str) -> Option<String> {
    host::setting(name)
}

/// A secret that must be configured: its absence is a permanent error naming it.
pub fn require_secret(name: &str) -> Result<String, Error> {
    secret(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        Error::permanent(format!(
            "secret `{name}` is not configured (add it to the connector's `secrets` table)"
        ))
    })
}

/// A setting that must be configured: its absence is a permanent error naming it.
pub fn require_setting(name: &str) -> Result<String, Error> {
    setting(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        Error::permanent(format!(
            "setting `{name}` is not configured (add it to the connector's `settings` table)"
        ))
    })
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// Logging through the host (which tags each line with the connector's name and
/// redacts the secrets the call obtained).
pub mod log {
    use crate::bindings::steward::connector::host::{self, LogLevel};

    /// Logs at debug level.
    pub fn debug(message: &str) {
        host::log(LogLevel::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        host::log(LogLevel::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        host::log(LogLevel::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        host::log(LogLevel::Error, message);
    }
}

/// Exports a [`Connector`] as the component's `describe` and `invoke`. Use it once,
/// at the connector crate's root: `steward_connector_sdk::connector!(Jira);`.
#[macro_export]
macro_rules! connector {
    ($connector:ty) => {
        struct __StewardConnectorExport;

        impl $crate::bindings::Guest for __StewardConnectorExport {
            fn describe() -> $crate::bindings::steward::connector::types::Description {
                $crate::__describe::<$connector>()
            }

            fn invoke(
                operation: ::std::string::String,
                args: ::std::string::String,
                ctx: $crate::bindings::steward::connector::types::Context,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::steward::connector::types::CallError,
            > {
                $crate::__invoke::<$connector>(&operation, &args, ctx)
            }
        }

        $crate::bindings::__export_world!(__StewardConnectorExport);
    };
}
