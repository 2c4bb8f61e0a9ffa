//! One encoder for every op that tokenizes: `berth-wordpiece` where it reproduces the
//! tokenizer.json exactly (BERT WordPiece), else the `tokenizers` crate, with the same
//! ids either way. `BERTH_TOKENIZER=tokenizers` forces the reference path (for
//! debugging or comparing).

use std::sync::OnceLock;

use berth_wordpiece::{BatchEncoding, EncodeOptions, Truncation, WordPiece, WordPieceError};
use tokenizers::{
    EncodeInput, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::error::{DataError, Result};

/// Which implementation encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `berth-wordpiece`.
    WordPiece,
    /// The `tokenizers` crate.
    Tokenizers,
}

/// The longest text (in UTF-8 bytes) each backend takes by default: tokenizing holds
/// about 10 bytes per byte of text with `berth-wordpiece` (a 100 MB text peaks near
/// 1 GB) and about 120 with the `tokenizers` crate (a 20 MB text, 2.4 GB), so a
/// longer text is refused with an error rather than taking the machine down.
/// `BERTH_MAX_TEXT_BYTES` sets the limit for both.
pub const MAX_TEXT_BYTES_WORDPIECE: usize = 128 << 20;
/// See [`MAX_TEXT_BYTES_WORDPIECE`].
pub const MAX_TEXT_BYTES_TOKENIZERS: usize = 8 << 20;

/// `BERTH_MAX_TEXT_BYTES`, when set.
fn max_text_bytes_from_env() -> Result<Option<usize>> {
    match std::env::var("BERTH_MAX_TEXT_BYTES") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
            DataError::InvalidArgument(format!(
                "BERTH_MAX_TEXT_BYTES='{v}' is not a number of bytes"
            ))
        }),
        _ => Ok(None),
    }
}

/// A tokenizer with padding off and truncation (`longest_first` to `max_length`) set.
pub struct TextEncoder {
    fast: Option<WordPiece>,
    hf: Tokenizer,
    opts: EncodeOptions,
    /// Hash of the configured tokenizer's serialized form, for fingerprints.
    digest: String,
    /// Longer texts are refused (see [`MAX_TEXT_BYTES_WORDPIECE`]).
    max_text_bytes: usize,
}

/// Logs once per process why the fast tokenizer is not used.
fn log_fallback(why: &str) {
    static LOGGED: OnceLock<()> = OnceLock::new();
    LOGGED.get_or_init(|| tracing::warn!("tokenizing with the tokenizers crate: {why}"));
}

impl TextEncoder {
    pub fn new(
        tokenizer: &Tokenizer,
        max_length: Option<usize>,
        add_special_tokens: bool,
    ) -> Result<TextEncoder> {
        let mut hf = unpadded(tokenizer)?;
        // tokenizers subtracts the special tokens from max_length unchecked (an
        // overflow below them): refuse what it cannot truncate to.
        let specials = hf.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if let Some(m) = max_length
            && m < specials
        {
            return Err(DataError::InvalidArgument(format!(
                "max_length {m} is smaller than the {specials} special tokens the tokenizer adds to a text"
            )));
        }
        hf.with_truncation(max_length.map(|max_length| TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| DataError::Tokenizer {
            what: "truncation".into(),
            message: e.to_string(),
        })?;
        // One serialization: the fast tokenizer is built from it, the digest hashes it.
        let json = tokenizer_json(&hf)?;
        let digest = digest_of_json(&json);
        let forced = std::env::var("BERTH_TOKENIZER").is_ok_and(|v| v == "tokenizers");
        let fast = if forced {
            None
        } else {
            match WordPiece::from_json(&json) {
                // State the serialized form does not carry: special tokens encoded as
                // text, and vocabulary entries sharing an id (one is not written out).
                Ok(_) if hf.get_encode_special_tokens() => {
                    log_fallback("special tokens are encoded as text (encode_special_tokens)");
                    None
                }
                Ok(wp) if wp.spec().vocab.len() != hf.get_vocab_size(false) => {
                    log_fallback("the vocabulary has tokens sharing an id");
                    None
                }
                Ok(wp) => Some(wp),
                Err(e) => {
                    log_fallback(&e.to_string());
                    None
                }
            }
        };
        let opts = EncodeOptions {
            add_special_tokens,
            truncation: max_length.map(Truncation::longest_first),
        };
        let max_text_bytes = max_text_bytes_from_env()?.unwrap_or(if fast.is_some() {
            MAX_TEXT_BYTES_WORDPIECE
        } else {
            MAX_TEXT_BYTES_TOKENIZERS
        });
        Ok(TextEncoder {
            fast,
            hf,
            opts,
            digest,
            max_text_bytes,
        })
    }

    /// Refuse texts longer than `bytes` (instead of the backend's default).
    pub fn with_max_text_bytes(mut self, bytes: usize) -> Self {
        self.max_text_bytes = bytes;
        self
    }

    /// The longest text taken, in UTF-8 bytes.
    pub fn max_text_bytes(&self) -> usize {
        self.max_text_bytes
    }

    /// An error for the first text over the limit, naming its row.
    fn check_lengths(
        &self,
        texts: &[&str],
        first_row: usize,
        source: &str,
        column: &str,
    ) -> Result<()> {
        let Some((row, text)) = texts
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > self.max_text_bytes)
        else {
            return Ok(());
        };
        let (backend, per_byte) = match self.backend() {
            Backend::WordPiece => ("berth-wordpiece", 10),
            Backend::Tokenizers => ("the tokenizers crate", 120),
        };
        Err(DataError::Value {
            source_name: source.to_string(),
            row: first_row + row,
            column: column.to_string(),
            message: format!(
                "the text is {} bytes, over the limit of {} bytes for one text: tokenizing it with {backend} would take about {} MB of memory. Split it, or raise the limit with BERTH_MAX_TEXT_BYTES",
                text.len(),
                self.max_text_bytes,
                text.len().saturating_mul(per_byte) >> 20
            ),
        })
    }

