//! Planning requests: token estimates, batches and per-input truncation.
//!
//! The estimate is deliberately crude (characters / 3, rounded up): it needs
//! no tokenizer and over-counts English (about 4 characters per token), so
//! batches planned with it stay under a provider's real token limit. It can
//! under-count scripts where one character is one or more tokens (CJK), which
//! is why the default per-request budget keeps a margin below the provider's.

use std::ops::Range;

/// How much one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Max inputs in one request (0 is treated as 1).
    pub max_inputs: usize,
    /// Max estimated tokens ([`estimate_tokens`]) summed over one request's
    /// inputs. A single input above it still gets a batch of its own.
    pub max_tokens: usize,
    /// Max estimated tokens of one input: the model's own window. Callers cut longer inputs
    /// with [`truncate_for_embedding`] (at most `max_tokens` too); `usize::MAX` for an embedder
    /// that reads any length.
    pub max_input_tokens: usize,
}

/// Estimated tokens of `text`: its characters divided by 3, rounded up, at
/// least 1 (providers bill even an empty input).
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(3).max(1)
}

/// Splits `texts` into contiguous ranges that respect `limits` both by count
/// and by estimated tokens.
///
/// Ranges are non-empty, in order, and cover every input exactly once. An
/// input whose estimate alone exceeds `max_tokens` gets a batch of its own
/// (the caller truncates inputs to the per-input limit beforehand).
pub fn plan_batches(texts: &[String], limits: BatchLimits) -> Vec<Range<usize>> {
    let max_inputs = limits.max_inputs.max(1);
    let mut batches = Vec::new();
    let mut start = 0;
    let mut tokens = 0usize;
    for (i, text) in texts.iter().enumerate() {
        let estimate = estimate_tokens(text);
        let count = i - start;
        if count > 0 && (count >= max_inputs || tokens.saturating_add(estimate) > limits.max_tokens) {
            batches.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens = tokens.saturating_add(estimate);
    }
    if start < texts.len() {
        batches.push(start..texts.len());
    }
    batches
}

/// The longest prefix of `text` whose estimate is at most `max_tokens`, cut on
/// a character boundary (so at most `3 * max_tokens` characters).
pub fn truncate_for_embedding(text: &str, max_tokens: usize) -> &str {
    let max_chars = max_tokens.saturating_mul(3);
    match text.char_indices().nth(max_chars) {
        Some((byte_index, _)) => &text[..byte_index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(texts: &[&str], max_inputs: usize, max_tokens: usize, expected: Vec<Range<usize>>) {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let limits = BatchLimits { max_inputs, max_tokens, max_input_tokens: usize::MAX };
        assert_eq!(plan_batches(&texts, limits), expected);
    }

    #[test]
    fn estimates() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("ab"), 1);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 2);
        // Characters, not bytes.
        assert_eq!(estimate_tokens("ééé"), 1);
    }

    #[test]
    fn batches_by_count_and_tokens() {
        check(&[], 4, 100, vec![]);
        check(&["a", "b", "c", "d", "e"], 2, 100, vec![0..2, 2..4, 4..5]);
        // 6 chars = 2 tokens each; budget 4 tokens → two per batch.
        check(&["aaaaaa"; 5], 10, 4, vec![0..2, 2..4, 4..5]);
        // An over-long input sits alone, neighbours are not pulled in.
        check(&["a", &"x".repeat(30), "b"], 10, 5, vec![0..1, 1..2, 2..3]);
        // Zero limits still make progress.
        check(&["a", "b"], 0, 0, vec![0..1, 1..2]);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_for_embedding("abcdefg", 2), "abcdef");
        assert_eq!(truncate_for_embedding("abc", 2), "abc");
        assert_eq!(truncate_for_embedding("ééééé", 1), "ééé");
        assert_eq!(truncate_for_embedding("日本語のテキスト", 1), "日本語");
        assert_eq!(truncate_for_embedding("abc", 0), "");
        assert_eq!(truncate_for_embedding("abc", usize::MAX), "abc");
    }

    proptest! {
        #[test]
        fn plan_batches_properties(
            lens in proptest::collection::vec(0usize..40, 0..60),
            max_inputs in 0usize..10,
            max_tokens in 0usize..40,
        ) {
            let texts: Vec<String> = lens.iter().map(|&n| "é".repeat(n)).collect();
            let limits = BatchLimits { max_inputs, max_tokens, max_input_tokens: usize::MAX };
            let batches = plan_batches(&texts, limits);

            // Contiguous, non-empty, covering everything in order.
            let mut next = 0;
            for batch in &batches {
                prop_assert_eq!(batch.start, next);
                prop_assert!(batch.end > batch.start);
                next = batch.end;
            }
            prop_assert_eq!(next, texts.len());

            for batch in &batches {
                prop_assert!(batch.len() <= max_inputs.max(1));
                let tokens: usize = texts[batch.clone()].iter().map(|t| estimate_tokens(t)).sum();
                // Over the budget only as a single over-long input.
                prop_assert!(tokens <= max_tokens || batch.len() == 1);
            }

            // Greedy: a batch was not closed while the next input still fitted.
            for pair in batches.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let tokens: usize = texts[a.start..=b.start].iter().map(|t| estimate_tokens(t)).sum();
                prop_assert!(a.len() + 1 > max_inputs.max(1) || tokens > max_tokens);
            }
        }

        #[test]
        fn truncation_fits_the_estimate(text in ".{0,200}", max_tokens in 1usize..40) {
            let cut = truncate_for_embedding(&text, max_tokens);
            prop_assert!(text.starts_with(cut));
            prop_assert!(estimate_tokens(cut) <= max_tokens);
            if cut.len() < text.len() {
                prop_assert_eq!(cut.chars().count(), max_tokens * 3);
            }
        }
    }
}
