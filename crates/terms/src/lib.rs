//! The rules that turn text into terms, in one place for every part of quire that needs them:
//! the lexical connection engine, the full-text index of each store backend, and the local
//! hashing embedder.
//!
//! Three steps, each a function:
//!
//! 1. [`normalize`]: Unicode NFKC (full-width forms, ligatures and compatibility characters
//!    become their plain letters), lowercase, then diacritics dropped: accents, Hebrew niqqud
//!    and cantillation, Arabic harakat and the hamza written over or under alef, and the Arabic
//!    tatweel, so that a pointed and an unpointed spelling of one word meet.
//! 2. [`words`]: the normalised text cut into words of letters and digits. Han, Hiragana,
//!    Katakana and Hangul are written without spaces between words, so a run of them becomes
//!    its overlapping character bigrams (a lone character stays a unigram), as search engines
//!    segment CJK text: "東京都" gives "東京" and "京都".
//! 3. [`terms`]: the words worth indexing: at least [`MIN_WORD_CHARS`] characters (CJK grams
//!    are exempt), at most [`MAX_TERM_CHARS`], not a pure number, not a [stop word](is_stop_word).
//!
//! **Key design choice:** the stores index the output of [`terms`] (space-separated) and let the
//! database split only on spaces, so the database never tokenises text by rules of its own:
//! what a query looks up is exactly what was indexed. Changing a rule here changes every stored
//! index; a migration that empties the index makes each store rebuild it from the chunks' text.
//!
//! **Invariant:** the crate is pure (no I/O, no global state) and total: any string gives terms
//! without panicking, every term is non-empty, contains no whitespace, and is a fixed point of
//! [`normalize`]. For ASCII text the result is the one quire always had: lowercase words split
//! at anything that is not a letter or a digit.
//!
//! ```
//! let terms: Vec<String> = terms::terms("The WHALE's harpoon, in 1851: Ährenfeld").collect();
//! assert_eq!(terms, ["whale", "harpoon", "ahrenfeld"]);
//!
//! // Niqqud and harakat are dropped; CJK runs become bigrams.
//! assert_eq!(terms::terms("שָׁלוֹם").collect::<Vec<_>>(), ["שלום"]);
//! assert_eq!(terms::terms("كِتَاب").collect::<Vec<_>>(), ["كتاب"]);
//! assert_eq!(terms::terms("東京都").collect::<Vec<_>>(), ["東京", "京都"]);
//! ```

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::{canonical_combining_class, is_combining_mark};

mod stop_words;

/// The edition of these rules. A stored full-text index records the edition it was built with, and
/// a store whose index was built with another edition rebuilds it from the chunks' text, so a
/// query never looks up terms cut by one edition in an index cut by another. Change it with any
/// rule that changes what [`terms`] returns.
pub const RULES_EDITION: &str = "terms-1";

/// The terms of a text as a full-text index stores them: [`distinct_terms`], space-separated.
pub fn indexed_terms(text: &str) -> String {
    distinct_terms(text).join(" ")
}

/// Words shorter than this many characters are not terms (CJK grams excepted).
pub const MIN_WORD_CHARS: usize = 3;

/// Words longer than this many characters are not terms: no language has such words, and
/// hashes, base64 and URLs glued together would otherwise bloat every index.
pub const MAX_TERM_CHARS: usize = 64;

/// The text in the form terms are cut from: NFKC, lowercase, diacritics dropped, recomposed (NFC).
///
/// A diacritic is a combining mark that positions itself on its base letter (canonical combining
/// class 1 or at least 10): Latin accents, niqqud, harakat. Marks that change the letter itself
/// are kept: nukta (class 7), the kana voicing marks (class 8: "が" stays "が") and viramas
/// (class 9), as are spacing vowel signs (class 0). The Arabic tatweel, a stretching stroke, is
/// dropped too.
pub fn normalize(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let lower: String = text.nfkc().flat_map(char::to_lowercase).collect();
    lower.nfd().filter(|&c| !is_diacritic(c) && c != TATWEEL).nfc().collect()
}

/// The Arabic tatweel (kashida), which only stretches a word.
const TATWEEL: char = '\u{0640}';

fn is_diacritic(c: char) -> bool {
    is_combining_mark(c) && !matches!(canonical_combining_class(c), 0 | 7..=9)
}

/// Whether a character is written in a script without spaces between words, whose runs
/// [`words`] cuts into bigrams: Han (with the iteration marks), Hiragana, Katakana (with the
/// prolonged sound mark) and Hangul.
pub fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{1100}'..='\u{11FF}'     // Hangul Jamo
        | '\u{3005}'..='\u{3007}'   // 々 〆 〇
        | '\u{3041}'..='\u{309F}'   // Hiragana
        | '\u{30A0}'..='\u{30FF}'   // Katakana, with ー
        | '\u{3130}'..='\u{318F}'   // Hangul Compatibility Jamo
        | '\u{31F0}'..='\u{31FF}'   // Katakana Phonetic Extensions
        | '\u{3400}'..='\u{4DBF}'   // CJK Unified Ideographs Extension A
        | '\u{4E00}'..='\u{9FFF}'   // CJK Unified Ideographs
        | '\u{A960}'..='\u{A97F}'   // Hangul Jamo Extended-A
        | '\u{AC00}'..='\u{D7FF}'   // Hangul Syllables, Jamo Extended-B
        | '\u{F900}'..='\u{FAFF}'   // CJK Compatibility Ideographs
        | '\u{1B000}'..='\u{1B16F}' // Kana Supplement and Extended-A
        | '\u{20000}'..='\u{3134F}' // CJK Unified Ideographs Extensions B to G
    )
}

