//! What a run must leave behind, checked through the store's traits so that one list serves
//! SQLite and PostgreSQL alike.
//!
//! Every check is one the schema does not make: primary and foreign keys already forbid a
//! duplicated chunk id or a connection to a chunk that does not exist, so a query for those can
//! never fail. These look for what a wrong pipeline could still write: a count that disagrees
//! with the rows, a gap in a document's chunks, a chunk left without its vector, a connection to
//! a chunk of a document that is not complete, a lease left to expire, a checkpoint with a gap.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use checkpoint_store::{ConnectionFilter, DocumentStatus, DocumentStore, JobFilter, JobKind, JobStatus, JobStore};

/// The milestones of `process_document`, in pipeline order, as the metadata spells them.
const MILESTONES: [&str; 5] = ["extracted", "markdown_saved", "chunked", "embedded", "complete"];

/// Asserts every check over the whole store; `model` and `dimensions` are the embedder's.
pub async fn assert_integrity<S: DocumentStore + JobStore + ?Sized>(store: &S, model: &str, dimensions: usize) {
    // Chunk id → its document, over complete documents only.
    let mut complete_chunks: HashMap<String, String> = HashMap::new();
    let documents = store.list_documents().await.unwrap();
    for document in &documents {
        let id = &document.id;
        let chunks = store.chunks(id).await.unwrap();
        let indexes: Vec<u32> = chunks.iter().map(|c| c.index).collect();
        assert_eq!(indexes, (0..chunks.len() as u32).collect::<Vec<_>>(), "{id}: chunk indexes are not 0..n");
        assert!(chunks.iter().all(|c| &c.document_id == id), "{id}: a chunk of another document");
        if document.status != DocumentStatus::Complete {
            continue;
        }
        assert!(!chunks.is_empty(), "{id}: complete without chunks");
        assert_eq!(document.chunk_count as usize, chunks.len(), "{id}: chunk_count disagrees with its chunks");
        let hashes: Vec<String> = chunks.iter().map(|c| c.content_hash.clone()).collect();
        let vectors = store.cached_embeddings(model, dimensions, &hashes).await.unwrap();
        for chunk in &chunks {
            let vector = vectors.get(&chunk.content_hash);
            assert!(
                vector.is_some_and(|v| v.len() == dimensions),
                "{id}: chunk {} has no {dimensions}-dimension vector of {model}",
                chunk.index
            );
        }
        complete_chunks.extend(chunks.into_iter().map(|c| (c.id, c.document_id)));
    }
    let all = ConnectionFilter { limit: Some(1_000_000), ..Default::default() };
    for document in &documents {
        for connection in store.connections(&document.id, &all).await.unwrap() {
            for end in [&connection.source, &connection.target] {
                assert_eq!(
                    complete_chunks.get(&end.chunk_id),
                    Some(&end.document_id),
                    "a connection touches {} of {}, not a chunk of a complete document: {connection:?}",
                    end.chunk_id,
                    end.document_id
                );
            }
        }
    }

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let jobs = store.list_jobs(&JobFilter { limit: Some(1_000_000), ..Default::default() }).await.unwrap();
    for job in &jobs {
        if job.status == JobStatus::Processing {
            assert!(job.lock_until.is_some_and(|until| until >= now), "a processing job's lease has expired: {job:?}");
        }
        if job.kind != JobKind::ProcessDocument {
            continue;
        }
        // Read raw: the checkpoint reader cuts a gap away, which would hide one.
        let stored: Vec<&str> = job.metadata["completed_stages"]
            .as_array()
            .map(|stages| stages.iter().map(|s| s.as_str().unwrap_or("?")).collect())
            .unwrap_or_default();
        assert_eq!(stored, MILESTONES[..stored.len().min(MILESTONES.len())], "a checkpoint with a gap: {job:?}");
        if job.status == JobStatus::Completed {
            assert_eq!(stored, MILESTONES, "a completed job short of its milestones: {job:?}");
        }
    }
}

/// Asserts that each document of `ids` is complete, processed by one `process_document` job and
/// connected by one `detect_connections` job, both completed, and that no job of any document
/// is left unfinished: a book complete once, whatever its workers went through.
pub async fn assert_each_complete_once<S: DocumentStore + JobStore + ?Sized>(store: &S, ids: &[String]) {
    for id in ids {
        let document = store.document(id).await.unwrap().unwrap_or_else(|| panic!("{id}: no such document"));
        assert_eq!(document.status, DocumentStatus::Complete, "{id}");
        let filter = |kind| JobFilter {
            kind: Some(kind),
            document_id: Some(id.clone()),
            limit: Some(1000),
            ..Default::default()
        };
        for kind in [JobKind::ProcessDocument, JobKind::DetectConnections] {
            let jobs = store.list_jobs(&filter(kind)).await.unwrap();
            let completed = jobs.iter().filter(|j| j.status == JobStatus::Completed).count();
            assert_eq!((jobs.len(), completed), (1, 1), "{id}: one {kind} job, completed once: {jobs:?}");
        }
    }
    let unfinished: Vec<_> = store
        .list_jobs(&JobFilter { limit: Some(1_000_000), ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .filter(|job| job.status != JobStatus::Completed)
        .collect();
    assert!(unfinished.is_empty(), "jobs not completed: {unfinished:?}");
}
