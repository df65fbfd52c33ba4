//! The scale-out store: PostgreSQL, with the same tables and semantics as SQLite.
//!
//! Every row also carries its partition, `part` (see [`PostgresStore::partition`]): a
//! `[cluster]` deployment's partitions share one schema's tables, each store reading
//! and writing its own partition's rows; a store outside `[cluster]` is partition 0.
//!
//! Each commit is one statement (arrays bound as parameters and expanded with
//! `UNNEST`, one data-modifying `WITH` part per table written) in a transaction of its
//! own, so a commit carrying thousands of rows costs one round trip; stores sharing a
//! [`GroupCommit`] send their commits together, as one statement. Times that must
//! come back exactly are split into a `timestamptz` truncated to the microsecond and the
//! nanoseconds below it.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Row};

use super::codec::{
    cadence_index, counter_index, decode_counter, decode_instance, decode_time, decode_timer,
    encode_time, workflow_of,
};
use super::{Claimed, DeadLetter, Meta, OutboxBacklog, OutboxRow, Settlement, Store, StoreError};
use crate::core::{Changes, Expectation, World};
use crate::decision::EvidenceRecord;
use crate::ruleset::Ruleset;

mod commit;

use commit::Rows;
pub use commit::{GroupCommit, MAX_IN_FLIGHT, metric};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections in the pool: the engine is one writer; reads (evidence, outbox) may
/// overlap a commit.
const POOL_SIZE: u32 = 4;

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    fence: Option<Fence>,
    /// Whether emitted events' outbox rows are left for a dispatcher to publish.
    dispatch_emitted: bool,
    /// The schema everything is kept in, if not the connection's default.
    schema: Option<String>,
    /// The committer this store's commits go through, and how its statements name
    /// this store's tables (`"schema".`); commits go through the pool without one.
    group: Option<(GroupCommit, String)>,
    /// The partition whose rows this store reads and writes (`part` in every table):
    /// a `[cluster]` partition's number, 0 outside `[cluster]`.
    part: i32,
}

/// Commits that hold only while another session holds an advisory lock: how a
/// `[cluster]` partition's store refuses writes once its process lost the partition.
///
/// The owner's session holds the session-level advisory lock `(namespace, held)`
/// exclusively (in `[cluster]`, its member lock: a process loses its partitions'
/// locks and its member lock together, when its control session ends). Each commit
/// transaction first takes the shared transaction lock `(barrier, key)`, then tries
/// the shared transaction lock `(namespace, held)`: refused while the owner holds it,
/// granted once the owner is gone, and then the commit is rolled back with
/// [`StoreError::Fenced`]. Trying a lock reads the server's lock table live (not
/// from the statement's snapshot) at the cost of one lookup; reading `pg_locks`
/// instead, as this did before, copies the whole lock table under every partition of
/// its lock (BENCHMARKS.md, "Intake, seventeenth day"). A new owner takes `(barrier,
/// key)` exclusively once before loading the partition, so every commit that passed
/// its check before the partition changed hands has ended by then, and is in what
/// the new owner loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub namespace: i32,
    /// The second key of the lock the owner's session holds.
    pub held: i32,
    pub barrier: i32,
    pub key: i32,
}

impl PostgresStore {
    /// Commits emitted events' outbox rows `pending`, for a dispatcher to publish,
    /// instead of `done` (see [`super::AnyStore::dispatch_emitted`]).
    pub fn dispatch_emitted(mut self, yes: bool) -> PostgresStore {
        self.dispatch_emitted = yes;
        self
    }

