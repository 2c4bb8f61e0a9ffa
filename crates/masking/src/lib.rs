//! `berth-masking`: masked-language-model masking and next-sentence-prediction pairs,
//! as Hugging Face `DataCollatorForLanguageModeling` and
//! `TextDatasetForNextSentencePrediction` make them, over plain token ids (no tensor
//! dependency). Every random choice comes from a seed.
//!
//! ```
//! use berth_masking::{MaskingTokens, MlmConfig, mask_tokens, rng_for};
//!
//! let tokens = MaskingTokens { mask: 103, pad: 0, special_ids: vec![0, 100, 101, 102, 103], vocab_size: 30522 };
//! let ids = [101, 2023, 2003, 1037, 3231, 102];
//! let out = mask_tokens(&ids, None, &MlmConfig::default(), &tokens, &mut rng_for(42, 0));
//! assert_eq!(out.input_ids.len(), ids.len());
//! // [CLS] and [SEP] are never selected: their labels are -100.
//! assert_eq!((out.labels[0], out.labels[5]), (-100, -100));
//! ```

mod mlm;
mod nsp;
mod sentences;

pub use mlm::{
    ContinuationTable, DynamicMasker, IGNORE_INDEX, MaskStrategy, Masked, MaskingTokens, MlmConfig,
    MlmError, mask_tokens, rng_for, word_starts_from_continuations,
};
pub use nsp::{NspConfig, NspError, NspPair, encode_pair, nsp_pairs};
pub use sentences::split_sentences;
