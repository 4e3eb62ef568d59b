//! The in-process term cache against the database it caches, on both backends: after every
//! change, made by this store or by another process's store on the same database, the cache's
//! counts, term vectors and search answers are the database's own. The changes include the one
//! that reuses keys on SQLite (reprocessing the newest document, whose chunks held the highest
//! rowids) and, on PostgreSQL, chunks and departures committed after others that took higher
//! numbers.

mod common;

use std::collections::BTreeSet;

use checkpoint_store::{
    ChunkTerms, Lease, PgStore, PgStoreOptions, SqliteStore, SqliteStoreOptions, StoredChunk, TermCounts, TermIndex,
    WeightedTerms,
};
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

/// The answers of a store's database itself, not its cache.
async fn counts_in_database(database: &Backend, terms: &[String]) -> TermCounts {
    match database {
        Backend::Sqlite(store) => store.term_counts_in_database(terms).await,
        Backend::Postgres(store) => store.term_counts_in_database(terms).await,
    }
    .unwrap()
}

async fn chunk_terms_in_database(database: &Backend, ids: &[String]) -> Vec<ChunkTerms> {
    match database {
        Backend::Sqlite(store) => store.chunk_terms_in_database(ids).await,
        Backend::Postgres(store) => store.chunk_terms_in_database(ids).await,
    }
    .unwrap()
}

async fn sharing_in_database(database: &Backend, queries: &[WeightedTerms], limit: usize) -> Vec<Vec<String>> {
    match database {
        Backend::Sqlite(store) => store.chunks_sharing_terms_in_database(queries, limit).await,
        Backend::Postgres(store) => store.chunks_sharing_terms_in_database(queries, limit).await,
    }
    .unwrap()
}

/// Asserts that `cache` (a store answering from its cache) and `database` answer alike, for every
/// term and chunk id of `texts` (document id → chunk texts).
async fn assert_cache_matches_database(cache: &dyn TermIndex, database: &Backend, ids: &[String], step: &str) {
    let mut terms: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    terms.push("nowhereword".into());
    assert_eq!(cache.term_counts(&terms).await.unwrap(), counts_in_database(database, &terms).await, "{step}: counts");
    let sorted = |mut chunks: Vec<checkpoint_store::ChunkTerms>| {
        chunks.sort_by(|a, b| a.chunk_id.cmp(&b.chunk_id));
        chunks
    };
    let in_database = sorted(chunk_terms_in_database(database, ids).await);
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
    let counts = counts_in_database(database, &table.terms).await;
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
        sharing_in_database(database, &queries, 7).await,
        "{step}: search"
    );
}

#[tokio::test]
async fn the_cache_answers_as_the_database_through_additions_reprocessings_and_reused_keys() {
    for h in common::backends().await {
        cache_follows_changes(&h).await;
    }
}

async fn cache_follows_changes(h: &Harness) {
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
        assert_cache_matches_database(&*h.terms, &h.backend, &ids, &format!("{}, step {step}", h.name)).await;
    }
}

/// A second store on the same database: another process, as far as either store can tell.
async fn another_process(h: &Harness) -> Box<dyn TermIndex> {
    match &h.backend {
        Backend::Sqlite(_) => {
            let path = h.database_file().expect("a file database");
            Box::new(SqliteStore::open(&path, SqliteStoreOptions::default()).await.unwrap())
        }
        Backend::Postgres(store) => {
            let url = common::postgres_url().expect("a PostgreSQL harness has a URL");
            let options =
                PgStoreOptions { schema: store.schema().to_owned(), clock: store.clock(), ..PgStoreOptions::default() };
            Box::new(PgStore::connect(&url, options).await.unwrap())
        }
    }
}

#[tokio::test]
async fn another_process_s_changes_reach_the_cache() {
    for h in common::backends().await {
        let reader = another_process(&h).await;
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
            assert_cache_matches_database(&*reader, &h.backend, &ids, &format!("{}, step {step}", h.name)).await;
        }
    }
}

