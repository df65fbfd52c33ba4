//! A commit as one statement, and several stores' commits as one ([`GroupCommit`]).
//!
//! A commit's rows are first encoded into [`Rows`]: one [`Part`] per table written
//! and how (insert, delete, update), each a list of columns bound as arrays, and the
//! partition they belong to. The statement is built from those: it starts with a part
//! `fence_N` per commit, whose one row says whether commit N may write; then one
//! data-modifying `WITH` part per table and way of writing it, whose rows are the
//! union of each commit's arrays expanded with `UNNEST`, each commit's gated on its
//! `fence_N`'s answer. Commits to other tables (another schema), or to a partition
//! already in the statement, get parts of their own. PostgreSQL runs every part to
//! completion whether or not it is read; the final `SELECT` returns every fence's
//! answer, so false means that commit was refused and nothing of it written.
//!
//! Parts on one table never touch the same row: one statement cannot see or change
//! what another part of it wrote (see [`Rows::timers`] and [`Rows::settled`]); the
//! commits sharing a part write partitions of their own.

use std::borrow::Cow;
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres, QueryBuilder};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Fence, split_time};
use crate::core::{Changes, OutboxEntry};
use crate::ruleset::Ruleset;
use crate::store::codec::{encode_counter, encode_instance, encode_time, encode_timer};
use crate::store::{Meta, SettledAs, Settlement, StoreError};

/// Most commits one group statement carries (each binds up to about forty arrays).
const MAX_GROUP: usize = 64;

/// Most statements a committer keeps in flight.
pub const MAX_IN_FLIGHT: usize = 16;

/// Prepared statements the committer's connection keeps: one per shape of group
/// (which stores, which parts), so more than a single store needs.
const GROUP_STATEMENTS: usize = 512;

/// The metrics a group committer records (through the `metrics` facade).
pub mod metric {
    /// Statements sent, commits tried again alone included.
    pub const GROUP_STATEMENTS: &str = "steward_group_commit_statements_total";
    /// Commits taken from the queue (each once, whether it went in a group or alone).
    pub const GROUP_COMMITS: &str = "steward_group_commit_commits_total";
}

