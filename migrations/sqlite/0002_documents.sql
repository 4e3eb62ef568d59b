-- Documents, their chunks, the embedding cache and the connections between chunks.

CREATE TABLE IF NOT EXISTS documents (
    id                    TEXT    PRIMARY KEY,
    content_hash          TEXT    NOT NULL UNIQUE,
    file_name             TEXT    NOT NULL,
    byte_size             INTEGER NOT NULL CHECK (byte_size >= 0),
    title                 TEXT,
    author                TEXT,
    language              TEXT,
    status                TEXT    NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'processing', 'embedded', 'complete', 'failed')),
    chunk_count           INTEGER NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    markdown_hash         TEXT,
    ai_requests           INTEGER NOT NULL DEFAULT 0,
    embeddings_from_cache INTEGER NOT NULL DEFAULT 0,
    error                 TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS chunks (
    id            TEXT    PRIMARY KEY,
    document_id   TEXT    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index   INTEGER NOT NULL CHECK (chunk_index >= 0),
    heading_path  TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(heading_path)),
    text          TEXT    NOT NULL,
    start_offset  INTEGER NOT NULL,
    end_offset    INTEGER NOT NULL,
    content_hash  TEXT    NOT NULL,
    UNIQUE (document_id, chunk_index)
);
CREATE INDEX IF NOT EXISTS chunks_content_hash ON chunks (content_hash);

-- Vectors are little-endian f32, keyed by what was embedded and how.
CREATE TABLE IF NOT EXISTS embedding_cache (
    content_hash  TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    dimensions    INTEGER NOT NULL CHECK (dimensions > 0),
    vector        BLOB    NOT NULL CHECK (length(vector) = dimensions * 4),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (content_hash, model, dimensions)
);

CREATE TABLE IF NOT EXISTS connections (
    source_chunk_id TEXT NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    target_chunk_id TEXT NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    engine          TEXT NOT NULL,
    score           REAL NOT NULL,
    reason          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (source_chunk_id, target_chunk_id, engine),
    CHECK (source_chunk_id <> target_chunk_id)
);
CREATE INDEX IF NOT EXISTS connections_target ON connections (target_chunk_id);
