//! The embedded store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::query_builder::Separated;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::{Mutex, MutexGuard};

use super::codec::{
    counter_index, decode_counter, decode_instance, decode_time, decode_timer, encode_counter,
    encode_instance, encode_time, encode_timer, workflow_of,
};
use super::{
    Claimed, DeadLetter, Meta, OutboxBacklog, OutboxRow, SettledAs, Settlement, Store, StoreError,
};
use crate::core::{Changes, Expectation, World};
use crate::decision::EvidenceRecord;
use crate::ruleset::Ruleset;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    /// The one connection: the engine is the only writer, and SQLite serialises
    /// writes. Held directly rather than in a pool, whose every checkout and return
    /// costs a round trip to SQLite's worker thread (a ping) on top of the work.
    conn: Arc<Mutex<SqliteConnection>>,
    /// Whether emitted events' outbox rows are left for a dispatcher to publish.
    dispatch_emitted: bool,
    /// Checkpoints the write-ahead log beside the writer (file databases only).
    _checkpoints: Option<Arc<Checkpointer>>,
}

/// How often the checkpointer copies the write-ahead log into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Log frames (pages) above which the checkpointer waits for the writer to pause, so
/// the log cannot grow without bound under a write load that never stops (4 KiB pages:
/// 64 MiB).
const CHECKPOINT_RESTART_FRAMES: i64 = 16_384;

/// Runs WAL checkpoints on a connection of its own, so commits never copy the log into
/// the database file themselves (with SQLite's automatic checkpoints, the commit that
/// crosses 1,000 log pages does, and every event behind it waits for that fsync).
/// Passive checkpoints never block the writer; a restart checkpoint, which waits for
/// it, runs only when the log has grown past [`CHECKPOINT_RESTART_FRAMES`]. Dropping
/// the last store clone stops it.
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpointer {
    async fn start(options: &SqliteConnectOptions) -> Result<Checkpointer, StoreError> {
        let mut conn = SqliteConnection::connect_with(options).await?;
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let frames = match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut conn)
                    .await
                {
                    Ok(row) => row.try_get::<i64, _>(1).unwrap_or(0),
                    Err(e) => {
                        tracing::warn!(error = %e, "sqlite: checkpointing the log: {e}");
                        continue;
                    }
                };
                if frames > CHECKPOINT_RESTART_FRAMES
                    && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                        .execute(&mut conn)
                        .await
                {
                    tracing::warn!(error = %e, "sqlite: restarting the log: {e}");
                }
            }
        });
        Ok(Checkpointer(task))
    }
}

impl SqliteStore {
    /// Commits emitted events' outbox rows `pending`, for a dispatcher to publish,
    /// instead of `done` (see [`super::AnyStore::dispatch_emitted`]).
    pub fn dispatch_emitted(mut self, yes: bool) -> SqliteStore {
        self.dispatch_emitted = yes;
        self
    }

    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Steward logs its own slow work in its terms (the load at a start, a
            // commit); sqlx would also warn of the load's full-table reads as "slow
            // statements" and print whole commit scripts.
            .disable_statement_logging();
        let mut store = Self::connect(options.clone().pragma("wal_autocheckpoint", "0")).await?;
        // The database exists and is migrated: the checkpointer opens it as it is.
        store._checkpoints = Some(Arc::new(
            Checkpointer::start(&options.create_if_missing(false)).await?,
        ));
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:")?.disable_statement_logging();
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<SqliteStore, StoreError> {
        let mut conn =
            SqliteConnection::connect_with(&options.statement_cache_capacity(STATEMENTS)).await?;
        MIGRATOR.run(&mut conn).await?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            dispatch_emitted: false,
            _checkpoints: None,
        })
    }

    /// The store's connection, for tools that read or write beside the engine (it
    /// waits while a commit is running).
    pub async fn connection(&self) -> MutexGuard<'_, SqliteConnection> {
        self.conn.lock().await
    }
}

/// Prepared statements kept on the connection (least recently used dropped first). A
/// commit's script differs by its row counts; with small batches (events arriving
/// slower than they are applied) the same few scripts recur, and parsing them again
/// on every commit cost more than running them.
const STATEMENTS: usize = 128;

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// Rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 256;

