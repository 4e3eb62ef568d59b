//! An embedder for OpenAI-compatible `/embeddings` endpoints, via async-openai.
//!
//! Three things about async-openai 0.43 shape this module:
//!
//! - Its typed responses are strict (missing `object`, `model`, `usage` or
//!   `index` fail to parse), and many compatible servers omit them. We use the
//!   `byot` feature with our own lenient [`EmbeddingRequest`] and
//!   [`EmbeddingResponse`].
//! - Its default HTTP path wraps every request in a retry layer (3 retries of
//!   429, 5xx and connection errors, honouring `Retry-After` without a cap)
//!   and then discards the response headers, so a `Retry-After` can never
//!   reach us, and a 429 with a non-JSON body surfaces as a JSON error without
//!   a status. With the `middleware` feature we install [`transport::OneShotTransport`]
//!   instead: it sends the request once and turns every non-success response
//!   into an [`EmbedError`] while status and headers are still at hand. The
//!   error travels through async-openai as `OpenAIError::Boxed` and is
//!   downcast back in [`OpenAiEmbedder::embed`].
//! - [`async_openai::config::OpenAIConfig`] builds its headers with
//!   `parse().unwrap()`: an API key, organisation or project id that is not a
//!   valid header value would panic on the first request, so
//!   [`OpenAiEmbedder::new`] checks them first.

mod batches;
mod transport;

use std::time::Duration;

use async_openai::config::{Config as _, OpenAIConfig};
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use self::transport::{OneShotTransport, classify_openai_error};

use crate::{BatchLimits, EmbedError, Embedder, plan_batches};

/// Default endpoint when neither the config nor `OPENAI_BASE_URL` names one.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Default model.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";
/// OpenAI's limit on one input, in real tokens. Callers truncate to (a margin
/// below) this with [`crate::truncate_for_embedding`].
pub const OPENAI_MAX_INPUT_TOKENS: usize = 8191;
/// Wait used for a 429 without a usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(20);
/// Longest wait we pass on, whatever the server asks for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Settings of [`OpenAiEmbedder`]. Defaults are documented on each field and
/// set by [`OpenAiConfig::default`] (no environment) and
/// [`OpenAiConfig::from_env`].
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// API root without the `/embeddings` suffix; default
    /// `https://api.openai.com/v1` (or `OPENAI_BASE_URL` via `from_env`).
    /// A trailing `/` is ignored.
    pub base_url: String,
    /// Bearer token (`OPENAI_API_KEY` via `from_env`); `None` sends an empty
    /// token, which local servers usually accept.
    pub api_key: Option<String>,
    /// Model name sent with every request; default `text-embedding-3-small`.
    pub model: String,
    /// Vector size to ask for. `None` uses the model's native size, which
    /// must then be known to this crate (the `text-embedding-3-*` and
    /// `ada-002` models); set it explicitly for any other model.
    pub dimensions: Option<usize>,
    /// Max inputs per request; default 64 (OpenAI allows 2048).
    pub batch_size: usize,
    /// Max estimated tokens per request, summed over its inputs; default
    /// 250,000 (OpenAI allows 300,000). Per input, OpenAI allows 8191
    /// ([`OPENAI_MAX_INPUT_TOKENS`]): truncating is the caller's job.
    pub max_batch_tokens: usize,
    /// Total time for one request, connection to last byte; default 60 s.
    pub request_timeout: Duration,
    /// Organisation sent as `OpenAI-Organization` (`OPENAI_ORG_ID` via `from_env`); none by
    /// default.
    pub org_id: Option<String>,
    /// Project sent as `OpenAI-Project` (`OPENAI_PROJECT_ID` via `from_env`); none by default.
    pub project_id: Option<String>,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size)
            .field("max_batch_tokens", &self.max_batch_tokens)
            .field("request_timeout", &self.request_timeout)
            .field("org_id", &self.org_id)
            .field("project_id", &self.project_id)
            .finish()
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            model: DEFAULT_MODEL.to_string(),
            dimensions: None,
            batch_size: 64,
            max_batch_tokens: 250_000,
            request_timeout: Duration::from_secs(60),
            org_id: None,
            project_id: None,
        }
    }
}

impl OpenAiConfig {
    /// The defaults, with `base_url`, `api_key`, `org_id` and `project_id` from
    /// `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` when they
    /// are set and not empty.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        let defaults = Self::default();
        Self {
            base_url: var("OPENAI_BASE_URL").unwrap_or(defaults.base_url.clone()),
            api_key: var("OPENAI_API_KEY"),
            org_id: var("OPENAI_ORG_ID"),
            project_id: var("OPENAI_PROJECT_ID"),
            ..defaults
        }
    }
}

