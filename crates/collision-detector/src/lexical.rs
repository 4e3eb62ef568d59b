//! The lexical engine: TF-IDF cosine over shared rare terms, through an inverted index.

use std::collections::{HashMap, HashSet};

use terms::TermVector;

use crate::{ChunkRef, Connection, ConnectionEngine, best};

/// Connects chunks that share rare terms.
///
/// Texts are cut into terms by the rules of the `terms` crate (normalised words of at least 3
/// characters, CJK bigrams, no pure numbers, no stop words). Each chunk becomes a TF-IDF vector:
/// term weight `(1 + ln tf) × idf`, with the BM25 inverse document frequency
/// `ln(1 + (N − df + 0.5) / (df + 0.5))`, which stays positive even for a term every chunk has.
/// The score is the cosine of two such vectors. The reason names the three terms that contribute
/// most, e.g. "shared terms: whale, harpoon, nantucket".
///
/// Two ways to run it:
/// - [`ConnectionEngine::connect`]: N and df are counted over the candidates, which are indexed
///   once (term → chunks containing it), so a source chunk is only compared with the candidates
///   that share at least one of its terms (a chunk sharing none is never connected, whatever
///   `min_score`). This needs the whole library in memory.
/// - [`LexicalEngine::connect_with_statistics`]: N and df are the library's, as a full-text index
///   reports them ([`LibraryTerms`]), and each source is compared only with the candidates the
///   index returned for it, found with [`LexicalEngine::query_terms`]. This needs only the new
///   book and its candidates, given as numbered terms: no term is looked up by its text while
///   scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalEngine {
    /// How many connections each source chunk may get at most.
    pub top_k: usize,
    /// The lowest TF-IDF cosine that makes a connection.
    pub min_score: f32,
}

impl LexicalEngine {
    /// Its [`ConnectionEngine::name`], stored with every connection it finds.
    pub const NAME: &'static str = "lexical";

    /// Top 5 per source chunk, TF-IDF cosine at least 0.3.
    ///
    /// Paragraphs on unrelated subjects score well under 0.1 and paraphrases of one passage well
    /// over 0.3; between them lie chunks that merely share a topic, which the semantic engine is
    /// better at judging.
    pub const DEFAULT: LexicalEngine = LexicalEngine { top_k: 5, min_score: 0.3 };
}

impl Default for LexicalEngine {
    /// [`LexicalEngine::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How many shared terms a reason names.
const REASON_TERMS: usize = 3;

/// A chunk as a sparse unit vector: (term id, weight), sorted by term id.
type SparseVector = Vec<(u32, f32)>;

impl ConnectionEngine for LexicalEngine {
    fn name(&self) -> &'static str {
        LexicalEngine::NAME
    }

    fn connect(&self, sources: &[ChunkRef<'_>], candidates: &[ChunkRef<'_>]) -> Vec<Connection> {
        if self.top_k == 0 || candidates.is_empty() {
            return Vec::new();
        }
        let counted: Vec<TermVector> = candidates.iter().map(|candidate| terms::term_vector(candidate.text)).collect();
        let vocabulary = Vocabulary::new(counted.iter().map(Vec::as_slice));
        let n = candidates.len() as f32;
        let idf_of = |df: u32| bm25_idf(n, df as f32);
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
            let (known, unseen) = vocabulary.count_source(&terms::term_vector(source.text));
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
            for (score, target) in best(scored, |index| candidates[index].chunk_id, self.top_k) {
                let target_vector = &candidate_vectors[target];
                connections.push(self.connection(
                    source.chunk_id,
                    candidates[target].chunk_id,
                    score,
                    &source_vector,
                    target_vector,
                    &vocabulary.terms,
                ));
            }
        }
        connections
    }
}

/// The terms of some chunks, numbered, with the library's statistics for each: what
/// [`LexicalEngine::connect_with_statistics`] and [`LexicalEngine::query_terms`] weigh chunks by.
/// The chunks given with it ([`CountedChunk`]) name their terms by these ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibraryTerms<'a> {
    /// Term id → term, in alphabetical order: reasons name terms by it, and ties among equally
    /// weighted terms are broken by id, so alphabetically, whoever numbered them.
    pub terms: &'a [String],
    /// Term id → how many chunks of the library contain it (df). A missing id counts as df 0.
    pub document_frequency: &'a [u64],
    /// How many chunks the library holds (N).
    pub chunk_count: u64,
}

impl LibraryTerms<'_> {
    /// The term's BM25 inverse document frequency in the library.
    pub fn idf(&self, term: u32) -> f32 {
        let df = self.document_frequency(term);
        // Counts read at different moments may disagree; N is never less than a df.
        bm25_idf(self.chunk_count.max(df) as f32, df as f32)
    }

    fn document_frequency(&self, term: u32) -> u64 {
        self.document_frequency.get(term as usize).copied().unwrap_or(0)
    }

    /// Every term's idf, by id.
    fn idf_by_id(&self) -> Vec<f32> {
        (0..self.terms.len().max(self.document_frequency.len()))
            .map(|id| self.idf(u32::try_from(id).unwrap_or(u32::MAX)))
            .collect()
    }
}

