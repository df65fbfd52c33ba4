//! Durable timers at scale: `cargo bench --bench timers` (results and method in
//! BENCHMARKS.md, "Timers").
//!
//! Rows:
//! - **core**: the engine alone, on a virtual clock. `--pending` instances each arm a
//!   30-day timer; the same number of instances of a workflow without a timer is the
//!   peer. The difference is what a pending timer costs to schedule, and in memory
//!   (resident set of a child process per side). Then every timer fires in one
//!   `advance`.
//! - **run**: `steward run` on a SQLite store holding `--pending` pending timers (built
//!   with `steward replay --store`), fed events on stdin at `--rate` per second while
//!   `--firing` more timers fall due over 60 seconds. Lateness is the time from a
//!   timer's due instant to its decision on stdout (decisions are printed after their
//!   commit), p50 and p99.
//! - **overdue**: the same store after `--overdue` timers fell due while no process
//!   ran; the time a restarted `steward run` takes to fire them all, beside a restart
//!   with nothing due (loading alone).
//!
//! Arguments: `--pending N` (default 1000000), `--firing N` (60000), `--rate N` (2000),
//! `--overdue N` (100000), `--only core|run`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

const RULES: &str = r#"
workflow hold key event.subject {
  control "8.6.1" "Held items expire after thirty days" detective
  start on "hold.opened"
  state waiting {
    after 30 days -> expired
    on "hold.closed" -> done
  }
  final state expired
  final state done
}

workflow soon key event.subject {
  control "8.6.1" "Items are chased after a day" detective
  start on "soon.opened"
  state waiting {
    after 1 day -> chased
  }
  final state chased
}

workflow plain key event.subject {
  control "8.6.1" "Plain items wait for their close" detective
  start on "plain.opened"
  state waiting {
    on "plain.closed" -> done
  }
  final state done
}
"#;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap())
        .unwrap_or(default)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn event(ty: &str, id: &str, subject: &str, time: Option<DateTime<Utc>>) -> String {
    let time = time
        .map(|t| format!(",\"time\":\"{}\"", rfc3339(t)))
        .unwrap_or_default();
    format!(
        "{{\"specversion\":\"1.0\",\"id\":\"{id}\",\"source\":\"bench\",\"type\":\"{ty}\"{time},\"subject\":\"{subject}\",\"data\":{{}}}}"
    )
}

/// Resident and peak resident memory of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|kb| kb.parse::<u64>().unwrap() * 1024)
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn peak_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(|kb| kb.parse::<u64>().unwrap() * 1024)
        })
        .unwrap_or(0)
}

fn ruleset() -> Arc<steward_engine::ruleset::Ruleset> {
    let sources = [steward_dsl::Source {
        path: "timers.stw".into(),
        text: RULES.into(),
    }];
    let checked = steward_dsl::check(&sources);
    assert!(checked.is_ok());
    Arc::new(steward_engine::ruleset::Ruleset::compile(&checked.files, &[RULES]).unwrap())
}

/// The child side of the core row: applies `n` opening events of `ty` and prints
/// "nanoseconds-per-event resident-bytes-added fire-nanoseconds-per-timer".
fn core_child(ty: &str, n: usize) {
    use steward_engine::core::Engine;
    use steward_engine::event::Event;
    let rules = ruleset();
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            Event::from_json_str(&event(ty, &format!("e{i}"), &format!("k{i}"), None)).unwrap()
        })
        .collect();
    let (before, _) = memory();
    let mut engine = Engine::new(rules);
    engine.start(start);
    let mut out = Vec::new();
    let began = Instant::now();
    for (i, e) in events.iter().enumerate() {
        // One second apart: due instants are distinct, as in life.
        let now = start + TimeDelta::seconds(i as i64);
        engine.apply(e, now, &mut out);
        out.clear();
        if i % 4096 == 4095 {
            // A batch's changes go to the store and are dropped.
            drop(engine.take_changes());
        }
    }
    drop(engine.take_changes());
    let per_event = began.elapsed().as_nanos() as f64 / n as f64;
    let (after, _) = memory();
    let pending = engine.world().timers.len();
    let began = Instant::now();
    engine.advance(start + TimeDelta::days(400), &mut out);
    let fired = engine.stats.timers_fired;
    let per_fire = if fired > 0 {
        began.elapsed().as_nanos() as f64 / fired as f64
    } else {
        0.0
    };
    assert_eq!(fired as usize, pending);
    println!(
        "{per_event:.0} {} {per_fire:.0} {pending}",
        after.saturating_sub(before)
    );
}

