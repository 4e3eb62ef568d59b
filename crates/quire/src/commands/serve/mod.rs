//! `quire serve`: the HTTP API.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /v1/documents` | the EPUB as the raw body (`Content-Type: application/epub+zip`, `application/zip` or `application/octet-stream`; optional `X-File-Name`), or as the field `file` of a `multipart/form-data` body (its file name is used): 201 `{document_id, job_id, deduplicated}`, or 200 when the same bytes were uploaded before; 408 when the body stalls or takes too long; 413 over `--max-upload-bytes`; 415 without a Content-Type or with another one; 422 for a body that is not a ZIP; 503 with `Retry-After` while `--max-concurrent-uploads` uploads are being received |
//! | `GET /v1/documents/{id}` | the document as `status --json` shows it, with its jobs; 404 |
//! | `GET /v1/jobs/{id}` | the job, with `attempts`: every attempt that has ended, oldest first (number, worker, start, end, the stage reached, outcome, error); 404 |
//! | `POST /v1/jobs/{id}/cancel` | cancels the job (`quire jobs cancel`): 200 `{outcome, job}`, `outcome` being `cancelled` (it was pending) or `requested` (its worker stops it at its next stage boundary); 404; 409 for a job that has finished |
//! | `GET /` and the other pages | the dashboard: see `dashboard.rs` |
//! | lists and other actions | the jobs, documents, chunks, connections and the queue; retry, replay and the dead-letter queue: see `queue.rs` |
//! | `GET /v1/openapi.json` | the API's OpenAPI 3.1 description, generated from these handlers and their types: see `openapi.rs` |
//! | `GET /metrics` | Prometheus text: queue depth, stale jobs, processing ages |
//! | `GET /healthz` | 200 when the database answers, 503 otherwise |
//!
//! Reads (GET) are open. A request that changes something must come from the API's own origin (a
//! browser's cross-site request is 403, so a web page cannot drive a server on loopback) and,
//! when the server has a token (`QUIRE_API_TOKEN`), carry it as `Authorization: Bearer TOKEN`
//! (401 otherwise). `serve` refuses to listen beyond loopback without a token.
//!
//! Every error is JSON: `{"error": "…"}`. Every answer carries an `X-Request-Id`; an error of the
//! server's own (500, 503 from the database, 507 for a full disk) says only what kind of failure
//! it was and the request id, and the log holds its cause under that id: error chains name files
//! and databases, which are nobody's business outside.
//!
//! An upload streams to a temporary file in the data directory as it arrives, and is hashed on
//! the way, in batches of 256 KiB written on blocking threads: the async threads never hash,
//! write or sync, and an upload is never held in memory whole. It is stored (file and directory synced) and its job committed durably
//! before the answer is sent. A client cannot hold an upload slot forever: the body must keep
//! coming (`--body-timeout` of silence at most) and be complete within `--upload-timeout`. The
//! connection loop (`crate::http`) times out headers.
//!
//! It runs past 500 lines because its tests sit beside it: each limit above is pinned against a
//! real socket under paused time, which needs the router, not only the binary.
//!
//! Uploads queue for `quire worker`; this process runs no job and no reaper. It listens on
//! loopback unless told otherwise, and prints `listening on ADDR` on stdout once it accepts
//! connections.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::multipart::Field;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use checkpoint_store::{JobAttempt, JobId, StoreError};
use http_body_util::BodyExt as _;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use worker::operations::OperationError;
use worker::{StoredUpload, UploadWriter};

use crate::app::App;
use crate::cli::{GlobalOptions, ServeOptions};
use crate::commands::jobs::{CancelReport, JobRecord, JobView};
use crate::commands::status::{self, DocumentStatusView};
use crate::metrics::MetricsSource;

mod dashboard;
mod openapi;
mod queue;
#[cfg(test)]
mod test_api;

/// What a client may ask of the server, and how long it may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest upload, in bytes (the file, raw or as a form field).
    pub max_upload_bytes: u64,
    /// Uploads received at once.
    pub max_concurrent_uploads: u32,
    /// Longest wait for a request's headers.
    pub header_timeout: Duration,
    /// Longest silence while an upload's body is read.
    pub body_timeout: Duration,
    /// Longest an upload's whole body may take.
    pub upload_timeout: Duration,
}

impl From<&ServeOptions> for Limits {
    fn from(options: &ServeOptions) -> Limits {
        Limits {
            max_upload_bytes: options.max_upload_bytes,
            max_concurrent_uploads: options.max_concurrent_uploads,
            header_timeout: options.header_timeout.into(),
            body_timeout: options.body_timeout.into(),
            upload_timeout: options.upload_timeout.into(),
        }
    }
}

/// What a busy server asks a refused uploader to wait before trying again.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Room for a multipart body's boundaries, part headers and small fields, beyond the file.
const MULTIPART_ENVELOPE_BYTES: u64 = 64 * 1024;

