//! Whole-word masking with every kind of tokenizer Berth's encoder families use
//! (WordPiece `##`, byte-level BPE `Ġ`, Unigram `▁`; the tiny tokenizers of
//! `crates/model/tests/fixtures/families`): no word is ever partly masked, and the
//! share of words selected is `mlm_probability`.

use berth_data::tokenizers::Tokenizer;
use berth_data::{WordMarks, continuation_table, masking_tokens, word_marks};
use berth_masking::{IGNORE_INDEX, MlmConfig, mask_tokens, rng_for};
use proptest::prelude::*;

fn tokenizer(family: &str) -> Tokenizer {
    let path = berth_testkit::workspace_root()
        .join("crates/model/tests/fixtures/families")
        .join(family)
        .join("tokenizer.json");
    assert!(path.is_file(), "missing fixture {}", path.display());
    Tokenizer::from_file(path).unwrap()
}

/// (words, masked words, whether the first word is masked) of one text masked
/// whole-word; panics if a word of the tokenizer's own pre-tokenization is partly
/// masked.
fn mask_words(tok: &Tokenizer, text: &str, seed: u64, index: u64) -> (usize, usize, bool) {
    let enc = tok.encode(text, true).unwrap();
    let table = continuation_table(tok).unwrap();
    let starts = table.word_starts(enc.get_ids());
    let cfg = MlmConfig {
        whole_word: true,
        ..MlmConfig::default()
    };
    let masked = mask_tokens(
        enc.get_ids(),
        Some(&starts),
        &cfg,
        &masking_tokens(tok).unwrap(),
        &mut rng_for(seed, index),
    );
    let words = enc.get_word_ids();
    let last = words.iter().flatten().max().map_or(0, |w| w + 1);
    let (mut picked, mut first) = (0, false);
    for w in 0..last {
        let labels: Vec<bool> = words
            .iter()
            .zip(&masked.labels)
            .filter(|(id, _)| **id == Some(w))
            .map(|(_, &l)| l != IGNORE_INDEX)
            .collect();
        assert!(
            labels.iter().all(|&l| l == labels[0]),
            "word {w} of {text:?} is partly masked: tokens {:?}, labels {:?}",
            enc.get_tokens(),
            masked.labels
        );
        picked += usize::from(labels[0]);
        first |= w == 0 && labels[0];
    }
    (last as usize, picked, first)
}

#[test]
fn each_family_tokenizer_marks_words_its_own_way() {
    assert_eq!(
        word_marks(&tokenizer("bert")),
        Some(WordMarks::ContinuationPrefix("##".into()))
    );
    assert_eq!(
        word_marks(&tokenizer("roberta")),
        Some(WordMarks::StartMarker("\u{120}".into()))
    );
    assert_eq!(
        word_marks(&tokenizer("xlm-roberta")),
        Some(WordMarks::StartMarker("\u{2581}".into()))
    );
}

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z]{1,12}", 1..40).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_word_is_ever_partly_masked(text in words(), seed in 0u64..1000) {
        for family in ["bert", "roberta", "xlm-roberta"] {
            mask_words(&tokenizer(family), &text, seed, 0);
        }
    }
}

#[test]
fn the_share_of_words_selected_is_within_3_sigma_of_15_percent() {
    let texts: Vec<String> = (0..400)
        .map(|i| {
            (0..25)
                .map(|j| {
                    let n = (i * 31 + j * 17) % 97;
                    "abcdefghijklmnopqrstuvwxyz"
                        .chars()
                        .cycle()
                        .skip(n % 26)
                        .take(2 + n % 9)
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for family in ["roberta", "xlm-roberta"] {
        let tok = tokenizer(family);
        let (mut words, mut picked, mut firsts) = (0usize, 0usize, 0usize);
        for (i, t) in texts.iter().enumerate() {
            let (w, p, first) = mask_words(&tok, t, 7, i as u64);
            words += w;
            picked += p;
            firsts += usize::from(first);
        }
        // A byte-level BPE text's first word has no `Ġ`: it is still a word of its
        // own, not a part of `<s>` (which is never masked). 15% of 400 is 60.
        assert!(
            (30..=90).contains(&firsts),
            "{family}: the first word was selected in {firsts} of 400 texts"
        );
        let share = picked as f64 / words as f64;
        let sigma = (0.15 * 0.85 / words as f64).sqrt();
        assert!(
            (share - 0.15).abs() <= 3.0 * sigma,
            "{family}: {picked} of {words} words selected ({share:.4}), 3 sigma is {:.4}",
            3.0 * sigma
        );
    }
}
