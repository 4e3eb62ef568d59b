//! An offline, deterministic embedder based on feature hashing.
//!
//! Features: word unigrams, word bigrams and character 3-grams of each word
//! padded with `#` (so "whale" and "whales" share most features). Words are
//! those of the `terms` crate, which the lexical engine and the full-text
//! indexes use too: normalised (NFKC, lowercase, diacritics dropped), with
//! runs of CJK characters cut into character bigrams.
//! Each feature is hashed with FNV-1a and a fixed 64-bit finaliser, never with
//! std's randomly seeded hasher, into one of `dimensions` buckets with a sign
//! taken from another bit of the hash (so collisions cancel out on average
//! instead of piling up). Counts are weighted sublinearly (`1 + ln tf`) and the
//! vector is L2-normalised; a text without any feature gives the zero vector.

use crate::{BatchLimits, EmbedError, Embedder};

/// Version tag of the feature set; bump it when the vectors change. (v2: words follow the
/// `terms` crate; vectors of ASCII text are those of v1.)
const MODEL_PREFIX: &str = "quire-local-hash-v2";

/// Default vector size.
pub const DEFAULT_LOCAL_DIMENSIONS: usize = 384;

/// Weight of each feature family, relative to word unigrams.
const UNIGRAM_WEIGHT: f64 = 1.0;
const BIGRAM_WEIGHT: f64 = 0.7;
const TRIGRAM_WEIGHT: f64 = 0.4;

/// Family tags, hashed first so a word and a bigram never share a feature.
const UNIGRAM_TAG: u8 = b'u';
const BIGRAM_TAG: u8 = b'b';
const TRIGRAM_TAG: u8 = b'c';

/// Deterministic, offline embedder (feature hashing). See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEmbedder {
    /// Vector size; at least 1.
    dimensions: usize,
    /// Inputs per call.
    max_inputs: usize,
}

impl Default for LocalEmbedder {
    fn default() -> Self {
        Self::new(DEFAULT_LOCAL_DIMENSIONS)
    }
}

impl LocalEmbedder {
    /// An embedder producing vectors of `dimensions` floats (384 by default).
    ///
    /// # Panics
    ///
    /// If `dimensions` is 0.
    pub fn new(dimensions: usize) -> Self {
        assert!(dimensions > 0, "LocalEmbedder needs at least one dimension");
        Self { dimensions, max_inputs: 256 }
    }

    /// The same embedder, taking at most `max_inputs` (at least 1) inputs per call, so that a
    /// document is embedded in several checkpointed batches as with a remote service.
    pub fn with_batch_size(mut self, max_inputs: usize) -> Self {
        self.max_inputs = max_inputs.max(1);
        self
    }

    /// Embeds one text synchronously (the work is pure CPU, a few µs per
    /// kilobyte). Returns a unit vector, or the zero vector for a text
    /// without letters or digits.
    pub fn embed_text(&self, text: &str) -> Vec<f32> {
        let mut hashes = features(text);
        // Sorting makes the summation order, hence the exact floats,
        // independent of anything but the text.
        hashes.sort_unstable();

        let mut vector = vec![0f64; self.dimensions];
        let mut run = 0;
        while run < hashes.len() {
            let (hash, weight) = hashes[run];
            let count = hashes[run..].iter().take_while(|(h, _)| *h == hash).count();
            run += count;
            let tf = 1.0 + (count as f64).ln();
            // The bucket from the low bits, the sign from the top bit.
            let bucket = (hash % self.dimensions as u64) as usize;
            let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
            vector[bucket] += sign * tf * weight.weight();
        }

        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 { vector.iter().map(|x| (x / norm) as f32).collect() } else { vec![0.0; self.dimensions] }
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> String {
        format!("{MODEL_PREFIX}-{}", self.dimensions)
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn batch_limits(&self) -> BatchLimits {
        // No provider limits: keep batches modest so one call stays short. Feature hashing reads
        // a text of any length.
        BatchLimits { max_inputs: self.max_inputs, max_tokens: 1_000_000, max_input_tokens: usize::MAX }
    }

    async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(inputs.iter().map(|text| self.embed_text(text)).collect())
    }
}

/// Which family a feature belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Unigram,
    Bigram,
    Trigram,
}

impl Family {
    fn weight(self) -> f64 {
        match self {
            Self::Unigram => UNIGRAM_WEIGHT,
            Self::Bigram => BIGRAM_WEIGHT,
            Self::Trigram => TRIGRAM_WEIGHT,
        }
    }
}

