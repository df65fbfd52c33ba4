-- Actions of one workflow instance run one at a time, in the order they were decided:
-- `seq` numbers rows as inserted (batches insert in decision order), and a later
-- action waits while an earlier one of its instance is unsettled.
ALTER TABLE outbox ADD COLUMN seq BIGSERIAL;
CREATE INDEX outbox_instance ON outbox (workflow, key, status, seq);
