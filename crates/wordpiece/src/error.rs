//! The crate's one error enum.

/// Why a tokenizer could not be built or a text could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum WordPieceError {
    /// The tokenizer.json is valid but uses something this crate does not reproduce
    /// exactly; hand it to the `tokenizers` crate instead.
    #[error("unsupported tokenizer.json: {0}")]
    Unsupported(String),
    /// The tokenizer.json is malformed.
    #[error("invalid tokenizer.json: {0}")]
    Invalid(String),
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Truncation cannot be satisfied (the same cases `tokenizers` rejects).
    #[error("truncation: {0}")]
    Truncation(String),
    /// An error of one row of a batch (0-based within the batch).
    #[error("row {row} (0-based): {source}")]
    Row {
        row: usize,
        source: Box<WordPieceError>,
    },
}

pub type Result<T, E = WordPieceError> = std::result::Result<T, E>;
