//! The lexical engine: TF-IDF cosine over shared rare terms, through an inverted index.

use std::collections::{HashMap, HashSet};

use crate::{ChunkRef, Connection, ConnectionEngine, best};

/// Connects chunks that share rare terms.
///
/// Texts are tokenized into lowercase words (letters and digits by Unicode's definition), dropping
/// words shorter than 3 characters, pure numbers and common English stop words. Each chunk becomes
/// a TF-IDF vector: term weight `(1 + ln tf) × idf`, with the BM25 inverse document frequency
/// `ln(1 + (N − df + 0.5) / (df + 0.5))` computed over the candidates (N of them), which stays
/// positive even for a term every candidate has. The score is the cosine of two such vectors.
///
/// Candidates are indexed once (term → chunks containing it), so a source chunk is only compared
/// with the candidates that share at least one of its terms (a chunk sharing none is never
/// connected, whatever `min_score`). The reason names the three terms that
/// contribute most, e.g. "shared terms: whale, harpoon, nantucket".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalEngine {
    /// How many connections each source chunk may get at most.
    pub top_k: usize,
    /// The lowest TF-IDF cosine that makes a connection.
    pub min_score: f32,
}

impl Default for LexicalEngine {
    /// Top 5 per source chunk, TF-IDF cosine at least 0.3.
    ///
    /// Paragraphs on unrelated subjects score well under 0.1 and paraphrases of one passage well
    /// over 0.3; between them lie chunks that merely share a topic, which the semantic engine is
    /// better at judging.
    fn default() -> Self {
        Self { top_k: 5, min_score: 0.3 }
    }
}

/// How many shared terms a reason names.
const REASON_TERMS: usize = 3;

/// A chunk as a sparse unit vector: (term id, weight), sorted by term id.
type SparseVector = Vec<(u32, f32)>;

impl ConnectionEngine for LexicalEngine {
    fn name(&self) -> &'static str {
        "lexical"
    }

    fn connect(&self, sources: &[ChunkRef<'_>], candidates: &[ChunkRef<'_>]) -> Vec<Connection> {
        if self.top_k == 0 || candidates.is_empty() {
            return Vec::new();
        }
        let vocabulary = Vocabulary::new(candidates);
        let n = candidates.len() as f32;
        // BM25's IDF; a term no candidate has (df 0) gets the highest weight: it matches
        // nothing but belongs in the source's norm.
        let idf_of = |df: u32| (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
        let idf: Vec<f32> = vocabulary.document_frequency.iter().map(|&df| idf_of(df)).collect();
        let idf_unseen = idf_of(0);

        let candidate_vectors: Vec<SparseVector> =
            vocabulary.counts.iter().map(|counts| weigh(counts, &[], &idf, idf_unseen)).collect();
        let mut postings: Vec<Vec<(usize, f32)>> = vec![Vec::new(); vocabulary.terms.len()];
        for (index, vector) in candidate_vectors.iter().enumerate() {
            for &(term, weight) in vector {
                postings[term as usize].push((index, weight));
            }
        }

        // Dense score accumulator reused across sources, with the list of entries touched, so
        // each source costs the length of its terms' postings, not the number of candidates.
        let mut accumulator = vec![0f32; candidates.len()];
        let mut seen = vec![false; candidates.len()];
        let mut touched: Vec<usize> = Vec::new();
        let mut connections = Vec::new();
        let mut done = HashSet::new();
        for source in sources {
            // A chunk id listed twice among the sources is processed once.
            if !done.insert(source.chunk_id) {
                continue;
            }
            let (known, unseen) = vocabulary.count_source(source.text);
            let source_vector = weigh(&known, &unseen, &idf, idf_unseen);
            for &(term, weight) in &source_vector {
                let Some(list) = postings.get(term as usize) else {
                    continue;
                };
                for &(index, candidate_weight) in list {
                    if !seen[index] {
                        seen[index] = true;
                        touched.push(index);
                    }
                    accumulator[index] += weight * candidate_weight;
                }
            }
            let mut scored = Vec::new();
            for index in touched.drain(..) {
                let score = accumulator[index].clamp(0.0, 1.0);
                accumulator[index] = 0.0;
                seen[index] = false;
                if score.is_finite() && score >= self.min_score && candidates[index].chunk_id != source.chunk_id {
                    scored.push((score, index));
                }
            }
            for (score, target) in best(scored, candidates, self.top_k) {
                let terms = top_shared_terms(&source_vector, &candidate_vectors[target]);
                let names: Vec<&str> = terms.iter().map(|&t| vocabulary.terms[t as usize].as_str()).collect();
                connections.push(Connection {
                    source_chunk_id: source.chunk_id.to_owned(),
                    target_chunk_id: candidates[target].chunk_id.to_owned(),
                    engine: self.name().to_owned(),
                    score,
                    reason: format!("shared terms: {}", names.join(", ")),
                });
            }
        }
        connections
    }
}

