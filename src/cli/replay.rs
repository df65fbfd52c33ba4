//! `steward replay`: recorded events through the rules on a virtual clock.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use steward_engine::core::Engine;
use steward_engine::decision::Decision;
use steward_engine::replay::{Driver, decode_line};
use steward_engine::store::{AnyStore, Meta, Store};

pub struct Options {
    pub files: Vec<PathBuf>,
    pub events: PathBuf,
    pub from: Option<String>,
    pub until: Option<String>,
    pub store: Option<PathBuf>,
    pub limit: Option<usize>,
}

/// Events between two commits of a replay into a store.
const BATCH: usize = 4096;
/// Files larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_BYTES: u64 = 4 * 1024 * 1024;

pub fn run(opts: Options) -> Result<ExitCode> {
    let rules = super::load_rules(&opts.files)?;
    let from = opts
        .from
        .as_deref()
        .map(|t| super::parse_time(t, "--from"))
        .transpose()?;
    let until = opts
        .until
        .as_deref()
        .map(|t| super::parse_time(t, "--until"))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = match &opts.store {
        Some(location) => Some(
            runtime
                .block_on(AnyStore::open(location))
                .with_context(|| format!("opening {}", AnyStore::describe(location)))?,
        ),
        None => None,
    };
    let engine = match &store {
        Some(store) => Engine::with_world(rules.clone(), runtime.block_on(store.load(&rules))?),
        None => Engine::new(rules.clone()).without_change_tracking(),
    };
    let mut driver = Driver::new(engine);
    if let Some(from) = from {
        driver.start(from);
    }

    let file = std::fs::File::open(&opts.events)
        .with_context(|| format!("reading {}", opts.events.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = (std::io::stderr().is_terminal() && size > PROGRESS_BYTES).then(|| {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let path = super::display(&opts.events);
    let stdout = std::io::stdout();
    let mut writer = std::io::BufWriter::new(stdout.lock());
    let mut out: Vec<Decision> = Vec::new();
    let mut bad = 0usize;
    let mut after_until = 0usize;
    let mut fed = 0usize;
    let mut last_time = None;
    let mut since_commit = 0usize;
    let commit = |driver: &mut Driver| -> Result<()> {
        if let Some(store) = &store {
            let changes = driver.engine.take_changes();
            let meta = Meta::of(driver.engine.world());
            runtime.block_on(store.commit(&rules, &changes, &meta))?;
        }
        Ok(())
    };
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {path}"))?;
        if let Some(bar) = &progress {
            bar.inc(line.len() as u64 + 1);
        }
        match decode_line(index + 1, &line, true) {
            None => continue,
            Some(Err(e)) => {
                bad += 1;
                eprintln!("{path}:{}: skipped: {}", e.line, e.reason);
            }
            Some(Ok(event)) => {
                // The clock ends at --until: a later event would move it past the end
                // and fire what is due after it.
                if until.is_some_and(|until| event.time.is_some_and(|t| t > until)) {
                    after_until += 1;
                    continue;
                }
                if opts.limit.is_some_and(|l| fed >= l) {
                    break;
                }
                fed += 1;
                last_time = event.time.max(last_time);
                driver.feed(&event, &mut out);
                for d in out.drain(..) {
                    writeln!(writer, "{}", d.to_json_line())?;
                }
                since_commit += 1;
                if since_commit >= BATCH {
                    commit(&mut driver)?;
                    since_commit = 0;
                }
            }
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if opts.limit.is_none_or(|l| fed < l)
        && let Some(end) = until.or(last_time)
    {
        driver.advance(end, &mut out);
        for d in out.drain(..) {
            writeln!(writer, "{}", d.to_json_line())?;
        }
    }
    writer.flush()?;
    commit(&mut driver)?;
    let stats = driver.engine.stats;
    eprintln!(
        "replayed {fed} events: {} applied, {} unrouted, {} duplicates, {} timers fired, {} decisions{}{}",
        stats.applied,
        stats.unrouted,
        stats.duplicates,
        stats.timers_fired,
        stats.decisions,
        if bad > 0 {
            format!("; {bad} lines skipped")
        } else {
            String::new()
        },
        if after_until > 0 {
            format!("; {after_until} events after --until ignored")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
