//! `[cluster]`: several `steward run` processes share the work over one RabbitMQ and
//! one PostgreSQL database.
//!
//! **Partitions.** Events are published to an `x-consistent-hash` exchange with the
//! workflow key (say the Jira issue key) as routing key; the exchange spreads keys over
//! `partitions` durable queues (`QUEUE.p0`, `QUEUE.p1`, …), so all events of one key land
//! in one queue, in publish order. Each partition is a world of its own: its instances,
//! timers, seen ids, outbox and evidence chain are the rows of partition N (`part`) in
//! the tables of the PostgreSQL schema `NAME`, loaded when a process takes the
//! partition over. (Before partitions shared tables, each had a schema `NAME_pN`; a
//! process taking a partition moves such a schema's rows in, once.)
//!
//! **Ownership.** A process owns a partition while it holds the session-level
//! advisory lock `(partition namespace, N)` on its control connection; only the owner
//! consumes the partition's queue, writes its rows, fires its timers and dispatches
//! its outbox. The queues are also declared single-active-consumer, so even a process
//! that lost its lock without noticing cannot receive alongside the new owner. A
//! process that dies loses its connections and, with them, its locks and its
//! unacknowledged deliveries: the broker redelivers them to the next owner, which
//! loads the partition's state from the store and drops what was already applied.
//!
//! **Membership and balance.** Each process also holds a member lock `(member
//! namespace, random id)`; the number of member locks is the number of live
//! processes. Every `rebalance_ms`, a process that owns more than its share
//! (`ceil(partitions / members)`) hands the surplus back (stop consuming, commit,
//! acknowledge, unlock), and one that owns less tries the free partitions. Processes
//! join and leave with no manual step.
//!
//! **Fencing.** A partition's commits are refused once its process lost the lock
//! (its control connection died while its other connections lived on): each commit
//! checks, in its transaction, that the control session still holds its member lock
//! (the partition locks live and die with it), under a shared barrier lock the next
//! owner waits on before loading (`Fence`).
//!
//! **Commits.** Each partition commits on its own, or, with `group_commit = N`,
//! through the process's committer (`GroupCommit`): up to N statements in flight,
//! each carrying every partition commit queued meanwhile, each commit with its own
//! fence, so partitions committing a few events each share the server's fixed cost
//! per transaction, and, their tables being one set, one part per table written.
//!
//! **Cadences** belong to partition 0, so each period fires once in the cluster.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use steward_engine::core::Engine;
use steward_engine::dispatch::Invoker;
use steward_engine::ruleset::Ruleset;
use steward_engine::store::AnyStore;
use steward_engine::store::postgres::{
    Fence, GroupCommit, MAX_IN_FLIGHT, PostgresStore, is_url, redact,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::amqp::{AmqpConfig, Broker};
use super::ops::Ops;
use super::run::{Config, Runner};

/// `[cluster]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Partitions of the event stream; 0 (the default) runs unclustered. Fixed for
    /// the life of a deployment: it decides which queue and partition each key lives in.
    pub partitions: u32,
    /// Names the deployment: its schema and the namespace of its advisory locks. Two
    /// deployments on one database need different names.
    pub name: String,
    /// How often membership is read and partitions rebalanced, in milliseconds.
    pub rebalance_ms: u64,
    /// 0 (the default): each partition commits on its own. N: the process's
    /// partitions commit through one committer keeping up to N statements in flight,
    /// each carrying the commits of several partitions (group commit).
    pub group_commit: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            partitions: 0,
            name: "steward".to_string(),
            rebalance_ms: 1000,
            group_commit: 0,
        }
    }
}

/// Most partitions a deployment may have.
const MAX_PARTITIONS: u32 = 1024;

/// Longest wait before a failed partition is tried again.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// What every partition of this process shares.
struct Shared {
    config: Config,
    url: String,
    rules: Arc<Ruleset>,
    host: Option<(Arc<dyn Invoker>, u64)>,
    /// The partitions' committer, with `group_commit` (see [`GroupCommit`]).
    group: Option<GroupCommit>,
    /// The partitions' connection to the broker: each consumes on channels of its own.
    broker: Broker,
    /// `/readyz` and `/metrics`: the owned partitions' stores are probed.
    ops: Ops,
}

