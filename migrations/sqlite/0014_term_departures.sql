-- Every chunk that leaves the term index, numbered in the order it left: the in-process term cache
-- (crates/checkpoint-store/src/term_cache.rs) catches up by reading the departures after the last
-- one it applied. A chunk's key is its rowid, which SQLite may give to a new chunk once the old
-- one is gone, so "every key above the highest seen" alone would miss departures and reused keys.
CREATE TABLE IF NOT EXISTS chunk_term_departures (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk INTEGER NOT NULL
);

CREATE TRIGGER IF NOT EXISTS term_vectors_depart AFTER DELETE ON chunk_term_vectors
BEGIN
    INSERT INTO chunk_term_departures (chunk) VALUES (old.chunk);
END;
