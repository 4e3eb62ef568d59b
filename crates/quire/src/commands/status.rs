//! `quire status [ID] [--json]`

use std::process::ExitCode;

use anyhow::bail;
use checkpoint_store::{Document, DocumentStatus, Job, JobFilter, JobId};
use serde::Serialize;

use crate::app::App;
use crate::cli::GlobalOptions;
use crate::commands::jobs::JobView;
use crate::output::{excerpt, or_dash, print_json, table};

/// A document as `status --json` shows it. Field names are a contract with scripts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Document)]
pub struct DocumentStatusView {
    pub id: String,
    pub title: Option<String>,
    pub author: Option<String>,
    pub status: DocumentStatus,
    pub chunk_count: u32,
    pub connection_count: u64,
    pub ai_requests: u64,
    pub embeddings_from_cache: u64,
    pub error: Option<String>,
}

impl DocumentStatusView {
    /// The view of `document`, which has `connection_count` connections.
    pub fn new(document: Document, connection_count: u64) -> DocumentStatusView {
        DocumentStatusView {
            connection_count,
            id: document.id,
            title: document.title,
            author: document.author,
            status: document.status,
            chunk_count: document.chunk_count,
            ai_requests: document.ai_requests,
            embeddings_from_cache: document.embeddings_from_cache,
            error: document.error,
        }
    }
}

/// What `status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub documents: Vec<DocumentStatusView>,
    /// `jobs list --json`'s view: the contract's fields and a few more.
    pub jobs: Vec<JobView>,
}

/// Builds the report for everything, or for one document or job.
pub async fn report(app: &App, id: Option<&str>) -> anyhow::Result<StatusReport> {
    let store = &app.store;
    let (documents, jobs): (Vec<Document>, Vec<Job>) = match id {
        None => (
            store.list_documents().await?,
            store.list_jobs(&JobFilter { limit: Some(1000), ..Default::default() }).await?,
        ),
        Some(id) => {
            if let Some(document) = store.document(id).await? {
                let filter =
                    JobFilter { document_id: Some(document.id.clone()), limit: Some(1000), ..Default::default() };
                (vec![document], store.list_jobs(&filter).await?)
            } else if let Some(job) = match id.parse::<JobId>() {
                Ok(job_id) => store.job(job_id).await?,
                Err(_) => None,
            } {
                let documents = match job.document_id() {
                    Some(document_id) => store.document(document_id).await?.into_iter().collect(),
                    None => Vec::new(),
                };
                (documents, vec![job])
            } else {
                bail!("no document or job {id:?}");
            }
        }
    };
    let mut views = Vec::with_capacity(documents.len());
    for document in documents {
        let connection_count = store.connection_count(&document.id).await?;
        views.push(DocumentStatusView::new(document, connection_count));
    }
    let jobs = jobs.iter().map(JobView::from).collect();
    Ok(StatusReport { documents: views, jobs })
}

/// Prints the report.
pub async fn run(global: &GlobalOptions, id: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let report = report(&app, id).await?;
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let documents = report.documents.iter().map(|d| {
        [
            d.id.clone(),
            excerpt(d.title.as_deref().unwrap_or("-"), 40),
            d.status.to_string(),
            d.chunk_count.to_string(),
            d.connection_count.to_string(),
            d.ai_requests.to_string(),
            d.embeddings_from_cache.to_string(),
            excerpt(d.error.as_deref().unwrap_or(""), 60),
        ]
    });
    println!(
        "{}",
        table(
            ["document", "title", "status", "chunks", "connections", "AI requests", "cache hits", "error"],
            documents
        )
    );
    let jobs = report.jobs.iter().map(|j| {
        [
            j.record.id.to_string(),
            j.record.kind.to_string(),
            or_dash(j.record.document_id.as_deref()),
            j.record.status.to_string(),
            j.record.stage.to_string(),
            format!("{}/{}", j.attempts, j.record.max_attempts),
            excerpt(j.record.last_error.as_deref().unwrap_or(""), 60),
        ]
    });
    println!("{}", table(["job", "kind", "document", "status", "stage", "attempts", "last error"], jobs));
    Ok(ExitCode::SUCCESS)
}
