//! The dashboard: server-rendered pages over the same store and the same
//! [`worker::operations`] as the JSON API, with no script and no asset from elsewhere, so it
//! works offline and every interpolated title, passage and error is escaped (maud escapes every
//! `(value)`).
//!
//! | page | shows |
//! |---|---|
//! | `/` | jobs by status and kind, the oldest pending job's age, expired leases, the reaper's last pass, and the last hour's completed and failed attempts as a chart (an inline SVG); refreshes every 5 s |
//! | `/jobs?status=&kind=&before=` | jobs, newest first, a page at a time |
//! | `/jobs/{id}` | the job, its stage timeline with durations, its attempts, its payload; retry, replay from a stage, cancel |
//! | `/dead` | the dead-letter queue with reasons; retry one or all, purge with confirmation |
//! | `/documents?q=` and `/documents/{id}` | documents, and a form to upload a book (through the API's upload); a document's chunks and its connections, the two passages side by side |
//! | `/search?q=` | a box over the search of `GET /v1/search` |
//!
//! Actions are form posts to `/ui/…`, answered with a redirect to the page they came from (or a
//! page saying why they were refused); like every change, they pass the API's guard (same
//! origin; the token when the server has one, which a browser holds as a session cookie after
//! signing in at `/sign-in`: the token's digest, `HttpOnly`, `SameSite=Strict`).
//!
//! Past 500 lines because its tests sit beside it: each page and button is driven through the
//! router over a real store, escaping included, which needs this module's handlers. The same
//! pages in a real browser, against real processes: tests/dashboard_browser.rs.

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use checkpoint_store::{ConnectionFilter, Job, JobFilter, JobId, JobKind, JobStatus, ReaperPass, SearchMode};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use stage_machine::Stage;
use strum::VariantArray as _;
use worker::operations::{OperationError, ReplayFrom};

use super::queue::MinuteOfWork;
use super::{ApiError, ApiState};

/// Jobs and documents per page.
const PAGE: u32 = 50;

/// Where a browser signs in, when the server has an API token.
pub(super) const SIGN_IN: &str = "/sign-in";

/// The dashboard's session cookie: the digest of the token ([`super::Guard`]), sent back only to
/// this site (`SameSite=Strict`) and never to scripts (`HttpOnly`).
const SESSION_COOKIE: &str = "quire_session";

/// The session in a `Cookie` header's value, if there is one.
pub(super) fn session_in(cookies: &str) -> Option<&str> {
    cookies
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// `GET /sign-in`: the token, asked once, for the dashboard's buttons.
pub(super) async fn sign_in_page(State(state): State<Arc<ApiState>>) -> Response {
    let content = html! {
        @if state.guard.api_token.is_none() {
            p { "This server has no API token: its buttons work without signing in." }
        } @else {
            p { "The dashboard's buttons change the queue; the server's API token lets them." }
            form method="post" action=(SIGN_IN) {
                input type="password" name="token" autocomplete="current-password" required;
                " " button { "Sign in" }
            }
        }
    };
    page("Sign in", false, content)
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    token: String,
}

/// `POST /sign-in`: the right token earns the session cookie.
pub(super) async fn sign_in(State(state): State<Arc<ApiState>>, Form(form): Form<SignInForm>) -> Response {
    let Some(token) = &state.guard.api_token else {
        return Redirect::to("/").into_response();
    };
    // Compared as digests, so the time taken says nothing about the token.
    if worker::sha256_hex(form.token.as_bytes()) != worker::sha256_hex(token.as_bytes()) {
        let content = html! { p { "That is not the server's token." } p { a href=(SIGN_IN) { "Try again" } } };
        return (StatusCode::UNAUTHORIZED, page("Not signed in", false, content)).into_response();
    }
    let cookie = format!("{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", state.guard.session());
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(axum::http::header::SET_COOKIE, value);
    }
    response
}

/// The page frame: title, navigation, the content.
fn page(title: &str, refresh: bool, content: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="5"; }
                title { (title) " · quire" }
                style { (STYLE) }
            }
            body {
                nav {
                    a href="/" { "Queue" } " "
                    a href="/jobs" { "Jobs" } " "
                    a href="/dead" { "Dead letters" } " "
                    a href="/documents" { "Documents" } " "
                    a href="/search" { "Search" } " "
                    a href=(SIGN_IN) { "Sign in" }
                }
                h1 { (title) }
                (content)
            }
        }
    };
    Html(markup.into_string()).into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:80rem}\
    nav a{margin-right:1rem}table{border-collapse:collapse;margin:1rem 0}\
    td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}\
    .pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.pair blockquote{margin:0;\
    padding:.5rem;background:#f4f4f4}form.inline{display:inline}pre{background:#f4f4f4;padding:.5rem}\
    svg.activity{border-bottom:1px solid #ccc}rect.completed{fill:#2e7d32}rect.failed{fill:#c62828}\
    svg.activity text{font-size:11px;fill:#555}";

fn millis(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).to_string()
}

fn when(at: Option<i64>) -> String {
    at.map(|at| {
        let time = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0));
        humantime::format_rfc3339_seconds(time).to_string()
    })
    .unwrap_or_else(|| "—".to_owned())
}

