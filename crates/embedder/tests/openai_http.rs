//! `OpenAiEmbedder` against a scripted HTTP server on 127.0.0.1.
//!
//! The server is a one-route axum app: it records every request and answers
//! with the scripted status, headers and body. Counting requests on the server
//! side is what proves that no layer retries behind the queue's back. Nothing
//! here sleeps for a `Retry-After`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use embedder::{EmbedError, Embedder, OpenAiConfig, OpenAiEmbedder};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: String) -> Self {
        let status = StatusCode::from_u16(status).unwrap();
        Self { status, headers: HeaderMap::new(), body }.header("content-type", content_type)
    }

    fn json(status: u16, body: Value) -> Self {
        Self::new(status, "application/json", body.to_string())
    }

    fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/html", body.into())
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.insert(name, value.parse().unwrap());
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, self.headers, self.body).into_response()
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Method and path, as `POST /v1/embeddings`.
    line: String,
    headers: HeaderMap,
    body: Value,
}

/// The scripted server: every request gets `reply(request)`.
struct Server {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(reply: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, reply) = (seen.clone(), Arc::new(reply));
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = reply(&body);
            log.lock().unwrap().push(Seen { line: format!("{method} {uri}"), headers, body });
            answer
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn embedder(&self, config: OpenAiConfig) -> OpenAiEmbedder {
        OpenAiEmbedder::new(OpenAiConfig { base_url: self.base_url.clone(), api_key: Some("sk-test".into()), ..config })
            .unwrap()
    }
}

