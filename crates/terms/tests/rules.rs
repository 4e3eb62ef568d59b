//! The term rules, by example and as properties over arbitrary text.

use proptest::prelude::*;

fn check_terms(text: &str, expected: &[&str]) {
    let got: Vec<String> = terms::terms(text).collect();
    assert_eq!(got, expected, "terms of {text:?}");
}

fn check_words(text: &str, expected: &[&str]) {
    let got: Vec<String> = terms::words(text).collect();
    assert_eq!(got, expected, "words of {text:?}");
}

#[test]
fn latin_text_keeps_the_stop_words_length_and_number_rules() {
    check_terms(
        "The WHALE's harpoon, in 1851: Ährenfeld & naïve co-op 3rd ok whale",
        &["whale", "harpoon", "ahrenfeld", "naive", "3rd", "whale"],
    );
    check_words("The WHALE's 1851", &["the", "whale", "s", "1851"]);
}

#[test]
fn compatibility_forms_and_ligatures_fold_to_plain_letters() {
    check_terms("Ｗｈａｌｅ ﬁnish", &["whale", "finish"]);
}

#[test]
fn hebrew_niqqud_is_dropped_so_pointed_and_plain_spellings_meet() {
    // "shalom" with and without points, and "bereshit" with cantillation.
    check_terms("שָׁלוֹם שלום", &["שלום", "שלום"]);
    check_terms("בְּרֵאשִׁ֖ית", &["בראשית"]);
}

#[test]
fn arabic_harakat_tatweel_and_hamza_seats_are_dropped() {
    check_terms("كِتَابٌ كتاب كـتـاب", &["كتاب", "كتاب", "كتاب"]);
    // Alef with hamza above or below reads as plain alef.
    check_terms("أحمد إسلام", &["احمد", "اسلام"]);
}

#[test]
fn japanese_text_yields_character_bigrams() {
    check_terms("東京都に住んでいます", &["東京", "京都", "都に", "に住", "住ん", "んで", "でい", "いま", "ます"]);
    // Half-width katakana is folded to full width; a lone kanji is a unigram.
    check_terms("ｸｼﾞﾗ 鯨", &["クジ", "ジラ", "鯨"]);
    // The voicing mark stays part of its kana.
    check_terms("かがみ", &["かが", "がみ"]);
}

#[test]
fn cjk_runs_split_from_latin_words_they_touch() {
    check_terms("Tokyo東京station", &["tokyo", "東京", "station"]);
    check_terms("한국어 텍스트", &["한국", "국어", "텍스", "스트"]);
}

#[test]
fn overlong_words_are_not_terms() {
    let long = "a".repeat(terms::MAX_TERM_CHARS + 1);
    check_terms(&format!("whale {long} harpoon"), &["whale", "harpoon"]);
    assert!(terms::is_term(&"b".repeat(terms::MAX_TERM_CHARS)));
}

#[test]
fn distinct_terms_are_sorted_and_unique() {
    assert_eq!(terms::distinct_terms("whale harpoon Whale WHALE"), ["harpoon", "whale"]);
}

#[test]
fn a_term_vector_counts_each_term_once_in_order() {
    assert_eq!(
        terms::term_vector("Whale, harpoon; the WHALE and the whale's harpoon: Nantucket"),
        [("harpoon".to_owned(), 2), ("nantucket".to_owned(), 1), ("whale".to_owned(), 3)]
    );
    assert!(terms::term_vector("the and of 1234").is_empty());
}

#[test]
fn marks_without_a_letter_belong_to_no_word() {
    check_words("\u{094D}\u{0301} क्षत्रिय", &["क्षत्रिय"]);
}

proptest! {
    #[test]
    fn a_term_vector_is_the_terms_counted(text in any::<String>()) {
        let vector = terms::term_vector(&text);
        let total: u32 = vector.iter().map(|(_, count)| count).sum();
        prop_assert_eq!(total as usize, terms::terms(&text).count());
        let keys: Vec<String> = vector.into_iter().map(|(term, _)| term).collect();
        prop_assert_eq!(keys, terms::distinct_terms(&text));
    }

    #[test]
    fn terms_are_normalised_nonempty_and_spaceless(text in any::<String>()) {
        for term in terms::terms(&text) {
            prop_assert!(!term.is_empty());
            prop_assert!(!term.chars().any(char::is_whitespace), "{term:?}");
            prop_assert_eq!(terms::normalize(&term), term.clone());
            prop_assert!(terms::is_term(&term));
            prop_assert!(term.chars().count() <= terms::MAX_TERM_CHARS);
        }
    }

    #[test]
    fn normalising_twice_changes_nothing(text in any::<String>()) {
        let once = terms::normalize(&text);
        prop_assert_eq!(terms::normalize(&once), once);
    }

    #[test]
    fn terms_of_normalised_text_are_the_same(text in any::<String>()) {
        let direct: Vec<String> = terms::terms(&text).collect();
        let via_normalised: Vec<String> = terms::terms(&terms::normalize(&text)).collect();
        prop_assert_eq!(direct, via_normalised);
    }

    #[test]
    fn separators_split_words_and_never_join_them(
        a in "[a-z\u{5d0}-\u{5ea}\u{4e00}-\u{4e20}]{1,12}",
        b in "[a-z\u{5d0}-\u{5ea}\u{4e00}-\u{4e20}]{1,12}",
        separator in "[ ,.;:!?\n\t—-]{1,3}",
    ) {
        let joined: Vec<String> = terms::words(&format!("{a}{separator}{b}")).collect();
        let apart: Vec<String> = terms::words(&a).chain(terms::words(&b)).collect();
        prop_assert_eq!(joined, apart);
    }

    #[test]
    fn ascii_words_are_lowercase_alphanumeric_runs(text in "[ -~]{0,200}") {
        let expected: Vec<String> = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        prop_assert_eq!(terms::words(&text).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn a_cjk_run_of_n_characters_gives_n_minus_one_bigrams(run in "[\u{4e00}-\u{9fff}\u{3041}-\u{3096}]{2,30}") {
        let grams: Vec<String> = terms::words(&run).collect();
        let chars: Vec<char> = run.chars().collect();
        prop_assert_eq!(grams.len(), chars.len() - 1);
        for (gram, pair) in grams.iter().zip(chars.windows(2)) {
            prop_assert_eq!(gram.chars().collect::<Vec<_>>(), pair.to_vec());
        }
    }
}

#[test]
fn stop_words_are_recognised() {
    assert!(terms::is_stop_word("the"));
    assert!(terms::is_stop_word("https"));
    assert!(!terms::is_stop_word("whale"));
}
