//! The term index's promises, checked against every backend: its frequencies are the chunks that
//! contain each term, counted here independently; a search finds exactly chunks sharing a term,
//! those sharing the most first; a reprocessed document's old chunks never come back; scripts
//! beyond Latin are found; and an index built under another edition of the term rules, or never,
//! is rebuilt when the store opens.

mod common;

use std::collections::{BTreeSet, HashMap};

use checkpoint_store::{Lease, StoredChunk};
use common::{Backend, Harness, backends};

fn chunk(document_id: &str, index: u32, text: &str) -> StoredChunk {
    StoredChunk {
        id: format!("{document_id}-c{index}"),
        document_id: document_id.into(),
        index,
        heading_path: vec![],
        text: text.into(),
        start: 0,
        end: text.len() as u64,
        content_hash: format!("{document_id}-{index}-{}", text.len()),
    }
}

/// Stores one document per entry of `books` (each a list of chunk texts); returns the documents'
/// ids and a lease that every store write accepts.
async fn library(h: &Harness, books: &[&[&str]]) -> (Vec<String>, Lease) {
    let mut ids = Vec::new();
    let mut lease = None;
    for (number, texts) in books.iter().enumerate() {
        let document = h.create_numbered_document(number).await;
        if lease.is_none() {
            h.enqueue(&document).await;
            lease = Some(h.lease_one("w1").await);
        }
        let chunks: Vec<StoredChunk> =
            texts.iter().enumerate().map(|(index, text)| chunk(&document, index as u32, text)).collect();
        h.docs.replace_chunks(lease.unwrap(), &document, &chunks).await.unwrap();
        ids.push(document);
    }
    (ids, lease.unwrap())
}

/// Document frequencies by brute force over the texts, with the term rules themselves.
fn frequencies(texts: &[&str]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for text in texts {
        for term in terms::distinct_terms(text) {
            *counts.entry(term).or_default() += 1;
        }
    }
    counts
}

async fn assert_counts_match(h: &Harness, texts: &[&str]) {
    let expected = frequencies(texts);
    let mut asked: Vec<String> = expected.keys().cloned().collect();
    asked.push("nowhereword".into());
    let counts = h.terms.term_counts(&asked).await.unwrap();
    assert_eq!(counts.chunk_count, texts.len() as u64, "{}: chunk count", h.name);
    assert_eq!(counts.document_frequency, expected, "{}: document frequencies", h.name);
}

/// Asserts that the store's term vectors of the documents' chunks are their texts' counted terms
/// (`books` as given to [`library`]), and that an unknown id is left out.
async fn assert_term_vectors_match(h: &Harness, documents: &[String], books: &[&[&str]]) {
    let mut expected: Vec<(String, terms::TermVector)> = Vec::new();
    for (document, texts) in documents.iter().zip(books) {
        for (index, text) in texts.iter().enumerate() {
            expected.push((format!("{document}-c{index}"), terms::term_vector(text)));
        }
    }
    let mut asked: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    asked.push("no-such-chunk".into());
    let mut got: Vec<(String, terms::TermVector)> =
        h.terms.chunk_terms(&asked).await.unwrap().into_iter().map(|chunk| (chunk.chunk_id, chunk.terms)).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{}: term vectors", h.name);

    // The same chunks with their terms numbered: spelled out, the table gives the same vectors;
    // its terms are sorted, each once, each used, with the library's counts.
    let table = h.terms.term_table(&asked).await.unwrap();
    let mut spelled: Vec<(String, terms::TermVector)> = table
        .chunks
        .iter()
        .map(|chunk| {
            let terms = chunk.terms.iter().map(|&(term, count)| (table.terms[term as usize].clone(), count)).collect();
            (chunk.chunk_id.clone(), terms)
        })
        .collect();
    spelled.sort();
    assert_eq!(spelled, expected, "{}: numbered term vectors", h.name);
    assert!(table.terms.windows(2).all(|pair| pair[0] < pair[1]), "{}: terms sorted, each once", h.name);
    let used: BTreeSet<u32> = table.chunks.iter().flat_map(|chunk| chunk.terms.iter().map(|&(term, _)| term)).collect();
    assert_eq!(used.len(), table.terms.len(), "{}: every term used", h.name);
    let counts = h.terms.term_counts(&table.terms).await.unwrap();
    assert_eq!(table.chunk_count, counts.chunk_count, "{}: chunk count", h.name);
    let frequencies: Vec<u64> =
        table.terms.iter().map(|term| counts.document_frequency.get(term).copied().unwrap_or(0)).collect();
    assert_eq!(table.document_frequency, frequencies, "{}: document frequencies", h.name);
}

