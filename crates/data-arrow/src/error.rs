//! The one error type of `berth-data`: every variant that concerns user input names
//! the file (or dataset source), and the row and column where they are known.

use std::path::PathBuf;

use arrow::error::ArrowError;

/// Everything that can go wrong while loading, transforming or saving a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened, read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a text format (CSV/TSV, JSON Lines, plain text) could not be parsed.
    #[error("{path}: line {line}{}: {message}", column.as_ref().map(|c| format!(", column '{c}'")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        column: Option<String>,
        message: String,
    },
    /// A column the operation needs is not in the dataset.
    #[error("{source_name}: column '{column}' not found (columns: {})", available.join(", "))]
    MissingColumn {
        source_name: String,
        column: String,
        available: Vec<String>,
    },
    /// A column exists but holds the wrong type.
    #[error("{source_name}: column '{column}' must be {expected}, found {found}")]
    ColumnType {
        source_name: String,
        column: String,
        expected: String,
        found: String,
    },
    /// A value inside a row is unusable (null text, an id out of range, ...).
    #[error("{source_name}: row {row} (0-based), column '{column}': {message}")]
    Value {
        source_name: String,
        row: usize,
        column: String,
        message: String,
    },
    /// An Arrow compute or IPC error, with what was being done.
    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: ArrowError,
    },
    /// A Parquet file could not be read or written.
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A tokenizer could not be loaded or failed on a batch.
    #[error("tokenizer {what}: {message}")]
    Tokenizer { what: String, message: String },
    /// The Hugging Face hub (or its offline cache) could not give what was asked.
    #[error("hub repo '{repo}': {message}")]
    Hub { repo: String, message: String },
    /// The caller asked for something impossible (an index out of range, a bad split size).
    #[error("{0}")]
    InvalidArgument(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl From<berth_fs::Error> for DataError {
    fn from(e: berth_fs::Error) -> Self {
        DataError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn arrow(context: impl Into<String>, source: ArrowError) -> Self {
        DataError::Arrow {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_file_line_and_column() {
        let e = DataError::Parse {
            path: "data/train.tsv".into(),
            line: 12,
            column: Some("#1 String".into()),
            message: "invalid UTF-8".into(),
        };
        assert_eq!(
            e.to_string(),
            "data/train.tsv: line 12, column '#1 String': invalid UTF-8"
        );
    }

    #[test]
    fn missing_column_lists_the_available_ones() {
        let e = DataError::MissingColumn {
            source_name: "x.parquet".into(),
            column: "txt".into(),
            available: vec!["text".into(), "label".into()],
        };
        assert_eq!(
            e.to_string(),
            "x.parquet: column 'txt' not found (columns: text, label)"
        );
    }
}
