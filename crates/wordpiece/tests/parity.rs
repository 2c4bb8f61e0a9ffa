//! Ids are the product: berth-wordpiece against `tokenizers` on real text (Meditations,
//! MRPC pairs with and without truncation) and on random strings built to hit every
//! branch (combining marks, CJK, control and zero-width characters, emoji, mixed
//! scripts, over-long words, added tokens inside text), with the MiniLM fixture's
//! tokenizer.json and cased and other variants of it. IMDB's 50,000 reviews are
//! compared in the workspace end-to-end tests (they need the parquet reader).
//!
//! `BERTH_PARITY_CASES=N` sets how many random strings each variant gets (default
//! 20,000; the fast tokenizer issue's bar, 1,000,000, runs in about a minute per
//! variant in release).

use berth_wordpiece::{
    EncodeOptions, Truncation, TruncationSide, TruncationStrategy, WordPiece, WordPieceError,
};
use serde_json::Value;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams};

fn minilm_json() -> Option<Value> {
    let dir = berth_testkit::minilm_dir()?;
    let text = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

/// The same tokenizer.json as ours and as `tokenizers`' (padding and truncation off).
fn both(json: &Value) -> (WordPiece, Tokenizer) {
    let text = json.to_string();
    let wp = WordPiece::from_json(&text).unwrap();
    let mut hf = Tokenizer::from_bytes(text.as_bytes()).unwrap();
    hf.with_padding(None);
    hf.with_truncation(None).unwrap();
    (wp, hf)
}

/// Variants of a tokenizer.json's normalizer.
fn variants(base: &Value) -> Vec<(&'static str, Value)> {
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = base.clone();
        f(v["normalizer"].as_object_mut().unwrap());
        v
    };
    vec![
        ("uncased", base.clone()),
        (
            "cased",
            with(&|n| {
                n.insert("lowercase".into(), false.into());
                n.insert("strip_accents".into(), false.into());
            }),
        ),
        (
            "lowercase-keep-accents",
            with(&|n| {
                n.insert("strip_accents".into(), false.into());
            }),
        ),
        (
            "strip-accents-no-lowercase",
            with(&|n| {
                n.insert("lowercase".into(), false.into());
                n.insert("strip_accents".into(), true.into());
            }),
        ),
        (
            "no-clean-no-chinese",
            with(&|n| {
                n.insert("clean_text".into(), false.into());
                n.insert("handle_chinese_chars".into(), false.into());
            }),
        ),
    ]
}

/// `tokenizers` with the given truncation set (cloned once per setting, not per text).
fn with_truncation(hf: &Tokenizer, truncation: Option<Truncation>) -> Tokenizer {
    let mut hf = hf.clone();
    set_truncation(&mut hf, truncation);
    hf
}

/// Sets `hf`'s truncation to ours.
fn set_truncation(hf: &mut Tokenizer, truncation: Option<Truncation>) {
    hf.with_truncation(truncation.map(|t| TruncationParams {
        max_length: t.max_length,
        strategy: match t.strategy {
            TruncationStrategy::LongestFirst => tokenizers::TruncationStrategy::LongestFirst,
            TruncationStrategy::OnlyFirst => tokenizers::TruncationStrategy::OnlyFirst,
            TruncationStrategy::OnlySecond => tokenizers::TruncationStrategy::OnlySecond,
        },
        stride: 0,
        direction: match t.side {
            TruncationSide::Right => TruncationDirection::Right,
            TruncationSide::Left => TruncationDirection::Left,
        },
    }))
    .unwrap();
}

fn hf_encode(
    hf: &Tokenizer,
    a: &str,
    b: Option<&str>,
    add_special_tokens: bool,
) -> Result<Ids, String> {
    let enc = match b {
        None => hf.encode_fast(a, add_special_tokens),
        Some(b) => hf.encode_fast((a, b), add_special_tokens),
    }
    .map_err(|e| e.to_string())?;
    Ok((enc.get_ids().to_vec(), enc.get_type_ids().to_vec()))
}

fn ours(
    wp: &WordPiece,
    a: &str,
    b: Option<&str>,
    add_special_tokens: bool,
    truncation: Option<Truncation>,
) -> Result<Ids, WordPieceError> {
    let opts = EncodeOptions {
        add_special_tokens,
        truncation,
    };
    let e = wp.encode(a, b, &opts)?;
    Ok((e.ids, e.type_ids))
}

