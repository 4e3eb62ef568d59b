-- Documents, their chunks, the embedding cache and the connections between chunks, PostgreSQL
-- edition: the same columns and meaning as migrations/sqlite/0002_documents.sql.
--
-- Like 0001, nothing is schema-qualified (the store's `search_path` points at its schema) and
-- every statement is idempotent (`IF NOT EXISTS`). Times are BIGINT milliseconds since the Unix
-- epoch; ids are TEXT, as in SQLite, so both backends produce identical values.

CREATE TABLE IF NOT EXISTS documents (
    id                    TEXT    PRIMARY KEY,
    content_hash          TEXT    NOT NULL UNIQUE,
    file_name             TEXT    NOT NULL,
    byte_size             BIGINT  NOT NULL CHECK (byte_size >= 0),
    title                 TEXT,
    author                TEXT,
    language              TEXT,
    status                TEXT    NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'processing', 'embedded', 'complete', 'failed')),
    chunk_count           INTEGER NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    markdown_hash         TEXT,
    ai_requests           BIGINT  NOT NULL DEFAULT 0,
    embeddings_from_cache BIGINT  NOT NULL DEFAULT 0,
    error                 TEXT,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL
);

-- The unique (document_id, chunk_index) index also serves "the chunks of a document" and the
-- cascade from documents.
CREATE TABLE IF NOT EXISTS chunks (
    id            TEXT    PRIMARY KEY,
    document_id   TEXT    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index   INTEGER NOT NULL CHECK (chunk_index >= 0),
    heading_path  JSONB   NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(heading_path) = 'array'),
    text          TEXT    NOT NULL,
    start_offset  BIGINT  NOT NULL,
    end_offset    BIGINT  NOT NULL,
    content_hash  TEXT    NOT NULL,
    UNIQUE (document_id, chunk_index)
);
CREATE INDEX IF NOT EXISTS chunks_content_hash ON chunks (content_hash);

-- Vectors are little-endian f32 in a BYTEA, exactly the bytes SQLite stores in its BLOB, so the
-- two backends share one encoding. (A pgvector `vector` column would allow similarity search in
-- the database; the store does not use pgvector yet, see `PgStore::has_pgvector`.)
CREATE TABLE IF NOT EXISTS embedding_cache (
    content_hash  TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    dimensions    INTEGER NOT NULL CHECK (dimensions > 0),
    vector        BYTEA   NOT NULL CHECK (octet_length(vector) = dimensions * 4),
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (content_hash, model, dimensions)
);

-- Real foreign keys: a connection disappears with either of its chunks. The primary key starts
-- with the source, so it also serves "the connections of these chunks" and the source cascade.
CREATE TABLE IF NOT EXISTS connections (
    source_chunk_id TEXT   NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    target_chunk_id TEXT   NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    engine          TEXT   NOT NULL,
    score           REAL   NOT NULL,
    reason          TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (source_chunk_id, target_chunk_id, engine),
    CHECK (source_chunk_id <> target_chunk_id)
);
CREATE INDEX IF NOT EXISTS connections_target ON connections (target_chunk_id);