/// A commit's writes, sent to SQLite in as few round trips as run well: the
/// statements go together as one script, `BEGIN` to `COMMIT`, which SQLite's worker
/// thread runs in one round trip (a statement at a time cost a wake-up of each side
/// per statement; with small batches those wake-ups were most of a commit's time).
/// A statement of a full [`ROWS_PER_STATEMENT`] rows is sent alone instead, so that
/// it stays prepared: large batches repeat it, and parsing it for every commit cost
/// more than its round trip. The parts run in the order they were added.
struct Script<'a> {
    parts: Vec<Part<'a>>,
    /// The script being written, and the values it binds.
    open: Option<(QueryBuilder<'a, Sqlite>, usize)>,
}

struct Part<'a> {
    q: QueryBuilder<'a, Sqlite>,
    /// Whether to keep it prepared: full-size statements and small scripts recur;
    /// large scripts rarely repeat and are prepared for their one use.
    keep: bool,
}

/// Scripts with at most this many bound values are kept prepared (see
/// [`STATEMENTS`]).
const CACHED_PARAMS: usize = 512;

impl<'a> Script<'a> {
    /// A script that opens the transaction; [`Script::run`] commits it.
    fn new() -> Script<'a> {
        Script {
            parts: Vec::new(),
            open: Some((QueryBuilder::new("BEGIN;\n"), 0)),
        }
    }

    /// Adds one statement of `rows` rows, written by `write`, which binds `params`
    /// values.
    fn statement(
        &mut self,
        rows: usize,
        params: usize,
        write: impl FnOnce(&mut QueryBuilder<'a, Sqlite>),
    ) {
        if rows == ROWS_PER_STATEMENT {
            self.close();
            let mut q = QueryBuilder::new("");
            write(&mut q);
            self.parts.push(Part { q, keep: true });
            return;
        }
        let (q, bound) = self.open.get_or_insert_with(|| (QueryBuilder::new(""), 0));
        write(q);
        q.push(";\n");
        *bound += params;
    }

    /// Ends the script being written: what comes next runs after it.
    fn close(&mut self) {
        if let Some((q, bound)) = self.open.take() {
            let keep = bound <= CACHED_PARAMS;
            self.parts.push(Part { q, keep });
        }
    }

    /// Adds `INSERT … VALUES (…), (…) tail` statements for `rows`, each binding
    /// `columns` values per row.
    fn values<T>(
        &mut self,
        head: &str,
        tail: &str,
        columns: usize,
        rows: &'a [T],
        bind: impl Fn(&mut Separated<'_, 'a, Sqlite, &'static str>, &'a T),
    ) {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            self.statement(chunk.len(), chunk.len() * columns, |q| {
                q.push(head);
                q.push_values(chunk, |mut b, row| bind(&mut b, row));
                q.push(tail);
            });
        }
    }

    /// Runs the parts and commits; on a failure, rolls the transaction back and
    /// returns the failure. Callers await it to the end: a commit dropped between two
    /// parts would leave its transaction open on the connection.
    async fn run(mut self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        self.open
            .get_or_insert_with(|| (QueryBuilder::new(""), 0))
            .0
            .push("COMMIT;");
        self.close();
        for mut part in self.parts {
            let query = part.q.build().persistent(part.keep);
            if let Err(e) = query.execute(&mut *conn).await {
                // The transaction is still open when a statement after `BEGIN` failed;
                // when none is (`BEGIN` itself failed), the rollback's error is moot.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e.into());
            }
        }
        Ok(())
    }
}

/// An expectation to write: cadence, period, and its due time and timer (`None`:
/// delete it).
type ExpectationRow<'r> = (&'r str, &'r str, Option<(String, i64)>);

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