/// What the handlers share.
struct ApiState {
    /// The store and the data directory.
    app: App,
    /// Who may change something (the dashboard's sign-in checks its token).
    guard: Arc<Guard>,
    /// Embeds search queries.
    embedder: Arc<dyn embedder::Embedder>,
    /// Sizes and timeouts.
    limits: Limits,
    /// One permit per upload being received; none left means 503.
    upload_slots: Arc<Semaphore>,
    /// `GET /v1/openapi.json`'s body, serialised once.
    openapi: Bytes,
}

/// An error answer.
enum ApiError {
    /// The request was refused: the status and a message for the client, shown as is.
    Refused(StatusCode, String),
    /// The server failed: the client learns the status and a request id, the log the cause.
    Internal(StatusCode, anyhow::Error),
}

impl ApiError {
    fn refused(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::Refused(status, message.into())
    }
}

/// Every error's body.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Error)]
struct ErrorBody {
    /// What went wrong, for people.
    error: String,
    /// On the server's own failures (500, the database's 503, 507) only: the id the server's
    /// log holds the cause under.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

/// The cause of an internal error, carried from the handler to [`with_request_id`], which logs
/// it under the request's id and answers without it.
#[derive(Clone)]
struct InternalError(Arc<anyhow::Error>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Refused(status, message) => {
                (status, axum::Json(ErrorBody { error: message, request_id: None })).into_response()
            }
            ApiError::Internal(status, error) => {
                let mut response = status.into_response();
                response.extensions_mut().insert(InternalError(Arc::new(error)));
                response
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::Internal(StatusCode::SERVICE_UNAVAILABLE, error.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        ApiError::Internal(StatusCode::INTERNAL_SERVER_ERROR, error)
    }
}

impl From<std::io::Error> for ApiError {
    /// A file error of the data directory: 507 when the disk (or a quota) is full, else 500.
    fn from(error: std::io::Error) -> ApiError {
        use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
        let status = if matches!(error.kind(), StorageFull | QuotaExceeded | FileTooLarge) {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::Internal(status, anyhow::Error::new(error).context("cannot store the upload"))
    }
}

/// A request id: unique within the process, and across restarts by its prefix (the start time).
fn next_request_id() -> String {
    static STARTED: LazyLock<i64> = LazyLock::new(crate::output::now_millis);
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}-{}", *STARTED, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Gives every request an id (in its log span and its answer's `X-Request-Id`), and turns an
/// internal error into a log line with the cause and an answer without it.
async fn with_request_id(request: Request, next: Next) -> Response {
    let id = next_request_id();
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Some(InternalError(error)) = response.extensions_mut().remove::<InternalError>() {
        let status = response.status();
        span.in_scope(|| tracing::error!(%status, error = %format!("{error:#}"), "request failed"));
        let what = match status {
            StatusCode::SERVICE_UNAVAILABLE => "the database is unavailable",
            StatusCode::INSUFFICIENT_STORAGE => "the server has no room to store the upload",
            _ => "internal error",
        };
        let message = format!("{what}; the server's log has the details under request id {id}");
        response = (status, axum::Json(ErrorBody { error: message, request_id: Some(id.clone()) })).into_response();
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Who may change something through the API.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The bearer token of every request that is not a read; none: no token is asked for (the
    /// server listens on loopback only).
    pub api_token: Option<String>,
}

impl Guard {
    /// The dashboard's session cookie value for this token: its digest, so the browser never
    /// holds the token itself (none without a token).
    fn session(&self) -> String {
        self.api_token
            .as_deref()
            .map(|token| worker::sha256_hex(format!("quire session {token}").as_bytes()))
            .unwrap_or_default()
    }
}

/// Reads (GET, HEAD) pass; anything else must come from the API's own origin (a browser's
/// cross-site request is refused, so a page elsewhere cannot drive a server on loopback) and,
/// when the server has a token, carry it.
async fn guard_mutations(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if !changes_something(request.method()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let from_elsewhere = match text(header::ORIGIN) {
        // A browser names the page's origin; it must be this server's.
        Some(origin) => {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            text(header::HOST) != Some(authority)
        }
        None => headers.get("sec-fetch-site").is_some_and(|site| site.as_bytes() == b"cross-site"),
    };
    if from_elsewhere {
        return ApiError::refused(StatusCode::FORBIDDEN, "a cross-site request may not change anything here")
            .into_response();
    }
    // Signing in is how a browser comes by the session; the form itself carries the token.
    let signing_in = request.uri().path() == dashboard::SIGN_IN;
    if let Some(token) = &guard.api_token
        && !signing_in
    {
        let given = text(header::AUTHORIZATION).and_then(|value| value.strip_prefix("Bearer "));
        // Compared as digests, so the time taken says nothing about the token.
        let by_header =
            given.is_some_and(|given| worker::sha256_hex(given.as_bytes()) == worker::sha256_hex(token.as_bytes()));
        let by_session = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|cookies| dashboard::session_in(cookies).is_some_and(|session| session == guard.session()));
        if !by_header && !by_session {
            let mut response = ApiError::refused(
                StatusCode::UNAUTHORIZED,
                "this request changes something: send the server's token as `Authorization: Bearer TOKEN`",
            )
            .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Whether a request of `method` is one the guard checks: anything but a read (GET, HEAD).
fn changes_something(method: &axum::http::Method) -> bool {
    method != axum::http::Method::GET && method != axum::http::Method::HEAD
}

/// Refuses a configuration under which anyone on the network could change the queue: listening
/// beyond loopback without a token, or with an empty one.
fn check_guard(addr: std::net::SocketAddr, guard: &Guard) -> anyhow::Result<()> {
    if guard.api_token.as_deref().is_some_and(|token| token.trim().is_empty()) {
        anyhow::bail!("the API token is empty; set QUIRE_API_TOKEN to a secret, or leave it unset on loopback");
    }
    if !addr.ip().is_loopback() && guard.api_token.is_none() {
        anyhow::bail!(
            "refusing to listen on {addr} without an API token: anyone who can reach it could change the queue; \
             set QUIRE_API_TOKEN (or --api-token), or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// The API's routes over an opened app.
fn router(app: App, embedder: Arc<dyn embedder::Embedder>, limits: Limits, guard: Guard) -> Router {
    let metrics =
        MetricsSource { store: app.store.clone(), lease_ttl: worker::WorkerConfig::DEFAULT_LEASE_TTL, worker: None };
    let upload_slots = Arc::new(Semaphore::new(limits.max_concurrent_uploads as usize));
    let guard = Arc::new(guard);
    let (api, description) = api_routes().split_for_parts();
    let openapi = Bytes::from(openapi::finish(description).to_json().expect("an OpenAPI document serialises"));
    let state = Arc::new(ApiState { app, guard: guard.clone(), embedder, limits, upload_slots, openapi });
    api.route("/", get(dashboard::overview))
        .route("/jobs", get(dashboard::jobs))
        .route("/jobs/{id}", get(dashboard::job))
        .route("/dead", get(dashboard::dead_letters))
        .route("/documents", get(dashboard::documents))
        .route("/documents/{id}", get(dashboard::document))
        .route("/search", get(dashboard::search))
        .route("/ui/jobs/{id}/retry", post(dashboard::retry))
        .route("/ui/jobs/{id}/cancel", post(dashboard::cancel))
        .route("/ui/jobs/{id}/replay", post(dashboard::replay))
        .route("/ui/dlq/retry", post(dashboard::retry_all))
        .route("/ui/dlq/purge", post(dashboard::purge))
        .route("/ui/documents", post(dashboard::upload))
        .route(dashboard::SIGN_IN, get(dashboard::sign_in_page).post(dashboard::sign_in))
        // The upload handler enforces its own limit, to answer it in JSON.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(guard, guard_mutations))
        .with_state(state)
        .merge(metrics.router())
        .fallback(|| async { ApiError::refused(StatusCode::NOT_FOUND, "no such endpoint; see `quire serve --help`") })
        .layer(middleware::from_fn(with_request_id))
}

/// The JSON API under `/v1`: each handler mounted at the path its `#[utoipa::path]` names, so the
/// routes and their description (`GET /v1/openapi.json`) are one list.
fn api_routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(upload, queue::list_documents))
        .routes(routes!(document))
        .routes(routes!(queue::document_chunks))
        .routes(routes!(queue::document_connections))
        .routes(routes!(queue::list_jobs))
        .routes(routes!(job))
        .routes(routes!(cancel_job))
        .routes(routes!(queue::retry_job))
        .routes(routes!(queue::replay_job))
        .routes(routes!(queue::purge_dead_letters))
        .routes(routes!(queue::retry_dead_letters))
        .routes(routes!(queue::queue))
        .routes(routes!(queue::search))
        .routes(routes!(openapi::openapi_json))
}

/// How the upload's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// The body is the file.
    Raw,
    /// The file is the form field `file`.
    Form,
}

/// The upload's encoding, from its Content-Type; a missing or other type is refused.
fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    const HOW: &str = "send the EPUB as the body with Content-Type: application/epub+zip, \
                       or as the multipart/form-data field `file` (curl -F file=@book.epub)";
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("no Content-Type: {HOW}")));
    };
    let value = value.to_str().unwrap_or("");
    let media_type = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media_type.as_str() {
        "application/epub+zip" | "application/zip" | "application/octet-stream" => Ok(Encoding::Raw),
        "multipart/form-data" => Ok(Encoding::Form),
        "" => Err(ApiError::refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("an empty Content-Type: {HOW}"))),
        other => Err(ApiError::refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {other:?}: {HOW}"),
        )),
    }
}

/// The last segment of a client's file name, or `upload.epub`.
fn file_name(given: Option<&str>) -> String {
    given
        .map(|name| name.rsplit(['/', '\\']).next().unwrap_or(name).trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "upload.epub".to_owned())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::refused(StatusCode::PAYLOAD_TOO_LARGE, format!("the upload is larger than the limit of {limit} bytes"))
}

/// `POST /v1/documents`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Uploaded {
    /// The document: the same bytes are always the same document.
    document_id: String,
    /// The job processing it (or that processed it).
    job_id: Option<i64>,
    /// True when the same bytes were uploaded before and no new work was queued.
    deduplicated: bool,
}

/// A multipart upload: the EPUB is the field `file` (its file name is kept); other fields are
/// read through and ignored.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form; the handler streams it field by field.
struct UploadForm {
    #[schema(inline)]
    file: openapi::EpubFile,
}

/// Uploads an EPUB: it is stored, and a job to process it queued, before the answer is sent.
#[utoipa::path(
    post,
    path = "/v1/documents",
    tag = "documents",
    params(("X-File-Name" = Option<String>, Header, description = "The raw upload's file name (a form's part names its own)")),
    request_body(
        description = "The EPUB, as the raw body or as the field `file` of a form",
        content(
            (inline(openapi::EpubFile) = "application/epub+zip"),
            (inline(openapi::EpubFile) = "application/zip"),
            (inline(openapi::EpubFile) = "application/octet-stream"),
            (inline(UploadForm) = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 201, description = "Stored, and its job queued", body = Uploaded,
            headers(("Location" = String, description = "The document's URL"))),
        (status = 200, description = "The same bytes were uploaded before: the document they are", body = Uploaded,
            headers(("Location" = String, description = "The document's URL"))),
        (status = 400, description = "The body or the form could not be read", body = ErrorBody),
        (status = 408, description = "The body stalled, or took longer than the upload timeout", body = ErrorBody),
        (status = 413, description = "Larger than `--max-upload-bytes`", body = ErrorBody),
        (status = 415, description = "No Content-Type, or one that is neither an EPUB's nor a form's", body = ErrorBody),
        (status = 422, description = "Empty, not a ZIP archive, or a form without the field `file`", body = ErrorBody),
        (status = 503, description = "`--max-concurrent-uploads` uploads are being received, or the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when busy"))),
        (status = 507, description = "The server has no room to store the upload", body = ErrorBody),
    ),
)]
async fn upload(State(state): State<Arc<ApiState>>, request: Request) -> Result<Response, ApiError> {
    let limits = &state.limits;
    let encoding = encoding(request.headers())?;
    let allowed = match encoding {
        Encoding::Raw => limits.max_upload_bytes,
        Encoding::Form => limits.max_upload_bytes + MULTIPART_ENVELOPE_BYTES,
    };
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > allowed) {
        return Err(too_large(limits.max_upload_bytes));
    }
    // Refused at once rather than queued: a waiting upload would hold its connection and its
    // client's bytes in buffers while it waits, and the client knows best when to come back.
    let Ok(_slot) = state.upload_slots.clone().try_acquire_owned() else {
        let message = format!(
            "the server is receiving {} uploads already; try again in {RETRY_AFTER_SECONDS} s",
            limits.max_concurrent_uploads
        );
        let mut response = ApiError::refused(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        return Ok(response);
    };
    let deadline = Instant::now() + limits.upload_timeout;
    let (file_name, stored) = match encoding {
        Encoding::Raw => {
            let name = file_name(request.headers().get("x-file-name").and_then(|v| v.to_str().ok()));
            let stored = receive(&state, Pieces::Body(request.into_body()), deadline).await?;
            (name, stored)
        }
        Encoding::Form => receive_form(&state, request, allowed, deadline).await?,
    };
    let submission = worker::submit_stored(state.app.store.as_ref(), &file_name, stored.clone()).await.map_err(
        |error| match error {
            worker::SubmitError::Store(error) => ApiError::from(error),
            worker::SubmitError::Io { source, .. } => ApiError::from(source),
        },
    )?;
    tracing::info!(document_id = %submission.document_id, job_id = ?submission.job_id, deduplicated = submission.deduplicated, bytes = stored.byte_size, "upload accepted");
    let status = if submission.deduplicated { StatusCode::OK } else { StatusCode::CREATED };
    let location = format!("/v1/documents/{}", submission.document_id);
    let body = Uploaded {
        document_id: submission.document_id,
        job_id: submission.job_id.map(|id| id.0),
        deduplicated: submission.deduplicated,
    };
    Ok((status, [(header::LOCATION, location)], axum::Json(body)).into_response())
}

