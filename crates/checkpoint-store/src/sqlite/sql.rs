//! Every SQL statement of the SQLite job store, in one place.
//!
//! Times are integer milliseconds bound from the store's clock. Lists are bound as one JSON
//! array and unpacked with `json_each`, so every statement text is static.

macro_rules! job_columns {
    () => {
        "id, kind, payload, status, priority, attempts, max_attempts, run_at, lock_owner, \
         lock_until, lease_token, started_at, last_heartbeat, timeout_ms, unique_key, metadata, \
         result, last_error, error_kind, created_at, updated_at, finished_at, cancel_requested_at, document_id"
    };
}

/// The durability of one commit ([`EnqueueOptions::durable`](crate::EnqueueOptions::durable)):
/// the writer switches to `FULL` for it and back to the store's `NORMAL` after.
pub const SYNCHRONOUS_FULL: &str = "PRAGMA synchronous = FULL";
/// The store's setting for every other commit (see `SqliteStore::open`).
pub const SYNCHRONOUS_NORMAL: &str = "PRAGMA synchronous = NORMAL";
/// The writer's current setting, for tests.
pub const SYNCHRONOUS: &str = "PRAGMA synchronous";

pub const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (kind, payload, priority, max_attempts, run_at, timeout_ms, unique_key, \
                       created_at, updated_at, document_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9) RETURNING ",
    job_columns!()
);

pub const ACTIVE_JOB_BY_UNIQUE_KEY: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE unique_key = ?1 AND status IN ('pending', 'processing')");

/// The claim: up to ?5 due pending jobs leased to ?1 at ?2 for ?3 ms, through the claim index
/// `$index`, among the kinds `$kinds` selects from ?4.
macro_rules! lease {
    ($index:literal, $kinds:literal) => {
        concat!(
            "UPDATE jobs SET status = 'processing', lock_owner = ?1, lock_until = ?2 + ?3, \
                 lease_token = lease_token + 1, attempts = attempts + 1, started_at = ?2, \
                 last_heartbeat = ?2, updated_at = ?2 \
             WHERE id IN (SELECT id FROM jobs INDEXED BY ",
            $index,
            " WHERE status = 'pending' AND run_at <= ?2 AND ",
            $kinds,
            " ORDER BY priority DESC, run_at, id LIMIT ?5) \
             RETURNING ",
            job_columns!()
        )
    };
}

/// ?1 owner, ?2 now, ?3 ttl, ?4 kinds (JSON array), ?5 limit.
///
/// `INDEXED BY jobs_claim`: without statistics SQLite prefers `jobs_status_kind` and sorts every
/// pending job on each claim (2.8 ms instead of 79 µs with 20,000 queued).
pub const LEASE: &str = lease!("jobs_claim", "kind IN (SELECT value FROM json_each(?4))");

/// [`LEASE`] for one kind, ?4 (while embedding work is paused): `jobs_claim` would walk past
/// every pending job of the other kinds, `jobs_claim_kind` starts at the asked kind's first. An
/// `IN` list on that index would sort the kind's due jobs on every claim, so this takes one kind.
pub const LEASE_ONE_KIND: &str = lease!("jobs_claim_kind", "kind = ?4");

/// ?1 owner, ?2 now, ?3 ttl, ?4 leases as a JSON array of [id, token] pairs. Returns the renewed
/// leases, each with whether an operator asked to cancel its job.
pub const HEARTBEAT: &str = "UPDATE jobs SET lock_until = ?2 + ?3, last_heartbeat = ?2, updated_at = ?2 \
     WHERE status = 'processing' AND lock_owner = ?1 \
       AND (id, lease_token) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') \
                                 FROM json_each(?4)) \
     RETURNING id, lease_token, cancel_requested_at IS NOT NULL AS cancel_requested";

