//! The one error type of `berth-collate`.

/// What can go wrong turning rows into tensors.
#[derive(Debug, thiserror::Error)]
pub enum CollateError {
    #[error("row {row}: {what} has {got} values, input_ids has {expected}")]
    LengthMismatch {
        row: usize,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("row {row} has {len} ids, more than max_length {max_length}")]
    TooLong {
        row: usize,
        len: usize,
        max_length: usize,
    },
    #[error("labels must be all classes, all regression targets or all absent (row {row})")]
    MixedLabels { row: usize },
    #[error("document {doc} has no chunks")]
    EmptyDocument { doc: usize },
    #[error("empty batch")]
    Empty,
    #[error("invalid sampler setting: {0}")]
    Sampler(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