/// What a part does, to which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PutInstances,
    DelInstances,
    PutTimers,
    DelTimers,
    PutSeen,
    PutCounters,
    PutExpectations,
    DelExpectations,
    PutEvidence,
    PutOutbox,
    EndOutbox,
    PutMeta,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PutInstances => "put_instances",
            Kind::DelInstances => "del_instances",
            Kind::PutTimers => "put_timers",
            Kind::DelTimers => "del_timers",
            Kind::PutSeen => "put_seen",
            Kind::PutCounters => "put_counters",
            Kind::PutExpectations => "put_expectations",
            Kind::DelExpectations => "del_expectations",
            Kind::PutEvidence => "put_evidence",
            Kind::PutOutbox => "put_outbox",
            Kind::EndOutbox => "end_outbox",
            Kind::PutMeta => "put_meta",
        }
    }

    /// The names of the part's columns, in the order they are bound (its rows also
    /// have `part`).
    fn columns(self) -> &'static str {
        match self {
            Kind::PutInstances => "workflow, key, body",
            Kind::DelInstances => "workflow, key",
            Kind::PutTimers => "id, due, due_ns, body",
            Kind::DelTimers => "id",
            Kind::PutSeen => "source, id",
            Kind::PutCounters => "counter, key, body",
            Kind::PutExpectations => "cadence, period, due, due_ns, timer",
            Kind::DelExpectations => "cadence, period",
            Kind::PutEvidence => "seq, at, kind, record, prev_hash, hash",
            Kind::PutOutbox => "action_id, at, at_ns, connector, op, args, workflow, key, status",
            Kind::EndOutbox => "action_id, status, result, reason, attempt",
            Kind::PutMeta => "name, value",
        }
    }

    /// The part's statement for tables named with the prefix `t`, reading its rows
    /// (`part` and [`Kind::columns`], with `c`, the commit's place in the statement,
    /// and `i`, the row's place in its commit) from the relation `u` written at `{}`.
    fn sql(self, t: &str) -> (String, String) {
        let (head, tail) = match self {
            Kind::PutInstances => (
                format!(
                    "INSERT INTO {t}instances (part, workflow, key, body) \
                     SELECT part, workflow, key, body FROM "
                ),
                " ON CONFLICT (part, workflow, key) DO UPDATE SET body = EXCLUDED.body".to_string(),
            ),
            Kind::DelInstances => (
                format!("DELETE FROM {t}instances t USING "),
                " WHERE t.part = u.part AND t.workflow = u.workflow AND t.key = u.key".to_string(),
            ),
            Kind::PutTimers => (
                format!(
                    "INSERT INTO {t}timers (part, id, due, due_ns, body) \
                     SELECT part, id, due, due_ns, body FROM "
                ),
                String::new(),
            ),
            Kind::DelTimers => (
                format!("DELETE FROM {t}timers t USING "),
                " WHERE t.part = u.part AND t.id = u.id".to_string(),
            ),
            Kind::PutSeen => (
                format!(
                    "INSERT INTO {t}seen_events (part, source, id) SELECT part, source, id FROM "
                ),
                String::new(),
            ),
            Kind::PutCounters => (
                format!(
                    "INSERT INTO {t}counters (part, counter, key, body) \
                     SELECT part, counter, key, body FROM "
                ),
                " ON CONFLICT (part, counter, key) DO UPDATE SET body = EXCLUDED.body".to_string(),
            ),
            Kind::PutExpectations => (
                format!(
                    "INSERT INTO {t}expectations (part, cadence, period, due, due_ns, timer) \
                     SELECT part, cadence, period, due, due_ns, timer FROM "
                ),
                " ON CONFLICT (part, cadence, period) DO UPDATE \
                 SET due = EXCLUDED.due, due_ns = EXCLUDED.due_ns, timer = EXCLUDED.timer"
                    .to_string(),
            ),
            Kind::DelExpectations => (
                format!("DELETE FROM {t}expectations t USING "),
                " WHERE t.part = u.part AND t.cadence = u.cadence AND t.period = u.period"
                    .to_string(),
            ),
            Kind::PutEvidence => (
                format!(
                    "INSERT INTO {t}evidence (part, seq, at, kind, record, prev_hash, hash) \
                     SELECT part, seq, at, kind, record, prev_hash, hash FROM "
                ),
                String::new(),
            ),
            // In decision order, so `seq` (per-instance dispatch order) follows it.
            Kind::PutOutbox => (
                format!(
                    "INSERT INTO {t}outbox \
                     (part, action_id, at, at_ns, connector, op, args, workflow, key, status) \
                     SELECT part, action_id, at, at_ns, connector, op, args, workflow, key, \
                     status FROM "
                ),
                " ORDER BY c, i ON CONFLICT DO NOTHING".to_string(),
            ),
            Kind::EndOutbox => (
                format!(
                    "UPDATE {t}outbox o SET status = u.status, result = u.result, \
                     last_error = coalesce(u.reason, o.last_error), \
                     attempts = greatest(o.attempts, u.attempt), lease_ms = NULL FROM "
                ),
                " WHERE o.part = u.part AND o.action_id = u.action_id \
                 AND o.status NOT IN ('done', 'dead')"
                    .to_string(),
            ),
            Kind::PutMeta => (
                format!("INSERT INTO {t}meta (part, name, value) SELECT part, name, value FROM "),
                " ON CONFLICT (part, name) DO UPDATE SET value = EXCLUDED.value".to_string(),
            ),
        };
        (head, tail)
    }

    /// Every kind, in the order a statement writes them.
    const ALL: [Kind; 12] = [
        Kind::PutInstances,
        Kind::DelInstances,
        Kind::PutTimers,
        Kind::DelTimers,
        Kind::PutSeen,
        Kind::PutCounters,
        Kind::PutExpectations,
        Kind::DelExpectations,
        Kind::PutEvidence,
        Kind::PutOutbox,
        Kind::EndOutbox,
        Kind::PutMeta,
    ];
}

