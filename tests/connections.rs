//! Connections found through the store's indexes, end to end: the lexical engine asks the
//! full-text index for its statistics and candidates instead of reading the library, and still
//! finds nearly all of what the exact in-memory engine finds over the whole library, each with
//! its exact score; and books in scripts beyond Latin (the corpus's Hebrew and Arabic books) pair
//! the same passages across two editions.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use checkpoint_store::{DocumentStore, EnqueueOptions};
use collision_detector::{ChunkRef, ConnectionEngine, LexicalEngine};
use support::{CountingEmbedder, Rig};

/// `(source, target) → score` of every stored connection of one engine.
async fn stored(rig: &Rig, engine: &str) -> BTreeMap<(String, String), f32> {
    let rows: Vec<(String, String, f64)> =
        sqlx::query_as("SELECT source_chunk_id, target_chunk_id, score FROM connections WHERE engine = ?1")
            .bind(engine)
            .fetch_all(rig.store.reader_pool())
            .await
            .unwrap();
    rows.into_iter().map(|(source, target, score)| ((source, target), score as f32)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lexical_connections_through_the_index_are_those_of_the_exact_engine_over_the_library() {
    let rig = Rig::new(CountingEmbedder::new(64)).await;
    let mut documents = Vec::new();
    for (name, bytes) in epub_fixtures::corpus_of(24, 7) {
        documents.push(rig.submit(&name, &bytes).await.document_id);
    }
    rig.drive().await;
    // Each book was connected against the library as it stood then; connect every book again
    // against the whole library, as the exact engine below sees it.
    for document in &documents {
        let chunk_count = rig.store.document(document).await.unwrap().unwrap().chunk_count;
        let payload = worker::JobPayload::detect_connections(document, chunk_count as usize);
        payload.enqueue(rig.store.as_ref(), EnqueueOptions::default()).await.unwrap();
    }
    rig.drive().await;

    let mut library = Vec::new();
    for document in &documents {
        library.extend(rig.store.chunks(document).await.unwrap());
    }
    assert!(library.len() > 60, "a library of {} chunks", library.len());
    let refs: Vec<ChunkRef<'_>> = library
        .iter()
        .map(|c| ChunkRef { chunk_id: &c.id, document_id: &c.document_id, text: &c.text, embedding: None })
        .collect();
    // The exact engine over the whole library: its top five per chunk, and every pair above the
    // threshold with its exact score.
    let every_pair = LexicalEngine { top_k: usize::MAX, ..LexicalEngine::DEFAULT };
    let (mut expected, mut exact_scores) = (BTreeMap::new(), BTreeMap::new());
    for document in &documents {
        let sources: Vec<ChunkRef<'_>> = refs.iter().filter(|c| c.document_id == document).copied().collect();
        for (engine, into) in [(&LexicalEngine::DEFAULT, &mut expected), (&every_pair, &mut exact_scores)] {
            for connection in engine.connect(&sources, &refs) {
                let same_document = sources.iter().any(|s| s.chunk_id == connection.target_chunk_id);
                // A pair within one document is stored once, from its lower chunk id.
                if !(same_document && connection.target_chunk_id < connection.source_chunk_id) {
                    into.insert((connection.source_chunk_id, connection.target_chunk_id), connection.score);
                }
            }
        }
    }
    let found = stored(&rig, "lexical").await;
    assert!(expected.len() > 300, "{} connections expected", expected.len());
    // Every connection stored is a true one, with its exact score.
    for (pair, score) in &found {
        let exact = exact_scores.get(pair).unwrap_or_else(|| panic!("{pair:?} (score {score}) is no connection"));
        assert!((score - exact).abs() < 1e-4, "{pair:?}: {score} against {exact}");
    }
    // And the shortlists the full-text index gives miss almost none of the exact top five.
    let kept = expected.keys().filter(|pair| found.contains_key(*pair)).count();
    let recall = kept as f64 / expected.len() as f64;
    assert!(recall >= 0.97, "recall {recall:.3}: {kept} of {} exact connections kept", expected.len());
}

/// A second edition of a book, rebuilt from the first edition's chunks: the same passages, one
/// chapter each, with every seventh word left out, so no chunk is identical to the first's.
fn second_edition(chunks: &[checkpoint_store::StoredChunk], language: &str) -> Vec<u8> {
    let chapters = chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            let words: Vec<&str> = chunk.text.split_whitespace().filter(|word| !word.starts_with('#')).collect();
            let kept: Vec<&str> =
                words.iter().enumerate().filter(|(position, _)| position % 7 != 3).map(|(_, word)| *word).collect();
            let text = epub_fixtures::escape(&kept.join(" "));
            let file = format!("passage{index}.xhtml");
            epub_fixtures::ChapterSpec::new(&file, &format!("{index}"), vec![epub_fixtures::Block::Paragraph(text)])
        })
        .collect();
    epub_fixtures::build_epub(&epub_fixtures::BookSpec::new("Second edition", "Anon", language, chapters))
}

fn jaccard(a: &str, b: &str) -> f64 {
    let (a, b): (BTreeSet<String>, BTreeSet<String>) =
        (terms::distinct_terms(a).into_iter().collect(), terms::distinct_terms(b).into_iter().collect());
    let union = a.union(&b).count();
    if union == 0 { 0.0 } else { a.intersection(&b).count() as f64 / union as f64 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hebrew_and_arabic_books_pair_the_same_passages_across_editions() {
    let Some(corpus) = epub_fixtures::shared_corpus() else { return };
    for (file, language) in [("idpf_israelsailing.epub", "he"), ("idpf_regime-anticancer-arabic.epub", "ar")] {
        let rig = Rig::new(CountingEmbedder::new(64)).await;
        let bytes = std::fs::read(corpus.join("valid").join(file)).unwrap();
        let first = rig.submit(file, &bytes).await.document_id;
        rig.drive().await;
        let first_chunks = rig.store.chunks(&first).await.unwrap();
        let second = rig.submit("second.epub", &second_edition(&first_chunks, language)).await.document_id;
        rig.drive().await;
        let second_chunks = rig.store.chunks(&second).await.unwrap();
        let text_of: BTreeMap<&str, &str> =
            first_chunks.iter().chain(&second_chunks).map(|c| (c.id.as_str(), c.text.as_str())).collect();

        // The best lexical match of each passage of the second edition, in the first.
        let mut best: BTreeMap<String, (f32, String)> = BTreeMap::new();
        for ((source, target), score) in stored(&rig, "lexical").await {
            let crosses = second_chunks.iter().any(|c| c.id == source) && first_chunks.iter().any(|c| c.id == target);
            if crosses && best.get(&source).is_none_or(|(kept, _)| score > *kept) {
                best.insert(source, (score, target));
            }
        }
        let passages = second_chunks.iter().filter(|c| terms::distinct_terms(&c.text).len() >= 20).count();
        assert!(passages >= 10, "{file}: {passages} passages of 20 terms or more");
        assert!(
            best.len() * 10 >= passages * 8,
            "{file}: {} of {passages} passages found their first edition",
            best.len()
        );
        for (source, (score, target)) in &best {
            // The same passage, not merely the same subject: most of its terms are the source's.
            let overlap = jaccard(text_of[source.as_str()], text_of[target.as_str()]);
            assert!(overlap >= 0.5, "{file}: {source} → {target} (score {score}) shares {overlap:.2} of its terms");
        }
    }
}
