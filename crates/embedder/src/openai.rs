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
//!   a status. With the `middleware` feature we install [`OneShotTransport`]
//!   instead: it sends the request once and turns every non-success response
//!   into an [`EmbedError`] while status and headers are still at hand. The
//!   error travels through async-openai as `OpenAIError::Boxed` and is
//!   downcast back in [`OpenAiEmbedder::embed`].
//! - [`async_openai::config::OpenAIConfig`] builds its headers with
//!   `parse().unwrap()`: an API key, organisation or project id that is not a
//!   valid header value would panic on the first request, so
//!   [`OpenAiEmbedder::new`] checks them first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_openai::config::{Config as _, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::{
    BatchInfo, BatchInput, BatchLimits, BatchResults, BatchService, BatchState, EmbedError, Embedder, plan_batches,
};

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
/// Most bytes of an error body we read (the message is all we keep).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most characters of a server message we keep in an error.
const MAX_MESSAGE_CHARS: usize = 500;

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
    /// async-openai client whose transport is [`OneShotTransport`].
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
            limits: BatchLimits { max_inputs: config.batch_size.max(1), max_tokens: config.max_batch_tokens },
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

/// The Batch API through async-openai's files and batches endpoints, on the same one-shot
/// transport as `embed`: every call is one HTTP request, never retried. Response types are our
/// own and lenient (`byot`), like the embeddings response.
#[async_trait::async_trait]
impl BatchService for OpenAiEmbedder {
    async fn submit(&self, inputs: &[BatchInput]) -> Result<BatchInfo, EmbedError> {
        if inputs.is_empty() {
            return Err(EmbedError::Permanent("a batch needs at least one input".into()));
        }
        let mut jsonl = Vec::new();
        for input in inputs {
            let line = BatchRequestLine {
                custom_id: &input.custom_id,
                method: "POST",
                url: "/v1/embeddings",
                body: EmbeddingRequest {
                    model: &self.model,
                    input: std::slice::from_ref(&input.text),
                    dimensions: self.requested_dimensions,
                },
            };
            serde_json::to_writer(&mut jsonl, &line)
                .map_err(|e| EmbedError::Permanent(format!("cannot encode a batch request: {e}")))?;
            jsonl.push(b'\n');
        }
        let upload = async_openai::types::files::CreateFileRequest {
            file: async_openai::types::files::FileInput {
                source: async_openai::types::InputSource::VecU8 {
                    filename: "quire-embeddings.jsonl".into(),
                    vec: jsonl,
                },
            },
            purpose: async_openai::types::files::FilePurpose::Batch,
            expires_after: None,
        };
        let file: UploadedFile = self.client.files().create_byot(upload).await.map_err(classify_openai_error)?;
        let request = serde_json::json!({
            "input_file_id": file.id,
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
            "metadata": { "source": "quire", "inputs": inputs.len().to_string() },
        });
        let batch: BatchObject = self.client.batches().create_byot(request).await.map_err(classify_openai_error)?;
        batch.into_info(Some(file.id))
    }

    async fn status(&self, batch_id: &str) -> Result<BatchInfo, EmbedError> {
        let batch: BatchObject = self.client.batches().retrieve_byot(batch_id).await.map_err(classify_openai_error)?;
        batch.into_info(None)
    }

    async fn results(&self, output_file_id: &str) -> Result<BatchResults, EmbedError> {
        let bytes = self.client.files().content(output_file_id).await.map_err(classify_openai_error)?;
        Ok(parse_batch_output(&bytes, self.dimensions))
    }

    async fn cancel(&self, batch_id: &str) -> Result<BatchInfo, EmbedError> {
        let batch: BatchObject = self.client.batches().cancel_byot(batch_id).await.map_err(classify_openai_error)?;
        batch.into_info(None)
    }
}

/// One line of a batch input file.
#[derive(Debug, Serialize)]
struct BatchRequestLine<'a> {
    /// Comes back with the result.
    custom_id: &'a str,
    /// Always `POST`.
    method: &'static str,
    /// Always `/v1/embeddings`.
    url: &'static str,
    /// The embeddings request for this input.
    body: EmbeddingRequest<'a>,
}