/// ?1 id, ?2 token, ?3 metadata, ?4 now.
/// ?1 id, ?2 token, ?3 now.
pub const START_CLOCK: &str = "UPDATE jobs SET started_at = ?3, updated_at = ?3 \
     WHERE id = ?1 AND lease_token = ?2 AND status = 'processing'";

pub const SAVE_CHECKPOINT: &str = "UPDATE jobs SET metadata = ?3, updated_at = ?4 \
     WHERE id = ?1 AND lease_token = ?2 AND status = 'processing'";

/// ?1 id, ?2 token, ?3 result, ?4 now.
pub const COMPLETE: &str = "UPDATE jobs SET status = 'completed', result = ?3, finished_at = ?4, \
         updated_at = ?4, lock_owner = NULL, lock_until = NULL, cancel_requested_at = NULL \
     WHERE id = ?1 AND lease_token = ?2 AND status = 'processing'";

/// ?1 id, ?2 token, ?3 now. Returns the job and now.
pub const HELD_JOB: &str = concat!(
    "SELECT ",
    job_columns!(),
    ", ?3 AS now FROM jobs WHERE id = ?1 AND lease_token = ?2 AND status = 'processing'"
);

/// Moves a held job back to pending. ?1 id, ?2 token, ?3 run_at, ?4 last_error, ?5 error_kind,
/// ?6 now, ?7 attempts given back (0 or 1).
pub const REQUEUE_HELD: &str = "UPDATE jobs SET status = 'pending', run_at = ?3, last_error = ?4, \
         error_kind = COALESCE(?5, error_kind), updated_at = ?6, lock_owner = NULL, \
         lock_until = NULL, lease_token = lease_token + 1, attempts = MAX(attempts - ?7, 0), \
         cancel_requested_at = NULL \
     WHERE id = ?1 AND lease_token = ?2 AND status = 'processing'";

/// Dead-letters a held job. ?1 id, ?2 token, ?3 last_error, ?4 error_kind, ?5 now.
pub const DEAD_LETTER_HELD: &str = "UPDATE jobs SET status = 'dead', last_error = ?3, error_kind = ?4, \
         finished_at = ?5, updated_at = ?5, lock_owner = NULL, lock_until = NULL, \
         lease_token = lease_token + 1, cancel_requested_at = NULL \
     WHERE id = ?1 AND lease_token = ?2 AND status = 'processing'";

/// ?1 owner, ?2 `[id, token]` pairs (JSON array), ?3 now.
pub const RELEASE: &str = "UPDATE jobs SET status = 'pending', attempts = MAX(attempts - 1, 0), \
         lock_owner = NULL, lock_until = NULL, started_at = NULL, last_heartbeat = NULL, \
         lease_token = lease_token + 1, updated_at = ?3, cancel_requested_at = NULL \
     WHERE status = 'processing' AND lock_owner = ?1 \
       AND (id, lease_token) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') \
                                 FROM json_each(?2)) \
     RETURNING id";

/// Processing jobs whose lease expired. ?1 now, ?2 limit.
pub const EXPIRED_LEASES: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE status = 'processing' AND lock_until < ?1 ORDER BY lock_until, id LIMIT ?2"
);

/// Processing jobs that ran past their timeout. ?1 now, ?2 limit.
pub const TIMED_OUT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE status = 'processing' AND ?1 - started_at > timeout_ms \
      ORDER BY started_at, id LIMIT ?2"
);

/// What an operator may take back: processing jobs whose lease expired before ?1 (now) and, when
/// ?2 (a time) is not NULL, silent since then; the longest expired first.
pub const EXPIRED_AND_SILENT_SINCE: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE status = 'processing' AND lock_until < ?1 \
        AND (?2 IS NULL OR COALESCE(last_heartbeat, started_at, updated_at) <= ?2) \
      ORDER BY lock_until, id"
);

/// ?1 job id.
pub const JOB_ATTEMPTS: &str = "SELECT attempt, worker, started_at, ended_at, stage, outcome, error \
     FROM job_attempts WHERE job_id = ?1 ORDER BY lease_token";

