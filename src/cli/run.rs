//! `steward run`: the embedded engine. State in one SQLite file (or a PostgreSQL
//! database, given a `postgres://` URL); events from a JSON-lines file, stdin, or a
//! watched directory; the wall clock.
//!
//! Each batch of events is committed (state, timers, evidence, outbox, seen ids) in
//! one transaction before the next is read; unusable lines are dead-lettered in the
//! store with their reason and the engine goes on. Connector calls are recorded in the
//! outbox and printed; executing them is the dispatcher's job.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use steward_engine::core::Engine;
use steward_engine::decision::Decision;
use steward_engine::replay::decode_line;
use steward_engine::store::{AnyStore, DeadLetter, Meta, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};

pub struct Options {
    pub files: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub watch: Option<PathBuf>,
    pub db: Option<PathBuf>,
}

/// `steward.toml`. Every value can be overridden by an environment variable:
/// `STEWARD_STORE__PATH`, `STEWARD_SOURCE__EVENTS`, `STEWARD_SOURCE__WATCH`,
/// `STEWARD_SOURCE__POLL_MS`, `STEWARD_ENGINE__BATCH`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    pub source: SourceConfig,
    pub engine: EngineConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file, or a `postgres://` / `postgresql://` URL.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("steward.db"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// A JSON-lines file, or `-` for stdin.
    pub events: Option<PathBuf>,
    /// A directory of `.jsonl` files, read as they appear and grow.
    pub watch: Option<PathBuf>,
    /// How often the watched directory is scanned.
    pub poll_ms: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            events: None,
            watch: None,
            poll_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Events per committed batch.
    pub batch: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { batch: 256 }
    }
}

pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = path {
        anyhow::ensure!(
            path.is_file(),
            "configuration file {} not found",
            path.display()
        );
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(Env::prefixed("STEWARD_").split("__"))
        .extract()
        .context("invalid configuration")
}

pub fn run(opts: Options) -> Result<ExitCode> {
    let mut config = load_config(opts.config.as_deref())?;
    if let Some(db) = opts.db {
        config.store.path = db;
    }
    if let Some(events) = opts.events {
        config.source.events = Some(events);
        config.source.watch = None;
    }
    if let Some(watch) = opts.watch {
        config.source.watch = Some(watch);
        config.source.events = None;
    }
    let rules = super::load_rules(&opts.files)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = AnyStore::open(&config.store.path)
            .await
            .with_context(|| format!("opening {}", AnyStore::describe(&config.store.path)))?;
        let world = store.load(&rules).await?;
        let mut engine = Engine::with_world(rules.clone(), world);
        engine.start(Utc::now());
        let mut runner = Runner {
            engine,
            store,
            batch: config.engine.batch.max(1),
            pending: 0,
            out: Vec::new(),
            dead: 0,
        };
        runner.tick().await?;
        match (&config.source.events, &config.source.watch) {
            (_, Some(dir)) => runner.watch(dir, Duration::from_millis(config.source.poll_ms.max(10))).await?,
            (Some(path), None) if path.as_os_str() == "-" => {
                let stdin = BufReader::new(tokio::io::stdin());
                runner.lines(stdin, "stdin").await?;
            }
            (Some(path), None) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("reading {}", path.display()))?;
                runner.lines(BufReader::new(file), &path.display().to_string()).await?;
            }
            (None, None) => {
                let stdin = BufReader::new(tokio::io::stdin());
                runner.lines(stdin, "stdin").await?;
            }
        }
        runner.tick().await?;
        runner.commit().await?;
        let stats = runner.engine.stats;
        eprintln!(
            "processed: {} applied, {} unrouted, {} duplicates, {} dead-lettered, {} timers fired, {} decisions; pending timers: {}",
            stats.applied,
            stats.unrouted,
            stats.duplicates,
            runner.dead,
            stats.timers_fired,
            stats.decisions,
            runner.engine.world().timers.len()
        );
        Ok(ExitCode::SUCCESS)
    })
}

struct Runner {
    engine: Engine,
    store: AnyStore,
    batch: usize,
    pending: usize,
    out: Vec<Decision>,
    dead: usize,
}