/// A partition this process owns: how to stop its runner, and the runner's task.
struct Owned {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

/// The advisory-lock namespaces (first key) of a deployment: members, partitions,
/// and the partitions' commit barriers. Derived from the name with FNV-1a, kept
/// non-negative so they read the same as `pg_locks.classid`.
fn namespaces(name: &str) -> (i32, i32, i32) {
    let fnv = |text: &str| -> i32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in text.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        (h & 0x7fff_ffff) as i32
    };
    (
        fnv(&format!("{name}:members")),
        fnv(&format!("{name}:partitions")),
        fnv(&format!("{name}:barriers")),
    )
}

/// The schema of partition `i` before partitions shared the deployment's schema.
pub fn old_schema(name: &str, i: u32) -> String {
    format!("{name}_p{i}")
}

/// The queue of partition `i`, bound to the consistent-hash exchange with weight 1.
pub fn partition_queue(amqp: &AmqpConfig, i: u32) -> AmqpConfig {
    let mut q = amqp.clone();
    q.queue = format!("{}.p{i}", amqp.queue);
    q.exchange_type = "x-consistent-hash".to_string();
    q.routing_key = None;
    q.routing_keys = vec!["1".to_string()];
    q.single_active_consumer = true;
    q
}

/// What `[cluster]` needs of the configuration; the store's URL.
fn check(config: &Config) -> Result<String> {
    let cluster = &config.cluster;
    if cluster.partitions > MAX_PARTITIONS {
        bail!(
            "[cluster] partitions is {}; at most {MAX_PARTITIONS}",
            cluster.partitions
        );
    }
    if cluster.name.is_empty()
        || !cluster
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!(
            "[cluster] name `{}` must be letters, digits and `_` (it names a schema)",
            cluster.name
        );
    }
    let url = match config.store.path.to_str() {
        Some(url) if is_url(url) => url.to_string(),
        _ => bail!(
            "[cluster] needs a PostgreSQL store: set [store] path to a postgres:// URL (it is {})",
            config.store.path.display()
        ),
    };
    if config.amqp.is_none() {
        bail!("[cluster] needs an [amqp] table: partitions are queues");
    }
    if cluster.group_commit as usize > MAX_IN_FLIGHT {
        bail!(
            "[cluster] group_commit is {}; at most {MAX_IN_FLIGHT} statements in flight",
            cluster.group_commit
        );
    }
    if config.source.events.is_some() || config.source.watch.is_some() {
        bail!("[cluster] takes its events from [amqp]; remove the event file or watched directory");
    }
    Ok(url)
}

/// Runs this process as one member of the cluster until SIGTERM or Ctrl-C.
pub fn run(
    config: Config,
    rules: Arc<Ruleset>,
    host: Option<(Arc<dyn Invoker>, u64)>,
) -> Result<ExitCode> {
    let url = check(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async {
        let group = match config.cluster.group_commit {
            0 => None,
            n => Some(GroupCommit::new(&url, n as usize)?),
        };
        let amqp_url = config.amqp.as_ref().map_or("", |a| a.url.as_str());
        let name = format!("steward run: cluster {}", config.cluster.name);
        let broker = Broker::new(amqp_url, name);
        let ops = super::ops::start(&config.ops, None).await?;
        ops.partitions_follow();
        let shared = Rc::new(Shared {
            config,
            url,
            rules,
            host,
            group,
            broker: broker.clone(),
            ops,
        });
        let coordinated = coordinate(shared).await;
        broker.close().await;
        coordinated
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    result.map(|()| ExitCode::SUCCESS)
}

/// The control connection, with this process registered as a member.
struct Control {
    conn: PgConnection,
    /// The member lock's key: partition commits check that the control session still
    /// holds it (`Fence`).
    member: i32,
}

async fn connect_control(shared: &Shared, members: i32) -> Result<Control> {
    let mut conn = PgConnection::connect(&shared.url)
        .await
        .with_context(|| format!("connecting to {}", redact(&shared.url)))?;
    // A random member id, retried in the (unlikely) case it is taken.
    let mut member =
        (std::process::id() as i32 ^ Utc::now().timestamp_subsec_nanos() as i32) & 0x7fff_ffff;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(members)
            .bind(member)
            .fetch_one(&mut conn)
            .await?;
        if got {
            return Ok(Control { conn, member });
        }
        member = (member.wrapping_mul(31).wrapping_add(7)) & 0x7fff_ffff;
    }
}

/// Live members of the deployment: holders of a member lock in this database (held
/// exclusively; a commit checking a departed member's lock holds it shared a moment).
async fn count_members(conn: &mut PgConnection, members: i32) -> Result<u32> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND mode = 'ExclusiveLock' \
           AND classid::bigint = $1 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(i64::from(members))
    .fetch_one(conn)
    .await?;
    Ok(u32::try_from(n).unwrap_or(1).max(1))
}

