//! The nearest-neighbour seam's promises, checked against every backend (SQLite and PostgreSQL
//! on the in-process index, PostgreSQL with pgvector): approximate search agrees with exact
//! search, exact search agrees with a brute-force answer computed here, models and dimension
//! counts never meet, a reprocessed document's old chunks never come back, an excluded document
//! is never returned, and a vector stored by another process is found.

mod common;

use std::collections::HashSet;

use checkpoint_store::{
    Lease, Neighbour, NeighbourQuery, NeighbourSearch, SearchMode, SqliteStore, SqliteStoreOptions, StoreError,
    StoredChunk,
};
use common::{Harness, search_backends};

const MODEL: &str = "test-model";
const DIMENSIONS: usize = 16;

/// Deterministic text-like vectors: a few shared "topics" plus noise, so neighbours are real
/// clusters and not uniform random points (whose recall figures mislead).
fn vector(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f32 / 10_000.0 - 0.5
    };
    let topic = (seed % 7) as usize;
    (0..DIMENSIONS).map(|d| if d % 7 == topic { 2.0 } else { 0.0 } + next()).collect()
}

fn chunk(document_id: &str, index: u32, seed: u64) -> StoredChunk {
    StoredChunk {
        id: format!("{document_id}-c{index}"),
        document_id: document_id.into(),
        index,
        heading_path: vec![],
        text: format!("text {seed}"),
        start: 0,
        end: 1,
        content_hash: format!("hash-{seed}"),
    }
}

struct Library {
    lease: Lease,
    /// (chunk id, document id, vector) of every chunk stored.
    chunks: Vec<(String, String, Vec<f32>)>,
}

