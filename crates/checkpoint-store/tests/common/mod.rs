//! The backends the conformance suite runs against, each with a clock the test moves by hand.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use checkpoint_store::{
    EnqueueOptions, Job, JobId, JobKind, JobStore, Lease, LeaseRequest, ManualClock, RetryPolicy,
    SqliteStore, StoreOptions,
};
use serde_json::json;

/// The instant every test starts at: 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600_000;

/// Delay after every retryable failure in the suite, so schedules are exact.
pub const RETRY_DELAY: Duration = Duration::from_secs(10);

pub const TTL: Duration = Duration::from_secs(60);

/// One store under test and the clock it reads.
pub struct Harness {
    pub name: &'static str,
    pub store: Arc<dyn JobStore>,
    pub clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clock = ManualClock::new(START);
    let options = StoreOptions {
        clock: Arc::new(clock.clone()),
        retry_policy: RetryPolicy::fixed(RETRY_DELAY),
        ..StoreOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("quire.db"), options).await.expect("open SQLite store");
    Harness { name: "sqlite", store: Arc::new(store), clock, _dir: Some(dir) }
}

/// Every backend available on this machine.
pub async fn backends() -> Vec<Harness> {
    vec![sqlite().await]
}

impl Harness {
    pub async fn enqueue(&self, document: &str) -> Job {
        self.enqueue_with(document, EnqueueOptions::default()).await
    }

    pub async fn enqueue_with(&self, document: &str, options: EnqueueOptions) -> Job {
        self.store
            .enqueue(JobKind::ProcessDocument, json!({ "document_id": document }), options)
            .await
            .expect("enqueue")
            .job
    }

    pub async fn lease(&self, owner: &str, max_jobs: u32) -> Vec<Job> {
        self.lease_for(owner, max_jobs, TTL).await
    }

    pub async fn lease_for(&self, owner: &str, max_jobs: u32, ttl: Duration) -> Vec<Job> {
        let request = LeaseRequest { owner, max_jobs, ttl, kinds: &[JobKind::ProcessDocument, JobKind::DetectConnections] };
        self.store.lease(request).await.expect("lease")
    }

    pub async fn lease_one(&self, owner: &str) -> Lease {
        let jobs = self.lease(owner, 1).await;
        assert_eq!(jobs.len(), 1, "{}: expected one job to lease", self.name);
        jobs[0].lease().unwrap()
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.store.job(id).await.expect("read job").expect("job exists")
    }
}