    pub fn backend(&self) -> Backend {
        if self.fast.is_some() {
            Backend::WordPiece
        } else {
            Backend::Tokenizers
        }
    }

    /// Hash of the configured tokenizer's serialized form (part of op fingerprints).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The tokenizer as configured (padding off, truncation set).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.hf
    }

    /// Encodes rows `first_row..` of a batch (and their pairs, with the pairs' column)
    /// in parallel; errors name `source`, the row and `column` (the pair column for a
    /// pair text over the size limit).
    pub fn encode(
        &self,
        first: &[&str],
        second: Option<(&[&str], &str)>,
        first_row: usize,
        source: &str,
        column: &str,
    ) -> Result<BatchEncoding> {
        self.check_lengths(first, first_row, source, column)?;
        if let Some((second, second_column)) = second {
            self.check_lengths(second, first_row, source, second_column)?;
        }
        let second = second.map(|(s, _)| s);
        match &self.fast {
            Some(wp) => wp
                .encode_batch(first, second, &self.opts)
                .map_err(|e| match e {
                    WordPieceError::Row { row, source: err } => DataError::Value {
                        source_name: source.to_string(),
                        row: first_row + row,
                        column: column.to_string(),
                        message: err.to_string(),
                    },
                    other => DataError::Tokenizer {
                        what: source.to_string(),
                        message: other.to_string(),
                    },
                }),
            None => {
                let specials = self
                    .hf
                    .get_post_processor()
                    .map_or(0, |p| p.added_tokens(second.is_some()));
                if let Some(t) = self.opts.truncation
                    && self.opts.add_special_tokens
                    && t.max_length < specials
                {
                    return Err(DataError::InvalidArgument(format!(
                        "{source}: max_length {} is smaller than the {specials} special tokens added",
                        t.max_length
                    )));
                }
                let inputs: Vec<EncodeInput> = match second {
                    None => first.iter().map(|&a| EncodeInput::from(a)).collect(),
                    Some(s) => first
                        .iter()
                        .zip(s)
                        .map(|(&a, &b)| EncodeInput::from((a, b)))
                        .collect(),
                };
                let encodings = self
                    .hf
                    .encode_batch_fast(inputs, self.opts.add_special_tokens)
                    .map_err(|e| DataError::Tokenizer {
                        what: format!("{source}: rows {first_row}..{}", first_row + first.len()),
                        message: e.to_string(),
                    })?;
                let mut out = BatchEncoding {
                    offsets: vec![0],
                    ..BatchEncoding::default()
                };
                for e in &encodings {
                    out.ids.extend_from_slice(e.get_ids());
                    out.type_ids.extend_from_slice(e.get_type_ids());
                    out.offsets.push(out.ids.len());
                }
                Ok(out)
            }
        }
    }
}

