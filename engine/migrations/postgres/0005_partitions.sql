-- Partitions share one set of tables: every row belongs to the partition in `part`.
--
-- A `[cluster]` deployment keeps all its partitions in one schema, so one statement
-- can commit several partitions' batches with one part per table (group commit); a
-- store outside `[cluster]` is partition 0. Every key starts with `part`, and every
-- read of a partition's rows is by it.

ALTER TABLE instances ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances DROP CONSTRAINT instances_pkey;
ALTER TABLE instances ADD PRIMARY KEY (part, workflow, key);

ALTER TABLE timers ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE timers DROP CONSTRAINT timers_pkey;
ALTER TABLE timers ADD PRIMARY KEY (part, id);
DROP INDEX timers_due;
CREATE INDEX timers_due ON timers (part, due, due_ns, id);

-- Still no unique key (migration 4): a partition's identities are read when it is
-- taken, by this index; an insert lands at the end of its partition's range.
ALTER TABLE seen_events ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
CREATE INDEX seen_events_part ON seen_events (part);

ALTER TABLE counters ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters DROP CONSTRAINT counters_pkey;
ALTER TABLE counters ADD PRIMARY KEY (part, counter, key);

ALTER TABLE expectations ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE expectations DROP CONSTRAINT expectations_pkey;
ALTER TABLE expectations ADD PRIMARY KEY (part, cadence, period);

ALTER TABLE outbox ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE outbox ADD PRIMARY KEY (part, action_id);
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (part, status, due_ms);
DROP INDEX outbox_instance;
CREATE INDEX outbox_instance ON outbox (part, workflow, key, status, seq);

ALTER TABLE evidence ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evidence DROP CONSTRAINT evidence_pkey;
ALTER TABLE evidence ADD PRIMARY KEY (part, seq);

ALTER TABLE meta ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE meta DROP CONSTRAINT meta_pkey;
ALTER TABLE meta ADD PRIMARY KEY (part, name);

ALTER TABLE dead_letters ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
CREATE INDEX dead_letters_part ON dead_letters (part, id);
