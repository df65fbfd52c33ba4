//! The scale-out store: PostgreSQL, with the same tables and semantics as SQLite.
//!
//! Each commit is one statement (arrays bound as parameters and expanded with
//! `UNNEST`, one data-modifying `WITH` part per table written) in a transaction of its
//! own, so a commit carrying thousands of rows costs one round trip. Times that must
//! come back exactly are split into a `timestamptz` truncated to the microsecond and the
//! nanoseconds below it.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres, QueryBuilder, Row};

use super::codec::{
    cadence_index, counter_index, decode_counter, decode_instance, decode_time, decode_timer,
    encode_counter, encode_instance, encode_time, encode_timer, workflow_of,
};
use super::{
    Claimed, DeadLetter, Meta, OutboxBacklog, OutboxRow, SettledAs, Settlement, Store, StoreError,
};
use crate::core::{Changes, Expectation, World};
use crate::decision::EvidenceRecord;
use crate::ruleset::Ruleset;

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
}

/// Commits that hold only while another session holds an advisory lock: how a
/// `[cluster]` partition's store refuses writes once its process lost the partition.
///
/// Each commit transaction first takes the shared transaction lock
/// `(barrier, key)`, then checks that session `pid` still holds `(namespace, key)`;
/// if not, the commit is rolled back with [`StoreError::Fenced`]. A new owner takes
/// `(barrier, key)` exclusively once before loading the partition, so every commit
/// that passed its check before the lock changed hands has ended by then, and is in
/// what the new owner loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub namespace: i32,
    pub barrier: i32,
    pub key: i32,
    /// The backend pid of the session holding the ownership lock.
    pub pid: i32,
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
        sqlx::query(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        Self::open(options.options([("search_path", quote_ident(schema))])).await
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
        })
    }

    /// This store, its commits fenced by `fence`.
    pub fn fenced(mut self, fence: Fence) -> PostgresStore {
        self.fence = Some(fence);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Appends `UNNEST($n::type, …)` to a commit statement, binding each array.
macro_rules! unnest {
    ($q:expr, $($array:expr => $ty:literal),+ $(,)?) => {{
        $q.push("UNNEST(");
        let mut separator = "";
        $(
            $q.push(separator);
            $q.push_bind($array);
            $q.push(concat!("::", $ty));
            separator = ", ";
        )+
        let _ = separator;
        $q.push(")");
    }};
}

/// A commit as one statement, so one round trip, in a transaction of its own.
///
/// It starts with the part `fence`, whose one row says whether the commit may write;
/// each table the batch writes adds a data-modifying `WITH` part (only those), fed by
/// arrays expanded with `UNNEST` and gated on `fence.held`. PostgreSQL runs every part
/// to completion whether or not it is read; the final `SELECT` returns `held`, so
/// false means the commit was refused and nothing was written. Parts on one table never
/// touch the same row: one statement cannot see or change what another part of it
/// wrote (see [`CommitStatement::timers`] and [`CommitStatement::settled`]).
struct CommitStatement<'q> {
    q: QueryBuilder<'q, Postgres>,
}

