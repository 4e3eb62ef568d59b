-- The job queue. Times are milliseconds since the Unix epoch, taken from the store's clock.
-- The CHECK constraints state the job state machine (see ARCHITECTURE.md).
CREATE TABLE IF NOT EXISTS jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL CHECK (kind IN ('process_document', 'detect_connections')),
    payload        TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status         TEXT    NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled')),
    priority       INTEGER NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts   INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at         INTEGER NOT NULL,
    lock_owner     TEXT,
    lock_until     INTEGER,
    lease_token    INTEGER NOT NULL DEFAULT 0,
    started_at     INTEGER,
    last_heartbeat INTEGER,
    timeout_ms     INTEGER NOT NULL CHECK (timeout_ms > 0),
    unique_key     TEXT,
    metadata       TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    result         TEXT    CHECK (result IS NULL OR json_valid(result)),
    last_error     TEXT,
    error_kind     TEXT    CHECK (error_kind IN ('retryable', 'permanent', 'timeout', 'lease_lost')),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    -- A finish time is set if and only if the job is in a terminal state.
    CHECK ((status IN ('completed', 'failed', 'dead', 'cancelled')) = (finished_at IS NOT NULL)),
    -- A job is locked if and only if it is processing.
    CHECK ((status = 'processing') = (lock_owner IS NOT NULL AND lock_until IS NOT NULL))
);

-- At most one pending-or-processing job per unique key.
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

-- Operator listings.
CREATE INDEX IF NOT EXISTS jobs_status_kind ON jobs (status, kind);
