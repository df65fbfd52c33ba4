//! The outbox dispatcher: runs the actions the core decided, through connectors.
//!
//! It claims due outbox rows ([`Store::claim_due`], leased so that a dispatcher that
//! dies gives its calls back), makes each call on a blocking thread through an
//! [`Invoker`] (in `steward run`, the WebAssembly connector host) with the action id as
//! the idempotency key and the attempt number, and decides what follows:
//!
//! - success: a [`Finished`] outcome, executed;
//! - a retryable error with attempts left: the row is put back for a later try, after
//!   an exponential backoff with jitter ([`retry_at`]), never sooner than a vendor's
//!   `Retry-After`;
//! - a permanent error, attempts exhausted, an unknown connector, or arguments that do
//!   not fit the operation: a [`Finished`] outcome, dead-lettered with the reason.
//!
//! Finished outcomes go to the engine loop over a channel: it applies them
//! ([`crate::core::Engine::apply_outcome`]) and commits their evidence together with
//! the end of the row ([`Store::commit_settled`]). Until then the row stays in flight,
//! so a crash in between makes the call again, with the same idempotency key.
//!
//! The engine crate knows nothing of WebAssembly: connectors are behind [`Invoker`].
//!
//! Each call is measured through the `metrics` facade ([`metric`]): a no-op unless the
//! program installed a recorder. Diagnostics are `tracing` events.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::core::outcome::Outcome;
use crate::store::{Claimed, SettledAs, Settlement, Store};

/// The metrics the dispatcher records.
pub mod metric {
    /// Histogram, seconds: one connector call, labelled `connector`, `op` and
    /// `outcome` (`ok`; `retry`: failed, to be tried again; `failed`: dead-lettered).
    pub const ACTION_DURATION: &str = "steward_action_duration_seconds";
    /// Counter: connector calls that failed, labelled `connector` and `retryable`
    /// (`true` or `false`, as the error said, whether or not attempts were left).
    pub const CONNECTOR_ERRORS: &str = "steward_connector_errors_total";
}

/// `[dispatch]`: retries and limits of the outbox dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// Calls per action at most, the first included; then it is dead-lettered.
    pub max_attempts: u32,
    /// Backoff before the second call; it doubles with each further attempt.
    pub base_ms: u64,
    /// Longest backoff (a vendor's `Retry-After` may ask for longer, and is obeyed).
    pub max_ms: u64,
    /// How long a claim holds a row: a call still running after it may be taken over
    /// by another dispatcher, so calls are stopped before it ends. At least the
    /// longest connector `timeout_ms` plus two seconds is used.
    pub lease_ms: u64,
    /// Calls in flight at once.
    pub concurrency: u32,
    /// How often the outbox is polled for due actions when idle.
    pub poll_ms: u64,
    /// On shutdown, how long calls in flight are waited for; calls still running after
    /// it are given back (their rows are claimed again once their lease expires).
    pub shutdown_ms: u64,
    /// Where the connector host keeps compiled components (a private directory it
    /// creates), so later starts skip compiling; unset, they are compiled at each start.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_attempts: 5,
            base_ms: 1_000,
            max_ms: 300_000,
            lease_ms: 60_000,
            concurrency: 8,
            poll_ms: 200,
            shutdown_ms: 10_000,
            cache_dir: None,
        }
    }
}

/// Why one call failed, as the dispatcher needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Whether trying again later may succeed.
    pub retryable: bool,
    /// Not before this many milliseconds (a 429's `Retry-After`), if the vendor said so.
    pub retry_after_ms: Option<u64>,
    /// What went wrong (secrets already redacted).
    pub message: String,
}

/// One connector call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    pub connector: &'a str,
    pub op: &'a str,
    /// The arguments object, as JSON text.
    pub args: &'a str,
    /// The action id: the vendor's idempotency key.
    pub idempotency_key: &'a str,
    /// 1 for the first call.
    pub attempt: u32,
    /// Milliseconds since the Unix epoch after which the call must stop.
    pub deadline_ms: u64,
}

