//! The document store's promises, checked against every backend: uploads deduplicate by
//! content, chunk replacement is atomic and fenced, the embedding cache is keyed by content and
//! model, and connections never point at a missing chunk.
//!
//! Past 500 lines because each promise is one test run against every backend, and they share
//! the fixtures above (documents, chunks, embedding, connections); a split would copy them.

mod common;

use checkpoint_store::{
    BookMetadata, ChunkSet, ConnectionFilter, ConnectionsOutcome, DocumentStatus, EmbeddingUsage, NewConnection,
    NewDocument, StoreError, StoredChunk,
};
use common::{Harness, RawPool, TTL, backends};

async fn document(h: &Harness, hash: &str) -> String {
    let (doc, created) = h
        .docs
        .create_document(NewDocument { content_hash: hash.into(), file_name: format!("{hash}.epub"), byte_size: 10 })
        .await
        .unwrap();
    assert!(created);
    doc.id
}

fn chunks(document_id: &str, texts: &[&str]) -> Vec<StoredChunk> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| StoredChunk {
            id: format!("{document_id}-{i}-{text}"),
            document_id: document_id.into(),
            index: i as u32,
            heading_path: vec!["Part".into(), format!("Chapter {i}")],
            text: (*text).into(),
            start: i as u64 * 10,
            end: i as u64 * 10 + text.len() as u64,
            content_hash: format!("hash-{text}"),
        })
        .collect()
}

/// The chunk set connections were computed from.
fn set(chunks: &[StoredChunk]) -> ChunkSet {
    ChunkSet::of(chunks.iter().map(|chunk| chunk.id.as_str()))
}

/// Stores a document's chunks and marks it embedded, as the pipeline leaves it for detection.
async fn embed(h: &Harness, lease: checkpoint_store::Lease, doc: &str, stored: &[StoredChunk]) {
    h.docs.replace_chunks(lease, doc, stored).await.unwrap();
    h.docs.mark_embedded(lease, doc, EmbeddingUsage::default()).await.unwrap();
}

fn connection(source: &StoredChunk, target: &StoredChunk, score: f32) -> NewConnection {
    NewConnection {
        source_chunk_id: source.id.clone(),
        target_chunk_id: target.id.clone(),
        engine: "lexical".into(),
        score,
        reason: "shared terms: whale".into(),
    }
}

#[tokio::test]
async fn the_same_upload_is_one_document() {
    for h in backends().await {
        let new =
            || NewDocument { content_hash: "abcdef0123456789ff".into(), file_name: "a.epub".into(), byte_size: 3 };
        let (first, created) = h.docs.create_document(new()).await.unwrap();
        assert!(created, "{}", h.name);
        assert_eq!(first.status, DocumentStatus::Pending);
        let (second, created) = h.docs.create_document(new()).await.unwrap();
        assert!(!created);
        assert_eq!(second.id, first.id);
        assert_eq!(h.docs.list_documents().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn chunk_writes_are_fenced_and_replace_the_old_chunks_atomically() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let first = chunks(&doc, &["alpha", "beta", "gamma"]);
        h.docs.replace_chunks(lease, &doc, &first).await.unwrap();
        assert_eq!(h.docs.chunks(&doc).await.unwrap(), first, "{}", h.name);
        assert_eq!(h.docs.document(&doc).await.unwrap().unwrap().chunk_count, 3);

        let second = chunks(&doc, &["delta", "epsilon"]);
        h.docs.replace_chunks(lease, &doc, &second).await.unwrap();
        assert_eq!(h.docs.chunks(&doc).await.unwrap(), second);
        assert_eq!(h.docs.document(&doc).await.unwrap().unwrap().chunk_count, 2);

        // Once the lease is gone, nothing is written.
        h.clock.advance(TTL * 2);
        h.store.recover_stale().await.unwrap();
        let error = h.docs.replace_chunks(lease, &doc, &first).await.unwrap_err();
        assert!(error.is_lease_lost());
        assert_eq!(h.docs.chunks(&doc).await.unwrap(), second);
        let metadata = BookMetadata { title: Some("T".into()), ..Default::default() };
        assert!(h.docs.record_extraction(lease, &doc, &metadata, "m").await.unwrap_err().is_lease_lost());
        assert!(
            h.docs
                .set_document_status(lease, &doc, DocumentStatus::Failed, Some("x"))
                .await
                .unwrap_err()
                .is_lease_lost()
        );
        assert!(
            h.docs.store_embeddings(lease, "m", 2, &[("k".into(), vec![1.0, 0.0])]).await.unwrap_err().is_lease_lost()
        );
        assert!(h.docs.mark_embedded(lease, &doc, EmbeddingUsage::default()).await.unwrap_err().is_lease_lost());
        assert_eq!(h.docs.document(&doc).await.unwrap().unwrap().status, DocumentStatus::Pending);
    }
}

#[tokio::test]
async fn the_embedding_cache_is_keyed_by_content_model_and_dimensions() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let vectors = vec![("a".to_string(), vec![0.5_f32, -0.25]), ("b".to_string(), vec![1.0, 2.0])];
        h.docs.store_embeddings(lease, "model-x", 2, &vectors).await.unwrap();
        // Storing again is harmless: the first vector stays.
        h.docs.store_embeddings(lease, "model-x", 2, &[("a".to_string(), vec![9.0, 9.0])]).await.unwrap();

        let wanted = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let found = h.docs.cached_embeddings("model-x", 2, &wanted).await.unwrap();
        assert_eq!(found.len(), 2, "{}", h.name);
        assert_eq!(found["a"], vec![0.5, -0.25]);
        assert!(h.docs.cached_embeddings("model-y", 2, &wanted).await.unwrap().is_empty());
        assert!(h.docs.store_embeddings(lease, "model-x", 3, &[("z".to_string(), vec![1.0])]).await.is_err());
    }
}

