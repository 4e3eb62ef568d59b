//! Durable storage for quire: the lease-fenced job queue and, beside it, the documents.
//!
//! The main types are the [`JobStore`] and [`DocumentStore`] traits, their implementations
//! [`SqliteStore`] (the embedded default) and [`PgStore`] (many workers on many machines), the
//! [`Job`] and its [`Lease`]. The one design choice to understand: **every write a worker makes
//! on a job carries the [`Lease`] it was given**, and the store accepts the write only while the
//! job is still processing under that lease's token. Leases are renewed by heartbeats; the
//! reaper takes back jobs whose lease expired or whose run exceeded its timeout, changing the
//! token, so a worker that was paused, partitioned or slow can never overwrite the worker that
//! took over.
//!
//! Time comes from an injectable [`Clock`], so expiry and timeouts are tested without sleeping;
//! PostgreSQL uses the database server's clock unless a clock is injected, so machines with
//! skewed clocks agree on lease expiry.
//!
//! ```
//! # tokio_test_block_on(async {
//! use std::time::Duration;
//! use checkpoint_store::{EnqueueOptions, JobKind, JobStore, LeaseRequest, SqliteStore, SqliteStoreOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path().join("quire.db"), SqliteStoreOptions::default()).await.unwrap();
//! // The payload is the handler's own; the store learns of the job's document from the options.
//! let payload = serde_json::json!({ "document_id": "d1" });
//! let options = EnqueueOptions { document_id: Some("d1".into()), ..EnqueueOptions::default() };
//! store.enqueue(JobKind::ProcessDocument, payload, options).await.unwrap();
//!
//! let request = LeaseRequest { owner: "worker-1", max_jobs: 10, ttl: Duration::from_secs(60), kinds: &[JobKind::ProcessDocument] };
//! let jobs = store.lease(request).await.unwrap();
//! let lease = jobs[0].lease().unwrap();
//! store.complete(lease, None).await.unwrap();
//! // The lease is spent: any further write with it is refused.
//! assert!(store.complete(lease, None).await.unwrap_err().is_lease_lost());
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod api_schema;
mod cancellation;
mod catch_up;
mod clock;
mod codec;
mod document_store;
mod documents;
mod error;
mod job_signal;
mod job_store;
mod jobs;
mod neighbours;
mod open;
mod postgres;
mod recovery;
mod retry_policy;
mod rows;
mod sqlite;
mod term_cache;
mod term_index;

pub use api_schema::StageSchema;
pub use clock::{Clock, ManualClock, SystemClock, millis};
pub use document_store::DocumentStore;
pub use documents::{
    BookMetadata, ChunkSet, ChunkView, ConnectionFilter, ConnectionView, ConnectionsOutcome, Document, DocumentStatus,
    EmbeddedChunk, EmbeddingUsage, NewConnection, NewDocument, StoredChunk,
};
pub use error::{StoreError, StoreResult};
pub use job_store::JobStore;
pub use jobs::{
    AttemptOutcome, AttemptsEnded, Cancellation, DEFAULT_MAX_ATTEMPTS, EnqueueOptions, Enqueued, ErrorKind,
    FailOutcome, Failure, FollowUp, HeartbeatReport, Job, JobAttempt, JobFilter, JobId, JobKind, JobStatus, Lease,
    LeaseRequest, QueueCount, ReaperPass, Recovery, RecoveryAction, RecoveryReason,
};
pub use neighbours::{Neighbour, NeighbourQuery, NeighbourSearch, SearchMode, VectorIndexKind, VectorSnapshots};
pub use open::{OpenOptions, StoreLocation, open};
pub use postgres::{MIGRATOR as POSTGRES_MIGRATOR, PgStore, PgStoreOptions};
pub use retry_policy::RetryPolicy;

/// The statements whose query plans `tests/job_indexes.rs` checks; not an API.
#[doc(hidden)]
pub mod planned_statements {
    /// SQLite's.
    pub mod sqlite {
        pub use crate::sqlite::sql::{LEASE, LEASE_ONE_KIND, LIST_JOBS_OF_DOCUMENT};
    }
    /// PostgreSQL's.
    pub mod postgres {
        pub use crate::postgres::sql::{LEASE, LEASE_ONE_KIND, LIST_JOBS_OF_DOCUMENT};
    }
}
pub use sqlite::{MIGRATOR as SQLITE_MIGRATOR, SqliteStore, SqliteStoreOptions};
pub use term_index::{ChunkTerms, NumberedChunk, TermCounts, TermIndex, TermTable, WeightedTerms};

/// Everything a worker needs from storage: the job queue, the documents and the two searches over
/// them (by embedding, by shared terms), in one database.
pub trait Store: JobStore + DocumentStore + NeighbourSearch + TermIndex {}

impl<T: JobStore + DocumentStore + NeighbourSearch + TermIndex> Store for T {}