const WHALING: &[&str] = &[
    "The whale breached beside the Nantucket harpoon boat at dawn.",
    "A harpoon from Nantucket struck the whale; the boat was dragged.",
    "Ahab paced the quarterdeck thinking of the white whale.",
];
const TEA: &[&str] =
    &["Tea and biscuits were served in the drawing room.", "The drawing room was cold; the tea was weak."];

#[tokio::test]
async fn frequencies_count_the_chunks_containing_each_term_and_follow_a_reprocessing() {
    for h in backends().await {
        let (documents, lease) = library(&h, &[WHALING, TEA]).await;
        let all: Vec<&str> = WHALING.iter().chain(TEA).copied().collect();
        assert_counts_match(&h, &all).await;
        assert_term_vectors_match(&h, &documents, &[WHALING, TEA]).await;

        // Reprocessed into other text: the old chunks' terms leave the counts, the new ones arrive.
        let replaced = ["Queequeg carved his coffin into a life buoy.", "The whale sank out of sight."];
        let chunks: Vec<StoredChunk> =
            replaced.iter().enumerate().map(|(index, text)| chunk(&documents[0], index as u32, text)).collect();
        h.docs.replace_chunks(lease, &documents[0], &chunks).await.unwrap();
        let all: Vec<&str> = replaced.iter().chain(TEA).copied().collect();
        assert_counts_match(&h, &all).await;
        let counts = h.terms.term_counts(&["harpoon".to_owned()]).await.unwrap();
        assert!(counts.document_frequency.is_empty(), "{}: no chunk holds harpoon any more", h.name);
    }
}

#[tokio::test]
async fn a_search_finds_exactly_the_chunks_sharing_a_term_those_sharing_most_first() {
    for h in backends().await {
        let (documents, _) = library(&h, &[WHALING, TEA]).await;
        let query = |terms: &[&str]| terms.iter().map(|t| (t.to_string(), 1.0)).collect::<Vec<_>>();
        let queries = vec![
            query(&["harpoon", "nantucket", "boat"]),
            query(&["biscuits"]),
            query(&["zebra"]),
            query(&[]),
            // Anything a query language would read as syntax is dropped, never an error.
            query(&["whale\" OR \"tea", "near(", "o'clock", "tea"]),
        ];
        let found = h.terms.chunks_sharing_terms(&queries, 10).await.unwrap();
        let first = |index: u32| format!("{}-c{index}", documents[0]);
        let second = |index: u32| format!("{}-c{index}", documents[1]);
        assert_eq!(found.len(), queries.len(), "{}", h.name);
        let mut whaling = found[0].clone();
        // Chunks 0 and 1 hold all three terms; chunk 2 none of them.
        whaling.sort();
        assert_eq!(whaling, [first(0), first(1)], "{}", h.name);
        assert_eq!(found[1], [second(0)], "{}", h.name);
        assert!(found[2].is_empty() && found[3].is_empty(), "{}: {found:?}", h.name);
        let mut tea = found[4].clone();
        tea.sort();
        assert_eq!(tea, [second(0), second(1)], "{}", h.name);

        // Ranked by the summed weight of the terms shared: the chunk sharing both comes first, then
        // by weight; the limit holds.
        let ranked = h.terms.chunks_sharing_terms(&[query(&["quarterdeck", "whale"])], 10).await.unwrap();
        assert_eq!(ranked[0].first(), Some(&first(2)), "{}: {ranked:?}", h.name);
        assert_eq!(ranked[0].len(), 3, "{}: {ranked:?}", h.name);
        let weighted = vec![("tea".to_owned(), 1.0), ("harpoon".to_owned(), 3.0), ("weak".to_owned(), 0.5)];
        let ranked = h.terms.chunks_sharing_terms(&[weighted], 10).await.unwrap();
        assert_eq!(
            ranked[0],
            [first(0), first(1), second(1), second(0)],
            "{}: harpoon, then tea and weak, then tea",
            h.name
        );
        let limited = h.terms.chunks_sharing_terms(&[query(&["whale"])], 2).await.unwrap();
        assert_eq!(limited[0].len(), 2, "{}", h.name);
        assert!(h.terms.chunks_sharing_terms(&[query(&["whale"])], 0).await.unwrap()[0].is_empty());
    }
}