/// The form field `file` of a multipart body, stored; its file name is the upload's.
async fn receive_form(
    state: &ApiState,
    request: Request,
    allowed: u64,
    deadline: Instant,
) -> Result<(String, StoredUpload), ApiError> {
    let limit = state.limits.max_upload_bytes;
    // The whole body is bounded too: fields before `file` are read through, not stored.
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, allowed as usize)));
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|rejection| ApiError::refused(rejection.status(), rejection.body_text()))?;
    loop {
        let field =
            within(&state.limits, deadline, form.next_field()).await?.map_err(|error| form_error(error, limit))?;
        let Some(field) = field else {
            return Err(ApiError::refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the form has no field `file`: send the EPUB as curl -F file=@book.epub does",
            ));
        };
        if field.name() != Some("file") {
            continue;
        }
        let name = file_name(field.file_name());
        let stored = receive(state, Pieces::Field(Box::new(field)), deadline).await?;
        return Ok((name, stored));
    }
}

/// A multipart error as the client's fault, the size limit as 413.
fn form_error(error: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    match error.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limit),
        StatusCode::INTERNAL_SERVER_ERROR => {
            ApiError::refused(StatusCode::BAD_REQUEST, format!("cannot read the upload: {}", error.body_text()))
        }
        status => ApiError::refused(status, format!("cannot read the form: {}", error.body_text())),
    }
}