/// Turns term counts into a unit TF-IDF vector. `unseen` holds the counts of terms no candidate
/// has: they count in the norm but are left out of the vector, since they can match nothing.
fn weigh(known: &[(u32, u32)], unseen: &[u32], idf: &[f32], idf_unseen: f32) -> SparseVector {
    let tf = |count: u32| 1.0 + (count as f32).ln();
    let mut vector: SparseVector = known.iter().map(|&(term, count)| (term, tf(count) * idf[term as usize])).collect();
    // Summed in a fixed order (term id, then sorted counts) so the result does not depend on
    // hashing or on the order of the inputs.
    let norm = (vector.iter().map(|(_, w)| w * w).sum::<f32>()
        + unseen.iter().map(|&count| (tf(count) * idf_unseen).powi(2)).sum::<f32>())
    .sqrt();
    if norm.is_finite() && norm > 0.0 {
        for (_, weight) in &mut vector {
            *weight /= norm;
        }
    } else {
        vector.clear();
    }
    vector
}

/// The shared terms contributing most to the cosine, ties broken by term id (term ids follow
/// alphabetical order).
fn top_shared_terms(a: &SparseVector, b: &SparseVector) -> Vec<u32> {
    let mut shared = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared.push((a[i].1 * b[j].1, a[i].0));
                i += 1;
                j += 1;
            }
        }
    }
    shared.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    shared.into_iter().take(REASON_TERMS).map(|(_, term)| term).collect()
}

/// The candidates' terms, numbered in alphabetical order so that nothing (summation order,
/// tie-breaks) depends on the order of the candidates.
struct Vocabulary {
    /// Term id to term, sorted.
    terms: Vec<String>,
    /// Term to term id.
    ids: HashMap<String, u32>,
    /// For each candidate, its (term id, count) pairs sorted by term id.
    counts: Vec<Vec<(u32, u32)>>,
    /// For each term id, how many candidates contain it.
    document_frequency: Vec<u32>,
}

impl Vocabulary {
    fn new(candidates: &[ChunkRef<'_>]) -> Self {
        // Number terms by first appearance, then renumber them alphabetically.
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut terms: Vec<String> = Vec::new();
        let mut counts: Vec<Vec<(u32, u32)>> = candidates
            .iter()
            .map(|candidate| {
                let mut local: HashMap<u32, u32> = HashMap::new();
                for token in tokens(candidate.text) {
                    let next = u32::try_from(terms.len()).unwrap_or(u32::MAX);
                    let id = *ids.entry(token).or_insert_with_key(|token| {
                        terms.push(token.clone());
                        next
                    });
                    *local.entry(id).or_default() += 1;
                }
                local.into_iter().collect()
            })
            .collect();
        let mut order: Vec<u32> = (0..u32::try_from(terms.len()).unwrap_or(u32::MAX)).collect();
        order.sort_unstable_by(|&a, &b| terms[a as usize].cmp(&terms[b as usize]));
        let mut rank = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old as usize] = u32::try_from(new).unwrap_or(u32::MAX);
        }
        let mut document_frequency = vec![0u32; order.len()];
        for candidate in &mut counts {
            for (term, _) in candidate.iter_mut() {
                *term = rank[*term as usize];
                document_frequency[*term as usize] += 1;
            }
            candidate.sort_unstable();
        }
        for id in ids.values_mut() {
            *id = rank[*id as usize];
        }
        let terms = order.iter().map(|&old| std::mem::take(&mut terms[old as usize])).collect();
        Self { terms, ids, counts, document_frequency }
    }

    /// A source text's counts of known terms (sorted by term id) and of unseen terms (sorted).
    fn count_source(&self, text: &str) -> (Vec<(u32, u32)>, Vec<u32>) {
        let mut local: HashMap<String, u32> = HashMap::new();
        for token in tokens(text) {
            *local.entry(token).or_default() += 1;
        }
        let mut known = Vec::new();
        let mut unseen = Vec::new();
        for (term, count) in local {
            match self.ids.get(&term) {
                Some(&id) => known.push((id, count)),
                None => unseen.push(count),
            }
        }
        known.sort_unstable();
        unseen.sort_unstable();
        (known, unseen)
    }
}

/// Lowercase words of at least 3 characters, without numbers and stop words.
pub(crate) fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().nth(2).is_some() && !word.chars().all(char::is_numeric))
        .map(str::to_lowercase)
        .filter(|word| STOP_WORDS.binary_search(&word.as_str()).is_err())
}

/// Common English words of 3 letters or more that say nothing about a passage's subject, plus
/// the URL fragments markdown links leave behind. Sorted, for binary search.
const STOP_WORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "and",
    "any",
    "are",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "can",
    "could",
    "did",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "html",
    "http",
    "https",
    "into",
    "its",
    "itself",
    "just",
    "like",
    "more",
    "most",
    "much",
    "must",
    "myself",
    "nor",
    "not",
    "now",
    "off",
    "once",
    "one",
    "only",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "said",
    "same",
    "shall",
    "she",
    "should",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "too",
    "under",
    "until",
    "upon",
    "very",
    "was",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "www",
    "xhtml",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tokens_are_lowercase_content_words() {
        let got: Vec<String> = tokens("The WHALE's harpoon, in 1851: Ährenfeld & naïve co-op 3rd ok whale").collect();
        assert_eq!(got, ["whale", "harpoon", "ährenfeld", "naïve", "3rd", "whale"]);
    }
}
