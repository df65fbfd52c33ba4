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
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt store: {0}")]
    Corrupt(String),
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

/// A pending or executed outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub action_id: String,
    pub at: String,
    pub connector: String,
    pub op: String,
    pub args: String,
    pub status: String,
    pub attempts: i64,
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
