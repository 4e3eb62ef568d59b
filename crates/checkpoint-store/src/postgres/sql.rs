//! Every SQL statement of the PostgreSQL job store, in one place. It runs past 500 lines because
//! it is the whole backend's SQL (queue, documents, vectors, terms): kept together so that each
//! table's statements, and their locking order, can be read side by side.
//!
//! Times are BIGINT milliseconds. Every statement that needs "now" takes it as a nullable
//! parameter: the store binds its injected clock's time when it has one (tests), and NULL
//! otherwise, in which case the server's transaction time (`now()`) is used, so that workers on
//! machines with skewed clocks agree. Lists are bound as arrays (`$n::bigint[]`, `$n::text[]`),
//! so every statement text is static.
//!
//! Statements that lock several rows lock them in id order (`ORDER BY id FOR UPDATE`), so two of
//! them never deadlock each other; scans that may meet rows another session is working on use
//! `SKIP LOCKED`.

macro_rules! job_columns {
    () => {
        "id, kind, payload, status, priority, attempts, max_attempts, run_at, lock_owner, \
         lock_until, lease_token, started_at, last_heartbeat, timeout_ms, unique_key, metadata, \
         result, last_error, error_kind, created_at, updated_at, finished_at, cancel_requested_at, document_id"
    };
}

/// The same columns, qualified, for statements that join `jobs` with something else.
macro_rules! qualified_job_columns {
    () => {
        "jobs.id, jobs.kind, jobs.payload, jobs.status, jobs.priority, jobs.attempts, \
         jobs.max_attempts, jobs.run_at, jobs.lock_owner, jobs.lock_until, jobs.lease_token, \
         jobs.started_at, jobs.last_heartbeat, jobs.timeout_ms, jobs.unique_key, jobs.metadata, \
         jobs.result, jobs.last_error, jobs.error_kind, jobs.created_at, jobs.updated_at, \
         jobs.finished_at, jobs.cancel_requested_at, jobs.document_id"
    };
}

/// "Now" in milliseconds: the bound parameter `$n` if not NULL, else the server's transaction
/// time (constant within a transaction, so every statement of one transaction agrees).
macro_rules! now {
    ($n:literal) => {
        concat!("COALESCE(", $n, "::bigint, floor(extract(epoch FROM now()) * 1000)::bigint)")
    };
}

/// A one-row relation `clock(now)`, to join in statements that use "now" several times.
macro_rules! clock {
    ($n:literal) => {
        concat!("(SELECT ", now!($n), " AS now) AS clock")
    };
}

/// ?1 now or NULL. The time the other statements would use.
pub const NOW: &str = concat!("SELECT ", now!("$1"));

/// $1 kind, $2 payload, $3 priority, $4 max_attempts, $5 delay (ms), $6 timeout (ms),
/// $7 unique key or NULL, $8 now or NULL. Returns no row when an active job has the key.
pub const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (kind, payload, priority, max_attempts, run_at, timeout_ms, unique_key, \
                       created_at, updated_at, document_id) \
     SELECT $1::text, $2::jsonb, $3::integer, $4::integer, clock.now + $5::bigint, $6::bigint, \
            $7::text, clock.now, clock.now, $9::text \
     FROM ",
    clock!("$8"),
    " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing') \
      DO NOTHING \
     RETURNING ",
    job_columns!()
);

/// $1 unique key.
pub const ACTIVE_JOB_BY_UNIQUE_KEY: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE unique_key = $1 AND status IN ('pending', 'processing')");

/// The claim: up to $5 due pending jobs leased to $1 at $2 (or the server's now) for $3 ms,
/// among the kinds `$kinds` selects from $4.
macro_rules! lease {
    ($kinds:literal) => {
        concat!(
            "WITH due AS ( \
                 SELECT id FROM jobs \
                 WHERE status = 'pending' AND run_at <= ",
            now!("$2"),
            "      AND ",
            $kinds,
            "    ORDER BY priority DESC, run_at, id LIMIT $5 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET status = 'processing', lock_owner = $1, lock_until = clock.now + $3::bigint, \
                 lease_token = jobs.lease_token + 1, attempts = jobs.attempts + 1, \
                 started_at = clock.now, last_heartbeat = clock.now, updated_at = clock.now \
             FROM due, ",
            clock!("$2"),
            " WHERE jobs.id = due.id RETURNING ",
            qualified_job_columns!()
        )
    };
}

/// $1 owner, $2 now or NULL, $3 ttl (ms), $4 kinds, $5 limit.
pub const LEASE: &str = lease!("kind = ANY($4::text[])");

/// [`LEASE`] for one kind, $4 (while embedding work is paused), so that the planner can start
/// at that kind's first due job in `jobs_claim_kind` instead of walking past the other kinds'.
pub const LEASE_ONE_KIND: &str = lease!("kind = $4::text");

