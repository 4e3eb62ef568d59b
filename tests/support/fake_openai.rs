//! A scripted OpenAI-compatible embeddings server on 127.0.0.1, counting every request.
//!
//! Each request is answered by a script: a function of the request's number (from 0) that
//! returns a reply. Successful replies embed with the local embedder, so vectors are real. The
//! inputs of every request are recorded as they arrive, whatever the reply, so a test counts
//! what was asked of the service even when the asking worker died before it saved anything.
//!
//! Longer than 500 lines because it serves the whole surface the embedder speaks to (embeddings,
//! file uploads and downloads, batches and their end states) with one request parser and one
//! script type, so that every retry test scripts the same server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use embedder::LocalEmbedder;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Embed the inputs.
    Embed,
    /// Embed the inputs after this long (a slow service: a request stays in flight a while).
    EmbedAfter(std::time::Duration),
    /// 429 with `Retry-After: seconds`.
    RateLimited(u64),
    /// This status with an OpenAI-style error message.
    Error(u16, &'static str),
    /// No answer: the request is held until its client goes away (a worker killed mid-request).
    Stall,
}

pub struct FakeOpenAi {
    pub base_url: String,
    requests: Arc<AtomicUsize>,
    inputs: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Vec<String>>>>,
}

impl FakeOpenAi {
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let inputs = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (counter, input_counter, log) = (requests.clone(), inputs.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, input_counter, log, script) =
                    (counter.clone(), input_counter.clone(), log.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &counter, &input_counter, &log, &*script).await;
                });
            }
        });
        FakeOpenAi { base_url, requests, inputs, received }
    }

    /// The inputs of every request received so far, in the order the requests were numbered,
    /// answered or not.
    pub fn received(&self) -> Vec<Vec<String>> {
        self.received.lock().unwrap().clone()
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Inputs embedded successfully so far.
    pub fn inputs(&self) -> usize {
        self.inputs.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    counter: &AtomicUsize,
    input_counter: &AtomicUsize,
    received: &Mutex<Vec<Vec<String>>>,
    script: &(dyn Fn(usize) -> Reply + Send + Sync),
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body: Value = serde_json::from_slice(&buffer[head_end..]).unwrap_or(Value::Null);
    let texts: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
        _ => Vec::new(),
    };
    // Numbered and recorded under one lock, so `received()[n]` is request `n`.
    let number = {
        let mut received = received.lock().unwrap();
        received.push(texts.clone());
        counter.fetch_add(1, Ordering::SeqCst)
    };
    let reply = match script(number) {
        Reply::EmbedAfter(delay) => {
            tokio::time::sleep(delay).await;
            Reply::Embed
        }
        reply => reply,
    };
    let (status, extra, payload) = match reply {
        Reply::EmbedAfter(_) => unreachable!("replaced by Embed above"),
        Reply::Stall => {
            // Read until the client closes the connection; never answer.
            while stream.read(&mut chunk).await? > 0 {}
            return Ok(());
        }
        Reply::Embed => {
            input_counter.fetch_add(texts.len(), Ordering::SeqCst);
            let dimensions = body["dimensions"].as_u64().unwrap_or(64) as usize;
            let local = LocalEmbedder::new(dimensions);
            let data: Vec<Value> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": local.embed_text(t)}))
                .collect();
            (200, String::new(), json!({"object": "list", "data": data, "model": body["model"]}).to_string())
        }
        Reply::RateLimited(seconds) => (
            429,
            format!("retry-after: {seconds}\r\n"),
            json!({"error": {"message": "Rate limit reached", "type": "rate_limit"}}).to_string(),
        ),
        Reply::Error(status, message) => (status, String::new(), json!({"error": {"message": message}}).to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
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

// ---------------------------------------------------------------------------------------------
// The Batch API: files, batches, scripted states, counters.
// ---------------------------------------------------------------------------------------------

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

/// How one batch of [`FakeBatchOpenAi`] goes: the states its status checks return in order (the
/// last one repeats), and, for a batch that ends `expired` or `cancelled`, how many of its
/// requests (from the first) have results in a partial output file.
#[derive(Debug, Clone)]
pub struct BatchScript {
    pub states: Vec<&'static str>,
    pub partial: usize,
}

impl BatchScript {
    /// `in_progress` for `polls` checks, then `completed`.
    pub fn completes_after(polls: usize) -> BatchScript {
        let mut states = vec!["in_progress"; polls];
        states.push("completed");
        BatchScript { states, partial: 0 }
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

/// One batch as the fake holds it.
#[derive(Debug, Clone)]
pub struct FakeBatch {
    pub id: String,
    pub input_file_id: String,
    /// The requests' custom ids, in file order.
    pub custom_ids: Vec<String>,
    pub status: String,
    pub output_file_id: Option<String>,
    pub cancel_requests: usize,
    requests: Vec<Value>,
    script: BatchScript,
    polls: usize,
}

#[derive(Default)]
struct BatchServer {
    files: Mutex<HashMap<String, Vec<u8>>>,
    batches: Mutex<Vec<FakeBatch>>,
    unreachable: AtomicBool,
    files_uploaded: AtomicUsize,
    status_checks: AtomicUsize,
    cancels: AtomicUsize,
    downloads: AtomicUsize,
    embedding_requests: AtomicUsize,
    refused: AtomicUsize,
}

/// A scripted OpenAI-compatible server speaking the Batch API (`POST /v1/files` multipart,
/// `POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`,
/// `GET /v1/files/{id}/content`) and `POST /v1/embeddings`, counting every submission. Each
/// status check advances a batch one step along its [`BatchScript`]; no time passes.
pub struct FakeBatchOpenAi {
    pub base_url: String,
    server: Arc<BatchServer>,
}

type Script = Arc<dyn Fn(usize) -> BatchScript + Send + Sync>;

impl FakeBatchOpenAi {
    /// Batch number `n` (from 0) follows `script(n)`.
    pub async fn start(script: impl Fn(usize) -> BatchScript + Send + Sync + 'static) -> FakeBatchOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let server = Arc::new(BatchServer::default());
        let script: Script = Arc::new(script);
        let shared = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (server, script) = (shared.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve_batch_api(stream, &server, &script).await;
                });
            }
        });
        FakeBatchOpenAi { base_url, server }
    }

    /// While set, every request is answered 503 (the service is unreachable).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.server.unreachable.store(unreachable, Ordering::SeqCst);
    }

    pub fn batches_created(&self) -> usize {
        self.server.batches.lock().unwrap().len()
    }

    pub fn files_uploaded(&self) -> usize {
        self.server.files_uploaded.load(Ordering::SeqCst)
    }

    /// Inputs of each batch created, in order.
    pub fn inputs_per_batch(&self) -> Vec<usize> {
        self.server.batches.lock().unwrap().iter().map(|b| b.custom_ids.len()).collect()
    }

    pub fn batches(&self) -> Vec<FakeBatch> {
        self.server.batches.lock().unwrap().clone()
    }

    pub fn status_checks(&self) -> usize {
        self.server.status_checks.load(Ordering::SeqCst)
    }

    /// A function reading the status-check count, for tasks that outlive a borrow of the fake.
    pub fn status_checks_handle(&self) -> impl Fn() -> usize + Send + 'static {
        let server = self.server.clone();
        move || server.status_checks.load(Ordering::SeqCst)
    }

    pub fn cancels(&self) -> usize {
        self.server.cancels.load(Ordering::SeqCst)
    }

    pub fn downloads(&self) -> usize {
        self.server.downloads.load(Ordering::SeqCst)
    }

    /// Direct `POST /v1/embeddings` requests.
    pub fn embedding_requests(&self) -> usize {
        self.server.embedding_requests.load(Ordering::SeqCst)
    }

    /// Requests answered 503 while unreachable.
    pub fn refused(&self) -> usize {
        self.server.refused.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP request: method, path, headers (lower-cased) and body (content-length or
/// chunked).
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<(String, String, String, Vec<u8>)>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers = head.to_lowercase();
    let length = headers
        .lines()
        .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
    let chunked = headers.lines().any(|line| line.starts_with("transfer-encoding:") && line.contains("chunked"));
    let mut body = buffer[head_end + 4..].to_vec();
    if chunked {
        while !body.ends_with(b"0\r\n\r\n") {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..read]);
        }
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            decoded.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
            rest = &rest[(start + size + 2).min(rest.len())..];
        }
        body = decoded;
    } else {
        let length = length.unwrap_or(0);
        while body.len() < length {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..read]);
        }
    }
    Ok(Some((method, path, headers, body)))
}