/// Native vector size of the models we know.
fn native_dimensions(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// Embeds through an OpenAI-compatible `/embeddings` endpoint, one HTTP
/// request per planned batch and never a retry (see the module docs).
#[derive(Clone)]
pub struct OpenAiEmbedder {
    /// async-openai client whose transport is [`transport::OneShotTransport`].
    client: async_openai::Client<OpenAIConfig>,
    /// Model name sent with each request.
    model: String,
    /// Vector size every response must have.
    dimensions: usize,
    /// `dimensions` parameter sent with each request: only when it differs
    /// from the model's native size (older models reject the parameter).
    requested_dimensions: Option<usize>,
    /// Limits used to split calls to `embed`.
    limits: BatchLimits,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("base_url", &self.client.config().api_base())
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// Checks `config` and builds the client. No request is made.
    ///
    /// Fails with [`EmbedError::Permanent`] for an empty model, a zero size,
    /// an unknown model without `dimensions`, a key, organisation or project
    /// that is not a valid header value, or an HTTP
    /// client that cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let permanent = |msg: String| Err(EmbedError::Permanent(msg));
        if config.model.trim().is_empty() {
            return permanent("embedding model name is empty".into());
        }
        let native = native_dimensions(&config.model);
        let dimensions = match (config.dimensions, native) {
            (Some(0), _) => return permanent("embedding dimensions must be at least 1".into()),
            (Some(d), _) => d,
            (None, Some(d)) => d,
            (None, None) => {
                return permanent(format!(
                    "the native vector size of model {:?} is unknown: set dimensions",
                    config.model
                ));
            }
        };
        let requested_dimensions = config.dimensions.filter(|&d| Some(d) != native);

        let api_key = config.api_key.unwrap_or_default();
        if HeaderValue::from_str(&format!("Bearer {api_key}")).is_err() {
            return permanent("the API key is not a valid HTTP header value".into());
        }
        // Always set, so that async-openai never sends what it read from the environment
        // itself, and checked here because it unwraps their parse when it builds headers.
        let org_id = config.org_id.unwrap_or_default();
        let project_id = config.project_id.unwrap_or_default();
        for (name, value) in [("organisation", &org_id), ("project", &project_id)] {
            if HeaderValue::from_str(value).is_err() {
                return permanent(format!("the OpenAI {name} is not a valid HTTP header value"));
            }
        }

        let base_url = config.base_url.trim().trim_end_matches('/').to_string();
        if reqwest::Url::parse(&base_url).is_err() {
            return permanent(format!("invalid embedding base URL {base_url:?}"));
        }
        let openai_config = OpenAIConfig::new()
            .with_api_base(base_url)
            .with_api_key(api_key)
            .with_org_id(org_id)
            .with_project_id(project_id);

        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| EmbedError::Permanent(format!("cannot build the HTTP client: {e}")))?;
        // `Client::build` installs the retry layer; the service we pass here
        // replaces the whole execution path (`build` still supplies the
        // reqwest client that async-openai uses to assemble requests).
        let client =
            async_openai::Client::build(http.clone(), openai_config).with_http_service(OneShotTransport { http });

        Ok(Self {
            client,
            model: config.model,
            dimensions,
            requested_dimensions,
            limits: BatchLimits {
                max_inputs: config.batch_size.max(1),
                max_tokens: config.max_batch_tokens,
                max_input_tokens: OPENAI_MAX_INPUT_TOKENS,
            },
        })
    }

    /// One request for `inputs`, checked and in input order.
    async fn embed_batch(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request = EmbeddingRequest { model: &self.model, input: inputs, dimensions: self.requested_dimensions };
        let response: EmbeddingResponse =
            self.client.embeddings().create_byot(&request).await.map_err(classify_openai_error)?;
        response.into_vectors(inputs.len(), self.dimensions)
    }
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    /// The configured model name, with `@{dimensions}` appended when a
    /// non-native size is requested (the vectors differ, so must the key).
    fn model(&self) -> String {
        match self.requested_dimensions {
            Some(d) => format!("{}@{d}", self.model),
            None => self.model.clone(),
        }
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn batch_limits(&self) -> BatchLimits {
        self.limits
    }

    /// Sends one request per batch planned with [`Embedder::batch_limits`]
    /// (one request when the caller already planned), one after another; the
    /// first failure ends the call. An empty `inputs` makes no request.
    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(inputs.len());
        for batch in plan_batches(inputs, self.limits) {
            vectors.extend(self.embed_batch(&inputs[batch]).await?);
        }
        Ok(vectors)
    }
}

/// Body of `POST /embeddings`: only the fields every compatible server knows.
#[derive(Debug, Serialize)]
struct EmbeddingRequest<'a> {
    /// Model name.
    model: &'a str,
    /// Texts, sent as an array even for one input.
    input: &'a [String],
    /// Requested size, omitted for the model's native size.
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

/// Response of `POST /embeddings`: `object`, `model` and `usage` are ignored,
/// so servers may omit them.
#[derive(Debug, Deserialize)]
struct EmbeddingResponse {
    /// One entry per input.
    data: Vec<EmbeddingDatum>,
}