async fn coordinate(shared: Rc<Shared>) -> Result<()> {
    let cluster = shared.config.cluster.clone();
    let (members_ns, partitions_ns, barriers_ns) = namespaces(&cluster.name);
    let mut control = connect_control(&shared, members_ns).await?;
    super::ops::set_check("engine", Ok(()));
    tracing::info!(
        "cluster `{}`: member {} of {} partitions on {}",
        cluster.name,
        control.member,
        cluster.partitions,
        redact(&shared.url)
    );
    let stop = super::amqp::shutdown_signal();
    tokio::pin!(stop);
    let mut owned: BTreeMap<u32, Owned> = BTreeMap::new();
    let mut failures: HashMap<u32, (u32, Instant)> = HashMap::new();
    let every = Duration::from_millis(cluster.rebalance_ms.max(50));
    // Start at a spot of our own, so processes starting together try different
    // partitions first.
    let offset = control.member.unsigned_abs() % cluster.partitions;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Members that started at the same time register before the first share is read.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let fence = Fence {
            namespace: members_ns,
            held: control.member,
            barrier: barriers_ns,
            key: 0,
        };
        let round = rebalance(
            &shared,
            &mut control.conn,
            &mut owned,
            &mut failures,
            (partitions_ns, fence),
            offset,
        )
        .await;
        if let Err(e) = round {
            // The control connection is gone, and the locks with it: another process
            // may take the partitions over, so ours stop at once, without committing
            // (what they had not committed is redelivered to the next owner).
            tracing::warn!(
                "cluster: lost the control connection ({e:#}); stopping every partition"
            );
            super::ops::set_check(
                "engine",
                Err("lost the cluster's control connection; reconnecting".to_string()),
            );
            super::ops::cluster_change("dropped", owned.len());
            super::ops::cluster_owned(0);
            for (i, o) in std::mem::take(&mut owned) {
                o.task.abort();
                forget_checks(i);
            }
            let mut wait = Duration::from_millis(200);
            control = loop {
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                match connect_control(&shared, members_ns).await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::warn!(
                            "cluster: reconnecting: {e:#}; again in {} ms",
                            wait.as_millis()
                        );
                        wait = (wait * 2).min(MAX_RETRY);
                    }
                }
            };
            tracing::info!("cluster: reconnected as member {}", control.member);
            super::ops::set_check("engine", Ok(()));
        }
    }
    tracing::info!(
        "cluster: stopping {} partition(s): committing and acknowledging what was received",
        owned.len()
    );
    super::ops::set_check("engine", Err("stopping".to_string()));
    let all: Vec<u32> = owned.keys().copied().collect();
    for i in all {
        release(&mut control.conn, &mut owned, i, partitions_ns).await;
    }
    Ok(())
}

