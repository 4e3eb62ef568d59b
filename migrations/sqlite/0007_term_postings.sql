-- Postings as a plain b-tree: one row per (term, chunk rowid), read term by term in key order.
-- The term search reads every asked term's postings once per book; fts5vocab's `instance` table
-- decodes them from FTS5's doclists at about three times the cost (1.1 s against 0.33 s for 3M
-- postings at 100k chunks). The FTS5 table stays the library's full-text index; this table is
-- what the term-at-a-time search reads, as `chunk_term_postings` is on PostgreSQL.
DROP TABLE IF EXISTS chunk_term_postings;
CREATE TABLE IF NOT EXISTS chunk_term_postings (
    term  TEXT    NOT NULL,
    chunk INTEGER NOT NULL,
    PRIMARY KEY (term, chunk)
) WITHOUT ROWID;

-- The postings follow the term vectors as the full-text rows and the counts do.
DROP TRIGGER IF EXISTS term_vectors_enter_index;
CREATE TRIGGER term_vectors_enter_index AFTER INSERT ON chunk_term_vectors
BEGIN
    INSERT INTO chunk_terms (rowid, terms)
        SELECT new.chunk, group_concat(key, ' ') FROM json_each(new.term_vector) HAVING count(*) > 0;
    INSERT INTO chunk_term_postings (term, chunk)
        SELECT key, new.chunk FROM json_each(new.term_vector);
    INSERT INTO chunk_term_counts (term, chunks)
        SELECT key, 1 FROM json_each(new.term_vector) WHERE true
        ON CONFLICT (term) DO UPDATE SET chunks = chunks + 1;
END;

DROP TRIGGER IF EXISTS term_vectors_leave_index;
CREATE TRIGGER term_vectors_leave_index AFTER DELETE ON chunk_term_vectors
BEGIN
    DELETE FROM chunk_terms WHERE rowid = old.chunk;
    DELETE FROM chunk_term_postings
        WHERE chunk = old.chunk AND term IN (SELECT key FROM json_each(old.term_vector));
    UPDATE chunk_term_counts SET chunks = chunks - 1
        WHERE term IN (SELECT key FROM json_each(old.term_vector));
END;