fn batch_json(batch: &FakeBatch) -> Value {
    let errors = (batch.status == "failed")
        .then(|| json!({"object": "list", "data": [{"code": "invalid_request", "message": "scripted failure"}]}));
    json!({
        "id": batch.id,
        "object": "batch",
        "endpoint": "/v1/embeddings",
        "input_file_id": batch.input_file_id,
        "completion_window": "24h",
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": null,
        "created_at": 1_767_225_600,
        "errors": errors,
        "request_counts": {"total": batch.custom_ids.len(), "completed": 0, "failed": 0},
    })
}

/// The output file of `batch`: results for its first `count` requests.
fn output_file(batch: &FakeBatch, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, request) in batch.requests.iter().take(count).enumerate() {
        let body = &request["body"];
        let dimensions = body["dimensions"].as_u64().unwrap_or(64) as usize;
        let local = LocalEmbedder::new(dimensions);
        let data: Vec<Value> = body["input"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(j, t)| json!({"object": "embedding", "index": j, "embedding": local.embed_text(t.as_str().unwrap_or_default())}))
            .collect();
        let line = json!({
            "id": format!("batch_req_{i}"),
            "custom_id": request["custom_id"],
            "response": {"status_code": 200, "request_id": format!("req_{i}"), "body": {"object": "list", "data": data, "model": body["model"]}},
            "error": null,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

async fn serve_batch_api(mut stream: TcpStream, server: &BatchServer, script: &Script) -> std::io::Result<()> {
    let Some((method, path, _headers, body)) = read_request(&mut stream).await? else { return Ok(()) };
    let path = path.split('?').next().unwrap_or_default().trim_start_matches("/v1").to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, payload): (u16, Vec<u8>) = if server.unreachable.load(Ordering::SeqCst) {
        server.refused.fetch_add(1, Ordering::SeqCst);
        (503, json!({"error": {"message": "service unavailable"}}).to_string().into_bytes())
    } else {
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["files"]) => {
                // The JSONL part of the multipart body: every line that is a request object.
                let text = String::from_utf8_lossy(&body);
                let lines: Vec<&str> = text
                    .split('\n')
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("custom_id").is_some()))
                    .collect();
                let number = server.files_uploaded.fetch_add(1, Ordering::SeqCst);
                let id = format!("file-in-{number}");
                let mut content = lines.join("\n").into_bytes();
                content.push(b'\n');
                server.files.lock().unwrap().insert(id.clone(), content);
                let file = json!({"id": id, "object": "file", "bytes": body.len(), "created_at": 1_767_225_600, "filename": "quire-embeddings.jsonl", "purpose": "batch"});
                (200, file.to_string().into_bytes())
            }
            ("POST", ["batches"]) => {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let input_file_id = request["input_file_id"].as_str().unwrap_or_default().to_owned();
                let content = server.files.lock().unwrap().get(&input_file_id).cloned();
                match content {
                    None => (404, json!({"error": {"message": "no such file"}}).to_string().into_bytes()),
                    Some(content) => {
                        let requests: Vec<Value> = String::from_utf8_lossy(&content)
                            .lines()
                            .filter_map(|l| serde_json::from_str(l).ok())
                            .collect();
                        let mut batches = server.batches.lock().unwrap();
                        let number = batches.len();
                        let batch = FakeBatch {
                            id: format!("batch_{number}"),
                            input_file_id,
                            custom_ids: requests
                                .iter()
                                .map(|r| r["custom_id"].as_str().unwrap_or_default().to_owned())
                                .collect(),
                            status: "validating".into(),
                            output_file_id: None,
                            cancel_requests: 0,
                            requests,
                            script: script(number),
                            polls: 0,
                        };
                        let payload = batch_json(&batch).to_string().into_bytes();
                        batches.push(batch);
                        (200, payload)
                    }
                }
            }
            ("GET", ["batches", id]) => {
                server.status_checks.fetch_add(1, Ordering::SeqCst);
                let mut batches = server.batches.lock().unwrap();
                match batches.iter_mut().find(|b| b.id == *id) {
                    None => (404, json!({"error": {"message": "no such batch"}}).to_string().into_bytes()),
                    Some(batch) => {
                        if batch.status == "cancelling" {
                            batch.status = "cancelled".into();
                        } else if !matches!(batch.status.as_str(), "completed" | "failed" | "expired" | "cancelled") {
                            let step = batch.polls.min(batch.script.states.len() - 1);
                            batch.polls += 1;
                            batch.status = batch.script.states[step].to_owned();
                        }
                        let results = match batch.status.as_str() {
                            "completed" => batch.requests.len(),
                            "expired" | "cancelled" => batch.script.partial,
                            _ => 0,
                        };
                        if results > 0 && batch.output_file_id.is_none() {
                            let id = format!("file-out-{}", batch.id);
                            server.files.lock().unwrap().insert(id.clone(), output_file(batch, results));
                            batch.output_file_id = Some(id);
                        }
                        (200, batch_json(batch).to_string().into_bytes())
                    }
                }
            }
            ("POST", ["batches", id, "cancel"]) => {
                server.cancels.fetch_add(1, Ordering::SeqCst);
                let mut batches = server.batches.lock().unwrap();
                match batches.iter_mut().find(|b| b.id == *id) {
                    None => (404, json!({"error": {"message": "no such batch"}}).to_string().into_bytes()),
                    Some(batch) => {
                        batch.cancel_requests += 1;
                        if !matches!(batch.status.as_str(), "completed" | "failed" | "expired" | "cancelled") {
                            batch.status = "cancelling".into();
                        }
                        (200, batch_json(batch).to_string().into_bytes())
                    }
                }
            }
            ("GET", ["files", id, "content"]) => {
                server.downloads.fetch_add(1, Ordering::SeqCst);
                match server.files.lock().unwrap().get(*id) {
                    None => (404, json!({"error": {"message": "no such file"}}).to_string().into_bytes()),
                    Some(content) => (200, content.clone()),
                }
            }
            ("POST", ["embeddings"]) => {
                server.embedding_requests.fetch_add(1, Ordering::SeqCst);
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let texts: Vec<String> = match &request["input"] {
                    Value::String(text) => vec![text.clone()],
                    Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
                    _ => Vec::new(),
                };
                let local = LocalEmbedder::new(request["dimensions"].as_u64().unwrap_or(64) as usize);
                let data: Vec<Value> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": local.embed_text(t)}))
                    .collect();
                (200, json!({"object": "list", "data": data, "model": request["model"]}).to_string().into_bytes())
            }
            _ => (404, json!({"error": {"message": format!("no route {method} {path}")}}).to_string().into_bytes()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&payload).await?;
    stream.shutdown().await
}