impl<'q> CommitStatement<'q> {
    fn new(fence: Option<Fence>) -> CommitStatement<'q> {
        let mut q = QueryBuilder::new("WITH fence AS (");
        match fence {
            // The shared barrier lock first, then whether the owner's session still
            // holds the partition (`pg_locks` is read live, not from the snapshot).
            Some(fence) => {
                q.push(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks \
                       WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = ",
                );
                q.push_bind(i64::from(fence.namespace));
                q.push(" AND objid::bigint = ");
                q.push_bind(i64::from(fence.key));
                q.push(" AND pid = ");
                q.push_bind(fence.pid);
                q.push(
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
                     AS held FROM (SELECT pg_advisory_xact_lock_shared(",
                );
                q.push_bind(fence.barrier);
                q.push(", ");
                q.push_bind(fence.key);
                q.push(")) AS barrier");
            }
            None => {
                q.push("SELECT true AS held");
            }
        }
        q.push(")");
        CommitStatement { q }
    }

    /// Instances written and finished: the map has each key once, so the two parts
    /// are disjoint.
    fn instances(&mut self, rules: &'q Ruleset, changes: &'q Changes) {
        let (mut put_w, mut put_k, mut put_b) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_w, mut del_k) = (Vec::new(), Vec::new());
        for ((w, key), inst) in &changes.instances {
            let workflow = rules.workflows[*w].name.as_str();
            match inst {
                Some(inst) => {
                    put_w.push(workflow);
                    put_k.push(key.as_ref());
                    put_b.push(encode_instance(rules, *w, inst));
                }
                None => {
                    del_w.push(workflow);
                    del_k.push(key.as_ref());
                }
            }
        }
        let q = &mut self.q;
        if !put_w.is_empty() {
            q.push(
                ", put_instances AS (INSERT INTO instances (workflow, key, body) SELECT * FROM ",
            );
            unnest!(q, put_w => "text[]", put_k => "text[]", put_b => "text[]");
            q.push(
                " WHERE (SELECT held FROM fence) \
                 ON CONFLICT (workflow, key) DO UPDATE SET body = EXCLUDED.body)",
            );
        }
        if !del_w.is_empty() {
            self.delete_pairs("instances", ["workflow", "key"], [del_w, del_k]);
        }
    }