/// A hash of the tokenizer's serialized form (vocabulary, normalizer, truncation...),
/// part of the fingerprint of every op that tokenizes.
pub(crate) fn tokenizer_digest(tokenizer: &Tokenizer) -> Result<String> {
    Ok(digest_of_json(&tokenizer_json(tokenizer)?))
}

/// The tokenizer's serialized form (a tokenizer.json).
pub(crate) fn tokenizer_json(tokenizer: &Tokenizer) -> Result<String> {
    tokenizer
        .to_string(false)
        .map_err(|e| DataError::Tokenizer {
            what: "serialization".into(),
            message: e.to_string(),
        })
}

/// [`tokenizer_digest`] of an already serialized tokenizer.
pub(crate) fn digest_of_json(json: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(json.as_bytes())[..16])
}

/// A copy of `tokenizer` with the padding and truncation baked into its file turned off.
pub(crate) fn unpadded(tokenizer: &Tokenizer) -> Result<Tokenizer> {
    let mut t = tokenizer.clone();
    t.with_padding(None);
    t.with_truncation(None).map_err(|e| DataError::Tokenizer {
        what: "truncation".into(),
        message: e.to_string(),
    })?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDPIECE: &str = r###"{
      "added_tokens": [],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                     "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": {"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3, "ab": 4}}
    }"###;

    /// The same vocabulary as a WordLevel model, which only `tokenizers` encodes.
    const WORDLEVEL: &str = r###"{
      "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
      "model": {"type": "WordLevel", "unk_token": "[UNK]",
                "vocab": {"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3, "ab": 4}}
    }"###;

    #[test]
    fn a_max_length_below_the_special_tokens_is_refused() {
        // tokenizers would subtract the 2 specials from 1 without a check.
        let tok: Tokenizer = WORDPIECE.parse().unwrap();
        for m in [0, 1] {
            let e = TextEncoder::new(&tok, Some(m), true)
                .err()
                .unwrap()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "max_length {m} is smaller than the 2 special tokens the tokenizer adds to a text"
                )
            );
        }
        assert!(TextEncoder::new(&tok, Some(2), true).is_ok());
    }

    #[test]
    fn a_text_over_the_limit_is_refused_by_row_and_one_at_it_is_taken() {
        for (json, backend, name) in [
            (WORDPIECE, Backend::WordPiece, "berth-wordpiece"),
            (WORDLEVEL, Backend::Tokenizers, "the tokenizers crate"),
        ] {
            let tok: Tokenizer = json.parse().unwrap();
            let enc = TextEncoder::new(&tok, None, true).unwrap();
            assert_eq!(enc.backend(), backend);
            let default = match backend {
                Backend::WordPiece => MAX_TEXT_BYTES_WORDPIECE,
                Backend::Tokenizers => MAX_TEXT_BYTES_TOKENIZERS,
            };
            if std::env::var_os("BERTH_MAX_TEXT_BYTES").is_none() {
                assert_eq!(enc.max_text_bytes(), default);
            }
            let enc = enc.with_max_text_bytes(8);
            let at_limit = "ab ab ab";
            let out = enc
                .encode(&["ab", at_limit], None, 10, "f.jsonl", "text")
                .unwrap();
            assert_eq!(out.ids, vec![2, 4, 3, 2, 4, 4, 4, 3]);
            let e = enc
                .encode(&["ab", "ab ab ab ", "ab"], None, 10, "f.jsonl", "text")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "f.jsonl: row 11 (0-based), column 'text': the text is 9 bytes, over the limit of 8 bytes for one text: tokenizing it with {name} would take"
                )),
                "{e}"
            );
            assert!(
                e.ends_with("Split it, or raise the limit with BERTH_MAX_TEXT_BYTES"),
                "{e}"
            );
            // The second text of a pair is held to the same limit, and named by its column.
            let e = enc
                .encode(&["ab"], Some((&["ab ab ab ab"], "pair")), 0, "f", "text")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("f: row 0 (0-based), column 'pair': the text is 11 bytes"),
                "{e}"
            );
        }
    }
}