#[tokio::test]
async fn connections_are_stored_with_the_document_marked_complete() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let stored = chunks(&doc, &["alpha", "beta", "gamma"]);
        embed(&h, lease, &doc, &stored).await;
        let found = vec![connection(&stored[0], &stored[1], 0.9), connection(&stored[0], &stored[2], 0.4)];
        let outcome = h.docs.replace_connections(lease, &doc, &set(&stored), &found).await.unwrap();
        assert_eq!(outcome, ConnectionsOutcome::Stored { written: 2 }, "{}", h.name);
        assert_eq!(h.docs.document(&doc).await.unwrap().unwrap().status, DocumentStatus::Complete);
        assert_eq!(h.docs.connection_count(&doc).await.unwrap(), 2);

        let strongest =
            h.docs.connections(&doc, &ConnectionFilter { limit: Some(1), ..Default::default() }).await.unwrap();
        assert_eq!(strongest.len(), 1);
        assert_eq!(strongest[0].target.chunk_id, stored[1].id);
        assert_eq!(strongest[0].source.heading_path, ["Part", "Chapter 0"]);
        let filtered =
            h.docs.connections(&doc, &ConnectionFilter { min_score: Some(0.5), ..Default::default() }).await.unwrap();
        assert_eq!(filtered.len(), 1);
    }
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_replaces_no_connections() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let stored = chunks(&doc, &["alpha", "beta", "gamma"]);
        embed(&h, lease, &doc, &stored).await;
        h.docs
            .replace_connections(lease, &doc, &set(&stored), &[connection(&stored[0], &stored[1], 0.9)])
            .await
            .unwrap();
        let before = (h.docs.document(&doc).await.unwrap(), h.docs.connection_count(&doc).await.unwrap());

        // The lease expires and is taken back: a late result from its old worker changes nothing.
        h.clock.advance(TTL * 2);
        h.store.recover_stale().await.unwrap();
        let late = vec![connection(&stored[0], &stored[2], 0.8), connection(&stored[1], &stored[2], 0.7)];
        let error = h.docs.replace_connections(lease, &doc, &set(&stored), &late).await.unwrap_err();
        assert!(error.is_lease_lost(), "{}: {error}", h.name);
        let after = (h.docs.document(&doc).await.unwrap(), h.docs.connection_count(&doc).await.unwrap());
        assert_eq!(after, before, "{}", h.name);
    }
}

