-- The CHECK constraints under the same names and with the same rules as PostgreSQL's (see
-- migrations/postgres/0001_jobs.sql, 0002_documents.sql and 0009_aligned_checks.sql);
-- tests/schema.rs compares the two lists by name. Every CHECK is named, so a refused write names
-- the rule it broke. Four rules get stricter here:
--   - jobs_locked_iff_processing: a job that is not processing has neither a lock owner nor a
--     lock expiry (before, one of them alone passed);
--   - jobs_processing_has_started: a processing job knows when its attempt started (the timeout
--     is measured from it);
--   - jobs_lease_token_check: the lease token is never negative;
--   - chunks_heading_path_check: a heading path is a JSON array, not any JSON.
--
-- SQLite cannot add or rename a constraint, so each table is rebuilt: a new table with the
-- constraints, its rows copied, the old table dropped, the new one renamed, and the old one's
-- indexes and triggers created again as 0001…0008 define them. sqlx runs this file in one
-- transaction: a failure leaves the old tables as they were.
--
-- Foreign keys stay on (`PRAGMA foreign_keys` cannot change inside a transaction), and dropping a
-- table with foreign keys on deletes its rows first, cascading to the rows that reference them.
-- So the referencing tables are rebuilt with it, pointing at the new tables, and dropped first:
-- when `chunks` is dropped no row references it any more, and renaming `documents_aligned` and
-- `chunks_aligned` rewrites the references to the final names.
--
-- `chunks` and `embedding_cache` keep their rowids: the full-text index and the term vectors are
-- keyed by a chunk's rowid, the nearest-neighbour indexes by a vector's.

-- The jobs table. No table references it and no trigger is attached to it.
CREATE TABLE jobs_aligned (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL
                   CONSTRAINT jobs_kind_check CHECK (kind IN ('process_document', 'detect_connections')),
    payload        TEXT    NOT NULL DEFAULT '{}' CONSTRAINT jobs_payload_check CHECK (json_valid(payload)),
    status         TEXT    NOT NULL DEFAULT 'pending'
                   CONSTRAINT jobs_status_check
                   CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled')),
    priority       INTEGER NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL DEFAULT 0 CONSTRAINT jobs_attempts_check CHECK (attempts >= 0),
    max_attempts   INTEGER NOT NULL DEFAULT 3 CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    run_at         INTEGER NOT NULL,
    lock_owner     TEXT,
    lock_until     INTEGER,
    lease_token    INTEGER NOT NULL DEFAULT 0 CONSTRAINT jobs_lease_token_check CHECK (lease_token >= 0),
    started_at     INTEGER,
    last_heartbeat INTEGER,
    timeout_ms     INTEGER NOT NULL CONSTRAINT jobs_timeout_ms_check CHECK (timeout_ms > 0),
    unique_key     TEXT,
    metadata       TEXT    NOT NULL DEFAULT '{}' CONSTRAINT jobs_metadata_check CHECK (json_valid(metadata)),
    result         TEXT    CONSTRAINT jobs_result_check CHECK (result IS NULL OR json_valid(result)),
    last_error     TEXT,
    error_kind     TEXT
                   CONSTRAINT jobs_error_kind_check
                   CHECK (error_kind IN ('retryable', 'permanent', 'timeout', 'lease_lost')),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    -- A finish time is set if and only if the job is in a terminal state.
    CONSTRAINT jobs_finished_iff_terminal
        CHECK ((status IN ('completed', 'failed', 'dead', 'cancelled')) = (finished_at IS NOT NULL)),
    -- A job is locked if and only if it is processing: owner and expiry together, never one alone.
    CONSTRAINT jobs_locked_iff_processing
        CHECK ((status = 'processing') = (lock_owner IS NOT NULL)
           AND (status = 'processing') = (lock_until IS NOT NULL)),
    -- A processing job knows when its attempt started (the timeout is measured from it).
    CONSTRAINT jobs_processing_has_started
        CHECK (status <> 'processing' OR started_at IS NOT NULL)
);

-- Rows the weaker rules let through would stop the copy, and with it the store's start. The lock
-- fields of a job that is not processing are read by nothing, so they are cleared; a processing
-- job without a start time gets its last update, which is at or after its lease.
INSERT INTO jobs_aligned (id, kind, payload, status, priority, attempts, max_attempts, run_at, lock_owner,
                          lock_until, lease_token, started_at, last_heartbeat, timeout_ms, unique_key, metadata,
                          result, last_error, error_kind, created_at, updated_at, finished_at)
    SELECT id, kind, payload, status, priority, attempts, max_attempts, run_at,
           CASE WHEN status = 'processing' THEN lock_owner END,
           CASE WHEN status = 'processing' THEN lock_until END,
           lease_token,
           CASE WHEN status = 'processing' THEN coalesce(started_at, updated_at) ELSE started_at END,
           last_heartbeat, timeout_ms, unique_key, metadata, result, last_error, error_kind, created_at,
           updated_at, finished_at
    FROM jobs;

-- AUTOINCREMENT never reuses an id, even of a purged job: the new table takes over the old one's
-- counter (at least the largest id copied), and the rename below carries it to the new name.
DELETE FROM sqlite_sequence WHERE name = 'jobs_aligned';
UPDATE sqlite_sequence SET name = 'jobs_aligned' WHERE name = 'jobs';

DROP TABLE jobs;
ALTER TABLE jobs_aligned RENAME TO jobs;