fn core(n: usize) {
    let me = std::env::current_exe().unwrap();
    let side = |ty: &str| -> (f64, f64, f64, usize) {
        let out = Command::new(&me)
            .args(["--child", ty, &n.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1], v[2], v[3] as usize)
    };
    let (plain_ns, plain_bytes, _, _) = side("plain.opened");
    let (hold_ns, hold_bytes, fire_ns, pending) = side("hold.opened");
    assert_eq!(pending, n);
    println!(
        "core      {n} instances without a timer: {plain_ns:.0} ns/event, {:.0} MiB ({:.0} B/instance)",
        plain_bytes / 1048576.0,
        plain_bytes / n as f64
    );
    println!(
        "core      {n} instances with a pending timer: {hold_ns:.0} ns/event, {:.0} MiB ({:.0} B/instance)",
        hold_bytes / 1048576.0,
        hold_bytes / n as f64
    );
    println!(
        "core      a pending timer costs {:.0} ns to schedule and {:.0} B; firing {n} in due order: {fire_ns:.0} ns/timer",
        hold_ns - plain_ns,
        (hold_bytes - plain_bytes) / n as f64
    );
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    for l in lines {
        writeln!(w, "{l}").unwrap();
    }
    w.flush().unwrap();
}

fn replay(steward: &Path, rules: &Path, events: &Path, db: &Path) -> Duration {
    let began = Instant::now();
    let out = Command::new(steward)
        .arg("replay")
        .arg(rules)
        .arg("--events")
        .arg(events)
        .arg("--store")
        .arg(db)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    began.elapsed()
}

