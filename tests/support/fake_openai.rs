//! A scripted OpenAI-compatible embeddings server on 127.0.0.1, counting every request.
//!
//! Each request is answered by a script: a function of the request's number (from 0) that
//! returns a reply. Successful replies embed with the local embedder, so vectors are real.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use embedder::LocalEmbedder;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Embed the inputs.
    Embed,
    /// 429 with `Retry-After: seconds`.
    RateLimited(u64),
    /// This status with an OpenAI-style error message.
    Error(u16, &'static str),
}

pub struct FakeOpenAi {
    pub base_url: String,
    requests: Arc<AtomicUsize>,
    inputs: Arc<AtomicUsize>,
}

impl FakeOpenAi {
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let inputs = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (counter, input_counter) = (requests.clone(), inputs.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, input_counter, script) = (counter.clone(), input_counter.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &counter, &input_counter, &*script).await;
                });
            }
        });
        FakeOpenAi { base_url, requests, inputs }
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
    let number = counter.fetch_add(1, Ordering::SeqCst);
    let (status, extra, payload) = match script(number) {
        Reply::Embed => {
            let texts: Vec<String> = match &body["input"] {
                Value::String(text) => vec![text.clone()],
                Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
                _ => Vec::new(),
            };
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