#[tokio::test]
async fn connections_for_chunks_that_were_replaced_are_superseded_not_violations() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let old = chunks(&doc, &["alpha", "beta", "gamma"]);
        embed(&h, lease, &doc, &old).await;
        let computed = vec![connection(&old[0], &old[1], 0.9)];
        // The document is reprocessed meanwhile into a different number of chunks.
        embed(&h, lease, &doc, &chunks(&doc, &["delta", "epsilon"])).await;
        let outcome = h.docs.replace_connections(lease, &doc, &set(&old), &computed).await.unwrap();
        assert_eq!(outcome, ConnectionsOutcome::Superseded, "{}", h.name);
        assert_eq!(h.docs.connection_count(&doc).await.unwrap(), 0);

        // Connections naming a chunk of another document that has gone are skipped, never a
        // violation.
        let other = document(&h, "h2").await;
        let gone = chunks(&other, &["theta"]);
        embed(&h, lease, &other, &gone).await;
        let now = chunks(&doc, &["zeta", "eta"]);
        embed(&h, lease, &doc, &now).await;
        embed(&h, lease, &other, &chunks(&other, &["iota"])).await;
        let found = vec![connection(&now[0], &gone[0], 0.9), connection(&now[0], &now[1], 0.8)];
        let outcome = h.docs.replace_connections(lease, &doc, &set(&now), &found).await.unwrap();
        assert_eq!(outcome, ConnectionsOutcome::Stored { written: 1 }, "{}", h.name);
    }
}

#[tokio::test]
async fn connections_computed_for_replaced_chunks_of_the_same_count_are_superseded() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let old = chunks(&doc, &["alpha", "beta"]);
        embed(&h, lease, &doc, &old).await;
        let stale = vec![connection(&old[0], &old[1], 0.9)];
        // Reprocessed into as many chunks, each different: a chunk count cannot tell.
        let now = chunks(&doc, &["gamma", "delta"]);
        embed(&h, lease, &doc, &now).await;
        let outcome = h.docs.replace_connections(lease, &doc, &set(&old), &stale).await.unwrap();
        assert_eq!(outcome, ConnectionsOutcome::Superseded, "{}", h.name);
        let document = h.docs.document(&doc).await.unwrap().unwrap();
        assert_eq!(document.status, DocumentStatus::Embedded, "{}: not marked complete with nothing", h.name);
    }
}

#[tokio::test]
async fn a_stale_connections_job_never_moves_a_document_being_reprocessed_to_complete() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let stored = chunks(&doc, &["alpha", "beta"]);
        embed(&h, lease, &doc, &stored).await;
        let computed = vec![connection(&stored[0], &stored[1], 0.9)];
        // A newer processing of the same book starts before the older job writes: the chunks are
        // the same, but the newer processing owns the document's status now.
        for newer in [DocumentStatus::Processing, DocumentStatus::Pending, DocumentStatus::Failed] {
            h.raw.set_document_status(&doc, newer, None).await;
            let outcome = h.docs.replace_connections(lease, &doc, &set(&stored), &computed).await.unwrap();
            assert_eq!(outcome, ConnectionsOutcome::Superseded, "{}: {newer}", h.name);
            assert_eq!(h.docs.document(&doc).await.unwrap().unwrap().status, newer, "{}", h.name);
            assert_eq!(h.docs.connection_count(&doc).await.unwrap(), 0);
        }
        // Embedded again, or complete already (a replayed detection): stored.
        for current in [DocumentStatus::Embedded, DocumentStatus::Complete] {
            h.raw.set_document_status(&doc, current, None).await;
            let outcome = h.docs.replace_connections(lease, &doc, &set(&stored), &computed).await.unwrap();
            assert_eq!(outcome, ConnectionsOutcome::Stored { written: 1 }, "{}: {current}", h.name);
            assert_eq!(h.docs.document(&doc).await.unwrap().unwrap().status, DocumentStatus::Complete);
        }
    }
}