fn inputs(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

/// A vector of `dims` floats whose first component tells the input apart.
fn vector(tag: usize, dims: usize) -> Vec<f32> {
    let mut v = vec![0.5; dims];
    v[0] = tag as f32;
    v
}

/// Small vectors keep the tests readable: ask for 4 dimensions.
fn config() -> OpenAiConfig {
    OpenAiConfig { dimensions: Some(4), ..OpenAiConfig::default() }
}

#[tokio::test]
async fn success_with_a_full_openai_response() {
    let server = Server::start(|req| {
        let n = req["input"].as_array().map_or(0, Vec::len);
        // Out of order on purpose: `index` decides.
        let data: Vec<Value> =
            (0..n).rev().map(|i| json!({"object": "embedding", "index": i, "embedding": vector(i, 4)})).collect();
        Reply::json(
            200,
            json!({"object": "list", "data": data, "model": "text-embedding-3-small",
                   "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
        )
    })
    .await;
    let embedder = server.embedder(config());

    let out = embedder.embed(&inputs(&["a", "b", "c"])).await.unwrap();
    assert_eq!(out, vec![vector(0, 4), vector(1, 4), vector(2, 4)]);

    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].line, "POST /v1/embeddings");
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-test");
    assert_eq!(seen[0].body, json!({"model": "text-embedding-3-small", "input": ["a", "b", "c"], "dimensions": 4}));
}

#[tokio::test]
async fn success_with_a_lenient_response_missing_object_usage_model_and_index() {
    let server = Server::start(|req| {
        let n = req["input"].as_array().map_or(0, Vec::len);
        let data: Vec<Value> = (0..n).map(|i| json!({"embedding": vector(i, 4)})).collect();
        Reply::json(200, json!({"data": data}))
    })
    .await;
    let embedder = server.embedder(config());
    let out = embedder.embed(&inputs(&["a", "b"])).await.unwrap();
    assert_eq!(out, vec![vector(0, 4), vector(1, 4)]);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn native_dimensions_are_not_sent_and_calls_are_split_by_batch_size() {
    let server = Server::start(|req| {
        let n = req["input"].as_array().map_or(0, Vec::len);
        let data: Vec<Value> = (0..n).map(|i| json!({"embedding": vector(i, 1536)})).collect();
        Reply::json(200, json!({"data": data}))
    })
    .await;
    let embedder = server.embedder(OpenAiConfig { batch_size: 2, ..OpenAiConfig::default() });
    let out = embedder.embed(&inputs(&["a", "b", "c"])).await.unwrap();
    assert_eq!(out.len(), 3);
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, json!({"model": "text-embedding-3-small", "input": ["a", "b"]}));
    assert_eq!(seen[1].body["input"], json!(["c"]));
}

#[tokio::test]
async fn empty_input_makes_no_request() {
    let server = Server::start(|_| Reply::json(500, json!({}))).await;
    let out = server.embedder(config()).embed(&[]).await.unwrap();
    assert!(out.is_empty());
    assert!(server.requests().is_empty());
}

/// Runs one embed call against a server that always answers `reply`, and
/// returns the error and the number of requests the server saw.
async fn fail_with(reply: Reply) -> (EmbedError, usize) {
    let server = Server::start(move |_| reply.clone()).await;
    let err = server.embedder(config()).embed(&inputs(&["a", "b"])).await.unwrap_err();
    (err, server.requests().len())
}

#[tokio::test]
async fn rate_limit_carries_retry_after_and_is_not_retried() {
    let reply = Reply::json(
        429,
        json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
    )
    .header("retry-after", "7");
    let (err, requests) = fail_with(reply).await;
    assert_eq!(err, EmbedError::RateLimited { retry_after: Duration::from_secs(7) });
    assert_eq!(requests, 1, "a hidden retry layer sent the request again");
}

#[tokio::test]
async fn rate_limit_with_a_non_json_body_is_still_rate_limited() {
    let reply = Reply::text(429, "<html><body>Too Many Requests</body></html>").header("retry-after", "3");
    let (err, requests) = fail_with(reply).await;
    assert_eq!(err, EmbedError::RateLimited { retry_after: Duration::from_secs(3) });
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn rate_limit_without_retry_after_uses_the_default() {
    let (err, requests) = fail_with(Reply::text(429, "")).await;
    assert_eq!(err, EmbedError::RateLimited { retry_after: embedder::DEFAULT_RETRY_AFTER });
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn rate_limit_far_in_the_future_is_capped() {
    let (err, _) = fail_with(Reply::text(429, "slow down").header("retry-after", "86400")).await;
    assert_eq!(err.retry_after(), Some(embedder::MAX_RETRY_AFTER));
}

#[tokio::test]
async fn insufficient_quota_refuses_the_account() {
    let reply = Reply::json(
        429,
        json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}),
    );
    let (err, requests) = fail_with(reply).await;
    assert!(matches!(&err, EmbedError::AccountRefused(m) if m.contains("current quota")), "{err:?}");
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn server_error_is_retryable_after_one_request() {
    let (err, requests) = fail_with(Reply::text(500, "upstream exploded")).await;
    assert!(
        matches!(&err, EmbedError::Retryable(m) if m.contains("500") && m.contains("upstream exploded")),
        "{err:?}"
    );
    assert_eq!(requests, 1);

    let (err, requests) = fail_with(Reply::json(503, json!({"error": {"message": "overloaded"}}))).await;
    assert!(matches!(&err, EmbedError::Retryable(m) if m.contains("overloaded")), "{err:?}");
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn client_error_is_permanent_with_the_server_message() {
    let (err, requests) = fail_with(Reply::json(400, json!({"error": {"message": "bad input"}}))).await;
    assert!(matches!(&err, EmbedError::Permanent(m) if m.contains("bad input")), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn an_invalid_or_unauthorised_key_refuses_the_account_with_the_server_message() {
    let (err, requests) = fail_with(Reply::text(401, "no key")).await;
    assert!(matches!(&err, EmbedError::AccountRefused(m) if m.contains("401") && m.contains("no key")), "{err:?}");
    assert_eq!(requests, 1);

    let (err, _) = fail_with(Reply::json(403, json!({"error": {"message": "project has no access"}}))).await;
    assert!(matches!(&err, EmbedError::AccountRefused(m) if m.contains("no access")), "{err:?}");
}

#[tokio::test]
async fn wrong_vector_count_is_permanent() {
    let (err, requests) = fail_with(Reply::json(200, json!({"data": [{"embedding": vector(0, 4)}]}))).await;
    assert!(matches!(&err, EmbedError::Permanent(m) if m.contains("1 vectors for 2 inputs")), "{err:?}");
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn wrong_dimensions_are_permanent() {
    let data = json!({"data": [{"embedding": vector(0, 4)}, {"embedding": vector(1, 3)}]});
    let (err, _) = fail_with(Reply::json(200, data)).await;
    assert!(matches!(&err, EmbedError::Permanent(m) if m.contains("3 dimensions")), "{err:?}");
}

#[tokio::test]
async fn malformed_success_body_is_permanent() {
    let (err, _) = fail_with(Reply::text(200, "<html>captive portal</html>")).await;
    assert!(matches!(&err, EmbedError::Permanent(m) if m.contains("malformed")), "{err:?}");

    // Base64 vectors (never requested) do not parse as floats.
    let (err, _) = fail_with(Reply::json(200, json!({"data": [{"embedding": "AAAA"}, {"embedding": "AAAA"}]}))).await;
    assert!(matches!(err, EmbedError::Permanent(_)), "{err:?}");
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // Bind then drop: nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let embedder =
        OpenAiEmbedder::new(OpenAiConfig { base_url: format!("http://127.0.0.1:{port}/v1"), ..config() }).unwrap();
    let err = embedder.embed(&inputs(&["a"])).await.unwrap_err();
    assert!(matches!(err, EmbedError::Retryable(_)), "{err:?}");
}

#[tokio::test]
async fn timeout_is_retryable() {
    // Accepts and reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0usize));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            held.push(stream);
        }
    });
    let embedder = OpenAiEmbedder::new(OpenAiConfig {
        base_url: format!("http://{addr}/v1"),
        request_timeout: Duration::from_millis(300),
        ..config()
    })
    .unwrap();
    let err = embedder.embed(&inputs(&["a"])).await.unwrap_err();
    assert!(matches!(err, EmbedError::Retryable(_)), "{err:?}");
    assert_eq!(*accepted.lock().unwrap(), 1, "the timed-out request was retried");
}
