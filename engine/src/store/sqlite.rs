//! The embedded store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

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
    /// The store's two connections, used one at a time: the engine is the only
    /// writer, and SQLite serialises writes anyway.
    conn: Arc<Mutex<Conn>>,
    /// Whether emitted events' outbox rows are left for a dispatcher to publish.
    dispatch_emitted: bool,
    /// Checkpoints the write-ahead log beside the writer (file databases only).
    _checkpoints: Option<Arc<Checkpointer>>,
}

/// The connections of a [`SqliteStore`].
struct Conn {
    /// The engine's own: the load at a start and every commit, on the calling thread.
    /// Commits bind borrowed values a row at a time to statements prepared once;
    /// through sqlx, each value was copied twice and each statement's text written
    /// out and hashed anew, and the work went to sqlx's worker thread and back (the
    /// commit was most of a busy engine's CPU). The load reads rows where SQLite
    /// keeps them instead of copying each into a row of its own first.
    engine: rusqlite::Connection,
    /// Everything else: migrations, reads, dead letters and the outbox's claims. Held
    /// directly rather than in a pool, whose every checkout and return costs a round
    /// trip to sqlx's worker thread (a ping) on top of the work.
    sqlx: SqliteConnection,
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
        let mut store =
            Self::connect(options.clone().pragma("wal_autocheckpoint", "0"), false).await?;
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
        Self::connect(options, true).await
    }

    /// Connects to the database `options` names (`in_memory`: the in-memory one that
    /// sqlx names), migrates it, and opens the engine's connection beside.
    async fn connect(
        options: SqliteConnectOptions,
        in_memory: bool,
    ) -> Result<SqliteStore, StoreError> {
        let options = options.statement_cache_capacity(STATEMENTS);
        let mut sqlx = SqliteConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut sqlx).await?;
        let engine = open_engine(&options, in_memory)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(Conn { engine, sqlx })),
            dispatch_emitted: false,
            _checkpoints: None,
        })
    }

    /// The store's connection, for tools that read or write beside the engine (it
    /// waits while a commit is running).
    pub async fn connection(&self) -> MappedMutexGuard<'_, SqliteConnection> {
        MutexGuard::map(self.conn.lock().await, |conn| &mut conn.sqlx)
    }
}

/// Prepared statements kept on sqlx's connection (least recently used dropped first).
const STATEMENTS: usize = 128;

/// Prepared statements kept on the engine's connection: a commit runs at most twelve
/// kinds.
const ENGINE_STATEMENTS: usize = 32;

/// How long a statement waits for another process's write lock before failing
/// (sqlx's default, which sqlx's connection keeps).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// Opens the engine's connection to the database `options` names (which exists and
/// is migrated), with the settings sqlx gives its own: the same durability, foreign
/// keys, no automatic checkpoints for a file (the [`Checkpointer`] runs them). An
/// in-memory database is shared by its name with sqlx's connection (shared cache).
fn open_engine(
    options: &SqliteConnectOptions,
    in_memory: bool,
) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let name = options
        .get_filename()
        .to_str()
        .ok_or_else(|| corrupt("the database's path is not UTF-8"))?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if in_memory {
        rusqlite::Connection::open_with_flags(
            format!("{name}?mode=memory&cache=shared"),
            flags | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_SHARED_CACHE,
        )?
    } else {
        let conn = rusqlite::Connection::open_with_flags(name, flags)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(ENGINE_STATEMENTS);
    Ok(conn)
}

/// Runs `sql`, prepared once per connection, for each of `rows` (nothing when there
/// are none), binding a row's values with `run`.
fn each<T>(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    rows: impl IntoIterator<Item = T>,
    mut run: impl FnMut(&mut rusqlite::CachedStatement<'_>, T) -> rusqlite::Result<usize>,
) -> rusqlite::Result<()> {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return Ok(());
    }
    let mut statement = tx.prepare_cached(sql)?;
    for row in rows {
        run(&mut statement, row)?;
    }
    Ok(())
}

/// Runs the query `sql` and hands each row to `each`.
fn rows(
    db: &rusqlite::Connection,
    sql: &str,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut statement = db.prepare(sql)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        each(row)?;
    }
    Ok(())
}

/// Column `i` of `row`, as text.
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    row.get_ref(i)?
        .as_str()
        .map_err(|e| corrupt(format!("column {i}: {e}")))
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

