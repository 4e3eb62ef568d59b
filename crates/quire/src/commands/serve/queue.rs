//! The API's lists and its operator actions: what `quire jobs`, `quire dlq`, `quire replay`,
//! `quire status` and `quire connections` show and do, over HTTP. Every action goes through the
//! worker's [`worker::operations`], as the CLI's do, so the rules live in one place.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/jobs?status=&kind=&document_id=&limit=&before=` | `{jobs, next_before}`, newest first; `next_before` is the `before` of the next page, `null` on the last |
//! | `GET /v1/documents?status=&q=&limit=&offset=` | `{documents, total}`, oldest first; `q` matches the id, title, author or file name, ignoring case |
//! | `GET /v1/documents/{id}/chunks?limit=&offset=` | `{chunks, total}` in document order; 404 |
//! | `GET /v1/documents/{id}/connections?engine=&min_score=&limit=` | `{connections}`, strongest first, the document's own chunk as `source`; 404 |
//! | `GET /v1/queue` | `{counts, oldest_pending_age_ms, stale_leases}`: jobs by status and kind, how long the oldest pending job has waited, and processing jobs whose lease has expired |
//! | `POST /v1/jobs/{id}/retry` | a dead-lettered job back in the queue (`quire dlq retry ID`): 200 `{job}`; 404; 409 when it is not dead or another job holds its unique key |
//! | `POST /v1/jobs/{id}/replay` | body `{"from_stage": "chunking"}`, `{"fresh": true}` or `{}` (from the checkpoint), as `quire replay`: 200 `{job, from, resumes_at}`; 404; 409 while it is processing or when resuming would do nothing; 422 for a stage it cannot start from |
//! | `POST /v1/dlq/retry` | body `{"ids": [..]}`, or `{}` for every dead-lettered job: 200 `{retried, refused}` |
//! | `DELETE /v1/dlq?older_than=7d` | purges dead-lettered jobs finished at least that long ago (`quire dlq purge`): 200 `{purged}` |
//! | `GET /v1/search?q=&limit=&exact=` | `{hits}`: the chunks nearest the query, best first, as `quire search --json` gives them (`limit` ≤ 100, default 10; `exact=true` compares with every vector) |
//!
//! A query parameter that does not parse (an unknown status, a limit that is not a number) is a
//! 400 naming what is accepted. Lists are bounded: `limit` defaults to 50 and may not pass 500.
//!
//! Past 500 lines because its tests sit beside it: each route is asked through the router over a
//! real store, which only this module's types make short to write.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use checkpoint_store::{
    AttemptOutcome, AttemptsEnded, ConnectionFilter, ConnectionView, DocumentStatus, JobFilter, JobId, JobKind,
    JobStatus, ReaperPass, SearchMode, StageSchema, StoreError,
};
use serde::{Deserialize, Serialize};
use stage_machine::Stage;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use worker::operations::{OperationError, Purged, ReplayFrom};

use super::{ApiError, ApiState, ErrorBody};
use crate::commands::jobs::JobView;
use crate::commands::search::SearchHit;
use crate::commands::status::DocumentStatusView;

/// A query string that parsed, or a 400 in JSON saying why not (axum's own answer is text).
fn query<T>(given: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    given.map(|Query(query)| query).map_err(|rejection| bad_request(rejection.body_text()))
}

/// A JSON body that parsed (none at all: the default), or a 400 in JSON saying why not.
fn body<T: Default>(given: Result<Option<Json<T>>, JsonRejection>) -> Result<T, ApiError> {
    match given {
        Ok(body) => Ok(body.map(|Json(body)| body).unwrap_or_default()),
        Err(rejection) => Err(bad_request(rejection.body_text())),
    }
}

/// How many items a page holds unless the client asks for fewer.
const DEFAULT_PAGE: u32 = 50;

/// The most items one page may hold.
pub(super) const MAX_PAGE: u32 = 500;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::refused(StatusCode::BAD_REQUEST, message)
}

fn no_job(id: &str) -> ApiError {
    ApiError::refused(StatusCode::NOT_FOUND, format!("no job {id:?}"))
}

fn no_document(id: &str) -> ApiError {
    ApiError::refused(StatusCode::NOT_FOUND, format!("no document {id:?}"))
}

fn job_id(id: &str) -> Result<JobId, ApiError> {
    id.parse::<JobId>().map_err(|_| no_job(id))
}

/// A name one of `names` spells, or a 400 listing them.
fn parse_name<T: std::str::FromStr>(what: &str, given: &str, names: &[&str]) -> Result<T, ApiError> {
    given.parse().map_err(|_| bad_request(format!("unknown {what} {given:?}; use one of: {}", names.join(", "))))
}

fn status_names() -> Vec<&'static str> {
    <JobStatus as strum::VariantArray>::VARIANTS.iter().map(|status| status.into()).collect()
}

fn kind_names() -> Vec<&'static str> {
    <JobKind as strum::VariantArray>::VARIANTS.iter().map(|kind| kind.into()).collect()
}

/// The page size asked for, within bounds.
fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        0 => Err(bad_request("limit must be at least 1")),
        limit if limit > MAX_PAGE => Err(bad_request(format!("limit may be at most {MAX_PAGE}"))),
        limit => Ok(limit),
    }
}

/// A string schema: one of `names`.
fn one_of(names: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).into()
}

