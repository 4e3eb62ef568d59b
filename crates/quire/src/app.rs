//! Opening what every command needs: the data directory, the store, the embedder.

use std::sync::Arc;

use anyhow::{Context, bail};
use checkpoint_store::{SqliteStore, Store, StoreOptions};
use embedder::{Embedder, LocalEmbedder, OpenAiConfig, OpenAiEmbedder};
use worker::{DataDir, Pipeline};

use crate::cli::{EmbedderKind, EmbedderOptions, GlobalOptions};

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
        let store: Arc<dyn Store> = match global.database_url.as_deref() {
            None => Arc::new(
                SqliteStore::open(data_dir.database_path(), StoreOptions::default())
                    .await
                    .with_context(|| format!("cannot open {}", data_dir.database_path().display()))?,
            ),
            Some(url) if url.starts_with("sqlite:") => {
                Arc::new(SqliteStore::open_url(url, StoreOptions::default()).await.with_context(|| format!("cannot open {url}"))?)
            }
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => open_postgres(url).await?,
            Some(url) => bail!("unsupported database URL {url:?}: use sqlite://PATH or postgres://…"),
        };
        Ok(App { store, data_dir })
    }

    /// The document pipeline over this app's store, isolating book parsing in this binary.
    pub fn pipeline(&self, embedder: Arc<dyn Embedder>) -> anyhow::Result<Pipeline> {
        let program = std::env::current_exe().context("cannot locate the quire binary for isolated parsing")?;
        Ok(Pipeline::new(self.store.clone(), embedder, self.data_dir.clone(), program))
    }
}

async fn open_postgres(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    bail!("PostgreSQL ({url}) is not available in this build of quire yet; use the SQLite default")
}

/// The embedder the options ask for.
pub fn embedder(options: &EmbedderOptions) -> anyhow::Result<Arc<dyn Embedder>> {
    match options.embedder {
        EmbedderKind::Local => Ok(Arc::new(LocalEmbedder::new(options.embedding_dimensions.unwrap_or(embedder::DEFAULT_LOCAL_DIMENSIONS)))),
        EmbedderKind::Openai => {
            let mut config = OpenAiConfig::from_env();
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
    }
}