impl Runner {
    fn print(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stdout = std::io::stdout();
        let mut w = stdout.lock();
        for d in self.out.drain(..) {
            writeln!(w, "{}", d.to_json_line())?;
        }
        w.flush()?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        let changes = self.engine.take_changes();
        if !changes.is_empty() {
            let meta = Meta::of(self.engine.world());
            let rules = self.engine.ruleset().clone();
            self.store.commit(&rules, &changes, &meta).await?;
        }
        self.pending = 0;
        self.print()
    }

    /// Fires what the wall clock says is due.
    async fn tick(&mut self) -> Result<()> {
        self.engine.advance(Utc::now(), &mut self.out);
        if !self.out.is_empty() {
            self.commit().await?;
        }
        Ok(())
    }

    async fn line(&mut self, origin: &str, number: usize, text: &str) -> Result<()> {
        match decode_line(number, text, false) {
            None => {}
            Some(Err(bad)) => {
                self.dead += 1;
                eprintln!("{origin}:{number}: dead-lettered: {}", bad.reason);
                self.store
                    .dead_letter(&DeadLetter {
                        received_at: Utc::now(),
                        origin: format!("{origin}:{number}"),
                        reason: bad.reason,
                        body: text.to_string(),
                    })
                    .await?;
            }
            Some(Ok(event)) => {
                let now = Utc::now();
                self.engine.advance(now, &mut self.out);
                self.engine.apply(&event, now, &mut self.out);
                self.pending += 1;
                if self.pending >= self.batch {
                    self.commit().await?;
                }
            }
        }
        Ok(())
    }

    /// Reads lines to the end, committing when a batch fills or input pauses, and
    /// firing timers while waiting.
    async fn lines<R: tokio::io::AsyncBufRead + Unpin>(
        &mut self,
        reader: R,
        origin: &str,
    ) -> Result<()> {
        let mut lines = reader.lines();
        let mut number = 0;
        // One signal listener for the whole loop: a Ctrl-C that arrives while a line is
        // being processed is kept, not lost with a per-iteration listener.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            let wait = self.until_due();
            tokio::select! {
                line = lines.next_line() => {
                    let Some(line) = line.with_context(|| format!("reading {origin}"))? else { break };
                    number += 1;
                    self.line(origin, number, &line).await?;
                }
                _ = tokio::time::sleep(wait) => {
                    self.commit().await?;
                    self.tick().await?;
                }
                _ = &mut interrupted => {
                    eprintln!("interrupted: committing and stopping");
                    break;
                }
            }
        }
        self.commit().await
    }

    fn until_due(&self) -> Duration {
        let idle = Duration::from_millis(200);
        match self.engine.next_due() {
            Some(due) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(idle),
            None => idle,
        }
    }

    /// Follows every `.jsonl` file in `dir`: new files and appended complete lines.
    async fn watch(&mut self, dir: &Path, every: Duration) -> Result<()> {
        let mut offsets: HashMap<PathBuf, (u64, usize)> = HashMap::new();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        eprintln!("watching {} for .jsonl files (Ctrl-C stops)", dir.display());
        loop {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("reading directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            entries.sort();
            for path in entries {
                let (offset, number) = offsets.get(&path).copied().unwrap_or((0, 0));
                let mut file = tokio::fs::File::open(&path).await?;
                let len = file.metadata().await?.len();
                if len <= offset {
                    continue;
                }
                file.seek(std::io::SeekFrom::Start(offset)).await?;
                let mut buf = Vec::new();
                file.read_to_end(&mut buf).await?;
                // Only complete lines; a partial last line is read when it is finished.
                let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let text = String::from_utf8_lossy(&buf[..complete]).into_owned();
                let origin = path.display().to_string();
                let mut n = number;
                for line in text.lines() {
                    n += 1;
                    self.line(&origin, n, line).await?;
                }
                offsets.insert(path, (offset + complete as u64, n));
                self.commit().await?;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut interrupted => {
                    eprintln!("interrupted: committing and stopping");
                    return self.commit().await;
                }
            }
            self.tick().await?;
        }
    }
}
