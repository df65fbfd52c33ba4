-- Actions of one workflow instance run one at a time, in the order they were decided
-- (rowid: insertion order): a later action waits while an earlier one is unsettled.
CREATE INDEX outbox_instance ON outbox (workflow, key, status);