/// One round: reaps partitions that ended, then moves toward this process's share.
async fn rebalance(
    shared: &Rc<Shared>,
    conn: &mut PgConnection,
    owned: &mut BTreeMap<u32, Owned>,
    failures: &mut HashMap<u32, (u32, Instant)>,
    (partitions_ns, fence): (i32, Fence),
    offset: u32,
) -> Result<()> {
    let partitions = shared.config.cluster.partitions;
    let members_ns = fence.namespace;
    // Partitions whose runner ended (an error, e.g. the store was unreachable): given
    // back, and retried after a backoff.
    let ended: Vec<u32> = owned
        .iter()
        .filter(|(_, o)| o.task.is_finished())
        .map(|(i, _)| *i)
        .collect();
    for i in ended {
        if let Some(o) = owned.remove(&i) {
            let why = match o.task.await {
                Ok(Ok(())) => "stopped".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("{e}"),
            };
            let tries = failures.get(&i).map_or(0, |(n, _)| *n) + 1;
            let wait = (Duration::from_millis(200) * 2u32.pow(tries.min(6))).min(MAX_RETRY);
            tracing::warn!(
                "cluster: partition {i} ended: {why}; given back, tried again in {} ms",
                wait.as_millis()
            );
            failures.insert(i, (tries, Instant::now() + wait));
            super::ops::cluster_change("ended", 1);
            forget_checks(i);
            unlock(conn, partitions_ns, i).await?;
        }
    }
    let members = count_members(conn, members_ns).await?;
    super::ops::cluster_members(members);
    let share = partitions.div_ceil(members) as usize;
    while owned.len() > share {
        let Some(&i) = owned.keys().next_back() else {
            break;
        };
        tracing::info!("cluster: {members} members; handing partition {i} over");
        release(conn, owned, i, partitions_ns).await;
    }
    let now = Instant::now();
    for j in 0..partitions {
        if owned.len() >= share {
            break;
        }
        let i = (offset + j) % partitions;
        if owned.contains_key(&i) || failures.get(&i).is_some_and(|(_, at)| *at > now) {
            continue;
        }
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(partitions_ns)
            .bind(i as i32)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            // Commits of a previous owner that passed their fence check end before
            // the partition is loaded (see `Fence`).
            for f in ["pg_advisory_lock", "pg_advisory_unlock"] {
                sqlx::query(&format!("SELECT {f}($1, $2)"))
                    .bind(fence.barrier)
                    .bind(i as i32)
                    .execute(&mut *conn)
                    .await?;
            }
            tracing::info!("cluster: taking partition {i} ({members} members)");
            let (stop, stopped) = watch::channel(false);
            let fence = Fence {
                key: i as i32,
                ..fence
            };
            // Not ready until the partition is loaded and consumes.
            super::ops::set_check_of("engine", Some(i), Err("loading the store".to_string()));
            let task = tokio::task::spawn_local(partition(shared.clone(), i, fence, stopped));
            owned.insert(i, Owned { stop, task });
            super::ops::cluster_change("taken", 1);
        }
    }
    super::ops::cluster_owned(owned.len());
    // A partition that ran a while is no longer counted as failing.
    failures.retain(|i, (_, at)| !owned.contains_key(i) || *at > now);
    Ok(())
}

/// Stops partition `i` gracefully (its received messages committed and
/// acknowledged), then gives its lock back.
async fn release(conn: &mut PgConnection, owned: &mut BTreeMap<u32, Owned>, i: u32, ns: i32) {
    let Some(o) = owned.remove(&i) else { return };
    super::ops::cluster_change("handed_over", 1);
    super::ops::cluster_owned(owned.len());
    let _ = o.stop.send(true);
    match o.task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cluster: partition {i} stopped with an error: {e:#}"),
        Err(e) => tracing::warn!("cluster: partition {i} failed: {e}"),
    }
    forget_checks(i);
    if let Err(e) = unlock(conn, ns, i).await {
        tracing::warn!("cluster: releasing partition {i}: {e:#}");
    }
}

/// Partition `i` no longer runs here: its readiness checks are forgotten (set from
/// its taking: `engine` until it consumes, then its consumer's `amqp`).
fn forget_checks(i: u32) {
    super::ops::clear_check_of("engine", i);
    super::ops::clear_check_of("amqp", i);
}