/// `GET /v1/jobs`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct JobsQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobStatus>, inline)]
    status: Option<String>,
    /// Only jobs of this kind.
    #[param(value_type = Option<JobKind>, inline)]
    kind: Option<String>,
    /// Only the jobs of this document.
    document_id: Option<String>,
    /// How many jobs a page holds (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// Only jobs older than this id: the `next_before` of the page before.
    before: Option<i64>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct JobPage {
    /// Newest first.
    jobs: Vec<JobView>,
    /// The `before` of the next page; `null` on the last.
    next_before: Option<i64>,
}

/// The jobs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "A parameter that does not parse, naming what is accepted", body = ErrorBody),
    ),
)]
pub(super) async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    given: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query(given)?;
    let limit = page_size(query.limit)?;
    let filter = JobFilter {
        status: query.status.as_deref().map(|given| parse_name("status", given, &status_names())).transpose()?,
        kind: query.kind.as_deref().map(|given| parse_name("kind", given, &kind_names())).transpose()?,
        document_id: query.document_id,
        limit: Some(limit),
        before: query.before.map(JobId),
    };
    let jobs = state.app.store.list_jobs(&filter).await?;
    let next_before = (jobs.len() == limit as usize).then(|| jobs.last().map(|job| job.id.0)).flatten();
    let jobs: Vec<JobView> = jobs.iter().map(JobView::from).collect();
    Ok(Json(JobPage { jobs, next_before }).into_response())
}

/// `GET /v1/documents`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DocumentsQuery {
    /// Only documents in this state.
    #[param(value_type = Option<DocumentStatus>, inline)]
    status: Option<String>,
    /// Only documents whose id, title, author or file name contain this, ignoring case.
    q: Option<String>,
    /// How many documents a page holds (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// How many matching documents to skip.
    offset: Option<usize>,
}

/// A page of documents.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DocumentPage {
    /// Oldest first.
    documents: Vec<DocumentStatusView>,
    /// How many documents match, on every page.
    total: usize,
}

/// The documents, oldest first, found by state and by name.
#[utoipa::path(
    get,
    path = "/v1/documents",
    tag = "documents",
    params(DocumentsQuery),
    responses(
        (status = 200, description = "A page of documents", body = DocumentPage),
        (status = 400, description = "A parameter that does not parse, naming what is accepted", body = ErrorBody),
    ),
)]
pub(super) async fn list_documents(
    State(state): State<Arc<ApiState>>,
    given: Result<Query<DocumentsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query(given)?;
    let limit = page_size(query.limit)? as usize;
    let status: Option<DocumentStatus> = match query.status.as_deref() {
        Some(given) => {
            let names: Vec<&str> =
                <DocumentStatus as strum::VariantArray>::VARIANTS.iter().map(|status| status.into()).collect();
            Some(parse_name("status", given, &names)?)
        }
        None => None,
    };
    let documents = find_documents(state.app.store.as_ref(), status, query.q.as_deref()).await?;
    let total = documents.len();
    let mut views = Vec::new();
    for document in documents.into_iter().skip(query.offset.unwrap_or(0)).take(limit) {
        let connection_count = state.app.store.connection_count(&document.id).await?;
        views.push(DocumentStatusView::new(document, connection_count));
    }
    Ok(Json(DocumentPage { documents: views, total }).into_response())
}

/// The documents in `status` (any, if none) that `text` (ignoring case; anything, if empty)
/// finds in their id, title, author or file name, oldest first: the API's and the dashboard's
/// one rule for finding a document.
pub(super) async fn find_documents(
    store: &dyn checkpoint_store::Store,
    status: Option<checkpoint_store::DocumentStatus>,
    text: Option<&str>,
) -> Result<Vec<checkpoint_store::Document>, ApiError> {
    let needle = text.map(str::to_lowercase).filter(|needle| !needle.is_empty());
    let matches = |field: Option<&str>| {
        needle.as_deref().is_none_or(|needle| field.is_some_and(|field| field.to_lowercase().contains(needle)))
    };
    Ok(store
        .list_documents()
        .await?
        .into_iter()
        .filter(|document| status.is_none_or(|status| document.status == status))
        .filter(|document| {
            matches(Some(&document.id))
                || matches(document.title.as_deref())
                || matches(document.author.as_deref())
                || matches(Some(&document.file_name))
        })
        .collect())
}

/// `GET /v1/documents/{id}/chunks`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ChunksQuery {
    /// How many chunks a page holds (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// How many chunks to skip.
    offset: Option<usize>,
}

/// A chunk of a document.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Chunk {
    /// Deterministic: the document, the position and the text's hash.
    id: String,
    /// Its position in the document, from 0.
    index: u32,
    /// The headings in force at its start, outermost first.
    heading_path: Vec<String>,
    /// Its text (markdown).
    text: String,
    /// Where it starts in the document's markdown, in characters.
    start: u64,
    /// Where it ends in the document's markdown (exclusive), in characters.
    end: u64,
}

/// A page of a document's chunks.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChunkPage {
    /// In document order.
    chunks: Vec<Chunk>,
    /// How many chunks the document has.
    total: usize,
}