/// `step`, unless the body falls silent for `body_timeout` or the upload's deadline passes.
async fn within<T>(limits: &Limits, deadline: Instant, step: impl Future<Output = T>) -> Result<T, ApiError> {
    let silent_until = (Instant::now() + limits.body_timeout).min(deadline);
    tokio::time::timeout_at(silent_until, step).await.map_err(|_| {
        let message = if Instant::now() >= deadline {
            format!("the upload took longer than {}", humantime::format_duration(limits.upload_timeout))
        } else {
            format!("the upload stalled: no bytes for {}", humantime::format_duration(limits.body_timeout))
        };
        ApiError::refused(StatusCode::REQUEST_TIMEOUT, message)
    })
}

/// Where an upload's bytes come from.
enum Pieces<'a> {
    /// The request's body.
    Body(Body),
    /// One field of a multipart body (boxed: it is large, and there is one per upload).
    Field(Box<Field<'a>>),
}

impl Pieces<'_> {
    /// The next piece, or `None` at the end.
    async fn next(&mut self, limit: u64) -> Result<Option<Bytes>, ApiError> {
        match self {
            Pieces::Body(body) => loop {
                match body.frame().await {
                    None => return Ok(None),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                    Some(Err(error)) => {
                        return Err(ApiError::refused(
                            StatusCode::BAD_REQUEST,
                            format!("cannot read the upload: {error}"),
                        ));
                    }
                }
            },
            Pieces::Field(field) => field.chunk().await.map_err(|error| form_error(error, limit)),
        }
    }
}

