use std::path::{Path, PathBuf};

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Something the user wrote (a config key, an option, a path) is wrong.
    #[error("config: {0}")]
    Config(String),
    /// An invariant of Berth's own code does not hold: a bug, never the user's input.
    #[error("internal error (a bug in Berth, please report it): {0}")]
    Internal(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] berth_data::DataError),
    #[error(transparent)]
    Model(#[from] berth_model::ModelError),
    #[error(transparent)]
    Collate(#[from] berth_collate::CollateError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Data-parallel ranks could not meet, or disagree.
    #[error("data-parallel: {0}")]
    Collective(#[from] berth_collective::CollectiveError),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// The output directory is another run's: in use, or holding a finished run.
    #[error("output_dir {path}: {message}")]
    OutputDir { path: PathBuf, message: String },
    /// The loss stopped being a number; the last good checkpoint is kept.
    #[error(
        "loss is {loss}{on} at step {step} (epoch {epoch:.2}); stopping. Last good checkpoint: {last_checkpoint}"
    )]
    NonFinite {
        loss: f32,
        /// Empty in one process; with several, " on rank R of N" naming every rank
        /// whose loss was not a number, and each one's loss.
        on: String,
        step: usize,
        epoch: f64,
        last_checkpoint: String,
    },
    #[error("{0}")]
    Input(String),
    #[error("device: {0}")]
    Device(String),
}

impl TrainError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A broken invariant (see [`TrainError::Internal`]).
    pub fn internal(message: impl Into<String>) -> Self {
        TrainError::Internal(message.into())
    }

    pub fn checkpoint(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl From<berth_fs::Error> for TrainError {
    fn from(e: berth_fs::Error) -> Self {
        TrainError::Io {
            path: e.path,
            source: e.source,
        }
    }
}
