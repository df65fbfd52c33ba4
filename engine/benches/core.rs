//! Steward's promised benchmarks, as one binary that generates its rules and events.
//!
//! ```text
//! cargo bench -p steward-engine --bench core                 # everything
//! cargo bench -p steward-engine --bench core -- core         # (1) in-memory throughput
//! cargo bench -p steward-engine --bench core -- replay       # (2) durable replay
//! cargo bench -p steward-engine --bench core -- memory       # (3) bytes per idle instance
//! ```
//!
//! Options: `--events N` (default 1,000,000), `--rules N` (default: 1,000 and 10,000). Everything is single-threaded; the
//! SQLite replay uses a current-thread tokio runtime, as `steward replay` does.
//! The end-to-end CLI row runs `target/release/steward` when it has been built
//! (`cargo build --release`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use steward_engine::core::Engine;
use steward_engine::decision::Decision;
use steward_engine::event::Event;
use steward_engine::replay::{Driver, decode_line};
use steward_engine::ruleset::Ruleset;
use steward_engine::store::sqlite::SqliteStore;
use steward_engine::store::{Meta, Store};

/// The allocator `steward` itself uses (src/main.rs), so the rates are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Workflows generated beside the rules; they hold the live instances.
const WORKFLOWS: usize = 100;
/// Live instances spread over the generated workflows.
const INSTANCES: usize = 10_000;
/// Events between two commits, as in `steward replay --store`.
const BATCH: usize = 4096;

// ------------------------------------------------------------------ generation

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `rules` rules over distinct event types, [`WORKFLOWS`] workflows with an SLA timer,
/// and the ISO 20000 example (realistic change, incident, review and supplier rules).
///
/// Each template ends its line: the DSL's nesting pre-check (`too_deep`) counts a
/// bracket after a template's closing quote on the same line as still open.
fn generate_rules(rules: usize) -> String {
    let mut s = String::new();
    s.push_str("use connector jira\n\n");
    for i in 0..rules {
        let _ = writeln!(
            s,
            "rule r{i} {{\n  control \"8.1\" \"generated rule {i}\" detective\n  \
             on \"gen.r{i}\" when event.data.amount > 990\n  \
             do {{\n    violation \"r{i}: amount ${{event.data.amount}} on ${{event.subject}}\"\n  }}\n}}\n"
        );
    }
    for w in 0..WORKFLOWS {
        let _ = writeln!(
            s,
            "workflow w{w} key event.subject {{\n  \
             control \"8.5.1\" \"generated workflow {w}\" detective\n  \
             start on \"gen.w{w}.open\"\n  \
             state open {{\n    \
               on \"gen.w{w}.update\" when event.data.amount > 990 -> review\n    \
               after 30 days -> expired {{\n      violation \"${{key}} idle for 30 days\"\n    }}\n  }}\n  \
             state review {{\n    \
               enter {{\n      jira.comment(key, \"review: amount ${{event.data.amount}}\"\n      )\n    }}\n    \
               on \"gen.w{w}.update\" when event.data.amount < 500 -> open\n  }}\n  \
             final state expired\n}}\n"
        );
    }
    s
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/iso20000")
}

/// The generated file plus the example's `.stw` files, as (path, text).
fn rule_sources(rules: usize) -> Vec<(String, String)> {
    let mut out = vec![("generated.stw".to_string(), generate_rules(rules))];
    let mut paths: Vec<_> = std::fs::read_dir(example_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "stw"))
        .collect();
    paths.sort();
    for p in paths {
        out.push((
            p.display().to_string(),
            std::fs::read_to_string(&p).unwrap(),
        ));
    }
    out
}

fn compile(sources: &[(String, String)]) -> Arc<Ruleset> {
    let srcs: Vec<steward_dsl::Source> = sources
        .iter()
        .map(|(path, text)| steward_dsl::Source {
            path: path.clone(),
            text: text.clone(),
        })
        .collect();
    let result = steward_dsl::check(&srcs);
    if let Some((i, d)) = result.diagnostics.first() {
        let s = &srcs[*i];
        panic!(
            "generated rules do not check:\n{}",
            steward_dsl::render(d, &s.path, &s.text)
        );
    }
    let texts: Vec<&str> = sources.iter().map(|(_, t)| t.as_str()).collect();
    Arc::new(Ruleset::compile(&result.files, &texts).unwrap())
}

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
}