/// A document's chunks, in order.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}/chunks",
    tag = "documents",
    params(("id" = String, Path, description = "The document's id"), ChunksQuery),
    responses(
        (status = 200, description = "A page of chunks", body = ChunkPage),
        (status = 400, description = "A parameter that does not parse", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
    ),
)]
pub(super) async fn document_chunks(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    given: Result<Query<ChunksQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query(given)?;
    let limit = page_size(query.limit)? as usize;
    if state.app.store.document(&id).await?.is_none() {
        return Err(no_document(&id));
    }
    let chunks = state.app.store.chunks(&id).await?;
    let total = chunks.len();
    let page: Vec<Chunk> = chunks
        .into_iter()
        .skip(query.offset.unwrap_or(0))
        .take(limit)
        .map(|chunk| Chunk {
            id: chunk.id,
            index: chunk.index,
            heading_path: chunk.heading_path,
            text: chunk.text,
            start: chunk.start,
            end: chunk.end,
        })
        .collect();
    Ok(Json(ChunkPage { chunks: page, total }).into_response())
}

/// `GET /v1/documents/{id}/connections`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ConnectionsQuery {
    /// Only the connections this engine found.
    #[param(schema_with = engine_names)]
    engine: Option<String>,
    /// Only connections at least this strong.
    min_score: Option<f32>,
    /// How many connections to return (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// The engines' names, as `quire connections --engine` accepts them.
fn engine_names() -> RefOr<Schema> {
    one_of(collision_detector::ENGINE_NAMES.iter().copied())
}

/// A document's connections.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectionList {
    /// Strongest first, the document's own chunk as `source`.
    connections: Vec<ConnectionView>,
}

/// A document's connections to passages of its own and of other books, strongest first.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}/connections",
    tag = "documents",
    params(("id" = String, Path, description = "The document's id"), ConnectionsQuery),
    responses(
        (status = 200, description = "Its connections", body = ConnectionList),
        (status = 400, description = "A parameter that does not parse, naming what is accepted", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
    ),
)]
pub(super) async fn document_connections(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    given: Result<Query<ConnectionsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query(given)?;
    let limit = page_size(query.limit)?;
    if query.min_score.is_some_and(|score| !score.is_finite()) {
        return Err(bad_request("min_score must be a finite number"));
    }
    // The same names `quire connections --engine` accepts.
    let engines = collision_detector::ENGINE_NAMES;
    if let Some(engine) = query.engine.as_deref()
        && !engines.contains(&engine)
    {
        return Err(bad_request(format!("unknown engine {engine:?}; use one of: {}", engines.join(", "))));
    }
    if state.app.store.document(&id).await?.is_none() {
        return Err(no_document(&id));
    }
    let filter = ConnectionFilter { engine: query.engine, min_score: query.min_score, limit: Some(limit) };
    let connections = state.app.store.connections(&id, &filter).await?;
    Ok(Json(ConnectionList { connections }).into_response())
}

/// The queue at a glance, for `GET /v1/queue` and the dashboard's overview.
pub(super) struct QueueSummary {
    /// When it was taken (Unix milliseconds): the ages and the last hour are counted from it.
    pub taken_at: i64,
    /// Jobs by status and kind.
    pub counts: Vec<checkpoint_store::QueueCount>,
    /// How long the oldest pending job has waited, if one is pending.
    pub oldest_pending_age_ms: Option<i64>,
    /// Processing jobs whose lease has expired.
    pub stale_leases: usize,
    /// The last hour, a minute at a time, oldest first.
    pub last_hour: Vec<MinuteOfWork>,
    /// The last pass of any worker's reaper.
    pub last_reaper_pass: Option<ReaperPass>,
}

/// How long the overview looks back, and in what steps.
const LOOK_BACK_MINUTES: i64 = 60;
const MINUTE_MS: i64 = 60_000;

/// The attempts that ended in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub(super) struct MinuteOfWork {
    /// When the minute began (Unix milliseconds).
    pub minute_start: i64,
    /// Attempts that completed their job.
    pub completed: u64,
    /// Attempts that failed: for good, into the dead-letter queue, or to be retried.
    pub failed: u64,
}

pub(super) async fn queue_summary(store: &dyn checkpoint_store::Store) -> Result<QueueSummary, ApiError> {
    let counts = store.counts().await?;
    let stale_leases = store.stale_jobs(None).await?.len();
    let now = crate::output::now_millis();
    let oldest_pending_age_ms = counts
        .iter()
        .filter(|count| count.status == JobStatus::Pending)
        .filter_map(|count| count.oldest_created_at)
        .min()
        .map(|created| (now - created).max(0));
    let first_minute = (now / MINUTE_MS - (LOOK_BACK_MINUTES - 1)) * MINUTE_MS;
    let ended = store.attempts_ended(first_minute, Duration::from_millis(MINUTE_MS as u64)).await?;
    let last_reaper_pass = store.last_reaper_pass().await?;
    Ok(QueueSummary {
        taken_at: now,
        counts,
        oldest_pending_age_ms,
        stale_leases,
        last_hour: minutes(first_minute, &ended),
        last_reaper_pass,
    })
}