type Ids = (Vec<u32>, Vec<u32>);

/// Both gave the same ids (returned), or both refused (`None`); anything else fails,
/// saying `what`.
fn agree(
    want: Result<Ids, String>,
    got: Result<Ids, WordPieceError>,
    what: impl Fn() -> String,
) -> Option<Ids> {
    match (want, got) {
        (Ok(w), Ok(g)) => {
            assert_eq!(g, w, "{}", what());
            Some(w)
        }
        (Err(_), Err(_)) => None,
        (w, g) => panic!("{}: tokenizers {w:?}, berth {g:?}", what()),
    }
}

fn assert_same(wp: &WordPiece, hf: &Tokenizer, a: &str, b: Option<&str>, what: &str) {
    for add in [true, false] {
        let want = hf_encode(hf, a, b, add).unwrap();
        let got = ours(wp, a, b, add, None).unwrap();
        assert_eq!(got, want, "{what}, add_special_tokens {add}: {a:?} / {b:?}");
    }
}

#[test]
fn meditations_every_line_every_variant() {
    let Some(base) = minilm_json() else { return };
    let Some(data) = berth_testkit::data_dir() else {
        return;
    };
    let text = std::fs::read_to_string(data.join("meditations/meditations.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 507);
    for (name, json) in variants(&base) {
        let (wp, hf) = both(&json);
        for (i, line) in lines.iter().enumerate() {
            assert_same(&wp, &hf, line, None, &format!("{name}, line {}", i + 1));
        }
        // The whole book as one text: a long input with every line break.
        assert_same(&wp, &hf, &text, None, &format!("{name}, whole book"));
    }
}

fn mrpc_pairs(file: &str) -> Vec<(String, String)> {
    let data = berth_testkit::data_dir().unwrap();
    let text = std::fs::read_to_string(data.join("mrpc").join(file)).unwrap();
    text.trim_start_matches('\u{feff}')
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 5, "{file}: {l:?}");
            (cols[3].to_string(), cols[4].to_string())
        })
        .collect()
}

#[test]
fn mrpc_pairs_with_and_without_truncation() {
    let Some(base) = minilm_json() else { return };
    if berth_testkit::data_dir().is_none() {
        return;
    }
    let mut pairs = mrpc_pairs("train.tsv");
    pairs.extend(mrpc_pairs("dev.tsv"));
    pairs.extend(mrpc_pairs("test.tsv"));
    assert_eq!(pairs.len(), 3668 + 408 + 1725);
    let (wp, hf) = both(&base);
    let strategies = [
        TruncationStrategy::LongestFirst,
        TruncationStrategy::OnlyFirst,
        TruncationStrategy::OnlySecond,
    ];
    let mut settings = Vec::new();
    for max_length in [3, 16, 32, 48, 128] {
        for strategy in strategies {
            for side in [TruncationSide::Right, TruncationSide::Left] {
                let t = Truncation {
                    max_length,
                    strategy,
                    side,
                };
                settings.push((t, with_truncation(&hf, Some(t))));
            }
        }
    }
    let mut truncated = 0;
    let mut errors = 0;
    for (i, (a, b)) in pairs.iter().enumerate() {
        assert_same(&wp, &hf, a, Some(b), &format!("pair {i}"));
        for (t, hf_t) in &settings {
            let want = hf_encode(hf_t, a, Some(b), true);
            let got = ours(&wp, a, Some(b), true, Some(*t));
            match agree(want, got, || format!("pair {i}, {t:?}")) {
                Some(w) if w.0.len() == t.max_length => truncated += 1,
                Some(_) => {}
                None => errors += 1,
            }
        }
    }
    assert!(truncated > 10_000, "only {truncated} truncations exercised");
    assert!(errors > 0, "the too-short cases of only_first/only_second");
}

