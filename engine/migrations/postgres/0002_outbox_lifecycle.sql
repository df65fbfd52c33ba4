-- The outbox lifecycle: pending -> in_flight (claimed, with a lease) -> done (result)
-- | retry (attempt, due time, last error) -> … | dead (reason in last_error).
--
-- Due and lease times are milliseconds since the Unix epoch (the dispatcher's clock).
-- Claims take due rows with `FOR UPDATE SKIP LOCKED`, so several dispatchers never
-- claim the same row. `workflow` and `key` route an action's outcome back to the
-- instance that decided it.

ALTER TABLE outbox ADD COLUMN workflow TEXT;
ALTER TABLE outbox ADD COLUMN key TEXT;
ALTER TABLE outbox ADD COLUMN due_ms BIGINT NOT NULL DEFAULT 0;    -- not before (pending, retry)
ALTER TABLE outbox ADD COLUMN lease_ms BIGINT;                     -- claim expires (in_flight)
ALTER TABLE outbox ADD COLUMN result TEXT;                         -- JSON (done)

-- Emitted events are fed back into the engine when decided: nothing to dispatch.
UPDATE outbox SET status = 'done' WHERE connector = 'steward' AND op = 'emit' AND status = 'pending';

DROP INDEX outbox_pending;
CREATE INDEX outbox_due ON outbox (status, due_ms);