/// One column's values, bound as one array.
enum Column<'a> {
    Text(Vec<Cow<'a, str>>),
    MaybeText(Vec<Option<Cow<'a, str>>>),
    Int8(Vec<i64>),
    Int2(Vec<i16>),
    Time(Vec<DateTime<Utc>>),
}

impl Column<'_> {
    fn into_owned(self) -> Column<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        match self {
            Column::Text(v) => Column::Text(v.into_iter().map(own).collect()),
            Column::MaybeText(v) => Column::MaybeText(v.into_iter().map(|s| s.map(own)).collect()),
            Column::Int8(v) => Column::Int8(v),
            Column::Int2(v) => Column::Int2(v),
            Column::Time(v) => Column::Time(v),
        }
    }

    /// Appends `$n::type[]`, binding the values.
    fn push<'q>(&'q self, q: &mut QueryBuilder<'q, Postgres>) {
        match self {
            Column::Text(v) => q.push_bind(v.as_slice()).push("::text[]"),
            Column::MaybeText(v) => q.push_bind(v.as_slice()).push("::text[]"),
            Column::Int8(v) => q.push_bind(v.as_slice()).push("::int8[]"),
            Column::Int2(v) => q.push_bind(v.as_slice()).push("::int2[]"),
            Column::Time(v) => q.push_bind(v.as_slice()).push("::timestamptz[]"),
        };
    }
}

struct Part<'a> {
    kind: Kind,
    columns: Vec<Column<'a>>,
}

/// One commit's rows, encoded, borrowing what it can from the batch.
pub(super) struct Rows<'a> {
    /// How the statement names this commit's tables: empty (the connection's
    /// `search_path`) or `"schema".`.
    tables: Cow<'a, str>,
    /// The partition the rows belong to.
    part: i32,
    fence: Option<Fence>,
    parts: Vec<Part<'a>>,
}

/// Text borrowed from a batch.
fn text<'a>(s: &'a str) -> Cow<'a, str> {
    Cow::Borrowed(s)
}

impl<'a> Rows<'a> {
    pub(super) fn new(tables: &'a str, part: i32, fence: Option<Fence>) -> Rows<'a> {
        Rows {
            tables: text(tables),
            part,
            fence,
            parts: Vec::new(),
        }
    }

    fn part(&mut self, kind: Kind, columns: Vec<Column<'a>>) {
        self.parts.push(Part { kind, columns });
    }

    /// These rows, owning everything (to hand to a [`GroupCommit`]).
    pub(super) fn into_owned(self) -> Rows<'static> {
        Rows {
            tables: Cow::Owned(self.tables.into_owned()),
            part: self.part,
            fence: self.fence,
            parts: self
                .parts
                .into_iter()
                .map(|p| Part {
                    kind: p.kind,
                    columns: p.columns.into_iter().map(Column::into_owned).collect(),
                })
                .collect(),
        }
    }

