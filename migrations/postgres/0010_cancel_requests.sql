-- An operator's request to cancel a running job (`quire jobs cancel`), the same column under the
-- same rule as migrations/sqlite/0010_cancel_requests.sql.
--
-- A pending job is cancelled at once; a processing one is only asked to stop: the time of the
-- request is recorded here, the worker holding the job learns of it from its next heartbeat and
-- stops at the job's next stage boundary, writing `cancelled` under its lease. The request is
-- addressed to the attempt that holds the job, so it lives only while the job is processing:
-- every statement that takes a job out of `processing` clears it.
--
-- Idempotent, like every PostgreSQL migration here: applying it again changes nothing.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cancel_requested_at BIGINT;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_cancel_requested_while_processing;
ALTER TABLE jobs ADD CONSTRAINT jobs_cancel_requested_while_processing
    CHECK (cancel_requested_at IS NULL OR status = 'processing');