fn event_line(
    out: &mut String,
    n: usize,
    event_type: &str,
    subject: &str,
    amount: usize,
    at: DateTime<Utc>,
) {
    out.clear();
    let _ = write!(
        out,
        "{{\"specversion\":\"1.0\",\"id\":\"e{n}\",\"source\":\"https://bench.example/jira\",\
         \"type\":\"{event_type}\",\"time\":\"{}\",\"subject\":\"{subject}\",\
         \"datacontenttype\":\"application/json\",\"data\":{{\"amount\":{amount},\
         \"user\":{{\"accountId\":\"u{}\"}},\"issue\":{{\"key\":\"{subject}\",\
         \"fields\":{{\"status\":{{\"name\":\"Open\"}},\"priority\":\"P3\"}}}}}}}}",
        steward_engine::event::format_time(at),
        amount % 97
    );
}

/// The events that open the [`INSTANCES`] live instances (lines `0..INSTANCES`).
fn opening_lines() -> Vec<String> {
    let mut line = String::new();
    (0..INSTANCES)
        .map(|i| {
            let w = i % WORKFLOWS;
            let at = start_time() + chrono::Duration::milliseconds(i as i64);
            event_line(
                &mut line,
                i,
                &format!("gen.w{w}.open"),
                &format!("K-{i}"),
                0,
                at,
            );
            line.clone()
        })
        .collect()
}

/// `count` events after the opening ones: half go to the rules (uniformly over all
/// of them), half update live instances; about 1% decide something.
fn workload_lines(rules: usize, count: usize, mut each: impl FnMut(&str)) {
    let mut rng = Rng(42);
    let mut line = String::new();
    let t0 = start_time() + chrono::Duration::seconds(60);
    for n in 0..count {
        let at = t0 + chrono::Duration::milliseconds(n as i64 * 100);
        let amount = rng.below(1000);
        if rng.below(2) == 0 {
            let r = rng.below(rules);
            let subject = format!("S-{}", rng.below(100_000));
            event_line(
                &mut line,
                INSTANCES + n,
                &format!("gen.r{r}"),
                &subject,
                amount,
                at,
            );
        } else {
            let i = rng.below(INSTANCES);
            let w = i % WORKFLOWS;
            let ty = format!("gen.w{w}.update");
            event_line(&mut line, INSTANCES + n, &ty, &format!("K-{i}"), amount, at);
        }
        each(&line);
    }
}

fn decode(line: &str) -> Event {
    Event::from_json_str(line).unwrap()
}

// ------------------------------------------------------------------ reporting

struct Row {
    name: String,
    events: usize,
    elapsed: Duration,
    /// CPU time (all threads), which is what "one core" means on a shared machine.
    cpu: Duration,
    note: String,
}

impl Row {
    /// Events per second of CPU time.
    fn rate(&self) -> f64 {
        self.events as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

/// CPU time of this process (user + system, all threads), or of its waited-for
/// children, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time(children: bool) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // Fields after the command: state is field 3; utime 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let (a, b) = if children { (13, 14) } else { (11, 12) };
    let ticks = fields.get(a).copied().unwrap_or(0) + fields.get(b).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Wall and CPU clocks started together.
struct Clock {
    wall: Instant,
    cpu: Duration,
    children: bool,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: cpu_time(false),
            children: false,
        }
    }

    fn children() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: cpu_time(true),
            children: true,
        }
    }

    fn row(&self, name: impl Into<String>, events: usize) -> Row {
        Row {
            name: name.into(),
            events,
            elapsed: self.wall.elapsed(),
            cpu: cpu_time(self.children).saturating_sub(self.cpu),
            note: String::new(),
        }
    }
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "| {:<58} | {:>9} | {:>7} | {:>7} | {:>10} | note",
        "benchmark", "events", "wall s", "CPU s", "events/s"
    );
    println!(
        "|{:-<60}|{:-<11}|{:-<9}|{:-<9}|{:-<12}|------",
        "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<58} | {:>9} | {:>7.3} | {:>7.2} | {:>10.0} | {}",
            r.name,
            r.events,
            r.elapsed.as_secs_f64(),
            r.cpu.as_secs_f64(),
            r.rate(),
            r.note
        );
    }
}

