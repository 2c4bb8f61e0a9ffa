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

/// The checkpoint `spec` names: `latest` (the newest valid one in `output_dir`) or a
/// path. A checkpoint whose files do not match its manifest (truncated by a copy,
/// corrupted) is passed over with a warning for `latest`, and is an error naming the
/// bad file and the newest valid checkpoint when named.
pub fn resolve_checkpoint(spec: &str, output_dir: &Path) -> Result<PathBuf> {
    if spec == "latest" || spec == "true" {
        let all = checkpoints(output_dir);
        if all.is_empty() {
            return Err(TrainError::checkpoint(
                output_dir,
                "no checkpoint-<step> to resume from",
            ));
        }
        return newest_valid(output_dir).ok_or_else(|| {
            TrainError::checkpoint(
                output_dir,
                format!(
                    "none of its {} checkpoints matches its manifest (see the warnings)",
                    all.len()
                ),
            )
        });
    }
    let p = PathBuf::from(spec);
    if !p.join("trainer_state.json").is_file() {
        return Err(TrainError::checkpoint(
            &p,
            "not a checkpoint (no trainer_state.json)",
        ));
    }
    if let Err(e) = crate::manifest::verify(&p) {
        let newest = p
            .parent()
            .and_then(newest_valid)
            .map_or_else(|| "none".to_string(), |d| d.display().to_string());
        return Err(TrainError::checkpoint(
            &p,
            format!("is damaged: {e}. The newest valid checkpoint: {newest}"),
        ));
    }
    Ok(p)
}

/// The newest checkpoint of `output_dir` whose files match its manifest; each one
/// passed over is named in a warning.
pub fn newest_valid(output_dir: &Path) -> Option<PathBuf> {
    for (_, dir) in checkpoints(output_dir).into_iter().rev() {
        match crate::manifest::verify(&dir) {
            Ok(()) => return Some(dir),
            Err(e) => tracing::warn!("passing over {}: {e}", dir.display()),
        }
    }
    None
}

/// Clears what a killed (or failed) run's writes left in `output_dir`: a temp copy
/// (`.checkpoint-N.tmp-*`, `.trainer_state.json.tmp-*`, `.model.save-*`, any name
/// [`berth_fs::parse_temp_name`] reads) is removed; an old copy renamed aside
/// (`.checkpoint-N.old-*`, a kill between the two renames of a swap) is put back
/// when `checkpoint-N` is missing, else removed. Run before a run writes there.
pub fn tidy_output_dir(output_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((target, what)) = berth_fs::parse_temp_name(&name) else {
            continue;
        };
        let path = e.path();
        // Only checkpoint directories are swapped through an old copy.
        if what == "old" && target.starts_with("checkpoint-") {
            let target = output_dir.join(target);
            if !target.exists() {
                tracing::warn!(
                    "{}: a swap was interrupted; putting the previous copy back as {}",
                    path.display(),
                    target.display()
                );
                std::fs::rename(&path, &target).map_err(|e| TrainError::io(&path, e))?;
                continue;
            }
        } else if !matches!(what, "tmp" | "save") {
            continue;
        }
        tracing::info!("removing {} (left by an interrupted write)", path.display());
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            tracing::warn!("could not remove {}: {e}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `checkpoint-<step>` with a weights file and its manifest.
    fn checkpoint(out: &Path, step: usize) -> PathBuf {
        let dir = out.join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("trainer_state.json"), b"{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), vec![step as u8; 4096]).unwrap();
        crate::manifest::write(&dir).unwrap();
        dir
    }

    #[test]
    fn latest_passes_over_a_damaged_checkpoint_and_a_named_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        let (two, four) = (checkpoint(out, 2), checkpoint(out, 4));
        assert_eq!(resolve_checkpoint("latest", out).unwrap(), four);
        // checkpoint-4's weights truncated by a copy.
        std::fs::write(four.join("model.safetensors"), vec![4u8; 100]).unwrap();
        assert_eq!(resolve_checkpoint("latest", out).unwrap(), two);
        let e = resolve_checkpoint(four.to_str().unwrap(), out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors")
                && e.contains("100 bytes")
                && e.contains(&format!("newest valid checkpoint: {}", two.display())),
            "{e}"
        );
        // Both damaged: a clear error, not a resume from nothing.
        std::fs::write(two.join("model.safetensors"), b"x").unwrap();
        let e = resolve_checkpoint("latest", out).unwrap_err().to_string();
        assert!(e.contains("none of its 2 checkpoints"), "{e}");
    }

    #[test]
    fn a_killed_write_leaves_nothing_after_tidying() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        checkpoint(out, 2);
        // Killed mid-write of checkpoint-4: its temp copy.
        std::fs::create_dir_all(out.join(".checkpoint-4.tmp-77-0")).unwrap();
        // Killed between the two renames replacing checkpoint-6: only the old copy.
        let six = checkpoint(out, 6);
        std::fs::rename(&six, out.join(".checkpoint-6.old-78-1")).unwrap();
        // Killed after both renames, before the old copy was removed.
        checkpoint(out, 8);
        std::fs::create_dir_all(out.join(".checkpoint-8.old-79-2")).unwrap();
        // Killed (or out of disk) mid-write of the run's own files.
        std::fs::write(out.join(".trainer_state.json.tmp-80-3.json"), b"{").unwrap();
        std::fs::create_dir_all(out.join(".model.save-81-4")).unwrap();
        std::fs::write(out.join(".keep.me"), b"a user's file").unwrap();
        tidy_output_dir(out).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".keep.me", "checkpoint-2", "checkpoint-6", "checkpoint-8"]
        );
        crate::manifest::verify(&six).unwrap();
    }
}
