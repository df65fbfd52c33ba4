//! The embedded store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::codec::{
    counter_index, decode_counter, decode_instance, decode_time, decode_timer, encode_counter,
    encode_instance, encode_time, encode_timer, workflow_of,
};
use super::{DeadLetter, Meta, OutboxRow, Store, StoreError};
use crate::core::{Changes, Expectation, World};
use crate::decision::EvidenceRecord;
use crate::event::EventIdentity;
use crate::ruleset::Ruleset;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true);
        Self::connect(options).await
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<SqliteStore, StoreError> {
        // One connection: the engine is the only writer, and SQLite serialises writes.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

impl Store for SqliteStore {
    async fn load(&self, rules: &Ruleset) -> Result<World, StoreError> {
        let mut world = World::default();
        for row in sqlx::query("SELECT name, value FROM meta")
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
            .await?
        {
            let source: String = row.try_get("source")?;
            let id: String = row.try_get("id")?;
            world.seen.insert(EventIdentity {
                source: Arc::from(source.as_str()),
                id: Arc::from(id.as_str()),
            });
        }
        for row in sqlx::query("SELECT counter, key, body FROM counters")
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        for ((w, key), inst) in &changes.instances {
            let workflow = &rules.workflows[*w].name;
            match inst {
                Some(inst) => {
                    sqlx::query(
                        "INSERT INTO instances (workflow, key, body) VALUES (?, ?, ?) \
                         ON CONFLICT (workflow, key) DO UPDATE SET body = excluded.body",
                    )
                    .bind(workflow)
                    .bind(key.as_ref())
                    .bind(encode_instance(rules, *w, inst).to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM instances WHERE workflow = ? AND key = ?")
                        .bind(workflow)
                        .bind(key.as_ref())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for timer in &changes.timers_added {
            sqlx::query("INSERT INTO timers (id, due, body) VALUES (?, ?, ?)")
                .bind(timer.id as i64)
                .bind(encode_time(timer.due))
                .bind(encode_timer(rules, &timer.kind).to_string())
                .execute(&mut *tx)
                .await?;
        }
        for id in &changes.timers_removed {
            sqlx::query("DELETE FROM timers WHERE id = ?")
                .bind(*id as i64)
                .execute(&mut *tx)
                .await?;
        }
        for seen in &changes.seen {
            sqlx::query("INSERT OR IGNORE INTO seen_events (source, id) VALUES (?, ?)")
                .bind(seen.source.as_ref())
                .bind(seen.id.as_ref())
                .execute(&mut *tx)
                .await?;
        }
        for ((c, key), state) in &changes.counters {
            sqlx::query(
                "INSERT INTO counters (counter, key, body) VALUES (?, ?, ?) \
                 ON CONFLICT (counter, key) DO UPDATE SET body = excluded.body",
            )
            .bind(&rules.counters[*c].name)
            .bind(key)
            .bind(encode_counter(state).to_string())
            .execute(&mut *tx)
            .await?;
        }
        for ((c, period), exp) in &changes.expectations {
            let cadence = &rules.cadences[*c].name;
            match exp {
                Some(exp) => {
                    sqlx::query(
                        "INSERT INTO expectations (cadence, period, due, timer) VALUES (?, ?, ?, ?) \
                         ON CONFLICT (cadence, period) DO UPDATE SET due = excluded.due, timer = excluded.timer",
                    )
                    .bind(cadence)
                    .bind(period)
                    .bind(encode_time(exp.due))
                    .bind(exp.timer as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM expectations WHERE cadence = ? AND period = ?")
                        .bind(cadence)
                        .bind(period)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for r in &changes.evidence {
            sqlx::query(
                "INSERT INTO evidence (seq, at, kind, record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(r.seq as i64)
            .bind(&r.at)
            .bind(&r.kind)
            .bind(&r.record)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .execute(&mut *tx)
            .await?;
        }
        for o in &changes.outbox {
            sqlx::query(
                "INSERT OR IGNORE INTO outbox (action_id, at, connector, op, args) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&o.action_id)
            .bind(encode_time(o.at))
            .bind(&o.connector)
            .bind(&o.op)
            .bind(o.args.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let entries = [
            ("next_timer", meta.next_timer.to_string()),
            ("chain_seq", meta.chain.seq.to_string()),
            ("chain_hash", hex::encode(meta.chain.hash)),
            ("now", meta.now.map(encode_time).unwrap_or_default()),
            ("cadences_scheduled", meta.cadences_scheduled.to_string()),
        ];
        for (name, value) in entries {
            sqlx::query(
                "INSERT INTO meta (name, value) VALUES (?, ?) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn evidence(&self, after: u64) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, record, prev_hash, hash FROM evidence WHERE seq > ? ORDER BY seq",
        )
        .bind(after as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(EvidenceRecord {
                    seq: row.try_get::<i64, _>("seq")? as u64,
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    record: row.try_get("record")?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dead_letters (received_at, origin, reason, body) VALUES (?, ?, ?, ?)",
        )
        .bind(encode_time(letter.received_at))
        .bind(&letter.origin)
        .bind(&letter.reason)
        .bind(&letter.body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows =
            sqlx::query("SELECT received_at, origin, reason, body FROM dead_letters ORDER BY id")
                .fetch_all(&self.pool)
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
            "SELECT action_id, at, connector, op, args, status, attempts FROM outbox ORDER BY at, action_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(OutboxRow {
                    action_id: row.try_get("action_id")?,
                    at: row.try_get("at")?,
                    connector: row.try_get("connector")?,
                    op: row.try_get("op")?,
                    args: row.try_get("args")?,
                    status: row.try_get("status")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect()
    }
}