/// Streams `pieces` into the data directory, refusing them as soon as they go over the limit
/// or do not begin as a ZIP archive. Pieces are gathered into batches, each written and hashed
/// on a blocking thread (one short task per batch, so no thread waits on a slow client);
/// whatever goes wrong, the temporary file is gone before this returns.
async fn receive(state: &ApiState, mut pieces: Pieces<'_>, deadline: Instant) -> Result<StoredUpload, ApiError> {
    let limit = state.limits.max_upload_bytes;
    let data_dir = state.app.data_dir.clone();
    let mut writer = on_blocking_thread(move || data_dir.upload_writer()).await?;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0;
    let mut head = Vec::with_capacity(ZIP_MAGIC.len());
    loop {
        let piece = match within(&state.limits, deadline, pieces.next(limit)).await.and_then(|piece| piece) {
            Ok(piece) => piece,
            Err(refusal) => {
                discard(writer).await;
                return Err(refusal);
            }
        };
        let end = piece.is_none();
        if let Some(piece) = piece {
            let wanted = ZIP_MAGIC.len() - head.len();
            head.extend_from_slice(&piece[..wanted.min(piece.len())]);
            let refusal = if writer.byte_size() + (batched + piece.len()) as u64 > limit {
                Some(too_large(limit))
            } else if head.len() == ZIP_MAGIC.len() && head != ZIP_MAGIC {
                Some(not_a_zip())
            } else {
                None
            };
            if let Some(refusal) = refusal {
                discard(writer).await;
                return Err(refusal);
            }
            batched += piece.len();
            batch.push(piece);
        }
        if batched >= WRITE_BATCH_BYTES || (end && batched > 0) {
            let pieces = std::mem::take(&mut batch);
            batched = 0;
            // On an error the writer is dropped on the blocking thread, removing its file.
            writer = on_blocking_thread(move || {
                for piece in &pieces {
                    writer.write(piece)?;
                }
                Ok(writer)
            })
            .await?;
        }
        if end {
            break;
        }
    }
    if writer.byte_size() == 0 || head != ZIP_MAGIC {
        let empty = writer.byte_size() == 0;
        discard(writer).await;
        return Err(if empty {
            ApiError::refused(StatusCode::UNPROCESSABLE_ENTITY, "the upload is empty: send the EPUB file as the body")
        } else {
            not_a_zip()
        });
    }
    on_blocking_thread(move || writer.finish()).await
}

/// Bytes of an upload gathered before they are handed to the blocking writer.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Runs file work (creating, writing, hashing, syncing) on a blocking thread.
async fn on_blocking_thread<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(error) => Err(ApiError::from(anyhow::Error::new(error))),
    }
}