/// The answer to a file upload: only the id matters.
#[derive(Debug, Deserialize)]
struct UploadedFile {
    /// The file id.
    id: String,
}

/// A batch object, leniently: only `id` and `status` are required.
#[derive(Debug, Deserialize)]
struct BatchObject {
    /// The batch id.
    id: String,
    /// `validating`, `in_progress`, …
    status: String,
    /// The uploaded requests.
    #[serde(default)]
    input_file_id: Option<String>,
    /// The results.
    #[serde(default)]
    output_file_id: Option<String>,
    /// The failed requests.
    #[serde(default)]
    error_file_id: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    created_at: Option<i64>,
    /// Why a batch failed (`{"data": [{"message": …}]}`).
    #[serde(default)]
    errors: Option<serde_json::Value>,
}

impl BatchObject {
    fn into_info(self, input_file_id: Option<String>) -> Result<BatchInfo, EmbedError> {
        let state = BatchState::parse(&self.status).ok_or_else(|| {
            EmbedError::Retryable(format!("batch {} has an unknown status {:?}", self.id, self.status))
        })?;
        let errors = self.errors.filter(|e| !e.is_null()).map(|errors| {
            let messages: Vec<String> = errors["data"]
                .as_array()
                .map(|items| items.iter().filter_map(|i| i["message"].as_str().map(shorten)).collect())
                .unwrap_or_default();
            if messages.is_empty() { shorten(&errors.to_string()) } else { messages.join("; ") }
        });
        Ok(BatchInfo {
            id: self.id,
            state,
            input_file_id: self.input_file_id.or(input_file_id).unwrap_or_default(),
            output_file_id: self.output_file_id.filter(|id| !id.is_empty()),
            error_file_id: self.error_file_id.filter(|id| !id.is_empty()),
            created_at: self.created_at.unwrap_or(0),
            errors,
        })
    }
}

/// One line of a batch output file.
#[derive(Debug, Deserialize)]
struct BatchOutputLine {
    /// The request's `custom_id`.
    custom_id: String,
    /// The HTTP response the service got for it.
    #[serde(default)]
    response: Option<BatchOutputResponse>,
    /// Set when the request could not be run.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The response part of an output line.
#[derive(Debug, Deserialize)]
struct BatchOutputResponse {
    /// HTTP status of the embeddings request.
    status_code: u16,
    /// Its body: an embeddings response on success.
    #[serde(default)]
    body: serde_json::Value,
}

/// Parses an output file: one JSON object per line; lines that failed or cannot be read are
/// reported in `failed`, never silently dropped.
fn parse_batch_output(bytes: &[u8], dimensions: usize) -> BatchResults {
    let mut results = BatchResults::default();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let parsed: BatchOutputLine = match serde_json::from_slice(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                results.failed.push(("?".into(), format!("unreadable output line: {e}")));
                continue;
            }
        };
        let id = parsed.custom_id;
        if let Some(error) = parsed.error.filter(|e| !e.is_null()) {
            results.failed.push((id, error_message(error.to_string().as_bytes())));
            continue;
        }
        let Some(response) = parsed.response else {
            results.failed.push((id, "no response".into()));
            continue;
        };
        if !(200..300).contains(&response.status_code) {
            let message = error_message(response.body.to_string().as_bytes());
            results.failed.push((id, format!("HTTP {}: {message}", response.status_code)));
            continue;
        }
        let vectors = serde_json::from_value::<EmbeddingResponse>(response.body)
            .map_err(|e| EmbedError::Permanent(format!("malformed embedding response: {e}")))
            .and_then(|r| r.into_vectors(1, dimensions));
        match vectors {
            Ok(mut vectors) => results.vectors.push((id, vectors.remove(0))),
            Err(e) => results.failed.push((id, e.to_string())),
        }
    }
    results
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

