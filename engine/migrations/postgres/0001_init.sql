-- Steward's state on PostgreSQL: the same tables as on SQLite, with PostgreSQL types.
--
-- Times that must come back exactly (timer and expectation due times, outbox and
-- dead-letter times) are kept as `timestamptz` (microseconds, for ordering, indexes and
-- comparisons with now()) plus `*_ns`, the nanoseconds below the microsecond (0..999):
-- together they are lossless. JSON bodies are kept as the exact text the engine wrote.
--
-- Scale-out (later): due timers and pending outbox rows are claimed with
-- `FOR UPDATE SKIP LOCKED` through the (due, due_ns, id) and (status, at) indexes.

CREATE TABLE instances (
    workflow TEXT NOT NULL,
    key      TEXT NOT NULL,
    body     TEXT NOT NULL,            -- JSON: state, seq, step, vars, approval, ladders
    PRIMARY KEY (workflow, key)
);

CREATE TABLE timers (
    id     BIGINT PRIMARY KEY,         -- allocation order; ties on `due` fire by id
    due    TIMESTAMPTZ NOT NULL,       -- truncated to the microsecond
    due_ns SMALLINT NOT NULL DEFAULT 0 CHECK (due_ns BETWEEN 0 AND 999),
    body   TEXT NOT NULL               -- JSON: what fires
);
CREATE INDEX timers_due ON timers (due, due_ns, id);

CREATE TABLE seen_events (
    source TEXT NOT NULL,
    id     TEXT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE TABLE counters (
    counter TEXT NOT NULL,
    key     TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (counter, key)
);

CREATE TABLE expectations (
    cadence TEXT NOT NULL,
    period  TEXT NOT NULL,
    due     TIMESTAMPTZ NOT NULL,
    due_ns  SMALLINT NOT NULL DEFAULT 0 CHECK (due_ns BETWEEN 0 AND 999),
    timer   BIGINT NOT NULL,
    PRIMARY KEY (cadence, period)
);

CREATE TABLE outbox (
    action_id  TEXT PRIMARY KEY,       -- deterministic; the connector's idempotency key
    at         TIMESTAMPTZ NOT NULL,
    at_ns      SMALLINT NOT NULL DEFAULT 0 CHECK (at_ns BETWEEN 0 AND 999),
    connector  TEXT NOT NULL,
    op         TEXT NOT NULL,
    args       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'pending',  -- pending | done | dead
    attempts   BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX outbox_pending ON outbox (status, at, at_ns, action_id);

CREATE TABLE evidence (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,           -- as hashed into the chain
    kind      TEXT NOT NULL,
    record    TEXT NOT NULL,           -- canonical JSON of the decision
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE dead_letters (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    TIMESTAMPTZ NOT NULL,
    received_at_ns SMALLINT NOT NULL DEFAULT 0 CHECK (received_at_ns BETWEEN 0 AND 999),
    origin         TEXT NOT NULL,      -- where it came from: file:line, stdin:line, queue
    reason         TEXT NOT NULL,
    body           TEXT NOT NULL
);
