//! `[cluster]` while PostgreSQL is restarted mid-stream (`pg_ctlcluster … restart`
//! on this machine): the engine stops acknowledging, retries, takes its partitions
//! again and finishes with every event applied once. A test binary of its own, so the
//! restart cannot disturb other tests (cargo runs test binaries one at a time).
//!
//! Skips with a message when RabbitMQ or PostgreSQL is unreachable or the server
//! cannot be restarted from here; fails then when `STEWARD_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::*;

/// The local cluster's version directory (`/etc/postgresql/15`), if this machine
/// runs PostgreSQL through Debian's pg_ctlcluster.
fn local_cluster() -> Option<String> {
    let entries = std::fs::read_dir("/etc/postgresql").ok()?;
    let mut versions: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions.pop()
}

fn restart_postgres(version: &str) {
    let status = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            version,
            "main",
            "restart",
            "-m",
            "fast",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctlcluster restart failed");
}

#[test]
fn a_postgres_restart_mid_stream_loses_and_duplicates_nothing() {
    const PARTITIONS: u32 = 4;
    let Some(version) = local_cluster() else {
        assert!(
            !required(),
            "PostgreSQL cannot be restarted here (no /etc/postgresql)"
        );
        eprintln!("SKIPPED a_postgres_restart…: no local PostgreSQL cluster to restart");
        return;
    };
    let Some(broker) = Broker::connect("pgrestart", PARTITIONS) else {
        return;
    };
    let name = format!("steward_{}", broker.base);
    let Some(schemas) = Schemas::new("pgrestart", &name, PARTITIONS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(dir.path());
    let events = events(400, 30);
    let reference = reference(dir.path(), &rules, &events);

    let config = config(dir.path(), &broker, &name);
    // The partitions commit through a group committer ([cluster] is the file's last
    // table), so the restart also breaks statements carrying several partitions.
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("group_commit = 2\n");
    std::fs::write(&config, toml).unwrap();
    let a = spawn(dir.path(), &rules, &config, "a");
    wait_until(
        dir.path(),
        60,
        Duration::from_millis(100),
        || "queues never declared".to_string(),
        || broker.backlog().is_some(),
    );
    // The second half is published only after the restart, so the stream cannot end
    // before it.
    let half = events.len() / 2;
    broker.publish(&events[..half]);
    let total = events.len() as i64;
    wait_until(
        dir.path(),
        120,
        Duration::from_millis(20),
        || "no progress".to_string(),
        || schemas.applied() >= total / 5,
    );
    restart_postgres(&version);
    broker.publish(&events[half..]);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // The server refuses connections for a moment after the restart.
        let applied = schemas.applied();
        if applied >= total && broker.backlog() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{applied} of {total} applied\n{}",
            logs(dir.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(vec![a], || logs(dir.path()));
    let log = logs(dir.path());
    assert!(
        log.contains("lost the control connection") || log.contains("ended:"),
        "the restart went unnoticed\n{log}"
    );
    assert!(
        log.matches("taking partition").count() > PARTITIONS as usize,
        "{log}"
    );
    assert_matches(&schemas, &rules, &reference, &log);
}
