//! Persistence of the core's world.
//!
//! A [`Store`] loads the whole [`World`] at start and commits each batch of
//! [`Changes`] in one transaction: instances, timers, seen event ids, counters,
//! expectations, evidence and outbox together, so a crash never splits a decision from
//! its effects. SQLite is the embedded default ([`sqlite::SqliteStore`]); PostgreSQL
//! ([`postgres::PostgresStore`]) implements the same trait for scale-out, and
//! [`AnyStore`] is whichever of the two a location names.

pub mod codec;
pub mod postgres;
pub mod sqlite;

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::core::{Changes, World};
use crate::decision::{ChainHead, EvidenceRecord};
use crate::ruleset::Ruleset;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A SQLite commit's failure (commits bypass sqlx, see [`sqlite::SqliteStore`]).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error(
        "this process no longer owns the partition (its lock was lost); the commit was refused"
    )]
    Fenced,
    /// The failure of a group commit, reported to every commit in the group (see
    /// [`postgres::GroupCommit`]).
    #[error("{0}")]
    Group(std::sync::Arc<StoreError>),
}

/// The world's scalar state, written with every commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub next_timer: u64,
    pub chain: ChainHead,
    pub now: Option<DateTime<Utc>>,
    pub cadences_scheduled: bool,
}

impl Meta {
    pub fn of(world: &World) -> Meta {
        Meta {
            next_timer: world.next_timer,
            chain: world.chain.clone(),
            now: world.now,
            cadences_scheduled: world.cadences_scheduled,
        }
    }
}

/// An outbox row, whatever its status.
///
/// `status` is `pending` (not tried yet), `in_flight` (claimed by a dispatcher until
/// `lease_ms`), `retry` (tried `attempts` times, due again at `due_ms`), `done`
/// (`result` holds the connector's JSON) or `dead` (given up; `last_error` says why).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub action_id: String,
    pub at: String,
    pub connector: String,
    pub op: String,
    pub args: String,
    pub status: String,
    pub attempts: i64,
    /// The workflow and key of the instance that decided the action, if any.
    pub workflow: Option<String>,
    pub key: Option<String>,
    /// Not tried before this time (milliseconds since the Unix epoch).
    pub due_ms: i64,
    /// While `in_flight`: the claim expires at this time (ms since the epoch).
    pub lease_ms: Option<i64>,
    /// The last error (`retry`), or why the action was given up (`dead`).
    pub last_error: Option<String>,
    /// The connector's result JSON (`done`).
    pub result: Option<String>,
}

/// An outbox row claimed by a dispatcher for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The action id: the call's idempotency key.
    pub action_id: String,
    /// Where the outcome goes: the deciding instance's workflow and key, if any.
    pub workflow: Option<String>,
    pub key: Option<String>,
    pub connector: String,
    pub op: String,
    /// The arguments as decided (JSON text).
    pub args: String,
    /// Which attempt this claim is: 1 for the first call. A claim taken over from a
    /// dispatcher whose lease expired counts as a new attempt.
    pub attempt: u32,
    /// The claim holds until this time (ms since the epoch); after it, another
    /// dispatcher may take the row over.
    pub lease_ms: i64,
}

/// How a claimed action ended, written in the same transaction as the decisions its
/// outcome produced ([`Store::commit_settled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub action_id: String,
    /// The attempt that ended it (the claim's).
    pub attempt: u32,
    pub end: SettledAs,
}

/// The final status of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettledAs {
    /// Executed; the connector's result JSON.
    Done { result: String },
    /// Given up, with the reason.
    Dead { reason: String },
}

/// What is left to dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    /// Rows pending, in flight or waiting for a retry.
    pub open: u64,
    /// The earliest time one of them is due (or its lease expires), ms since the epoch.
    pub next_ms: Option<i64>,
}

pub trait Store {
    /// Loads the world, mapping stored names to the ruleset's indices; state that
    /// belongs to workflows, cadences or counters no longer in the rules is skipped.
    fn load(&self, rules: &Ruleset) -> impl Future<Output = Result<World, StoreError>> + Send;