/// One vector of a response.
#[derive(Debug, Deserialize)]
struct EmbeddingDatum {
    /// The vector (float encoding; base64 is never requested).
    embedding: Vec<f32>,
    /// Position of the input; when absent, the response order is the input
    /// order.
    #[serde(default)]
    index: Option<usize>,
}

impl EmbeddingResponse {
    /// The vectors in input order, after checking count, indices and sizes.
    fn into_vectors(self, expected: usize, dimensions: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let bad = |msg: String| Err(EmbedError::Permanent(format!("malformed embedding response: {msg}")));
        let mut data = self.data;
        if data.len() != expected {
            return bad(format!("{} vectors for {expected} inputs", data.len()));
        }
        let indexed = data.iter().filter(|d| d.index.is_some()).count();
        if indexed == data.len() {
            data.sort_by_key(|d| d.index);
            if data.iter().enumerate().any(|(i, d)| d.index != Some(i)) {
                return bad(format!("indices are not 0..{expected} exactly once"));
            }
        } else if indexed != 0 {
            return bad("some vectors have an index and some do not".into());
        }
        let mut vectors = Vec::with_capacity(expected);
        for (i, datum) in data.into_iter().enumerate() {
            if datum.embedding.len() != dimensions {
                return bad(format!("vector {i} has {} dimensions, expected {dimensions}", datum.embedding.len()));
            }
            if datum.embedding.iter().any(|x| !x.is_finite()) {
                return bad(format!("vector {i} holds a non-finite value"));
            }
            vectors.push(datum.embedding);
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(index: Option<usize>, v: &[f32]) -> EmbeddingDatum {
        EmbeddingDatum { embedding: v.to_vec(), index }
    }

    #[test]
    fn response_order_and_checks() {
        let response = |data| EmbeddingResponse { data };
        // Sorted by index when present.
        let r = response(vec![datum(Some(1), &[1.0, 1.0]), datum(Some(0), &[0.0, 0.0])]);
        assert_eq!(r.into_vectors(2, 2).unwrap(), vec![vec![0.0, 0.0], vec![1.0, 1.0]]);
        // Kept in order when absent.
        let r = response(vec![datum(None, &[1.0]), datum(None, &[0.0])]);
        assert_eq!(r.into_vectors(2, 1).unwrap(), vec![vec![1.0], vec![0.0]]);

        let permanent = |r: EmbeddingResponse, n, d| {
            let err = r.into_vectors(n, d).unwrap_err();
            assert!(matches!(err, EmbedError::Permanent(_)), "{err:?}");
        };
        permanent(response(vec![datum(None, &[1.0])]), 2, 1);
        permanent(response(vec![datum(Some(0), &[1.0]), datum(Some(0), &[1.0])]), 2, 1);
        permanent(response(vec![datum(Some(0), &[1.0]), datum(Some(5), &[1.0])]), 2, 1);
        permanent(response(vec![datum(Some(0), &[1.0]), datum(None, &[1.0])]), 2, 1);
        permanent(response(vec![datum(None, &[1.0, 2.0])]), 1, 1);
        permanent(response(vec![datum(None, &[f32::INFINITY])]), 1, 1);
    }

    #[test]
    fn config_checks() {
        let ok = OpenAiEmbedder::new(OpenAiConfig::default()).unwrap();
        assert_eq!(ok.dimensions(), 1536);
        assert_eq!(ok.model(), "text-embedding-3-small");
        assert_eq!(ok.requested_dimensions, None);

        let small = OpenAiEmbedder::new(OpenAiConfig { dimensions: Some(256), ..OpenAiConfig::default() }).unwrap();
        assert_eq!((small.dimensions(), small.model()), (256, "text-embedding-3-small@256".into()));

        let native = OpenAiEmbedder::new(OpenAiConfig { dimensions: Some(1536), ..OpenAiConfig::default() }).unwrap();
        assert_eq!(native.requested_dimensions, None);

        let err = |config: OpenAiConfig| match OpenAiEmbedder::new(config) {
            Err(EmbedError::Permanent(msg)) => msg,
            other => panic!("expected a permanent error, got {other:?}"),
        };
        assert!(
            err(OpenAiConfig { model: "nomic-embed-text".into(), ..OpenAiConfig::default() })
                .contains("set dimensions")
        );
        assert!(
            err(OpenAiConfig { api_key: Some("sk-\nbroken".into()), ..OpenAiConfig::default() }).contains("API key")
        );
        assert!(err(OpenAiConfig { dimensions: Some(0), ..OpenAiConfig::default() }).contains("at least 1"));
        assert!(err(OpenAiConfig { base_url: "not a url".into(), ..OpenAiConfig::default() }).contains("base URL"));
    }

    #[test]
    fn debug_hides_the_key() {
        let config = OpenAiConfig { api_key: Some("sk-secret".into()), ..OpenAiConfig::default() };
        assert!(!format!("{config:?}").contains("sk-secret"));
    }
}