/// `/`: the queue at a glance.
pub(super) async fn overview(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let summary = super::queue::queue_summary(state.app.store.as_ref()).await?;
    let content = html! {
        table {
            tr { th { "status" } th { "kind" } th { "jobs" } }
            @for count in &summary.counts {
                tr {
                    td { a href={ "/jobs?status=" (count.status) } { (count.status) } }
                    td { (count.kind) }
                    td { (count.count) }
                }
            }
        }
        p { "Oldest pending job waiting: " (summary.oldest_pending_age_ms.map_or_else(|| "none".to_owned(), millis)) }
        p { "Processing jobs whose lease has expired: " (summary.stale_leases) }
        (reaper_pass(summary.last_reaper_pass.as_ref(), summary.taken_at))
        h2 { "The last hour" }
        (activity_chart(&summary.last_hour))
    };
    Ok(page("Queue", true, content))
}

/// A reaper silent for longer than this is worth a word: workers pass every 30 s by default.
const REAPER_SILENT_MS: i64 = 5 * 60_000;

/// When the reaper last passed, and what it did; a word when that was long ago.
fn reaper_pass(pass: Option<&ReaperPass>, now: i64) -> Markup {
    html! {
        p {
            "The reaper's last pass: "
            @match pass {
                None => "none yet (no worker has run one)",
                Some(pass) => {
                    // Whole seconds: a glance needs no milliseconds.
                    (millis((now - pass.passed_at).max(0) / 1000 * 1000)) " ago, by " (pass.worker) ": "
                    (pass.requeued) " requeued, " (pass.dead_lettered) " dead-lettered"
                    @if now - pass.passed_at > REAPER_SILENT_MS { strong { " — is any worker running?" } }
                }
            }
        }
    }
}