pub const JOB_BY_ID: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1");

/// ?1 status or NULL, ?2 kind or NULL, ?3 document id or NULL, ?4 limit, ?5 a job id the jobs
/// listed are older than, or NULL.
pub const LIST_JOBS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2) \
        AND (?3 IS NULL OR document_id = ?3) AND (?5 IS NULL OR id < ?5) \
      ORDER BY id DESC LIMIT ?4"
);

/// [`LIST_JOBS`] of one document, ?3, through `jobs_document` (the `?3 IS NULL OR` form above
/// cannot use an index, since the plan is made before ?3 is known).
pub const LIST_JOBS_OF_DOCUMENT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE document_id = ?3 \
        AND (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2) AND (?5 IS NULL OR id < ?5) \
      ORDER BY id DESC LIMIT ?4"
);

pub const COUNTS: &str = "SELECT status, kind, COUNT(*) AS count, MIN(created_at) AS oldest_created_at \
     FROM jobs GROUP BY status, kind ORDER BY status, kind";

/// ?1 since, ?2 period (ms).
pub const ATTEMPTS_ENDED: &str = "SELECT (ended_at / ?2) * ?2 AS period_start, outcome, COUNT(*) AS count \
     FROM job_attempts WHERE ended_at >= ?1 GROUP BY period_start, outcome ORDER BY period_start, outcome";

/// ?1 worker, ?2 now, ?3 requeued, ?4 dead-lettered.
pub const RECORD_REAPER_PASS: &str = "INSERT INTO reaper_passes (only_row, worker, passed_at, requeued, dead_lettered) \
     VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT (only_row) DO UPDATE SET worker = excluded.worker, \
     passed_at = excluded.passed_at, requeued = excluded.requeued, dead_lettered = excluded.dead_lettered";

pub const LAST_REAPER_PASS: &str = "SELECT worker, passed_at, requeued, dead_lettered FROM reaper_passes";

/// ?1 id, ?2 now.
pub const RETRY_DEAD: &str = concat!(
    "UPDATE jobs SET status = 'pending', attempts = 0, run_at = ?2, finished_at = NULL, \
         updated_at = ?2 \
     WHERE id = ?1 AND status = 'dead' RETURNING ",
    job_columns!()
);

/// ?1 id: the unique key of the job and the id of another active job holding it, if any.
pub const UNIQUE_KEY_HOLDER: &str = "SELECT job.unique_key, holder.id FROM jobs job \
     JOIN jobs holder ON holder.unique_key = job.unique_key AND holder.id <> job.id \
                     AND holder.status IN ('pending', 'processing') \
     WHERE job.id = ?1";

/// ?1 finished before.
pub const PURGE_DEAD: &str = "DELETE FROM jobs WHERE status = 'dead' AND finished_at <= ?1";

/// An operator's cancellation of a job no worker holds. ?1 id, ?2 reason, ?3 now.
pub const CANCEL_PENDING: &str = concat!(
    "UPDATE jobs SET status = 'cancelled', last_error = ?2, finished_at = ?3, updated_at = ?3 \
     WHERE id = ?1 AND status = 'pending' RETURNING ",
    job_columns!()
);

/// An operator's request to cancel a held job; a second request keeps the first one's time.
/// ?1 id, ?2 now.
pub const REQUEST_CANCEL: &str = concat!(
    "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?2), updated_at = ?2 \
     WHERE id = ?1 AND status = 'processing' RETURNING ",
    job_columns!()
);

/// The lease holder cancels its job, giving back the attempt. ?1 id, ?2 token, ?3 reason, ?4 now.
pub const CANCEL_HELD: &str = concat!(
    "UPDATE jobs SET status = 'cancelled', last_error = ?3, finished_at = ?4, updated_at = ?4, \
         lock_owner = NULL, lock_until = NULL, lease_token = lease_token + 1, \
         attempts = MAX(attempts - 1, 0), cancel_requested_at = NULL \
     WHERE id = ?1 AND lease_token = ?2 AND status = 'processing' RETURNING ",
    job_columns!()
);