/// What runs connector calls. Its methods block (connector HTTP is blocking): the
/// dispatcher calls them on blocking threads.
pub trait Invoker: Send + Sync + 'static {
    /// Whether a connector of that name is configured.
    fn has(&self, connector: &str) -> bool;
    /// The connector's operations: each name with the JSON Schema of its arguments.
    fn operations(&self, connector: &str) -> Result<Vec<(String, Json)>, CallError>;
    /// Makes one call; the result is the connector's JSON text.
    fn invoke(&self, call: &Call<'_>) -> Result<String, CallError>;
    /// Whether calls to this connector are checked against its described operations
    /// (and positional arguments named after the operation's schema) before
    /// [`Invoker::invoke`]. False for calls handed on as decided, e.g. published to a
    /// broker for a worker elsewhere: their arguments go as the rule wrote them.
    fn checks_operations(&self, _connector: &str) -> bool {
        true
    }
}

/// An action that ended: what the engine applies, and how its row ends, to be
/// committed together.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub outcome: Outcome,
    pub settlement: Settlement,
}

// ------------------------------------------------------------------- scheduling

/// The backoff before attempt `attempt + 1`, after `attempt` failed calls:
/// `min(max_ms, base_ms · 2^(attempt-1))`, of which a random half is taken off
/// ("equal jitter": `jitter` in `[0, 1)` picks the point in `[d/2, d]`), so that calls
/// failing together do not all come back together.
pub fn backoff(attempt: u32, config: &DispatchConfig, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(62);
    let full = config
        .base_ms
        .saturating_mul(1u64 << exp)
        .min(config.max_ms.max(config.base_ms));
    let half = full / 2;
    let extra = (half as f64 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(full - half + extra.min(half))
}

/// When to try again (ms since the epoch) after `attempt` failed at `now_ms`: the
/// backoff, but never sooner than the vendor's `Retry-After`.
pub fn retry_at(
    now_ms: i64,
    attempt: u32,
    retry_after_ms: Option<u64>,
    config: &DispatchConfig,
    jitter: f64,
) -> i64 {
    let wait = backoff(attempt, config, jitter).as_millis() as u64;
    let wait = wait.max(retry_after_ms.unwrap_or(0));
    now_ms.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX))
}

/// A number in `[0, 1)`, different at each call (for jitter; not for secrets).
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms() as u64);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

// ------------------------------------------------------------------- arguments

/// The arguments object for an operation: rules may pass arguments by position
/// (`jira.comment(key, "text")` is recorded as `["CHG-1", "text"]`); they are named
/// after the operation's schema `properties`, in order. A trailing object of names the
/// positions did not fill is merged (`f(a, b: 1)` is recorded as `["a", {"b": 1}]`).
/// Named arguments (an object) are passed as they are.
pub fn map_args(args: &Json, schema: &Json, op: &str) -> Result<Json, String> {
    let Json::Array(items) = args else {
        return Ok(args.clone());
    };
    let Some(properties) = schema.get("properties").and_then(Json::as_object) else {
        return Err(format!(
            "operation `{op}` does not name its arguments, so positional arguments cannot be passed; name them"
        ));
    };
    let names: Vec<&String> = properties.keys().collect();
    let mut positional: &[Json] = items;
    let mut named: Option<&Map<String, Json>> = None;
    if let Some((Json::Object(last), rest)) = items.split_last() {
        let slot_is_object = names
            .get(rest.len())
            .and_then(|n| properties.get(*n))
            .and_then(|p| p.get("type"))
            .is_some_and(|t| t == "object");
        let fits = !last.is_empty()
            && last.keys().all(|k| {
                properties.contains_key(k) && !names[..rest.len().min(names.len())].contains(&k)
            });
        if fits && !slot_is_object {
            positional = rest;
            named = Some(last);
        }
    }
    if positional.len() > names.len() {
        return Err(format!(
            "operation `{op}` takes {} argument{}, {} given",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            positional.len()
        ));
    }
    let mut object = Map::new();
    for (name, value) in names.iter().zip(positional) {
        object.insert((*name).clone(), value.clone());
    }
    if let Some(named) = named {
        for (k, v) in named {
            object.insert(k.clone(), v.clone());
        }
    }
    Ok(Json::Object(object))
}

// ------------------------------------------------------------------- the loop

/// Each connector's operations with their argument schemas, described once.
type Schemas = Arc<Mutex<HashMap<String, Arc<HashMap<String, Json>>>>>;

/// Runs outbox actions until stopped. See the module documentation.
pub struct Dispatcher<S> {
    store: S,
    invoker: Arc<dyn Invoker>,
    config: DispatchConfig,
    lease_ms: u64,
    /// Each connector's operations and argument schemas, from its description.
    schemas: Schemas,
    finished: mpsc::Sender<Finished>,
}