#[tokio::test]
async fn a_reprocessed_documents_old_chunks_never_come_back() {
    for h in backends().await {
        let (documents, lease) = library(&h, &[WHALING, TEA]).await;
        let chunks = vec![chunk(&documents[0], 0, "Starbuck drank coffee on the forecastle.")];
        h.docs.replace_chunks(lease, &documents[0], &chunks).await.unwrap();
        let found = h
            .terms
            .chunks_sharing_terms(
                &[vec![("harpoon".into(), 1.0)], vec![("starbuck".into(), 1.0), ("quarterdeck".into(), 1.0)]],
                10,
            )
            .await
            .unwrap();
        assert!(found[0].is_empty(), "{}: {found:?}", h.name);
        assert_eq!(found[1], [format!("{}-c0", documents[0])], "{}", h.name);
    }
}

#[tokio::test]
async fn pointed_and_unpointed_spellings_and_cjk_text_meet() {
    for h in backends().await {
        let (documents, _) = library(
            &h,
            &[
                &["בְּרֵאשִׁית בָּרָא אֱלֹהִים", "كِتَابٌ جَمِيلٌ"],
                &["בראשית ברא אלהים את השמים", "هذا كتاب جميل جدا", "東京都に住んでいます"],
            ],
        )
        .await;
        let ask = |text: &str| terms::distinct_terms(text).into_iter().map(|term| (term, 1.0)).collect::<Vec<_>>();
        let found = h.terms.chunks_sharing_terms(&[ask("בְּרֵאשִׁית"), ask("كِتَاب"), ask("京都")], 10).await.unwrap();
        let sorted = |mut ids: Vec<String>| {
            ids.sort();
            ids
        };
        assert_eq!(sorted(found[0].clone()), [format!("{}-c0", documents[0]), format!("{}-c0", documents[1])]);
        assert_eq!(sorted(found[1].clone()), [format!("{}-c1", documents[0]), format!("{}-c1", documents[1])]);
        assert_eq!(found[2], [format!("{}-c2", documents[1])], "{}", h.name);
    }
}

#[tokio::test]
async fn an_index_of_another_edition_or_none_is_rebuilt_when_the_store_opens() {
    for h in backends().await {
        let (documents, _) = library(&h, &[WHALING, TEA]).await;
        let all: Vec<&str> = WHALING.iter().chain(TEA).copied().collect();
        // As the migrations leave a database indexed by nobody, as an older binary leaves it (its
        // chunks without term vectors), and as another edition of the term rules leaves it.
        let (forget, older, other_rules): (&'static str, &'static str, &'static str) = match h.backend {
            Backend::Sqlite(_) => (
                "INSERT INTO chunk_terms (chunk_terms) VALUES ('delete-all'); DELETE FROM term_index_edition;",
                "DELETE FROM chunk_term_vectors; UPDATE term_index_edition SET edition = 'terms-1';",
                "INSERT INTO chunk_terms (chunk_terms) VALUES ('delete-all'); UPDATE chunk_term_counts SET chunks = 99; \
                 UPDATE term_index_edition SET edition = 'terms-0';",
            ),
            Backend::Postgres(_) => (
                "UPDATE chunks SET terms = ''; DELETE FROM chunk_term_counts; DELETE FROM chunk_term_postings; \
                 DELETE FROM term_index_edition;",
                "UPDATE chunks SET term_vector = NULL, terms = ''; DELETE FROM chunk_term_postings; \
                 UPDATE term_index_edition SET edition = 'terms-1';",
                "UPDATE chunks SET terms = ''; UPDATE chunk_term_counts SET chunks = 99; \
                 DELETE FROM chunk_term_postings; UPDATE term_index_edition SET edition = 'terms-0';",
            ),
        };
        for (situation, sql) in
            [("never indexed", forget), ("indexed without vectors", older), ("other rules", other_rules)]
        {
            h.raw.execute(sql).await;
            let whale = [vec![("whale".to_owned(), 1.0)]];
            // The stores answer from their in-process caches, which follow the stored term vectors,
            // not the index tables damaged here: ask the database itself.
            let emptied = match &h.backend {
                Backend::Sqlite(store) => store.chunks_sharing_terms_in_database(&whale, 10).await.unwrap(),
                Backend::Postgres(store) => store.chunks_sharing_terms_in_database(&whale, 10).await.unwrap(),
            };
            assert!(emptied[0].is_empty(), "{}: {situation}: the index was emptied", h.name);
            // Until the index is rebuilt, a chunk without a stored vector is read from its text.
            assert_term_vectors_match(&h, &documents, &[WHALING, TEA]).await;
            h.migrate().await;
            assert_counts_match(&h, &all).await;
            assert_term_vectors_match(&h, &documents, &[WHALING, TEA]).await;
            let found = h.terms.chunks_sharing_terms(&[vec![("whale".into(), 1.0)]], 10).await.unwrap();
            assert_eq!(found[0].len(), 3, "{}: {situation}", h.name);
        }
    }
}