/// ?1 id, ?2 metadata, ?3 now.
pub const REQUEUE_WITH_CHECKPOINT: &str = concat!(
    "UPDATE jobs SET status = 'pending', attempts = 0, run_at = ?3, finished_at = NULL, \
         metadata = ?2, updated_at = ?3 \
     WHERE id = ?1 AND status <> 'processing' RETURNING ",
    job_columns!()
);

// ---------------------------------------------------------------------------------------------
// Documents, chunks, the embedding cache and connections.

/// ?1 id, ?2 token: the lease check every fenced document write starts its transaction with.
pub const LEASE_HELD: &str = "SELECT 1 FROM jobs WHERE id = ?1 AND lease_token = ?2 AND status = 'processing'";

macro_rules! document_columns {
    () => {
        "id, content_hash, file_name, byte_size, title, author, language, status, chunk_count, \
         markdown_hash, ai_requests, embeddings_from_cache, error, created_at, updated_at"
    };
}

/// ?1 id, ?2 content hash, ?3 file name, ?4 size, ?5 now.
pub const INSERT_DOCUMENT: &str = concat!(
    "INSERT INTO documents (id, content_hash, file_name, byte_size, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (content_hash) DO NOTHING RETURNING ",
    document_columns!()
);

pub const DOCUMENT_BY_HASH: &str = concat!("SELECT ", document_columns!(), " FROM documents WHERE content_hash = ?1");
pub const DOCUMENT_BY_ID: &str = concat!("SELECT ", document_columns!(), " FROM documents WHERE id = ?1");
pub const LIST_DOCUMENTS: &str = concat!("SELECT ", document_columns!(), " FROM documents ORDER BY created_at, id");

/// ?1 id, ?2 status, ?3 error, ?4 now.
pub const SET_DOCUMENT_STATUS: &str = "UPDATE documents SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1";

/// ?1 id, ?2 title, ?3 author, ?4 language, ?5 markdown hash, ?6 now.
pub const RECORD_EXTRACTION: &str = "UPDATE documents SET title = ?2, author = ?3, language = ?4, \
     markdown_hash = ?5, updated_at = ?6 WHERE id = ?1";

pub const DELETE_CHUNKS: &str = "DELETE FROM chunks WHERE document_id = ?1";

/// One JSON array of chunk objects in ?1.
pub const INSERT_CHUNKS: &str = "INSERT INTO chunks (id, document_id, chunk_index, heading_path, text, \
         start_offset, end_offset, content_hash) \
     SELECT json_extract(value, '$.id'), json_extract(value, '$.document_id'), \
            json_extract(value, '$.index'), json(json_extract(value, '$.heading_path')), \
            json_extract(value, '$.text'), json_extract(value, '$.start'), \
            json_extract(value, '$.end'), json_extract(value, '$.content_hash') \
     FROM json_each(?1)";

/// ?1 id, ?2 chunk count, ?3 now.
pub const SET_CHUNK_COUNT: &str = "UPDATE documents SET chunk_count = ?2, updated_at = ?3 WHERE id = ?1";

pub const CHUNKS_OF_DOCUMENT: &str = "SELECT id, document_id, chunk_index, heading_path, text, start_offset, \
         end_offset, content_hash FROM chunks WHERE document_id = ?1 ORDER BY chunk_index";

/// ?1 model, ?2 dimensions, ?3 hashes (JSON array).
pub const CACHED_EMBEDDINGS: &str = "SELECT content_hash, vector FROM embedding_cache \
     WHERE model = ?1 AND dimensions = ?2 AND content_hash IN (SELECT value FROM json_each(?3))";

