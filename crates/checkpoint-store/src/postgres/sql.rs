//! Every SQL statement of the PostgreSQL job store, in one place.
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
         result, last_error, error_kind, created_at, updated_at, finished_at"
    };
}

/// The same columns, qualified, for statements that join `jobs` with something else.
macro_rules! qualified_job_columns {
    () => {
        "jobs.id, jobs.kind, jobs.payload, jobs.status, jobs.priority, jobs.attempts, \
         jobs.max_attempts, jobs.run_at, jobs.lock_owner, jobs.lock_until, jobs.lease_token, \
         jobs.started_at, jobs.last_heartbeat, jobs.timeout_ms, jobs.unique_key, jobs.metadata, \
         jobs.result, jobs.last_error, jobs.error_kind, jobs.created_at, jobs.updated_at, \
         jobs.finished_at"
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
                       created_at, updated_at) \
     SELECT $1::text, $2::jsonb, $3::integer, $4::integer, clock.now + $5::bigint, $6::bigint, \
            $7::text, clock.now, clock.now \
     FROM ",
    clock!("$8"),
    " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing') \
      DO NOTHING \
     RETURNING ",
    job_columns!()
);

/// $1 unique key.
pub const ACTIVE_JOB_BY_UNIQUE_KEY: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE unique_key = $1 AND status IN ('pending', 'processing')"
);

/// $1 owner, $2 now or NULL, $3 ttl (ms), $4 kinds, $5 limit.
pub const LEASE: &str = concat!(
    "WITH due AS ( \
         SELECT id FROM jobs \
         WHERE status = 'pending' AND run_at <= ",
    now!("$2"),
    "      AND kind = ANY($4::text[]) \
         ORDER BY priority DESC, run_at, id LIMIT $5 \
         FOR UPDATE SKIP LOCKED) \
     UPDATE jobs SET status = 'processing', lock_owner = $1, lock_until = clock.now + $3::bigint, \
         lease_token = jobs.lease_token + 1, attempts = jobs.attempts + 1, \
         started_at = clock.now, last_heartbeat = clock.now, updated_at = clock.now \
     FROM due, ",
    clock!("$2"),
    " WHERE jobs.id = due.id RETURNING ",
    qualified_job_columns!()
);

/// $1 owner, $2 now or NULL, $3 ttl (ms), $4 job ids, $5 their lease tokens (pair-wise).
/// Returns the renewed (id, token) pairs.
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
    " WHERE jobs.id = held.id RETURNING jobs.id, jobs.lease_token"
);

/// $1 id, $2 token, $3 metadata, $4 now or NULL.
pub const SAVE_CHECKPOINT: &str = concat!(
    "UPDATE jobs SET metadata = $3::jsonb, updated_at = ",
    now!("$4"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// $1 id, $2 token, $3 result or NULL, $4 now or NULL.
pub const COMPLETE: &str = concat!(
    "UPDATE jobs SET status = 'completed', result = $3::jsonb, finished_at = clock.now, \
         updated_at = clock.now, lock_owner = NULL, lock_until = NULL \
     FROM ",
    clock!("$4"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// Locks a held job. $1 id, $2 token, $3 now or NULL. Returns attempts, max_attempts and now.
pub const HELD_JOB: &str = concat!(
    "SELECT attempts, max_attempts, ",
    now!("$3"),
    " FROM jobs WHERE id = $1 AND lease_token = $2 AND status = 'processing' FOR UPDATE"
);

/// Moves a held job back to pending. $1 id, $2 token, $3 delay before it runs again (ms),
/// $4 last_error, $5 error_kind or NULL (keep), $6 now or NULL, $7 attempts given back (0 or 1).
pub const REQUEUE_HELD: &str = concat!(
    "UPDATE jobs SET status = 'pending', run_at = clock.now + $3::bigint, last_error = $4, \
         error_kind = COALESCE($5::text, error_kind), updated_at = clock.now, lock_owner = NULL, \
         lock_until = NULL, lease_token = lease_token + 1, \
         attempts = GREATEST(attempts - $7::integer, 0) \
     FROM ",
    clock!("$6"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// Dead-letters a held job. $1 id, $2 token, $3 last_error, $4 error_kind, $5 now or NULL.
pub const DEAD_LETTER_HELD: &str = concat!(
    "UPDATE jobs SET status = 'dead', last_error = $3, error_kind = $4, \
         finished_at = clock.now, updated_at = clock.now, lock_owner = NULL, lock_until = NULL, \
         lease_token = lease_token + 1 \
     FROM ",
    clock!("$5"),
    " WHERE id = $1 AND lease_token = $2 AND status = 'processing'"
);

/// $1 owner, $2 job ids, $3 now or NULL. Returns the released ids.
pub const RELEASE: &str = concat!(
    "WITH held AS ( \
         SELECT id FROM jobs \
         WHERE status = 'processing' AND lock_owner = $1 AND id = ANY($2::bigint[]) \
         ORDER BY id FOR UPDATE) \
     UPDATE jobs SET status = 'pending', attempts = GREATEST(jobs.attempts - 1, 0), \
         lock_owner = NULL, lock_until = NULL, started_at = NULL, last_heartbeat = NULL, \
         lease_token = jobs.lease_token + 1, updated_at = ",
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

/// Processing jobs silent for at least $1 ms, oldest first. $2 now or NULL.
pub const SILENT_FOR: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE status = 'processing' \
        AND COALESCE(last_heartbeat, started_at, updated_at) <= ",
    now!("$2"),
    " - $1::bigint ORDER BY COALESCE(last_heartbeat, started_at, updated_at), id"
);

/// The given jobs, locked in id order; a job whose row is locked (its worker is writing to it
/// right now, so it is not silent) is skipped. $1 job ids.
pub const LOCK_JOBS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE SKIP LOCKED"
);

/// $1 id.
pub const JOB_BY_ID: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");

/// $1 status or NULL, $2 kind or NULL, $3 document id or NULL, $4 limit.
/// The document id matches JSON strings only, like SQLite's `json_extract` comparison.
pub const LIST_JOBS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2) \
        AND ($3::text IS NULL OR payload -> 'document_id' = to_jsonb($3::text)) \
      ORDER BY id DESC LIMIT $4"
);

/// Byte order (`COLLATE "C"`), whatever the database's collation, like SQLite.
pub const COUNTS: &str = "SELECT status, kind, COUNT(*) FROM jobs GROUP BY status, kind \
     ORDER BY status COLLATE \"C\", kind COLLATE \"C\"";

/// $1 id, $2 now or NULL.
pub const RETRY_DEAD: &str = concat!(
    "UPDATE jobs SET status = 'pending', attempts = 0, run_at = clock.now, finished_at = NULL, \
         updated_at = clock.now \
     FROM ",
    clock!("$2"),
    " WHERE id = $1 AND status = 'dead' RETURNING ",
    qualified_job_columns!()
);

/// $1 age (ms), $2 now or NULL.
pub const PURGE_DEAD: &str = concat!(
    "DELETE FROM jobs WHERE status = 'dead' AND finished_at <= ",
    now!("$2"),
    " - $1::bigint"
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
