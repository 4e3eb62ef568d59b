//! Behaviour of the engines and of `detect`, checked through one invariant-asserting helper, and
//! against brute-force references that score every pair from the documented formulas.
//!
//! One file past 500 lines: the examples, the properties and the references share one set of
//! test chunks, generators and helpers.

use std::collections::{BTreeMap, BTreeSet};

use collision_detector::{
    CandidateQuery, ChunkRef, Connection, ConnectionEngine, CountedChunk, LexicalEngine, LibraryTerms, SemanticEngine,
    Shortlist, detect,
};
use proptest::prelude::*;

/// Owned test chunk; `refs` borrows a slice of them as the engines expect.
#[derive(Debug, Clone)]
struct TestChunk {
    id: String,
    doc: String,
    text: String,
    embedding: Option<Vec<f32>>,
}

fn chunk(id: &str, text: &str, embedding: Option<Vec<f32>>) -> TestChunk {
    let doc = id.split('/').next().unwrap_or(id).to_owned();
    TestChunk { id: id.to_owned(), doc, text: text.to_owned(), embedding }
}

fn refs(chunks: &[TestChunk]) -> Vec<ChunkRef<'_>> {
    chunks
        .iter()
        .map(|c| ChunkRef { chunk_id: &c.id, document_id: &c.doc, text: &c.text, embedding: c.embedding.as_deref() })
        .collect()
}

/// Runs one engine on (sources, candidates), asserts every promise, and returns the connections.
fn check(
    engine: &dyn ConnectionEngine,
    top_k: usize,
    min_score: f32,
    sources: &[TestChunk],
    candidates: &[TestChunk],
) -> Vec<Connection> {
    let (source_refs, candidate_refs) = (refs(sources), refs(candidates));
    let connections = engine.connect(&source_refs, &candidate_refs);
    for c in &connections {
        assert_ne!(c.source_chunk_id, c.target_chunk_id, "self-connection {c:?}");
        assert!(c.score.is_finite(), "score not finite {c:?}");
        assert!(c.score >= min_score, "below threshold {c:?}");
        assert_eq!(c.engine, engine.name());
        assert!(sources.iter().any(|s| s.id == c.source_chunk_id));
        assert!(candidates.iter().any(|s| s.id == c.target_chunk_id));
        let per_source = connections.iter().filter(|o| o.source_chunk_id == c.source_chunk_id);
        assert!(per_source.clone().count() <= top_k, "top_k exceeded");
        let mut targets: Vec<_> = per_source.map(|o| &o.target_chunk_id).collect();
        targets.sort();
        targets.dedup();
        assert_eq!(
            targets.len(),
            connections.iter().filter(|o| o.source_chunk_id == c.source_chunk_id).count(),
            "duplicate target"
        );
    }
    // Deterministic, also when the candidates come in another order (compared via `detect`,
    // whose order does not depend on input order).
    assert_eq!(connections, engine.connect(&source_refs, &candidate_refs));
    let mut reversed = candidate_refs.clone();
    reversed.reverse();
    assert_eq!(detect(&[engine], &source_refs, &candidate_refs), detect(&[engine], &source_refs, &reversed),);
    connections
}

fn semantic(top_k: usize, min_score: f32) -> SemanticEngine {
    SemanticEngine { top_k, min_score }
}

fn lexical(top_k: usize, min_score: f32) -> LexicalEngine {
    LexicalEngine { top_k, min_score }
}

/// A small library of unrelated passages so that IDF means something.
fn library() -> Vec<TestChunk> {
    [
        ("moby/1", "Call me Ishmael. The whale surfaced and the harpooneer from Nantucket readied his harpoon."),
        ("moby/2", "The harpooneer of Nantucket struck the great whale with a harpoon at dawn."),
        ("cook/1", "Whisk the eggs with sugar, fold in the flour and bake the sponge cake for twenty minutes."),
        ("cook/2", "Knead the dough, let it rise overnight, then bake the bread in a hot oven."),
        ("astro/1", "The telescope revealed Jupiter's moons orbiting in the cold darkness of space."),
        ("law/1", "The tribunal adjourned after the defendant's counsel filed an appeal on procedural grounds."),
    ]
    .into_iter()
    .map(|(id, text)| chunk(id, text, None))
    .collect()
}

