//! `[cluster]`: three `steward run` processes share one RabbitMQ and one PostgreSQL
//! on this machine; one is killed with SIGKILL mid-stream and restarted. Every event
//! must take effect exactly once, in order per key, with the same decisions as one
//! process reading the same events from a file.
//!
//! Needs the broker's consistent-hash exchange plugin (`.ci/run` enables it). Skips
//! with a message when RabbitMQ or PostgreSQL is unreachable; fails then when
//! `STEWARD_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::amqp::{close_connection, connections_of};
use common::cluster::*;
use common::http::{free_port, get, sample};
use serde_json::Value;

#[test]
fn three_processes_one_killed_apply_every_event_once_in_order_per_key() {
    let Some(d) = Deployment::new("cluster", 8, 2000, 50) else {
        return;
    };
    assert_eq!(d.events.len(), 2000 * 51 + 1800);
    let a = d.spawn("a");
    let mut b = d.spawn("b");
    let c = d.spawn("c");
    let every = Duration::from_millis(50);
    d.wait_until_declared();
    // The first half, then SIGKILL one member mid-stream (the second half is published
    // only after the kill, so the stream cannot end first), then start it again.
    d.publish_first_half(4);
    b.kill();
    let b2 = d.spawn("b2");
    // The second half once the restarted member has its share again.
    wait_until(
        d.path(),
        120,
        every,
        || "the restarted member never took a partition".to_string(),
        || {
            std::fs::read_to_string(d.path().join("b2.err"))
                .unwrap_or_default()
                .contains("taking partition")
        },
    );
    d.publish_second_half();
    d.wait_until_applied();
    terminate(vec![a, c, b2], || d.logs());
    let log = d.logs();
    let b_log = log.split("--- b\n").nth(1).unwrap_or_default();
    assert!(b_log.contains("taking partition"), "{log}");
    let b2_log = log.split("--- b2\n").nth(1).unwrap_or_default();
    assert!(
        b2_log.contains("taking partition"),
        "the restarted member never took a partition\n{log}"
    );
    d.assert_matches(&log);
}

/// A process's partitions consume on one connection to the broker. Closed from the
/// broker's side mid-stream, it ends every partition's session; each reconnects (on a
/// new shared connection) and every event still takes effect exactly once.
#[test]
fn partitions_share_one_connection_and_all_survive_its_cut() {
    const PARTITIONS: usize = 4;
    let Some(d) = Deployment::new("cluster_cut", PARTITIONS as u32, 400, 30) else {
        return;
    };
    let a = d.spawn("a");
    let needle = format!("cluster {}", d.name);
    let every = Duration::from_millis(50);
    let consuming = || d.logs().matches("amqp: consuming from queue").count();
    wait_until(
        d.path(),
        60,
        every,
        || "the partitions never consumed".to_string(),
        || consuming() >= PARTITIONS,
    );
    let Some(connections) = connections_of(&needle) else {
        assert!(!required(), "rabbitmqctl is not usable here");
        eprintln!("SKIPPED partitions_share_one_connection…: rabbitmqctl is not usable here");
        return;
    };
    assert_eq!(connections.len(), 1, "{connections:?}\n{}", d.logs());
    // The second half is published only after the cut, so the stream cannot end first.
    d.publish_first_half(5);
    close_connection(&connections[0]);
    wait_until(
        d.path(),
        60,
        every,
        || "not every partition reconnected".to_string(),
        || consuming() >= 2 * PARTITIONS,
    );
    d.publish_second_half();
    d.wait_until_applied();
    let again = connections_of(&needle).unwrap_or_default();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again, connections, "the cut connection is still open");
    terminate(vec![a], || d.logs());
    let log = d.logs();
    assert!(
        log.matches("reconnecting in").count() >= PARTITIONS,
        "{log}"
    );
    d.assert_matches(&log);
}

/// `/readyz` and `/metrics` of `[cluster]` members: a member is ready once its
/// partitions run (their stores answer, their consumers consume) and stays ready while
/// it hands partitions over to a member that joins; each counts the partitions it
/// owns, and together they own every partition.
#[test]
fn members_are_ready_and_count_the_partitions_they_own() {
    const PARTITIONS: u32 = 4;
    let Some(d) = Deployment::new("cluster_ops", PARTITIONS, 200, 10) else {
        return;
    };
    let (port_a, port_b) = (free_port(), free_port());
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let (listen_a, listen_b) = (listen(port_a), listen(port_b));
    let a = d.spawn_with("a", &[("STEWARD_OPS__LISTEN", &listen_a)]);
    let every = Duration::from_millis(50);
    let metric = |port: u16, series: &str| {
        get(port, "/metrics").and_then(|(status, text)| {
            assert_eq!(status, 200, "{text}");
            sample(&text, series)
        })
    };
    let owned = |port| metric(port, "steward_cluster_partitions_owned");
    let readyz = |port| get(port, "/readyz");
    let ready = |port| readyz(port).is_some_and(|(status, _)| status == 200);
    wait_until(
        d.path(),
        60,
        every,
        || format!("a alone: owns {:?}; {:?}", owned(port_a), readyz(port_a)),
        || owned(port_a) == Some(f64::from(PARTITIONS)) && ready(port_a),
    );
    let (_, body) = readyz(port_a).unwrap();
    let checks: Value = serde_json::from_str(&body).unwrap();
    for check in ["engine", "store", "amqp"] {
        assert_eq!(checks["checks"][check], "ok", "{body}");
    }
    // A second member joins: a hands half its partitions over, and is ready all along.
    let b = d.spawn_with("b", &[("STEWARD_OPS__LISTEN", &listen_b)]);
    let mut answers = Vec::new();
    wait_until(
        d.path(),
        60,
        every,
        || format!("a owns {:?}, b owns {:?}", owned(port_a), owned(port_b)),
        || {
            answers.extend(readyz(port_a));
            owned(port_a) == Some(2.0) && owned(port_b) == Some(2.0) && ready(port_b)
        },
    );
    let unready: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        unready.is_empty(),
        "a was not ready while handing over: {unready:?}"
    );
    assert!(ready(port_a), "{:?}", readyz(port_a));
    for port in [port_a, port_b] {
        assert_eq!(metric(port, "steward_cluster_members"), Some(2.0));
    }
    let change = |port, change: &str| {
        let series = format!("steward_cluster_partition_changes_total{{change=\"{change}\"}}");
        metric(port, &series).unwrap_or(0.0)
    };
    assert_eq!(change(port_a, "taken"), 4.0);
    assert_eq!(change(port_a, "handed_over"), 2.0);
    assert_eq!(change(port_b, "taken"), 2.0);
    // The events flow through both, and every one takes effect once.
    d.publish_all();
    d.wait_until_applied();
    terminate(vec![a, b], || d.logs());
    d.assert_matches(&d.logs());
}
