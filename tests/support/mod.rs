//! What the end-to-end tests share: an in-process rig that drives jobs through the real
//! handlers and the real store, an embedder that counts what it is asked, and a scripted
//! OpenAI-compatible server.

#![allow(dead_code)]

pub mod fake_openai;
pub mod integrity;
pub mod postgres;
pub mod processes;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use checkpoint_store::{
    DocumentStore, JobKind, JobStatus, JobStore, LeaseRequest, ManualClock, RetryPolicy, SqliteStore,
    SqliteStoreOptions,
};
use embedder::{BatchLimits, EmbedError, Embedder, LocalEmbedder};
use tokio_util::sync::CancellationToken;
use worker::{DataDir, JobContext, Pipeline, Submission, WorkerMetrics};

pub const START: i64 = 1_767_225_600_000;
pub const TTL: Duration = Duration::from_secs(60);

/// The `quire` binary under test.
pub fn quire_bin() -> &'static str {
    env!("CARGO_BIN_EXE_quire")
}

/// The local embedder, counting requests and inputs, with a small batch size so that a book
/// takes several requests.
pub struct CountingEmbedder {
    inner: LocalEmbedder,
    pub requests: AtomicU64,
    pub inputs: AtomicU64,
    pub max_inputs: usize,
    /// The embedder's window, in estimated tokens (none: the local embedder's, unbounded).
    pub max_input_tokens: Option<usize>,
    /// The most characters of any input it was asked to embed.
    pub longest_input: AtomicU64,
}

impl CountingEmbedder {
    pub fn new(max_inputs: usize) -> Arc<CountingEmbedder> {
        Arc::new(CountingEmbedder {
            inner: LocalEmbedder::new(64),
            requests: AtomicU64::new(0),
            inputs: AtomicU64::new(0),
            max_inputs,
            max_input_tokens: None,
            longest_input: AtomicU64::new(0),
        })
    }

    /// The same, with a window of `max_input_tokens` estimated tokens per input.
    pub fn with_window(max_inputs: usize, max_input_tokens: usize) -> Arc<CountingEmbedder> {
        let mut embedder = Arc::into_inner(CountingEmbedder::new(max_inputs)).unwrap();
        embedder.max_input_tokens = Some(max_input_tokens);
        Arc::new(embedder)
    }

    pub fn longest_input(&self) -> u64 {
        self.longest_input.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn inputs(&self) -> u64 {
        self.inputs.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Embedder for CountingEmbedder {
    fn model(&self) -> String {
        self.inner.model()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn batch_limits(&self) -> BatchLimits {
        let inner = self.inner.batch_limits();
        BatchLimits {
            max_inputs: self.max_inputs,
            max_input_tokens: self.max_input_tokens.unwrap_or(inner.max_input_tokens),
            ..inner
        }
    }
    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inputs.fetch_add(inputs.len() as u64, Ordering::SeqCst);
        let longest = inputs.iter().map(|text| text.chars().count() as u64).max().unwrap_or(0);
        self.longest_input.fetch_max(longest, Ordering::SeqCst);
        self.inner.embed(inputs).await
    }
}

/// A data directory, an SQLite store on a hand-moved clock, and the real pipeline.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub clock: ManualClock,
    pub pipeline: Pipeline,
    pub metrics: Arc<WorkerMetrics>,
}

/// What one document ended with, for comparing runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub status: String,
    pub chunks: Vec<(String, u32, String)>,
    pub connections: BTreeSet<(String, String, String)>,
}

impl Rig {
    pub async fn new(embedder: Arc<dyn Embedder>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let options = SqliteStoreOptions {
            clock: Arc::new(clock.clone()),
            retry_policy: RetryPolicy::fixed(Duration::from_secs(10)),
            ..SqliteStoreOptions::default()
        };
        let data_dir = DataDir::open(dir.path().join("data")).unwrap();
        let store = Arc::new(SqliteStore::open(data_dir.database_path(), options).await.unwrap());
        let mut pipeline = Pipeline::new(store.clone(), embedder, data_dir, quire_bin());
        pipeline.clock = Arc::new(clock.clone());
        Rig { dir, store, clock, pipeline, metrics: Arc::default() }
    }

    pub async fn submit(&self, name: &str, bytes: &[u8]) -> Submission {
        worker::submit_bytes(self.store.as_ref(), &self.pipeline.data_dir, name, bytes).await.unwrap()
    }