#[test]
fn identical_embeddings_connect_with_score_one() {
    let chunks = vec![
        chunk("a/1", "", Some(vec![0.3, -0.2, 0.9])),
        chunk("b/1", "", Some(vec![0.6, -0.4, 1.8])),
        chunk("b/2", "", Some(vec![-0.3, 0.2, -0.9])),
    ];
    let got = check(&semantic(5, 0.75), 5, 0.75, &chunks[..1], &chunks);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target_chunk_id, "b/1");
    assert!((got[0].score - 1.0).abs() < 1e-6);
    assert_eq!(got[0].reason, "cosine similarity 1.00");
}

#[test]
fn identical_texts_connect_with_score_about_one() {
    let mut chunks = library();
    chunks.push(chunk("copy/1", &chunks[4].text.clone(), None));
    let got = check(&lexical(5, 0.3), 5, 0.3, &chunks[4..5], &chunks);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].target_chunk_id, "copy/1");
    assert!((got[0].score - 1.0).abs() < 1e-5, "{got:?}");
    // Even in a library of just the two copies, where every term is in every chunk.
    let got = check(&lexical(5, 0.3), 5, 0.3, &chunks[4..5], &chunks[4..]);
    assert!((got[0].score - 1.0).abs() < 1e-5, "{got:?}");
}

#[test]
fn related_texts_connect_and_name_their_shared_rare_terms() {
    let chunks = library();
    let got = check(&LexicalEngine::default(), 5, 0.3, &chunks[..1], &chunks);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].target_chunk_id, "moby/2");
    assert_eq!(got[0].engine, "lexical");
    // Four rare terms tie (each in both chunks only, once); the reason names three, alphabetically.
    assert_eq!(got[0].reason, "shared terms: harpoon, harpooneer, nantucket");
}

#[test]
fn unrelated_texts_do_not_connect() {
    let chunks = library();
    for source in 2..chunks.len() {
        let got = check(&LexicalEngine::default(), 5, 0.3, &chunks[source..=source], &chunks);
        assert!(got.is_empty(), "{got:?}");
    }
    let orthogonal = vec![chunk("a/1", "", Some(vec![1.0, 0.0])), chunk("b/1", "", Some(vec![0.0, 1.0]))];
    assert!(check(&SemanticEngine::default(), 5, 0.75, &orthogonal, &orthogonal).is_empty());
}

#[test]
fn a_chunk_never_connects_to_itself() {
    let only = vec![chunk("a/1", "whale harpoon nantucket", Some(vec![1.0, 2.0]))];
    assert!(check(&semantic(5, -1.0), 5, -1.0, &only, &only).is_empty());
    assert!(check(&lexical(5, 0.0), 5, 0.0, &only, &only).is_empty());
}

#[test]
fn connections_within_one_document_are_allowed() {
    let chunks = vec![
        chunk("a/1", "whale harpoon nantucket", Some(vec![1.0, 0.0])),
        chunk("a/2", "whale harpoon nantucket", Some(vec![1.0, 0.01])),
    ];
    assert_eq!(check(&SemanticEngine::default(), 5, 0.75, &chunks, &chunks).len(), 2);
    assert_eq!(check(&LexicalEngine::default(), 5, 0.3, &chunks, &chunks).len(), 2);
}

#[test]
fn top_k_keeps_the_best_with_ties_broken_by_chunk_id() {
    let mut chunks = vec![chunk("src/1", "", Some(vec![1.0, 0.0]))];
    for (id, y) in [("z", 0.0), ("y", 0.0), ("x", 0.1), ("w", 0.2), ("v", 0.3)] {
        chunks.push(chunk(id, "", Some(vec![1.0, y])));
    }
    let got = check(&semantic(3, 0.0), 3, 0.0, &chunks[..1], &chunks);
    let targets: Vec<_> = got.iter().map(|c| c.target_chunk_id.as_str()).collect();
    assert_eq!(targets, ["y", "z", "x"]);
    assert!(check(&semantic(0, 0.0), 0, 0.0, &chunks[..1], &chunks).is_empty());
}

#[test]
fn threshold_is_respected() {
    let chunks = vec![
        chunk("s", "", Some(vec![1.0, 0.0])),
        chunk("close", "", Some(vec![1.0, 0.1])), // cosine ~0.995
        chunk("far", "", Some(vec![1.0, 1.0])),   // cosine ~0.707
    ];
    let got = check(&semantic(5, 0.75), 5, 0.75, &chunks[..1], &chunks);
    assert_eq!(got.iter().map(|c| c.target_chunk_id.as_str()).collect::<Vec<_>>(), ["close"]);
    assert_eq!(check(&semantic(5, 0.7), 5, 0.7, &chunks[..1], &chunks).len(), 2);
    assert!(check(&semantic(5, 1.01), 5, 1.01, &chunks[..1], &chunks).is_empty());
}