fn ratio(a: &Row, b: &Row) -> String {
    format!("{:.2}x the rate of \"{}\"", a.rate() / b.rate(), b.name)
}

// ------------------------------------------------------------------ (1) core

/// An engine with the opening events applied: [`INSTANCES`] live instances.
fn warm_engine(rules: &Arc<Ruleset>, tracking: bool) -> Driver {
    let engine = Engine::new(rules.clone());
    let engine = if tracking {
        engine
    } else {
        engine.without_change_tracking()
    };
    let mut driver = Driver::new(engine);
    let mut out = Vec::new();
    for line in opening_lines() {
        driver.feed(&decode(&line), &mut out);
        out.clear();
    }
    assert_eq!(driver.engine.world().instances.len(), INSTANCES);
    driver
}

fn bench_core(count: usize, sizes: &[usize]) {
    let mut rows = Vec::new();
    for &rules_n in sizes {
        let rules = compile(&rule_sources(rules_n));
        let mut lines = Vec::with_capacity(count);
        workload_lines(rules_n, count, |l| lines.push(l.to_string()));

        // Ceiling: the bare cost of decoding the same events.
        let t = Clock::start();
        for l in &lines {
            std::hint::black_box(decode(l));
        }
        let decode_row = t.row(
            format!("decode only (Event::from_json_str), {rules_n} rules"),
            count,
        );
        let events: Vec<Event> = lines.iter().map(|l| decode(l)).collect();

        // Warm-up, not timed: the same workload once through a throwaway engine, so
        // the timed passes do not pay the process's one-time costs (the allocator
        // mapping and faulting in its first gigabyte, cold code). Without it the
        // first timed row measured ~15% below a repeat of itself.
        let mut out = Vec::new();
        {
            let mut driver = warm_engine(&rules, false);
            for e in &events {
                driver.feed(e, &mut out);
                out.clear();
            }
        }

        let mut driver = warm_engine(&rules, false);
        let mut decisions = 0usize;
        let t = Clock::start();
        for e in &events {
            driver.feed(e, &mut out);
            decisions += out.len();
            out.clear();
        }
        let apply = {
            let mut r = t.row(
                format!("match+apply, {rules_n} rules, {INSTANCES} live instances"),
                count,
            );
            r.note = format!("{decisions} decisions");
            r
        };
        assert_eq!(driver.engine.stats.unrouted, 0);
        drop(driver);

        let mut driver = warm_engine(&rules, true);
        let t = Clock::start();
        for (i, e) in events.iter().enumerate() {
            driver.feed(e, &mut out);
            out.clear();
            if i % BATCH == BATCH - 1 {
                drop(driver.engine.take_changes());
            }
        }
        let tracked = t.row(format!("match+apply+track changes, {rules_n} rules"), count);
        drop(driver);
        drop(events);

        let mut driver = warm_engine(&rules, false);
        let t = Clock::start();
        for l in &lines {
            driver.feed(&decode(l), &mut out);
            out.clear();
        }
        let mut e2e = t.row(format!("decode+match+apply, {rules_n} rules"), count);
        e2e.note = ratio(&e2e, &decode_row);
        rows.extend([decode_row, apply, tracked, e2e]);
    }

    // Every event decides: the cost of a decision and its evidence hash.
    let rules = compile(&rule_sources(1_000));
    let mut rng = Rng(7);
    let mut line = String::new();
    let events: Vec<Event> = (0..count / 4)
        .map(|n| {
            let r = rng.below(1_000);
            let at = start_time() + chrono::Duration::milliseconds(n as i64);
            event_line(&mut line, n, &format!("gen.r{r}"), "S-1", 995, at);
            decode(&line)
        })
        .collect();
    let mut driver = Driver::new(Engine::new(rules).without_change_tracking());
    let mut out = Vec::new();
    let t = Clock::start();
    for e in &events {
        driver.feed(e, &mut out);
        out.clear();
    }
    rows.push(t.row(
        "match+apply, every event a violation (1 decision each)".to_string(),
        events.len(),
    ));
    print_table(
        "(1) in memory, one core (target: >= 1,000,000 events/s)",
        &rows,
    );
}

