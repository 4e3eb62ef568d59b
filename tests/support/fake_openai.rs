//! A scripted OpenAI-compatible service on 127.0.0.1, as a small axum app that counts every
//! request: embeddings, and the Batch API (`POST /v1/files` multipart, `POST /v1/batches`,
//! `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/files/{id}/content`).
//!
//! Embedding requests are numbered from 0 and answered by a script, a function of that number
//! returning a [`Reply`]. Their inputs are recorded when they arrive, before the script is asked,
//! so a test counts what was asked of the service even when the asking worker died before it
//! saved anything. Batch number `n` follows its own [`BatchScript`]: each status check advances a
//! batch one step, so no time passes. Successful answers embed with the local embedder, so
//! vectors are real.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use embedder::LocalEmbedder;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How the service answers one embedding request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Embed the inputs.
    Embed,
    /// Embed the inputs after this long (a slow service: a request stays in flight a while).
    EmbedAfter(Duration),
    /// 429 with `Retry-After: seconds`.
    RateLimited(u64),
    /// This status with an OpenAI-style error message.
    Error(u16, &'static str),
    /// Never answered: the request stays in flight until its client gives up or dies (a worker
    /// killed mid-request).
    Stall,
}

/// How one batch goes: the states its status checks return in order (the last one repeats),
/// and, for a batch that ends `expired` or `cancelled`, how many of its requests (from the
/// first) have results in a partial output file.
#[derive(Debug, Clone)]
pub struct BatchScript {
    pub states: Vec<&'static str>,
    pub partial: usize,
}

impl BatchScript {
    /// `in_progress` for `polls` checks, then `completed`.
    pub fn completes_after(polls: usize) -> BatchScript {
        BatchScript::ends("completed", polls)
    }

    /// `in_progress` for `polls` checks, then `state` (`failed`, `expired`, `cancelled`).
    pub fn ends(state: &'static str, polls: usize) -> BatchScript {
        let mut states = vec!["in_progress"; polls];
        states.push(state);
        BatchScript { states, partial: 0 }
    }

    /// Never leaves `in_progress` (unless cancelled).
    pub fn never_finishes() -> BatchScript {
        BatchScript { states: vec!["in_progress"], partial: 0 }
    }
}

/// One batch as the service holds it.
#[derive(Debug, Clone)]
pub struct FakeBatch {
    pub id: String,
    pub input_file_id: String,
    /// The requests' custom ids, in file order.
    pub custom_ids: Vec<String>,
    pub status: String,
    pub output_file_id: Option<String>,
    /// The lines of the input file.
    requests: Vec<Value>,
    script: BatchScript,
    /// Status checks so far: the step of the script the batch is at.
    polls: usize,
}

impl FakeBatch {
    fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "expired" | "cancelled")
    }

    /// One status check: a cancelling batch is now cancelled, a running one takes the next step
    /// of its script.
    fn advance(&mut self) {
        if self.status == "cancelling" {
            self.status = "cancelled".into();
        } else if !self.is_finished() {
            let step = self.polls.min(self.script.states.len() - 1);
            self.polls += 1;
            self.status = self.script.states[step].to_owned();
        }
    }

    /// The output file in the batch's current state: results for all its requests once
    /// completed, for the scripted `partial` few once expired or cancelled, else none.
    fn output(&self) -> Option<Vec<u8>> {
        let count = match self.status.as_str() {
            "completed" => self.requests.len(),
            "expired" | "cancelled" => self.script.partial,
            _ => 0,
        };
        let lines = self.requests.iter().take(count).enumerate().map(|(i, request)| {
            let response = json!({"status_code": 200, "request_id": format!("req_{i}"), "body": embed(&request["body"])});
            json!({"id": format!("batch_req_{i}"), "custom_id": request["custom_id"], "response": response, "error": null})
                .to_string()
                + "\n"
        });
        (count > 0).then(|| lines.collect::<String>().into_bytes())
    }

    fn json(&self) -> Value {
        let errors = (self.status == "failed")
            .then(|| json!({"object": "list", "data": [{"code": "invalid_request", "message": "scripted failure"}]}));
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": "/v1/embeddings",
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": null,
            "created_at": CREATED_AT,
            "errors": errors,
            "request_counts": {"total": self.custom_ids.len(), "completed": 0, "failed": 0},
        })
    }
}

/// Every object the service makes was created at 2026-01-01T00:00:00Z.
const CREATED_AT: i64 = 1_767_225_600;

/// What the handlers share with the test's [`FakeOpenAi`].
struct Service {
    reply: Box<dyn Fn(usize) -> Reply + Send + Sync>,
    batch_script: Box<dyn Fn(usize) -> BatchScript + Send + Sync>,
    /// The inputs of every embedding request, at the index of its number.
    received: Mutex<Vec<Vec<String>>>,
    /// Inputs embedded successfully by `POST /v1/embeddings`.
    inputs: AtomicUsize,
    files: Mutex<HashMap<String, Vec<u8>>>,
    batches: Mutex<Vec<FakeBatch>>,
    /// While set, every request is refused with 503 before it reaches a handler.
    unreachable: AtomicBool,
    refused: AtomicUsize,
    files_uploaded: AtomicUsize,
    status_checks: AtomicUsize,
    cancels: AtomicUsize,
    downloads: AtomicUsize,
}