/// xorshift64*: a seeded generator with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A random string mixing the characters tokenizers treat specially.
fn random_text(rng: &mut Rng, vocab: &[&str]) -> String {
    const POOLS: &[&[char]] = &[
        // ASCII letters, digits, punctuation, whitespace.
        &[
            'a', 'b', 'e', 'n', 's', 't', 'A', 'Z', '0', '7', '.', ',', '!', '#', '[', ']', '-',
            '\'', ' ', ' ', '\t', '\n', '\r',
        ],
        // Control, format and zero-width characters, the replacement character, NUL.
        &[
            '\0', '\u{1}', '\u{7f}', '\u{85}', '\u{ad}', '\u{200b}', '\u{200c}', '\u{200d}',
            '\u{2060}', '\u{feff}', '\u{fffd}', '\u{e000}', '\u{1f}', '\u{b}', '\u{c}',
        ],
        // Combining marks (Mn, Mc, Me) and precomposed letters that decompose.
        &[
            '\u{300}', '\u{301}', '\u{308}', '\u{316}', '\u{327}', '\u{36f}', '\u{489}', '\u{903}',
            '\u{94d}', '\u{e48}', 'é', 'Å', 'ñ', 'ǅ', 'ﬁ', 'İ', 'ẞ', 'Σ', 'ς', 'Ⅷ', '\u{212b}',
            'ő', 'Ǖ',
        ],
        // CJK: unified, extension A and B, compatibility ideographs (decompose), radicals.
        &[
            '中',
            '文',
            '字',
            '\u{3400}',
            '\u{4dbf}',
            '\u{20000}',
            '\u{2a6df}',
            '\u{f900}',
            '\u{fa0e}',
            '\u{2f800}',
            '\u{2e80}',
            '、',
            '。',
            '「',
        ],
        // Kana, Hangul (decomposes under NFD), Thai, Devanagari, Arabic, Hebrew, Cyrillic, Greek.
        &[
            'あ', 'カ', 'ー', '한', '글', 'ก', 'ไ', 'क', 'ष', 'ع', 'ب', 'ש', 'Ж', 'я', 'Ω', 'ά',
        ],
        // Emoji with modifiers, ZWJ sequences and flags; symbols.
        &[
            '😀',
            '👍',
            '\u{1f3fb}',
            '👩',
            '\u{fe0f}',
            '🇫',
            '🇷',
            '€',
            '©',
            '™',
            '∑',
            '½',
        ],
        // Unicode whitespace and punctuation.
        &[
            '\u{a0}', '\u{2003}', '\u{3000}', '\u{2028}', '\u{1680}', '—', '«', '»', '¿', '‽',
            '\u{2e3a}',
        ],
    ];
    let mut s = String::new();
    let parts = rng.below(12);
    for _ in 0..parts {
        match rng.below(10) {
            0..=3 => {
                let pool = POOLS[rng.below(POOLS.len())];
                for _ in 0..1 + rng.below(6) {
                    s.push(*rng.pick(pool));
                }
            }
            4 | 5 => {
                // A vocabulary piece, maybe capitalised or glued to the last one.
                let w = rng.pick(vocab);
                if rng.below(3) == 0 {
                    s.push_str(&w.to_uppercase());
                } else {
                    s.push_str(w.trim_start_matches("##"));
                }
            }
            6 => s.push(' '),
            7 => {
                // Any scalar value at all.
                let c = loop {
                    if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                        break c;
                    }
                };
                s.push(c);
            }
            8 => {
                // A word around max_input_chars_per_word (100).
                let n = 95 + rng.below(12);
                let c = *rng.pick(&['a', 'é', 'x', '中']);
                s.extend(std::iter::repeat_n(c, n));
            }
            _ => s.push_str(rng.pick::<&str>(&[
                "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[CLS", "[[SEP]]", "##", "[mask]",
            ])),
        }
    }
    s
}