/// Every minute from `first_minute` on, the minutes without an ended attempt included.
fn minutes(first_minute: i64, ended: &[AttemptsEnded]) -> Vec<MinuteOfWork> {
    let mut minutes: Vec<MinuteOfWork> = (0..LOOK_BACK_MINUTES)
        .map(|n| MinuteOfWork { minute_start: first_minute + n * MINUTE_MS, completed: 0, failed: 0 })
        .collect();
    for period in ended {
        let Some(minute) = usize::try_from((period.period_start - first_minute) / MINUTE_MS)
            .ok()
            .and_then(|index| minutes.get_mut(index))
        else {
            continue;
        };
        match period.outcome {
            AttemptOutcome::Completed => minute.completed += period.count,
            AttemptOutcome::Failed | AttemptOutcome::Dead | AttemptOutcome::Retrying => minute.failed += period.count,
            AttemptOutcome::Cancelled | AttemptOutcome::HandedBack => {}
        }
    }
    minutes
}

/// How many jobs of one kind are in one state.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct QueueCount {
    status: JobStatus,
    kind: JobKind,
    count: u64,
}

/// `GET /v1/queue`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct QueueReport {
    /// Jobs by state and kind; a pair with no job is left out.
    counts: Vec<QueueCount>,
    /// How long the oldest pending job has waited, in milliseconds; `null` when none is pending.
    oldest_pending_age_ms: Option<i64>,
    /// Processing jobs whose lease has expired: the reaper's next work.
    stale_leases: usize,
    /// The last hour's ended attempts, a minute at a time, oldest first (60 minutes, the current one last).
    last_hour: Vec<MinuteOfWork>,
    /// The last pass of any worker's reaper; `null` before the first.
    last_reaper_pass: Option<ReaperPass>,
}

/// The queue at a glance.
#[utoipa::path(
    get,
    path = "/v1/queue",
    tag = "queue",
    responses((status = 200, description = "The queue's counts", body = QueueReport)),
)]
pub(super) async fn queue(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let summary = queue_summary(state.app.store.as_ref()).await?;
    let counts = summary
        .counts
        .iter()
        .map(|count| QueueCount { status: count.status, kind: count.kind, count: count.count })
        .collect();
    let body = QueueReport {
        counts,
        oldest_pending_age_ms: summary.oldest_pending_age_ms,
        stale_leases: summary.stale_leases,
        last_hour: summary.last_hour,
        last_reaper_pass: summary.last_reaper_pass,
    };
    Ok(Json(body).into_response())
}

/// An operation's refusal as an answer: the client's mistake or the job's state, never a 500.
fn refusal(error: OperationError) -> ApiError {
    let status = match &error {
        OperationError::NoSuchJob(_) | OperationError::Store(StoreError::JobNotFound(_)) => StatusCode::NOT_FOUND,
        OperationError::NoStages { .. } | OperationError::NotReplayable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        // The store's own refusals of the job's state (another job holds its unique key, a
        // worker leased it meanwhile) are the job's state too, not a failure of the database.
        OperationError::Store(StoreError::UniqueKeyTaken { .. } | StoreError::InvalidState { .. }) => {
            StatusCode::CONFLICT
        }
        OperationError::Store(_) => {
            let OperationError::Store(error) = error else { unreachable!("matched as a store error") };
            return error.into();
        }
        // Held, finished or with nothing left to do: the job's state refuses it.
        _ => StatusCode::CONFLICT,
    };
    ApiError::refused(status, error.to_string())
}

/// A job in answer to an action.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct JobAnswer {
    /// The job as the action left it.
    job: JobView,
}

/// Puts a dead-lettered job back in the queue, as `quire dlq retry ID` does.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "dead letters",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, pending again", body = JobAnswer),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not dead, or another job holds its unique key", body = ErrorBody),
    ),
)]
pub(super) async fn retry_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id = job_id(&id)?;
    let mut outcome = worker::operations::retry_dead_letters(state.app.store.as_ref(), &[job_id]).await?;
    if let Some(job) = outcome.retried.pop() {
        return Ok(Json(JobAnswer { job: JobView::from(&job) }).into_response());
    }
    match outcome.refused.pop() {
        Some(refused) if refused.job.is_some() => {
            Err(ApiError::refused(StatusCode::CONFLICT, refused.reason.to_string()))
        }
        _ => Err(no_job(&id)),
    }
}

/// `POST /v1/jobs/{id}/replay`'s body: `from_stage`, `fresh`, or neither (from the checkpoint).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayBody {
    /// Rewind the checkpoint so that this stage and every later one run again
    /// (`process_document` jobs only).
    #[schema(schema_with = rewind_targets)]
    from_stage: Option<String>,
    /// Start from an empty checkpoint: everything runs again.
    #[serde(default)]
    fresh: bool,
}

/// The stages a replay may start from.
fn rewind_targets() -> RefOr<Schema> {
    one_of(Stage::rewind_targets().map(<&str>::from))
}

/// Where a replay was asked to start.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum ReplayMode {
    /// The job's checkpoint as it was.
    Checkpoint,
    /// The stage asked for.
    FromStage,
    /// An empty checkpoint.
    Fresh,
}

impl From<ReplayFrom> for ReplayMode {
    fn from(from: ReplayFrom) -> ReplayMode {
        match from {
            ReplayFrom::Checkpoint => ReplayMode::Checkpoint,
            ReplayFrom::Stage(_) => ReplayMode::FromStage,
            ReplayFrom::Fresh => ReplayMode::Fresh,
        }
    }
}

