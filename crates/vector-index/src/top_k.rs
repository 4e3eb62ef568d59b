//! A bounded "best k so far" accumulator: exact search over a stream of vectors keeps k entries
//! per query, never the stream.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One scored key. Orders by score, then by key (a lower key ranks higher among equal scores), so
/// results never depend on the order the stream arrived in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Cosine similarity; finite.
    pub score: f32,
    /// The key the score belongs to.
    pub key: u64,
}

impl Eq for Scored {}

impl Ord for Scored {
    /// "Greater" means "ranks higher".
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.key.cmp(&self.key))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keeps the `k` highest-ranking [`Scored`] entries offered to it, in O(log k) per offer and
/// O(k) memory.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    /// A min-heap (through `Reverse`) of the kept entries: its top is the weakest one kept.
    heap: BinaryHeap<std::cmp::Reverse<Scored>>,
}

impl TopK {
    /// An empty accumulator that keeps at most `k` entries.
    pub fn new(k: usize) -> TopK {
        TopK { k, heap: BinaryHeap::with_capacity(k.min(4096) + 1) }
    }

    /// Offers an entry; non-finite scores are ignored.
    pub fn offer(&mut self, candidate: Scored) {
        if self.k == 0 || !candidate.score.is_finite() {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(candidate));
        } else if let Some(weakest) = self.heap.peek()
            && candidate > weakest.0
        {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse(candidate));
        }
    }

    /// The kept entries, highest-ranking first.
    pub fn into_sorted(self) -> Vec<Scored> {
        let mut kept: Vec<Scored> = self.heap.into_iter().map(|entry| entry.0).collect();
        kept.sort_by(|a, b| b.cmp(a));
        kept
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The accumulator agrees with sorting everything and taking the first k.
        #[test]
        fn keeps_what_a_full_sort_keeps(scores in prop::collection::vec(-1.0f32..1.0, 0..200), k in 0usize..20) {
            let entries: Vec<Scored> = scores.iter().enumerate().map(|(i, &score)| Scored { score, key: i as u64 % 50 }).collect();
            let mut top = TopK::new(k);
            for &entry in &entries {
                top.offer(entry);
            }
            let mut expected = entries.clone();
            expected.sort_by(|a, b| b.cmp(a));
            expected.truncate(k);
            prop_assert_eq!(top.into_sorted(), expected);
        }
    }

    #[test]
    fn ties_rank_the_lower_key_first_and_nan_is_ignored() {
        let mut top = TopK::new(2);
        for (score, key) in [(0.5, 9), (f32::NAN, 0), (0.5, 3), (0.5, 7)] {
            top.offer(Scored { score, key });
        }
        let keys: Vec<u64> = top.into_sorted().iter().map(|s| s.key).collect();
        assert_eq!(keys, [3, 7]);
    }
}