/// Drops an unfinished upload (which removes its temporary file) on a blocking thread.
async fn discard(writer: UploadWriter) {
    let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
}

/// How every ZIP archive (and so every EPUB) begins. Deeper checks are the worker's.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

fn not_a_zip() -> ApiError {
    ApiError::refused(StatusCode::UNPROCESSABLE_ENTITY, "the upload is not an EPUB: it is not a ZIP archive")
}

/// `GET /v1/documents/{id}`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DocumentWithJobs {
    #[serde(flatten)]
    document: DocumentStatusView,
    /// Its jobs, newest first.
    jobs: Vec<JobView>,
}

/// A document as `quire status ID --json` shows it, with its jobs.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}",
    tag = "documents",
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 200, description = "The document", body = DocumentWithJobs),
        (status = 404, description = "No such document", body = ErrorBody),
    ),
)]
async fn document(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.app.store.document(&id).await?.is_none() {
        return Err(ApiError::refused(StatusCode::NOT_FOUND, format!("no document {id:?}")));
    }
    let report = status::report(&state.app, Some(&id)).await?;
    let document = report
        .documents
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::refused(StatusCode::NOT_FOUND, format!("no document {id:?}")))?;
    Ok(axum::Json(DocumentWithJobs { document, jobs: report.jobs }).into_response())
}

/// `GET /v1/jobs/{id}`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct JobWithAttempts {
    #[serde(flatten)]
    job: JobRecord,
    /// Every attempt that has ended, oldest first.
    attempts: Vec<JobAttempt>,
}

/// A job, with the history of its attempts.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobWithAttempts),
        (status = 404, description = "No such job", body = ErrorBody),
    ),
)]
async fn job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::refused(StatusCode::NOT_FOUND, format!("no job {id:?}"));
    let Ok(job_id) = id.parse::<JobId>() else { return Err(not_found()) };
    let job = state.app.store.job(job_id).await?.ok_or_else(not_found)?;
    let attempts = state.app.store.job_attempts(job_id).await?;
    Ok(axum::Json(JobWithAttempts { job: JobRecord::from(&job), attempts }).into_response())
}

/// Cancels a job, through [`worker::operations::cancel`] as `quire jobs cancel` does: a pending
/// job at once, a running one at its worker's next stage boundary.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled, or asked of the worker holding it", body = CancelReport),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has finished", body = ErrorBody),
    ),
)]
async fn cancel_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::refused(StatusCode::NOT_FOUND, format!("no job {id:?}"));
    let Ok(job_id) = id.parse::<JobId>() else { return Err(not_found()) };
    let cancellation = match worker::operations::cancel(state.app.store.as_ref(), job_id).await {
        Ok(cancellation) => cancellation,
        Err(OperationError::NoSuchJob(_)) => return Err(not_found()),
        Err(refusal @ OperationError::Finished { .. }) => {
            return Err(ApiError::refused(StatusCode::CONFLICT, refusal.to_string()));
        }
        Err(OperationError::Store(error)) => return Err(error.into()),
        Err(other) => return Err(anyhow::Error::new(other).into()),
    };
    Ok(axum::Json(CancelReport::new(&cancellation)).into_response())
}

