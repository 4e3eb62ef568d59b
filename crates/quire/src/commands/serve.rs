//! `quire serve`: the HTTP API.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /v1/documents` | the EPUB as the raw body (`Content-Type: application/epub+zip`, `application/zip` or `application/octet-stream`; optional `X-File-Name`): 201 `{document_id, job_id, deduplicated}`, or 200 when the same bytes were uploaded before; 413 over `--max-upload-bytes`; 415 for another content type; 422 for a body that is not a ZIP |
//! | `GET /v1/documents/{id}` | the document as `status --json` shows it, with its jobs; 404 |
//! | `GET /v1/jobs/{id}` | the job; 404 |
//! | `GET /metrics` | Prometheus text: queue depth, stale jobs, processing ages |
//! | `GET /healthz` | 200 when the database answers, 503 otherwise |
//!
//! Every error is JSON: `{"error": "…"}`. Uploads are queued for `quire worker`; this process
//! runs no job and no reaper. It listens on loopback unless told otherwise, and prints
//! `listening on ADDR` on stdout once it accepts connections.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use checkpoint_store::{JobId, StoreError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::cli::GlobalOptions;
use crate::commands::jobs::JobView;
use crate::commands::status;
use crate::metrics::MetricsSource;

/// What the handlers share.
struct ApiState {
    app: App,
    max_upload_bytes: usize,
}

/// An error answer: a status and `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        tracing::error!(%error, "store error");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the database failed: {error}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        tracing::error!(error = %format!("{error:#}"), "internal error");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"))
    }
}

/// The API's routes over an opened app.
fn router(app: App, max_upload_bytes: usize) -> Router {
    let metrics =
        MetricsSource { store: app.store.clone(), lease_ttl: worker::WorkerConfig::DEFAULT_LEASE_TTL, worker: None };
    let state = Arc::new(ApiState { app, max_upload_bytes });
    Router::new()
        .route("/v1/documents", post(upload))
        .route("/v1/documents/{id}", get(document))
        .route("/v1/jobs/{id}", get(job))
        // The upload handler enforces its own limit, to answer it in JSON.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
        .merge(metrics.router())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint; see `quire serve --help`".into()) })
}

async fn upload(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let limit = state.max_upload_bytes;
    let too_large =
        || ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("the upload is larger than the limit of {limit} bytes"));
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !matches!(media_type.as_str(), "" | "application/epub+zip" | "application/zip" | "application/octet-stream") {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {media_type:?}: send the EPUB file itself as the body, with Content-Type: application/epub+zip"
            ),
        ));
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let over = std::error::Error::source(&error).is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            return Err(if over {
                too_large()
            } else {
                ApiError(StatusCode::BAD_REQUEST, format!("cannot read the upload: {error}"))
            });
        }
    };
    if bytes.is_empty() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the upload is empty: send the EPUB file as the body".into(),
        ));
    }
    // An EPUB is a ZIP archive; anything else cannot be a book. Deeper checks are the worker's.
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the upload is not an EPUB: it is not a ZIP archive".into(),
        ));
    }
    let file_name = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .map(|name| name.rsplit(['/', '\\']).next().unwrap_or(name).trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "upload.epub".to_owned());
    let app = &state.app;
    let submission = worker::submit_bytes(app.store.as_ref(), &app.data_dir, &file_name, &bytes)
        .await
        .map_err(anyhow::Error::new)?;
    tracing::info!(document_id = %submission.document_id, job_id = ?submission.job_id, deduplicated = submission.deduplicated, bytes = bytes.len(), "upload accepted");
    let status = if submission.deduplicated { StatusCode::OK } else { StatusCode::CREATED };
    let location = format!("/v1/documents/{}", submission.document_id);
    let body = json!({ "document_id": submission.document_id, "job_id": submission.job_id, "deduplicated": submission.deduplicated });
    Ok((status, [(header::LOCATION, location)], axum::Json(body)).into_response())
}

async fn document(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.app.store.document(&id).await?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no document {id:?}")));
    }
    let report = status::report(&state.app, Some(&id)).await?;
    let document = report
        .documents
        .into_iter()
        .next()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no document {id:?}")))?;
    let mut body = serde_json::to_value(&document).map_err(anyhow::Error::from)?;
    body["jobs"] = serde_json::to_value(&report.jobs).map_err(anyhow::Error::from)?;
    Ok(axum::Json(body).into_response())
}

async fn job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no job {id:?}"));
    let Ok(job_id) = id.parse::<JobId>() else { return Err(not_found()) };
    let job = state.app.store.job(job_id).await?.ok_or_else(not_found)?;
    Ok(axum::Json(JobView::from(&job)).into_response())
}

/// Serves until `shutdown`.
pub async fn run(
    global: &GlobalOptions,
    addr: SocketAddr,
    max_upload_bytes: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "listening beyond loopback: the API has no authentication; put it behind a proxy that has");
    }
    tracing::info!(%local, max_upload_bytes, "serving the HTTP API");
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    crate::metrics::serve(listener, router(app, max_upload_bytes), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