/// Whether a character belongs in a word: a letter or digit, or a combining mark that
/// [`normalize`] kept (a virama, a nukta), which only counts inside a word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// The normalised text cut into words, in order, with repetitions: runs of letters, digits and
/// kept marks, each CJK run replaced by its character bigrams (or its one character).
///
/// This is what the local embedder hashes; [`terms`] filters it for indexing.
pub fn words(text: &str) -> impl Iterator<Item = String> {
    Segmenter::new(normalize(text))
}

/// The terms of a text, in order, with repetitions: the [`words`] worth indexing.
pub fn terms(text: &str) -> impl Iterator<Item = String> {
    words(text).filter(|word| is_term(word))
}

/// The distinct terms of a text, sorted: what a full-text index stores for it.
pub fn distinct_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = terms(text).collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

/// A text's terms, each once with how many times it occurs, sorted by term: what the lexical
/// engine weighs, and what a store keeps beside each chunk so that scoring never cuts a stored
/// text again.
pub type TermVector = Vec<(String, u32)>;

/// The [`TermVector`] of a text: [`terms`], counted.
pub fn term_vector(text: &str) -> TermVector {
    let mut terms: Vec<String> = terms(text).collect();
    terms.sort_unstable();
    let mut vector: TermVector = Vec::new();
    for term in terms {
        match vector.last_mut() {
            Some((last, count)) if *last == term => *count = count.saturating_add(1),
            _ => vector.push((term, 1)),
        }
    }
    vector
}

/// Whether a word (as [`words`] gives it) is a term.
pub fn is_term(word: &str) -> bool {
    let mut chars = word.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if is_cjk(first) {
        return true;
    }
    let length = 1 + chars.count();
    (MIN_WORD_CHARS..=MAX_TERM_CHARS).contains(&length) && !word.chars().all(char::is_numeric) && !is_stop_word(word)
}

/// Whether a lowercase word says nothing about a passage's subject: a common English word of 3
/// letters or more, or a fragment that markdown links leave behind ("https", "www").
pub fn is_stop_word(word: &str) -> bool {
    stop_words::STOP_WORDS.binary_search(&word).is_ok()
}

/// Cuts normalised text into words, CJK runs into bigrams.
struct Segmenter {
    text: String,
    /// Byte position of the next character to look at.
    position: usize,
    /// The CJK run being cut into bigrams, and the index of the next bigram's first character.
    run: Vec<char>,
    next_in_run: usize,
}

impl Segmenter {
    fn new(text: String) -> Self {
        Self { text, position: 0, run: Vec::new(), next_in_run: 0 }
    }

    /// The next gram of the pending CJK run, if any.
    fn next_gram(&mut self) -> Option<String> {
        let remaining = self.run.len().saturating_sub(self.next_in_run);
        let gram = match remaining {
            0 => None,
            // A run of one character is a unigram; a longer run's last character is only the
            // end of its last bigram.
            1 if self.run.len() == 1 => Some(self.run[0].to_string()),
            1 => None,
            _ => Some(self.run[self.next_in_run..self.next_in_run + 2].iter().collect()),
        };
        self.next_in_run += 1;
        if gram.is_none() {
            self.run.clear();
            self.next_in_run = 0;
        }
        gram
    }
}

impl Iterator for Segmenter {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(gram) = self.next_gram() {
                return Some(gram);
            }
            let rest = &self.text[self.position..];
            let mut chars = rest.char_indices().peekable();
            // Skip to the start of a word; a mark with no letter before it belongs to none.
            let Some((start, first)) = chars.by_ref().find(|&(_, c)| c.is_alphanumeric()) else {
                self.position = self.text.len();
                return None;
            };
            if is_cjk(first) {
                let mut end = rest.len();
                self.run.push(first);
                for (index, c) in chars {
                    if is_cjk(c) {
                        self.run.push(c);
                    } else if !is_combining_mark(c) {
                        // Marks inside a CJK run (a lone voicing mark) are left out of its grams.
                        end = index;
                        break;
                    }
                }
                self.position += end;
                continue;
            }
            let mut end = rest.len();
            for (index, c) in chars {
                if !is_word_char(c) || is_cjk(c) {
                    end = index;
                    break;
                }
            }
            let word = rest[start..end].to_owned();
            self.position += end;
            return Some(word);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(super::stop_words::STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }
}
