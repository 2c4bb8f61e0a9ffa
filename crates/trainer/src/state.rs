//! `trainer_state.json` as HF writes it, and checkpoint directories.

use std::path::{Path, PathBuf};

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

/// `checkpoint-<step>` directories of `output_dir`, oldest first.
pub fn checkpoints(output_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The checkpoint `spec` names: `latest` (the newest in `output_dir`) or a path.
pub fn resolve_checkpoint(spec: &str, output_dir: &Path) -> Result<PathBuf> {
    if spec == "latest" || spec == "true" {
        return checkpoints(output_dir)
            .pop()
            .map(|(_, p)| p)
            .ok_or_else(|| {
                TrainError::checkpoint(output_dir, "no checkpoint-<step> to resume from")
            });
    }
    let p = PathBuf::from(spec);
    if p.join("trainer_state.json").is_file() {
        Ok(p)
    } else {
        Err(TrainError::checkpoint(
            &p,
            "not a checkpoint (no trainer_state.json)",
        ))
    }
}
