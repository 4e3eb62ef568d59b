//! The test harness of the API's and the dashboard's tests: the router asked directly (no
//! socket: `oneshot`), over a fresh SQLite store whose jobs and documents the tests put in the
//! states they need through the store itself, as a worker would.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use checkpoint_store::{
    EnqueueOptions, Failure, JobId, JobKind, LeaseRequest, NewDocument, OpenOptions, Store, StoreLocation,
};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::app::App;
use crate::commands::serve::{Guard, Limits, router};

pub(super) struct Api {
    router: axum::Router,
    pub(super) store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

pub(super) async fn api() -> Api {
    api_guarded(Guard::default()).await
}

pub(super) async fn api_guarded(guard: Guard) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = worker::DataDir::open(dir.path()).unwrap();
    let location = StoreLocation::SqliteFile(data_dir.database_path());
    let store = checkpoint_store::open(&location, OpenOptions::default()).await.unwrap();
    let limits = Limits {
        max_upload_bytes: 1 << 20,
        max_concurrent_uploads: 1,
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        upload_timeout: Duration::from_secs(30),
    };
    let embedder = Arc::new(embedder::LocalEmbedder::default());
    let router = router(App { store: store.clone(), data_dir }, embedder, limits, guard);
    Api { router, store, _dir: dir }
}

impl Api {
    /// The status and JSON body of one request.
    pub(super) async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, uri, &[], body).await
    }

    /// [`Api::call`] with these headers.
    pub(super) async fn call_with(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|body| ("application/json", body.to_string()));
        let (status, _, text) = self.call_raw(method, uri, headers, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The status, `Location` and body text of one request with these headers and, if given,
    /// this body of this content type.
    pub(super) async fn call_raw(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> (u16, Option<String>, String) {
        let (status, answer_headers, text) = self.call_with_headers(method, uri, headers, body).await;
        let location = answer_headers.get("location").map(|value| value.to_str().unwrap().to_owned());
        (status, location, text)
    }

    /// [`Api::call_raw`], answering the response's headers whole.
    pub(super) async fn call_with_headers(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> (u16, axum::http::HeaderMap, String) {
        self.send(method, uri, headers, body.map(|(content_type, body)| (content_type, body.into_bytes()))).await
    }

    /// [`Api::call_with_headers`] with a body of any bytes.
    pub(super) async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, axum::http::HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some((content_type, body)) => {
                request = request.header("content-type", content_type);
                Body::from(body)
            }
            None => Body::empty(),
        };
        let response = self.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub(super) async fn get(&self, uri: &str) -> (u16, Value) {
        self.call("GET", uri, None).await
    }

    /// A document named `file_name`, with its pending `process_document` job.
    pub(super) async fn document(&self, file_name: &str) -> (String, JobId) {
        let hash = worker::sha256_hex(file_name.as_bytes());
        let new = NewDocument { content_hash: hash, file_name: file_name.to_owned(), byte_size: 1 };
        let (document, _) = self.store.create_document(new).await.unwrap();
        let options = EnqueueOptions { max_attempts: Some(1), ..EnqueueOptions::default() };
        let payload = worker::JobPayload::process_document(&document.id);
        let job = payload.enqueue(self.store.as_ref(), options).await.unwrap().job;
        (document.id, job.id)
    }

    /// A document whose chunks are `texts`, embedded by the local embedder (as a worker
    /// would store them, under the lease of its job).
    pub(super) async fn embedded_document(&self, file_name: &str, texts: &[&str]) -> String {
        use embedder::Embedder as _;
        let (document, _) = self.document(file_name).await;
        let request = LeaseRequest {
            owner: "test",
            max_jobs: 1,
            ttl: Duration::from_secs(60),
            kinds: &[JobKind::ProcessDocument],
        };
        let lease = self.store.lease(request).await.unwrap().remove(0).lease().unwrap();
        let chunks: Vec<checkpoint_store::StoredChunk> = texts
            .iter()
            .enumerate()
            .map(|(index, text)| checkpoint_store::StoredChunk {
                id: format!("{document}-{index}"),
                document_id: document.clone(),
                index: index as u32,
                heading_path: Vec::new(),
                text: (*text).to_owned(),
                start: 0,
                end: text.chars().count() as u64,
                content_hash: worker::sha256_hex(text.as_bytes()),
            })
            .collect();
        self.store.replace_chunks(lease, &document, &chunks).await.unwrap();
        let embedder = embedder::LocalEmbedder::default();
        let texts: Vec<String> = texts.iter().map(|text| (*text).to_owned()).collect();
        let vectors = embedder.embed(&texts).await.unwrap();
        let pairs: Vec<(String, Vec<f32>)> =
            chunks.iter().map(|chunk| chunk.content_hash.clone()).zip(vectors).collect();
        self.store.store_embeddings(lease, &embedder.model(), embedder.dimensions(), &pairs).await.unwrap();
        self.store.mark_embedded(lease, &document, checkpoint_store::EmbeddingUsage::default()).await.unwrap();
        document
    }

    /// Leases the oldest pending job and fails it for good.
    pub(super) async fn dead_letter_next(&self) -> JobId {
        let request = LeaseRequest {
            owner: "test",
            max_jobs: 1,
            ttl: Duration::from_secs(60),
            kinds: &[JobKind::ProcessDocument],
        };
        let job = self.store.lease(request).await.unwrap().remove(0);
        self.store.fail(job.lease().unwrap(), "not an EPUB", Failure::Permanent).await.unwrap();
        job.id
    }
}