#[tokio::test]
async fn replacing_chunks_drops_the_connections_that_referenced_them() {
    for h in backends().await {
        let a = document(&h, "ha").await;
        let b = document(&h, "hb").await;
        h.enqueue(&a).await;
        let lease = h.lease_one("w1").await;
        let a_chunks = chunks(&a, &["alpha", "beta"]);
        let b_chunks = chunks(&b, &["gamma"]);
        embed(&h, lease, &a, &a_chunks).await;
        embed(&h, lease, &b, &b_chunks).await;
        h.docs
            .replace_connections(lease, &a, &set(&a_chunks), &[connection(&a_chunks[0], &b_chunks[0], 0.7)])
            .await
            .unwrap();
        assert_eq!(h.docs.connection_count(&a).await.unwrap(), 1, "{}", h.name);
        h.docs.replace_chunks(lease, &b, &chunks(&b, &["delta"])).await.unwrap();
        assert_eq!(h.docs.connection_count(&a).await.unwrap(), 0);
    }
}

/// Stored connections whose source or target chunk does not exist.
const CONNECTIONS_NAMING_A_MISSING_CHUNK: &str = "SELECT COUNT(*) FROM connections k \
     WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = k.source_chunk_id) \
        OR NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = k.target_chunk_id)";

#[tokio::test]
async fn replacing_chunks_drops_the_connections_from_and_to_them_and_no_other() {
    for h in backends().await {
        let (a, b, c) = (document(&h, "ha").await, document(&h, "hb").await, document(&h, "hc").await);
        h.enqueue(&a).await;
        let lease = h.lease_one("w1").await;
        let (a_chunks, b_chunks, c_chunks) =
            (chunks(&a, &["alpha", "beta"]), chunks(&b, &["gamma"]), chunks(&c, &["delta"]));
        for (id, its_chunks) in [(&a, &a_chunks), (&b, &b_chunks), (&c, &c_chunks)] {
            embed(&h, lease, id, its_chunks).await;
        }
        h.docs
            .replace_connections(
                lease,
                &a,
                &set(&a_chunks),
                &[connection(&a_chunks[0], &b_chunks[0], 0.7), connection(&a_chunks[1], &c_chunks[0], 0.6)],
            )
            .await
            .unwrap();
        h.docs
            .replace_connections(lease, &b, &set(&b_chunks), &[connection(&b_chunks[0], &c_chunks[0], 0.5)])
            .await
            .unwrap();
        h.docs
            .replace_connections(lease, &c, &set(&c_chunks), &[connection(&c_chunks[0], &a_chunks[0], 0.4)])
            .await
            .unwrap();
        assert_eq!(h.raw.count("SELECT COUNT(*) FROM connections").await, 4, "{}", h.name);

        // A's chunks go: its connections out (to B and C) and in (from C) go with them.
        h.docs.replace_chunks(lease, &a, &chunks(&a, &["epsilon"])).await.unwrap();
        assert_eq!(h.raw.count("SELECT COUNT(*) FROM connections").await, 1, "{}", h.name);
        assert_eq!(h.docs.connection_count(&b).await.unwrap(), 1, "{}: B → C stays", h.name);
        assert_eq!(h.docs.connection_count(&a).await.unwrap(), 0, "{}", h.name);
        assert_eq!(h.raw.count(CONNECTIONS_NAMING_A_MISSING_CHUNK).await, 0, "{}", h.name);
    }
}

#[tokio::test]
async fn embedded_chunks_join_the_cache_for_one_document_or_the_library() {
    for h in backends().await {
        let a = document(&h, "ha").await;
        let b = document(&h, "hb").await;
        h.enqueue(&a).await;
        let lease = h.lease_one("w1").await;
        let a_chunks = chunks(&a, &["alpha", "beta"]);
        h.docs.replace_chunks(lease, &a, &a_chunks).await.unwrap();
        h.docs.replace_chunks(lease, &b, &chunks(&b, &["gamma"])).await.unwrap();
        h.docs.store_embeddings(lease, "m", 2, &[(a_chunks[0].content_hash.clone(), vec![1.0, 0.0])]).await.unwrap();

        let of_a = h.docs.embedded_chunks(Some(&a), "m", 2).await.unwrap();
        assert_eq!(of_a.len(), 2, "{}", h.name);
        assert_eq!(of_a[0].embedding.as_deref(), Some(&[1.0, 0.0][..]));
        assert_eq!(of_a[1].embedding, None);
        assert_eq!(h.docs.embedded_chunks(None, "m", 2).await.unwrap().len(), 3);
        h.docs.mark_embedded(lease, &a, EmbeddingUsage { ai_requests: 3, embeddings_from_cache: 1 }).await.unwrap();
        let doc = h.docs.document(&a).await.unwrap().unwrap();
        assert_eq!((doc.status, doc.ai_requests, doc.embeddings_from_cache), (DocumentStatus::Embedded, 3, 1));
    }
}