/// BM25's inverse document frequency of a term found in `df` of `n` chunks: positive, highest for
/// a term no chunk has (it matches nothing, but belongs in a source's norm).
fn bm25_idf(n: f32, df: f32) -> f32 {
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// How [`LexicalEngine::query_terms`] picks the terms a source chunk asks a full-text index
/// about, and how many candidates it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateQuery {
    /// At most this many terms per source chunk, rarest first.
    pub max_terms: usize,
    /// Terms are taken, rarest first, while the chunks containing them add up to at most this
    /// many: the bound on the index's work for one source chunk.
    pub max_postings: u64,
    /// How many candidates to ask for per source chunk: those sharing the most weight of its
    /// asked terms.
    pub candidates_per_source: usize,
}

impl Default for CandidateQuery {
    /// 32 terms, 4,000 postings, 25 candidates per source chunk.
    ///
    /// A chunk's rarest terms decide what it can connect to: connections need a TF-IDF cosine
    /// of 0.3, which chunks sharing only common words do not reach. Measured against the exact
    /// engine on a 100k-chunk library (BENCHMARKS.md, "Library scale"), this plan keeps 98% of
    /// its top five; halving the candidates costs recall first (12 per chunk keep 72%), halving
    /// the postings a little.
    fn default() -> Self {
        Self { max_terms: 32, max_postings: 4_000, candidates_per_source: 25 }
    }
}

/// A chunk as [`LexicalEngine::connect_with_statistics`] reads it: its id and its terms, counted
/// ([`terms::term_vector`] of its text) and numbered as in the [`LibraryTerms`] given alongside,
/// so that a text is cut into terms once, when it is stored, however many books it is compared
/// with later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedChunk<'a> {
    /// The chunk's id; connections name chunks by it, and ties are broken by it.
    pub chunk_id: &'a str,
    /// Its (term id, count) pairs, sorted by term id, each term once.
    pub terms: &'a [(u32, u32)],
}

/// One source chunk and the indexes (into the candidate slice) of the candidates a full-text
/// index returned for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shortlist<'a> {
    /// The chunk of the document being processed.
    pub source: CountedChunk<'a>,
    /// Its candidates, as indexes into the candidates passed alongside.
    pub candidates: &'a [usize],
}

impl LexicalEngine {
    /// The terms a source chunk (its numbered, counted terms) asks a full-text index about, each
    /// with its weight (its idf in the library): its rarest terms, within the bounds of `plan`.
    /// Terms that only the source itself contains (df ≤ 1) are left out: they can find nothing
    /// else. Ordered rarest first, ties broken alphabetically.
    pub fn query_terms(
        &self,
        source: &[(u32, u32)],
        library: &LibraryTerms<'_>,
        plan: &CandidateQuery,
    ) -> Vec<(String, f32)> {
        let mut ranked: Vec<(u64, u32)> = source
            .iter()
            .filter_map(|&(term, _)| {
                let df = library.document_frequency(term);
                (df > 1 && (term as usize) < library.terms.len()).then_some((df, term))
            })
            .collect();
        ranked.sort_unstable();
        ranked.dedup();
        let mut postings = 0u64;
        let mut asked = Vec::new();
        for (df, term) in ranked {
            postings = postings.saturating_add(df);
            if asked.len() == plan.max_terms || postings > plan.max_postings {
                break;
            }
            asked.push((library.terms[term as usize].clone(), library.idf(term)));
        }
        asked
    }

