//! `trainer_state.json` as HF writes it, and the data position Berth keeps beside it
//! (`rng_state.json`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// HF's `TrainerState` (the fields it writes), plus where the data order stood.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainerState {
    pub best_metric: Option<f64>,
    pub best_global_step: Option<usize>,
    pub best_model_checkpoint: Option<String>,
    /// Fractional epochs done.
    pub epoch: f64,
    pub eval_steps: Option<usize>,
    pub global_step: usize,
    pub is_local_process_zero: bool,
    pub is_world_process_zero: bool,
    pub log_history: Vec<Map<String, Value>>,
    pub logging_steps: usize,
    pub max_steps: usize,
    pub num_train_epochs: usize,
    pub save_steps: usize,
    pub train_batch_size: usize,
    /// Training tokens seen (non-padding), as HF counts them.
    #[serde(default)]
    pub num_input_tokens_seen: u64,
    /// Berth's own state: the position in the data order and the early-stopping
    /// counter. Not in `trainer_state.json` (transformers builds its `TrainerState`
    /// from every key there and refuses unknown ones); a checkpoint keeps it in
    /// `rng_state.json` (see [`Position::read`]).
    #[serde(skip)]
    pub berth: Position,
}

/// Where a run stands in its data order, so a resume continues with the next batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Position {
    /// The epoch being trained (0-based).
    pub epoch_index: u64,
    /// Optimizer steps already taken in that epoch.
    pub steps_in_epoch: usize,
    /// Evaluations since the best metric last improved.
    pub evals_without_improvement: usize,
    /// Seed of the data order, dropout masks and MLM masks (all derived from
    /// (seed, epoch, step, row), so this and the counters above are the whole RNG
    /// state).
    pub seed: u64,
    /// Training tokens (non-padding) seen so far.
    pub tokens_seen: u64,
    /// Data-parallel ranks the run trains on (a resume must use as many).
    #[serde(default = "one_rank")]
    pub world_size: usize,
}

fn one_rank() -> usize {
    1
}

impl Position {
    /// The position a checkpoint saved (`rng_state.json`).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(path, e.to_string()))
    }
}

impl TrainerState {
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
        write_atomic(path, json.as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(path, e.to_string()))
    }
}

/// Writes `bytes` to a temp sibling, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(berth_fs::write_file(path, bytes)?)
}
