-- Each chunk's terms with their counts, as the `terms` crate cuts its text: a JSON object from term
-- to count, in term order, under the chunk's rowid (as the full-text index keys it). The lexical
-- engine scores candidates from it without reading or cutting their text again. Chunks stored
-- before it have none until the store's next start reindexes them.
CREATE TABLE IF NOT EXISTS chunk_term_vectors (
    chunk       INTEGER PRIMARY KEY,
    term_vector TEXT    NOT NULL
);

-- Document frequencies: how many chunks contain each term, a seek per term (fts5vocab's `row`
-- table counts a term's whole doclist for each lookup). Terms no chunk holds any more keep a row
-- at zero.
CREATE TABLE IF NOT EXISTS chunk_term_counts (
    term   TEXT    NOT NULL PRIMARY KEY,
    chunks INTEGER NOT NULL
) WITHOUT ROWID;

DROP TABLE IF EXISTS chunk_term_frequencies;

-- The full-text index and the counts follow the term vectors, however a chunk goes (a
-- reprocessing, a reindexing, a cascade).
DROP TRIGGER IF EXISTS chunks_leave_term_index;
CREATE TRIGGER chunks_leave_term_index AFTER DELETE ON chunks
BEGIN
    DELETE FROM chunk_term_vectors WHERE chunk = old.rowid;
    DELETE FROM chunk_terms WHERE rowid = old.rowid;
END;

DROP TRIGGER IF EXISTS term_vectors_enter_index;
CREATE TRIGGER term_vectors_enter_index AFTER INSERT ON chunk_term_vectors
BEGIN
    INSERT INTO chunk_terms (rowid, terms)
        SELECT new.chunk, group_concat(key, ' ') FROM json_each(new.term_vector) HAVING count(*) > 0;
    INSERT INTO chunk_term_counts (term, chunks)
        SELECT key, 1 FROM json_each(new.term_vector) WHERE true
        ON CONFLICT (term) DO UPDATE SET chunks = chunks + 1;
END;

DROP TRIGGER IF EXISTS term_vectors_leave_index;
CREATE TRIGGER term_vectors_leave_index AFTER DELETE ON chunk_term_vectors
BEGIN
    DELETE FROM chunk_terms WHERE rowid = old.chunk;
    UPDATE chunk_term_counts SET chunks = chunks - 1
        WHERE term IN (SELECT key FROM json_each(old.term_vector));
END;