/// `documents` documents of `per_document` chunks each, every chunk with its own vector.
async fn library(h: &Harness, documents: u64, per_document: u64) -> Library {
    let mut all = Vec::new();
    let mut lease = None;
    for d in 0..documents {
        let (doc, _) = h
            .docs
            .create_document(checkpoint_store::NewDocument {
                content_hash: format!("doc-hash-{d}"),
                file_name: format!("{d}.epub"),
                byte_size: 1,
            })
            .await
            .unwrap();
        if lease.is_none() {
            h.enqueue(&doc.id).await;
            lease = Some(h.lease_one("w1").await);
        }
        let lease = lease.unwrap();
        let chunks: Vec<StoredChunk> =
            (0..per_document).map(|i| chunk(&doc.id, i as u32, d * per_document + i)).collect();
        h.docs.replace_chunks(lease, &doc.id, &chunks).await.unwrap();
        let vectors: Vec<(String, Vec<f32>)> = (0..per_document)
            .map(|i| (format!("hash-{}", d * per_document + i), vector(d * per_document + i)))
            .collect();
        h.docs.store_embeddings(lease, MODEL, DIMENSIONS, &vectors).await.unwrap();
        for (c, (_, v)) in chunks.iter().zip(vectors) {
            all.push((c.id.clone(), doc.id.clone(), v));
        }
    }
    Library { lease: lease.unwrap(), chunks: all }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The answer by brute force, computed here independently of the store.
fn brute_force(library: &Library, query: &[f32], limit: usize, exclude: Option<&str>) -> Vec<String> {
    let mut scored: Vec<(f32, &str)> = library
        .chunks
        .iter()
        .filter(|(_, doc, _)| Some(doc.as_str()) != exclude)
        .map(|(id, _, v)| (cosine(query, v), id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(limit).map(|(_, id)| id.to_owned()).collect()
}

fn query<'a>(vectors: &'a [Vec<f32>], limit: usize, mode: SearchMode) -> NeighbourQuery<'a> {
    NeighbourQuery { model: MODEL, dimensions: DIMENSIONS, vectors, limit, exclude_document: None, mode }
}

fn ids(found: &[Neighbour]) -> Vec<String> {
    found.iter().map(|n| n.chunk_id.clone()).collect()
}

#[tokio::test]
async fn exact_search_is_brute_force_and_approximate_search_finds_the_same_chunks() {
    for h in search_backends().await {
        let library = library(&h, 6, 100).await;
        let queries: Vec<Vec<f32>> = (0..40).map(|i| vector(10_000 + i)).collect();
        let exact = h.search.nearest_chunks(query(&queries, 5, SearchMode::Exact)).await.unwrap();
        let approximate = h.search.nearest_chunks(query(&queries, 5, SearchMode::Approximate)).await.unwrap();
        let mut hits = 0;
        for ((q, exact), approximate) in queries.iter().zip(&exact).zip(&approximate) {
            assert_eq!(ids(exact), brute_force(&library, q, 5, None), "{}", h.name);
            for pair in exact.windows(2).chain(approximate.windows(2)) {
                assert!(pair[0].score >= pair[1].score, "{}: best first", h.name);
            }
            let truth: HashSet<String> = ids(exact).into_iter().collect();
            hits += approximate.iter().filter(|n| truth.contains(&n.chunk_id)).count();
            // Scores are cosine similarities, whichever index answered.
            let (id, _, v) = library.chunks.iter().find(|(id, _, _)| *id == approximate[0].chunk_id).unwrap();
            assert!((approximate[0].score - cosine(q, v)).abs() < 0.01, "{}: score of {id}", h.name);
        }
        let recall = hits as f64 / (queries.len() * 5) as f64;
        assert!(recall >= 0.95, "{}: recall@5 {recall}", h.name);
    }
}

/// pgvector cuts a large batch into slices searched at once on several connections; every answer
/// must still come back to its own query.
#[tokio::test]
async fn a_large_batch_answers_each_query_as_it_is_answered_alone() {
    for h in search_backends().await {
        let _library = library(&h, 3, 100).await;
        let queries: Vec<Vec<f32>> = (0..300).map(|i| vector(20_000 + i)).collect();
        // The in-process index answers its first query from its exact tail of new vectors and
        // folds them into its (approximate) graph once idle: settle that first, so that the
        // batch and the single queries below meet the same index.
        h.search.nearest_chunks(query(&queries[..1], 3, SearchMode::Approximate)).await.unwrap();
        h.search.settle_indexes().await.unwrap();
        let batch = h.search.nearest_chunks(query(&queries, 3, SearchMode::Approximate)).await.unwrap();
        assert_eq!(batch.len(), queries.len(), "{}", h.name);
        for (i, q) in queries.iter().enumerate() {
            let alone =
                h.search.nearest_chunks(query(std::slice::from_ref(q), 3, SearchMode::Approximate)).await.unwrap();
            assert_eq!(ids(&batch[i]), ids(&alone[0]), "{}: query {i}", h.name);
        }
    }
}

#[tokio::test]
async fn an_excluded_document_is_never_returned_and_a_chunk_finds_itself_first() {
    for h in search_backends().await {
        let library = library(&h, 3, 50).await;
        let (own_id, own_doc, own_vector) = library.chunks[10].clone();
        let queries = vec![own_vector];
        for mode in [SearchMode::Exact, SearchMode::Approximate] {
            let found = h.search.nearest_chunks(query(&queries, 3, mode)).await.unwrap();
            assert_eq!(found[0][0].chunk_id, own_id, "{} {mode:?}", h.name);
            assert!(found[0][0].score > 0.999);
            // What was found reads back for display; an id that names no chunk is skipped.
            let wanted = vec![own_id.clone(), "no-such-chunk".to_owned()];
            let views = h.docs.chunk_views(&wanted).await.unwrap();
            assert_eq!(views.len(), 1, "{}", h.name);
            assert_eq!(
                (views[0].chunk_id.as_str(), views[0].chunk_index, views[0].text.as_str()),
                (own_id.as_str(), 10, "text 10")
            );
            assert_eq!(views[0].document_id, own_doc);
            let excluded = NeighbourQuery { exclude_document: Some(&own_doc), ..query(&queries, 20, mode) };
            let found = h.search.nearest_chunks(excluded).await.unwrap();
            assert_eq!(found[0].len(), 20, "{} {mode:?}: still `limit` results", h.name);
            assert!(found[0].iter().all(|n| n.document_id != own_doc), "{} {mode:?}", h.name);
            if mode == SearchMode::Exact {
                assert_eq!(ids(&found[0]), brute_force(&library, &queries[0], 20, Some(&own_doc)));
            }
        }
    }
}

#[tokio::test]
async fn a_query_with_the_wrong_dimension_count_is_refused() {
    for h in search_backends().await {
        library(&h, 1, 5).await;
        let queries = vec![vector(1), vec![1.0; DIMENSIONS + 1]];
        for mode in [SearchMode::Exact, SearchMode::Approximate] {
            let error = h.search.nearest_chunks(query(&queries, 3, mode)).await.unwrap_err();
            assert!(matches!(error, StoreError::InvalidQuery(_)), "{}: {error}", h.name);
            assert!(error.to_string().contains("query vector 1 has 17 dimensions"), "{error}");
        }
    }
}

#[tokio::test]
async fn two_models_vectors_never_meet() {
    for h in search_backends().await {
        let library = library(&h, 2, 20).await;
        // Another model with the same dimension count covers only the first document's content.
        let other: Vec<(String, Vec<f32>)> =
            (0..20).map(|i| (format!("hash-{i}"), vector(i).iter().map(|x| -x).collect())).collect();
        h.docs.store_embeddings(library.lease, "other-model", DIMENSIONS, &other).await.unwrap();
        let first_doc = &library.chunks[0].1;
        let queries = vec![vector(33).iter().map(|x| -x).collect::<Vec<f32>>()];
        for mode in [SearchMode::Exact, SearchMode::Approximate] {
            let q = NeighbourQuery { model: "other-model", ..query(&queries, 40, mode) };
            let found = h.search.nearest_chunks(q).await.unwrap();
            assert_eq!(found[0].len(), 20, "{} {mode:?}", h.name);
            assert!(found[0].iter().all(|n| &n.document_id == first_doc), "{} {mode:?}", h.name);
            // And a dimension count nothing was stored with finds nothing.
            let three = [vec![1.0, 0.0, 0.0]];
            let q = NeighbourQuery { dimensions: 3, ..query(&three, 5, mode) };
            assert!(h.search.nearest_chunks(q).await.unwrap()[0].is_empty());
        }
    }
}

#[tokio::test]
async fn a_reprocessed_documents_old_chunks_never_come_back() {
    for h in search_backends().await {
        let library = library(&h, 2, 30).await;
        let queries: Vec<Vec<f32>> = library.chunks.iter().take(5).map(|(_, _, v)| v.clone()).collect();
        // Warm the index with the old chunks first.
        h.search.nearest_chunks(query(&queries, 5, SearchMode::Approximate)).await.unwrap();
        let document = library.chunks[0].1.clone();
        let replacement: Vec<StoredChunk> = (0..30).map(|i| chunk(&document, i, 50_000 + u64::from(i))).collect();
        let replacement: Vec<StoredChunk> =
            replacement.into_iter().map(|c| StoredChunk { id: format!("{}-new", c.id), ..c }).collect();
        h.docs.replace_chunks(library.lease, &document, &replacement).await.unwrap();
        let old: HashSet<&str> =
            library.chunks.iter().filter(|(_, d, _)| *d == document).map(|(id, _, _)| id.as_str()).collect();
        for mode in [SearchMode::Exact, SearchMode::Approximate] {
            let found = h.search.nearest_chunks(query(&queries, 10, mode)).await.unwrap();
            for list in &found {
                assert!(list.iter().all(|n| !old.contains(n.chunk_id.as_str())), "{} {mode:?}: {list:?}", h.name);
                // The new chunks have no vectors yet, so the other document answers.
                assert!(list.iter().all(|n| n.document_id != document));
            }
        }
    }
}

#[tokio::test]
async fn vectors_stored_after_the_index_was_built_are_found() {
    for h in search_backends().await {
        let library = library(&h, 2, 40).await;
        let probe = vec![vector(777_777)];
        h.search.nearest_chunks(query(&probe, 1, SearchMode::Approximate)).await.unwrap();
        // A new chunk whose vector is the probe itself arrives after the index was built.
        let document = library.chunks[0].1.clone();
        let mut chunks: Vec<StoredChunk> = (0..40).map(|i| chunk(&document, i, u64::from(i))).collect();
        chunks.push(chunk(&document, 40, 777_777));
        h.docs.replace_chunks(library.lease, &document, &chunks).await.unwrap();
        h.docs
            .store_embeddings(library.lease, MODEL, DIMENSIONS, &[("hash-777777".into(), probe[0].clone())])
            .await
            .unwrap();
        let found = h.search.nearest_chunks(query(&probe, 1, SearchMode::Approximate)).await.unwrap();
        assert_eq!(found[0][0].chunk_id, format!("{document}-c40"), "{}", h.name);
    }
}

/// Several processes on one SQLite file: each catches its own index up with what the others
/// committed.
#[tokio::test]
async fn a_second_sqlite_store_sees_vectors_the_first_one_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.db");
    let first = std::sync::Arc::new(SqliteStore::open(&path, SqliteStoreOptions::default()).await.unwrap());
    let second = SqliteStore::open(&path, SqliteStoreOptions::default()).await.unwrap();
    let probe = vec![vector(4242)];
    assert!(second.nearest_chunks(query(&probe, 1, SearchMode::Approximate)).await.unwrap()[0].is_empty());
    let h = Harness::over_sqlite(first);
    library(&h, 1, 30).await;
    let found = second.nearest_chunks(query(&probe, 3, SearchMode::Approximate)).await.unwrap();
    assert_eq!(found[0].len(), 3);
}

