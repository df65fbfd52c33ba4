-- De-duplication is decided in memory (the engine loads every identity of its
-- partition when it takes the partition, and commits are fenced), so this table only
-- has to keep the identities. Without a key on (source, id), an insert appends to
-- the heap instead of landing on a random page of an index.
ALTER TABLE seen_events DROP CONSTRAINT seen_events_pkey;