/// ?1 hash, ?2 model, ?3 dimensions, ?4 vector, ?5 now.
pub const INSERT_EMBEDDING: &str = "INSERT INTO embedding_cache (content_hash, model, dimensions, vector, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING";

/// ?1 id, ?2 requests, ?3 from cache, ?4 now.
pub const MARK_EMBEDDED: &str = "UPDATE documents SET status = 'embedded', error = NULL, ai_requests = ?2, \
     embeddings_from_cache = ?3, updated_at = ?4 WHERE id = ?1";

/// ?1 document id or NULL for all, ?2 model, ?3 dimensions.
pub const EMBEDDED_CHUNKS: &str = "SELECT c.id, c.document_id, c.chunk_index, c.heading_path, c.text, \
         c.start_offset, c.end_offset, c.content_hash, e.vector \
     FROM chunks c LEFT JOIN embedding_cache e \
       ON e.content_hash = c.content_hash AND e.model = ?2 AND e.dimensions = ?3 \
     WHERE ?1 IS NULL OR c.document_id = ?1 \
     ORDER BY c.document_id, c.chunk_index";

/// ?1 document: its status and recorded chunk count, as `replace_connections` checks them.
pub const CONNECTIONS_PRECONDITION: &str = "SELECT status, chunk_count FROM documents WHERE id = ?1";

/// ?1 document: its chunks' ids.
pub const CHUNK_IDS_OF_DOCUMENT: &str = "SELECT id FROM chunks WHERE document_id = ?1";

pub const DELETE_CONNECTIONS_OF_DOCUMENT: &str = "DELETE FROM connections \
     WHERE source_chunk_id IN (SELECT id FROM chunks WHERE document_id = ?1)";

/// One JSON array of connection objects in ?1, ?2 now. Rows whose chunks are gone are skipped,
/// so this statement can never violate a foreign key.
pub const INSERT_CONNECTIONS: &str = "INSERT INTO connections (source_chunk_id, target_chunk_id, engine, score, \
         reason, created_at) \
     SELECT json_extract(value, '$.source_chunk_id'), json_extract(value, '$.target_chunk_id'), \
            json_extract(value, '$.engine'), json_extract(value, '$.score'), \
            json_extract(value, '$.reason'), ?2 \
     FROM json_each(?1) \
     WHERE EXISTS (SELECT 1 FROM chunks WHERE id = json_extract(value, '$.source_chunk_id')) \
       AND EXISTS (SELECT 1 FROM chunks WHERE id = json_extract(value, '$.target_chunk_id')) \
     ON CONFLICT DO UPDATE SET score = excluded.score, reason = excluded.reason";

/// ?1 id, ?2 now.
pub const MARK_COMPLETE: &str = "UPDATE documents SET status = 'complete', error = NULL, updated_at = ?2 WHERE id = ?1";

/// ?1 document, ?2 engine or NULL, ?3 min score or NULL, ?4 limit.
/// Each side is one JSON object with the fields of a `ChunkView`.
pub const CONNECTIONS_OF_DOCUMENT: &str = "SELECT k.engine, k.score, k.reason, \
         json_object('chunk_id', s.id, 'document_id', s.document_id, 'document_title', sd.title, \
                     'chunk_index', s.chunk_index, 'heading_path', json(s.heading_path), 'text', s.text) AS source, \
         json_object('chunk_id', t.id, 'document_id', t.document_id, 'document_title', td.title, \
                     'chunk_index', t.chunk_index, 'heading_path', json(t.heading_path), 'text', t.text) AS target \
     FROM connections k \
     JOIN chunks s ON s.id = k.source_chunk_id JOIN documents sd ON sd.id = s.document_id \
     JOIN chunks t ON t.id = k.target_chunk_id JOIN documents td ON td.id = t.document_id \
     WHERE (s.document_id = ?1 OR t.document_id = ?1) AND (?2 IS NULL OR k.engine = ?2) AND (?3 IS NULL OR k.score >= ?3) \
     ORDER BY k.score DESC, k.source_chunk_id, k.target_chunk_id LIMIT ?4";