/// Regression test for the PostgreSQL backend, where writers really run at once: connections
/// into a document whose chunks another worker is replacing at the same moment are skipped,
/// never a foreign key violation, and reprocessing two documents connected both ways at once
/// never deadlocks.
#[tokio::test]
async fn concurrent_reprocessing_never_violates_a_foreign_key_or_deadlocks() {
    const ROUNDS: usize = 40;
    for h in backends().await {
        let a = document(&h, "ha").await;
        let b = document(&h, "hb").await;
        h.enqueue(&a).await;
        let lease = h.lease_one("w1").await;
        let a_chunks = chunks(&a, &["alpha", "beta"]);
        let b_sets = [chunks(&b, &["gamma", "delta"]), chunks(&b, &["epsilon", "zeta"])];
        embed(&h, lease, &a, &a_chunks).await;
        embed(&h, lease, &b, &b_sets[0]).await;

        // One task keeps replacing B's chunks; the other keeps connecting A to whichever
        // chunks of B it last saw, and B back to A.
        let docs = h.docs.clone();
        let (b_id, sets) = (b.clone(), b_sets.clone());
        let reprocess = tokio::spawn(async move {
            for round in 0..ROUNDS {
                docs.replace_chunks(lease, &b_id, &sets[round % 2]).await.unwrap();
            }
        });
        let connect = {
            let docs = h.docs.clone();
            let (a_id, b_id, a_chunks, sets) = (a.clone(), b.clone(), a_chunks.clone(), b_sets.clone());
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let targets = &sets[round % 2];
                    let found: Vec<_> = targets.iter().map(|target| connection(&a_chunks[0], target, 0.5)).collect();
                    docs.replace_connections(lease, &a_id, &set(&a_chunks), &found).await.unwrap();
                    let back: Vec<_> = targets.iter().map(|source| connection(source, &a_chunks[1], 0.5)).collect();
                    docs.replace_connections(lease, &b_id, &set(targets), &back).await.unwrap();
                }
            })
        };
        let a_again = {
            let docs = h.docs.clone();
            let (a_id, a_chunks) = (a.clone(), a_chunks.clone());
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    docs.replace_chunks(lease, &a_id, &a_chunks).await.unwrap();
                }
            })
        };
        reprocess.await.unwrap();
        connect.await.unwrap();
        a_again.await.unwrap();
        // Whatever survived points at chunks that exist: the views, and every stored row.
        assert_eq!(h.raw.count(CONNECTIONS_NAMING_A_MISSING_CHUNK).await, 0, "{}", h.name);
        for view in h.docs.connections(&a, &Default::default()).await.unwrap() {
            assert!(
                h.docs.chunks(&view.target.document_id).await.unwrap().iter().any(|c| c.id == view.target.chunk_id),
                "{}",
                h.name
            );
        }
    }
}

