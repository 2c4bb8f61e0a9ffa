//! `berth-wordpiece`: BERT WordPiece tokenization, id for id what Hugging Face
//! `tokenizers` gives for the same `tokenizer.json`, several times faster, with no
//! tensor or Arrow dependency.
//!
//! One pass over the UTF-8 bytes splits off added tokens, normalizes (`BertNormalizer`:
//! clean_text, handle_chinese_chars, strip_accents, lowercase), pre-tokenizes on
//! whitespace and punctuation (`BertPreTokenizer`) and matches pieces with LinMaxMatch
//! (a trie with failure links, linear in the word's length), writing ids straight into
//! the caller's buffer. ASCII takes a per-byte table; other characters go through the
//! same Unicode tables as `tokenizers`. Post-processing (`BertProcessing`,
//! `TemplateProcessing`) and truncation (`longest_first`, `only_first`, `only_second`)
//! follow `tokenizers` to the id. A tokenizer.json it cannot reproduce exactly is
//! refused with [`WordPieceError::Unsupported`] naming why, so callers can fall back.
//!
//! ```
//! use berth_wordpiece::{EncodeOptions, Truncation, WordPiece};
//!
//! let json = r###"{
//!   "added_tokens": [{"id": 2, "content": "[CLS]", "special": true, "normalized": false,
//!                     "single_word": false, "lstrip": false, "rstrip": false}],
//!   "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
//!                  "strip_accents": null, "lowercase": true},
//!   "pre_tokenizer": {"type": "BertPreTokenizer"},
//!   "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
//!   "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
//!             "max_input_chars_per_word": 100,
//!             "vocab": {"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3, "un": 4, "##aff": 5,
//!                       "##able": 6, "!": 7}}
//! }"###;
//! let wp = WordPiece::from_json(json).unwrap();
//! let enc = wp.encode("Unaffable! Zzz", None, &EncodeOptions::default()).unwrap();
//! assert_eq!(enc.ids, vec![2, 4, 5, 6, 7, 0, 3]);
//! let opts = EncodeOptions { truncation: Some(Truncation::longest_first(4)), ..EncodeOptions::default() };
//! assert_eq!(wp.encode("Unaffable!", None, &opts).unwrap().ids, vec![2, 4, 5, 3]);
//! ```

mod encode;
mod error;
mod normalize;
mod spec;
mod trie;

pub use encode::{BatchEncoding, EncodeOptions, Encoding, WordPiece};
pub use error::{Result, WordPieceError};
pub use spec::{
    AddedToken, Normalization, Piece, Spec, Template, Truncation, TruncationSide,
    TruncationStrategy,
};
pub use trie::max_match_reference;