    /// Instances written and finished: the map has each key once, so the two parts
    /// are disjoint.
    pub(super) fn instances(&mut self, rules: &'a Ruleset, changes: &'a Changes) {
        let (mut put_w, mut put_k, mut put_b) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_w, mut del_k) = (Vec::new(), Vec::new());
        for ((w, key), inst) in &changes.instances {
            let workflow = text(&rules.workflows[*w].name);
            match inst {
                Some(inst) => {
                    put_w.push(workflow);
                    put_k.push(text(key));
                    put_b.push(Cow::Owned(encode_instance(rules, *w, inst)));
                }
                None => {
                    del_w.push(workflow);
                    del_k.push(text(key));
                }
            }
        }
        if !put_w.is_empty() {
            use Column::Text;
            self.part(
                Kind::PutInstances,
                vec![Text(put_w), Text(put_k), Text(put_b)],
            );
        }
        if !del_w.is_empty() {
            use Column::Text;
            self.part(Kind::DelInstances, vec![Text(del_w), Text(del_k)]);
        }
    }

    /// Timers set and cancelled. A timer set and cancelled within the batch is in
    /// neither part (the delete would not see the insert).
    pub(super) fn timers(&mut self, rules: &Ruleset, changes: &Changes) {
        // Only a batch that both sets and cancels timers needs to match them up.
        let both = !changes.timers_added.is_empty() && !changes.timers_removed.is_empty();
        let ids_of = |ids: &mut dyn Iterator<Item = u64>| -> HashSet<u64> {
            if both { ids.collect() } else { HashSet::new() }
        };
        let cancelled = ids_of(&mut changes.timers_removed.iter().copied());
        let set = ids_of(&mut changes.timers_added.iter().map(|t| t.id));
        let (mut ids, mut dues, mut nss, mut bodies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for timer in &changes.timers_added {
            if cancelled.contains(&timer.id) {
                continue;
            }
            let (due, ns) = split_time(timer.due);
            ids.push(timer.id as i64);
            dues.push(due);
            nss.push(ns);
            bodies.push(Cow::Owned(encode_timer(rules, &timer.kind).to_string()));
        }
        let gone: Vec<i64> = changes
            .timers_removed
            .iter()
            .filter(|id| !set.contains(id))
            .map(|&id| id as i64)
            .collect();
        if !ids.is_empty() {
            use Column::*;
            self.part(
                Kind::PutTimers,
                vec![Int8(ids), Time(dues), Int2(nss), Text(bodies)],
            );
        }
        if !gone.is_empty() {
            self.part(Kind::DelTimers, vec![Column::Int8(gone)]);
        }
    }

    pub(super) fn seen(&mut self, changes: &'a Changes) {
        if changes.seen.is_empty() {
            return;
        }
        let sources = changes.seen.iter().map(|s| text(&s.source)).collect();
        let ids = changes.seen.iter().map(|s| text(&s.id)).collect();
        use Column::Text;
        self.part(Kind::PutSeen, vec![Text(sources), Text(ids)]);
    }

    pub(super) fn counters(&mut self, rules: &'a Ruleset, changes: &'a Changes) {
        if changes.counters.is_empty() {
            return;
        }
        let (mut names, mut keys, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
        for ((c, key), state) in &changes.counters {
            names.push(text(&rules.counters[*c].name));
            keys.push(text(key));
            bodies.push(Cow::Owned(encode_counter(state).to_string()));
        }
        use Column::Text;
        self.part(
            Kind::PutCounters,
            vec![Text(names), Text(keys), Text(bodies)],
        );
    }

    /// Cadence expectations set and met: keyed by a map, so disjoint.
    pub(super) fn expectations(&mut self, rules: &'a Ruleset, changes: &'a Changes) {
        let (mut put_c, mut put_p, mut put_due, mut put_ns, mut put_t) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut del_c, mut del_p) = (Vec::new(), Vec::new());
        for ((c, period), exp) in &changes.expectations {
            let cadence = text(&rules.cadences[*c].name);
            match exp {
                Some(exp) => {
                    let (due, ns) = split_time(exp.due);
                    put_c.push(cadence);
                    put_p.push(text(period));
                    put_due.push(due);
                    put_ns.push(ns);
                    put_t.push(exp.timer as i64);
                }
                None => {
                    del_c.push(cadence);
                    del_p.push(text(period));
                }
            }
        }
        use Column::*;
        if !put_c.is_empty() {
            self.part(
                Kind::PutExpectations,
                vec![
                    Text(put_c),
                    Text(put_p),
                    Time(put_due),
                    Int2(put_ns),
                    Int8(put_t),
                ],
            );
        }
        if !del_c.is_empty() {
            self.part(Kind::DelExpectations, vec![Text(del_c), Text(del_p)]);
        }
    }

    pub(super) fn evidence(&mut self, changes: &'a Changes) {
        let ev = &changes.evidence;
        if ev.is_empty() {
            return;
        }
        let strings = |f: fn(&'a crate::decision::EvidenceRecord) -> &'a str| {
            Column::Text(ev.iter().map(|r| text(f(r))).collect())
        };
        let columns = vec![
            Column::Int8(ev.iter().map(|r| r.seq as i64).collect()),
            strings(|r| &r.at),
            strings(|r| &r.kind),
            strings(|r| &r.record),
            strings(|r| &r.prev_hash),
            strings(|r| &r.hash),
        ];
        self.part(Kind::PutEvidence, columns);
    }

    /// New outbox rows, in decision order.
    pub(super) fn outbox(&mut self, changes: &'a Changes, dispatch_emitted: bool) {
        let outbox = &changes.outbox;
        if outbox.is_empty() {
            return;
        }
        let strings = |f: fn(&'a OutboxEntry) -> &'a str| {
            Column::Text(outbox.iter().map(|o| text(f(o))).collect())
        };
        let (ats, nss) = outbox.iter().map(|o| split_time(o.at)).unzip();
        let args = outbox.iter().map(|o| Cow::Owned(o.args.to_string()));
        let mut routes = crate::store::outbox_routes(changes);
        let (workflows, keys) = outbox
            .iter()
            .map(|o| {
                let (workflow, key) = routes.remove(&o.action_id).unwrap_or_default();
                (workflow.map(Cow::Owned), key.map(Cow::Owned))
            })
            .unzip();
        let statuses = outbox.iter().map(|o| {
            let dispatched = crate::store::dispatched(&o.connector, &o.op, dispatch_emitted);
            text(if dispatched { "pending" } else { "done" })
        });
        let columns = vec![
            strings(|o| &o.action_id),
            Column::Time(ats),
            Column::Int2(nss),
            strings(|o| &o.connector),
            strings(|o| &o.op),
            Column::Text(args.collect()),
            Column::MaybeText(workflows),
            Column::MaybeText(keys),
            Column::Text(statuses.collect()),
        ];
        self.part(Kind::PutOutbox, columns);
    }

    /// The ends of actions. Their rows were committed, and claimed, by earlier
    /// commits: never one this statement inserts.
    pub(super) fn settled(&mut self, settled: &'a [Settlement]) {
        if settled.is_empty() {
            return;
        }
        let n = settled.len();
        let (mut ids, mut statuses, mut results, mut reasons, mut attempts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for s in settled {
            let (status, result, reason) = match &s.end {
                SettledAs::Done { result } => ("done", Some(text(result)), None),
                SettledAs::Dead { reason } => ("dead", None, Some(text(reason))),
            };
            ids.push(text(&s.action_id));
            statuses.push(text(status));
            results.push(result);
            reasons.push(reason);
            attempts.push(i64::from(s.attempt));
        }
        use Column::*;
        self.part(
            Kind::EndOutbox,
            vec![
                Text(ids),
                Text(statuses),
                MaybeText(results),
                MaybeText(reasons),
                Int8(attempts),
            ],
        );
    }

    /// The engine's counters and chain head, written by every commit.
    pub(super) fn meta(&mut self, meta: &Meta) {
        let names = [
            "next_timer",
            "chain_seq",
            "chain_hash",
            "now",
            "cadences_scheduled",
        ];
        let values = [
            meta.next_timer.to_string(),
            meta.chain.seq.to_string(),
            crate::decision::hash_hex(&meta.chain.hash),
            meta.now.map(encode_time).unwrap_or_default(),
            meta.cadences_scheduled.to_string(),
        ];
        use Column::Text;
        self.part(
            Kind::PutMeta,
            vec![
                Text(names.into_iter().map(text).collect()),
                Text(values.into_iter().map(Cow::Owned).collect()),
            ],
        );
    }

    /// Appends the part `fence_N`: one row, `held`, whether this commit may write.
    fn push_fence<'q>(&self, q: &mut QueryBuilder<'q, Postgres>, n: usize) {
        q.push(format_args!("fence_{n} AS ("));
        match self.fence {
            // The shared barrier lock first, then whether the owner's session still
            // holds its lock: trying it is refused while it does.
            Some(fence) => {
                q.push("SELECT NOT pg_try_advisory_xact_lock_shared(");
                q.push_bind(fence.namespace);
                q.push(", ");
                q.push_bind(fence.held);
                q.push(") AS held FROM (SELECT pg_advisory_xact_lock_shared(");
                q.push_bind(fence.barrier);
                q.push(", ");
                q.push_bind(fence.key);
                q.push(")) AS barrier");
            }
            None => {
                q.push("SELECT true AS held");
            }
        }
        q.push(")");
    }
}

/// The commits of one statement that write the same tables, each of another
/// partition: their rows go to each table in one part.
struct Slot<'g> {
    tables: &'g str,
    /// Each commit's place in the group, and its rows.
    commits: Vec<(usize, &'g Rows<'g>)>,
}

/// `group` in slots: commits to the same tables share a slot unless they write the
/// same partition (which one part could not write twice).
fn slots<'g>(group: &[&'g Rows<'g>]) -> Vec<Slot<'g>> {
    let mut slots: Vec<Slot<'g>> = Vec::new();
    for (n, rows) in group.iter().enumerate() {
        let fits = |s: &Slot<'g>| {
            s.tables == rows.tables.as_ref() && s.commits.iter().all(|(_, r)| r.part != rows.part)
        };
        match slots.iter_mut().find(|s| fits(s)) {
            Some(slot) => slot.commits.push((n, rows)),
            None => slots.push(Slot {
                tables: rows.tables.as_ref(),
                commits: vec![(n, rows)],
            }),
        }
    }
    slots
}

