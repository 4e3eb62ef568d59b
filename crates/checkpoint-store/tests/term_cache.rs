//! The in-process term cache against the database it caches (SQLite): after every change, made by
//! this store or by another process's store on the same file, the cache's counts, term vectors
//! and search answers are the database's own. The changes include the one that reuses keys:
//! reprocessing the newest document, whose chunks held the highest rowids.

mod common;

use std::collections::BTreeSet;

use checkpoint_store::{Lease, SqliteStore, SqliteStoreOptions, StoredChunk, TermIndex};
use common::{Backend, Harness};

const WORDS: &[&str] = &[
    "whale",
    "harpoon",
    "nantucket",
    "quarterdeck",
    "biscuit",
    "drawing",
    "lantern",
    "compass",
    "tempest",
    "orchard",
    "meadow",
    "granite",
    "violin",
    "sonnet",
    "glacier",
    "harbour",
    "cinnamon",
    "falcon",
    "quarry",
    "thimble",
];

/// A deterministic stream of numbers (xorshift), so the sequence of changes is the same each run.
struct Stream(u64);

impl Stream {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }

    fn text(&mut self) -> String {
        let words = 3 + self.next(8);
        (0..words).map(|_| WORDS[self.next(WORDS.len())]).collect::<Vec<_>>().join(" ")
    }
}

fn chunks(document_id: &str, texts: &[String]) -> Vec<StoredChunk> {
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| StoredChunk {
            id: format!("{document_id}-c{index}"),
            document_id: document_id.into(),
            index: index as u32,
            heading_path: vec![],
            text: text.clone(),
            start: 0,
            end: text.len() as u64,
            content_hash: format!("{document_id}-{index}-{text}"),
        })
        .collect()
}

/// The store behind a harness.
fn sqlite_store(h: &Harness) -> &SqliteStore {
    match &h.backend {
        Backend::Sqlite(store) => store,
        _ => unreachable!("the term cache is SQLite's"),
    }
}

/// Asserts that `cache` (a store answering from its cache) and `database` answer alike, for every
/// term and chunk id of `texts` (document id → chunk texts).
async fn assert_cache_matches_database(cache: &SqliteStore, database: &SqliteStore, ids: &[String], step: &str) {
    let mut terms: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    terms.push("nowhereword".into());
    assert_eq!(
        cache.term_counts(&terms).await.unwrap(),
        database.term_counts_in_database(&terms).await.unwrap(),
        "{step}: counts"
    );
    let sorted = |mut chunks: Vec<checkpoint_store::ChunkTerms>| {
        chunks.sort_by(|a, b| a.chunk_id.cmp(&b.chunk_id));
        chunks
    };
    let in_database = sorted(database.chunk_terms_in_database(ids).await.unwrap());
    assert_eq!(sorted(cache.chunk_terms(ids).await.unwrap()), in_database, "{step}: term vectors");
    // The numbered table, spelled out, holds the database's vectors and counts.
    let table = cache.term_table(ids).await.unwrap();
    let spelled: Vec<checkpoint_store::ChunkTerms> = table
        .chunks
        .iter()
        .map(|chunk| checkpoint_store::ChunkTerms {
            chunk_id: chunk.chunk_id.clone(),
            terms: chunk.terms.iter().map(|&(term, count)| (table.terms[term as usize].clone(), count)).collect(),
        })
        .collect();
    assert_eq!(sorted(spelled), in_database, "{step}: numbered term vectors");
    let counts = database.term_counts_in_database(&table.terms).await.unwrap();
    assert_eq!(table.chunk_count, counts.chunk_count, "{step}: numbered chunk count");
    let frequencies: Vec<u64> =
        table.terms.iter().map(|term| counts.document_frequency.get(term).copied().unwrap_or(0)).collect();
    assert_eq!(table.document_frequency, frequencies, "{step}: numbered document frequencies");
    let mut queries: Vec<Vec<(String, f32)>> = WORDS
        .chunks(3)
        .map(|words| words.iter().enumerate().map(|(i, w)| (w.to_string(), 1.0 + i as f32)).collect())
        .collect();
    // Equal weights (ties ranked by key) and a weightless term (found last, but found).
    queries.push(WORDS.iter().map(|w| (w.to_string(), 1.0)).collect());
    queries.push(vec![(WORDS[0].to_string(), 0.0), (WORDS[1].to_string(), 2.0)]);
    assert_eq!(
        cache.chunks_sharing_terms(&queries, 7).await.unwrap(),
        database.chunks_sharing_terms_in_database(&queries, 7).await.unwrap(),
        "{step}: search"
    );
}

#[tokio::test]
async fn the_cache_answers_as_the_database_through_additions_reprocessings_and_reused_keys() {
    let h = common::sqlite().await;
    let store = sqlite_store(&h);
    let mut stream = Stream(0x9e37_79b9_7f4a_7c15);
    let first = h.create_numbered_document(0).await;
    h.enqueue(&first).await;
    let lease: Lease = h.lease_one("w1").await;
    let mut documents = vec![first];
    let mut all_ids: BTreeSet<String> = BTreeSet::new();
    for step in 0..40 {
        match stream.next(4) {
            // A new document.
            0 | 1 => {
                let id = h.create_numbered_document(documents.len()).await;
                documents.push(id);
            }
            // Reprocess the newest document: its chunks held the highest keys, which SQLite gives
            // to its new chunks.
            2 => {}
            // Reprocess any document, into fewer or more chunks, or none.
            _ => {
                let pick = stream.next(documents.len());
                let last = documents.len() - 1;
                documents.swap(pick, last);
            }
        }
        let document = documents.last().unwrap().clone();
        let texts: Vec<String> = (0..stream.next(6)).map(|_| stream.text()).collect();
        let stored = chunks(&document, &texts);
        all_ids.extend(stored.iter().map(|chunk| chunk.id.clone()));
        h.docs.replace_chunks(lease, &document, &stored).await.unwrap();
        let ids: Vec<String> = all_ids.iter().cloned().collect();
        assert_cache_matches_database(store, store, &ids, &format!("step {step}")).await;
    }
}

#[tokio::test]
async fn another_process_s_changes_reach_the_cache() {
    let h = common::sqlite().await;
    let writer = sqlite_store(&h);
    let path = h.database_file().expect("a file database");
    let reader = SqliteStore::open(&path, SqliteStoreOptions::default()).await.unwrap();
    let document = h.create_numbered_document(0).await;
    h.enqueue(&document).await;
    let lease = h.lease_one("w1").await;
    let mut stream = Stream(7);
    let mut ids = BTreeSet::new();
    for step in 0..6 {
        let texts: Vec<String> = (0..1 + step % 4).map(|_| stream.text()).collect();
        let stored = chunks(&document, &texts);
        ids.extend(stored.iter().map(|chunk| chunk.id.clone()));
        h.docs.replace_chunks(lease, &document, &stored).await.unwrap();
        let ids: Vec<String> = ids.iter().cloned().collect();
        // The reader's cache (built at its first answer) follows the writer's changes.
        assert_cache_matches_database(&reader, writer, &ids, &format!("step {step}")).await;
    }
}