/// Maps what async-openai returns to our classification.
fn classify_openai_error(error: OpenAIError) -> EmbedError {
    match error {
        // Everything our transport decided (non-success statuses, transport
        // failures) comes back boxed.
        OpenAIError::Boxed(boxed) => match boxed.downcast::<EmbedError>() {
            Ok(ours) => *ours,
            Err(other) => EmbedError::Retryable(other.to_string()),
        },
        // Reading a successful response's body failed (cut short, timed out).
        OpenAIError::Reqwest(e) => classify_reqwest_error(&e),
        // A 2xx whose body is not the JSON we expect.
        OpenAIError::JSONDeserialize(e, body) => {
            EmbedError::Permanent(format!("malformed embedding response: {e}: {}", shorten(&body)))
        }
        // Our transport never lets a non-success status through, so this
        // only happens if that invariant breaks; trust the status.
        OpenAIError::ApiError(api) => {
            let message = format!("HTTP {}: {}", api.status_code, api.api_error.message);
            if api.status_code == StatusCode::TOO_MANY_REQUESTS {
                EmbedError::RateLimited { retry_after: DEFAULT_RETRY_AFTER }
            } else if api.status_code.is_server_error() {
                EmbedError::Retryable(message)
            } else {
                EmbedError::Permanent(message)
            }
        }
        other => EmbedError::Permanent(other.to_string()),
    }
}

/// Transport failures are transient, except a request that cannot be built.
fn classify_reqwest_error(error: &reqwest::Error) -> EmbedError {
    // `Display` of reqwest errors omits the cause ("error sending request"),
    // which is the useful part.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_builder() { EmbedError::Permanent(message) } else { EmbedError::Retryable(message) }
}

/// The tower service async-openai runs for every request, replacing its
/// retrying default: one attempt, and non-success statuses become
/// [`EmbedError`]s while the headers are still available.
#[derive(Clone, Debug)]
struct OneShotTransport {
    /// Connection pool, timeouts.
    http: reqwest::Client,
}

impl tower::Service<HttpRequestFactory> for OneShotTransport {
    type Response = Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(|e| boxed(classify_reqwest_error(&e)))?;
            if response.status().is_success() {
                Ok(response)
            } else {
                Err(boxed(classify_response(response, SystemTime::now()).await))
            }
        })
    }
}

fn boxed(error: EmbedError) -> OpenAIError {
    OpenAIError::Boxed(Box::new(error))
}

/// Classifies a non-success response: 429 → rate limited (whatever the body),
/// 5xx and 408 → retryable, the rest → permanent with the server's message.
async fn classify_response(mut response: Response, now: SystemTime) -> EmbedError {
    let status = response.status();
    let retry_after = parse_retry_after(response.headers(), now);

    let mut body = Vec::new();
    // A body that fails half-way still leaves the status to classify by.
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let message = format!("HTTP {status}: {}", error_message(&body));

    if status == StatusCode::TOO_MANY_REQUESTS {
        // OpenAI also answers 429 when the account is out of credit; waiting
        // does not help, an operator must act.
        if message.contains("insufficient_quota") {
            return EmbedError::Permanent(message);
        }
        tracing::debug!(?retry_after, %message, "embedding request rate limited");
        EmbedError::RateLimited { retry_after }
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        EmbedError::Retryable(message)
    } else {
        EmbedError::Permanent(message)
    }
}

/// The server's message from an error body: `{"error":{"message":…}}`,
/// `{"error":"…"}` or `{"message":…}`, else the body as text. Keeps the
/// `code`/`type` of an OpenAI error, which tells apart quota from rate limits.
fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let error = json.get("error").unwrap_or(&json);
        if let Some(text) = error.as_str() {
            return shorten(text);
        }
        if let Some(message) = error.get("message").and_then(|m| m.as_str()) {
            let mut out = shorten(message);
            for key in ["type", "code"] {
                if let Some(value) = error.get(key).and_then(|v| v.as_str()) {
                    out.push_str(&format!(" ({key}: {value})"));
                }
            }
            return out;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() { "(empty body)".to_string() } else { shorten(text) }
}

