-- The document a job works on gets a column of its own, the same as
-- migrations/sqlite/0011_job_documents.sql.
--
-- The store keeps two rules about a job's document (a `process_document` job's document follows
-- the job into `pending` on a retry and into `failed` on a dead letter or a cancel), and lists a
-- document's jobs. It read the document from the payload, which made the payload's shape part of
-- the store's contract; now the payload is the worker's own (opaque JSON to the store) and the
-- enqueuer names the document here. Rows queued before this migration get it from their payload.
--
-- Idempotent, like every PostgreSQL migration here: applying it again changes nothing.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS document_id TEXT;
UPDATE jobs SET document_id = payload ->> 'document_id'
    WHERE document_id IS NULL AND jsonb_typeof(payload -> 'document_id') = 'string';

-- A document's jobs, newest first (`LIST_JOBS_OF_DOCUMENT`), now by the column.
DROP INDEX IF EXISTS jobs_document;
CREATE INDEX IF NOT EXISTS jobs_document ON jobs (document_id, id);