/// The last hour as bars, one a minute: completions below, failures stacked on them. An inline
/// SVG, drawn here, so the page needs no script and no library.
fn activity_chart(minutes: &[MinuteOfWork]) -> Markup {
    const BAR: usize = 10;
    const HEIGHT: u64 = 100;
    let busiest = minutes.iter().map(|minute| minute.completed + minute.failed).max().unwrap_or(0);
    let height_of = |count: u64| count * HEIGHT / busiest.max(1);
    let (completed, failed) = minutes
        .iter()
        .fold((0, 0), |(completed, failed), minute| (completed + minute.completed, failed + minute.failed));
    let width = minutes.len() * BAR;
    html! {
        p { (completed) " attempts completed their job and " (failed) " failed; the busiest minute saw " (busiest) "." }
        svg.activity role="img" width=(width) height=(HEIGHT + 16) viewBox={ "0 0 " (width) " " (HEIGHT + 16) } {
            title { "Attempts completed and failed, each minute of the last hour" }
            @for (index, minute) in minutes.iter().enumerate() {
                @let x = index * BAR;
                @let ok = height_of(minute.completed);
                @let bad = height_of(minute.failed);
                g {
                    title { (when(Some(minute.minute_start))) ": " (minute.completed) " completed, " (minute.failed) " failed" }
                    rect.completed x=(x) y=(HEIGHT - ok) width=(BAR - 1) height=(ok) {}
                    rect.failed x=(x) y=(HEIGHT - ok - bad) width=(BAR - 1) height=(bad) {}
                }
            }
            text x="0" y=(HEIGHT + 14) { "an hour ago" }
            text x=(width) y=(HEIGHT + 14) text-anchor="end" { "now" }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct JobsPage {
    status: Option<String>,
    kind: Option<String>,
    before: Option<i64>,
}

/// `/jobs`.
pub(super) async fn jobs(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<JobsPage>,
) -> Result<Response, ApiError> {
    let filter = JobFilter {
        status: query.status.as_deref().and_then(|status| status.parse().ok()),
        kind: query.kind.as_deref().and_then(|kind| kind.parse().ok()),
        limit: Some(PAGE),
        before: query.before.map(JobId),
        ..JobFilter::default()
    };
    let jobs = state.app.store.list_jobs(&filter).await?;
    let next = (jobs.len() == PAGE as usize).then(|| jobs.last().map(|job| job.id.0)).flatten();
    let content = html! {
        form method="get" action="/jobs" {
            select name="status" {
                option value="" { "any status" }
                @for status in JobStatus::VARIANTS {
                    option value=(status) selected[filter.status == Some(*status)] { (status) }
                }
            }
            " "
            select name="kind" {
                option value="" { "any kind" }
                @for kind in JobKind::VARIANTS {
                    option value=(kind) selected[filter.kind == Some(*kind)] { (kind) }
                }
            }
            " " button { "Filter" }
        }
        (jobs_table(&jobs))
        @if let Some(next) = next {
            a href={
                "/jobs?before=" (next)
                @if let Some(status) = filter.status { "&status=" (status) }
                @if let Some(kind) = filter.kind { "&kind=" (kind) }
            } { "Older jobs" }
        }
    };
    Ok(page("Jobs", false, content))
}

fn jobs_table(jobs: &[Job]) -> Markup {
    html! {
        table {
            tr { th { "job" } th { "kind" } th { "status" } th { "stage" } th { "attempts" } th { "document" } th { "last error" } }
            @for job in jobs {
                tr {
                    td { a href={ "/jobs/" (job.id.0) } { (job.id.0) } }
                    td { (job.kind) }
                    td { (job.status) @if job.cancel_requested_at.is_some() { " (cancel asked)" } }
                    td { (job.checkpoint().processing_stage) }
                    td { (job.attempts) "/" (job.max_attempts) }
                    td { @if let Some(document) = job.document_id() { a href={ "/documents/" (document) } { (document) } } }
                    td { (job.last_error.as_deref().unwrap_or("")) }
                }
            }
        }
    }
}

/// `/jobs/{id}`: the job, its timeline and attempts, and what may be done with it.
pub(super) async fn job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let found = match id.parse::<JobId>() {
        Ok(job_id) => state.app.store.job(job_id).await?,
        Err(_) => None,
    };
    let Some(job) = found else {
        return Ok(
            (StatusCode::NOT_FOUND, page("No such job", false, html! { p { "No job " (id) "." } })).into_response()
        );
    };
    let attempts = state.app.store.job_attempts(job.id).await?;
    let checkpoint = job.checkpoint();
    // Each milestone with the time since its working stage began.
    let timeline: Vec<(Stage, i64, Option<i64>)> = checkpoint
        .completed_stages
        .iter()
        .map(|&stage| {
            let at = checkpoint.stage_timestamps.get(&stage).copied().unwrap_or(0);
            let began = stage.working_stage().and_then(|working| checkpoint.stage_timestamps.get(&working)).copied();
            (stage, at, began.map(|began| at - began))
        })
        .collect();
    let payload = serde_json::to_string_pretty(&job.payload).unwrap_or_default();
    let id = job.id.0;
    let content = html! {
        p {
            (job.kind) " · " strong { (job.status) } " · attempt " (job.attempts) " of " (job.max_attempts)
            @if let Some(document) = job.document_id() { " · document " a href={ "/documents/" (document) } { (document) } }
        }
        @if let Some(error) = &job.last_error { p { "Last error: " (error) } }
        h2 { "Stages" }
        @if timeline.is_empty() {
            p { "No stage completed yet (now at " (checkpoint.processing_stage) ")." }
        } @else {
            table {
                tr { th { "milestone" } th { "reached" } th { "took" } }
                @for (stage, at, took) in &timeline {
                    tr { td { (stage) } td { (when(Some(*at))) } td { (took.map(millis).unwrap_or_default()) } }
                }
            }
        }
        h2 { "Attempts" }
        table {
            tr { th { "attempt" } th { "worker" } th { "started" } th { "ended" } th { "stage" } th { "outcome" } th { "error" } }
            @for attempt in &attempts {
                tr {
                    td { (attempt.attempt) }
                    td { (attempt.worker.as_deref().unwrap_or("")) }
                    td { (when(attempt.started_at)) }
                    td { (when(Some(attempt.ended_at))) }
                    td { (attempt.stage.map(|stage| stage.to_string()).unwrap_or_default()) }
                    td { (attempt.outcome) }
                    td { (attempt.error.as_deref().unwrap_or("")) }
                }
            }
        }
        h2 { "Payload" }
        pre { (payload) }
        h2 { "Actions" }
        @if job.status == JobStatus::Dead {
            form.inline method="post" action={ "/ui/jobs/" (id) "/retry" } { button { "Retry" } }
        }
        @if matches!(job.status, JobStatus::Pending | JobStatus::Processing) {
            form.inline method="post" action={ "/ui/jobs/" (id) "/cancel" } { button { "Cancel" } }
        }
        @if job.status != JobStatus::Processing {
            form.inline method="post" action={ "/ui/jobs/" (id) "/replay" } {
                select name="from" {
                    option value="checkpoint" { "from its checkpoint" }
                    @for stage in Stage::rewind_targets() { option value=(stage) { "from " (stage) } }
                    option value="fresh" { "fresh" }
                }
                " " button { "Replay" }
            }
        }
    };
    Ok(page(&format!("Job {id}"), false, content))
}

/// What an action did: back to the job's page, or a page saying why not.
fn after_action(job_id: i64, outcome: Result<(), String>) -> Response {
    match outcome {
        Ok(()) => Redirect::to(&format!("/jobs/{job_id}")).into_response(),
        Err(reason) => {
            let content = html! { p { (reason) } p { a href={ "/jobs/" (job_id) } { "Back to the job" } } };
            (StatusCode::CONFLICT, page("Refused", false, content)).into_response()
        }
    }
}

fn refused(error: OperationError) -> Result<(), String> {
    Err(error.to_string())
}

pub(super) async fn retry(State(state): State<Arc<ApiState>>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let outcome = worker::operations::retry_dead_letters(state.app.store.as_ref(), &[JobId(id)]).await?;
    let result = match outcome.refused.first() {
        Some(refusal) => Err(refusal.reason.to_string()),
        None => Ok(()),
    };
    Ok(after_action(id, result))
}

pub(super) async fn cancel(State(state): State<Arc<ApiState>>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let result = match worker::operations::cancel(state.app.store.as_ref(), JobId(id)).await {
        Ok(_) => Ok(()),
        Err(OperationError::Store(error)) => return Err(error.into()),
        Err(error) => refused(error),
    };
    Ok(after_action(id, result))
}

#[derive(Debug, Deserialize)]
pub(super) struct ReplayForm {
    from: String,
}

pub(super) async fn replay(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<i64>,
    Form(form): Form<ReplayForm>,
) -> Result<Response, ApiError> {
    let from = match form.from.as_str() {
        "checkpoint" => ReplayFrom::Checkpoint,
        "fresh" => ReplayFrom::Fresh,
        stage => match stage.parse::<Stage>() {
            Ok(stage) => ReplayFrom::Stage(stage),
            Err(_) => return Ok(after_action(id, Err(format!("no stage {stage:?}")))),
        },
    };
    let result = match worker::operations::replay(state.app.store.as_ref(), JobId(id), from).await {
        Ok(_) => Ok(()),
        Err(OperationError::Store(error)) => return Err(error.into()),
        Err(error) => refused(error),
    };
    Ok(after_action(id, result))
}

/// `/dead`: the dead-letter queue.
pub(super) async fn dead_letters(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let dead = worker::operations::dead_letters(state.app.store.as_ref()).await?;
    let content = html! {
        @if dead.is_empty() { p { "The dead-letter queue is empty." } } @else {
            form.inline method="post" action="/ui/dlq/retry" { button { "Retry all " (dead.len()) } }
            form.inline method="post" action="/ui/dlq/purge" {
                " Purge those finished at least "
                input name="older_than" value="7d" size="5";
                " ago "
                label { input type="checkbox" name="confirm" value="yes" required; " I understand this deletes them for good" }
                " " button { "Purge" }
            }
            (jobs_table(&dead))
        }
    };
    Ok(page("Dead letters", false, content))
}

pub(super) async fn retry_all(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    worker::operations::retry_all_dead_letters(state.app.store.as_ref()).await?;
    Ok(Redirect::to("/dead").into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct PurgeForm {
    older_than: String,
    confirm: Option<String>,
}

pub(super) async fn purge(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<PurgeForm>,
) -> Result<Response, ApiError> {
    let refuse = |reason: String| {
        let content = html! { p { (reason) } p { a href="/dead" { "Back" } } };
        Ok((StatusCode::BAD_REQUEST, page("Refused", false, content)).into_response())
    };
    if form.confirm.as_deref() != Some("yes") {
        return refuse("A purge deletes jobs for good: tick the confirmation.".to_owned());
    }
    let Ok(older_than) = humantime::parse_duration(&form.older_than) else {
        return refuse(format!("{:?} is not a duration (e.g. 7d, 12h)", form.older_than));
    };
    worker::operations::purge_dead_letters(state.app.store.as_ref(), older_than).await?;
    Ok(Redirect::to("/dead").into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct TextQuery {
    q: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct DocumentsPage {
    q: Option<String>,
    offset: Option<usize>,
}

/// `/documents`, a page at a time.
pub(super) async fn documents(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<DocumentsPage>,
) -> Result<Response, ApiError> {
    let store = state.app.store.as_ref();
    let needle = query.q.unwrap_or_default();
    let found = super::queue::find_documents(store, None, Some(&needle)).await?;
    let offset = query.offset.unwrap_or(0).min(found.len());
    let shown = &found[offset..found.len().min(offset + PAGE as usize)];
    let mut connections = Vec::with_capacity(shown.len());
    for document in shown {
        connections.push(store.connection_count(&document.id).await?);
    }
    let next = (offset + shown.len() < found.len()).then_some(offset + shown.len());
    let content = html! {
        form method="post" action="/ui/documents" enctype="multipart/form-data" {
            "Upload an EPUB: " input type="file" name="file" accept=".epub,application/epub+zip" required;
            " " button { "Upload" }
        }
        form method="get" action="/documents" { input name="q" value=(needle) placeholder="title, file or id"; " " button { "Find" } }
        p { (found.len()) " documents" @if !shown.is_empty() { ", " (offset + 1) "–" (offset + shown.len()) " shown" } }
        table {
            tr {
                th { "document" } th { "title" } th { "status" } th { "chunks" } th { "connections" }
                th { "AI requests" } th { "from cache" } th { "error" }
            }
            @for (document, connections) in shown.iter().zip(&connections) {
                tr {
                    td { a href={ "/documents/" (document.id) } { (document.id) } }
                    td { (document.title.as_deref().unwrap_or(&document.file_name)) }
                    td { (document.status) }
                    td { (document.chunk_count) }
                    td { (connections) }
                    td { (document.ai_requests) }
                    td { (document.embeddings_from_cache) }
                    td { (document.error.as_deref().unwrap_or("")) }
                }
            }
        }
        @if let Some(next) = next {
            a href={ "/documents?" (serde_urlencoded::to_string([("offset", next.to_string()), ("q", needle.clone())]).unwrap_or_default()) } {
                "More documents"
            }
        }
    };
    Ok(page("Documents", false, content))
}

/// `POST /ui/documents`: the upload form, through the API's own upload (its limits, its
/// deduplication), answered with the document's page or a page saying why not.
pub(super) async fn upload(State(state): State<Arc<ApiState>>, request: axum::extract::Request) -> Response {
    let answer = super::upload(State(state), request).await.unwrap_or_else(IntoResponse::into_response);
    // The server's own failure: left whole, for the log to keep its cause under a request id.
    if answer.extensions().get::<super::InternalError>().is_some() {
        return answer;
    }
    let status = answer.status();
    if status.is_success()
        && let Some(document) = answer
            .headers()
            .get(axum::http::header::LOCATION)
            .and_then(|location| location.to_str().ok())
            .and_then(|location| location.strip_prefix("/v1/documents/"))
    {
        return Redirect::to(&format!("/documents/{document}")).into_response();
    }
    let body = axum::body::to_bytes(answer.into_body(), 64 * 1024).await.unwrap_or_default();
    let reason = serde_json::from_slice::<super::ErrorBody>(&body)
        .map(|error| error.error)
        .unwrap_or_else(|_| format!("the server could not store it ({status})"));
    let content = html! { p { (reason) } p { a href="/documents" { "Back to the documents" } } };
    (status, page("Upload refused", false, content)).into_response()
}

/// `/documents/{id}`: chunks and connections.
pub(super) async fn document(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = &state.app.store;
    let Some(document) = store.document(&id).await? else {
        let content = html! { p { "No document " (id) "." } };
        return Ok((StatusCode::NOT_FOUND, page("No such document", false, content)).into_response());
    };
    let chunks = store.chunks(&id).await?;
    let filter = ConnectionFilter { limit: Some(PAGE), ..ConnectionFilter::default() };
    let connections = store.connections(&id, &filter).await?;
    let jobs = store.list_jobs(&JobFilter { document_id: Some(id.clone()), ..JobFilter::default() }).await?;
    let title = document.title.clone().unwrap_or_else(|| document.file_name.clone());
    let content = html! {
        p {
            (document.status) " · " (document.chunk_count) " chunks · " (document.ai_requests) " AI requests · "
            (document.embeddings_from_cache) " embeddings from the cache"
            @if let Some(author) = &document.author { " · by " (author) }
        }
        @if let Some(error) = &document.error { p { "Error: " (error) } }
        h2 { "Jobs" }
        (jobs_table(&jobs))
        h2 { "Connections" }
        @for connection in &connections {
            div {
                p { (connection.engine) " · score " (format!("{:.3}", connection.score)) " · " (connection.reason) }
                div.pair {
                    blockquote { (connection.source.text) }
                    blockquote {
                        (connection.target.text)
                        br;
                        small { "— " a href={ "/documents/" (connection.target.document_id) } {
                            (connection.target.document_title.as_deref().unwrap_or(&connection.target.document_id))
                        } }
                    }
                }
            }
        }
        h2 { "Chunks" }
        ol start="0" {
            @for chunk in chunks.iter().take(500) {
                li { @if !chunk.heading_path.is_empty() { strong { (chunk.heading_path.join(" › ")) } br; } (chunk.text) }
            }
        }
    };
    Ok(page(&title, false, content))
}

/// `/search`.
pub(super) async fn search(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<TextQuery>,
) -> Result<Response, ApiError> {
    let text = query.q.unwrap_or_default();
    let hits = if text.trim().is_empty() {
        Vec::new()
    } else {
        let (store, embedder) = (state.app.store.as_ref(), state.embedder.as_ref());
        crate::commands::search::search(store, embedder, &text, 20, SearchMode::Approximate).await?
    };
    let content = html! {
        form method="get" action="/search" { input name="q" value=(text) size="60"; " " button { "Search" } }
        @for hit in &hits {
            div {
                p { (format!("{:.3}", hit.score)) " · " a href={ "/documents/" (hit.chunk.document_id) } {
                    (hit.chunk.document_title.as_deref().unwrap_or(&hit.chunk.document_id))
                } }
                blockquote { (hit.chunk.text) }
            }
        }
    };
    Ok(page("Search", false, content))
}

#[cfg(test)]
mod tests {
    use checkpoint_store::{BookMetadata, JobKind, LeaseRequest};

    use super::*;
    use crate::commands::serve::Guard;
    use crate::commands::serve::test_api::{Api, api, api_guarded};

    /// A same-origin form post, as the dashboard's own buttons send it.
    async fn post_form(api: &Api, uri: &str, form: &str) -> (u16, Option<String>, String) {
        let headers = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")];
        api.call_raw("POST", uri, &headers, Some(("application/x-www-form-urlencoded", form.to_owned()))).await
    }

    async fn html(api: &Api, uri: &str) -> (u16, String) {
        let (status, _, body) = api.call_raw("GET", uri, &[], None).await;
        (status, body)
    }

    #[tokio::test]
    async fn markup_in_a_books_title_and_text_renders_as_text_on_every_page() {
        let api = api().await;
        let hostile = "<script>alert(\"quire\")</script>";
        let document = api.embedded_document("a.epub", &[&format!("{hostile} and the white whale <b>rose</b>")]).await;
        let (_, job) = api.document("b.epub").await;
        let request =
            LeaseRequest { owner: "w", max_jobs: 1, ttl: Duration::from_secs(60), kinds: &[JobKind::ProcessDocument] };
        let lease = api.store.lease(request).await.unwrap().remove(0).lease().unwrap();
        assert_eq!(lease.job_id, job);
        let metadata =
            BookMetadata { title: Some(hostile.to_owned()), author: Some(hostile.to_owned()), language: None };
        let b = api.store.job(job).await.unwrap().unwrap().document_id().unwrap().to_owned();
        api.store.record_extraction(lease, &b, &metadata, "hash").await.unwrap();
        api.store.fail(lease, hostile, checkpoint_store::Failure::Permanent).await.unwrap();

        for uri in [
            "/".to_owned(),
            "/jobs".to_owned(),
            format!("/jobs/{}", job.0),
            "/dead".to_owned(),
            "/documents".to_owned(),
            format!("/documents/{document}"),
            format!("/documents/{b}"),
            "/search?q=white+whale".to_owned(),
        ] {
            let (status, body) = html(&api, &uri).await;
            assert_eq!(status, 200, "{uri}: {body}");
            assert!(!body.contains("<script>") && !body.contains("<b>"), "{uri} lets markup through: {body}");
        }
        let (_, page) = html(&api, &format!("/documents/{b}")).await;
        assert!(page.contains("&lt;script&gt;alert(&quot;quire&quot;)&lt;/script&gt;"), "{page}");
        let (_, found) = html(&api, "/search?q=white+whale").await;
        assert!(found.contains("&lt;b&gt;rose&lt;/b&gt;"), "the passage is shown, escaped: {found}");
    }

    #[tokio::test]
    async fn the_overview_counts_jobs_by_state_and_refreshes_itself() {
        let api = api().await;
        api.document("a.epub").await;
        api.document("b.epub").await;
        api.dead_letter_next().await;
        let (status, body) = html(&api, "/").await;
        assert_eq!(status, 200);
        assert!(body.contains(r#"http-equiv="refresh""#), "{body}");
        assert!(
            body.contains(r#"<a href="/jobs?status=pending">pending</a></td><td>process_document</td><td>1</td>"#),
            "{body}"
        );
        assert!(
            body.contains(r#"<a href="/jobs?status=dead">dead</a></td><td>process_document</td><td>1</td>"#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_dead_job_is_retried_from_its_page_and_its_history_stays() {
        let api = api().await;
        api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let (_, page) = html(&api, &format!("/jobs/{}", dead.0)).await;
        assert!(page.contains(&format!(r#"action="/ui/jobs/{}/retry""#, dead.0)), "{page}");
        assert!(page.contains("<td>dead</td>"), "the attempt is listed: {page}");
        assert!(page.contains("No stage completed yet (now at pending)."), "{page}");

        let (status, location, _) = post_form(&api, &format!("/ui/jobs/{}/retry", dead.0), "").await;
        assert_eq!((status, location.as_deref()), (303, Some(format!("/jobs/{}", dead.0).as_str())));
        assert_eq!(api.store.job(dead).await.unwrap().unwrap().status, JobStatus::Pending);
        let (_, page) = html(&api, &format!("/jobs/{}", dead.0)).await;
        assert!(!page.contains("/retry"), "a pending job offers no retry: {page}");
        assert!(page.contains("<td>dead</td>"), "the dead attempt is still in the history: {page}");

        // Again: refused, said so, nothing changed.
        let (status, _, body) = post_form(&api, &format!("/ui/jobs/{}/retry", dead.0), "").await;
        assert_eq!(status, 409, "{body}");
        // A page elsewhere cannot press the button.
        let elsewhere = [("host", "127.0.0.1:8080"), ("origin", "https://pages.example")];
        let (status, _, _) = api.call_raw("POST", &format!("/ui/jobs/{}/cancel", dead.0), &elsewhere, None).await;
        assert_eq!(status, 403);
        assert_eq!(api.store.job(dead).await.unwrap().unwrap().status, JobStatus::Pending);
    }

    #[tokio::test]
    async fn the_overview_charts_the_last_hour_and_says_when_the_reaper_last_passed() {
        let api = api().await;
        api.document("a.epub").await;
        api.document("b.epub").await;
        let (_, page) = html(&api, "/").await;
        assert!(page.contains("0 attempts completed their job and 0 failed; the busiest minute saw 0."), "{page}");
        api.dead_letter_next().await;
        let (_, page) = html(&api, "/").await;
        assert!(page.contains("0 attempts completed their job and 1 failed; the busiest minute saw 1."), "{page}");
        assert!(page.contains(r#"y="0" width="9" height="100">"#), "a full bar for the one minute: {page}");
        assert!(page.contains("The reaper's last pass: none yet"), "{page}");

        api.store.record_reaper_pass("w7", 1, 0).await.unwrap();
        let (_, page) = html(&api, "/").await;
        assert!(page.contains("ago, by w7: 1 requeued, 0 dead-lettered"), "{page}");
        assert!(!page.contains("is any worker running?"), "{page}");
        let pass = api.store.last_reaper_pass().await.unwrap().unwrap();
        let ten_minutes_on = reaper_pass(Some(&pass), pass.passed_at + 10 * 60_000).into_string();
        assert!(ten_minutes_on.contains("10m ago, by w7"), "{ten_minutes_on}");
        assert!(ten_minutes_on.contains("is any worker running?"), "a silent reaper is pointed out: {ten_minutes_on}");

        let (status, queue) = api.get("/v1/queue").await;
        assert_eq!(status, 200);
        let minutes = queue["last_hour"].as_array().unwrap();
        assert_eq!(minutes.len(), 60, "{queue}");
        let failed: u64 = minutes.iter().map(|minute| minute["failed"].as_u64().unwrap()).sum();
        assert_eq!(failed, 1, "{queue}");
        assert_eq!(queue["last_reaper_pass"]["worker"], "w7", "{queue}");
    }

    #[tokio::test]
    async fn the_jobs_page_filters_by_status_and_kind_and_keeps_its_choice() {
        let api = api().await;
        let (_, a) = api.document("a.epub").await;
        let (_, b) = api.document("b.epub").await;
        let dead = api.dead_letter_next().await;
        let pending = if dead == a { b } else { a };
        let (_, page) = html(&api, "/jobs?status=dead&kind=process_document").await;
        assert!(page.contains(&format!(r#"<a href="/jobs/{}">"#, dead.0)), "{page}");
        assert!(!page.contains(&format!(r#"<a href="/jobs/{}">"#, pending.0)), "only dead jobs: {page}");
        assert!(page.contains(r#"<option value="dead" selected>dead</option>"#), "{page}");
        assert!(page.contains(r#"<option value="process_document" selected>"#), "{page}");
        let (_, page) = html(&api, "/jobs?status=&kind=").await;
        assert!(page.contains(&format!(r#"<a href="/jobs/{}">"#, pending.0)), "an empty choice is any: {page}");
    }

    #[tokio::test]
    async fn documents_are_listed_a_page_at_a_time_with_their_connections() {
        let api = api().await;
        for n in 0..55 {
            api.document(&format!("book & {n:02}.epub")).await;
        }
        let (_, page) = html(&api, "/documents?q=book+%26").await;
        assert!(page.contains("55 documents, 1–50 shown"), "{page}");
        assert_eq!(page.matches(r#"<a href="/documents/doc-"#).count(), 50, "{page}");
        assert!(page.contains("<th>connections</th>"), "{page}");
        let next = r#"<a href="/documents?offset=50&amp;q=book+%26">More documents</a>"#;
        assert!(page.contains(next), "the next page keeps the search: {page}");
        let (_, page) = html(&api, "/documents?offset=50&q=book+%26").await;
        assert!(page.contains("55 documents, 51–55 shown") && !page.contains("More documents"), "{page}");
        let (status, page) = html(&api, "/documents?offset=9000").await;
        assert_eq!(status, 200, "{page}");
    }

    #[tokio::test]
    async fn a_book_uploaded_from_the_page_opens_its_document_and_a_bad_one_says_why() {
        let api = api().await;
        let book = epub_fixtures::sample_book();
        let mut form =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"moby.epub\"\r\n\r\n".to_vec();
        form.extend_from_slice(&book);
        form.extend_from_slice(b"\r\n--XyZ--\r\n");
        let headers = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")];
        let multipart = "multipart/form-data; boundary=XyZ";
        let (status, answer, _) = api.send("POST", "/ui/documents", &headers, Some((multipart, form))).await;
        assert_eq!(status, 303);
        let location = answer.get("location").unwrap().to_str().unwrap();
        let id = location.strip_prefix("/documents/").expect("the document's page");
        assert_eq!(api.store.document(id).await.unwrap().unwrap().file_name, "moby.epub");

        let not_a_book =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.epub\"\r\n\r\nhello\r\n--XyZ--\r\n";
        let (status, _, page) =
            api.send("POST", "/ui/documents", &headers, Some((multipart, not_a_book.to_vec()))).await;
        assert_eq!(status, 422, "{page}");
        assert!(page.contains("<h1>Upload refused</h1>") && page.contains("ZIP"), "{page}");
        // Uploads are changes: a page elsewhere cannot make one.
        let elsewhere = [("host", "127.0.0.1:8080"), ("origin", "https://pages.example")];
        assert_eq!(api.send("POST", "/ui/documents", &elsewhere, Some((multipart, not_a_book.to_vec()))).await.0, 403);
    }

    #[tokio::test]
    async fn replay_and_cancel_go_through_the_operations() {
        let api = api().await;
        api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let uri = format!("/ui/jobs/{}/replay", dead.0);
        assert_eq!(post_form(&api, &uri, "from=indexing").await.0, 409);
        assert_eq!(post_form(&api, &uri, "from=complete").await.0, 409);
        assert_eq!(post_form(&api, &uri, "from=chunked").await.0, 303);
        let job = api.store.job(dead).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Pending);

        let (status, _, _) = post_form(&api, &format!("/ui/jobs/{}/cancel", dead.0), "").await;
        assert_eq!(status, 303);
        assert_eq!(api.store.job(dead).await.unwrap().unwrap().status, JobStatus::Cancelled);
    }

    #[tokio::test]
    async fn a_purge_from_the_page_needs_its_confirmation() {
        let api = api().await;
        api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let (status, _, body) = post_form(&api, "/ui/dlq/purge", "older_than=0s").await;
        assert_eq!(status, 400, "{body}");
        assert!(api.store.job(dead).await.unwrap().is_some());
        assert_eq!(post_form(&api, "/ui/dlq/purge", "older_than=soon&confirm=yes").await.0, 400);
        let (status, location, _) = post_form(&api, "/ui/dlq/purge", "older_than=0s&confirm=yes").await;
        assert_eq!((status, location.as_deref()), (303, Some("/dead")));
        assert!(api.store.job(dead).await.unwrap().is_none());
        let (_, page) = html(&api, "/dead").await;
        assert!(page.contains("The dead-letter queue is empty."), "{page}");
    }

    #[tokio::test]
    async fn with_a_token_a_browser_signs_in_once_and_its_buttons_work() {
        let api = api_guarded(Guard { api_token: Some("s3cret".into()) }).await;
        api.document("a.epub").await;
        let dead = api.dead_letter_next().await;
        let retry = format!("/ui/jobs/{}/retry", dead.0);
        assert_eq!(post_form(&api, &retry, "").await.0, 401, "not signed in");
        assert_eq!(post_form(&api, SIGN_IN, "token=s3cre").await.0, 401, "a wrong token");

        let same_origin = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")];
        let form = Some(("application/x-www-form-urlencoded", "token=s3cret".to_owned()));
        let (status, headers, _) = api.call_with_headers("POST", SIGN_IN, &same_origin, form).await;
        assert_eq!(status, 303);
        let cookie = headers.get("set-cookie").expect("a session cookie").to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        assert!(!cookie.contains("s3cret"), "the browser never holds the token itself: {cookie}");
        let session = cookie.split(';').next().unwrap().to_owned();

        let cookies = format!("theme=dark; {session}");
        let signed_in = [same_origin[0], same_origin[1], ("cookie", cookies.as_str())];
        let (status, _, body) = api.call_raw("POST", &retry, &signed_in, None).await;
        assert_eq!(status, 303, "{body}");
        assert_eq!(api.store.job(dead).await.unwrap().unwrap().status, JobStatus::Pending);
        // The session does not make a page elsewhere able to press a button.
        let elsewhere = [("host", "127.0.0.1:8080"), ("origin", "https://pages.example"), ("cookie", cookies.as_str())];
        let cancel = format!("/ui/jobs/{}/cancel", dead.0);
        assert_eq!(api.call_raw("POST", &cancel, &elsewhere, None).await.0, 403);
        // A made-up session is no session.
        let forged = [same_origin[0], same_origin[1], ("cookie", "quire_session=0000")];
        assert_eq!(api.call_raw("POST", &cancel, &forged, None).await.0, 401);
        assert_eq!(api.store.job(dead).await.unwrap().unwrap().status, JobStatus::Pending);
    }
}