    /// Leases and runs jobs one at a time until none is left. A job left processing (a
    /// simulated crash) is recovered once its lease expires; delayed jobs wait for the clock.
    pub async fn drive(&self) {
        let handlers = self.pipeline.handlers();
        for _ in 0..500 {
            let request = LeaseRequest {
                owner: "rig",
                max_jobs: 1,
                ttl: TTL,
                kinds: &[JobKind::ProcessDocument, JobKind::DetectConnections],
            };
            let jobs = self.store.lease(request).await.unwrap();
            let Some(job) = jobs.into_iter().next() else {
                let counts = self.store.counts().await.unwrap();
                let active = |status| counts.iter().filter(|c| c.status == status).map(|c| c.count).sum::<u64>();
                if active(JobStatus::Processing) > 0 {
                    self.clock.advance(TTL + Duration::from_millis(1));
                    self.store.recover_stale().await.unwrap();
                    continue;
                }
                if active(JobStatus::Pending) > 0 {
                    self.clock.advance(Duration::from_secs(5));
                    continue;
                }
                return;
            };
            let handler = handlers.get(job.kind).expect("the pipeline runs every kind");
            let context = JobContext {
                lease: job.lease().unwrap(),
                attempt: job.attempts,
                lease_lost: CancellationToken::new(),
                shutdown: CancellationToken::new(),
                cancel: CancellationToken::new(),
            };
            worker::run_attempt(self.store.clone(), handler, job, context, self.metrics.clone()).await;
        }
        panic!("the queue did not drain");
    }

    /// Leases the processing job and runs one attempt of it, returning the job as the store then
    /// holds it.
    pub async fn one_attempt(&self) -> checkpoint_store::Job {
        self.attempt_with(CancellationToken::new(), CancellationToken::new()).await
    }

    /// [`Rig::one_attempt`] with the attempt's cancellation tokens given.
    pub async fn attempt_with(
        &self,
        lease_lost: CancellationToken,
        shutdown: CancellationToken,
    ) -> checkpoint_store::Job {
        let handlers = self.pipeline.handlers();
        let request = LeaseRequest { owner: "w", max_jobs: 1, ttl: TTL, kinds: &[JobKind::ProcessDocument] };
        let job = self.store.lease(request).await.unwrap().remove(0);
        let id = job.id;
        let context = JobContext {
            lease: job.lease().unwrap(),
            attempt: job.attempts,
            lease_lost,
            shutdown,
            cancel: CancellationToken::new(),
        };
        let handler = handlers.get(JobKind::ProcessDocument).expect("the pipeline processes documents");
        worker::run_attempt(self.store.clone(), handler, job, context, self.metrics.clone()).await;
        self.store.job(id).await.unwrap().unwrap()
    }

    pub async fn snapshot(&self, document_id: &str) -> Snapshot {
        let document = self.store.document(document_id).await.unwrap().unwrap();
        let chunks =
            self.store.chunks(document_id).await.unwrap().into_iter().map(|c| (c.id, c.index, c.text)).collect();
        let connections = self
            .store
            .connections(
                document_id,
                &checkpoint_store::ConnectionFilter { limit: Some(100_000), ..Default::default() },
            )
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.source.chunk_id, c.target.chunk_id, c.engine))
            .collect();
        Snapshot { status: document.status.to_string(), chunks, connections }
    }

    pub fn extractions(&self) -> u64 {
        self.pipeline.stats.extractions.load(Ordering::SeqCst)
    }

    pub fn chunkings(&self) -> u64 {
        self.pipeline.stats.chunkings.load(Ordering::SeqCst)
    }
}

/// Prints a skip notice past the test harness's output capture, so that a skipped suite is
/// visible in a plain `cargo test` run.
pub fn skip_notice(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// Says that a test cannot run here because `missing` is absent: a notice outside CI, where the
/// test then passes, and a failure under `CI=true`, where everything a test needs must be present.
pub fn prerequisite_missing(missing: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true but {missing}: this test must run in CI");
    }
    skip_notice(&format!("notice: {missing}; skipping"));
}

/// A small xorshift generator: chaos that is random but repeatable from its seed.
pub struct Chaos(pub u64);

impl Chaos {
    /// A number below `below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}