/// Timer decisions of `soon` instances on stdout: (due instant, when seen).
fn soon_fired(line: &str) -> Option<DateTime<Utc>> {
    if !line.contains("\"kind\":\"timer\"") || !line.contains("\"workflow\":\"soon\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["at"].as_str()?.parse().ok()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn run(pending: usize, firing: usize, rate: usize, overdue: usize) {
    let steward = PathBuf::from(env!("CARGO_BIN_EXE_steward"));
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("timers.stw");
    std::fs::write(&rules, RULES).unwrap();
    let db = dir.path().join("timers.db");
    let t0 = Utc::now();

    // 1. `pending` holds, opened 29 days ago: their timers fall due tomorrow.
    let opened = t0 - TimeDelta::days(29);
    let holds = dir.path().join("holds.jsonl");
    write_lines(
        &holds,
        (0..pending).map(|i| {
            event(
                "hold.opened",
                &format!("h{i}"),
                &format!("h{i}"),
                Some(opened),
            )
        }),
    );
    let took = replay(&steward, &rules, &holds, &db);
    println!(
        "run       {pending} pending timers stored by `steward replay --store`: {:.1} s ({:.0} timers/s)",
        took.as_secs_f64(),
        pending as f64 / took.as_secs_f64()
    );

    // The same store, kept for step 4.
    let overdue_db = dir.path().join("overdue.db");
    for suffix in ["", "-wal"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", overdue_db.display())).unwrap();
        }
    }

    // 2. `firing` chases falling due one after the other over 60 s, starting 45 s
    //    after they are stored (time enough for `steward run` to load the store).
    let window = 60.0;
    let t1 = Utc::now() + TimeDelta::seconds(45);
    let soon = dir.path().join("soon.jsonl");
    write_lines(
        &soon,
        (0..firing).map(|i| {
            let due =
                t1 + TimeDelta::microseconds((i as f64 * window * 1e6 / firing as f64) as i64);
            event(
                "soon.opened",
                &format!("s{i}"),
                &format!("s{i}"),
                Some(due - TimeDelta::days(1)),
            )
        }),
    );
    replay(&steward, &rules, &soon, &db);

    // 3. `steward run` with events on stdin: `rate` per second close holds (each
    //    cancels a timer) while the chases fall due.
    let mut child = Command::new(&steward)
        .arg("run")
        .arg(&rules)
        .arg("--db")
        .arg(&db)
        .arg("--events")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lateness = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let seen = Utc::now();
            if let Some(due) = soon_fired(&line) {
                lateness.push((seen - due).as_seconds_f64() * 1000.0);
            }
        }
        lateness
    });
    let mut stdin = child.stdin.take().unwrap();
    let began = Instant::now();
    let end = t1 + TimeDelta::seconds(window as i64 + 2);
    let mut sent = 0usize;
    while Utc::now() < end {
        let due = began + Duration::from_secs_f64(sent as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let line = event(
            "hold.closed",
            &format!("c{sent}"),
            &format!("h{sent}"),
            None,
        );
        writeln!(stdin, "{line}").unwrap();
        sent += 1;
    }
    let peak = peak_of(pid);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let mut lateness = reader.join().unwrap();
    assert_eq!(lateness.len(), firing, "every chase fired once");
    lateness.sort_by(f64::total_cmp);
    let early = lateness.iter().filter(|l| **l < 0.0).count();
    println!(
        "run       {firing} timers due over {window:.0} s beside {} pending, {sent} events at {rate}/s: lateness p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (early: {early}); peak RSS {:.0} MiB",
        pending - sent.min(pending),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness[lateness.len() - 1],
        peak as f64 / 1048576.0
    );

    // 4. On the copy of step 1's store, `overdue` chases that fell due in the last
    //    100 s, while no process ran; a restart fires them.
    let from = Utc::now() - TimeDelta::seconds(100);
    let late = dir.path().join("late.jsonl");
    write_lines(
        &late,
        (0..overdue).map(|i| {
            let due = from + TimeDelta::microseconds(i as i64 * 10);
            event(
                "soon.opened",
                &format!("o{i}"),
                &format!("o{i}"),
                Some(due - TimeDelta::days(1)),
            )
        }),
    );
    let db = overdue_db;
    replay(&steward, &rules, &late, &db);
    let restart = |expect: usize| -> Duration {
        let began = Instant::now();
        let out = Command::new(&steward)
            .arg("run")
            .arg(&rules)
            .arg("--db")
            .arg(&db)
            .arg("--events")
            .arg("/dev/null")
            .output()
            .unwrap();
        let took = began.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let dues: Vec<DateTime<Utc>> = text.lines().filter_map(soon_fired).collect();
        assert_eq!(dues.len(), expect, "overdue timers fired once");
        assert!(dues.windows(2).all(|w| w[0] <= w[1]), "in due order");
        took
    };
    let firing_run = restart(overdue);
    let loading_run = restart(0);
    println!(
        "overdue   restart with {overdue} overdue timers: {:.2} s; restart with none: {:.2} s; firing them: {:.2} s",
        firing_run.as_secs_f64(),
        loading_run.as_secs_f64(),
        (firing_run.saturating_sub(loading_run)).as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        core_child(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let pending = arg(&args, "--pending", 1_000_000);
    println!("cores: {}", std::thread::available_parallelism().unwrap());
    if wants("core") {
        core(pending);
    }
    if wants("run") {
        run(
            pending,
            arg(&args, "--firing", 60_000),
            arg(&args, "--rate", 2_000),
            arg(&args, "--overdue", 100_000),
        );
    }
}