fn random_cases() -> usize {
    std::env::var("BERTH_PARITY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn random_strings_every_variant() {
    let Some(base) = minilm_json() else { return };
    let cases = random_cases();
    let vocab_json = base["model"]["vocab"].as_object().unwrap().clone();
    let vocab: Vec<&str> = vocab_json.keys().map(String::as_str).collect();
    for (v, (name, json)) in variants(&base).into_iter().enumerate() {
        let (wp, hf) = both(&json);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ v as u64);
        // Every strategy and side: tokenizers 0.23 caps each text at `max_length` ids
        // at a pre-token's end before truncating (see `capped_len` in encode.rs).
        let mut truncating: Vec<Truncation> = Vec::new();
        for max_length in 4..44 {
            for strategy in [
                TruncationStrategy::LongestFirst,
                TruncationStrategy::OnlyFirst,
                TruncationStrategy::OnlySecond,
            ] {
                for side in [TruncationSide::Right, TruncationSide::Left] {
                    let t = Truncation {
                        max_length,
                        strategy,
                        side,
                    };
                    truncating.push(t);
                }
            }
        }
        let mut hf_t = hf.clone();
        let (mut pairs, mut both_capped, mut errors) = (0, 0, 0);
        for case in 0..cases {
            let a = random_text(&mut rng, &vocab);
            let want = hf_encode(&hf, &a, None, true).unwrap();
            let got = ours(&wp, &a, None, true, None).unwrap();
            assert_eq!(got, want, "{name}, case {case}: {a:?}");
            if case % 4 == 2 {
                // One text, any setting: under only_second a too-long one is refused.
                let t = truncating[rng.below(truncating.len())];
                set_truncation(&mut hf_t, Some(t));
                let add = rng.below(4) != 0;
                let want = hf_encode(&hf_t, &a, None, add);
                let got = ours(&wp, &a, None, add, Some(t));
                agree(want, got, || {
                    format!("{name}, case {case}, {t:?}, add_special_tokens {add}: {a:?}")
                });
            }
            if case % 4 == 0 {
                let b = random_text(&mut rng, &vocab);
                let t = truncating[rng.below(truncating.len())];
                set_truncation(&mut hf_t, Some(t));
                let add = rng.below(4) != 0;
                let want = hf_encode(&hf_t, &a, Some(&b), add);
                let got = ours(&wp, &a, Some(&b), add, Some(t));
                let what = || {
                    format!(
                        "{name}, pair case {case}, {t:?}, add_special_tokens {add}: {a:?} / {b:?}"
                    )
                };
                if agree(want, got, what).is_none() {
                    errors += 1;
                }
                pairs += 1;
                let whole = |x: &str| ours(&wp, x, None, false, None).unwrap().0.len();
                if t.strategy == TruncationStrategy::LongestFirst
                    && whole(&a) >= t.max_length
                    && whole(&b) >= t.max_length
                {
                    both_capped += 1;
                }
            }
        }
        // The case the cap decides: a pair cut longest-first with both texts long.
        assert!(
            both_capped > pairs / 200,
            "{name}: only {both_capped} of {pairs} pairs had both texts capped"
        );
        assert!(
            errors > 0,
            "{name}: the too-short cases of only_first/only_second"
        );
        println!(
            "{name}: {cases} random strings and {pairs} truncated pairs ({both_capped} \
             longest-first with both texts capped, {errors} refused by both), identical ids"
        );
    }
}

/// The two cases where `tokenizers` 0.23's cap (each text tokenized only up to
/// `max_length` ids, to a word's end) changes what truncation keeps, pinned.
#[test]
fn truncation_sees_texts_capped_at_max_length_as_tokenizers_0_23_does() {
    let Some(base) = minilm_json() else { return };
    let (wp, hf) = both(&base);
    let whole = |x: &str| ours(&wp, x, None, false, None).unwrap().0;
    // Nine one-id words, against six one-id words and a two-piece one: 9 and 8 ids,
    // capped at 7 and 8 (the cap ends with the word that reaches 7).
    let a = "a b c d e f g h i";
    let b = "a b c d e f tokenization";
    assert_eq!((whole(a).len(), whole(b).len()), (9, 8));
    let t = Truncation::longest_first(7);
    let want = hf_encode(&with_truncation(&hf, Some(t)), a, Some(b), false).unwrap();
    let got = ours(&wp, a, Some(b), false, Some(t)).unwrap();
    assert_eq!(got, want);
    // Capped, the first is the shorter and keeps 3 ids; on whole lengths it would
    // be the longer and keep the odd one, 4.
    let first = got.1.iter().filter(|&&ty| ty == 0).count();
    assert_eq!((first, got.0.len() - first), (3, 4));
    // only_first with an empty first text and no special tokens: the second text,
    // capped at exactly max_length, is kept, where whole it would be refused.
    let t = Truncation {
        max_length: 7,
        strategy: TruncationStrategy::OnlyFirst,
        side: TruncationSide::Left,
    };
    let want = hf_encode(&with_truncation(&hf, Some(t)), "", Some(a), false).unwrap();
    let got = ours(&wp, "", Some(a), false, Some(t)).unwrap();
    assert_eq!(got, want);
    assert_eq!(got.0, whole(a)[2..]);
    // A single text under only_second is not capped: too long, it is refused.
    let t = Truncation {
        max_length: 7,
        strategy: TruncationStrategy::OnlySecond,
        side: TruncationSide::Right,
    };
    assert!(hf_encode(&with_truncation(&hf, Some(t)), a, None, false).is_err());
    assert!(ours(&wp, a, None, false, Some(t)).is_err());
}

