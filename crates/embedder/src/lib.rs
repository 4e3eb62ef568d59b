//! Text embedding for quire, behind one trait.
//!
//! The pipeline sees only the [`Embedder`] trait: a model name (part of the
//! embedding cache key), a vector size, the [`BatchLimits`] of one request and
//! an async [`Embedder::embed`] that returns one vector per input, in order.
//! Two implementations exist:
//!
//! - [`LocalEmbedder`]: deterministic, offline feature hashing (word unigrams
//!   and bigrams, character 3-grams). For tests, development and air-gapped
//!   installs; similar texts get noticeably higher cosine than unrelated ones.
//! - [`OpenAiEmbedder`]: any OpenAI-compatible `/embeddings` endpoint, through
//!   `async-openai` with our own lenient request and response types.
//!
//! Batches are planned by [`plan_batches`] (by count and by estimated tokens,
//! see [`estimate_tokens`]); over-long inputs are cut by
//! [`truncate_for_embedding`].
//!
//! Large jobs can go through an OpenAI-compatible Batch API instead, behind
//! the [`BatchService`] trait (implemented by [`OpenAiEmbedder`]): upload the
//! inputs, create a batch, check its [`BatchState`], download its results,
//! cancel it. Every call is one request, never retried, like `embed`.
//!
//! **The key design choice: this crate never retries.** The durable job queue
//! owns retries, so every failure comes back at once, classified as
//! [`EmbedError::RateLimited`] (with the server's `Retry-After`),
//! [`EmbedError::Retryable`] or [`EmbedError::Permanent`]. `async-openai`
//! normally hides a retry layer that honours `Retry-After` without a cap and
//! discards response headers; [`OpenAiEmbedder`] replaces that layer (through
//! the `middleware` feature) with its own transport service that performs
//! exactly one HTTP request and classifies non-success responses itself, while
//! it can still see the status and the headers.
//!
//! ```
//! use embedder::{plan_batches, BatchLimits, Embedder, LocalEmbedder};
//!
//! let embedder = LocalEmbedder::new(64);
//! let texts: Vec<String> = vec!["a whale".into(), "the white whale".into()];
//! let batches = plan_batches(&texts, embedder.batch_limits());
//! assert_eq!(batches, vec![0..2]);
//! let vector = embedder.embed_text(&texts[0]);
//! assert_eq!(vector.len(), embedder.dimensions());
//! ```

mod batch;
mod batch_api;
mod error;
mod local;
mod openai;

pub use batch::{BatchLimits, estimate_tokens, plan_batches, truncate_for_embedding};
pub use batch_api::{BatchInfo, BatchInput, BatchResults, BatchService, BatchState};
pub use error::EmbedError;
pub use local::{DEFAULT_LOCAL_DIMENSIONS, LocalEmbedder};
pub use openai::{
    DEFAULT_BASE_URL, DEFAULT_MODEL, DEFAULT_RETRY_AFTER, MAX_RETRY_AFTER, OPENAI_MAX_INPUT_TOKENS, OpenAiConfig,
    OpenAiEmbedder,
};

/// Turns texts into vectors.
///
/// Implementations must be cheap to share between tasks (`Send + Sync`) and
/// must not retry on their own: a failure is returned at once, classified, and
/// the job queue decides when to try again.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Stable name of the model, part of the embedding cache key.
    ///
    /// It changes whenever the vectors would change (another model, another
    /// vector size), so cached vectors are never mixed across vector spaces.
    fn model(&self) -> String;

    /// Length of every vector [`Embedder::embed`] returns.
    fn dimensions(&self) -> usize;

    /// Max inputs per request and max estimated tokens per request.
    ///
    /// Callers plan requests with [`plan_batches`]; inputs must already be
    /// cut to the provider's per-input limit with [`truncate_for_embedding`].
    fn batch_limits(&self) -> BatchLimits;

    /// Embeds `inputs`: one vector of [`Embedder::dimensions`] per input, in
    /// the same order.
    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline's tests script embedders with `MockEmbedder` (feature
    /// `mock`, tests/pipeline_embedder.rs); make sure the generated mock works
    /// with the async method.
    #[tokio::test]
    async fn mock_embedder_is_usable() {
        let mut mock = MockEmbedder::new();
        mock.expect_model().return_const("mock-model".to_string());
        mock.expect_dimensions().return_const(2usize);
        mock.expect_embed().times(1).returning(|inputs| Ok(inputs.iter().map(|_| vec![1.0, 0.0]).collect()));
        mock.expect_batch_limits().return_const(BatchLimits { max_inputs: 1, max_tokens: 10, max_input_tokens: 10 });

        let embedder: Box<dyn Embedder> = Box::new(mock);
        assert_eq!(embedder.model(), "mock-model");
        assert_eq!(embedder.dimensions(), 2);
        assert_eq!(embedder.batch_limits().max_inputs, 1);
        let out = embedder.embed(&["a".into(), "b".into()]).await.unwrap();
        assert_eq!(out, vec![vec![1.0, 0.0]; 2]);
    }

    #[tokio::test]
    async fn mock_embedder_can_fail() {
        let mut mock = MockEmbedder::new();
        mock.expect_embed()
            .returning(|_| Err(EmbedError::RateLimited { retry_after: std::time::Duration::from_secs(3) }));
        let err = mock.embed(&["a".into()]).await.unwrap_err();
        assert!(err.is_retryable());
    }
}