impl<S: Store + Clone + Send + Sync + 'static> Dispatcher<S> {
    /// A dispatcher over `store`; finished actions are sent to `finished`. `lease_ms`
    /// is the configured lease, raised to `longest_call_ms` plus two seconds.
    pub fn new(
        store: S,
        invoker: Arc<dyn Invoker>,
        config: DispatchConfig,
        longest_call_ms: u64,
        finished: mpsc::Sender<Finished>,
    ) -> Self {
        let lease_ms = config.lease_ms.max(longest_call_ms.saturating_add(2_000));
        Dispatcher {
            store,
            invoker,
            config,
            lease_ms,
            schemas: Arc::new(Mutex::new(HashMap::new())),
            finished,
        }
    }

    fn handle(&self) -> Worker<S> {
        Worker {
            store: self.store.clone(),
            invoker: self.invoker.clone(),
            config: self.config.clone(),
            schemas: self.schemas.clone(),
            finished: self.finished.clone(),
        }
    }

    /// Claims and runs due actions until `stop` turns true; then waits for the calls in
    /// flight up to `shutdown_ms`, and returns. Store errors are reported and retried
    /// at the next poll: the dispatcher does not stop on them.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut running: JoinSet<()> = JoinSet::new();
        let poll = Duration::from_millis(self.config.poll_ms.max(10));
        let concurrency = self.config.concurrency.max(1) as usize;
        while !*stop.borrow() {
            let free = concurrency.saturating_sub(running.len());
            let mut claimed_any = false;
            if free > 0 {
                let now = now_ms();
                let lease_until =
                    now.saturating_add(i64::try_from(self.lease_ms).unwrap_or(i64::MAX));
                match self.store.claim_due(now, lease_until, free as u32).await {
                    Ok(claimed) => {
                        claimed_any = !claimed.is_empty();
                        for c in claimed {
                            running.spawn(self.handle().execute(c));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "dispatcher: claiming due actions: {e}"),
                }
            }
            if claimed_any && running.len() < concurrency {
                continue; // there may be more due right away
            }
            tokio::select! {
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(poll) => {}
                // The engine loop dropped its end: stop as if told to.
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        if !running.is_empty() {
            tracing::info!(
                in_flight = running.len(),
                "dispatcher: waiting up to {} ms for {} call(s) in flight",
                self.config.shutdown_ms,
                running.len()
            );
            let wait = Duration::from_millis(self.config.shutdown_ms);
            let all = async { while running.join_next().await.is_some() {} };
            if tokio::time::timeout(wait, all).await.is_err() {
                tracing::warn!(
                    in_flight = running.len(),
                    "dispatcher: {} call(s) still in flight; they are claimed again after their lease",
                    running.len()
                );
                running.abort_all();
            }
        }
    }
}

/// What one call needs, owned by its task.
struct Worker<S> {
    store: S,
    invoker: Arc<dyn Invoker>,
    config: DispatchConfig,
    schemas: Schemas,
    finished: mpsc::Sender<Finished>,
}

/// How a call went, before deciding what follows.
enum Ended {
    Done(Json),
    Failed(CallError),
}

/// Records a call's duration and outcome, and its error if it failed.
fn record(c: &Claimed, ended: &Ended, max_attempts: u32, took: Duration) {
    let outcome = match ended {
        Ended::Done(_) => "ok",
        Ended::Failed(e) if e.retryable && c.attempt < max_attempts => "retry",
        Ended::Failed(_) => "failed",
    };
    metrics::histogram!(
        metric::ACTION_DURATION,
        "connector" => c.connector.clone(),
        "op" => c.op.clone(),
        "outcome" => outcome,
    )
    .record(took.as_secs_f64());
    if let Ended::Failed(e) = ended {
        metrics::counter!(
            metric::CONNECTOR_ERRORS,
            "connector" => c.connector.clone(),
            "retryable" => if e.retryable { "true" } else { "false" },
        )
        .increment(1);
    }
}

impl<S: Store + Clone + Send + Sync + 'static> Worker<S> {
    async fn execute(self, c: Claimed) {
        let max = self.config.max_attempts.max(1);
        let ended = if c.attempt > max {
            // Claimed again after lease expiries (dispatchers that died mid-call).
            Ended::Failed(CallError {
                retryable: false,
                retry_after_ms: None,
                message: format!(
                    "gave up after {max} attempts: the last calls did not report back (the dispatcher stopped)"
                ),
            })
        } else {
            let began = std::time::Instant::now();
            let ended = self.call(&c).await;
            record(&c, &ended, max, began.elapsed());
            ended
        };
        match ended {
            Ended::Done(result) => self.finish(&c, Ok(result)).await,
            Ended::Failed(e) if e.retryable && c.attempt < max => {
                let due = retry_at(
                    now_ms(),
                    c.attempt,
                    e.retry_after_ms,
                    &self.config,
                    jitter(),
                );
                let wait = due - now_ms();
                tracing::warn!(
                    action = %c.action_id,
                    connector = %c.connector,
                    op = %c.op,
                    attempt = c.attempt,
                    error = %e.message,
                    "action {}: {}.{} attempt {} of {max} failed: {}; next try in {wait} ms",
                    c.action_id,
                    c.connector,
                    c.op,
                    c.attempt,
                    e.message
                );
                match self
                    .store
                    .schedule_retry(&c.action_id, c.attempt, due, &e.message)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => tracing::info!(
                        action = %c.action_id,
                        "action {}: claim lost (taken over after its lease); leaving it",
                        c.action_id
                    ),
                    Err(err) => tracing::warn!(
                        action = %c.action_id,
                        error = %err,
                        "action {}: could not schedule the retry ({err}); it is claimed again after its lease",
                        c.action_id
                    ),
                }
            }
            Ended::Failed(e) => {
                let reason = if e.retryable {
                    format!("gave up after {} attempts: {}", c.attempt, e.message)
                } else {
                    e.message
                };
                self.finish(&c, Err(reason)).await;
            }
        }
    }

    async fn finish(&self, c: &Claimed, result: Result<Json, String>) {
        let end = match &result {
            Ok(json) => SettledAs::Done {
                result: json.to_string(),
            },
            Err(reason) => SettledAs::Dead {
                reason: reason.clone(),
            },
        };
        let finished = Finished {
            outcome: Outcome {
                action_id: c.action_id.clone(),
                workflow: c.workflow.clone(),
                key: c.key.clone(),
                connector: c.connector.clone(),
                op: c.op.clone(),
                attempts: c.attempt,
                result,
            },
            settlement: Settlement {
                action_id: c.action_id.clone(),
                attempt: c.attempt,
                end,
            },
        };
        if self.finished.send(finished).await.is_err() {
            tracing::warn!(
                action = %c.action_id,
                "action {}: the engine loop is gone; the action is claimed again after its lease",
                c.action_id
            );
        }
    }

    async fn call(&self, c: &Claimed) -> Ended {
        let permanent = |message: String| {
            Ended::Failed(CallError {
                retryable: false,
                retry_after_ms: None,
                message,
            })
        };
        if !self.invoker.has(&c.connector) {
            return permanent(format!(
                "no connector `{}` is configured (add a [connectors.{}] table)",
                c.connector, c.connector
            ));
        }
        let args: Json = match serde_json::from_str(&c.args) {
            Ok(args) => args,
            Err(e) => return permanent(format!("stored arguments are not JSON: {e}")),
        };
        let args = if !self.invoker.checks_operations(&c.connector) {
            args
        } else {
            match self.schemas(&c.connector).await {
                Ok(ops) => match ops.get(&c.op) {
                    None => {
                        let mut names: Vec<&String> = ops.keys().collect();
                        names.sort();
                        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                        return permanent(format!(
                            "connector `{}` has no operation `{}` (it has {})",
                            c.connector,
                            c.op,
                            names.join(", ")
                        ));
                    }
                    Some(schema) => match map_args(&args, schema, &c.op) {
                        Ok(args) => args,
                        Err(e) => return permanent(e),
                    },
                },
                Err(e) => return Ended::Failed(e),
            }
        };
        let invoker = self.invoker.clone();
        let (connector, op, key) = (c.connector.clone(), c.op.clone(), c.action_id.clone());
        let attempt = c.attempt;
        // Stop the call before the lease ends, so no other dispatcher takes the row over
        // while it runs.
        let margin = (self.config.lease_ms / 10).clamp(500, 2_000) as i64;
        let deadline_ms = u64::try_from(c.lease_ms - margin).unwrap_or(1).max(1);
        let args = args.to_string();
        let call = tokio::task::spawn_blocking(move || {
            invoker.invoke(&Call {
                connector: &connector,
                op: &op,
                args: &args,
                idempotency_key: &key,
                attempt,
                deadline_ms,
            })
        })
        .await;
        match call {
            Ok(Ok(text)) => match serde_json::from_str(&text) {
                Ok(json) => Ended::Done(json),
                Err(e) => permanent(format!("connector result is not JSON: {e}")),
            },
            Ok(Err(e)) => Ended::Failed(e),
            Err(e) => Ended::Failed(CallError {
                retryable: true,
                retry_after_ms: None,
                message: format!("the call's thread failed: {e}"),
            }),
        }
    }

    /// The connector's operations, described once.
    async fn schemas(&self, connector: &str) -> Result<Arc<HashMap<String, Json>>, CallError> {
        if let Ok(cache) = self.schemas.lock()
            && let Some(ops) = cache.get(connector)
        {
            return Ok(ops.clone());
        }
        let invoker = self.invoker.clone();
        let name = connector.to_string();
        let ops = tokio::task::spawn_blocking(move || invoker.operations(&name))
            .await
            .map_err(|e| CallError {
                retryable: true,
                retry_after_ms: None,
                message: format!("describing the connector failed: {e}"),
            })??;
        let ops: Arc<HashMap<String, Json>> = Arc::new(ops.into_iter().collect());
        if let Ok(mut cache) = self.schemas.lock() {
            cache.insert(connector.to_string(), ops.clone());
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> DispatchConfig {
        DispatchConfig {
            base_ms: 100,
            max_ms: 1_000,
            ..DispatchConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = config();
        // Without jitter taken off (jitter 1.0 → the full delay).
        let full: Vec<u64> = (1..=7)
            .map(|a| backoff(a, &c, 1.0).as_millis() as u64)
            .collect();
        assert_eq!(full, [100, 200, 400, 800, 1000, 1000, 1000]);
        // Jitter 0 takes half off; never zero, never over the cap.
        let least: Vec<u64> = (1..=5)
            .map(|a| backoff(a, &c, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(least, [50, 100, 200, 400, 500]);
        assert_eq!(backoff(u32::MAX, &c, 0.5).as_millis(), 750);
        assert_eq!(backoff(0, &c, 1.0).as_millis(), 100);
    }

    #[test]
    fn jitter_spreads_within_the_window() {
        let c = config();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
            let d = backoff(3, &c, j).as_millis() as u64;
            assert!((200..=400).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(
            seen.len() > 50,
            "jitter hardly varies: {} values",
            seen.len()
        );
    }

    #[test]
    fn retry_after_is_never_undercut() {
        let c = config();
        // A vendor asking for 5 s is obeyed even past max_ms …
        assert_eq!(retry_at(1_000, 1, Some(5_000), &c, 0.0), 6_000);
        assert_eq!(retry_at(1_000, 4, Some(5_000), &c, 1.0), 6_000);
        // … and a shorter Retry-After does not shorten the backoff.
        assert_eq!(retry_at(1_000, 3, Some(10), &c, 1.0), 1_400);
        assert_eq!(retry_at(1_000, 1, None, &c, 0.0), 1_050);
    }

    fn schema() -> Json {
        json!({"type": "object", "properties": {
            "issue": {"type": "string"}, "body": {"type": "string"}, "fields": {"type": "object"}
        }})
    }

    #[test]
    fn positional_arguments_take_the_schema_order() {
        let s = schema();
        assert_eq!(
            map_args(&json!(["CHG-1", "text"]), &s, "comment"),
            Ok(json!({"issue": "CHG-1", "body": "text"}))
        );
        // Names stay as they are.
        let named = json!({"body": "x", "issue": "CHG-2"});
        assert_eq!(map_args(&named, &s, "comment"), Ok(named.clone()));
        // Mixed: positions first, then names.
        assert_eq!(
            map_args(&json!(["CHG-1", {"body": "b"}]), &s, "comment"),
            Ok(json!({"issue": "CHG-1", "body": "b"}))
        );
        // An object in an object-typed slot is a positional value, not names.
        assert_eq!(
            map_args(&json!(["CHG-1", "b", {"issue": "x"}]), &s, "comment"),
            Ok(json!({"issue": "CHG-1", "body": "b", "fields": {"issue": "x"}}))
        );
        assert_eq!(
            map_args(&json!([1, 2, 3, 4]), &s, "comment"),
            Err("operation `comment` takes 3 arguments, 4 given".into())
        );
        assert!(
            map_args(&json!(["a"]), &json!({"type": "object"}), "send")
                .unwrap_err()
                .contains("name them")
        );
    }
}
