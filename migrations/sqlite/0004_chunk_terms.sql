-- The full-text index of the lexical engine (see crates/checkpoint-store/src/term_index.rs).
--
-- Each chunk's distinct terms, space-separated, under the chunk's rowid. Contentless: the terms are
-- only looked up, never read back. The `ascii` tokenizer splits at ASCII spaces and punctuation
-- only and keeps every other character, so a stored term (letters and digits of any script, as
-- the `terms` crate cuts them) is one token, exactly as the query names it.
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms
    USING fts5 (terms, content = '', contentless_delete = 1, tokenize = 'ascii');

-- Document frequencies: one row per term with the number of chunks containing it.
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_term_frequencies USING fts5vocab (chunk_terms, 'row');

-- Postings: one row per (term, chunk rowid), since a chunk's terms are stored once each.
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_term_postings USING fts5vocab (chunk_terms, 'instance');

-- A chunk leaves the index with its row, however it goes (a reprocessing, a cascade).
CREATE TRIGGER IF NOT EXISTS chunks_leave_term_index AFTER DELETE ON chunks
BEGIN
    DELETE FROM chunk_terms WHERE rowid = old.rowid;
END;

-- The edition of the term rules the index was built with (one row); the store rebuilds the index
-- when it differs from its own. No row yet: the chunks already stored get indexed at next open.
CREATE TABLE IF NOT EXISTS term_index_edition (
    edition TEXT NOT NULL
);