/// $1 owner, $2 now or NULL, $3 ttl (ms), $4 job ids, $5 their lease tokens (pair-wise).
/// Returns the renewed (id, token) pairs, each with whether an operator asked to cancel its job.
pub const HEARTBEAT: &str = concat!(
    // `(id, token) IN (SELECT ... UNNEST ...)` plans as a hash semi join; a plain JOIN on the
    // pair let the planner nest-loop over the unnested array for every held row (quadratic:
    // 11 ms instead of 0.4 ms for 250 leases).
    "WITH held AS ( \
         SELECT id FROM jobs \
         WHERE (id, lease_token) IN (SELECT * FROM UNNEST($4::bigint[], $5::bigint[])) \
           AND status = 'processing' AND lock_owner = $1 \
         ORDER BY id FOR UPDATE) \
     UPDATE jobs SET lock_until = clock.now + $3::bigint, last_heartbeat = clock.now, \
         updated_at = clock.now \
     FROM held, ",
    clock!("$2"),
    " WHERE jobs.id = held.id \
      RETURNING jobs.id, jobs.lease_token, jobs.cancel_requested_at IS NOT NULL AS cancel_requested"
);

/// $1 id, $2 token, $3 metadata, $4 now or NULL.
/// $1 id, $2 token, $3 now or NULL.
pub const START_CLOCK: &str = concat!(
    "UPDATE jobs SET started_at = ",
    now!("$3"),
    ", updated_at = ",
    now!("$3"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

pub const SAVE_CHECKPOINT: &str = concat!(
    "UPDATE jobs SET metadata = $3::jsonb, updated_at = ",
    now!("$4"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// $1 id, $2 token, $3 result or NULL, $4 now or NULL.
pub const COMPLETE: &str = concat!(
    "UPDATE jobs SET status = 'completed', result = $3::jsonb, finished_at = clock.now, \
         updated_at = clock.now, lock_owner = NULL, lock_until = NULL, cancel_requested_at = NULL \
     FROM ",
    clock!("$4"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// Locks a held job. $1 id, $2 token, $3 now or NULL. Returns the job and now.
pub const HELD_JOB: &str = concat!(
    "SELECT ",
    job_columns!(),
    ", ",
    now!("$3"),
    " AS now FROM jobs WHERE id = $1 AND lease_token = $2 AND status = 'processing' FOR UPDATE"
);

/// Moves a held job back to pending. $1 id, $2 token, $3 delay before it runs again (ms),
/// $4 last_error, $5 error_kind or NULL (keep), $6 now or NULL, $7 attempts given back (0 or 1).
pub const REQUEUE_HELD: &str = concat!(
    "UPDATE jobs SET status = 'pending', run_at = clock.now + $3::bigint, last_error = $4, \
         error_kind = COALESCE($5::text, error_kind), updated_at = clock.now, lock_owner = NULL, \
         lock_until = NULL, lease_token = lease_token + 1, \
         attempts = GREATEST(attempts - $7::integer, 0), cancel_requested_at = NULL \
     FROM ",
    clock!("$6"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// Dead-letters a held job. $1 id, $2 token, $3 last_error, $4 error_kind, $5 now or NULL.
pub const DEAD_LETTER_HELD: &str = concat!(
    "UPDATE jobs SET status = 'dead', last_error = $3, error_kind = $4, \
         finished_at = clock.now, updated_at = clock.now, lock_owner = NULL, lock_until = NULL, \
         lease_token = lease_token + 1, cancel_requested_at = NULL \
     FROM ",
    clock!("$5"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// $1 owner, $2 job ids, $3 now or NULL, $4 their lease tokens. Returns the released ids.
pub const RELEASE: &str = concat!(
    "WITH held AS ( \
         SELECT id FROM jobs \
         WHERE (id, lease_token) IN (SELECT * FROM UNNEST($2::bigint[], $4::bigint[])) \
           AND status = 'processing' AND lock_owner = $1 \
         ORDER BY id FOR UPDATE) \
     UPDATE jobs SET status = 'pending', attempts = GREATEST(jobs.attempts - 1, 0), \
         lock_owner = NULL, lock_until = NULL, started_at = NULL, last_heartbeat = NULL, \
         lease_token = jobs.lease_token + 1, cancel_requested_at = NULL, updated_at = ",
    now!("$3"),
    " FROM held WHERE jobs.id = held.id RETURNING jobs.id"
);

/// Processing jobs whose lease expired, locked; rows another reaper holds are skipped.
/// $1 now, $2 limit.
pub const EXPIRED_LEASES: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE status = 'processing' AND lock_until < $1 ORDER BY lock_until, id LIMIT $2 \
      FOR UPDATE SKIP LOCKED"
);

/// Processing jobs that ran past their timeout, locked; rows another reaper holds are skipped.
/// $1 now, $2 limit.
pub const TIMED_OUT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE status = 'processing' AND started_at + timeout_ms < $1 \
      ORDER BY started_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
);

/// What an operator may take back: processing jobs whose lease has expired and, when $1 (ms) is
/// not NULL, silent for at least that long; the longest expired first. $2 now or NULL.
pub const EXPIRED_AND_SILENT_FOR: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs, ",
    clock!("$2"),
    " WHERE status = 'processing' AND lock_until < clock.now \
        AND ($1::bigint IS NULL OR COALESCE(last_heartbeat, started_at, updated_at) <= clock.now - $1::bigint) \
      ORDER BY lock_until, id"
);

/// The given jobs, locked in id order; a job whose row is locked (its worker is writing to it
/// right now, so it is not silent) is skipped. $1 job ids.
pub const LOCK_JOBS: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE SKIP LOCKED");

/// $1 job id.
pub const JOB_ATTEMPTS: &str = "SELECT attempt, worker, started_at, ended_at, stage, outcome, error \
     FROM job_attempts WHERE job_id = $1 ORDER BY lease_token";

/// $1 id.
pub const JOB_BY_ID: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");

/// $1 status or NULL, $2 kind or NULL, $3 document id or NULL, $4 limit, $5 a job id the jobs
/// listed are older than, or NULL.
pub const LIST_JOBS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2) \
        AND ($3::text IS NULL OR document_id = $3) AND ($5::bigint IS NULL OR id < $5) \
      ORDER BY id DESC LIMIT $4"
);

/// [`LIST_JOBS`] of one document, $3, through `jobs_document`.
pub const LIST_JOBS_OF_DOCUMENT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE document_id = $3 \
        AND ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2) \
        AND ($5::bigint IS NULL OR id < $5) \
      ORDER BY id DESC LIMIT $4"
);

/// Byte order (`COLLATE "C"`), whatever the database's collation, like SQLite.
pub const COUNTS: &str = "SELECT status, kind, COUNT(*) AS count, MIN(created_at) AS oldest_created_at \
     FROM jobs GROUP BY status, kind \
     ORDER BY status COLLATE \"C\", kind COLLATE \"C\"";

/// $1 since, $2 period (ms).
pub const ATTEMPTS_ENDED: &str = "SELECT (ended_at / $2) * $2 AS period_start, outcome, COUNT(*) AS count \
     FROM job_attempts WHERE ended_at >= $1 GROUP BY 1, 2 ORDER BY period_start, outcome COLLATE \"C\"";

/// $1 worker, $2 now or NULL, $3 requeued, $4 dead-lettered.
pub const RECORD_REAPER_PASS: &str = concat!(
    "INSERT INTO reaper_passes (only_row, worker, passed_at, requeued, dead_lettered) VALUES (1, $1, ",
    now!("$2"),
    ", $3, $4) ON CONFLICT (only_row) DO UPDATE SET worker = excluded.worker, \
     passed_at = excluded.passed_at, requeued = excluded.requeued, dead_lettered = excluded.dead_lettered"
);

pub const LAST_REAPER_PASS: &str = "SELECT worker, passed_at, requeued, dead_lettered FROM reaper_passes";

/// $1 id, $2 now or NULL.
pub const RETRY_DEAD: &str = concat!(
    "UPDATE jobs SET status = 'pending', attempts = 0, run_at = clock.now, finished_at = NULL, \
         updated_at = clock.now \
     FROM ",
    clock!("$2"),
    " WHERE id = $1 AND status = 'dead' RETURNING ",
    qualified_job_columns!()
);

/// $1 id: the unique key of the job and the id of another active job holding it, if any.
pub const UNIQUE_KEY_HOLDER: &str = "SELECT job.unique_key, holder.id FROM jobs job \
     JOIN jobs holder ON holder.unique_key = job.unique_key AND holder.id <> job.id \
                     AND holder.status IN ('pending', 'processing') \
     WHERE job.id = $1";

/// $1 age (ms), $2 now or NULL.
pub const PURGE_DEAD: &str =
    concat!("DELETE FROM jobs WHERE status = 'dead' AND finished_at <= ", now!("$2"), " - $1::bigint");

/// $1 id: the job, locked (an operator's cancellation decides on the row it then changes).
pub const JOB_FOR_UPDATE: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1 FOR UPDATE");

/// An operator's cancellation of a job no worker holds. $1 id, $2 reason, $3 now or NULL.
pub const CANCEL_PENDING: &str = concat!(
    "UPDATE jobs SET status = 'cancelled', last_error = $2, finished_at = clock.now, \
         updated_at = clock.now \
     FROM ",
    clock!("$3"),
    " WHERE id = $1 AND status = 'pending' RETURNING ",
    qualified_job_columns!()
);

/// An operator's request to cancel a held job; a second request keeps the first one's time.
/// $1 id, $2 now or NULL.
pub const REQUEST_CANCEL: &str = concat!(
    "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, clock.now), \
         updated_at = clock.now \
     FROM ",
    clock!("$2"),
    " WHERE id = $1 AND status = 'processing' RETURNING ",
    qualified_job_columns!()
);

/// The lease holder cancels its job, giving back the attempt. $1 id, $2 token, $3 reason,
/// $4 now or NULL.
pub const CANCEL_HELD: &str = concat!(
    "UPDATE jobs SET status = 'cancelled', last_error = $3, finished_at = clock.now, \
         updated_at = clock.now, lock_owner = NULL, lock_until = NULL, \
         lease_token = lease_token + 1, attempts = GREATEST(attempts - 1, 0), \
         cancel_requested_at = NULL \
     FROM ",
    clock!("$4"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing' RETURNING ",
    qualified_job_columns!()
);

/// $1 id, $2 metadata, $3 now or NULL.
pub const REQUEUE_WITH_CHECKPOINT: &str = concat!(
    "UPDATE jobs SET status = 'pending', attempts = 0, run_at = clock.now, finished_at = NULL, \
         metadata = $2::jsonb, updated_at = clock.now \
     FROM ",
    clock!("$3"),
    " WHERE id = $1 AND status <> 'processing' RETURNING ",
    qualified_job_columns!()
);

// ---------------------------------------------------------------------------------------------
// Documents, chunks, the embedding cache and connections (used by `documents.rs`).
//
// Lists are bound column-wise as arrays and expanded with `UNNEST`, so a whole book's chunks or
// a document's connections go in one statement with a fixed number of parameters. Orderings
// that SQLite gives in byte order use `COLLATE "C"`, so both backends list rows alike.
//
// Lock order, which every multi-statement document transaction follows so that none of them
// can deadlock another: the job row (`FOR SHARE`, the fence), then the document row, then chunk
// rows in id order, then connection rows in key order. See `documents.rs` for why each is taken.

/// The lease check every fenced document write starts its transaction with. $1 id, $2 token.
///
/// `FOR SHARE` holds the job row until commit: every statement that takes a lease away
/// (reaper, timeout, operator, completion, failure) is an `UPDATE` of this row or a
/// `SELECT … FOR UPDATE` of it, and both conflict with a share lock, so they wait for the
/// document write to commit (or, with `SKIP LOCKED`, leave the job for their next pass). And
/// if the lease is being taken away right now, this statement waits for that transaction and
/// then re-checks the token on the new row version, finding no row. A weaker `FOR KEY SHARE`
/// would not do: it does not conflict with an `UPDATE` that leaves the key alone.
pub const LEASE_HELD: &str =
    "SELECT 1 FROM jobs WHERE id = $1 AND lease_token = $2 AND status = 'processing' FOR SHARE";

macro_rules! document_columns {
    () => {
        "id, content_hash, file_name, byte_size, title, author, language, status, chunk_count, \
         markdown_hash, ai_requests, embeddings_from_cache, error, created_at, updated_at"
    };
}

/// $1 id, $2 content hash, $3 file name, $4 size, $5 now or NULL. Returns no row when a
/// document with this content exists; a concurrent insert of the same content is waited for.
pub const INSERT_DOCUMENT: &str = concat!(
    "INSERT INTO documents (id, content_hash, file_name, byte_size, created_at, updated_at) \
     SELECT $1::text, $2::text, $3::text, $4::bigint, clock.now, clock.now FROM ",
    clock!("$5"),
    " ON CONFLICT (content_hash) DO NOTHING RETURNING ",
    document_columns!()
);

/// $1 content hash.
pub const DOCUMENT_BY_HASH: &str = concat!("SELECT ", document_columns!(), " FROM documents WHERE content_hash = $1");

/// $1 id.
pub const DOCUMENT_BY_ID: &str = concat!("SELECT ", document_columns!(), " FROM documents WHERE id = $1");

/// Oldest first.
pub const LIST_DOCUMENTS: &str =
    concat!("SELECT ", document_columns!(), " FROM documents ORDER BY created_at, id COLLATE \"C\"");

/// $1 id, $2 status, $3 error, $4 now or NULL.
pub const SET_DOCUMENT_STATUS: &str =
    concat!("UPDATE documents SET status = $2, error = $3, updated_at = ", now!("$4"), " WHERE id = $1");

/// $1 id, $2 title, $3 author, $4 language, $5 markdown hash, $6 now or NULL.
pub const RECORD_EXTRACTION: &str = concat!(
    "UPDATE documents SET title = $2, author = $3, language = $4, markdown_hash = $5, updated_at = ",
    now!("$6"),
    " WHERE id = $1"
);

/// Locks a document against concurrent chunk and connection replacement. $1 id. Returns its
/// recorded chunk count (of the newest row version, even when the lock had to wait).
pub const LOCK_DOCUMENT: &str = "SELECT chunk_count FROM documents WHERE id = $1 FOR NO KEY UPDATE";

/// Locks a document's chunks, in id order, before they are deleted. $1 document id.
pub const LOCK_CHUNKS_OF_DOCUMENT: &str = "SELECT id FROM chunks WHERE document_id = $1 ORDER BY id FOR UPDATE";

/// Locks, in key order, every connection from or to a document's chunks: the rows that
/// deleting the chunks deletes too. $1 document id.
pub const LOCK_CONNECTIONS_TOUCHING_DOCUMENT: &str = "SELECT 1 FROM connections \
     WHERE source_chunk_id IN (SELECT id FROM chunks WHERE document_id = $1) \
        OR target_chunk_id IN (SELECT id FROM chunks WHERE document_id = $1) \
     ORDER BY source_chunk_id, target_chunk_id, engine FOR UPDATE";

/// $1 document id. Their connections go with them (the trigger of migration 0015).
pub const DELETE_CHUNKS: &str = "DELETE FROM chunks WHERE document_id = $1";

/// Column arrays, pair-wise: $1 ids, $2 document ids, $3 indexes, $4 heading paths (JSON
/// text), $5 texts, $6 start offsets, $7 end offsets, $8 content hashes, $9 terms
/// (space-separated).
pub const INSERT_CHUNKS: &str = "INSERT INTO chunks (id, document_id, chunk_index, heading_path, text, \
         start_offset, end_offset, content_hash, terms, term_vector) \
     SELECT c.id, c.document_id, c.chunk_index, c.heading_path::jsonb, c.text, c.start_offset, \
            c.end_offset, c.content_hash, array_to_tsvector(string_to_array(c.terms, ' ')), c.term_vector \
     FROM UNNEST($1::text[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::bigint[], \
                 $7::bigint[], $8::text[], $9::text[], $10::text[]) \
          AS c(id, document_id, chunk_index, heading_path, text, start_offset, end_offset, content_hash, terms, \
               term_vector)";

/// $1 id, $2 chunk count, $3 now or NULL.
pub const SET_CHUNK_COUNT: &str =
    concat!("UPDATE documents SET chunk_count = $2, updated_at = ", now!("$3"), " WHERE id = $1");

/// $1 document id.
pub const CHUNKS_OF_DOCUMENT: &str = "SELECT id, document_id, chunk_index, heading_path, text, start_offset, \
         end_offset, content_hash FROM chunks WHERE document_id = $1 ORDER BY chunk_index";

/// $1 model, $2 dimensions, $3 content hashes.
pub const CACHED_EMBEDDINGS: &str = "SELECT content_hash, vector FROM embedding_cache \
     WHERE model = $1 AND dimensions = $2 AND content_hash = ANY($3::text[])";

/// $1 content hashes, $2 model, $3 dimensions, $4 vectors (pair-wise with $1), $5 now or NULL.
/// Existing entries are kept. Callers pass the hashes sorted, so two concurrent inserts of
/// overlapping hashes wait for each other in the same order and never deadlock.
pub const INSERT_EMBEDDINGS: &str = concat!(
    "INSERT INTO embedding_cache (content_hash, model, dimensions, vector, created_at) \
     SELECT v.content_hash, $2::text, $3::integer, v.vector, clock.now \
     FROM UNNEST($1::text[], $4::bytea[]) AS v(content_hash, vector), ",
    clock!("$5"),
    " ON CONFLICT DO NOTHING"
);

/// $1 id, $2 requests, $3 from cache, $4 now or NULL.
pub const MARK_EMBEDDED: &str = concat!(
    "UPDATE documents SET status = 'embedded', error = NULL, ai_requests = $2, \
         embeddings_from_cache = $3, updated_at = ",
    now!("$4"),
    " WHERE id = $1"
);

/// $1 document id or NULL for all, $2 model, $3 dimensions.
///
/// Each chunk's vector is looked up by the cache's primary key (the `OFFSET 0` keeps the
/// planner from turning the lookup into a join): planned as a join, a table whose statistics
/// lag a bulk load (no `ANALYZE` yet) had a book's 1,213 chunks hashed against every vector of
/// a 100k library, 1.5 s against 24 ms.
pub const EMBEDDED_CHUNKS: &str = "SELECT c.id, c.document_id, c.chunk_index, c.heading_path, c.text, \
         c.start_offset, c.end_offset, c.content_hash, e.vector \
     FROM chunks c LEFT JOIN LATERAL (SELECT vector FROM embedding_cache \
         WHERE content_hash = c.content_hash AND model = $2 AND dimensions = $3 OFFSET 0) e ON true \
     WHERE $1::text IS NULL OR c.document_id = $1 \
     ORDER BY c.document_id COLLATE \"C\", c.chunk_index";

/// $1 document id.
/// $1 document: its status, read after `LOCK_DOCUMENT` in the same transaction.
pub const DOCUMENT_STATUS: &str = "SELECT status FROM documents WHERE id = $1";

/// $1 document: its chunks' ids.
pub const CHUNK_IDS_OF_DOCUMENT: &str = "SELECT id FROM chunks WHERE document_id = $1";

/// Locks the chunks that exist among $1 (ids), in id order, so that none of them can be
/// deleted before the transaction ends. Returns their ids; a chunk deleted by a transaction
/// this one waited for is not returned.
pub const LOCK_CHUNKS: &str = "SELECT id FROM chunks WHERE id = ANY($1::text[]) ORDER BY id FOR KEY SHARE";

/// Locks, in key order, the connections whose source is one of a document's chunks. $1 id.
pub const LOCK_CONNECTIONS_OF_DOCUMENT: &str = "SELECT 1 FROM connections \
     WHERE source_chunk_id IN (SELECT id FROM chunks WHERE document_id = $1) \
     ORDER BY source_chunk_id, target_chunk_id, engine FOR UPDATE";

/// $1 document id.
pub const DELETE_CONNECTIONS_OF_DOCUMENT: &str = "DELETE FROM connections \
     WHERE source_chunk_id IN (SELECT id FROM chunks WHERE document_id = $1)";

/// Column arrays, pair-wise: $1 sources, $2 targets, $3 engines, $4 scores, $5 reasons;
/// $6 now or NULL. The caller passes only rows whose chunks it has locked (see
/// [`LOCK_CHUNKS`]), each key at most once (`ON CONFLICT DO UPDATE` may not touch a row twice).
pub const INSERT_CONNECTIONS: &str = concat!(
    "INSERT INTO connections (source_chunk_id, target_chunk_id, engine, score, reason, created_at) \
     SELECT k.source, k.target, k.engine, k.score, k.reason, clock.now \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::real[], $5::text[]) \
          AS k(source, target, engine, score, reason), ",
    clock!("$6"),
    " ON CONFLICT (source_chunk_id, target_chunk_id, engine) \
      DO UPDATE SET score = excluded.score, reason = excluded.reason"
);

/// $1 id, $2 now or NULL.
pub const MARK_COMPLETE: &str =
    concat!("UPDATE documents SET status = 'complete', error = NULL, updated_at = ", now!("$2"), " WHERE id = $1");

/// $1 document, $2 engine or NULL, $3 min score or NULL, $4 limit. Each side is one JSON
/// object with the fields of a `ChunkView`.
pub const CONNECTIONS_OF_DOCUMENT: &str = "SELECT k.engine, k.score, k.reason, \
         jsonb_build_object('chunk_id', s.id, 'document_id', s.document_id, 'document_title', sd.title, \
                            'chunk_index', s.chunk_index, 'heading_path', s.heading_path, 'text', s.text) AS source, \
         jsonb_build_object('chunk_id', t.id, 'document_id', t.document_id, 'document_title', td.title, \
                            'chunk_index', t.chunk_index, 'heading_path', t.heading_path, 'text', t.text) AS target \
     FROM connections k \
     JOIN chunks s ON s.id = k.source_chunk_id JOIN documents sd ON sd.id = s.document_id \
     JOIN chunks t ON t.id = k.target_chunk_id JOIN documents td ON td.id = t.document_id \
     WHERE (s.document_id = $1 OR t.document_id = $1) AND ($2::text IS NULL OR k.engine = $2) \
       AND ($3::real IS NULL OR k.score >= $3) \
     ORDER BY k.score DESC, k.source_chunk_id COLLATE \"C\", k.target_chunk_id COLLATE \"C\" \
     LIMIT $4";

/// $1 document id.
pub const CONNECTION_COUNT: &str = "SELECT COUNT(*) FROM connections \
     WHERE source_chunk_id IN (SELECT id FROM chunks WHERE document_id = $1) \
        OR target_chunk_id IN (SELECT id FROM chunks WHERE document_id = $1)";

/// Whether the pgvector extension can be installed on this server.
pub const PGVECTOR_AVAILABLE: &str = "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')";

// The nearest-neighbour seam (`vectors.rs`). A stored vector's key is its `seq` (an identity
// column): the table never deletes rows, but keys are taken before commit, so a later commit can
// carry a lower key (the in-process index allows for that).

pub const VECTOR_KEYS_AFTER: &str = "SELECT seq FROM embedding_cache \
     WHERE model = $1 AND dimensions = $2 AND seq > $3 ORDER BY seq";

pub const VECTORS_AFTER: &str = "SELECT seq AS key, vector FROM embedding_cache \
     WHERE model = $1 AND dimensions = $2 AND seq > $3 ORDER BY seq LIMIT $4";

pub const VECTORS_BY_KEY: &str = "SELECT seq AS key, vector FROM embedding_cache WHERE seq = ANY($1)";

/// $1 model, $2 dimensions, $3 age (ms), $4 now or NULL: the highest key of the model's vectors
/// stored at least that long ago (0 if none).
pub const SETTLED_VECTOR_KEY: &str = concat!(
    "SELECT COALESCE(MAX(e.seq), 0) FROM embedding_cache e, ",
    clock!("$4"),
    " WHERE e.model = $1 AND e.dimensions = $2 AND e.created_at <= clock.now - $3"
);

pub const COUNT_VECTORS_UP_TO: &str =
    "SELECT COUNT(*) FROM embedding_cache WHERE model = $1 AND dimensions = $2 AND seq <= $3";

/// Each key's vector row, then each row's chunks by the content-hash index: the two `OFFSET 0`
/// fences keep PostgreSQL from planning the join as a scan of every chunk (it misjudges how many
/// keys an array holds), which cost 130–160 ms for a book's 1,137 keys at 100k chunks against
/// 49 ms this way (BENCHMARKS.md, "The whole job on PostgreSQL").
pub const CHUNKS_FOR_VECTOR_KEYS: &str = "SELECT e.seq AS key, c.id AS chunk_id, c.document_id \
     FROM (SELECT seq, content_hash FROM embedding_cache WHERE seq = ANY($1) OFFSET 0) e \
     CROSS JOIN LATERAL (SELECT id, document_id FROM chunks WHERE content_hash = e.content_hash OFFSET 0) c";

/// Installs pgvector where the server offers it; a no-op once installed (in whichever schema).
pub const CREATE_PGVECTOR: &str = "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public";

/// The schema pgvector's types and operators live in.
pub const PGVECTOR_SCHEMA: &str = "SELECT n.nspname::text FROM pg_extension x \
     JOIN pg_namespace n ON n.oid = x.extnamespace WHERE x.extname = 'vector'";

/// Rows whose pgvector column is not filled yet.
pub const UNSYNCED_VECTORS: &str = "SELECT seq, vector FROM embedding_cache \
     WHERE embedding IS NULL AND model = $1 AND dimensions = $2 ORDER BY seq LIMIT $3";

/// $1 chunk ids.
pub const CHUNK_VIEWS_BY_ID: &str = "SELECT c.id AS chunk_id, c.document_id, d.title AS document_title, \
     c.chunk_index, c.heading_path, c.text \
     FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ANY($1)";

// The term index (tsvector + GIN; see crates/checkpoint-store/src/term_index.rs).

/// $1 document id: how many of its chunks contain each term.
pub const TERM_COUNTS_OF_DOCUMENT: &str = "SELECT t.term, COUNT(*) FROM chunks c, \
         unnest(tsvector_to_array(c.terms)) AS t(term) \
     WHERE c.document_id = $1 GROUP BY t.term";

/// $1 terms, $2 changes in the number of chunks containing them (negative for chunks removed).
/// Rows are locked in term order, so two transactions applying changes never wait for each other
/// in a cycle.
pub const CHANGE_TERM_COUNTS: &str = "INSERT INTO chunk_term_counts (term, chunks) \
     SELECT d.term, d.change FROM UNNEST($1::text[], $2::bigint[]) AS d(term, change) ORDER BY d.term \
     ON CONFLICT (term) DO UPDATE SET chunks = chunk_term_counts.chunks + excluded.chunks";

/// How many chunks the library holds: the documents' own counts, which `replace_chunks` keeps in
/// the same transaction as the chunks (cheaper than counting a million rows).
pub const LIBRARY_CHUNK_COUNT: &str = "SELECT COALESCE(SUM(chunk_count), 0)::bigint FROM documents";

/// $1 terms: each one some chunk contains, with the number of chunks containing it.
pub const TERM_FREQUENCIES: &str = "SELECT term, chunks FROM chunk_term_counts WHERE term = ANY($1) AND chunks > 0";

/// $1 terms: `(term, chunk seqs)` for each term some chunk contains, from the postings' key; one
/// row per term, not per posting.
pub const TERM_POSTINGS: &str =
    "SELECT term, array_agg(chunk_seq) FROM chunk_term_postings WHERE term = ANY($1) GROUP BY term";

/// $1 chunk ids, $2 terms, pair-wise: the postings of chunks just inserted.
pub const INSERT_POSTINGS: &str = "INSERT INTO chunk_term_postings (term, chunk_seq) \
     SELECT p.term, c.seq FROM UNNEST($1::text[], $2::text[]) AS p(chunk_id, term) JOIN chunks c ON c.id = p.chunk_id";

pub const CLEAR_POSTINGS: &str = "DELETE FROM chunk_term_postings";

/// Every chunk's postings, from its `terms` (after a rebuild filled them).
pub const REBUILD_POSTINGS: &str = "INSERT INTO chunk_term_postings (term, chunk_seq) \
     SELECT t.term, c.seq FROM chunks c, unnest(tsvector_to_array(c.terms)) AS t(term)";

// The term cache's catch-up (crates/checkpoint-store/src/term_cache.rs), in one REPEATABLE READ
// transaction.

/// Begins the catch-up's transaction: every statement of it reads one snapshot.
pub const BEGIN_ONE_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// $1 after this number: departures (number, chunk key), in order.
pub const TERM_DEPARTURES_AFTER: &str = "SELECT seq, chunk FROM chunk_term_departures WHERE seq > $1 ORDER BY seq";

/// $1 after this key: the keys of indexed chunks, ascending.
pub const TERM_KEYS_AFTER: &str = "SELECT seq FROM chunks WHERE seq > $1 AND term_vector IS NOT NULL ORDER BY seq";

/// $1 keys: those indexed, with their ids and term vectors.
pub const TERM_VECTORS_BY_KEY: &str =
    "SELECT seq, id, term_vector FROM chunks WHERE seq = ANY($1) AND term_vector IS NOT NULL";

/// How many chunks are indexed, and the number of the last departure ever.
pub const TERM_INDEX_TOTALS: &str = "SELECT (SELECT count(*) FROM chunks WHERE term_vector IS NOT NULL), \
     (SELECT COALESCE(MAX(seq), 0) FROM chunk_term_departures)";

/// $1 age (ms), $2 now or NULL: the highest chunk key and departure number stored at least $1
/// ago. A document's `updated_at` is set in the transaction that writes its chunks, and only
/// moves forward, so its chunks were written no later; departures carry the server's time (their
/// trigger cannot see an injected clock). Both read backwards from the newest, which are few.
pub const SETTLED_TERM_MARKS: &str = concat!(
    "SELECT COALESCE((SELECT c.seq FROM chunks c JOIN documents d ON d.id = c.document_id \
         WHERE d.updated_at <= clock.now - $1 ORDER BY c.seq DESC LIMIT 1), 0), \
     COALESCE((SELECT seq FROM chunk_term_departures \
         WHERE departed_at <= floor(extract(epoch FROM now()) * 1000)::bigint - $1 ORDER BY seq DESC LIMIT 1), 0) \
     FROM ",
    clock!("$2")
);

/// $1 seqs.
pub const CHUNK_IDS_BY_SEQ: &str = "SELECT seq, id FROM chunks WHERE seq = ANY($1)";

pub const TERM_INDEX_EDITION: &str = "SELECT edition FROM term_index_edition";

/// Held while the index is rebuilt: another process starting at once waits, then finds it current.
pub const LOCK_TERM_INDEX: &str = "LOCK TABLE term_index_edition IN EXCLUSIVE MODE";

/// Held while the index is rebuilt: no chunk is added or removed meanwhile.
pub const LOCK_CHUNKS_FOR_REBUILD: &str = "LOCK TABLE chunks IN SHARE ROW EXCLUSIVE MODE";

/// $1 after this id, $2 limit: chunks to index, in id order.
pub const CHUNK_TEXTS_AFTER: &str = "SELECT id, text FROM chunks WHERE id > $1 ORDER BY id LIMIT $2";

/// $1 ids, $2 terms (space-separated), $3 term vectors.
pub const SET_CHUNK_TERMS: &str = "UPDATE chunks \
     SET terms = array_to_tsvector(string_to_array(u.terms, ' ')), term_vector = u.term_vector \
     FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(id, terms, term_vector) WHERE chunks.id = u.id";

/// $1 chunk ids: each existing chunk's term vector, or its text where it has none.
pub const CHUNK_TERM_VECTORS: &str =
    "SELECT id, term_vector, CASE WHEN term_vector IS NULL THEN text END FROM chunks WHERE id = ANY($1)";

pub const RECOUNT_TERMS: &str = "INSERT INTO chunk_term_counts (term, chunks) \
     SELECT t.term, COUNT(*) FROM chunks c, unnest(tsvector_to_array(c.terms)) AS t(term) GROUP BY t.term";

pub const CLEAR_TERM_COUNTS: &str = "DELETE FROM chunk_term_counts";

pub const CLEAR_TERM_INDEX_EDITION: &str = "DELETE FROM term_index_edition";

/// $1 edition.
pub const SET_TERM_INDEX_EDITION: &str = "INSERT INTO term_index_edition (edition) VALUES ($1)";