    /// Timers set and cancelled. A timer set and cancelled within the batch is in
    /// neither part (the delete would not see the insert).
    fn timers(&mut self, rules: &'q Ruleset, changes: &'q Changes) {
        // Only a batch that both sets and cancels timers needs to match them up.
        let both = !changes.timers_added.is_empty() && !changes.timers_removed.is_empty();
        let ids_of = |ids: &mut dyn Iterator<Item = u64>| -> HashSet<u64> {
            if both { ids.collect() } else { HashSet::new() }
        };
        let cancelled = ids_of(&mut changes.timers_removed.iter().copied());
        let set = ids_of(&mut changes.timers_added.iter().map(|t| t.id));
        let (mut ids, mut dues, mut nss, mut bodies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for timer in &changes.timers_added {
            if cancelled.contains(&timer.id) {
                continue;
            }
            let (due, ns) = split_time(timer.due);
            ids.push(timer.id as i64);
            dues.push(due);
            nss.push(ns);
            bodies.push(encode_timer(rules, &timer.kind).to_string());
        }
        let gone: Vec<i64> = changes
            .timers_removed
            .iter()
            .filter(|id| !set.contains(id))
            .map(|&id| id as i64)
            .collect();
        let q = &mut self.q;
        if !ids.is_empty() {
            q.push(", put_timers AS (INSERT INTO timers (id, due, due_ns, body) SELECT * FROM ");
            unnest!(q, ids => "int8[]", dues => "timestamptz[]", nss => "int2[]", bodies => "text[]");
            q.push(" WHERE (SELECT held FROM fence))");
        }
        if !gone.is_empty() {
            q.push(", del_timers AS (DELETE FROM timers WHERE id = ANY(");
            q.push_bind(gone);
            q.push("::int8[]) AND (SELECT held FROM fence))");
        }
    }

    fn seen(&mut self, changes: &'q Changes) {
        if changes.seen.is_empty() {
            return;
        }
        let sources: Vec<&str> = changes.seen.iter().map(|s| s.source.as_ref()).collect();
        let ids: Vec<&str> = changes.seen.iter().map(|s| s.id.as_ref()).collect();
        let q = &mut self.q;
        q.push(", put_seen AS (INSERT INTO seen_events (source, id) SELECT * FROM ");
        unnest!(q, sources => "text[]", ids => "text[]");
        q.push(" WHERE (SELECT held FROM fence))");
    }

    fn counters(&mut self, rules: &'q Ruleset, changes: &'q Changes) {
        if changes.counters.is_empty() {
            return;
        }
        let (mut names, mut keys, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
        for ((c, key), state) in &changes.counters {
            names.push(rules.counters[*c].name.as_str());
            keys.push(key.as_str());
            bodies.push(encode_counter(state).to_string());
        }
        let q = &mut self.q;
        q.push(", put_counters AS (INSERT INTO counters (counter, key, body) SELECT * FROM ");
        unnest!(q, names => "text[]", keys => "text[]", bodies => "text[]");
        q.push(
            " WHERE (SELECT held FROM fence) \
             ON CONFLICT (counter, key) DO UPDATE SET body = EXCLUDED.body)",
        );
    }

    /// Cadence expectations set and met: keyed by a map, so disjoint.
    fn expectations(&mut self, rules: &'q Ruleset, changes: &'q Changes) {
        let (mut put_c, mut put_p, mut put_due, mut put_ns, mut put_t) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut del_c, mut del_p) = (Vec::new(), Vec::new());
        for ((c, period), exp) in &changes.expectations {
            let cadence = rules.cadences[*c].name.as_str();
            match exp {
                Some(exp) => {
                    let (due, ns) = split_time(exp.due);
                    put_c.push(cadence);
                    put_p.push(period.as_str());
                    put_due.push(due);
                    put_ns.push(ns);
                    put_t.push(exp.timer as i64);
                }
                None => {
                    del_c.push(cadence);
                    del_p.push(period.as_str());
                }
            }
        }
        let q = &mut self.q;
        if !put_c.is_empty() {
            q.push(
                ", put_expectations AS (INSERT INTO expectations (cadence, period, due, due_ns, timer) \
                 SELECT * FROM ",
            );
            unnest!(q, put_c => "text[]", put_p => "text[]", put_due => "timestamptz[]",
                put_ns => "int2[]", put_t => "int8[]");
            q.push(
                " WHERE (SELECT held FROM fence) ON CONFLICT (cadence, period) DO UPDATE \
                 SET due = EXCLUDED.due, due_ns = EXCLUDED.due_ns, timer = EXCLUDED.timer)",
            );
        }
        if !del_c.is_empty() {
            self.delete_pairs("expectations", ["cadence", "period"], [del_c, del_p]);
        }
    }

    fn evidence(&mut self, changes: &'q Changes) {
        let ev = &changes.evidence;
        if ev.is_empty() {
            return;
        }
        let seqs: Vec<i64> = ev.iter().map(|r| r.seq as i64).collect();
        let ats: Vec<&str> = ev.iter().map(|r| r.at.as_str()).collect();
        let kinds: Vec<&str> = ev.iter().map(|r| r.kind.as_str()).collect();
        let records: Vec<&str> = ev.iter().map(|r| r.record.as_str()).collect();
        let prevs: Vec<&str> = ev.iter().map(|r| r.prev_hash.as_str()).collect();
        let hashes: Vec<&str> = ev.iter().map(|r| r.hash.as_str()).collect();
        let q = &mut self.q;
        q.push(
            ", put_evidence AS (INSERT INTO evidence (seq, at, kind, record, prev_hash, hash) \
             SELECT * FROM ",
        );
        unnest!(q, seqs => "int8[]", ats => "text[]", kinds => "text[]",
            records => "text[]", prevs => "text[]", hashes => "text[]");
        q.push(" WHERE (SELECT held FROM fence))");
    }

    /// New outbox rows, in decision order, so `seq` (per-instance dispatch order)
    /// follows it.
    fn outbox(&mut self, changes: &'q Changes, dispatch_emitted: bool) {
        let n = changes.outbox.len();
        if n == 0 {
            return;
        }
        let (mut ids, mut ats, mut nss, mut connectors, mut ops, mut args) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut workflows, mut keys, mut statuses) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut routes = super::outbox_routes(changes);
        for o in &changes.outbox {
            let (at, ns) = split_time(o.at);
            ids.push(o.action_id.as_str());
            ats.push(at);
            nss.push(ns);
            connectors.push(o.connector.as_str());
            ops.push(o.op.as_str());
            args.push(o.args.to_string());
            let (workflow, key) = routes.remove(&o.action_id).unwrap_or_default();
            workflows.push(workflow);
            keys.push(key);
            statuses.push(
                if super::dispatched(&o.connector, &o.op, dispatch_emitted) {
                    "pending"
                } else {
                    "done"
                },
            );
        }
        let q = &mut self.q;
        q.push(
            ", put_outbox AS (INSERT INTO outbox \
             (action_id, at, at_ns, connector, op, args, workflow, key, status) \
             SELECT a, t, n, c, o, g, w, k, s FROM ",
        );
        unnest!(q, ids => "text[]", ats => "timestamptz[]", nss => "int2[]",
            connectors => "text[]", ops => "text[]", args => "text[]",
            workflows => "text[]", keys => "text[]", statuses => "text[]");
        q.push(
            " WITH ORDINALITY AS u(a, t, n, c, o, g, w, k, s, i) \
             WHERE (SELECT held FROM fence) ORDER BY i ON CONFLICT DO NOTHING)",
        );
    }

