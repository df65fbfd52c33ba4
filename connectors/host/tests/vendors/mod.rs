//! Shared support of the first-party connector tests (tests/{jira,servicenow,slack,
//! pagerduty,webhook}.rs): real HTTP servers on loopback that play each vendor's API and
//! record every request ([`server`], one module per vendor), the OpenAPI validator that
//! checks every Jira request against Atlassian's published spec ([`openapi`]), and the
//! harness that runs `connectors/dist/NAME.wasm` in the steward-connectors host against
//! them ([`harness`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod harness;
pub mod jira;
pub mod openapi;
pub mod pagerduty;
pub mod server;
pub mod servicenow;
pub mod slack;
pub mod webhook;

/// connectors/host, from which the modules find the oracles and the built components.
/// A test of another package that includes these modules (by `#[path]`, inside a module
/// of its own) defines its own `host_dir` beside them.
pub fn host_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