pub const CONNECTION_COUNT: &str = "SELECT COUNT(*) FROM connections \
     WHERE source_chunk_id IN (SELECT id FROM chunks WHERE document_id = ?1) \
        OR target_chunk_id IN (SELECT id FROM chunks WHERE document_id = ?1)";

// The nearest-neighbour seam (`vectors.rs`). A stored vector's key is its `rowid`: the table never
// deletes rows, and one writer assigns rowids in commit order.

pub const VECTOR_KEYS_AFTER: &str = "SELECT rowid FROM embedding_cache \
     WHERE model = ?1 AND dimensions = ?2 AND rowid > ?3 ORDER BY rowid";

pub const VECTORS_AFTER: &str = "SELECT rowid AS key, vector FROM embedding_cache \
     WHERE model = ?1 AND dimensions = ?2 AND rowid > ?3 ORDER BY rowid LIMIT ?4";

pub const VECTORS_BY_KEY: &str =
    "SELECT rowid AS key, vector FROM embedding_cache WHERE rowid IN (SELECT value FROM json_each(?1))";

/// ?1 model, ?2 dimensions, ?3 time: the highest key of the model's vectors stored at or before
/// then (0 if none).
pub const SETTLED_VECTOR_KEY: &str = "SELECT COALESCE(MAX(rowid), 0) FROM embedding_cache \
     WHERE model = ?1 AND dimensions = ?2 AND created_at <= ?3";

pub const COUNT_VECTORS_UP_TO: &str =
    "SELECT COUNT(*) FROM embedding_cache WHERE model = ?1 AND dimensions = ?2 AND rowid <= ?3";

pub const CHUNKS_FOR_VECTOR_KEYS: &str = "SELECT e.rowid AS key, c.id AS chunk_id, c.document_id \
     FROM embedding_cache e JOIN chunks c ON c.content_hash = e.content_hash \
     WHERE e.rowid IN (SELECT value FROM json_each(?1))";

/// ?1 chunk ids (JSON array).
pub const CHUNK_VIEWS_BY_ID: &str = "SELECT c.id AS chunk_id, c.document_id, d.title AS document_title, \
     c.chunk_index, c.heading_path, c.text \
     FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN (SELECT value FROM json_each(?1))";

// The term index (FTS5; see crates/checkpoint-store/src/term_index.rs).

/// One JSON array of `[chunk id, term vector]` pairs in ?1; the chunks must exist and have no
/// vector yet. The triggers of migration 0006 index the vectors (full-text index and counts).
pub const INSERT_TERM_VECTORS: &str = "INSERT INTO chunk_term_vectors (chunk, term_vector) \
     SELECT c.rowid, json_extract(t.value, '$[1]') FROM json_each(?1) t \
     JOIN chunks c ON c.id = json_extract(t.value, '$[0]')";

/// ?1 chunk ids (JSON array): each existing chunk's term vector, or its text where it has none.
pub const CHUNK_TERM_VECTORS: &str = "SELECT c.id, v.term_vector, CASE WHEN v.term_vector IS NULL THEN c.text END \
     FROM chunks c LEFT JOIN chunk_term_vectors v ON v.chunk = c.rowid \
     WHERE c.id IN (SELECT value FROM json_each(?1))";

/// Empties the term index through its triggers (vectors, full-text rows and counts alike).
pub const CLEAR_TERM_VECTORS: &str = "DELETE FROM chunk_term_vectors";

pub const TERM_INDEX_EDITION: &str = "SELECT edition FROM term_index_edition";

pub const CLEAR_TERM_INDEX: &str = "INSERT INTO chunk_terms (chunk_terms) VALUES ('delete-all')";

pub const CLEAR_TERM_COUNTS: &str = "DELETE FROM chunk_term_counts";

