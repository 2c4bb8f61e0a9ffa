//! `berth-data`: Arrow/Parquet datasets with map-style batched preprocessing, like
//! Hugging Face `datasets`.
//!
//! A [`Dataset`] is an Arrow schema plus record batches, memory-mapped from an Arrow
//! IPC cache file (so memory stays flat as data grows). Loaders read Parquet, CSV/TSV,
//! JSON Lines, plain text and the hub; [`Dataset::map_batched`] and friends derive new
//! datasets, each cached under a fingerprint of (parent, op, version, parameters) so a
//! pipeline run twice reuses its work.
//! Tokenizing ops encode with `berth-wordpiece` where it reproduces the tokenizer
//! exactly ([`TextEncoder`]), and [`stream_parquet`] runs ops over a Parquet input
//! straight into an output file without the cache.
//!
//! ```no_run
//! use berth_data::{load, load_tokenizer, HubOptions, LoadOptions, MapOptions, TokenizeConfig, TokenizeOp};
//!
//! # fn main() -> berth_data::Result<()> {
//! let ds = load("../shared/data/imdb/train.parquet", None, &LoadOptions::default())?;
//! let tok = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2", &HubOptions::from_env())?;
//! let op = TokenizeOp::new(&tok, TokenizeConfig::new("text"))?;
//! let tokenized = ds.shuffle(42)?.map_batched(&op, &MapOptions::default())?;
//! tokenized.to_parquet("imdb-tokenized.parquet".as_ref())?;
//! # Ok(())
//! # }
//! ```

mod chunk_op;
mod columns;
mod dataset;
mod encoder;
mod error;
mod fingerprint;
mod load;
mod ops;
mod pretrain;
mod progress;
mod save;
mod slow_tokenizer;
mod special;
mod storage;
mod stream;
mod tokenize;

pub use chunk_op::ChunkOp;
pub use dataset::{CacheMode, Dataset, DatasetDict, berth_cache_root};
pub use encoder::{Backend, MAX_TEXT_BYTES_TOKENIZERS, MAX_TEXT_BYTES_WORDPIECE, TextEncoder};
pub use error::{DataError, Result};
pub use fingerprint::Fingerprint;
pub use load::{
    CsvOptions, Format, HubOptions, LoadOptions, SampleBy, hub_files, hub_model_file, load,
    load_csv, load_hub, load_hub_split, load_jsonl, load_parquet, load_text,
};
pub use ops::{BatchOp, FnOp, MapOptions, SplitSize, permutation};
pub use pretrain::MlmOp;
pub use progress::{Progress, hide_progress};
pub use special::{WordMarks, continuation_table, masking_tokens, special_tokens, word_marks};
pub use stream::{StreamStats, stream_parquet};
pub use tokenize::{TokenizeConfig, TokenizeOp, load_tokenizer};

/// Re-exported so users build batches with the same Arrow version.
pub use arrow;
/// Re-exported: the chunker and masker whose ops this crate runs.
pub use berth_chunking;
/// Re-exported so callers name repo types with the same hf-hub version.
pub use berth_hub::hf_hub;
pub use berth_masking;
/// Re-exported so users hand `TokenizeOp` the same `Tokenizer` type.
pub use tokenizers;