type Shared = State<Arc<Service>>;

/// The running service; it stops with the test's runtime.
pub struct FakeOpenAi {
    pub base_url: String,
    service: Arc<Service>,
}

impl FakeOpenAi {
    /// Embedding request `n` (from 0) is answered `reply(n)`.
    pub async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> FakeOpenAi {
        FakeOpenAi::serve(Box::new(reply), Box::new(|_| BatchScript::completes_after(0))).await
    }

    /// Batch `n` (from 0) follows `script(n)`; every embedding request is answered.
    pub async fn with_batches(script: impl Fn(usize) -> BatchScript + Send + Sync + 'static) -> FakeOpenAi {
        FakeOpenAi::serve(Box::new(|_| Reply::Embed), Box::new(script)).await
    }

    async fn serve(
        reply: Box<dyn Fn(usize) -> Reply + Send + Sync>,
        batch_script: Box<dyn Fn(usize) -> BatchScript + Send + Sync>,
    ) -> FakeOpenAi {
        let service = Arc::new(Service {
            reply,
            batch_script,
            received: Mutex::default(),
            inputs: AtomicUsize::default(),
            files: Mutex::default(),
            batches: Mutex::default(),
            unreachable: AtomicBool::default(),
            refused: AtomicUsize::default(),
            files_uploaded: AtomicUsize::default(),
            status_checks: AtomicUsize::default(),
            cancels: AtomicUsize::default(),
            downloads: AtomicUsize::default(),
        });
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/files", post(upload_file))
            .route("/v1/files/{id}/content", get(download_file))
            .route("/v1/batches", post(create_batch))
            .route("/v1/batches/{id}", get(check_batch))
            .route("/v1/batches/{id}/cancel", post(cancel_batch))
            .fallback(|request: Request| async move {
                error(404, format!("no route {} {}", request.method(), request.uri()))
            })
            .layer(middleware::from_fn_with_state(service.clone(), refuse_while_unreachable))
            // A book's batch file can outgrow axum's 2 MB default.
            .layer(DefaultBodyLimit::disable())
            .with_state(service.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeOpenAi { base_url, service }
    }

    /// The inputs of every embedding request received so far, in the order the requests were
    /// numbered, answered or not.
    pub fn received(&self) -> Vec<Vec<String>> {
        self.service.received.lock().unwrap().clone()
    }

    /// Embedding requests received so far, answered or not.
    pub fn requests(&self) -> usize {
        self.service.received.lock().unwrap().len()
    }

    /// Inputs embedded successfully so far.
    pub fn inputs(&self) -> usize {
        self.service.inputs.load(Ordering::SeqCst)
    }

    /// While set, every request is answered 503 (the service is unreachable).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.service.unreachable.store(unreachable, Ordering::SeqCst);
    }

    /// Requests answered 503 while unreachable.
    pub fn refused(&self) -> usize {
        self.service.refused.load(Ordering::SeqCst)
    }

    pub fn files_uploaded(&self) -> usize {
        self.service.files_uploaded.load(Ordering::SeqCst)
    }

    pub fn batches(&self) -> Vec<FakeBatch> {
        self.service.batches.lock().unwrap().clone()
    }

    pub fn batches_created(&self) -> usize {
        self.service.batches.lock().unwrap().len()
    }

    /// Inputs of each batch created, in order.
    pub fn inputs_per_batch(&self) -> Vec<usize> {
        self.service.batches.lock().unwrap().iter().map(|b| b.custom_ids.len()).collect()
    }

    pub fn status_checks(&self) -> usize {
        self.service.status_checks.load(Ordering::SeqCst)
    }

    /// A function reading the status-check count, for tasks that outlive a borrow of the fake.
    pub fn status_checks_handle(&self) -> impl Fn() -> usize + Send + 'static {
        let service = self.service.clone();
        move || service.status_checks.load(Ordering::SeqCst)
    }

    pub fn cancels(&self) -> usize {
        self.service.cancels.load(Ordering::SeqCst)
    }

    pub fn downloads(&self) -> usize {
        self.service.downloads.load(Ordering::SeqCst)
    }
}

async fn refuse_while_unreachable(State(service): Shared, request: Request, next: Next) -> Response {
    if service.unreachable.load(Ordering::SeqCst) {
        service.refused.fetch_add(1, Ordering::SeqCst);
        return error(503, "service unavailable");
    }
    next.run(request).await
}