    /// The ends of actions. Their rows were committed, and claimed, by earlier
    /// commits: never one this statement inserts.
    fn settled(&mut self, settled: &'q [Settlement]) {
        if settled.is_empty() {
            return;
        }
        let n = settled.len();
        let (mut ids, mut statuses, mut results, mut reasons, mut attempts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for s in settled {
            let (status, result, reason) = match &s.end {
                SettledAs::Done { result } => ("done", Some(result.as_str()), None),
                SettledAs::Dead { reason } => ("dead", None, Some(reason.as_str())),
            };
            ids.push(s.action_id.as_str());
            statuses.push(status);
            results.push(result);
            reasons.push(reason);
            attempts.push(i64::from(s.attempt));
        }
        let q = &mut self.q;
        q.push(
            ", end_outbox AS (UPDATE outbox o SET status = e.status, result = e.result, \
             last_error = coalesce(e.reason, o.last_error), \
             attempts = greatest(o.attempts, e.attempt), lease_ms = NULL FROM ",
        );
        unnest!(q, ids => "text[]", statuses => "text[]", results => "text[]",
            reasons => "text[]", attempts => "int8[]");
        q.push(
            " AS e(action_id, status, result, reason, attempt) \
             WHERE o.action_id = e.action_id AND o.status NOT IN ('done', 'dead') \
             AND (SELECT held FROM fence))",
        );
    }

    /// The engine's counters and chain head (every commit), and the final `SELECT`.
    fn meta(mut self, meta: &Meta) -> CommitStatement<'q> {
        let names = vec![
            "next_timer",
            "chain_seq",
            "chain_hash",
            "now",
            "cadences_scheduled",
        ];
        let values = vec![
            meta.next_timer.to_string(),
            meta.chain.seq.to_string(),
            crate::decision::hash_hex(&meta.chain.hash),
            meta.now.map(encode_time).unwrap_or_default(),
            meta.cadences_scheduled.to_string(),
        ];
        let q = &mut self.q;
        q.push(", put_meta AS (INSERT INTO meta (name, value) SELECT * FROM ");
        unnest!(q, names => "text[]", values => "text[]");
        q.push(
            " WHERE (SELECT held FROM fence) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value) \
             SELECT held FROM fence",
        );
        self
    }