/// `POST /v1/jobs/{id}/replay`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReplayReport {
    /// The job, pending with a fresh attempt budget.
    job: JobView,
    from: ReplayMode,
    /// The stage its next attempt runs first.
    #[schema(value_type = StageSchema)]
    resumes_at: Stage,
}

/// Runs a job again, as `quire replay` does: from its checkpoint, from a stage, or fresh.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/replay",
    tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    request_body(content = Option<ReplayBody>, description = "Where to start; none: from the checkpoint"),
    responses(
        (status = 200, description = "The job, queued again", body = ReplayReport),
        (status = 400, description = "A body that does not parse, or asks for both `from_stage` and `fresh`", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "A worker holds the job, another job holds its unique key, or resuming would do nothing", body = ErrorBody),
        (status = 422, description = "The job has no stages, or cannot start from that one", body = ErrorBody),
    ),
)]
pub(super) async fn replay_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    given: Result<Option<Json<ReplayBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let job_id = job_id(&id)?;
    let body = body(given)?;
    let from = match (body.from_stage.as_deref(), body.fresh) {
        (Some(_), true) => return Err(bad_request("ask for from_stage or fresh, not both")),
        (Some(stage), false) => {
            let names: Vec<&str> = Stage::rewind_targets().map(|stage| stage.into()).collect();
            ReplayFrom::Stage(parse_name("stage", stage, &names)?)
        }
        (None, true) => ReplayFrom::Fresh,
        (None, false) => ReplayFrom::Checkpoint,
    };
    let replayed = worker::operations::replay(state.app.store.as_ref(), job_id, from).await.map_err(refusal)?;
    let body = ReplayReport {
        job: JobView::from(&replayed.job),
        from: ReplayMode::from(replayed.from),
        resumes_at: replayed.resumes_at,
    };
    Ok(Json(body).into_response())
}

/// `POST /v1/dlq/retry`'s body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryDeadBody {
    /// The jobs to retry; none: every dead-lettered job.
    ids: Option<Vec<i64>>,
}

/// A job a retry left where it was.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RefusedRetry {
    job_id: i64,
    /// Why: not dead, unknown, or its unique key held by another job.
    reason: String,
}

/// `POST /v1/dlq/retry`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeadLetterRetry {
    /// The jobs back in the queue.
    retried: Vec<JobView>,
    /// The jobs left where they were, and why.
    refused: Vec<RefusedRetry>,
}

/// Puts dead-lettered jobs back in the queue: these, or every one.
#[utoipa::path(
    post,
    path = "/v1/dlq/retry",
    tag = "dead letters",
    request_body(content = Option<RetryDeadBody>, description = "The jobs; none: every dead-lettered job"),
    responses(
        (status = 200, description = "What was retried and what was refused", body = DeadLetterRetry),
        (status = 400, description = "A body that does not parse", body = ErrorBody),
    ),
)]
pub(super) async fn retry_dead_letters(
    State(state): State<Arc<ApiState>>,
    given: Result<Option<Json<RetryDeadBody>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let store = state.app.store.as_ref();
    let ids = body(given)?.ids;
    let outcome = match ids {
        Some(ids) => {
            let ids: Vec<JobId> = ids.into_iter().map(JobId).collect();
            worker::operations::retry_dead_letters(store, &ids).await?
        }
        None => worker::operations::retry_all_dead_letters(store).await?,
    };
    let retried: Vec<JobView> = outcome.retried.iter().map(JobView::from).collect();
    let refused = outcome
        .refused
        .iter()
        .map(|refused| RefusedRetry { job_id: refused.job_id.0, reason: refused.reason.to_string() })
        .collect();
    Ok(Json(DeadLetterRetry { retried, refused }).into_response())
}

/// `GET /v1/search`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchQuery {
    /// The text to search for.
    #[param(required = true, min_length = 1)]
    q: Option<String>,
    /// How many hits (default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Compare with every stored vector instead of asking the index.
    #[serde(default)]
    exact: bool,
}

/// `GET /v1/search`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SearchResults {
    /// Best first.
    hits: Vec<SearchHit>,
}

/// The most hits one search returns.
pub(super) const MAX_HITS: u32 = 100;

/// The chunks nearest a text, as `quire search --json` gives them.
#[utoipa::path(
    get,
    path = "/v1/search",
    tag = "queue",
    params(SearchQuery),
    responses(
        (status = 200, description = "The hits", body = SearchResults),
        (status = 400, description = "No text, or a parameter that does not parse", body = ErrorBody),
    ),
)]
pub(super) async fn search(
    State(state): State<Arc<ApiState>>,
    given: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query(given)?;
    let text = query.q.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(bad_request("q is required: the text to search for"));
    }
    let limit = match query.limit.unwrap_or(10) {
        limit @ 1..=MAX_HITS => limit as usize,
        _ => return Err(bad_request(format!("limit must be between 1 and {MAX_HITS}"))),
    };
    let mode = if query.exact { SearchMode::Exact } else { SearchMode::Approximate };
    let hits =
        crate::commands::search::search(state.app.store.as_ref(), state.embedder.as_ref(), &text, limit, mode).await?;
    Ok(Json(SearchResults { hits }).into_response())
}

/// `DELETE /v1/dlq`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PurgeQuery {
    /// How long ago a dead-lettered job must have finished to go, as `7d` or `12h` (`0s`: all).
    #[param(required = true)]
    older_than: Option<String>,
}