/// The hashed features of `text`, with repetitions.
fn features(text: &str) -> Vec<(u64, Family)> {
    let words: Vec<String> = terms::words(text).collect();

    let mut out = Vec::with_capacity(words.len() * 8);
    for word in &words {
        out.push((Fnv::new(UNIGRAM_TAG).bytes(word.as_bytes()).finish(), Family::Unigram));

        let padded: Vec<char> = std::iter::once('#').chain(word.chars()).chain(std::iter::once('#')).collect();
        for gram in padded.windows(3) {
            let mut hasher = Fnv::new(TRIGRAM_TAG);
            for c in gram {
                hasher = hasher.bytes(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            out.push((hasher.finish(), Family::Trigram));
        }
    }
    for pair in words.windows(2) {
        let hash = Fnv::new(BIGRAM_TAG).bytes(pair[0].as_bytes()).bytes(b" ").bytes(pair[1].as_bytes()).finish();
        out.push((hash, Family::Bigram));
    }
    out
}

/// FNV-1a, 64 bits, with a splitmix64 finaliser so the low bits (the bucket)
/// and the top bit (the sign) are both well mixed.
struct Fnv(u64);

impl Fnv {
    fn new(tag: u8) -> Self {
        Self(0xcbf2_9ce4_8422_2325).bytes(&[tag])
    }

    fn bytes(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    fn finish(self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn norm(a: &[f32]) -> f32 {
        cosine(a, a).sqrt()
    }

    #[test]
    fn deterministic_and_pinned() {
        let e = LocalEmbedder::default();
        let text = "Call me Ishmael. Some years ago, never mind how long precisely.";
        let a = e.embed_text(text);
        let b = LocalEmbedder::new(384).embed_text(text);
        assert_eq!(a, b);
        // Pin a few values so a change of hash or weights cannot slip through
        // unnoticed: it would silently invalidate every cached vector.
        let pinned: Vec<(usize, u32)> =
            a.iter().enumerate().filter(|(_, x)| **x != 0.0).take(4).map(|(i, x)| (i, x.to_bits())).collect();
        assert_eq!(pinned, PINNED, "bump MODEL_PREFIX if this changes");
    }

    /// First four non-zero components of the text above: (index, f32 bits).
    const PINNED: [(usize, u32); 4] =
        [(8, 1_033_463_396), (16, 1_033_463_396), (17, 3_180_947_044), (21, 3_191_848_956)];

    #[test]
    fn normalised_with_right_dimensions() {
        for dims in [1, 16, 384, 1000] {
            let e = LocalEmbedder::new(dims);
            let v = e.embed_text("the quick brown fox jumps over the lazy dog");
            assert_eq!(v.len(), dims);
            assert!((norm(&v) - 1.0).abs() < 1e-5, "dims {dims}: {}", norm(&v));
        }
    }

    #[test]
    fn empty_and_symbol_only_texts_give_zero_vectors_without_nan() {
        let e = LocalEmbedder::new(32);
        for text in ["", "   ", "!?—…", "\u{0}"] {
            let v = e.embed_text(text);
            assert_eq!(v, vec![0.0; 32], "{text:?}");
        }
        let v = e.embed_text("a");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let e = LocalEmbedder::default();
        let base = e.embed_text("The white whale swam slowly past the whaling ship at dawn.");
        let similar = e.embed_text("At dawn the white whale swam past the whaling ships.");
        let unrelated = e.embed_text("Quarterly revenue in European markets grew by four percent.");
        let (close, far) = (cosine(&base, &similar), cosine(&base, &unrelated));
        assert!(close > 0.5, "similar cosine {close}");
        assert!(far < 0.2, "unrelated cosine {far}");
        assert!(close > far + 0.4, "similar {close} vs unrelated {far}");

        // Morphology: shared character 3-grams pull inflections together.
        let whales = e.embed_text("whales");
        let whale = e.embed_text("whale");
        let revenue = e.embed_text("revenue");
        assert!(cosine(&whale, &whales) > cosine(&whale, &revenue) + 0.3);
    }

    #[test]
    fn words_follow_the_term_rules_across_scripts() {
        let e = LocalEmbedder::default();
        // Niqqud, harakat and accents are dropped, as the full-text index drops them.
        assert_eq!(e.embed_text("שָׁלוֹם עֲלֵיכֶם"), e.embed_text("שלום עליכם"));
        assert_eq!(e.embed_text("كِتَابٌ جَمِيل"), e.embed_text("كتاب جميل"));
        assert_eq!(e.embed_text("Naïve café"), e.embed_text("naive cafe"));
        // Japanese has no spaces: bigrams make a shared phrase count.
        let a = e.embed_text("東京都に住んでいます");
        let b = e.embed_text("私は東京都に住んでいました");
        let c = e.embed_text("猫が魚を食べた");
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.3, "{} vs {}", cosine(&a, &b), cosine(&a, &c));
    }

    #[tokio::test]
    async fn trait_embed_matches_embed_text() {
        let e = LocalEmbedder::new(64);
        let inputs = vec!["one".to_string(), String::new(), "two words".to_string()];
        let out = e.embed(&inputs).await.unwrap();
        assert_eq!(out.len(), 3);
        for (text, v) in inputs.iter().zip(&out) {
            assert_eq!(v, &e.embed_text(text));
        }
        assert_eq!(e.model(), "quire-local-hash-v2-64");
    }
}