    /// Commits one batch atomically.
    fn commit(
        &self,
        rules: &Ruleset,
        changes: &Changes,
        meta: &Meta,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Evidence records with `seq > after`, in order.
    fn evidence(
        &self,
        after: u64,
    ) -> impl Future<Output = Result<Vec<EvidenceRecord>, StoreError>> + Send;

    /// Keeps an unusable input with its reason.
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Dead letters, oldest first.
    fn dead_letters(&self) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;

    /// Outbox rows, oldest first.
    fn outbox(&self) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;

    /// Claims up to `limit` due actions for one call each: `pending` and `retry` rows
    /// due at `now_ms`, and `in_flight` rows whose lease expired (a dispatcher that
    /// died). Each claimed row becomes `in_flight` until `lease_until_ms`, its attempt
    /// count one higher. A row is never held by two unexpired claims, so there is at
    /// most one call in flight per action id. PostgreSQL claims with
    /// `FOR UPDATE SKIP LOCKED`.
    fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Puts a claimed action back for another try at `due_ms`, keeping the error.
    /// False when the claim `attempt` no longer holds the row (it was taken over or
    /// settled): nothing is changed then.
    fn schedule_retry(
        &self,
        action_id: &str,
        attempt: u32,
        due_ms: i64,
        error: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Commits one batch like [`Store::commit`] and, in the same transaction, ends the
    /// settled actions (`done` with the result, or `dead` with the reason), so an
    /// outcome's evidence and the end of its action are never split. A row already
    /// done or dead is left as it is.
    fn commit_settled(
        &self,
        rules: &Ruleset,
        changes: &Changes,
        meta: &Meta,
        settled: &[Settlement],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many actions are still to dispatch, and when the next is due.
    fn outbox_backlog(&self) -> impl Future<Output = Result<OutboxBacklog, StoreError>> + Send;

    /// Whether the claim `attempt` still holds the action's row (in flight, not taken
    /// over): an outcome from a claim that no longer holds is stale and not applied.
    fn claim_holds(
        &self,
        action_id: &str,
        attempt: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// An input that could not be used, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub received_at: DateTime<Utc>,
    pub origin: String,
    pub reason: String,
    pub body: String,
}

/// Either backend, chosen by a location: a `postgres://` or `postgresql://` URL is a
/// PostgreSQL database, anything else the path of an SQLite file.
#[derive(Clone)]
pub enum AnyStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl AnyStore {
    /// Opens the store `location` names, applying migrations.
    pub async fn open(location: &std::path::Path) -> Result<AnyStore, StoreError> {
        match location.to_str() {
            Some(url) if postgres::is_url(url) => Ok(AnyStore::Postgres(
                postgres::PostgresStore::connect(url).await?,
            )),
            _ => Ok(AnyStore::Sqlite(sqlite::SqliteStore::open(location).await?)),
        }
    }

    /// From now on, the outbox rows of emitted events (connector `steward`, op `emit`)
    /// are committed `pending`, for the dispatcher to publish them, instead of `done`
    /// (emitted events are always fed back into the engine when decided).
    pub fn dispatch_emitted(self, yes: bool) -> AnyStore {
        match self {
            AnyStore::Sqlite(s) => AnyStore::Sqlite(s.dispatch_emitted(yes)),
            AnyStore::Postgres(s) => AnyStore::Postgres(s.dispatch_emitted(yes)),
        }
    }

    /// `location` fit for messages: a URL's password is masked.
    pub fn describe(location: &std::path::Path) -> String {
        match location.to_str() {
            Some(url) if postgres::is_url(url) => postgres::redact(url),
            _ => location.display().to_string(),
        }
    }
}

impl Store for AnyStore {
    async fn load(&self, rules: &Ruleset) -> Result<World, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.load(rules).await,
            AnyStore::Postgres(s) => s.load(rules).await,
        }
    }

    async fn commit(
        &self,
        rules: &Ruleset,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.commit(rules, changes, meta).await,
            AnyStore::Postgres(s) => s.commit(rules, changes, meta).await,
        }
    }

    async fn evidence(&self, after: u64) -> Result<Vec<EvidenceRecord>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.evidence(after).await,
            AnyStore::Postgres(s) => s.evidence(after).await,
        }
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.dead_letter(letter).await,
            AnyStore::Postgres(s) => s.dead_letter(letter).await,
        }
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.dead_letters().await,
            AnyStore::Postgres(s) => s.dead_letters().await,
        }
    }

    async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.outbox().await,
            AnyStore::Postgres(s) => s.outbox().await,
        }
    }

    async fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.claim_due(now_ms, lease_until_ms, limit).await,
            AnyStore::Postgres(s) => s.claim_due(now_ms, lease_until_ms, limit).await,
        }
    }

    async fn schedule_retry(
        &self,
        action_id: &str,
        attempt: u32,
        due_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.schedule_retry(action_id, attempt, due_ms, error).await,
            AnyStore::Postgres(s) => s.schedule_retry(action_id, attempt, due_ms, error).await,
        }
    }

    async fn commit_settled(
        &self,
        rules: &Ruleset,
        changes: &Changes,
        meta: &Meta,
        settled: &[Settlement],
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.commit_settled(rules, changes, meta, settled).await,
            AnyStore::Postgres(s) => s.commit_settled(rules, changes, meta, settled).await,
        }
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.outbox_backlog().await,
            AnyStore::Postgres(s) => s.outbox_backlog().await,
        }
    }

    async fn claim_holds(&self, action_id: &str, attempt: u32) -> Result<bool, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.claim_holds(action_id, attempt).await,
            AnyStore::Postgres(s) => s.claim_holds(action_id, attempt).await,
        }
    }
}

