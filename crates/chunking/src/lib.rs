//! `berth-chunking`: token ids of a long text to overlapping `[CLS] .. [SEP]` chunks,
//! exactly as belt_nlp does, with no tensor or Arrow dependency so any tool can use it.
//!
//! ```
//! use berth_chunking::{ChunkConfig, SpecialTokens, chunk_ids};
//!
//! let special = SpecialTokens { cls: 101, sep: 102, pad: 0 };
//! // chunk_size 4, stride 3, minimal_chunk_length 2, no truncation, 512 positions.
//! let cfg = ChunkConfig::new(4, 3, 2, None, 512).unwrap();
//! let chunks = chunk_ids(&[1, 2, 3, 4, 5, 6, 7, 8], &cfg, &special);
//! assert_eq!(chunks, vec![vec![101, 1, 2, 3, 4, 102], vec![101, 4, 5, 6, 7, 102], vec![101, 7, 8, 102]]);
//! ```

mod chunk;
mod config;

pub use chunk::{Chunk, chunk, chunk_ids, window_ranges};
pub use config::{ChunkConfig, ChunkError, SpecialTokens};