impl Store for SqliteStore {
    async fn load(&self, rules: &Ruleset) -> Result<World, StoreError> {
        let conn = self.conn.lock().await;
        let db = &conn.engine;
        let mut world = World::default();
        // Rows are read where SQLite keeps them (`&str` borrowed until the next row),
        // so a million-instance store is not copied once more on its way in.
        rows(db, "SELECT name, value FROM meta", |row| {
            let value = text(row, 1)?;
            match text(row, 0)? {
                "next_timer" => {
                    world.next_timer = value.parse().map_err(|_| corrupt("next_timer"))?
                }
                "chain_seq" => world.chain.seq = value.parse().map_err(|_| corrupt("chain_seq"))?,
                "chain_hash" => {
                    let bytes = hex::decode(value).map_err(|_| corrupt("chain_hash"))?;
                    world.chain.hash =
                        bytes.try_into().map_err(|_| corrupt("chain_hash length"))?;
                }
                "now" => world.now = decode_time(value),
                "cadences_scheduled" => world.cadences_scheduled = value == "true",
                _ => {}
            }
            Ok(())
        })?;
        rows(db, "SELECT workflow, key, body FROM instances", |row| {
            let body = parse_json(text(row, 2)?, "instance")?;
            if let Some(w) = workflow_of(rules, text(row, 0)?)
                && let Some(inst) = decode_instance(rules, w, &body)
            {
                world.instances.insert((w, Arc::from(text(row, 1)?)), inst);
            }
            Ok(())
        })?;
        rows(
            db,
            "SELECT id, due, body FROM timers ORDER BY due, id",
            |row| {
                let id: i64 = row.get(0)?;
                let body = parse_json(text(row, 2)?, "timer")?;
                let due =
                    decode_time(text(row, 1)?).ok_or_else(|| corrupt(format!("timer {id} due")))?;
                if let Some(kind) = decode_timer(rules, &body) {
                    world.timers.insert((due, id as u64), kind);
                }
                Ok(())
            },
        )?;
        rows(db, "SELECT source, id FROM seen_events", |row| {
            world.seen.insert(text(row, 0)?, text(row, 1)?);
            Ok(())
        })?;
        rows(db, "SELECT counter, key, body FROM counters", |row| {
            let body = parse_json(text(row, 2)?, "counter")?;
            if let Some(c) = counter_index(rules, text(row, 0)?) {
                world
                    .counters
                    .insert((c, text(row, 1)?.to_string()), decode_counter(&body));
            }
            Ok(())
        })?;
        rows(
            db,
            "SELECT cadence, period, due, timer FROM expectations",
            |row| {
                let timer: i64 = row.get(3)?;
                if let (Some(c), Some(due)) = (
                    super::codec::cadence_index(rules, text(row, 0)?),
                    decode_time(text(row, 2)?),
                ) {
                    world.expectations.insert(
                        (c, text(row, 1)?.to_string()),
                        Expectation {
                            due,
                            timer: timer as u64,
                        },
                    );
                }
                Ok(())
            },
        )?;
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
        let mut conn = self.conn.lock().await;
        // The transaction takes the write lock at once; dropped on an error, it rolls
        // back. Upserts and deletes touch distinct keys (one entry per key in
        // `changes`), so their order does not matter.
        let tx = conn
            .engine
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        each(
            &tx,
            "DELETE FROM instances WHERE workflow = ?1 AND key = ?2",
            changes.instances.iter().filter(|(_, inst)| inst.is_none()),
            |s, ((w, key), _)| s.execute((&rules.workflows[*w].name, key.as_ref())),
        )?;
        each(
            &tx,
            "INSERT INTO instances (workflow, key, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT (workflow, key) DO UPDATE SET body = excluded.body",
            changes
                .instances
                .iter()
                .filter_map(|(at, inst)| Some((at, inst.as_ref()?))),
            |s, ((w, key), inst)| {
                s.execute((
                    &rules.workflows[*w].name,
                    key.as_ref(),
                    encode_instance(rules, *w, inst),
                ))
            },
        )?;
        each(
            &tx,
            "INSERT INTO timers (id, due, body) VALUES (?1, ?2, ?3)",
            &changes.timers_added,
            |s, t| {
                s.execute((
                    t.id as i64,
                    encode_time(t.due),
                    encode_timer(rules, &t.kind).to_string(),
                ))
            },
        )?;
        each(
            &tx,
            "DELETE FROM timers WHERE id = ?1",
            &changes.timers_removed,
            |s, id| s.execute([*id as i64]),
        )?;
        each(
            &tx,
            "INSERT INTO seen_events (source, id) VALUES (?1, ?2)",
            &changes.seen,
            |s, seen| s.execute((seen.source.as_ref(), seen.id.as_ref())),
        )?;
        each(
            &tx,
            "INSERT INTO counters (counter, key, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT (counter, key) DO UPDATE SET body = excluded.body",
            &changes.counters,
            |s, ((c, key), state)| {
                s.execute((
                    &rules.counters[*c].name,
                    key,
                    encode_counter(state).to_string(),
                ))
            },
        )?;
        each(
            &tx,
            "INSERT INTO expectations (cadence, period, due, timer) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (cadence, period) DO UPDATE SET due = excluded.due, timer = excluded.timer",
            changes
                .expectations
                .iter()
                .filter_map(|(at, exp)| Some((at, exp.as_ref()?))),
            |s, ((c, period), exp)| {
                s.execute((
                    &rules.cadences[*c].name,
                    period,
                    encode_time(exp.due),
                    exp.timer as i64,
                ))
            },
        )?;
        each(
            &tx,
            "DELETE FROM expectations WHERE cadence = ?1 AND period = ?2",
            changes.expectations.iter().filter(|(_, exp)| exp.is_none()),
            |s, ((c, period), _)| s.execute((&rules.cadences[*c].name, period)),
        )?;
        each(
            &tx,
            "INSERT INTO evidence (seq, at, kind, record, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &changes.evidence,
            |s, r| {
                s.execute((
                    r.seq as i64,
                    &r.at,
                    &r.kind,
                    &r.record,
                    &r.prev_hash,
                    &r.hash,
                ))
            },
        )?;
        let mut routes = super::outbox_routes(changes);
        each(
            &tx,
            "INSERT OR IGNORE INTO outbox (action_id, at, connector, op, args, workflow, key, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &changes.outbox,
            |s, o| {
                let (workflow, key) = routes.remove(&o.action_id).unwrap_or_default();
                let status = if super::dispatched(&o.connector, &o.op, self.dispatch_emitted) {
                    "pending"
                } else {
                    "done"
                };
                s.execute((
                    &o.action_id,
                    encode_time(o.at),
                    &o.connector,
                    &o.op,
                    o.args.to_string(),
                    workflow,
                    key,
                    status,
                ))
            },
        )?;
        each(
            &tx,
            "UPDATE outbox SET status = ?1, result = ?2, last_error = coalesce(?3, last_error), \
             attempts = max(attempts, ?4), lease_ms = NULL \
             WHERE action_id = ?5 AND status NOT IN ('done', 'dead')",
            settled,
            |s, settlement| {
                let (status, result, reason) = match &settlement.end {
                    SettledAs::Done { result } => ("done", Some(result.as_str()), None),
                    SettledAs::Dead { reason } => ("dead", None, Some(reason.as_str())),
                };
                s.execute((
                    status,
                    result,
                    reason,
                    i64::from(settlement.attempt),
                    &settlement.action_id,
                ))
            },
        )?;
        each(
            &tx,
            "INSERT INTO meta (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [
                ("next_timer", meta.next_timer.to_string()),
                ("chain_seq", meta.chain.seq.to_string()),
                ("chain_hash", crate::decision::hash_hex(&meta.chain.hash)),
                ("now", meta.now.map(encode_time).unwrap_or_default()),
                ("cadences_scheduled", meta.cadences_scheduled.to_string()),
            ],
            |s, entry| s.execute(entry),
        )?;
        tx.commit()?;
        Ok(())
    }

    async fn evidence(&self, after: u64) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, record, prev_hash, hash FROM evidence WHERE seq > ? ORDER BY seq",
        )
        .bind(after as i64)
        .fetch_all(&mut *self.connection().await)
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
        .execute(&mut *self.connection().await)
        .await?;
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows =
            sqlx::query("SELECT received_at, origin, reason, body FROM dead_letters ORDER BY id")
                .fetch_all(&mut *self.connection().await)
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
        .fetch_all(&mut *self.connection().await)
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
        .fetch_all(&mut *self.connection().await)
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
        .execute(&mut *self.connection().await)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_holds(&self, action_id: &str, attempt: u32) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS held FROM outbox WHERE action_id = ? AND status = 'in_flight' AND attempts = ?",
        )
        .bind(action_id)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *self.connection().await)
        .await?;
        Ok(row.is_some())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS open, \
             min(CASE status WHEN 'in_flight' THEN lease_ms ELSE due_ms END) AS next_ms \
             FROM outbox WHERE status IN ('pending', 'retry', 'in_flight')",
        )
        .fetch_one(&mut *self.connection().await)
        .await?;
        let open: i64 = row.try_get("open")?;
        Ok(OutboxBacklog {
            open: u64::try_from(open).unwrap_or(0),
            next_ms: row.try_get("next_ms")?,
        })
    }
}
