-- De-duplication is decided in memory (the engine loads every identity at start);
-- this table only has to keep them. Kept in arrival order (rowid), each commit's
-- identities land on the last page or two, where a key of (source, id) put every new
-- identity on a page of its own and rewrote it in the write-ahead log.
CREATE TABLE seen_log (
    source TEXT NOT NULL,
    id     TEXT NOT NULL
) STRICT;
INSERT INTO seen_log (source, id) SELECT source, id FROM seen_events;
DROP TABLE seen_events;
ALTER TABLE seen_log RENAME TO seen_events;