/// The statement committing `group`: its one row is the array of each commit's
/// fence's answer, in `group`'s order.
///
/// Each slot writes each table it touches in one part, whose rows are the union of
/// its commits' rows (`UNNEST` of each commit's arrays), each commit's gated on its
/// own fence: a refused commit adds no row to any part.
fn statement<'q>(group: &[&'q Rows<'q>]) -> QueryBuilder<'q, Postgres> {
    let mut q = QueryBuilder::new("WITH ");
    for (n, rows) in group.iter().enumerate() {
        if n > 0 {
            q.push(", ");
        }
        rows.push_fence(&mut q, n);
    }
    for (s, slot) in slots(group).iter().enumerate() {
        for kind in Kind::ALL {
            let with: Vec<(usize, &Rows, &Part)> = slot
                .commits
                .iter()
                .flat_map(|&(n, rows)| {
                    rows.parts
                        .iter()
                        .filter(move |p| p.kind == kind)
                        .map(move |p| (n, rows, p))
                })
                .collect();
            if with.is_empty() {
                continue;
            }
            let (head, tail) = kind.sql(slot.tables);
            q.push(format_args!(", s{s}_{} AS (", kind.name()));
            q.push(head);
            q.push("(");
            for (b, (n, rows, part)) in with.into_iter().enumerate() {
                if b > 0 {
                    q.push(" UNION ALL ");
                }
                q.push(format_args!("SELECT {n} AS c, "));
                q.push_bind(rows.part);
                q.push("::int4 AS part, x.* FROM UNNEST(");
                for (i, column) in part.columns.iter().enumerate() {
                    if i > 0 {
                        q.push(", ");
                    }
                    column.push(&mut q);
                }
                q.push(format_args!(
                    ") WITH ORDINALITY AS x({}, i) WHERE (SELECT held FROM fence_{n})",
                    kind.columns()
                ));
            }
            q.push(") AS u");
            q.push(tail);
            q.push(")");
        }
    }
    q.push(" SELECT ARRAY[");
    for n in 0..group.len() {
        if n > 0 {
            q.push(", ");
        }
        q.push(format_args!("(SELECT held FROM fence_{n})"));
    }
    q.push("]");
    q
}