async fn unlock(conn: &mut PgConnection, ns: i32, i: u32) -> Result<()> {
    sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1, $2)")
        .bind(ns)
        .bind(i as i32)
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// Runs partition `i` until told to stop: loads its world from its rows, consumes its
/// queue, dispatches its outbox.
async fn partition(
    shared: Rc<Shared>,
    i: u32,
    fence: Fence,
    mut stopped: watch::Receiver<bool>,
) -> Result<()> {
    let name = &shared.config.cluster.name;
    let mut store = PostgresStore::connect_schema(&shared.url, name)
        .await
        .with_context(|| format!("opening schema {name} on {}", redact(&shared.url)))?
        .partition(i)
        .fenced(fence)
        .dispatch_emitted(shared.config.outbound.as_ref().is_some_and(|o| o.emitted));
    let old = old_schema(name, i);
    if store
        .adopt_schema(&shared.url, &old)
        .await
        .with_context(|| format!("moving schema {old} into partition {i} of {name}"))?
    {
        tracing::info!("cluster: partition {i}: moved the rows of schema {old} into {name}");
    }
    if let Some(group) = &shared.group {
        store = store.grouped(group.clone());
    }
    let store = AnyStore::Postgres(store);
    let _owning = Owning::new(&shared.ops, i, &store);
    let place = format!("partition {i} of schema {name}");
    let world = super::run::load_world(&store, &shared.rules, &place).await?;
    let mut engine = Engine::with_world(shared.rules.clone(), world);
    if i == 0 {
        engine.start(Utc::now());
    }
    let mut runner = Runner::new(engine, store, &shared.config, shared.host.clone());
    runner.tick().await?;
    let amqp = match &shared.config.amqp {
        Some(amqp) => partition_queue(amqp, i),
        None => bail!("[cluster] needs an [amqp] table"),
    };
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    // Ready: from here on, the partition's readiness is its consumer's (`amqp`).
    super::ops::set_check_of("engine", Some(i), Ok(()));
    runner.consume(amqp, shared.broker.source(i), stop).await?;
    runner.stop_dispatch().await?;
    runner.tick().await?;
    runner.commit().await
}

/// While a partition runs here, `/readyz` probes its store; once it stops (handed
/// over, failed or aborted) the store is forgotten.
struct Owning {
    ops: Ops,
    i: u32,
}

impl Owning {
    fn new(ops: &Ops, i: u32, store: &AnyStore) -> Owning {
        ops.partition_opened(i, store);
        Owning {
            ops: ops.clone(),
            i,
        }
    }
}

impl Drop for Owning {
    fn drop(&mut self) {
        self.ops.partition_closed(self.i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_differ_by_name_and_role_and_are_non_negative() {
        let (a, b, e) = namespaces("steward");
        let (c, d, _) = namespaces("other");
        assert_ne!(a, b);
        assert_ne!(b, e);
        assert!(e >= 0);
        assert_ne!(a, c);
        assert_ne!(b, d);
        assert!(a >= 0 && b >= 0 && c >= 0 && d >= 0);
    }

    #[test]
    fn the_configuration_is_checked_before_anything_starts() {
        let good = Config {
            store: super::super::run::StoreConfig {
                path: "postgres://u@h/db".into(),
            },
            amqp: Some(AmqpConfig::default()),
            cluster: ClusterConfig {
                partitions: 4,
                group_commit: 2,
                ..ClusterConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(check(&good).unwrap(), "postgres://u@h/db");
        let refused = |change: fn(&mut Config), says: &str| {
            let mut config = good.clone();
            change(&mut config);
            let e = check(&config).unwrap_err().to_string();
            assert!(e.contains(says), "`{e}` should say `{says}`");
        };
        refused(
            |c| c.cluster.partitions = 5000,
            "partitions is 5000; at most 1024",
        );
        refused(
            |c| c.cluster.name = "a-b".into(),
            "name `a-b` must be letters",
        );
        refused(
            |c| c.store.path = "steward.db".into(),
            "needs a PostgreSQL store",
        );
        refused(|c| c.amqp = None, "needs an [amqp] table");
        refused(
            |c| c.cluster.group_commit = 17,
            "group_commit is 17; at most 16",
        );
        refused(
            |c| c.source.events = Some("events.jsonl".into()),
            "takes its events from [amqp]",
        );
        refused(
            |c| c.source.watch = Some("inbox".into()),
            "takes its events from [amqp]",
        );
    }

    #[test]
    fn partition_queues_are_single_active_consumer_on_a_consistent_hash_exchange() {
        let amqp = AmqpConfig {
            queue: "events".to_string(),
            ..AmqpConfig::default()
        };
        let q = partition_queue(&amqp, 3);
        assert_eq!(q.queue, "events.p3");
        assert_eq!(q.exchange_type, "x-consistent-hash");
        assert_eq!(q.routing_keys, vec!["1".to_string()]);
        assert!(q.single_active_consumer);
    }
}
