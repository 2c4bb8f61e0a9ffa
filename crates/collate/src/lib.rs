//! `berth-collate`: rows of token ids to padded candle tensors, like HF
//! `DataCollatorWithPadding`, pooled batches of chunked long texts, and the samplers
//! that decide which rows share a batch.
//!
//! ```
//! use berth_collate::{Example, Padding, collate};
//! use candle_core::Device;
//!
//! let rows = [Example::new(&[101, 7, 102]).with_label(1), Example::new(&[101, 102]).with_label(0)];
//! let batch = collate(&rows, &Padding::Longest { multiple_of: None }, 0, &Device::Cpu).unwrap();
//! assert_eq!(batch.input_ids.to_vec2::<u32>().unwrap(), vec![vec![101, 7, 102], vec![101, 102, 0]]);
//! assert_eq!(batch.attention_mask.to_vec2::<u32>().unwrap(), vec![vec![1, 1, 1], vec![1, 1, 0]]);
//! ```

mod batch;
mod error;
mod sampler;

pub use batch::{
    Batch, ChunkBatch, Document, Example, Label, MlmCollator, Padding, collate, collate_chunks,
};
pub use error::CollateError;
pub use sampler::{
    BatchSampler, DistributedLengthGroupedSampler, DistributedSampler, ItemShape,
    LengthGroupedSampler, RandomSampler, SequentialSampler, TokenBudgetSampler, padding_efficiency,
};
