//! Opening what every command needs: the data directory, the store, the embedder.

use std::sync::Arc;

use anyhow::{Context, bail};
use checkpoint_store::{OpenOptions, RetryPolicy, Store, StoreLocation};
use embedder::{BatchService, Embedder, LocalEmbedder, OpenAiConfig, OpenAiEmbedder};
use worker::{DataDir, Pipeline};

use crate::cli::{EmbedderKind, EmbedderOptions, EmbeddingModeArg, GlobalOptions};

/// The opened data directory and store.
pub struct App {
    /// Jobs and documents.
    pub store: Arc<dyn Store>,
    /// Uploads and markdown.
    pub data_dir: DataDir,
}

impl App {
    /// Opens the data directory and the database it (or `--database-url`) names, applying
    /// migrations.
    pub async fn open(global: &GlobalOptions) -> anyhow::Result<App> {
        let data_dir = DataDir::open(&global.data_dir)
            .with_context(|| format!("cannot use the data directory {}", global.data_dir.display()))?;
        let location = match &global.database_url {
            None => StoreLocation::SqliteFile(data_dir.database_path()),
            Some(url) => StoreLocation::Url(url.clone()),
        };
        let options = OpenOptions {
            retry_policy: retry_policy(global),
            // The in-process vector indexes keep their snapshots in the data directory.
            vector_snapshots: Some(data_dir.index_dir()),
            postgres_schema: Some(global.database_schema.clone()),
        };
        // The URL is left out of the message: it may carry a password.
        let described = match &location {
            StoreLocation::SqliteFile(path) => path.display().to_string(),
            StoreLocation::Url(_) => format!("the database (PostgreSQL schema {})", global.database_schema),
        };
        let store =
            checkpoint_store::open(&location, options).await.with_context(|| format!("cannot open {described}"))?;
        Ok(App { store, data_dir })
    }

    /// The document pipeline over this app's store, isolating book parsing in this binary.
    pub fn pipeline(&self, embedder: Arc<dyn Embedder>) -> anyhow::Result<Pipeline> {
        let program = std::env::current_exe().context("cannot locate the quire binary for isolated parsing")?;
        Ok(Pipeline::new(self.store.clone(), embedder, self.data_dir.clone(), program))
    }

    /// The document pipeline with the embedder and Batch API settings the options describe.
    pub fn pipeline_for(&self, options: &EmbedderOptions) -> anyhow::Result<Pipeline> {
        let (embedder, batch_service) = embedder_and_batches(options)?;
        let mut pipeline = self.pipeline(embedder)?;
        pipeline.batching = batching(options, batch_service);
        Ok(pipeline)
    }

    /// Loads the indexes the pipeline's jobs ask (the term index, and the vector index of its
    /// embedder's model) in the background, while the first jobs extract and embed: the first
    /// `detect_connections` finds them loaded instead of paying for the load. A failure is logged;
    /// the job that needs the index loads it then.
    pub fn warm_indexes(&self, pipeline: &Pipeline) {
        let store = self.store.clone();
        let (model, dimensions) = (pipeline.embedder.model(), pipeline.embedder.dimensions());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (terms, vectors) = tokio::join!(store.warm_term_index(), store.warm_indexes(&model, dimensions));
            match terms.and(vectors) {
                Ok(()) => tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "indexes warmed"),
                Err(error) => {
                    tracing::warn!(%error, "could not warm the indexes; the first job that needs them loads them")
                }
            }
        });
    }

    /// Does the index upkeep a worker defers while it is busy (new vectors folded into the
    /// in-process graphs, snapshots written), for a process about to exit: the next one starts
    /// warm. A failure costs the next process some catching up, not this one its result.
    pub async fn settle_indexes(&self) {
        let started = std::time::Instant::now();
        match self.store.settle_indexes().await {
            Ok(()) => tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "vector indexes settled"),
            Err(error) => tracing::warn!(%error, "could not settle the vector indexes; the next process catches up"),
        }
    }
}

/// The backoff between a job's attempts: `--retry-base-delay`, growing up to `--retry-max-delay`
/// (never below the base).
fn retry_policy(global: &GlobalOptions) -> RetryPolicy {
    let initial_delay: std::time::Duration = global.retry_base_delay.into();
    let max_delay = std::time::Duration::from(global.retry_max_delay).max(initial_delay);
    RetryPolicy { initial_delay, max_delay, ..RetryPolicy::default() }
}

/// The embedder the options ask for.
pub fn embedder(options: &EmbedderOptions) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(embedder_and_batches(options)?.0)
}

/// An embedder and, when it has one, its Batch API.
pub type EmbedderWithBatches = (Arc<dyn Embedder>, Option<Arc<dyn BatchService>>);

/// The embedder the options ask for and, for the OpenAI embedder, its Batch API.
pub fn embedder_and_batches(options: &EmbedderOptions) -> anyhow::Result<EmbedderWithBatches> {
    match options.embedder {
        EmbedderKind::Local => Ok((configured_embedder(options)?, None)),
        EmbedderKind::Openai => {
            let openai = openai_embedder(options)?;
            Ok((openai.clone(), Some(openai)))
        }
    }
}

/// The worker's Batch API settings (`--embedding-mode`, `--batch-threshold`,
/// `--batch-poll-interval`) over `service`.
pub fn batching(options: &EmbedderOptions, service: Option<Arc<dyn BatchService>>) -> worker::Batching {
    let mode = match options.embedding_mode {
        EmbeddingModeArg::Direct => worker::EmbeddingMode::Direct,
        EmbeddingModeArg::Batch => worker::EmbeddingMode::Batch,
        EmbeddingModeArg::Auto => worker::EmbeddingMode::Auto,
    };
    let defaults = worker::Batching::default();
    worker::Batching {
        service,
        mode,
        threshold: options.batch_threshold,
        poll_interval: options.batch_poll_interval.into(),
        max_poll_interval: defaults.max_poll_interval.max(options.batch_poll_interval.into()),
        max_wait_per_attempt: defaults.max_wait_per_attempt,
    }
}

fn openai_embedder(options: &EmbedderOptions) -> anyhow::Result<Arc<OpenAiEmbedder>> {
    let mut config = OpenAiConfig::from_env();
    // The flags or their variables (the same names `from_env` reads) decide, as for every option.
    config.org_id = options.openai_org_id.clone();
    config.project_id = options.openai_project_id.clone();
    if let Some(url) = &options.openai_base_url {
        config.base_url = url.clone();
    }
    if let Some(model) = &options.embedding_model {
        config.model = model.clone();
    }
    if let Some(dimensions) = options.embedding_dimensions {
        config.dimensions = Some(dimensions);
    }
    if let Some(batch_size) = options.embedding_batch_size {
        config.batch_size = batch_size;
    }
    Ok(Arc::new(OpenAiEmbedder::new(config).context("cannot configure the OpenAI embedder")?))
}

fn configured_embedder(options: &EmbedderOptions) -> anyhow::Result<Arc<dyn Embedder>> {
    match options.embedder {
        EmbedderKind::Local => {
            let dimensions = options.embedding_dimensions.unwrap_or(embedder::DEFAULT_LOCAL_DIMENSIONS);
            if dimensions == 0 {
                bail!("--embedding-dimensions must be at least 1");
            }
            let mut local = LocalEmbedder::new(dimensions);
            if let Some(batch_size) = options.embedding_batch_size {
                local = local.with_batch_size(batch_size);
            }
            Ok(Arc::new(local))
        }
        EmbedderKind::Openai => Ok(openai_embedder(options)?),
    }
}