pub const CLEAR_TERM_INDEX_EDITION: &str = "DELETE FROM term_index_edition";

/// ?1 edition.
pub const SET_TERM_INDEX_EDITION: &str = "INSERT INTO term_index_edition (edition) VALUES (?1)";

/// ?1 after this rowid, ?2 limit: chunks to index, in rowid order.
pub const CHUNK_TEXTS_AFTER: &str = "SELECT rowid, id, text FROM chunks WHERE rowid > ?1 ORDER BY rowid LIMIT ?2";

/// How many chunks the library holds: the documents' own counts, which `replace_chunks` keeps in
/// the same transaction as the chunks (cheaper than counting a million rows).
pub const LIBRARY_CHUNK_COUNT: &str = "SELECT COALESCE(SUM(chunk_count), 0) FROM documents";

/// ?1 after this number: the chunks that left the term index since, in the order they left.
pub const TERM_DEPARTURES_AFTER: &str = "SELECT seq, chunk FROM chunk_term_departures WHERE seq > ?1 ORDER BY seq";

/// ?1 after this key: the keys of indexed chunks, ascending.
pub const TERM_KEYS_AFTER: &str = "SELECT chunk FROM chunk_term_vectors WHERE chunk > ?1 ORDER BY chunk";

/// ?1 keys (JSON array): those indexed, with their chunks' ids and term vectors.
pub const TERM_VECTORS_BY_KEY: &str = "SELECT v.chunk, c.id, v.term_vector FROM json_each(?1) k \
     JOIN chunk_term_vectors v ON v.chunk = k.value JOIN chunks c ON c.rowid = v.chunk";

/// How many chunks are indexed, and the number of the last departure ever.
pub const TERM_INDEX_TOTALS: &str = "SELECT (SELECT count(*) FROM chunk_term_vectors), \
     (SELECT COALESCE(MAX(seq), 0) FROM chunk_term_departures)";

/// ?1 terms (JSON array): each that some chunk contains, with the number of chunks containing it,
/// as one JSON array of `[term, chunks]` pairs (one row, where a row per term costs a hop between
/// threads each: a book asks about tens of thousands of terms).
pub const TERM_FREQUENCIES: &str = "SELECT json_group_array(json_array(term, chunks)) FROM chunk_term_counts \
     WHERE term IN (SELECT value FROM json_each(?1)) AND chunks > 0";

/// `(term, rowids)` for each of `count` terms, bound as ?1…?(2·count) in pairs (the term, then
/// its FTS5 query, [`fts5_term_query`]): the rowids of the chunks containing it, comma-separated,
/// or NULL for a term no chunk contains. One `MATCH` per term, which reads the term's doclist
/// straight from FTS5, in one compound statement (SQLite allows 500 parts; callers send fewer):
/// 2.4 times the speed of fts5vocab's `instance` table over the same doclists, whose per-row
/// overhead dominated. One row per term, not per posting: a row costs the driver a microsecond,
/// several times what SQLite spends on it.
pub fn term_postings(count: usize) -> String {
    (0..count)
        .map(|n| {
            format!(
                "SELECT ?{} AS term, group_concat(rowid) FROM chunk_terms WHERE chunk_terms MATCH ?{}",
                2 * n + 1,
                2 * n + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The FTS5 query that finds exactly the chunks indexed with `term`: the term as one quoted
/// string, so that nothing in it reads as query syntax.
pub fn fts5_term_query(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// ?1 rowids (JSON array): `[rowid, id]` pairs of the chunks that exist, as one JSON array (one
/// row, as [`TERM_FREQUENCIES`]: a book's shortlists name tens of thousands of chunks).
pub const CHUNK_IDS_BY_ROWID: &str = "SELECT json_group_array(json_array(rowid, id)) FROM chunks \
     WHERE rowid IN (SELECT value FROM json_each(?1))";