/// Commits `group` in one statement, in a transaction of its own: whether each
/// commit's fence let it write.
pub(super) async fn execute(pool: &PgPool, group: &[&Rows<'_>]) -> Result<Vec<bool>, StoreError> {
    let mut q = statement(group);
    let held: Vec<bool> = q.build_query_scalar().fetch_one(pool).await?;
    if held.len() == group.len() {
        Ok(held)
    } else {
        Err(StoreError::Corrupt(format!(
            "a commit of {} answered for {}",
            group.len(),
            held.len()
        )))
    }
}

/// Commits of several stores on one database as one statement (group commit).
///
/// Each store hands its commit's rows to the committer's queue and waits. The
/// committer keeps up to `in_flight` statements running, each on a connection of its
/// own; each statement carries every commit that queued while the connection was
/// busy. A `[cluster]` process's partitions, committing a few events each, share the
/// server's fixed cost of a statement and a transaction (executor start, commit
/// record, WAL flush), and, being partitions of one set of tables, each table's part
/// of the statement. Each commit keeps its own fence and gets its own answer.
///
/// If the statement fails for a reason of its own (a constraint, a deadlock), each
/// commit is tried again alone, so one commit's error never refuses another's. If
/// the database is unreachable, every commit in the group gets that error.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
    statements: Arc<AtomicU64>,
}

