-- The job queue, PostgreSQL edition: the same columns and meaning as migrations/sqlite/0001_jobs.sql.
--
-- Every object lives in the store's own schema: the store sets `search_path` to it on each
-- connection, so nothing here is schema-qualified (and sqlx's `_sqlx_migrations` lands there too).
-- Every statement is idempotent (`IF NOT EXISTS`), so running this file twice is harmless.
--
-- Times are BIGINT milliseconds since the Unix epoch, like SQLite, so both backends map rows to
-- the same `Job` values. They are taken from the server's clock (`now()`) unless the store was
-- given a clock of its own (tests), in which case the store binds that clock's time.
--
-- Status, kind and error kind are TEXT with CHECK constraints rather than PostgreSQL enums: a
-- new value is one constraint swap in a later migration, while `ALTER TYPE ... ADD VALUE`
-- cannot be used in the transaction it was added in.
--
-- The CHECK constraints state the job state machine (see ARCHITECTURE.md and model.rs).
CREATE TABLE IF NOT EXISTS jobs (
    id             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('process_document', 'detect_connections')),
    payload        JSONB   NOT NULL DEFAULT '{}',
    status         TEXT    NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled')),
    priority       INTEGER NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts   INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at         BIGINT  NOT NULL,
    lock_owner     TEXT,
    lock_until     BIGINT,
    lease_token    BIGINT  NOT NULL DEFAULT 0 CHECK (lease_token >= 0),
    started_at     BIGINT,
    last_heartbeat BIGINT,
    timeout_ms     BIGINT  NOT NULL CHECK (timeout_ms > 0),
    unique_key     TEXT,
    metadata       JSONB   NOT NULL DEFAULT '{}',
    result         JSONB,
    last_error     TEXT,
    error_kind     TEXT    CHECK (error_kind IN ('retryable', 'permanent', 'timeout', 'lease_lost')),
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    finished_at    BIGINT,
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
) WITH (
    -- A queue row is updated several times in its short life (lease, checkpoints, heartbeats,
    -- completion). Leaving 30% of each page free lets the new row version stay on the same page:
    -- checkpoint writes (no indexed column changes) become HOT updates, and the others at least
    -- avoid touching a second heap page.
    fillfactor = 70,
    -- Every status change touches a column in a partial index's condition, so it is never HOT
    -- and leaves a dead tuple behind; draining 1M jobs leaves 1M dead rows. The default
    -- thresholds (20% of the table) let that pile up before autovacuum runs; vacuum and analyze
    -- after 2% (plus a fixed floor), so the claim's index scans stay short.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);

-- At most one pending-or-processing job per unique key. Enqueue relies on this index through
-- `INSERT ... ON CONFLICT DO NOTHING`, so two concurrent enqueues with one key make one job.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_active_unique_key
    ON jobs (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing');

-- The claim: due pending jobs, highest priority first, then oldest.
CREATE INDEX IF NOT EXISTS jobs_claim
    ON jobs (priority DESC, run_at, id) WHERE status = 'pending';

-- The reaper's scans and the heartbeat's owner filter touch processing rows only.
CREATE INDEX IF NOT EXISTS jobs_processing_lock_until
    ON jobs (lock_until) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS jobs_processing_owner
    ON jobs (lock_owner) WHERE status = 'processing';
-- The timeout scan: processing jobs by the instant their attempt runs out of time.
CREATE INDEX IF NOT EXISTS jobs_processing_deadline
    ON jobs ((started_at + timeout_ms)) WHERE status = 'processing';

-- Operator listings.
CREATE INDEX IF NOT EXISTS jobs_status_kind ON jobs (status, kind);