async fn embeddings(State(service): Shared, Json(request): Json<Value>) -> Response {
    let texts = texts(&request);
    // Numbered and recorded under one lock, so `received()[n]` is request `n`.
    let number = {
        let mut received = service.received.lock().unwrap();
        received.push(texts.clone());
        received.len() - 1
    };
    match (service.reply)(number) {
        Reply::Embed => {}
        Reply::EmbedAfter(delay) => tokio::time::sleep(delay).await,
        Reply::Stall => std::future::pending().await,
        Reply::RateLimited(seconds) => {
            let body = json!({"error": {"message": "Rate limit reached", "type": "rate_limit"}});
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", seconds.to_string())], Json(body)).into_response();
        }
        Reply::Error(status, message) => return error(status, message),
    }
    service.inputs.fetch_add(texts.len(), Ordering::SeqCst);
    Json(embed(&request)).into_response()
}

async fn upload_file(State(service): Shared, mut form: Multipart) -> Response {
    let mut content = Vec::new();
    while let Some(field) = form.next_field().await.unwrap() {
        if field.name() == Some("file") {
            content = field.bytes().await.unwrap().to_vec();
        }
    }
    let id = format!("file-in-{}", service.files_uploaded.fetch_add(1, Ordering::SeqCst));
    let file = json!({"id": id, "object": "file", "bytes": content.len(), "created_at": CREATED_AT,
                      "filename": "quire-embeddings.jsonl", "purpose": "batch"});
    service.files.lock().unwrap().insert(id, content);
    Json(file).into_response()
}

async fn download_file(State(service): Shared, Path(id): Path<String>) -> Response {
    service.downloads.fetch_add(1, Ordering::SeqCst);
    match service.files.lock().unwrap().get(&id) {
        Some(content) => content.clone().into_response(),
        None => error(404, "no such file"),
    }
}

async fn create_batch(State(service): Shared, Json(request): Json<Value>) -> Response {
    let input_file_id = request["input_file_id"].as_str().unwrap_or_default().to_owned();
    let Some(content) = service.files.lock().unwrap().get(&input_file_id).cloned() else {
        return error(404, "no such file");
    };
    let requests: Vec<Value> = content.split(|&b| b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect();
    let mut batches = service.batches.lock().unwrap();
    let number = batches.len();
    let batch = FakeBatch {
        id: format!("batch_{number}"),
        input_file_id,
        custom_ids: requests.iter().map(|r| r["custom_id"].as_str().unwrap_or_default().to_owned()).collect(),
        status: "validating".into(),
        output_file_id: None,
        requests,
        script: (service.batch_script)(number),
        polls: 0,
    };
    let body = batch.json();
    batches.push(batch);
    Json(body).into_response()
}

async fn check_batch(State(service): Shared, Path(id): Path<String>) -> Response {
    service.status_checks.fetch_add(1, Ordering::SeqCst);
    let mut batches = service.batches.lock().unwrap();
    let Some(batch) = batches.iter_mut().find(|b| b.id == id) else { return error(404, "no such batch") };
    batch.advance();
    if batch.output_file_id.is_none()
        && let Some(output) = batch.output()
    {
        let file_id = format!("file-out-{id}");
        service.files.lock().unwrap().insert(file_id.clone(), output);
        batch.output_file_id = Some(file_id);
    }
    Json(batch.json()).into_response()
}

async fn cancel_batch(State(service): Shared, Path(id): Path<String>) -> Response {
    service.cancels.fetch_add(1, Ordering::SeqCst);
    let mut batches = service.batches.lock().unwrap();
    let Some(batch) = batches.iter_mut().find(|b| b.id == id) else { return error(404, "no such batch") };
    if !batch.is_finished() {
        batch.status = "cancelling".into();
    }
    Json(batch.json()).into_response()
}

/// The inputs of an embeddings request: `input` is one string or an array of them.
fn texts(request: &Value) -> Vec<String> {
    match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
        _ => Vec::new(),
    }
}

/// The answer to an embeddings request, with vectors of the local embedder.
fn embed(request: &Value) -> Value {
    let local = LocalEmbedder::new(request["dimensions"].as_u64().unwrap_or(64) as usize);
    let data: Vec<Value> = texts(request)
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": local.embed_text(text)}))
        .collect();
    json!({"object": "list", "data": data, "model": request["model"]})
}

/// This status with an OpenAI-style error body.
fn error(status: u16, message: impl ToString) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (status, Json(json!({"error": {"message": message.to_string()}}))).into_response()
}

/// Flags that point a worker at an OpenAI-compatible `base_url` (model `test-embed`, 64
/// dimensions), `batch` inputs per request.
pub fn openai(base_url: &str, batch: usize) -> Vec<String> {
    let flags = ["--embedder", "openai", "--openai-base-url", base_url, "--embedding-model", "test-embed"];
    let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    args.extend(["--embedding-dimensions", "64", "--embedding-batch-size"].map(String::from));
    args.push(batch.to_string());
    args
}

/// `args` as the `&str`s a worker's command line takes.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
