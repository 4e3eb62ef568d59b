-- What the dashboard's overview shows of the queue's recent past: the same tables as
-- migrations/sqlite/0016_queue_activity.sql.
--
-- Attempts by when they ended: the overview counts the last hour's completions and failures
-- every few seconds, which must not read every attempt the library ever made.
--
-- Idempotent, like every PostgreSQL migration here: applying it again changes nothing.
CREATE INDEX IF NOT EXISTS job_attempts_by_end ON job_attempts (ended_at);

-- The last pass of any worker's reaper, one row: each pass replaces it, so a glance tells
-- whether stale leases are being recovered at all (no pass for minutes: no worker is running
-- its reaper), and what the pass did.
CREATE TABLE IF NOT EXISTS reaper_passes (
    only_row      INTEGER PRIMARY KEY CONSTRAINT reaper_passes_one_row CHECK (only_row = 1),
    worker        TEXT    NOT NULL,
    passed_at     BIGINT  NOT NULL,
    requeued      INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL
);