struct Queued {
    rows: Rows<'static>,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

impl GroupCommit {
    /// A committer keeping up to `in_flight` statements (1 to [`MAX_IN_FLIGHT`])
    /// running on connections to `url`, opened at the first commits (tables are
    /// named with their schema, so the connections' `search_path` does not matter).
    /// Its tasks, spawned on the current tokio runtime, end when the last store
    /// holding it is dropped.
    pub fn new(url: &str, in_flight: usize) -> Result<GroupCommit, StoreError> {
        let in_flight = in_flight.clamp(1, MAX_IN_FLIGHT);
        let options = PgConnectOptions::from_str(url)?
            .disable_statement_logging()
            .statement_cache_capacity(GROUP_STATEMENTS);
        let pool = PgPoolOptions::new()
            .max_connections(in_flight as u32)
            .connect_lazy_with(options);
        let (queue, queued) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(queued));
        let statements = Arc::new(AtomicU64::new(0));
        for _ in 0..in_flight {
            tokio::spawn(commit_groups(
                pool.clone(),
                queued.clone(),
                statements.clone(),
            ));
        }
        Ok(GroupCommit { queue, statements })
    }

    /// Statements sent so far, commits tried again alone included.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Commits `rows` with whatever else is queued: whether its fence let it write.
    pub(super) async fn commit(&self, rows: Rows<'static>) -> Result<bool, StoreError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Database(sqlx::Error::WorkerCrashed);
        self.queue
            .send(Queued { rows, answer })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// One of a committer's statements in flight: takes what is queued (waiting for the
/// queue while another task holds it), commits it, answers, and again.
async fn commit_groups(
    pool: PgPool,
    queued: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>,
    statements: Arc<AtomicU64>,
) {
    let mut group: Vec<Queued> = Vec::with_capacity(MAX_GROUP);
    let sent = || {
        metrics::counter!(metric::GROUP_STATEMENTS).increment(1);
        statements.fetch_add(1, Ordering::Relaxed)
    };
    loop {
        let taken = queued.lock().await.recv_many(&mut group, MAX_GROUP).await;
        if taken == 0 {
            break;
        }
        metrics::counter!(metric::GROUP_COMMITS).increment(taken as u64);
        // One order for the same stores, so one statement text.
        group.sort_by(|a, b| a.rows.tables.cmp(&b.rows.tables));
        let all: Vec<&Rows> = group.iter().map(|q| &q.rows).collect();
        sent();
        let result = execute(&pool, &all).await;
        drop(all);
        match result {
            Ok(held) => {
                for (q, held) in group.drain(..).zip(held) {
                    let _ = q.answer.send(Ok(held));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(q) = group.pop() {
                    let _ = q.answer.send(Err(e));
                }
            }
            Err(e) if fails_every_commit(&e) => {
                let e = Arc::new(e);
                for q in group.drain(..) {
                    let _ = q.answer.send(Err(StoreError::Group(e.clone())));
                }
            }
            Err(_) => {
                for q in group.drain(..) {
                    sent();
                    let alone = execute(&pool, &[&q.rows]).await.map(|held| held[0]);
                    let _ = q.answer.send(alone);
                }
            }
        }
    }
}

/// Whether `e` would fail each commit of the group alone too: the database cannot
/// be reached, or the failure is not the server's answer to what the statement
/// asked.
fn fails_every_commit(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            // Connection exceptions, operator intervention (shutdown), resources.
            db.code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57") || c.starts_with("53"))
        }
        StoreError::Database(_) => true,
        _ => false,
    }
}
