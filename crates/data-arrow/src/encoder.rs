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
use crate::tokenize::{digest_of_json, tokenizer_json, unpadded};

/// Which implementation encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `berth-wordpiece`.
    WordPiece,
    /// The `tokenizers` crate.
    Tokenizers,
}

/// A tokenizer with padding off and truncation (`longest_first` to `max_length`) set.
pub struct TextEncoder {
    fast: Option<WordPiece>,
    hf: Tokenizer,
    opts: EncodeOptions,
    /// Hash of the configured tokenizer's serialized form, for fingerprints.
    digest: String,
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
        Ok(TextEncoder {
            fast,
            hf,
            opts,
            digest,
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

    /// Encodes rows `first_row..` of a batch (and their pairs) in parallel; errors
    /// name `source`, the row and `column`.
    pub fn encode(
        &self,
        first: &[&str],
        second: Option<&[&str]>,
        first_row: usize,
        source: &str,
        column: &str,
    ) -> Result<BatchEncoding> {
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
