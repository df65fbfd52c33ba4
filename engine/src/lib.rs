//! The Steward engine.
//!
//! - [`event`]: the CloudEvents envelope and its validation.
//! - [`ruleset`]: checked rules compiled to what the engine runs, with the event-type index.
//! - [`core`]: the deterministic core — `apply` an event, `advance` time — which decides
//!   and records, and performs no I/O.
//! - [`decision`]: decisions, their canonical encoding and the evidence hash chain.
//! - [`dispatch`]: the outbox dispatcher: runs decided actions through connectors,
//!   retries with backoff, dead-letters, and hands outcomes back to the core.
//! - [`seen`]: the exact set of event identities applied (de-duplication).
//! - [`time`]: business calendars, cron schedules, period ids.
//! - [`calendar_fns`]: the calendar functions of expressions, bound to the calendars.
//! - [`sla`]: SLA clock state and arithmetic (elapsed time across pauses, thresholds).
//! - [`store`]: persistence of the core's world (SQLite), behind a trait.
//! - [`replay`]: runs recorded events through the core on a virtual clock.
//! - [`webhook`]: inbound Jira and ServiceNow webhooks mapped to events, signatures verified.

pub mod calendar_fns;
pub mod core;
pub mod decision;
pub mod dispatch;
pub mod event;
pub mod replay;
pub mod ruleset;
pub mod seen;
pub mod sla;
pub mod store;
pub mod time;
pub mod webhook;