impl Store for SqliteStore {
    async fn load(&self, rules: &Ruleset) -> Result<World, StoreError> {
        let mut conn = self.conn.lock().await;
        let mut world = World::default();
        for row in sqlx::query("SELECT name, value FROM meta")
            .fetch_all(&mut *conn)
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
            .fetch_all(&mut *conn)
            .await?
        {
            let workflow: String = row.try_get("workflow")?;
            let key: String = row.try_get("key")?;
            let body = parse_json(row.try_get("body")?, "instance")?;
            if let Some(w) = workflow_of(rules, &workflow)
                && let Some(inst) = decode_instance(rules, w, &body)
            {
                world.instances.insert((w, Arc::from(key.as_str())), inst);
            }
        }
        for row in sqlx::query("SELECT id, due, body FROM timers ORDER BY due, id")
            .fetch_all(&mut *conn)
            .await?
        {
            let id: i64 = row.try_get("id")?;
            let due: String = row.try_get("due")?;
            let body = parse_json(row.try_get("body")?, "timer")?;
            let due = decode_time(&due).ok_or_else(|| corrupt(format!("timer {id} due")))?;
            if let Some(kind) = decode_timer(rules, &body) {
                world.timers.insert((due, id as u64), kind);
            }
        }
        for row in sqlx::query("SELECT source, id FROM seen_events")
            .fetch_all(&mut *conn)
            .await?
        {
            let source: String = row.try_get("source")?;
            let id: String = row.try_get("id")?;
            world.seen.insert(&source, &id);
        }
        for row in sqlx::query("SELECT counter, key, body FROM counters")
            .fetch_all(&mut *conn)
            .await?
        {
            let counter: String = row.try_get("counter")?;
            let key: String = row.try_get("key")?;
            let body = parse_json(row.try_get("body")?, "counter")?;
            if let Some(c) = counter_index(rules, &counter) {
                world.counters.insert((c, key), decode_counter(&body));
            }
        }
        for row in sqlx::query("SELECT cadence, period, due, timer FROM expectations")
            .fetch_all(&mut *conn)
            .await?
        {
            let cadence: String = row.try_get("cadence")?;
            let period: String = row.try_get("period")?;
            let due: String = row.try_get("due")?;
            let timer: i64 = row.try_get("timer")?;
            if let (Some(c), Some(due)) = (
                super::codec::cadence_index(rules, &cadence),
                decode_time(&due),
            ) {
                world.expectations.insert(
                    (c, period),
                    Expectation {
                        due,
                        timer: timer as u64,
                    },
                );
            }
        }
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
        // Upserts and deletes touch distinct keys (one entry per key in `changes`),
        // so their order does not matter.
        let mut upserts = Vec::new();
        let mut finished: Vec<(&str, &str)> = Vec::new();
        for ((w, key), inst) in &changes.instances {
            let workflow = &rules.workflows[*w].name;
            match inst {
                Some(inst) => upserts.push((
                    workflow.as_str(),
                    key.as_ref(),
                    encode_instance(rules, *w, inst),
                )),
                None => finished.push((workflow.as_str(), key.as_ref())),
            }
        }
        let timers: Vec<(i64, String, String)> = changes
            .timers_added
            .iter()
            .map(|t| {
                (
                    t.id as i64,
                    encode_time(t.due),
                    encode_timer(rules, &t.kind).to_string(),
                )
            })
            .collect();
        let counters: Vec<(&str, &str, String)> = changes
            .counters
            .iter()
            .map(|((c, key), state)| {
                (
                    rules.counters[*c].name.as_str(),
                    key.as_str(),
                    encode_counter(state).to_string(),
                )
            })
            .collect();
        let expectations: Vec<ExpectationRow> = changes
            .expectations
            .iter()
            .map(|((c, period), exp)| {
                (
                    rules.cadences[*c].name.as_str(),
                    period.as_str(),
                    exp.as_ref()
                        .map(|exp| (encode_time(exp.due), exp.timer as i64)),
                )
            })
            .collect();
        let mut routes = super::outbox_routes(changes);
        let outbox: Vec<_> = changes
            .outbox
            .iter()
            .map(|o| {
                let (workflow, key) = routes.remove(&o.action_id).unwrap_or_default();
                let status = if super::dispatched(&o.connector, &o.op, self.dispatch_emitted) {
                    "pending"
                } else {
                    "done"
                };
                (
                    o.action_id.as_str(),
                    encode_time(o.at),
                    o.connector.as_str(),
                    o.op.as_str(),
                    o.args.to_string(),
                    (workflow, key, status),
                )
            })
            .collect();
        let entries = [
            ("next_timer", meta.next_timer.to_string()),
            ("chain_seq", meta.chain.seq.to_string()),
            ("chain_hash", crate::decision::hash_hex(&meta.chain.hash)),
            ("now", meta.now.map(encode_time).unwrap_or_default()),
            ("cadences_scheduled", meta.cadences_scheduled.to_string()),
        ];

        let mut script = Script::new();
        // Finished instances go many to a statement: after a restart, a backlog of
        // overdue timers can finish a hundred thousand at once.
        for chunk in finished.chunks(ROWS_PER_STATEMENT) {
            script.statement(chunk.len(), chunk.len() * 2, |q| {
                q.push("DELETE FROM instances WHERE (workflow, key) IN (VALUES ");
                let mut rows = q.separated(", ");
                for (workflow, key) in chunk {
                    rows.push("(")
                        .push_bind_unseparated(*workflow)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*key)
                        .push_unseparated(")");
                }
                q.push(")");
            });
        }
        script.values(
            "INSERT INTO instances (workflow, key, body) ",
            " ON CONFLICT (workflow, key) DO UPDATE SET body = excluded.body",
            3,
            &upserts,
            |b, (workflow, key, body)| {
                b.push_bind(*workflow)
                    .push_bind(*key)
                    .push_bind(body.as_str());
            },
        );
        script.values(
            "INSERT INTO timers (id, due, body) ",
            "",
            3,
            &timers,
            |b, (id, due, body)| {
                b.push_bind(*id)
                    .push_bind(due.as_str())
                    .push_bind(body.as_str());
            },
        );
        for ids in changes.timers_removed.chunks(ROWS_PER_STATEMENT) {
            script.statement(ids.len(), ids.len(), |q| {
                q.push("DELETE FROM timers WHERE id IN (");
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(*id as i64);
                }
                q.push(")");
            });
        }
        script.values(
            "INSERT INTO seen_events (source, id) ",
            "",
            2,
            &changes.seen,
            |b, seen| {
                b.push_bind(seen.source.as_ref())
                    .push_bind(seen.id.as_ref());
            },
        );
        script.values(
            "INSERT INTO counters (counter, key, body) ",
            " ON CONFLICT (counter, key) DO UPDATE SET body = excluded.body",
            3,
            &counters,
            |b, (counter, key, body)| {
                b.push_bind(*counter)
                    .push_bind(*key)
                    .push_bind(body.as_str());
            },
        );
        for (cadence, period, exp) in &expectations {
            match exp {
                Some((due, timer)) => script.statement(1, 4, |q| {
                    q.push("INSERT INTO expectations (cadence, period, due, timer) VALUES (")
                        .push_bind(*cadence)
                        .push(", ")
                        .push_bind(*period)
                        .push(", ")
                        .push_bind(due.as_str())
                        .push(", ")
                        .push_bind(*timer)
                        .push(
                            ") ON CONFLICT (cadence, period) \
                             DO UPDATE SET due = excluded.due, timer = excluded.timer",
                        );
                }),
                None => script.statement(1, 2, |q| {
                    q.push("DELETE FROM expectations WHERE cadence = ")
                        .push_bind(*cadence)
                        .push(" AND period = ")
                        .push_bind(*period);
                }),
            }
        }
        script.values(
            "INSERT INTO evidence (seq, at, kind, record, prev_hash, hash) ",
            "",
            6,
            &changes.evidence,
            |b, r| {
                b.push_bind(r.seq as i64)
                    .push_bind(r.at.as_str())
                    .push_bind(r.kind.as_str())
                    .push_bind(r.record.as_str())
                    .push_bind(r.prev_hash.as_str())
                    .push_bind(r.hash.as_str());
            },
        );
        script.values(
            "INSERT OR IGNORE INTO outbox (action_id, at, connector, op, args, workflow, key, status) ",
            "",
            8,
            &outbox,
            |b, (action_id, at, connector, op, args, (workflow, key, status))| {
                b.push_bind(*action_id)
                    .push_bind(at.as_str())
                    .push_bind(*connector)
                    .push_bind(*op)
                    .push_bind(args.as_str())
                    .push_bind(workflow.as_deref())
                    .push_bind(key.as_deref())
                    .push_bind(*status);
            },
        );
        for s in settled {
            let (status, result, reason) = match &s.end {
                SettledAs::Done { result } => ("done", Some(result.as_str()), None),
                SettledAs::Dead { reason } => ("dead", None, Some(reason.as_str())),
            };
            script.statement(1, 5, |q| {
                q.push("UPDATE outbox SET status = ")
                    .push_bind(status)
                    .push(", result = ")
                    .push_bind(result)
                    .push(", last_error = coalesce(")
                    .push_bind(reason)
                    .push(", last_error), attempts = max(attempts, ")
                    .push_bind(i64::from(s.attempt))
                    .push("), lease_ms = NULL WHERE action_id = ")
                    .push_bind(s.action_id.as_str())
                    .push(" AND status NOT IN ('done', 'dead')");
            });
        }
        script.values(
            "INSERT INTO meta (name, value) ",
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            2,
            &entries,
            |b, (name, value)| {
                b.push_bind(*name).push_bind(value.as_str());
            },
        );
        script.run(&mut *self.conn.lock().await).await
    }

    async fn evidence(&self, after: u64) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, record, prev_hash, hash FROM evidence WHERE seq > ? ORDER BY seq",
        )
        .bind(after as i64)
        .fetch_all(&mut *self.conn.lock().await)
        .await?;
        rows.iter().map(super::evidence_from_row).collect()
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dead_letters (received_at, origin, reason, body) VALUES (?, ?, ?, ?)",
        )
        .bind(encode_time(letter.received_at))
        .bind(&letter.origin)
        .bind(&letter.reason)
        .bind(&letter.body)
        .execute(&mut *self.conn.lock().await)
        .await?;
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows =
            sqlx::query("SELECT received_at, origin, reason, body FROM dead_letters ORDER BY id")
                .fetch_all(&mut *self.conn.lock().await)
                .await?;
        rows.into_iter()
            .map(|row| {
                let at: String = row.try_get("received_at")?;
                Ok(DeadLetter {
                    received_at: decode_time(&at).ok_or_else(|| corrupt("dead letter time"))?,
                    origin: row.try_get("origin")?,
                    reason: row.try_get("reason")?,
                    body: row.try_get("body")?,
                })
            })
            .collect()
    }

    async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT action_id, at, connector, op, args, status, attempts, workflow, key, due_ms, \
             lease_ms, last_error, result FROM outbox ORDER BY at, action_id",
        )
        .fetch_all(&mut *self.conn.lock().await)
        .await?;
        rows.iter()
            .map(|row| super::outbox_lifecycle_from_row(row, row.try_get("at")?))
            .collect()
    }

    async fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        // One statement: SQLite runs it alone (one writer), so no row is claimed twice.
        // An instance's actions go one at a time, in decision order (rowid): a row
        // waits while an earlier one of its instance is unsettled.
        let rows = sqlx::query(
            "UPDATE outbox SET status = 'in_flight', attempts = attempts + 1, lease_ms = ?1 \
             WHERE action_id IN (SELECT o.action_id FROM outbox o \
               WHERE ((o.status IN ('pending', 'retry') AND o.due_ms <= ?2) \
                  OR (o.status = 'in_flight' AND o.lease_ms <= ?2)) \
                 AND (o.workflow IS NULL OR NOT EXISTS (SELECT 1 FROM outbox p \
                   WHERE p.workflow = o.workflow AND p.key = o.key \
                     AND p.status IN ('pending', 'retry', 'in_flight') AND p.rowid < o.rowid)) \
               ORDER BY o.due_ms, o.at, o.action_id LIMIT ?3) \
             RETURNING action_id, workflow, key, connector, op, args, attempts, due_ms, at",
        )
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.conn.lock().await)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let order: (i64, String) = (row.try_get("due_ms")?, row.try_get("at")?);
            claimed.push((order, super::claimed_from_row(row, lease_until_ms)?));
        }
        // RETURNING's order is unspecified: oldest due first.
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
            "UPDATE outbox SET status = 'retry', due_ms = ?, last_error = ?, lease_ms = NULL \
             WHERE action_id = ? AND status = 'in_flight' AND attempts = ?",
        )
        .bind(due_ms)
        .bind(error)
        .bind(action_id)
        .bind(i64::from(attempt))
        .execute(&mut *self.conn.lock().await)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_holds(&self, action_id: &str, attempt: u32) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS held FROM outbox WHERE action_id = ? AND status = 'in_flight' AND attempts = ?",
        )
        .bind(action_id)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *self.conn.lock().await)
        .await?;
        Ok(row.is_some())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS open, \
             min(CASE status WHEN 'in_flight' THEN lease_ms ELSE due_ms END) AS next_ms \
             FROM outbox WHERE status IN ('pending', 'retry', 'in_flight')",
        )
        .fetch_one(&mut *self.conn.lock().await)
        .await?;
        let open: i64 = row.try_get("open")?;
        Ok(OutboxBacklog {
            open: u64::try_from(open).unwrap_or(0),
            next_ms: row.try_get("next_ms")?,
        })
    }
}