#[test]
fn chunks_without_usable_embeddings_are_skipped() {
    let chunks = vec![
        chunk("s", "", Some(vec![1.0, 0.0])),
        chunk("none", "", None),
        chunk("zero", "", Some(vec![0.0, 0.0])),
        chunk("nan", "", Some(vec![f32::NAN, 1.0])),
        chunk("short", "", Some(vec![1.0])),
        chunk("good", "", Some(vec![2.0, 0.0])),
    ];
    let got = check(&semantic(10, -1.0), 10, -1.0, &chunks[..1], &chunks);
    assert_eq!(got.iter().map(|c| c.target_chunk_id.as_str()).collect::<Vec<_>>(), ["good"]);
    // Sources without an embedding get no connections.
    assert!(check(&semantic(10, -1.0), 10, -1.0, &chunks[1..5], &chunks).is_empty());
}

#[test]
fn a_candidate_listed_twice_is_connected_once() {
    let chunks = vec![
        chunk("s", "whale harpoon", Some(vec![1.0, 0.0])),
        chunk("t", "whale harpoon", Some(vec![1.0, 0.0])),
        chunk("t", "whale harpoon", Some(vec![1.0, 0.0])),
    ];
    assert_eq!(check(&SemanticEngine::default(), 5, 0.75, &chunks[..1], &chunks).len(), 1);
    assert_eq!(check(&LexicalEngine::default(), 5, 0.3, &chunks[..1], &chunks).len(), 1);
}

#[test]
fn detect_runs_every_engine_in_a_fixed_order() {
    let mut chunks = library();
    for (i, c) in chunks.iter_mut().enumerate() {
        c.embedding = Some(if c.id.starts_with("moby") { vec![1.0, 0.0] } else { vec![0.0, i as f32] });
    }
    let (semantic, lexical) = (SemanticEngine::default(), LexicalEngine::default());
    let all = refs(&chunks);
    let got = detect(&[&semantic, &lexical], &all[..2], &all);
    let summary: Vec<_> =
        got.iter().map(|c| (c.source_chunk_id.as_str(), c.engine.as_str(), c.target_chunk_id.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("moby/1", "lexical", "moby/2"),
            ("moby/1", "semantic", "moby/2"),
            ("moby/2", "lexical", "moby/1"),
            ("moby/2", "semantic", "moby/1"),
        ]
    );
    assert_eq!(got, detect(&[&lexical, &semantic], &all[..2], &all));
}