#[test]
fn unsupported_files_say_why() {
    let Some(base) = minilm_json() else { return };
    let mut bpe = base.clone();
    bpe["model"]["type"] = "BPE".into();
    let err = WordPiece::from_json(&bpe.to_string()).unwrap_err();
    assert!(matches!(err, WordPieceError::Unsupported(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "unsupported tokenizer.json: model is BPE, not WordPiece"
    );
    let mut lstrip = base.clone();
    lstrip["added_tokens"][4]["lstrip"] = true.into();
    let err = WordPiece::from_json(&lstrip.to_string()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported tokenizer.json: added token \"[MASK]\" has lstrip set"
    );
    let mut seq = base.clone();
    seq["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": []});
    assert!(WordPiece::from_json(&seq.to_string()).is_err());
    let wp = WordPiece::from_json(&base.to_string()).unwrap();
    assert!(wp.spec().file_padding);
    assert_eq!(
        wp.spec().file_truncation,
        Some(Truncation::longest_first(128))
    );
}

#[test]
fn batch_equals_one_at_a_time() {
    let Some(base) = minilm_json() else { return };
    let (wp, _) = both(&base);
    let vocab_json = base["model"]["vocab"].as_object().unwrap().clone();
    let vocab: Vec<&str> = vocab_json.keys().map(String::as_str).collect();
    let mut rng = Rng(7);
    let a: Vec<String> = (0..500).map(|_| random_text(&mut rng, &vocab)).collect();
    let b: Vec<String> = (0..500).map(|_| random_text(&mut rng, &vocab)).collect();
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let opts = EncodeOptions {
        add_special_tokens: true,
        truncation: Some(Truncation::longest_first(24)),
    };
    let batch = wp.encode_batch(&a, Some(&b), &opts).unwrap();
    assert_eq!(batch.len(), 500);
    for i in 0..500 {
        let one = wp.encode(a[i], Some(b[i]), &opts).unwrap();
        assert_eq!(batch.row(i), &one.ids[..], "row {i}");
        assert_eq!(batch.type_row(i), &one.type_ids[..], "row {i}");
    }
}

#[test]
fn a_batch_error_names_its_row() {
    let Some(base) = minilm_json() else { return };
    let (wp, hf) = both(&base);
    let t = Truncation {
        max_length: 6,
        strategy: TruncationStrategy::OnlyFirst,
        side: TruncationSide::Right,
    };
    let opts = EncodeOptions {
        add_special_tokens: true,
        truncation: Some(t),
    };
    let first = ["fine", "a", "also fine"];
    let second = ["b", "a long second text here", "c"];
    let err = wp.encode_batch(&first, Some(&second), &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 1 (0-based): truncation: the first text has 1 ids, not more than the 3 to remove"
    );
    // tokenizers refuses the same row.
    let hf_t = with_truncation(&hf, Some(t));
    assert!(hf_encode(&hf_t, first[1], Some(second[1]), true).is_err());
    assert!(hf_encode(&hf_t, first[0], Some(second[0]), true).is_ok());
}

/// `tokenizers` gives an added token its vocabulary id, or the next id after the
/// vocabulary, whatever id the file writes; so does berth-wordpiece.
#[test]
fn added_token_ids_are_assigned_as_tokenizers_assigns_them() {
    let json = r###"{
      "added_tokens": [
        {"id": 7, "content": "<x>", "special": true, "normalized": false, "single_word": false, "lstrip": false, "rstrip": false},
        {"id": 9, "content": "[CLS]", "special": true, "normalized": false, "single_word": false, "lstrip": false, "rstrip": false},
        {"id": 3, "content": "<y>", "special": false, "normalized": false, "single_word": false, "lstrip": false, "rstrip": false}
      ],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": null,
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1, "[CLS]": 2}}
    }"###;
    let wp = WordPiece::from_json(json).unwrap();
    let hf = Tokenizer::from_bytes(json.as_bytes()).unwrap();
    let text = "a<x>a [CLS]<y> b";
    let want = hf.encode_fast(text, true).unwrap().get_ids().to_vec();
    assert_eq!(want, vec![1, 3, 1, 2, 4, 0]);
    assert_eq!(ours(&wp, text, None, true, None).unwrap().0, want);
}