/// Deletes, for good, the dead-lettered jobs that finished long enough ago, as `quire dlq purge`.
#[utoipa::path(
    delete,
    path = "/v1/dlq",
    tag = "dead letters",
    params(PurgeQuery),
    responses(
        (status = 200, description = "How many jobs went", body = Purged),
        (status = 400, description = "No age, or one that is not a duration", body = ErrorBody),
    ),
)]
pub(super) async fn purge_dead_letters(
    State(state): State<Arc<ApiState>>,
    given: Result<Query<PurgeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query(given)?;
    // Required, as `quire dlq purge --older-than` is: a purge is for good.
    let Some(given) = query.older_than else {
        return Err(bad_request("older_than is required, e.g. ?older_than=7d (0s purges every dead-lettered job)"));
    };
    let older_than: Duration = humantime::parse_duration(&given)
        .map_err(|error| bad_request(format!("older_than {given:?} is not a duration (e.g. 7d, 12h): {error}")))?;
    let purged = worker::operations::purge_dead_letters(state.app.store.as_ref(), older_than).await?;
    Ok(Json(purged).into_response())
}

#[cfg(test)]
mod tests {
    //! The routes asked directly (no socket: `oneshot` on the router), over a fresh SQLite
    //! store whose jobs the tests put in the states they need through the store itself.

    use serde_json::{Value, json};

    use super::*;
    use crate::commands::serve::Guard;
    use checkpoint_store::LeaseRequest;

    use crate::commands::serve::test_api::{api, api_guarded};

    fn ids(jobs: &Value) -> Vec<i64> {
        jobs.as_array().unwrap().iter().map(|job| job["id"].as_i64().unwrap()).collect()
    }

    #[tokio::test]
    async fn jobs_are_listed_newest_first_a_page_at_a_time_and_filtered() {
        let api = api().await;
        let (_, first) = api.document("a.epub").await;
        let (second_document, second) = api.document("b.epub").await;
        let (_, third) = api.document("c.epub").await;
        assert_eq!(api.dead_letter_next().await, first);

        let (status, page) = api.get("/v1/jobs?limit=2").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(ids(&page["jobs"]), [third.0, second.0]);
        assert_eq!(page["next_before"], second.0);
        let (_, last) = api.get(&format!("/v1/jobs?limit=2&before={}", second.0)).await;
        assert_eq!(ids(&last["jobs"]), [first.0]);
        assert_eq!(last["next_before"], Value::Null);

        let (_, dead) = api.get("/v1/jobs?status=dead").await;
        assert_eq!(ids(&dead["jobs"]), [first.0]);
        assert_eq!(dead["jobs"][0]["last_error"], "not an EPUB");
        let (_, of_document) = api.get(&format!("/v1/jobs?document_id={second_document}&kind=process_document")).await;
        assert_eq!(ids(&of_document["jobs"]), [second.0]);
    }

