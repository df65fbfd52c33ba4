-- Steward's state on SQLite: workflow instances, durable timers, de-duplication of
-- events, counters, cadence expectations, the outbox and the evidence chain.

CREATE TABLE instances (
    workflow TEXT NOT NULL,
    key      TEXT NOT NULL,
    body     TEXT NOT NULL,            -- JSON: state, seq, step, vars, approval, ladders
    PRIMARY KEY (workflow, key)
) STRICT;

CREATE TABLE timers (
    id   INTEGER PRIMARY KEY,          -- allocation order; ties on `due` fire by id
    due  TEXT NOT NULL,                -- RFC 3339 UTC
    body TEXT NOT NULL                 -- JSON: what fires
) STRICT;
CREATE INDEX timers_due ON timers (due, id);

CREATE TABLE seen_events (
    source TEXT NOT NULL,
    id     TEXT NOT NULL,
    PRIMARY KEY (source, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE counters (
    counter TEXT NOT NULL,
    key     TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (counter, key)
) STRICT;

CREATE TABLE expectations (
    cadence TEXT NOT NULL,
    period  TEXT NOT NULL,
    due     TEXT NOT NULL,
    timer   INTEGER NOT NULL,
    PRIMARY KEY (cadence, period)
) STRICT;

CREATE TABLE outbox (
    action_id TEXT PRIMARY KEY,        -- deterministic; the connector's idempotency key
    at        TEXT NOT NULL,
    connector TEXT NOT NULL,
    op        TEXT NOT NULL,
    args      TEXT NOT NULL,
    status    TEXT NOT NULL DEFAULT 'pending',   -- pending | done | dead
    attempts  INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
) STRICT;
CREATE INDEX outbox_pending ON outbox (status, at);

CREATE TABLE evidence (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    record    TEXT NOT NULL,           -- canonical JSON of the decision
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    origin      TEXT NOT NULL,         -- where it came from: file:line, stdin:line, queue
    reason      TEXT NOT NULL,
    body        TEXT NOT NULL
) STRICT;