    /// Connects each source to the best of its own candidates, with the library's statistics
    /// for the weights. Candidate indexes out of range are ignored; a source listed twice is
    /// processed once; a chunk never connects to itself. A term id that `library` does not
    /// number counts in its chunk's norm as a term no chunk has, and matches nothing.
    pub fn connect_with_statistics(
        &self,
        shortlists: &[Shortlist<'_>],
        candidates: &[CountedChunk<'_>],
        library: &LibraryTerms<'_>,
    ) -> Vec<Connection> {
        if self.top_k == 0 {
            return Vec::new();
        }
        let idf = library.idf_by_id();
        let idf_unseen = bm25_idf(library.chunk_count as f32, 0.0);
        let unit_vector = |chunk: &CountedChunk<'_>| {
            let numbered = |&&(term, _): &&(u32, u32)| (term as usize) < idf.len();
            let known: Vec<(u32, u32)> = chunk.terms.iter().filter(numbered).copied().collect();
            let mut unseen: Vec<u32> =
                chunk.terms.iter().filter(|pair| !numbered(pair)).map(|&(_, count)| count).collect();
            unseen.sort_unstable();
            weigh(&known, &unseen, &idf, idf_unseen)
        };
        // Each candidate is weighed once, when a shortlist first names it.
        let mut candidate_vectors: Vec<Option<SparseVector>> = vec![None; candidates.len()];

        let mut connections = Vec::new();
        let mut done = HashSet::new();
        for shortlist in shortlists {
            let source = shortlist.source;
            if !done.insert(source.chunk_id) {
                continue;
            }
            let source_vector = unit_vector(&source);
            let mut scored = Vec::new();
            let mut seen = HashSet::new();
            for &index in shortlist.candidates {
                let Some(candidate) = candidates.get(index) else {
                    continue;
                };
                if candidate.chunk_id == source.chunk_id || !seen.insert(index) {
                    continue;
                }
                let candidate_vector = candidate_vectors[index].get_or_insert_with(|| unit_vector(candidate));
                // A candidate sharing no term is no match, whatever the threshold.
                let Some(score) = dot(&source_vector, candidate_vector) else {
                    continue;
                };
                let score = score.clamp(0.0, 1.0);
                if score.is_finite() && score >= self.min_score {
                    scored.push((score, index));
                }
            }
            for (score, target) in best(scored, |index| candidates[index].chunk_id, self.top_k) {
                let Some(target_vector) = &candidate_vectors[target] else { continue };
                connections.push(self.connection(
                    source.chunk_id,
                    candidates[target].chunk_id,
                    score,
                    &source_vector,
                    target_vector,
                    library.terms,
                ));
            }
        }
        connections
    }
}

impl LexicalEngine {
    /// The connection from `source` to `target`, its reason naming the shared terms that
    /// contribute most.
    fn connection(
        &self,
        source: &str,
        target: &str,
        score: f32,
        source_vector: &SparseVector,
        target_vector: &SparseVector,
        names: &[String],
    ) -> Connection {
        let terms = top_shared_terms(source_vector, target_vector);
        let names: Vec<&str> = terms.iter().filter_map(|&t| Some(names.get(t as usize)?.as_str())).collect();
        Connection {
            source_chunk_id: source.to_owned(),
            target_chunk_id: target.to_owned(),
            engine: self.name().to_owned(),
            score,
            reason: format!("shared terms: {}", names.join(", ")),
        }
    }
}

/// The dot product of two sparse vectors sorted by term id, or `None` if they share no term.
fn dot(a: &SparseVector, b: &SparseVector) -> Option<f32> {
    let (mut i, mut j, mut sum, mut shared) = (0, 0, 0.0, false);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                shared = true;
                i += 1;
                j += 1;
            }
        }
    }
    shared.then_some(sum)
}

/// Turns term counts into a unit TF-IDF vector. `unseen` holds the counts of terms no candidate
/// has: they count in the norm but are left out of the vector, since they can match nothing.
fn weigh(known: &[(u32, u32)], unseen: &[u32], idf: &[f32], idf_unseen: f32) -> SparseVector {
    let tf = |count: u32| 1.0 + (count as f32).ln();
    let mut vector: SparseVector =
        known.iter().filter_map(|&(term, count)| Some((term, tf(count) * idf.get(term as usize)?))).collect();
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
    /// The vocabulary of chunks given as their counted terms ([`terms::term_vector`]).
    fn new<'a>(chunks: impl Iterator<Item = &'a [(String, u32)]>) -> Self {
        // Number terms by first appearance, then renumber them alphabetically.
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut terms: Vec<String> = Vec::new();
        let mut counts: Vec<Vec<(u32, u32)>> = chunks
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|(term, count)| {
                        let id = match ids.get(term) {
                            Some(&id) => id,
                            None => {
                                let id = u32::try_from(terms.len()).unwrap_or(u32::MAX);
                                ids.insert(term.clone(), id);
                                terms.push(term.clone());
                                id
                            }
                        };
                        (id, *count)
                    })
                    .collect()
            })
            .collect();
        let mut order: Vec<u32> = (0..u32::try_from(terms.len()).unwrap_or(u32::MAX)).collect();
        order.sort_unstable_by(|&a, &b| terms[a as usize].cmp(&terms[b as usize]));
        let mut rank = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old as usize] = u32::try_from(new).unwrap_or(u32::MAX);
        }
        let mut document_frequency = vec![0u32; order.len()];
        for chunk in &mut counts {
            for (term, _) in chunk.iter_mut() {
                *term = rank[*term as usize];
                document_frequency[*term as usize] += 1;
            }
            chunk.sort_unstable();
        }
        for id in ids.values_mut() {
            *id = rank[*id as usize];
        }
        let terms = order.iter().map(|&old| std::mem::take(&mut terms[old as usize])).collect();
        Self { terms, ids, counts, document_frequency }
    }

    /// A source's counts of known terms (sorted by term id) and of unseen terms (sorted).
    fn count_source(&self, source: &[(String, u32)]) -> (Vec<(u32, u32)>, Vec<u32>) {
        let mut known = Vec::new();
        let mut unseen = Vec::new();
        for (term, count) in source {
            match self.ids.get(term) {
                Some(&id) => known.push((id, *count)),
                None => unseen.push(*count),
            }
        }
        known.sort_unstable();
        unseen.sort_unstable();
        (known, unseen)
    }
}