/// Serves until `shutdown`.
pub async fn run(
    global: &GlobalOptions,
    options: &ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let guard = Guard { api_token: options.api_token.clone() };
    check_guard(options.addr, &guard)?;
    let app = App::open(global).await?;
    let embedder = crate::app::embedder(&options.embedder)?;
    let addr = options.addr;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "listening beyond loopback: changes need the API token; serve it over TLS (a proxy)");
    }
    let limits = Limits::from(options);
    tracing::info!(%local, ?limits, "serving the HTTP API");
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    crate::http::serve(listener, router(app, embedder, limits.clone(), guard), limits.header_timeout, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    //! The server in this process on a loopback socket, with the clock paused where time
    //! matters: tokio advances a paused clock only when every task waits, so a timeout fires
    //! exactly when nothing else can happen, and a test of a 30 s timeout takes milliseconds.

    use std::net::SocketAddr;

    use checkpoint_store::{OpenOptions, StoreLocation};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A server on a fresh data directory, stopped when dropped.
    struct Server {
        addr: SocketAddr,
        app: App,
        dir: tempfile::TempDir,
        stop: CancellationToken,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    fn limits() -> Limits {
        Limits {
            max_upload_bytes: 200_000,
            max_concurrent_uploads: 1,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(120),
        }
    }

    /// Starts a server; call before pausing the clock (opening SQLite waits on its thread).
    async fn start(limits: Limits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = worker::DataDir::open(dir.path()).unwrap();
        let location = StoreLocation::SqliteFile(data_dir.database_path());
        let store = checkpoint_store::open(&location, OpenOptions::default()).await.unwrap();
        let app = App { store: store.clone(), data_dir: data_dir.clone() };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let header_timeout = limits.header_timeout;
        let embedder = Arc::new(embedder::LocalEmbedder::default());
        let router = router(app, embedder, limits, Guard::default());
        tokio::spawn(crate::http::serve(listener, router, header_timeout, stop.clone()));
        Server { addr, app: App { store, data_dir }, dir, stop }
    }

    impl Server {
        /// The names in `uploads/`.
        fn uploads(&self) -> Vec<String> {
            std::fs::read_dir(self.dir.path().join("uploads"))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        }
    }

    /// An answer: its status, its head (lowercased) and its body as JSON.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        head: String,
        body: serde_json::Value,
    }

    impl Reply {
        fn error(&self) -> &str {
            self.body["error"].as_str().unwrap_or_else(|| panic!("no error in {self:?}"))
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|line| line.strip_prefix(&format!("{name}: ")))
        }
    }

    /// A POST to /v1/documents with these headers (and a Content-Length unless one is given).
    fn post_head(headers: &[(&str, &str)], length: usize) -> String {
        let mut head = "POST /v1/documents HTTP/1.1\r\nHost: test\r\n".to_owned();
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-length")) {
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head + "\r\n"
    }

    /// Reads one answer: its head, then as many body bytes as it declares. Gives up after an
    /// hour (of the paused clock, if paused), so a server that never answers fails the test.
    async fn read_reply(stream: &mut TcpStream) -> Reply {
        let read = async {
            let mut bytes = Vec::new();
            let mut buffer = [0u8; 8192];
            loop {
                if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length: "))
                        .map_or(0, |value| value.trim().parse::<usize>().unwrap());
                    if bytes.len() >= end + 4 + length {
                        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                        let body = serde_json::from_slice(&bytes[end + 4..end + 4 + length]).unwrap_or_default();
                        return Some(Reply { status, head, body });
                    }
                }
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(3600), read)
            .await
            .expect("the server answers")
            .expect("an answer before the connection closed")
    }

    async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(post_head(headers, body.len()).as_bytes()).await.unwrap();
        // A server may answer (and close) before reading a refused body.
        let _ = stream.write_all(body).await;
        read_reply(&mut stream).await
    }

    const EPUB: [(&str, &str); 1] = [("Content-Type", "application/epub+zip")];

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected_at_the_header_timeout() {
        let server = start(limits()).await;
        tokio::time::pause();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"POST /v1/documents HTTP/1.1\r\nHost: test\r\n").await.unwrap();
        let waited = time_until_closed(&mut stream).await;
        assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(31), "closed after {waited:?}");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_at_the_header_timeout() {
        let server = start(limits()).await;
        tokio::time::pause();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        assert!(time_until_closed(&mut stream).await < Duration::from_secs(31));
    }

    /// How long (on paused time) the server takes to close `stream`; fails if it holds it for
    /// an hour.
    async fn time_until_closed(stream: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(3600), stream.read_to_end(&mut rest))
            .await
            .expect("the connection is closed, not held forever")
            .ok();
        started.elapsed()
    }

    #[tokio::test]
    async fn an_upload_whose_body_stalls_is_answered_408_and_gives_back_its_slot_and_file() {
        let server = start(limits()).await;
        tokio::time::pause();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(post_head(&EPUB, 100_000).as_bytes()).await.unwrap();
        stream.write_all(b"PK\x03\x04 and then nothing").await.unwrap();
        let started = Instant::now();
        let reply = read_reply(&mut stream).await;
        assert_eq!(reply.status, 408, "{reply:?}");
        assert!(reply.error().contains("stalled: no bytes for 30s"), "{reply:?}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(31), "answered after {waited:?}");
        assert_eq!(server.uploads(), Vec::<String>::new(), "the partial upload is removed");

        // The slot (there is one) is free again.
        tokio::time::resume();
        let reply = post(server.addr, &EPUB, &epub_fixtures::sample_book()).await;
        assert_eq!(reply.status, 201, "{reply:?}");
    }

    #[tokio::test]
    async fn an_upload_that_trickles_in_is_answered_408_at_the_upload_timeout() {
        let server = start(limits()).await;
        tokio::time::pause();
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        writer.write_all(post_head(&EPUB, 100_000).as_bytes()).await.unwrap();
        writer.write_all(b"PK\x03\x04").await.unwrap();
        // One byte every 10 s: never silent for the body timeout, never done.
        let trickle = tokio::spawn(async move {
            while writer.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        let started = Instant::now();
        let read = async {
            let mut stream_bytes = Vec::new();
            let mut buffer = [0u8; 4096];
            while !stream_bytes.windows(4).any(|w| w == b"\r\n\r\n") {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => stream_bytes.extend_from_slice(&buffer[..n]),
                }
            }
            String::from_utf8_lossy(&stream_bytes).into_owned()
        };
        let head = tokio::time::timeout(Duration::from_secs(3600), read).await.expect("the server answers");
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(120) && waited < Duration::from_secs(121), "answered after {waited:?}");
        trickle.abort();
    }

    #[tokio::test]
    async fn an_upload_beyond_the_concurrent_limit_is_refused_503_with_retry_after() {
        let server = start(limits()).await;
        // The one slot is taken by an upload that has sent part of its body.
        let mut first = TcpStream::connect(server.addr).await.unwrap();
        first.write_all(post_head(&EPUB, 100_000).as_bytes()).await.unwrap();
        first.write_all(b"PK\x03\x04").await.unwrap();
        for _ in 0..500 {
            if !server.uploads().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.uploads().len(), 1, "the first upload is being received");

        let book = epub_fixtures::sample_book();
        let reply = post(server.addr, &EPUB, &book).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.header("retry-after"), Some("5"), "{reply:?}");
        assert!(reply.error().contains("try again"), "{reply:?}");

        // The first client gives up: its slot and its file are freed.
        drop(first);
        let mut reply = post(server.addr, &EPUB, &book).await;
        for _ in 0..500 {
            if reply.status != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            reply = post(server.addr, &EPUB, &book).await;
        }
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(server.uploads().len(), 1, "only the accepted upload is kept: {:?}", server.uploads());
    }

    #[tokio::test]
    async fn an_upload_without_a_content_type_is_refused_415() {
        let server = start(limits()).await;
        let reply = post(server.addr, &[], &epub_fixtures::sample_book()).await;
        assert_eq!(reply.status, 415, "{reply:?}");
        assert!(reply.error().starts_with("no Content-Type"), "{reply:?}");
        assert!(reply.error().contains("curl -F file=@book.epub"), "{reply:?}");
        let reply = post(server.addr, &[("Content-Type", "")], &epub_fixtures::sample_book()).await;
        assert_eq!(reply.status, 415, "an empty one too: {reply:?}");
        assert!(server.uploads().is_empty());
    }

    /// A multipart/form-data body with a text field, then `file` under `file_name`.
    fn form(file_name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n".to_vec();
        body.extend(
            format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    }

    const FORM: [(&str, &str); 1] = [("Content-Type", "multipart/form-data; boundary=XyZ")];

    #[tokio::test]
    async fn a_multipart_upload_is_stored_under_the_file_name_of_its_part() {
        let server = start(limits()).await;
        let book = epub_fixtures::sample_book();
        let reply = post(server.addr, &FORM, &form("dir/Moby Dick.epub", &book)).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        let id = reply.body["document_id"].as_str().unwrap();
        let document = server.app.store.document(id).await.unwrap().unwrap();
        assert_eq!(document.file_name, "Moby Dick.epub");
        assert_eq!(document.byte_size, book.len() as u64);
        assert_eq!(server.uploads(), vec![format!("{}.epub", worker::sha256_hex(&book))]);

        // The same bytes raw are the same document.
        let reply = post(server.addr, &EPUB, &book).await;
        assert_eq!((reply.status, reply.body["document_id"].as_str()), (200, Some(id)), "{reply:?}");
    }

    #[tokio::test]
    async fn a_multipart_upload_keeps_the_size_limit_and_needs_a_file_field() {
        let server = start(limits()).await;
        let mut big = b"PK\x03\x04".to_vec();
        big.resize(200_001, b'x');
        let reply = post(server.addr, &FORM, &form("big.epub", &big)).await;
        assert_eq!(reply.status, 413, "{reply:?}");
        assert!(reply.error().contains("200000 bytes"), "{reply:?}");

        let reply = post(
            server.addr,
            &FORM,
            b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XyZ--\r\n",
        )
        .await;
        assert_eq!(reply.status, 422, "{reply:?}");
        assert!(reply.error().contains("field `file`"), "{reply:?}");

        let reply = post(server.addr, &FORM, &form("notes.txt", b"plain text")).await;
        assert_eq!(reply.status, 422, "{reply:?}");
        assert!(reply.error().contains("not an EPUB"), "{reply:?}");
        assert!(server.uploads().is_empty(), "{:?}", server.uploads());
    }

    #[tokio::test]
    async fn a_server_error_answers_with_a_request_id_and_without_its_cause() {
        let server = start(limits()).await;
        // The uploads directory is not a directory any more: storing fails with a message that
        // names it, which the answer must not repeat.
        let uploads = server.dir.path().join("uploads");
        std::fs::remove_dir(&uploads).unwrap();
        std::fs::write(&uploads, b"not a directory").unwrap();
        let reply = post(server.addr, &EPUB, &epub_fixtures::sample_book()).await;
        assert_eq!(reply.status, 500, "{reply:?}");
        let id = reply.header("x-request-id").expect("a request id").to_owned();
        assert_eq!(reply.body["request_id"], id.as_str());
        assert!(reply.error().starts_with("internal error;") && reply.error().contains(&id), "{reply:?}");
        let text = reply.body.to_string();
        let root = server.dir.path().to_string_lossy();
        assert!(!text.contains(&*root) && !text.contains("uploads") && !text.contains("os error"), "{text}");
    }
}