-- The indexes of 0001 and 0008.
CREATE UNIQUE INDEX jobs_active_unique_key
    ON jobs (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing');
CREATE INDEX jobs_claim
    ON jobs (priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX jobs_processing_lock_until
    ON jobs (lock_until) WHERE status = 'processing';
CREATE INDEX jobs_processing_owner
    ON jobs (lock_owner) WHERE status = 'processing';
CREATE INDEX jobs_status_kind ON jobs (status, kind);
CREATE INDEX jobs_document
    ON jobs (json_extract(payload, '$.document_id'), id);
CREATE INDEX jobs_claim_kind
    ON jobs (kind, priority DESC, run_at, id) WHERE status = 'pending';

-- Documents, chunks and connections, each new table referencing the new one above it.
CREATE TABLE documents_aligned (
    id                    TEXT    PRIMARY KEY,
    content_hash          TEXT    NOT NULL UNIQUE,
    file_name             TEXT    NOT NULL,
    byte_size             INTEGER NOT NULL CONSTRAINT documents_byte_size_check CHECK (byte_size >= 0),
    title                 TEXT,
    author                TEXT,
    language              TEXT,
    status                TEXT    NOT NULL DEFAULT 'pending'
                          CONSTRAINT documents_status_check
                          CHECK (status IN ('pending', 'processing', 'embedded', 'complete', 'failed')),
    chunk_count           INTEGER NOT NULL DEFAULT 0 CONSTRAINT documents_chunk_count_check CHECK (chunk_count >= 0),
    markdown_hash         TEXT,
    ai_requests           INTEGER NOT NULL DEFAULT 0,
    embeddings_from_cache INTEGER NOT NULL DEFAULT 0,
    error                 TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
INSERT INTO documents_aligned (id, content_hash, file_name, byte_size, title, author, language, status, chunk_count,
                               markdown_hash, ai_requests, embeddings_from_cache, error, created_at, updated_at)
    SELECT id, content_hash, file_name, byte_size, title, author, language, status, chunk_count,
           markdown_hash, ai_requests, embeddings_from_cache, error, created_at, updated_at
    FROM documents;

CREATE TABLE chunks_aligned (
    id            TEXT    PRIMARY KEY,
    document_id   TEXT    NOT NULL REFERENCES documents_aligned (id) ON DELETE CASCADE,
    chunk_index   INTEGER NOT NULL CONSTRAINT chunks_chunk_index_check CHECK (chunk_index >= 0),
    heading_path  TEXT    NOT NULL DEFAULT '[]'
                  CONSTRAINT chunks_heading_path_check
                  CHECK (json_valid(heading_path) AND json_type(heading_path) = 'array'),
    text          TEXT    NOT NULL,
    start_offset  INTEGER NOT NULL,
    end_offset    INTEGER NOT NULL,
    content_hash  TEXT    NOT NULL,
    UNIQUE (document_id, chunk_index)
);
INSERT INTO chunks_aligned (rowid, id, document_id, chunk_index, heading_path, text, start_offset, end_offset,
                            content_hash)
    SELECT rowid, id, document_id, chunk_index, heading_path, text, start_offset, end_offset, content_hash
    FROM chunks;

CREATE TABLE connections_aligned (
    source_chunk_id TEXT NOT NULL REFERENCES chunks_aligned (id) ON DELETE CASCADE,
    target_chunk_id TEXT NOT NULL REFERENCES chunks_aligned (id) ON DELETE CASCADE,
    engine          TEXT NOT NULL,
    score           REAL NOT NULL,
    reason          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (source_chunk_id, target_chunk_id, engine),
    CONSTRAINT connections_distinct_chunks CHECK (source_chunk_id <> target_chunk_id)
);
INSERT INTO connections_aligned (source_chunk_id, target_chunk_id, engine, score, reason, created_at)
    SELECT source_chunk_id, target_chunk_id, engine, score, reason, created_at
    FROM connections;

CREATE TABLE embedding_cache_aligned (
    content_hash  TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    dimensions    INTEGER NOT NULL CONSTRAINT embedding_cache_dimensions_check CHECK (dimensions > 0),
    vector        BLOB    NOT NULL CONSTRAINT embedding_cache_vector_check CHECK (length(vector) = dimensions * 4),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (content_hash, model, dimensions)
);
INSERT INTO embedding_cache_aligned (rowid, content_hash, model, dimensions, vector, created_at)
    SELECT rowid, content_hash, model, dimensions, vector, created_at
    FROM embedding_cache;

-- No chunk leaves here, so none may leave the term index. (Dropping a table drops its triggers
-- before its rows anyway; dropping this one first says so.)
DROP TRIGGER chunks_leave_term_index;
DROP TABLE connections;
DROP TABLE chunks;
DROP TABLE documents;
DROP TABLE embedding_cache;

ALTER TABLE documents_aligned RENAME TO documents;
ALTER TABLE chunks_aligned RENAME TO chunks;
ALTER TABLE connections_aligned RENAME TO connections;
ALTER TABLE embedding_cache_aligned RENAME TO embedding_cache;

-- The indexes of 0002 and 0005, and the trigger of 0006.
CREATE INDEX chunks_content_hash ON chunks (content_hash);
CREATE INDEX connections_target ON connections (target_chunk_id);
CREATE INDEX embedding_cache_model_key ON embedding_cache (model, dimensions);
CREATE TRIGGER chunks_leave_term_index AFTER DELETE ON chunks
BEGIN
    DELETE FROM chunk_term_vectors WHERE chunk = old.rowid;
    DELETE FROM chunk_terms WHERE rowid = old.rowid;
END;