fn arbitrary_chunks() -> impl Strategy<Value = Vec<TestChunk>> {
    let component = prop_oneof![
        4 => -10.0f32..10.0,
        1 => any::<f32>(),
        1 => Just(0.0f32),
    ];
    let embedding = prop::option::of(prop::collection::vec(component, 0..5));
    let text =
        prop_oneof!["[a-e ]{0,40}", "(whale|harpoon|the|and|1851|naïve|Ωμέγα|漢字| |\\.){0,20}", any::<String>(),];
    // Ids from a small set so duplicates happen.
    prop::collection::vec(("[a-f]", text, embedding), 0..12)
        .prop_map(|items| items.into_iter().map(|(id, text, embedding)| chunk(&id, &text, embedding)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_vectors_and_texts_never_panic_or_give_nan(
        chunks in arbitrary_chunks(),
        sources in 0usize..12,
        top_k in 0usize..4,
        min_score in prop_oneof![Just(-1.0f32), 0.0f32..1.0, Just(f32::NAN)],
    ) {
        let sources = &chunks[..sources.min(chunks.len())];
        // A NaN threshold admits nothing; `check` then expects no connection at all.
        let floor = if min_score.is_nan() { f32::INFINITY } else { min_score };
        check(&semantic(top_k, min_score), top_k, floor, sources, &chunks);
        check(&lexical(top_k, min_score), top_k, floor, sources, &chunks);
    }
}

/// Chunks as the statistics path reads them: every term of `chunks` numbered alphabetically, with
/// the document frequencies the in-memory engine computes for itself (every one of `library` is
/// one chunk), and each chunk's counted terms by those numbers.
struct Numbered {
    terms: Vec<String>,
    document_frequency: Vec<u64>,
    chunk_count: u64,
    chunks: Vec<(String, Vec<(u32, u32)>)>,
}

impl Numbered {
    fn of(chunks: &[TestChunk], library: &[TestChunk]) -> Numbered {
        let counted: Vec<(String, terms::TermVector)> =
            chunks.iter().map(|chunk| (chunk.id.clone(), terms::term_vector(&chunk.text))).collect();
        let terms: Vec<String> = counted
            .iter()
            .flat_map(|(_, vector)| vector.iter().map(|(term, _)| term.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let id = |term: &str| terms.binary_search_by(|t| t.as_str().cmp(term)).unwrap() as u32;
        let distinct: Vec<BTreeSet<String>> =
            library.iter().map(|chunk| terms::distinct_terms(&chunk.text).into_iter().collect()).collect();
        let document_frequency =
            terms.iter().map(|term| distinct.iter().filter(|chunk| chunk.contains(term)).count() as u64).collect();
        let chunks = counted
            .iter()
            .map(|(chunk_id, vector)| {
                (chunk_id.clone(), vector.iter().map(|(term, count)| (id(term), *count)).collect())
            })
            .collect();
        Numbered { terms, document_frequency, chunk_count: library.len() as u64, chunks }
    }

    fn library(&self) -> LibraryTerms<'_> {
        LibraryTerms { terms: &self.terms, document_frequency: &self.document_frequency, chunk_count: self.chunk_count }
    }

    fn chunk(&self, index: usize) -> CountedChunk<'_> {
        CountedChunk { chunk_id: &self.chunks[index].0, terms: &self.chunks[index].1 }
    }
}

/// Runs the statistics path with every candidate on every source's shortlist.
fn connect_with_full_shortlists(
    engine: &LexicalEngine,
    sources: &[TestChunk],
    candidates: &[TestChunk],
) -> Vec<Connection> {
    // Sources and candidates in one numbering: the candidates first.
    let everything: Vec<usize> = (0..candidates.len()).collect();
    let both: Vec<TestChunk> = candidates.iter().chain(sources).cloned().collect();
    let numbered = Numbered::of(&both, candidates);
    let candidate_chunks: Vec<CountedChunk<'_>> = (0..candidates.len()).map(|i| numbered.chunk(i)).collect();
    let shortlists: Vec<Shortlist<'_>> = (candidates.len()..both.len())
        .map(|i| Shortlist { source: numbered.chunk(i), candidates: &everything })
        .collect();
    engine.connect_with_statistics(&shortlists, &candidate_chunks, &numbered.library())
}

#[test]
fn library_statistics_over_the_candidates_give_the_in_memory_result() {
    let all = library();
    let engine = lexical(5, 0.05);
    let in_memory = engine.connect(&refs(&all[..2]), &refs(&all));
    assert!(!in_memory.is_empty());
    assert_eq!(connect_with_full_shortlists(&engine, &all[..2], &all), in_memory);
}

#[test]
fn a_source_is_scored_only_against_its_shortlist() {
    let all = library();
    let engine = lexical(5, 0.0);
    let shortlist = [0, 2, 3]; // moby/1 itself and the two cooking chunks: not moby/2
    let numbered = Numbered::of(&all, &all);
    let chunks: Vec<CountedChunk<'_>> = (0..all.len()).map(|i| numbered.chunk(i)).collect();
    let got = engine.connect_with_statistics(
        &[Shortlist { source: chunks[0], candidates: &shortlist }],
        &chunks,
        &numbered.library(),
    );
    assert!(got.iter().all(|c| c.target_chunk_id != "moby/2" && c.target_chunk_id != "moby/1"), "{got:?}");
}

#[test]
fn query_terms_are_the_rarest_terms_other_chunks_share() {
    let all = library();
    let numbered = Numbered::of(&all, &all);
    let library = numbered.library();
    let plan = CandidateQuery { max_terms: 3, max_postings: 1_000, candidates_per_source: 10 };
    let source = numbered.chunk(0).terms;
    let asked = LexicalEngine::default().query_terms(source, &library, &plan);
    let names: Vec<&str> = asked.iter().map(|(term, _)| term.as_str()).collect();
    // "ishmael" and "surfaced" occur only in the source itself; the shared ones are asked,
    // rarest first, alphabetically among equals.
    assert_eq!(names, ["harpoon", "harpooneer", "nantucket"]);
    let id = |term: &str| numbered.terms.iter().position(|t| t == term).unwrap() as u32;
    assert!(asked.iter().all(|(term, weight)| *weight == library.idf(id(term))));

    let tight = CandidateQuery { max_postings: 4, ..plan };
    assert_eq!(LexicalEngine::default().query_terms(source, &library, &tight).len(), 2);
}

#[test]
fn hebrew_arabic_and_japanese_passages_connect() {
    let all = [
        chunk("he/1", "הַיָּם הַתִּיכוֹן וְהַמִּפְרָשִׂים הַלְּבָנִים שֶׁל סִירוֹת הַשַּׁיִט", None),
        chunk("he/2", "סירות השיט עם המפרשים הלבנים יצאו אל הים התיכון", None),
        chunk("ar/1", "يُعَالِجُ النِّظَامُ الغِذَائِيُّ مَرَضَ السَّرَطَانِ", None),
        chunk("ar/2", "النظام الغذائي يساعد في علاج مرض السرطان", None),
        chunk("ja/1", "東京都の図書館で古い地図を見つけた", None),
        chunk("ja/2", "古い地図は東京都の図書館にある", None),
        chunk("en/1", "The harpooneer of Nantucket struck the great whale.", None),
    ];
    let got = check(&lexical(1, 0.3), 1, 0.3, &all[..6], &all);
    let pairs: Vec<(&str, &str)> =
        got.iter().map(|c| (c.source_chunk_id.as_str(), c.target_chunk_id.as_str())).collect();
    for (a, b) in [("he/1", "he/2"), ("ar/1", "ar/2"), ("ja/1", "ja/2")] {
        assert!(pairs.contains(&(a, b)) && pairs.contains(&(b, a)), "{a} and {b} unconnected: {got:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn full_shortlists_with_candidate_statistics_match_the_in_memory_engine(
        chunks in arbitrary_chunks(),
        sources in 0usize..12,
        top_k in 0usize..4,
        min_score in 0.0f32..1.0,
    ) {
        // Distinct ids: the in-memory engine counts a chunk listed twice twice.
        let mut unique = chunks;
        unique.sort_by(|a, b| a.id.cmp(&b.id));
        unique.dedup_by(|a, b| a.id == b.id);
        let sources = &unique[..sources.min(unique.len())];
        let engine = lexical(top_k, min_score);
        let in_memory = engine.connect(&refs(sources), &refs(&unique));
        let with_statistics = connect_with_full_shortlists(&engine, sources, &unique);
        prop_assert_eq!(with_statistics, in_memory);
    }
}

// ---------------------------------------------------------------------------------------------
// Brute-force references: every pair scored from the engines' documented formulas, in f64,
// without the engines' normalised candidates, inverted index or accumulator.
// ---------------------------------------------------------------------------------------------

/// Slack for comparing f32 engine scores with the f64 reference.
const EPS: f64 = 1e-4;

/// Source id → every other candidate it may connect to, with its exact score.
type Reference = BTreeMap<String, Vec<(String, f64)>>;

/// Cosine of every source with every other candidate of the same dimension, skipping vectors
/// that are empty, zero or not finite.
fn semantic_reference(sources: &[TestChunk], candidates: &[TestChunk]) -> Reference {
    let vector = |c: &TestChunk| -> Option<Vec<f64>> {
        let v: Vec<f64> = c.embedding.as_ref()?.iter().map(|&x| f64::from(x)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
    };
    let mut reference = Reference::new();
    for source in sources {
        let entry = reference.entry(source.id.clone()).or_default();
        let Some(s) = vector(source) else { continue };
        for candidate in candidates.iter().filter(|c| c.id != source.id) {
            if let Some(c) = vector(candidate).filter(|c| c.len() == s.len()) {
                let cosine: f64 = s.iter().zip(&c).map(|(a, b)| a * b).sum();
                entry.push((candidate.id.clone(), cosine.clamp(-1.0, 1.0)));
            }
        }
    }
    reference
}

/// TF-IDF cosine of every source with every other candidate sharing a term: weight
/// `(1 + ln tf) × ln(1 + (N − df + 0.5) / (df + 0.5))`, N and df counted over the candidates.
fn lexical_reference(sources: &[TestChunk], candidates: &[TestChunk]) -> Reference {
    let n = candidates.len() as f64;
    let counted: Vec<BTreeMap<String, u32>> =
        candidates.iter().map(|c| terms::term_vector(&c.text).into_iter().collect()).collect();
    let df = |term: &str| counted.iter().filter(|terms| terms.contains_key(term)).count() as f64;
    let weights = |terms: &BTreeMap<String, u32>| -> BTreeMap<String, f64> {
        let raw: BTreeMap<String, f64> = terms
            .iter()
            .map(|(t, &tf)| {
                let idf = (1.0 + (n - df(t) + 0.5) / (df(t) + 0.5)).ln();
                (t.clone(), (1.0 + f64::from(tf).ln()) * idf)
            })
            .collect();
        let norm = raw.values().map(|w| w * w).sum::<f64>().sqrt();
        raw.into_iter().map(|(t, w)| (t, w / norm)).collect()
    };
    let mut reference = Reference::new();
    for source in sources {
        let entry = reference.entry(source.id.clone()).or_default();
        let s = weights(&terms::term_vector(&source.text).into_iter().collect());
        for (candidate, terms) in candidates.iter().zip(&counted).filter(|(c, _)| c.id != source.id) {
            let c = weights(terms);
            let shared: Vec<f64> = s.iter().filter_map(|(t, w)| Some(w * c.get(t)?)).collect();
            if !shared.is_empty() {
                entry.push((candidate.id.clone(), shared.iter().sum::<f64>().clamp(0.0, 1.0)));
            }
        }
    }
    reference
}

/// Holds `got` to the reference: every connection is one the reference scores the same (within
/// [`EPS`]) and at or above `min_score`, and each source keeps its `top_k` best; scores within
/// [`EPS`] of the threshold or of the weakest one kept may go either way.
fn assert_top_k_of(reference: &Reference, got: &[Connection], top_k: usize, min_score: f32) {
    let min_score = f64::from(min_score);
    for connection in got {
        assert!(reference.contains_key(&connection.source_chunk_id), "{connection:?} from no source");
    }
    for (source, scored) in reference {
        let kept: Vec<&Connection> = got.iter().filter(|c| &c.source_chunk_id == source).collect();
        let mut weakest = f64::INFINITY;
        for connection in &kept {
            let expected = scored
                .iter()
                .find(|(target, _)| *target == connection.target_chunk_id)
                .unwrap_or_else(|| panic!("{connection:?}: the reference scores no such pair"))
                .1;
            let score = f64::from(connection.score);
            assert!((score - expected).abs() <= EPS, "{connection:?}: the reference scores {expected}");
            assert!(expected >= min_score - EPS, "{connection:?}: under the threshold");
            weakest = weakest.min(expected);
        }
        let above = scored.iter().filter(|(_, s)| *s >= min_score + EPS).count();
        let near = scored.iter().filter(|(_, s)| *s >= min_score - EPS).count();
        assert!(
            top_k.min(above) <= kept.len() && kept.len() <= top_k.min(near),
            "{source}: {} kept of {above} clearly above the threshold, top {top_k}: {kept:?} of {scored:?}",
            kept.len()
        );
        if kept.len() == top_k {
            for (target, score) in scored.iter().filter(|(t, _)| !kept.iter().any(|c| &c.target_chunk_id == t)) {
                assert!(*score <= weakest + EPS, "{source}: {target} at {score} beats a kept one: {kept:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn both_engines_keep_the_top_k_a_brute_force_pairwise_reference_finds(
        chunks in arbitrary_chunks(),
        sources in 0usize..12,
        top_k in 0usize..4,
        min_score in -1.0f32..1.0,
    ) {
        // Distinct ids: a chunk listed twice is one chunk to the engines, two to the reference.
        let mut unique = chunks;
        unique.sort_by(|a, b| a.id.cmp(&b.id));
        unique.dedup_by(|a, b| a.id == b.id);
        let sources = &unique[..sources.min(unique.len())];
        let (source_refs, candidate_refs) = (refs(sources), refs(&unique));
        let semantic_got = semantic(top_k, min_score).connect(&source_refs, &candidate_refs);
        assert_top_k_of(&semantic_reference(sources, &unique), &semantic_got, top_k, min_score);
        let lexical_got = lexical(top_k, min_score).connect(&source_refs, &candidate_refs);
        assert_top_k_of(&lexical_reference(sources, &unique), &lexical_got, top_k, min_score);
    }
}