/// The workflow and key of each action decided in `changes`, read from its `action`
/// evidence record (decided in the same batch): the outbox row keeps them so the
/// action's outcome goes back to the instance that decided it.
pub(crate) fn outbox_routes(
    changes: &Changes,
) -> std::collections::HashMap<String, (Option<String>, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Route {
        action_id: Option<String>,
        workflow: Option<String>,
        key: Option<String>,
    }
    let mut routes = std::collections::HashMap::new();
    if changes.outbox.is_empty() {
        return routes;
    }
    for record in changes.evidence.iter().filter(|r| r.kind == "action") {
        if let Ok(Route {
            action_id: Some(id),
            workflow,
            key,
        }) = serde_json::from_str(&record.record)
        {
            routes.insert(id, (workflow, key));
        }
    }
    routes
}

/// Whether an outbox entry is something a dispatcher runs: emitted events are fed back
/// into the engine when decided, so their rows are done from the start, unless they
/// are also published (`dispatch_emitted`, see [`AnyStore::dispatch_emitted`]).
pub(crate) fn dispatched(connector: &str, op: &str, dispatch_emitted: bool) -> bool {
    dispatch_emitted || !(connector == "steward" && op == "emit")
}

/// Reads an `outbox` row; both backends keep the same lifecycle columns.
pub(crate) fn outbox_lifecycle_from_row<R>(row: &R, at: String) -> Result<OutboxRow, StoreError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OutboxRow {
        action_id: row.try_get("action_id")?,
        at,
        connector: row.try_get("connector")?,
        op: row.try_get("op")?,
        args: row.try_get("args")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        workflow: row.try_get("workflow")?,
        key: row.try_get("key")?,
        due_ms: row.try_get("due_ms")?,
        lease_ms: row.try_get("lease_ms")?,
        last_error: row.try_get("last_error")?,
        result: row.try_get("result")?,
    })
}

/// Reads a claimed row (`action_id, workflow, key, connector, op, args, attempts`).
pub(crate) fn claimed_from_row<R>(row: &R, lease_ms: i64) -> Result<Claimed, StoreError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Claimed {
        action_id: row.try_get("action_id")?,
        workflow: row.try_get("workflow")?,
        key: row.try_get("key")?,
        connector: row.try_get("connector")?,
        op: row.try_get("op")?,
        args: row.try_get("args")?,
        attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
        lease_ms,
    })
}

/// Reads an `evidence` row; both backends store it with the same columns and types.
pub(crate) fn evidence_from_row<R>(row: &R) -> Result<EvidenceRecord, StoreError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EvidenceRecord {
        seq: row.try_get::<i64, _>("seq")? as u64,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        record: row.try_get("record")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