    #[tokio::test]
    async fn a_query_that_does_not_parse_is_a_400_naming_what_is_accepted() {
        let api = api().await;
        let (status, body) = api.get("/v1/jobs?status=finished").await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("pending, processing"), "{body}");
        let (status, body) = api.get("/v1/jobs?kind=ocr").await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("detect_connections"), "{body}");
        for uri in ["/v1/jobs?limit=0", "/v1/jobs?limit=501", "/v1/jobs?limit=many", "/v1/documents?status=gone"] {
            assert_eq!(api.get(uri).await.0, 400, "{uri}");
        }
        let (document, _) = api.document("a.epub").await;
        let (status, _) = api.get(&format!("/v1/documents/{document}/connections?min_score=NaN")).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn a_dead_job_is_retried_once_and_a_second_retry_is_a_conflict() {
        let api = api().await;
        let (document, _) = api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let uri = format!("/v1/jobs/{}/retry", dead.0);

        let (_, shown) = api.get(&format!("/v1/jobs/{}", dead.0)).await;
        assert_eq!(shown["attempts"][0]["outcome"], "dead", "{shown}");
        assert_eq!(shown["attempts"][0]["error"], "not an EPUB", "{shown}");
        assert_eq!(shown["attempts"][0]["worker"], "test", "{shown}");

        let (status, body) = api.call("POST", &uri, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["job"]["id"].as_i64(), body["job"]["status"].as_str()), (Some(dead.0), Some("pending")));
        let (_, listed) = api.get("/v1/documents").await;
        assert_eq!(listed["documents"][0]["status"], "pending", "the store's retry moves the document too");
        assert_eq!(listed["documents"][0]["id"], document.as_str());

        let (status, body) = api.call("POST", &uri, None).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(api.call("POST", "/v1/jobs/999/retry", None).await.0, 404);
        assert_eq!(api.call("POST", "/v1/jobs/abc/retry", None).await.0, 404);
    }

    #[tokio::test]
    async fn a_replay_says_where_it_starts_and_refuses_what_the_operation_refuses() {
        let api = api().await;
        api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let uri = format!("/v1/jobs/{}/replay", dead.0);

        let refused = [
            (json!({ "from_stage": "chunking", "fresh": true }), 400),
            (json!({ "from_stage": "indexing" }), 400),
            (json!({ "from_stage": "complete" }), 422),
            (json!({ "from": "chunking" }), 400),
        ];
        for (body, expected) in refused {
            let (status, answer) = api.call("POST", &uri, Some(body.clone())).await;
            assert_eq!(status, expected, "{body} → {answer}");
        }
        let (status, body) = api.call("POST", &uri, Some(json!({ "from_stage": "chunking" }))).await;
        assert_eq!(status, 200, "{body}");
        // The job died before its first checkpoint: a replay never skips a stage it has not done.
        assert_eq!((body["from"].as_str(), body["resumes_at"].as_str()), (Some("from_stage"), Some("extracting")));
        assert_eq!(body["job"]["status"], "pending");

        // Now it is held by a worker: only its lease, or its expiry, may take it back.
        let request =
            LeaseRequest { owner: "w", max_jobs: 1, ttl: Duration::from_secs(60), kinds: &[JobKind::ProcessDocument] };
        assert_eq!(api.store.lease(request).await.unwrap().len(), 1);
        let (status, body) = api.call("POST", &uri, None).await;
        assert_eq!(status, 409, "{body}");
        assert!(body["error"].as_str().unwrap().contains("processing"), "{body}");
    }

    #[tokio::test]
    async fn a_replay_the_store_refuses_for_another_jobs_unique_key_is_a_conflict_not_an_outage() {
        let api = api().await;
        let (document, _) = api.document("a.epub").await;
        // The first job of the key dies, and the key is queued again: the second job holds it.
        api.dead_letter_next().await;
        let options = || checkpoint_store::EnqueueOptions {
            unique_key: Some(format!("process:{document}")),
            document_id: Some(document.clone()),
            max_attempts: Some(1),
            ..Default::default()
        };
        let payload = worker::JobPayload::process_document(&document);
        let first = payload.enqueue(api.store.as_ref(), options()).await.unwrap().job;
        api.dead_letter_next().await;
        payload.enqueue(api.store.as_ref(), options()).await.unwrap();

        let (status, body) = api.call("POST", &format!("/v1/jobs/{}/replay", first.id.0), None).await;
        assert_eq!(status, 409, "{body}");
        assert!(body["error"].as_str().unwrap().contains("unique key"), "{body}");
        assert_eq!(api.get(&format!("/v1/jobs/{}", first.id.0)).await.1["status"], "dead", "nothing changed");
    }

    #[tokio::test]
    async fn the_dead_letter_queue_is_retried_by_id_and_purged_by_age() {
        let api = api().await;
        api.document("a.epub").await;
        api.document("b.epub").await;
        let first = api.dead_letter_next().await;
        let second = api.dead_letter_next().await;

        let (status, body) = api.call("POST", "/v1/dlq/retry", Some(json!({ "ids": [first.0, 999] }))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ids(&body["retried"]), [first.0]);
        assert_eq!(body["refused"][0]["job_id"], 999);

        assert_eq!(api.call("DELETE", "/v1/dlq", None).await.0, 400, "a purge names its age");
        assert_eq!(api.call("DELETE", "/v1/dlq?older_than=soon", None).await.0, 400);
        let (status, body) = api.call("DELETE", "/v1/dlq?older_than=1h", None).await;
        assert_eq!((status, body["purged"].as_u64()), (200, Some(0)), "{body}");
        let (status, body) = api.call("DELETE", "/v1/dlq?older_than=0s", None).await;
        assert_eq!((status, body["purged"].as_u64()), (200, Some(1)), "{body}");
        assert_eq!(api.get(&format!("/v1/jobs/{}", second.0)).await.0, 404);
        assert_eq!(api.get(&format!("/v1/jobs/{}", first.0)).await.0, 200);
    }

    #[tokio::test]
    async fn the_queue_counts_jobs_by_state_and_ages_the_oldest_pending_one() {
        let api = api().await;
        let (_, empty) = api.get("/v1/queue").await;
        assert_eq!(empty["oldest_pending_age_ms"], Value::Null);
        assert_eq!(empty["counts"], json!([]));

        api.document("a.epub").await;
        api.document("b.epub").await;
        api.document("c.epub").await;
        api.dead_letter_next().await;
        let (status, queue) = api.get("/v1/queue").await;
        assert_eq!(status, 200, "{queue}");
        let count = |state: &str| {
            queue["counts"].as_array().unwrap().iter().find(|c| c["status"] == state).map(|c| c["count"].clone())
        };
        assert_eq!((count("pending"), count("dead")), (Some(json!(2)), Some(json!(1))), "{queue}");
        assert!(queue["oldest_pending_age_ms"].as_i64().is_some_and(|age| age >= 0), "{queue}");
        assert_eq!(queue["stale_leases"], 0);
    }

    #[tokio::test]
    async fn documents_are_found_by_any_of_their_names_and_paged() {
        let api = api().await;
        let (moby, _) = api.document("Moby-Dick.epub").await;
        api.document("Middlemarch.epub").await;
        api.document("Emma.epub").await;

        let (_, found) = api.get("/v1/documents?q=moby").await;
        assert_eq!(found["total"], 1);
        assert_eq!(found["documents"][0]["id"], moby.as_str());
        let (_, by_id) = api.get(&format!("/v1/documents?q={}", &moby[..10])).await;
        assert_eq!(by_id["total"], 1);
        let (_, page) = api.get("/v1/documents?limit=2&offset=2").await;
        assert_eq!((page["total"].as_u64(), page["documents"].as_array().unwrap().len()), (Some(3), 1));
        let (_, pending) = api.get("/v1/documents?status=pending").await;
        assert_eq!(pending["total"], 3);

        let (status, chunks) = api.get(&format!("/v1/documents/{moby}/chunks")).await;
        assert_eq!((status, chunks["total"].as_u64()), (200, Some(0)));
        assert_eq!(api.get("/v1/documents/doc-none/chunks").await.0, 404);
        assert_eq!(api.get("/v1/documents/doc-none/connections").await.0, 404);
        let (status, connections) = api.get(&format!("/v1/documents/{moby}/connections?engine=lexical")).await;
        assert_eq!((status, connections["connections"].clone()), (200, json!([])));
        let (status, refused) = api.get(&format!("/v1/documents/{moby}/connections?engine=lexicall")).await;
        assert_eq!(status, 400);
        assert!(refused["error"].as_str().unwrap().contains("semantic"), "{refused}");
    }

    #[tokio::test]
    async fn a_search_finds_the_nearest_chunks_with_the_servers_embedder() {
        let api = api().await;
        let sea = api
            .embedded_document(
                "sea.epub",
                &["The white whale rose beside the ship and the harpoons flew.", "Calm water, grey sky, no land."],
            )
            .await;
        api.embedded_document("garden.epub", &["Roses and tulips grew along the garden wall in spring."]).await;

        for uri in ["/v1/search?q=white%20whale%20harpoons", "/v1/search?q=white%20whale%20harpoons&exact=true"] {
            let (status, found) = api.get(uri).await;
            assert_eq!(status, 200, "{found}");
            let hits = found["hits"].as_array().unwrap();
            assert_eq!(hits.len(), 3, "{found}");
            assert_eq!(hits[0]["chunk_id"], format!("{sea}-0"), "{uri}: {found}");
            assert!(hits[0]["score"].as_f64().unwrap() > hits[1]["score"].as_f64().unwrap(), "{found}");
        }
        let (_, one) = api.get("/v1/search?q=garden%20roses&limit=1").await;
        assert_eq!(one["hits"].as_array().unwrap().len(), 1, "{one}");
        assert!(one["hits"][0]["text"].as_str().unwrap().contains("Roses"), "{one}");
        for uri in ["/v1/search", "/v1/search?q=%20", "/v1/search?q=whale&limit=0", "/v1/search?q=whale&limit=101"] {
            assert_eq!(api.get(uri).await.0, 400, "{uri}");
        }
    }

    #[tokio::test]
    async fn with_a_token_every_change_needs_it_and_reads_stay_open() {
        let api = api_guarded(Guard { api_token: Some("s3cret".into()) }).await;
        api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let uri = format!("/v1/jobs/{}/retry", dead.0);

        assert_eq!(api.get("/v1/jobs").await.0, 200);
        assert_eq!(api.get(&format!("/v1/jobs/{}", dead.0)).await.0, 200);
        let (status, body) = api.call("POST", &uri, None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(api.call_with("POST", &uri, &[("authorization", "Bearer s3cre")], None).await.0, 401);
        assert_eq!(api.call_with("DELETE", "/v1/dlq?older_than=0s", &[], None).await.0, 401);
        assert_eq!(api.get(&format!("/v1/jobs/{}", dead.0)).await.1["status"], "dead", "nothing changed");
        let (status, body) = api.call_with("POST", &uri, &[("authorization", "Bearer s3cret")], None).await;
        assert_eq!(status, 200, "{body}");
    }

    #[tokio::test]
    async fn a_change_asked_from_another_site_is_refused_even_on_loopback() {
        let api = api().await;
        api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let uri = format!("/v1/jobs/{}/retry", dead.0);
        let host = ("host", "127.0.0.1:8080");

        for elsewhere in [[host, ("origin", "https://pages.example")], [host, ("sec-fetch-site", "cross-site")]] {
            let (status, body) = api.call_with("POST", &uri, &elsewhere, None).await;
            assert_eq!(status, 403, "{elsewhere:?}: {body}");
        }
        // A read from anywhere is fine; a change from the API's own origin too.
        assert_eq!(api.call_with("GET", "/v1/jobs", &[host, ("origin", "https://pages.example")], None).await.0, 200);
        let own = [host, ("origin", "http://127.0.0.1:8080")];
        let (status, body) = api.call_with("POST", &uri, &own, None).await;
        assert_eq!(status, 200, "{body}");
    }

    #[test]
    fn a_replay_names_where_it_started_as_the_cli_does() {
        for from in [ReplayFrom::Checkpoint, ReplayFrom::Stage(Stage::Chunking), ReplayFrom::Fresh] {
            assert_eq!(serde_json::to_value(ReplayMode::from(from)).unwrap(), from.mode());
        }
    }

    #[test]
    fn the_server_will_not_listen_beyond_loopback_without_a_token() {
        let token = |token: &str| Guard { api_token: Some(token.to_owned()) };
        let everywhere: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(super::super::check_guard(everywhere, &Guard::default()).is_err());
        assert!(super::super::check_guard(everywhere, &token("s3cret")).is_ok());
        assert!(super::super::check_guard(loopback, &Guard::default()).is_ok());
        assert!(super::super::check_guard(loopback, &token("  ")).is_err(), "an empty token is no token");
    }
}