// ------------------------------------------------------------------ (2) replay

fn bench_dir() -> PathBuf {
    std::env::temp_dir().join("steward-bench")
}

/// Writes the rules directory and the events file for the replay benchmark.
fn write_replay_inputs(count: usize) -> (PathBuf, PathBuf) {
    let dir = bench_dir();
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    for (path, text) in rule_sources(1_000) {
        let name = Path::new(&path).file_name().unwrap().to_owned();
        std::fs::write(rules_dir.join(name), text).unwrap();
    }
    let events = dir.join(format!("events-{count}.jsonl"));
    if !events.exists() {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&events).unwrap());
        for l in opening_lines() {
            writeln!(w, "{l}").unwrap();
        }
        workload_lines(1_000, count - INSTANCES, |l| writeln!(w, "{l}").unwrap());
        w.flush().unwrap();
    }
    (rules_dir, events)
}

fn fresh_db(name: &str) -> PathBuf {
    let db = bench_dir().join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    db
}

/// What `steward replay --store` does, in process: decode, feed, print, commit per batch.
fn replay_in_process(rules: &Arc<Ruleset>, events: &Path, db: &Path) -> (usize, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(SqliteStore::open(db)).unwrap();
    let world = runtime.block_on(store.load(rules)).unwrap();
    let mut driver = Driver::new(Engine::with_world(rules.clone(), world));
    let mut sink = std::io::BufWriter::new(std::io::sink());
    let mut out: Vec<Decision> = Vec::new();
    let mut fed = 0;
    let mut last = None;
    let commit = |driver: &mut Driver| {
        let changes = driver.engine.take_changes();
        let meta = Meta::of(driver.engine.world());
        runtime
            .block_on(store.commit(rules, &changes, &meta))
            .unwrap();
    };
    let file = std::fs::File::open(events).unwrap();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.unwrap();
        let Some(Ok(event)) = decode_line(i + 1, &line, true) else {
            continue;
        };
        fed += 1;
        last = event.time.max(last);
        driver.feed(&event, &mut out);
        for d in out.drain(..) {
            writeln!(sink, "{}", d.to_json_line()).unwrap();
        }
        if fed % BATCH == 0 {
            commit(&mut driver);
        }
    }
    if let Some(end) = last {
        driver.advance(end, &mut out);
    }
    commit(&mut driver);
    (fed, driver.engine.stats.decisions)
}

/// The ceiling: a raw sqlx loop inserting one row per event (the de-duplication
/// row every event costs) in transactions of [`BATCH`], no engine; one INSERT per
/// row, or `rows` rows per INSERT.
fn raw_inserts(events: &Path, db: &Path, rows: usize) -> Row {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(SqliteStore::open(db)).unwrap();
    let ids: Vec<String> = BufReader::new(std::fs::File::open(events).unwrap())
        .lines()
        .map(|l| {
            let l = l.unwrap();
            let start = l.find("\"id\":\"").unwrap() + 6;
            let end = start + l[start..].find('"').unwrap();
            l[start..end].to_string()
        })
        .collect();
    let t = Clock::start();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = store.connection().await;
        for batch in ids.chunks(BATCH) {
            let mut tx = conn.begin().await.unwrap();
            for chunk in batch.chunks(rows) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO seen_events (source, id) ",
                );
                q.push_values(chunk, |mut b, id| {
                    b.push_bind("https://bench.example/jira")
                        .push_bind(id.as_str());
                });
                q.build()
                    .persistent(chunk.len() == rows)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    });
    let name = if rows == 1 {
        "raw sqlx loop, 1 seen row per event, 1 row per INSERT".to_string()
    } else {
        format!("raw sqlx loop, 1 seen row per event, {rows} rows per INSERT")
    };
    t.row(name, ids.len())
}

