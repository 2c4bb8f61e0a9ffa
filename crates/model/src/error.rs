//! The one error type of `berth-model`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: tensor '{name}' has shape {found:?}, the config needs {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{0}")]
    Checkpoint(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Hub(#[from] berth_hub::HubError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl From<berth_fs::Error> for ModelError {
    fn from(e: berth_fs::Error) -> Self {
        ModelError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