#[tokio::test]
async fn a_document_sees_the_connections_other_documents_found_to_it() {
    for h in backends().await {
        let a = document(&h, "ha").await;
        let b = document(&h, "hb").await;
        h.enqueue(&b).await;
        let lease = h.lease_one("w1").await;
        let a_chunks = chunks(&a, &["alpha"]);
        let b_chunks = chunks(&b, &["beta", "gamma"]);
        embed(&h, lease, &a, &a_chunks).await;
        embed(&h, lease, &b, &b_chunks).await;
        // B, processed after A, found a connection to A.
        h.docs
            .replace_connections(lease, &b, &set(&b_chunks), &[connection(&b_chunks[1], &a_chunks[0], 0.8)])
            .await
            .unwrap();

        assert_eq!(h.docs.connection_count(&a).await.unwrap(), 1, "{}", h.name);
        let seen_from_a = h.docs.connections(&a, &ConnectionFilter::default()).await.unwrap();
        assert_eq!(seen_from_a.len(), 1);
        assert_eq!(seen_from_a[0].source.chunk_id, a_chunks[0].id, "A's own chunk comes first");
        assert_eq!(seen_from_a[0].target.chunk_id, b_chunks[1].id);
        let seen_from_b = h.docs.connections(&b, &ConnectionFilter::default()).await.unwrap();
        assert_eq!(seen_from_b[0].source.chunk_id, b_chunks[1].id);
    }
}

/// Writes `chunk_count` past the CHECK constraint that normally keeps it in range, as a
/// damaged or hand-edited database would hold it.
async fn force_chunk_count(h: &Harness, document_id: &str, value: i64) {
    match &h.raw {
        RawPool::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("PRAGMA ignore_check_constraints = ON").execute(&mut *conn).await.unwrap();
            let updated = sqlx::query("UPDATE documents SET chunk_count = ?1 WHERE id = ?2")
                .bind(value)
                .bind(document_id)
                .execute(&mut *conn)
                .await;
            sqlx::query("PRAGMA ignore_check_constraints = OFF").execute(&mut *conn).await.unwrap();
            updated.unwrap();
        }
        RawPool::Postgres(pool) => {
            sqlx::query("ALTER TABLE documents DROP CONSTRAINT IF EXISTS documents_chunk_count_check")
                .execute(pool)
                .await
                .unwrap();
            sqlx::query("UPDATE documents SET chunk_count = $1 WHERE id = $2")
                .bind(i32::try_from(value).unwrap())
                .bind(document_id)
                .execute(pool)
                .await
                .unwrap();
        }
    }
}

/// Regression: an out-of-range `chunk_count` read as 0 on PostgreSQL and as `u32::MAX` on
/// SQLite. Both backends now refuse the row as corrupt instead of inventing a count.
#[tokio::test]
async fn an_out_of_range_chunk_count_is_a_corrupt_row_on_every_backend() {
    for h in backends().await {
        let mut out_of_range = vec![-1_i64];
        if matches!(h.raw, RawPool::Sqlite(_)) {
            // PostgreSQL's INTEGER cannot hold it; SQLite's can.
            out_of_range.push(i64::from(u32::MAX) + 1);
        }
        for value in out_of_range {
            let doc = document(&h, &format!("count{value}")).await;
            force_chunk_count(&h, &doc, value).await;
            let error = h.docs.document(&doc).await.unwrap_err();
            assert!(matches!(error, StoreError::Corrupt(_)), "{}: chunk_count {value} gave {error:?}", h.name);
            assert!(matches!(h.docs.list_documents().await, Err(StoreError::Corrupt(_))), "{}", h.name);
            force_chunk_count(&h, &doc, 0).await;
        }
    }
}

/// Regression: only PostgreSQL refused chunks that belong to another document; SQLite stored
/// them under the wrong document. Both refuse them now and keep the chunks they had.
#[tokio::test]
async fn chunks_of_another_document_are_refused_on_every_backend() {
    for h in backends().await {
        let doc = document(&h, "h1").await;
        let other = document(&h, "h2").await;
        h.enqueue(&doc).await;
        let lease = h.lease_one("w1").await;
        let kept = chunks(&doc, &["alpha"]);
        h.docs.replace_chunks(lease, &doc, &kept).await.unwrap();

        let mut mixed = chunks(&doc, &["beta", "gamma"]);
        mixed[1].document_id = other.clone();
        let error = h.docs.replace_chunks(lease, &doc, &mixed).await.unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{}: {error:?}", h.name);
        assert_eq!(h.docs.chunks(&doc).await.unwrap(), kept, "{}", h.name);
        assert!(h.docs.chunks(&other).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.docs.document(&doc).await.unwrap().unwrap().chunk_count, 1, "{}", h.name);
    }
}
