-- Two lookups of the jobs table that had no index of their own (the same two indexes, under the
-- same names, as migrations/sqlite/0008_job_indexes.sql).
--
-- The jobs of one document (`quire status`, `process`, `replay --inline`): by the document id in
-- the payload, newest first (`LIST_JOBS_OF_DOCUMENT`). Without it every listing read the whole
-- table.
CREATE INDEX IF NOT EXISTS jobs_document
    ON jobs ((payload -> 'document_id'), id);

-- The claim of one kind (while embedding work is paused, the worker leases only
-- detect_connections): due pending jobs of that kind, highest priority first, then oldest
-- (`LEASE_ONE_KIND`), instead of walking every pending job of the paused kind in `jobs_claim`.
CREATE INDEX IF NOT EXISTS jobs_claim_kind
    ON jobs (kind, priority DESC, run_at, id) WHERE status = 'pending';