fn bench_replay(count: usize) {
    let (rules_dir, events) = write_replay_inputs(count);
    let sources: Vec<(String, String)> = {
        let mut paths: Vec<_> = std::fs::read_dir(&rules_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    let rules = compile(&sources);
    let mut rows = Vec::new();

    let t = Clock::start();
    let mut n = 0;
    for l in BufReader::new(std::fs::File::open(&events).unwrap()).lines() {
        std::hint::black_box(decode(&l.unwrap()));
        n += 1;
    }
    let decode_row = t.row("read + decode only".to_string(), n);

    let raw1 = raw_inserts(&events, &fresh_db("raw1.db"), 1);
    let raw = raw_inserts(&events, &fresh_db("raw.db"), 256);

    let db = fresh_db("inproc.db");
    let t = Clock::start();
    let (fed, decisions) = replay_in_process(&rules, &events, &db);
    let mut inproc = t.row("in-process replay --store (batches of 4096)", fed);
    inproc.note = format!(
        "{decisions} decisions; {}; {}",
        ratio(&inproc, &decode_row),
        ratio(&inproc, &raw)
    );
    rows.extend([decode_row, raw1, raw, inproc]);

    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/steward");
    if cli.exists() {
        let db = fresh_db("cli.db");
        let t = Clock::children();
        let status = std::process::Command::new(&cli)
            .arg("replay")
            .arg(&rules_dir)
            .arg("--events")
            .arg(&events)
            .arg("--store")
            .arg(&db)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let mut row = t.row(
            "`steward replay --store` end to end (process)".to_string(),
            fed,
        );
        row.note = format!("{}; {}", ratio(&row, &rows[0]), ratio(&row, &rows[2]));
        rows.push(row);
    } else {
        println!("(skipping the CLI row: build target/release/steward first)");
    }
    print_table(
        &format!(
            "(2) replay of {count} events with durable SQLite state (target: >= 100,000 events/s)"
        ),
        &rows,
    );
}

// ------------------------------------------------------------------ (3) memory

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn bench_memory() {
    const N: usize = 200_000;
    let rules = compile(&rule_sources(1_000));
    let mut line = String::new();
    // Decode first, so the events themselves are not counted.
    let events: Vec<Event> = (0..N)
        .map(|i| {
            let at = start_time() + chrono::Duration::milliseconds(i as i64);
            let w = i % WORKFLOWS;
            event_line(
                &mut line,
                i,
                &format!("gen.w{w}.open"),
                &format!("K-{i}"),
                0,
                at,
            );
            decode(&line)
        })
        .collect();
    let mut driver = Driver::new(Engine::new(rules).without_change_tracking());
    let mut out = Vec::new();
    let before = rss_bytes();
    for e in &events {
        driver.feed(e, &mut out);
        out.clear();
    }
    let after = rss_bytes();
    let world = driver.engine.world();
    assert_eq!(world.instances.len(), N);
    let per = (after - before) as f64 / N as f64;
    println!("\n(3) peak memory per idle workflow instance (target: <= 1024 bytes)");
    println!(
        "{N} idle instances (state `open`, one 30-day timer each, plus the de-duplication \
         entry of the event that opened it): RSS +{} KiB = {per:.0} bytes per instance",
        (after - before) / 1024
    );
    println!(
        "world: {} instances, {} timers, {} seen ids",
        world.instances.len(),
        world.timers.len(),
        world.seen.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut count = 1_000_000usize;
    let mut which = Vec::new();
    let mut sizes = vec![1_000, 10_000];
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--events" => {
                count = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--rules" => {
                sizes = vec![args[i + 1].parse().unwrap()];
                i += 1;
            }
            "--bench" => {}
            other => which.push(other.to_string()),
        }
        i += 1;
    }
    let all = which.is_empty();
    let want = |name: &str| all || which.iter().any(|w| w == name);
    if want("memory") {
        bench_memory();
    }
    if want("core") {
        bench_core(count, &sizes);
    }
    if want("replay") {
        bench_replay(count);
    }
}
