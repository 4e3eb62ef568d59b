-- Every attempt of a job, as it ended: the same table and rule as
-- migrations/postgres/0012_job_attempts.sql.
--
-- An attempt is one lease of the job that started work; it ends when the job leaves
-- `processing` (completed, failed, dead, cancelled, handed back to the queue, retried after a
-- failure or taken back by the reaper or an operator). A trigger writes the row, so it is written
-- by whichever statement ends the attempt and in its transaction: fenced like it, never written
-- for a write that was refused, and never missed by a path that forgot it. The row keeps what
-- the job's own row is about to overwrite: the worker, when it started, the stage it reached and
-- why it ended.
--
-- `outcome`: the job's new status when the attempt finished it (`completed`, `failed`, `dead`,
-- `cancelled`); `handed_back` when the attempt was given back without counting (a rate limit, a
-- shutdown, a release of a job leased ahead); `retrying` when it failed, or was taken back, and
-- the job waits for another attempt.
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    lease_token INTEGER NOT NULL,
    worker      TEXT,
    started_at  INTEGER,
    ended_at    INTEGER NOT NULL,
    stage       TEXT,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    PRIMARY KEY (job_id, lease_token)
);

CREATE TRIGGER IF NOT EXISTS jobs_record_attempt_end
AFTER UPDATE OF status, lease_token ON jobs
WHEN OLD.status = 'processing' AND (NEW.status <> 'processing' OR NEW.lease_token <> OLD.lease_token)
BEGIN
    INSERT OR IGNORE INTO job_attempts
        (job_id, attempt, lease_token, worker, started_at, ended_at, stage, outcome, error)
    VALUES (
        OLD.id, OLD.attempts, OLD.lease_token, OLD.lock_owner, OLD.started_at, NEW.updated_at,
        json_extract(NEW.metadata, '$.processing_stage'),
        CASE
            WHEN NEW.status IN ('completed', 'failed', 'dead', 'cancelled') THEN NEW.status
            WHEN NEW.attempts < OLD.attempts THEN 'handed_back'
            ELSE 'retrying'
        END,
        CASE WHEN NEW.status = 'completed' THEN NULL ELSE NEW.last_error END
    );
END;