/// Adds a chunk to `document` as `replace_chunks` would (its postings, counts and the document's
/// chunk count with it), in a transaction the caller commits: its key is taken now.
async fn insert_chunk_uncommitted(tx: &mut sqlx::PgTransaction<'static>, document: &str, id: &str, term: &str) {
    sqlx::query(
        "INSERT INTO chunks (id, document_id, chunk_index, heading_path, text, start_offset, end_offset, \
             content_hash, terms, term_vector) \
         VALUES ($1, $2, 0, '[]'::jsonb, $3 || ' ' || $3, 0, 1, $1, array_to_tsvector(ARRAY[$3]), \
             '{\"' || $3 || '\":2}')",
    )
    .bind(id)
    .bind(document)
    .bind(term)
    .execute(&mut **tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO chunk_term_postings (term, chunk_seq) SELECT $2, seq FROM chunks WHERE id = $1")
        .bind(id)
        .bind(term)
        .execute(&mut **tx)
        .await
        .unwrap();
    change_counts(tx, document, term, 1).await;
}

async fn change_counts(tx: &mut sqlx::PgTransaction<'static>, document: &str, term: &str, change: i64) {
    sqlx::query(
        "INSERT INTO chunk_term_counts (term, chunks) VALUES ($1, $2) \
         ON CONFLICT (term) DO UPDATE SET chunks = chunk_term_counts.chunks + excluded.chunks",
    )
    .bind(term)
    .bind(change)
    .execute(&mut **tx)
    .await
    .unwrap();
    sqlx::query("UPDATE documents SET chunk_count = chunk_count + $2 WHERE id = $1")
        .bind(document)
        .bind(change)
        .execute(&mut **tx)
        .await
        .unwrap();
}

/// PostgreSQL numbers chunks and departures from sequences: a transaction that took a lower
/// number than a committed one may commit after the cache caught up past it. Both are found.
#[tokio::test]
async fn chunks_and_departures_committed_after_higher_numbered_ones_reach_the_cache() {
    let Some(h) = common::postgres().await else { return };
    let Backend::Postgres(store) = &h.backend else { unreachable!("a PostgreSQL harness") };
    let late_document = h.create_numbered_document(0).await;
    let document = h.create_numbered_document(1).await;
    h.enqueue(&document).await;
    let lease = h.lease_one("w1").await;
    let mut stream = Stream(11);
    let mut ids: BTreeSet<String> = BTreeSet::from(["late-chunk".to_owned()]);
    let mut replace = async |ids: &mut BTreeSet<String>, step: &str| {
        let texts: Vec<String> = (0..3).map(|_| stream.text()).collect();
        let stored = chunks(&document, &texts);
        ids.extend(stored.iter().map(|chunk| chunk.id.clone()));
        h.docs.replace_chunks(lease, &document, &stored).await.unwrap();
        let listed: Vec<String> = ids.iter().cloned().collect();
        assert_cache_matches_database(&*h.terms, &h.backend, &listed, step).await;
    };
    let late = ["late-chunk".to_owned()];
    replace(&mut ids, "before").await;

    // A chunk takes its key, then chunks with higher keys commit and the cache catches up.
    let mut adding = store.pool().begin().await.unwrap();
    insert_chunk_uncommitted(&mut adding, &late_document, "late-chunk", "zeppelin").await;
    replace(&mut ids, "a chunk in flight").await;
    assert_eq!(h.terms.chunk_terms(&late).await.unwrap(), []);
    adding.commit().await.unwrap();
    replace(&mut ids, "the chunk committed").await;
    assert_eq!(h.terms.chunk_terms(&late).await.unwrap().len(), 1, "found below the highest key");

    // A deletion takes its departure number, then higher-numbered departures commit.
    let mut removing = store.pool().begin().await.unwrap();
    sqlx::query("DELETE FROM chunks WHERE id = 'late-chunk'").execute(&mut *removing).await.unwrap();
    change_counts(&mut removing, &late_document, "zeppelin", -1).await;
    replace(&mut ids, "a departure in flight").await;
    assert_eq!(h.terms.chunk_terms(&late).await.unwrap().len(), 1);
    removing.commit().await.unwrap();
    replace(&mut ids, "the departure committed").await;
    assert_eq!(h.terms.chunk_terms(&late).await.unwrap(), [], "the late departure is applied");
}

/// A rebuild under other term rules rewrites every chunk's term vector under the same key; a
/// running store's cache reads them again.
#[tokio::test]
async fn a_rebuild_by_another_process_reaches_the_cache() {
    for h in common::backends().await {
        let document = h.create_numbered_document(0).await;
        h.enqueue(&document).await;
        let lease = h.lease_one("w1").await;
        let texts = vec!["whale harpoon lantern".to_owned(), "granite meadow whale".to_owned()];
        let stored = chunks(&document, &texts);
        let ids: Vec<String> = stored.iter().map(|chunk| chunk.id.clone()).collect();
        h.docs.replace_chunks(lease, &document, &stored).await.unwrap();
        assert_cache_matches_database(&*h.terms, &h.backend, &ids, h.name).await;
        // On PostgreSQL, vectors as other rules would cut them, rewritten in place: the cache
        // follows. Then an edition that makes the next store to open rebuild the index, which
        // rewrites every vector (SQLite: removes and stores them again, under the same keys).
        if let Backend::Postgres(_) = &h.backend {
            h.raw.execute("UPDATE chunks SET term_vector = '{\"oldrules\":1}'").await;
            let old = h.terms.chunk_terms(&ids).await.unwrap();
            assert!(old.iter().all(|chunk| chunk.terms == [("oldrules".to_owned(), 1)]), "{old:?}");
        }
        h.raw.execute("UPDATE term_index_edition SET edition = 'older'").await;
        let _rebuilt = another_process(&h).await;
        assert_cache_matches_database(&*h.terms, &h.backend, &ids, &format!("{}: rebuilt", h.name)).await;
        let new = h.terms.chunk_terms(&ids).await.unwrap();
        assert!(new.iter().all(|chunk| chunk.terms.iter().any(|(term, _)| term == "whale")), "{}: {new:?}", h.name);
    }
}

/// A document deleted by hand takes its chunks with it (`ON DELETE CASCADE`): their departures
/// are logged all the same, and the cache drops them.
#[tokio::test]
async fn chunks_deleted_with_their_document_leave_the_cache() {
    for h in common::backends().await {
        let kept = h.create_numbered_document(0).await;
        let deleted = h.create_numbered_document(1).await;
        h.enqueue(&kept).await;
        let lease = h.lease_one("w1").await;
        let texts = vec!["whale harpoon lantern".to_owned(), "granite meadow whale".to_owned()];
        let mut ids = Vec::new();
        for document in [&kept, &deleted] {
            let stored = chunks(document, &texts);
            ids.extend(stored.iter().map(|chunk| chunk.id.clone()));
            h.docs.replace_chunks(lease, document, &stored).await.unwrap();
        }
        assert_cache_matches_database(&*h.terms, &h.backend, &ids, h.name).await;
        let whale = ["whale".to_owned()];
        assert_eq!(h.terms.term_counts(&whale).await.unwrap().chunk_count, 4);
        h.raw.execute("DELETE FROM documents WHERE content_hash = 'book-1'").await;
        let counts = h.terms.term_counts(&whale).await.unwrap();
        assert_eq!((counts.chunk_count, counts.document_frequency["whale"]), (2, 2), "{}", h.name);
        let found = h.terms.chunk_terms(&ids).await.unwrap();
        assert_eq!(found.len(), 2, "{}: only the kept document's chunks", h.name);
    }
}
