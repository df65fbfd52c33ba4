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
    const PARTITIONS: usize = 4;
    let Some(version) = local_cluster() else {
        assert!(
            !required(),
            "PostgreSQL cannot be restarted here (no /etc/postgresql)"
        );
        eprintln!("SKIPPED a_postgres_restart…: no local PostgreSQL cluster to restart");
        return;
    };
    let Some(d) = Deployment::new("pgrestart", PARTITIONS as u32, 400, 30) else {
        return;
    };
    // The partitions commit through a group committer ([cluster] is the file's last
    // table), so the restart also breaks statements carrying several partitions.
    let mut toml = std::fs::read_to_string(&d.config).unwrap();
    toml.push_str("group_commit = 2\n");
    std::fs::write(&d.config, toml).unwrap();
    let a = d.spawn("a");
    d.wait_until_declared();
    // The second half is published only after the restart, so the stream cannot end
    // before it.
    d.publish_first_half(5);
    restart_postgres(&version);
    d.publish_second_half();
    // The server refuses connections for a moment after the restart.
    d.wait_until_applied();
    terminate(vec![a], || d.logs());
    let log = d.logs();
    assert!(
        log.contains("lost the control connection") || log.contains("ended:"),
        "the restart went unnoticed\n{log}"
    );
    assert!(
        log.matches("taking partition").count() > PARTITIONS,
        "{log}"
    );
    d.assert_matches(&log);
}