/// A snapshot is a shortcut: a corrupt, truncated or foreign one is rebuilt from the database,
/// never trusted and never a panic.
#[tokio::test]
async fn a_corrupt_or_stale_snapshot_is_rebuilt_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("index");
    let options = || SqliteStoreOptions { vector_snapshots: Some(snapshots.clone()), ..SqliteStoreOptions::default() };
    let store = std::sync::Arc::new(SqliteStore::open(dir.path().join("quire.db"), options()).await.unwrap());
    let h = Harness::over_sqlite(store.clone());
    // Enough vectors for a snapshot to be written.
    let library = library(&h, 3, 800).await;
    let queries: Vec<Vec<f32>> = library.chunks.iter().step_by(97).map(|(_, _, v)| v.clone()).collect();
    let expected: Vec<String> = library.chunks.iter().step_by(97).map(|(id, _, _)| id.clone()).collect();
    // Each stored vector finds its own chunk among its three nearest. Not necessarily first: the
    // index stores f16, and a near-duplicate of a vector can round to the same similarity. Not
    // always either: the search is approximate, and a graph built by concurrent inserts may miss
    // one. A lost, garbled or foreign index finds next to none.
    let finds_its_own = |found: Vec<Vec<Neighbour>>| {
        let hits = found.iter().zip(&expected).filter(|(list, own)| list.iter().any(|n| n.chunk_id == **own)).count();
        assert!(hits * 10 >= expected.len() * 9, "{hits} of {} found their own chunk", expected.len());
    };
    finds_its_own(store.nearest_chunks(query(&queries, 3, SearchMode::Approximate)).await.unwrap());
    // The new vectors were searched exactly; they are folded into the graph, and the snapshot
    // written, once the index is idle or when the store settles its indexes, as a process does
    // before it exits.
    store.settle_indexes().await.unwrap();
    let written: Vec<std::path::PathBuf> =
        std::fs::read_dir(&snapshots).unwrap().map(|entry| entry.unwrap().path()).collect();
    let index_file = written.iter().find(|p| p.extension().is_some_and(|e| e == "usearch")).expect("a snapshot");

    // A fresh process loads the snapshot.
    let reopened = SqliteStore::open(dir.path().join("quire.db"), options()).await.unwrap();
    finds_its_own(reopened.nearest_chunks(query(&queries, 3, SearchMode::Approximate)).await.unwrap());

    let original = std::fs::read(index_file).unwrap();
    for damage in [&original[..original.len() / 2], b"garbage".as_slice(), &[]] {
        std::fs::write(index_file, damage).unwrap();
        let reopened = SqliteStore::open(dir.path().join("quire.db"), options()).await.unwrap();
        let found = reopened.nearest_chunks(query(&queries, 3, SearchMode::Approximate)).await.unwrap();
        finds_its_own(found);
    }
    // A snapshot of another, larger database (here: the same one, seen by an emptied database)
    // is stale and rebuilt: the empty database's answer is empty.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("index")).unwrap();
    for file in std::fs::read_dir(&snapshots).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, other.path().join("index").join(file.file_name().unwrap())).unwrap();
    }
    let empty = SqliteStore::open(
        other.path().join("quire.db"),
        SqliteStoreOptions { vector_snapshots: Some(other.path().join("index")), ..SqliteStoreOptions::default() },
    )
    .await
    .unwrap();
    let found = empty.nearest_chunks(query(&queries, 1, SearchMode::Approximate)).await.unwrap();
    assert!(found.iter().all(Vec::is_empty), "{found:?}");
}