    /// Appends the part `del_TABLE`, deleting the rows of `table` whose two key
    /// `columns` match a pair of `values`.
    fn delete_pairs(
        &mut self,
        table: &str,
        [first, second]: [&str; 2],
        [firsts, seconds]: [Vec<&'q str>; 2],
    ) {
        let q = &mut self.q;
        q.push(format_args!(
            ", del_{table} AS (DELETE FROM {table} t USING "
        ));
        unnest!(q, firsts => "text[]", seconds => "text[]");
        q.push(format_args!(
            " AS d({first}, {second}) WHERE t.{first} = d.{first} AND t.{second} = d.{second} \
             AND (SELECT held FROM fence))"
        ));
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
        for row in sqlx::query("SELECT name, value FROM meta")
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
        for row in sqlx::query("SELECT workflow, key, body FROM instances")
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
        for row in sqlx::query("SELECT id, due, due_ns, body FROM timers ORDER BY due, due_ns, id")
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
        for row in sqlx::query("SELECT source, id FROM seen_events")
            .fetch_all(&mut *tx)
            .await?
        {
            world.seen.insert(
                row.try_get::<&str, _>("source")?,
                row.try_get::<&str, _>("id")?,
            );
        }
        for row in sqlx::query("SELECT counter, key, body FROM counters")
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
        for row in sqlx::query("SELECT cadence, period, due, due_ns, timer FROM expectations")
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
        let mut statement = CommitStatement::new(self.fence);
        statement.instances(rules, changes);
        statement.timers(rules, changes);
        statement.seen(changes);
        statement.counters(rules, changes);
        statement.expectations(rules, changes);
        statement.evidence(changes);
        statement.outbox(changes, self.dispatch_emitted);
        statement.settled(settled);
        let mut q = statement.meta(meta).q;
        if q.build_query_scalar::<bool>().fetch_one(&self.pool).await? {
            Ok(())
        } else {
            Err(StoreError::Fenced)
        }
    }

    async fn evidence(&self, after: u64) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, record, prev_hash, hash FROM evidence WHERE seq > $1 ORDER BY seq",
        )
        .bind(after as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(super::evidence_from_row).collect()
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let (at, ns) = split_time(letter.received_at);
        sqlx::query(
            "INSERT INTO dead_letters (received_at, received_at_ns, origin, reason, body) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(at)
        .bind(ns)
        .bind(&letter.origin)
        .bind(&letter.reason)
        .bind(&letter.body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT received_at, received_at_ns, origin, reason, body FROM dead_letters ORDER BY id",
        )
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
             due_ms, lease_ms, last_error, result FROM outbox ORDER BY at, at_ns, action_id",
        )
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
        let rows = sqlx::query(
            "UPDATE outbox o SET status = 'in_flight', attempts = o.attempts + 1, lease_ms = $1 \
             FROM (SELECT q.action_id FROM outbox q \
                   WHERE ((q.status IN ('pending', 'retry') AND q.due_ms <= $2) \
                      OR (q.status = 'in_flight' AND q.lease_ms <= $2)) \
                     AND (q.workflow IS NULL OR NOT EXISTS (SELECT 1 FROM outbox p \
                       WHERE p.workflow = q.workflow AND p.key = q.key \
                         AND p.status IN ('pending', 'retry', 'in_flight') AND p.seq < q.seq)) \
                   ORDER BY q.due_ms, q.at, q.at_ns, q.action_id LIMIT $3 \
                   FOR UPDATE SKIP LOCKED) c \
             WHERE o.action_id = c.action_id \
             RETURNING o.action_id, o.workflow, o.key, o.connector, o.op, o.args, o.attempts, \
                       o.due_ms, o.at, o.at_ns",
        )
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
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
             WHERE action_id = $3 AND status = 'in_flight' AND attempts = $4",
        )
        .bind(due_ms)
        .bind(error)
        .bind(action_id)
        .bind(i64::from(attempt))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_holds(&self, action_id: &str, attempt: u32) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS held FROM outbox WHERE action_id = $1 AND status = 'in_flight' AND attempts = $2",
        )
        .bind(action_id)
        .bind(i64::from(attempt))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS open, \
             min(CASE status WHEN 'in_flight' THEN lease_ms ELSE due_ms END) AS next_ms \
             FROM outbox WHERE status IN ('pending', 'retry', 'in_flight')",
        )
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
