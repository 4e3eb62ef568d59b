-- The full-text index of the lexical engine (see crates/checkpoint-store/src/term_index.rs).
--
-- Each chunk's distinct terms as a tsvector built with array_to_tsvector, so no text search
-- parser or dictionary ever touches them: a stored term is one lexeme, exactly as the query names
-- it. Existing chunks start empty and get indexed at the store's next start.
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS terms TSVECTOR NOT NULL DEFAULT ''::tsvector;
CREATE INDEX IF NOT EXISTS chunks_terms ON chunks USING gin (terms);

-- A stable integer key per chunk, as SQLite's rowid: a term search reads postings as keys and
-- turns only the best into chunk ids.
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS seq BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX IF NOT EXISTS chunks_seq ON chunks (seq);

-- The postings, one row per (term, chunk), for the term search: read from the primary key alone.
-- The GIN index answers "which chunks contain this term" only through the heap, a millisecond
-- per term, which made one book's search take 18 s at 10k chunks; this index reads a term's
-- chunks in one range scan.
CREATE TABLE IF NOT EXISTS chunk_term_postings (
    term      TEXT   NOT NULL,
    chunk_seq BIGINT NOT NULL REFERENCES chunks (seq) ON DELETE CASCADE,
    PRIMARY KEY (term, chunk_seq)
);
CREATE INDEX IF NOT EXISTS chunk_term_postings_chunk ON chunk_term_postings (chunk_seq);

-- Document frequencies: how many chunks contain each term. The store keeps it in the transaction
-- that adds or removes chunks, adding signed changes to the rows in term order, so that
-- concurrent writers never deadlock on them (no CHECK: a change is applied as one signed upsert).
CREATE TABLE IF NOT EXISTS chunk_term_counts (
    term   TEXT   PRIMARY KEY,
    chunks BIGINT NOT NULL
);

-- The edition of the term rules the index was built with (one row); the store rebuilds the index
-- when it differs from its own.
CREATE TABLE IF NOT EXISTS term_index_edition (
    edition TEXT NOT NULL
);