#[tokio::test]
async fn concurrent_reprocessing_of_documents_sharing_terms_keeps_the_counts_exact() {
    for h in backends().await {
        let books: Vec<Vec<String>> = (0..6)
            .map(|book| {
                (0..20)
                    .map(|index| {
                        // Shared words in a different order per book, plus a word of the book's own.
                        let shared = ["whale", "harpoon", "ocean", "captain", "voyage", "island", "storm", "anchor"];
                        let rotated: Vec<&str> =
                            shared.iter().cycle().skip(book + index).take(3 + index % 4).copied().collect();
                        format!("{} volume{book} passage{index}", rotated.join(" "))
                    })
                    .collect()
            })
            .collect();
        let slices: Vec<Vec<&str>> = books.iter().map(|book| book.iter().map(String::as_str).collect()).collect();
        let refs: Vec<&[&str]> = slices.iter().map(Vec::as_slice).collect();
        let (documents, lease) = library(&h, &refs).await;
        // Every book reprocessed twice at once, into its text and back: no deadlock, no lost update.
        let mut tasks = Vec::new();
        for (document, book) in documents.iter().zip(&books) {
            let (docs, document, book) = (h.docs.clone(), document.clone(), book.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..2 {
                    let chunks: Vec<StoredChunk> = book
                        .iter()
                        .enumerate()
                        .map(|(index, text)| chunk(&document, index as u32, &format!("{text} round{round}")))
                        .collect();
                    docs.replace_chunks(lease, &document, &chunks).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let texts: Vec<String> = books.iter().flatten().map(|text| format!("{text} round1")).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_counts_match(&h, &texts).await;
        let distinct: BTreeSet<String> = texts.iter().flat_map(|text| terms::distinct_terms(text)).collect();
        assert!(distinct.contains("round1") && !distinct.contains("round0"));
    }
}

#[tokio::test]
async fn every_indexed_term_is_found_even_those_that_read_as_query_syntax() {
    // FTS5 reads NEAR, AND, OR and NOT as operators, `*` as a prefix and `^` as an anchor; a
    // term must be looked up as itself whatever it spells, and a term of many kinds at once.
    const TEXTS: &[&str] = &[
        "near the whaling station in 1851",
        "not a whale, nor a leviathan: a 2nd mate",
        "and or not near",
        "東京 ﬁsh café naïve straße",
    ];
    for h in backends().await {
        let (documents, _) = library(&h, &[TEXTS]).await;
        let asked: BTreeSet<String> = TEXTS.iter().flat_map(|text| terms::distinct_terms(text)).collect();
        let queries: Vec<Vec<(String, f32)>> = asked.iter().map(|term| vec![(term.clone(), 1.0)]).collect();
        let found = h.terms.chunks_sharing_terms(&queries, 10).await.unwrap();
        for (term, found) in asked.iter().zip(&found) {
            let expected: BTreeSet<String> = TEXTS
                .iter()
                .enumerate()
                .filter(|(_, text)| terms::distinct_terms(text).contains(term))
                .map(|(index, _)| format!("{}-c{index}", documents[0]))
                .collect();
            let found: BTreeSet<String> = found.iter().cloned().collect();
            assert_eq!(found, expected, "{}: {term:?}", h.name);
        }
    }
}
