-- A notification whenever a job becomes pending (queued, retried, handed back, taken back or
-- requeued by an operator), from any process: workers listening on the channel start new work at
-- once instead of at their next poll. The payload names the schema, so that stores in other
-- schemas of the same database ignore it. PostgreSQL sends notifications at commit, and folds
-- those of one transaction with the same channel and payload into one.
--
-- SQLite has no such channel between processes: its store raises the same signal in-process
-- (crates/checkpoint-store/src/job_signal.rs), and other processes poll.
--
-- Idempotent, like every PostgreSQL migration here: applying it again changes nothing.
CREATE OR REPLACE FUNCTION jobs_notify_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('quire_jobs_pending', current_schema());
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jobs_notify_pending ON jobs;
CREATE TRIGGER jobs_notify_pending
    AFTER INSERT OR UPDATE OF status, run_at ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION jobs_notify_pending();