    /// Connects to `url` (`postgres://user@host:port/db`) and applies migrations to the
    /// connection's default schema.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        Self::open(options).await
    }

    /// Connects to `url` and keeps everything in `schema`, creating it if needed: the
    /// schema is the only one on the connections' `search_path`. `schema` is quoted as an
    /// identifier.
    pub async fn connect_schema(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        let created = sqlx::query(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .execute(&mut conn)
        .await;
        match created {
            // Another session created it at the same moment (the partitions of a
            // `[cluster]` deployment open their one schema together).
            Err(sqlx::Error::Database(e))
                if e.code().is_some_and(|c| c == "23505" || c == "42P06") => {}
            other => {
                other?;
            }
        }
        conn.close().await?;
        let store = Self::open(options.options([("search_path", quote_ident(schema))])).await?;
        Ok(PostgresStore {
            schema: Some(schema.to_string()),
            ..store
        })
    }

    /// Moves the rows of `old`, a schema of one partition as kept before partitions
    /// shared their tables (`NAME_pN`), into this store's partition, and drops `old`,
    /// in one transaction: whether there was such a schema. `old` is first brought
    /// to the current migrations. Call it while no one writes `old` or this partition
    /// (in `[cluster]`: holding the partition, before loading it).
    pub async fn adopt_schema(&self, url: &str, old: &str) -> Result<bool, StoreError> {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(old)
                .fetch_one(&self.pool)
                .await?;
        if !exists {
            return Ok(false);
        }
        let from = quote_ident(old);
        let options = PgConnectOptions::from_str(url)?
            .disable_statement_logging()
            .options([("search_path", from.as_str())]);
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        let to = match &self.schema {
            Some(schema) => format!("{}.", quote_ident(schema)),
            None => String::new(),
        };
        let mut tx = self.pool.begin().await?;
        for (table, columns, order) in ADOPTED {
            sqlx::query(&format!(
                "INSERT INTO {to}{table} (part, {columns}) \
                 SELECT $1, {columns} FROM {from}.{table}{order}"
            ))
            .bind(self.part)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!("DROP SCHEMA {from} CASCADE"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Drops `schema` and everything in it (for tests that isolate themselves in one).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(schema)
        ))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        Ok(())
    }

    async fn open(options: PgConnectOptions) -> Result<PostgresStore, StoreError> {
        // Steward logs its own slow work (see the SQLite store).
        let options = options.disable_statement_logging();
        // One connection first: an unreachable server is reported as such, not as a
        // pool timing out.
        sqlx::PgConnection::connect_with(&options)
            .await?
            .close()
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStore {
            pool,
            fence: None,
            dispatch_emitted: false,
            schema: None,
            group: None,
            part: 0,
        })
    }

    /// This store, its commits fenced by `fence`.
    pub fn fenced(mut self, fence: Fence) -> PostgresStore {
        self.fence = Some(fence);
        self
    }

    /// This store, its commits sent through `group` with those of the other stores
    /// sharing it (see [`GroupCommit`]).
    pub fn grouped(mut self, group: GroupCommit) -> PostgresStore {
        let tables = match &self.schema {
            Some(schema) => format!("{}.", quote_ident(schema)),
            None => String::new(),
        };
        self.group = Some((group, tables));
        self
    }

    /// This store, reading and writing the rows of partition `part` of its tables
    /// (each partition a world of its own; the default is 0).
    pub fn partition(mut self, part: u32) -> PostgresStore {
        self.part = i32::try_from(part).unwrap_or(i32::MAX);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Whether a store location names a PostgreSQL database rather than an SQLite file.
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// `url` with its password, if any, masked.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// What [`PostgresStore::adopt_schema`] copies: each table, its columns but `part`
/// (and but the numbers the target allocates: the outbox's `seq`, a dead letter's
/// `id`, given in the old order), and that order.
const ADOPTED: [(&str, &str, &str); 9] = [
    ("instances", "workflow, key, body", ""),
    ("timers", "id, due, due_ns, body", ""),
    ("seen_events", "source, id", ""),
    ("counters", "counter, key, body", ""),
    ("expectations", "cadence, period, due, due_ns, timer", ""),
    (
        "outbox",
        "action_id, at, at_ns, connector, op, args, status, attempts, last_error, \
         workflow, key, due_ms, lease_ms, result",
        " ORDER BY seq",
    ),
    ("evidence", "seq, at, kind, record, prev_hash, hash", ""),
    ("meta", "name, value", ""),
    (
        "dead_letters",
        "received_at, received_at_ns, origin, reason, body",
        " ORDER BY id",
    ),
];

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

/// A time as (microseconds, nanoseconds below the microsecond): `timestamptz` keeps
/// microseconds only.
fn split_time(t: DateTime<Utc>) -> (DateTime<Utc>, i16) {
    let nanos = t.nanosecond();
    let below = nanos % 1000;
    (t.with_nanosecond(nanos - below).unwrap_or(t), below as i16)
}

fn join_time(micros: DateTime<Utc>, below: i16) -> DateTime<Utc> {
    micros + TimeDelta::nanoseconds(i64::from(below))
}

impl Store for PostgresStore {
    async fn load(&self, rules: &Ruleset) -> Result<World, StoreError> {
        let mut world = World::default();
        let mut tx = self.pool.begin().await?;
        // One snapshot for the whole world.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        for row in sqlx::query("SELECT name, value FROM meta WHERE part = $1")
            .bind(self.part)
            .fetch_all(&mut *tx)
            .await?
        {
            let name: String = row.try_get("name")?;
            let value: String = row.try_get("value")?;
            match name.as_str() {
                "next_timer" => {
                    world.next_timer = value.parse().map_err(|_| corrupt("next_timer"))?
                }
                "chain_seq" => world.chain.seq = value.parse().map_err(|_| corrupt("chain_seq"))?,
                "chain_hash" => {
                    let bytes = hex::decode(&value).map_err(|_| corrupt("chain_hash"))?;
                    world.chain.hash =
                        bytes.try_into().map_err(|_| corrupt("chain_hash length"))?;
                }
                "now" => world.now = decode_time(&value),
                "cadences_scheduled" => world.cadences_scheduled = value == "true",
                _ => {}
            }
        }
        for row in sqlx::query("SELECT workflow, key, body FROM instances WHERE part = $1")
            .bind(self.part)
            .fetch_all(&mut *tx)
            .await?
        {
            let workflow: &str = row.try_get("workflow")?;
            let key: &str = row.try_get("key")?;
            let body = parse_json(row.try_get("body")?, "instance")?;
            if let Some(w) = workflow_of(rules, workflow)
                && let Some(inst) = decode_instance(rules, w, &body)
            {
                world.instances.insert((w, Arc::from(key)), inst);
            }
        }
        for row in sqlx::query(
            "SELECT id, due, due_ns, body FROM timers WHERE part = $1 ORDER BY due, due_ns, id",
        )
        .bind(self.part)
        .fetch_all(&mut *tx)
        .await?
        {
            let id: i64 = row.try_get("id")?;
            let due = join_time(row.try_get("due")?, row.try_get("due_ns")?);
            let body = parse_json(row.try_get("body")?, "timer")?;
            if let Some(kind) = decode_timer(rules, &body) {
                world.timers.insert((due, id as u64), kind);
            }
        }
        for row in sqlx::query("SELECT source, id FROM seen_events WHERE part = $1")
            .bind(self.part)
            .fetch_all(&mut *tx)
            .await?
        {
            world.seen.insert(
                row.try_get::<&str, _>("source")?,
                row.try_get::<&str, _>("id")?,
            );
        }
        for row in sqlx::query("SELECT counter, key, body FROM counters WHERE part = $1")
            .bind(self.part)
            .fetch_all(&mut *tx)
            .await?
        {
            let counter: &str = row.try_get("counter")?;
            let key: String = row.try_get("key")?;
            let body = parse_json(row.try_get("body")?, "counter")?;
            if let Some(c) = counter_index(rules, counter) {
                world.counters.insert((c, key), decode_counter(&body));
            }
        }
        for row in sqlx::query(
            "SELECT cadence, period, due, due_ns, timer FROM expectations WHERE part = $1",
        )
        .bind(self.part)
        .fetch_all(&mut *tx)
        .await?
        {
            let cadence: &str = row.try_get("cadence")?;
            let period: String = row.try_get("period")?;
            let due = join_time(row.try_get("due")?, row.try_get("due_ns")?);
            let timer: i64 = row.try_get("timer")?;
            if let Some(c) = cadence_index(rules, cadence) {
                world.expectations.insert(
                    (c, period),
                    Expectation {
                        due,
                        timer: timer as u64,
                    },
                );
            }
        }
        tx.commit().await?;
        Ok(world)
    }

    async fn commit(
        &self,
        rules: &Ruleset,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<(), StoreError> {
        self.commit_settled(rules, changes, meta, &[]).await
    }

    async fn commit_settled(
        &self,
        rules: &Ruleset,
        changes: &Changes,
        meta: &Meta,
        settled: &[Settlement],
    ) -> Result<(), StoreError> {
        let tables = self
            .group
            .as_ref()
            .map_or("", |(_, tables)| tables.as_str());
        let mut rows = Rows::new(tables, self.part, self.fence);
        rows.instances(rules, changes);
        rows.timers(rules, changes);
        rows.seen(changes);
        rows.counters(rules, changes);
        rows.expectations(rules, changes);
        rows.evidence(changes);
        rows.outbox(changes, self.dispatch_emitted);
        rows.settled(settled);
        rows.meta(meta);
        let held = match &self.group {
            Some((group, _)) => group.commit(rows.into_owned()).await?,
            None => commit::execute(&self.pool, &[&rows]).await?[0],
        };
        if held {
            Ok(())
        } else {
            Err(StoreError::Fenced)
        }
    }

    async fn evidence(&self, after: u64) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, record, prev_hash, hash FROM evidence \
             WHERE part = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(self.part)
        .bind(after as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(super::evidence_from_row).collect()
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let (at, ns) = split_time(letter.received_at);
        sqlx::query(
            "INSERT INTO dead_letters (received_at, received_at_ns, origin, reason, body, part) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(at)
        .bind(ns)
        .bind(&letter.origin)
        .bind(&letter.reason)
        .bind(&letter.body)
        .bind(self.part)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT received_at, received_at_ns, origin, reason, body FROM dead_letters \
             WHERE part = $1 ORDER BY id",
        )
        .bind(self.part)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeadLetter {
                    received_at: join_time(
                        row.try_get("received_at")?,
                        row.try_get("received_at_ns")?,
                    ),
                    origin: row.try_get("origin")?,
                    reason: row.try_get("reason")?,
                    body: row.try_get("body")?,
                })
            })
            .collect()
    }

    async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT action_id, at, at_ns, connector, op, args, status, attempts, workflow, key, \
             due_ms, lease_ms, last_error, result FROM outbox WHERE part = $1 \
             ORDER BY at, at_ns, action_id",
        )
        .bind(self.part)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let at = encode_time(join_time(row.try_get("at")?, row.try_get("at_ns")?));
                super::outbox_lifecycle_from_row(row, at)
            })
            .collect()
    }

    async fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        // Rows another dispatcher is claiming right now are skipped, not waited for.
        // An instance's actions go one at a time, in decision order (`seq`): a row
        // waits while an earlier one of its instance is unsettled (a row another
        // dispatcher is claiming is still `pending` to this snapshot, so it blocks too).
        // The claimed rows are chosen once (`MATERIALIZED`): a plan scanning them again
        // for each row updated would skip the rows it just updated and claim more.
        let rows = sqlx::query(
            "WITH c AS MATERIALIZED (SELECT q.action_id FROM outbox q \
                   WHERE q.part = $4 \
                     AND ((q.status IN ('pending', 'retry') AND q.due_ms <= $2) \
                      OR (q.status = 'in_flight' AND q.lease_ms <= $2)) \
                     AND (q.workflow IS NULL OR NOT EXISTS (SELECT 1 FROM outbox p \
                       WHERE p.part = q.part AND p.workflow = q.workflow AND p.key = q.key \
                         AND p.status IN ('pending', 'retry', 'in_flight') AND p.seq < q.seq)) \
                   ORDER BY q.due_ms, q.at, q.at_ns, q.action_id LIMIT $3 \
                   FOR UPDATE SKIP LOCKED) \
             UPDATE outbox o SET status = 'in_flight', attempts = o.attempts + 1, lease_ms = $1 \
             FROM c WHERE o.part = $4 AND o.action_id = c.action_id \
             RETURNING o.action_id, o.workflow, o.key, o.connector, o.op, o.args, o.attempts, \
                       o.due_ms, o.at, o.at_ns",
        )
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .bind(self.part)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let at = join_time(row.try_get("at")?, row.try_get("at_ns")?);
            let order = (row.try_get::<i64, _>("due_ms")?, at);
            claimed.push((order, super::claimed_from_row(row, lease_until_ms)?));
        }
        claimed.sort_by(|a, b| (&a.0, &a.1.action_id).cmp(&(&b.0, &b.1.action_id)));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    async fn schedule_retry(
        &self,
        action_id: &str,
        attempt: u32,
        due_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'retry', due_ms = $1, last_error = $2, lease_ms = NULL \
             WHERE part = $5 AND action_id = $3 AND status = 'in_flight' AND attempts = $4",
        )
        .bind(due_ms)
        .bind(error)
        .bind(action_id)
        .bind(i64::from(attempt))
        .bind(self.part)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_holds(&self, action_id: &str, attempt: u32) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS held FROM outbox \
             WHERE part = $3 AND action_id = $1 AND status = 'in_flight' AND attempts = $2",
        )
        .bind(action_id)
        .bind(i64::from(attempt))
        .bind(self.part)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS open, \
             min(CASE status WHEN 'in_flight' THEN lease_ms ELSE due_ms END) AS next_ms \
             FROM outbox WHERE part = $1 AND status IN ('pending', 'retry', 'in_flight')",
        )
        .bind(self.part)
        .fetch_one(&self.pool)
        .await?;
        let open: i64 = row.try_get("open")?;
        Ok(OutboxBacklog {
            open: u64::try_from(open).unwrap_or(0),
            next_ms: row.try_get("next_ms")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_split_and_join_exactly() {
        for text in [
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.123456789Z",
            "1969-12-31T23:59:59.000000001Z",
            "1999-01-01T00:00:00.999999999Z",
        ] {
            let t = decode_time(text).unwrap();
            let (micros, ns) = split_time(t);
            assert_eq!(micros.nanosecond() % 1000, 0);
            assert!((0..1000).contains(&ns));
            assert_eq!(join_time(micros, ns), t);
            assert_eq!(encode_time(join_time(micros, ns)), text);
        }
    }

    #[test]
    fn urls_select_postgres() {
        assert!(is_url("postgres://u@h/db"));
        assert!(is_url("postgresql://h/db"));
        assert!(!is_url("steward.db"));
        assert!(!is_url("/var/lib/postgres/steward.db"));
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgresql://h/db?x=a@b"), "postgresql://h/db?x=a@b");
    }
}