/// At most [`MAX_MESSAGE_CHARS`] characters of `text`.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The wait a 429 asks for: `retry-after-ms` (sent by OpenAI), else
/// `Retry-After` as seconds or as an HTTP-date; [`DEFAULT_RETRY_AFTER`] when
/// absent or unreadable; never more than [`MAX_RETRY_AFTER`].
fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_ms = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64((ms / 1000.0).min(MAX_RETRY_AFTER.as_secs_f64())));
    let from_header = || {
        let value = header(RETRY_AFTER.as_str())?;
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        let date = httpdate::parse_http_date(value).ok()?;
        Some(date.duration_since(now).unwrap_or(Duration::ZERO))
    };
    from_ms.or_else(from_header).unwrap_or(DEFAULT_RETRY_AFTER).min(MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = |pairs: &[(&'static str, &str)], expected: Duration| {
            assert_eq!(parse_retry_after(&headers(pairs), now), expected, "{pairs:?}");
        };
        check(&[("retry-after", "7")], Duration::from_secs(7));
        check(&[("retry-after", " 0 ")], Duration::ZERO);
        check(&[], DEFAULT_RETRY_AFTER);
        check(&[("retry-after", "soon")], DEFAULT_RETRY_AFTER);
        check(&[("retry-after", "-3")], DEFAULT_RETRY_AFTER);
        check(&[("retry-after", "999999999")], MAX_RETRY_AFTER);
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        check(&[("retry-after", &in_90s)], Duration::from_secs(90));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        check(&[("retry-after", &past)], Duration::ZERO);
        check(&[("retry-after-ms", "1500"), ("retry-after", "9")], Duration::from_millis(1500));
        check(&[("retry-after-ms", "NaN"), ("retry-after", "9")], Duration::from_secs(9));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad input","type":"invalid_request_error"}}"#),
            "bad input (type: invalid_request_error)"
        );
        assert_eq!(error_message(br#"{"error":"model not found"}"#), "model not found");
        assert_eq!(error_message(br#"{"message":"nope"}"#), "nope");
        assert_eq!(error_message(b"<html>Too Many</html>"), "<html>Too Many</html>");
        assert_eq!(error_message(b""), "(empty body)");
        assert_eq!(error_message("é".repeat(900).as_bytes()).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

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
    fn batch_output_parsing() {
        let output = concat!(
            r#"{"id":"r1","custom_id":"a","response":{"status_code":200,"body":{"data":[{"index":0,"embedding":[1.0,0.0]}]}},"error":null}"#,
            "\n",
            r#"{"id":"r2","custom_id":"b","response":{"status_code":400,"body":{"error":{"message":"too long"}}},"error":null}"#,
            "\n\n",
            r#"{"id":"r3","custom_id":"c","response":null,"error":{"message":"expired"}}"#,
            "\n",
            r#"{"id":"r4","custom_id":"d","response":{"status_code":200,"body":{"data":[{"embedding":[1.0]}]}}}"#,
            "\nnot json\n",
        );
        let results = parse_batch_output(output.as_bytes(), 2);
        assert_eq!(results.vectors, vec![("a".to_string(), vec![1.0, 0.0])]);
        let failed: Vec<&str> = results.failed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(failed, vec!["b", "c", "d", "?"]);
        assert!(results.failed[0].1.contains("too long"));
    }

    #[test]
    fn batch_objects_are_read_leniently() {
        let object: BatchObject =
            serde_json::from_str(r#"{"id":"batch_1","status":"failed","errors":{"data":[{"message":"bad line"}]}}"#)
                .unwrap();
        let info = object.into_info(Some("file_1".into())).unwrap();
        assert_eq!((info.state, info.input_file_id.as_str()), (BatchState::Failed, "file_1"));
        assert_eq!(info.errors.as_deref(), Some("bad line"));
        let object: BatchObject = serde_json::from_str(r#"{"id":"b","status":"paused"}"#).unwrap();
        assert!(matches!(object.into_info(None), Err(EmbedError::Retryable(_))));
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
