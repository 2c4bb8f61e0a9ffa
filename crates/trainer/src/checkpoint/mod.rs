//! Checkpoints in one place: writing `checkpoint-<step>/` (atomically, its manifest
//! last), rotating them, restoring a run from one, listing and resolving them, and
//! tidying what a killed write left behind. The callbacks decide *when*; this module
//! is *how*, and takes the parts of a run it needs, never the callbacks' `Session`.

pub mod manifest;
mod same_run;

pub(crate) use same_run::check as check_same_run;

use std::path::{Path, PathBuf};

use berth_data::tokenizers::Tokenizer;
use candle_core::{DType, Device};
use candle_nn::VarMap;

use crate::error::{Result, TrainError};
use crate::model::TaskModel;
use crate::optim::AdamW;
use crate::schedule::Schedule;
use crate::state::{Position, TrainerState};

/// The model a run saves: its weights with their config and architecture, and the
/// tokenizer (copied from `tokenizer_dir` when it came from a directory).
pub struct SavedModel<'a> {
    pub model: &'a TaskModel,
    /// The head, whose architecture for the model's family the saved
    /// `architectures` entry names (`RobertaForSequenceClassification`, ...).
    pub head: berth_model::HeadKind,
    pub tokenizer: &'a Tokenizer,
    pub tokenizer_dir: Option<&'a Path>,
}

impl SavedModel<'_> {
    /// `config.json`'s `architectures` entry.
    pub fn architecture(&self) -> String {
        self.model.config.family.architecture(self.head)
    }

    /// `config.json`, `model.safetensors` and the tokenizer files into `dir`, which
    /// holds nothing else of them yet (a checkpoint's temp directory).
    fn write_into(&self, dir: &Path) -> Result<()> {
        crate::repo::write_tokenizer_files(
            dir,
            self.tokenizer,
            self.tokenizer_dir,
            &self.model.config,
        )?;
        berth_model::save_into(
            dir,
            &self.model.config,
            &self.architecture(),
            &self.model.varmap,
        )?;
        Ok(())
    }

    /// The final model into a run directory, as HF's `save_pretrained` (config.json +
    /// model.safetensors with HF names, plus the tokenizer), so `from_pretrained(dir)`
    /// and `berth predict` load it. The files are written into a fresh hidden
    /// directory beside them and each renamed over its old copy (the run directory
    /// holds more than the model, so it is not replaced whole).
    pub fn write_final(&self, dir: &Path) -> Result<()> {
        let tmp = berth_fs::temp_sibling(&dir.join("model"), "save");
        let moved = (|| -> Result<()> {
            berth_model::save(
                &tmp,
                &self.model.config,
                &self.architecture(),
                &self.model.varmap,
            )?;
            for f in ["config.json", "model.safetensors"] {
                std::fs::rename(tmp.join(f), dir.join(f))
                    .map_err(|e| TrainError::io(dir.join(f), e))?;
            }
            Ok(())
        })();
        // Whether or not it got there (a full disk), nothing is left behind.
        let _ = std::fs::remove_dir_all(&tmp);
        moved?;
        crate::repo::write_tokenizer_files(
            dir,
            self.tokenizer,
            self.tokenizer_dir,
            &self.model.config,
        )
    }
}

/// Everything a checkpoint holds: the model (a complete HF model repo, with a model
/// card), the optimizer and scheduler, the trainer state with the data position, and
/// the configuration that made them.
pub struct Snapshot<'a> {
    pub model: SavedModel<'a>,
    /// The checkpoint's README.md.
    pub model_card: String,
    /// The run's configuration as TOML (`training_config.toml`).
    pub config_toml: String,
    pub opt: &'a AdamW,
    pub schedule: &'a Schedule,
    pub state: &'a TrainerState,
}

/// Writes `snapshot` as the checkpoint `dir`: into a temp directory, its manifest
/// last, then renamed into place, so `dir` is whole or absent.
pub fn save(dir: &Path, snapshot: &Snapshot<'_>) -> Result<()> {
    berth_model::write_dir_atomically(dir, |tmp| -> Result<()> {
        snapshot.model.write_into(tmp)?;
        let card = tmp.join("README.md");
        std::fs::write(&card, &snapshot.model_card).map_err(|e| TrainError::io(&card, e))?;
        snapshot.opt.save(tmp)?;
        let json_err = |e: serde_json::Error| TrainError::checkpoint(tmp, e.to_string());
        for (file, bytes) in [
            (
                "scheduler.json",
                serde_json::to_vec_pretty(snapshot.schedule).map_err(json_err)?,
            ),
            (
                "rng_state.json",
                serde_json::to_vec_pretty(&snapshot.state.berth).map_err(json_err)?,
            ),
            (
                "training_config.toml",
                snapshot.config_toml.clone().into_bytes(),
            ),
        ] {
            let path = tmp.join(file);
            std::fs::write(&path, bytes).map_err(|e| TrainError::io(&path, e))?;
        }
        snapshot.state.write(&tmp.join("trainer_state.json"))?;
        // Last: the manifest vouches for every file above.
        manifest::write(tmp)
    })
}

/// Keeps at most `limit` checkpoints in `output_dir`, oldest removed first, never
/// `best`.
pub fn rotate(output_dir: &Path, best: Option<&Path>, limit: Option<usize>) -> Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let all = checkpoints(output_dir);
    let mut excess = all.len().saturating_sub(limit.max(1));
    for (_, dir) in &all {
        if excess == 0 {
            break;
        }
        if Some(dir.as_path()) == best {
            continue;
        }
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        excess -= 1;
    }
    Ok(())
}

/// Sets every variable of `varmap` from `dir/model.safetensors`; a variable the file
/// lacks is an error naming it.
pub fn load_weights(varmap: &VarMap, dir: &Path, device: &Device) -> Result<()> {
    let file = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&file, device)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::internal("parameter store lock poisoned"))?;
    for (name, var) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| TrainError::checkpoint(&file, format!("no tensor '{name}'")))?;
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

/// Restores a run from the checkpoint `dir`: weights, optimizer moments, trainer
/// state and the data position.
pub fn restore(
    dir: &Path,
    varmap: &VarMap,
    device: &Device,
    opt: &mut AdamW,
    state: &mut TrainerState,
) -> Result<()> {
    load_weights(varmap, dir, device)?;
    opt.load(dir)?;
    *state = TrainerState::read(&dir.join("trainer_state.json"))?;
    state.berth = Position::read(&dir.join("rng_state.json"))?;
    Ok(())
}

/// `checkpoint-<step>` directories of `output_dir` (those holding a
/// `trainer_state.json`), oldest first.
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
    if let Err(e) = manifest::verify(&p) {
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
        match manifest::verify(&dir) {
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
        manifest::write(&dir).unwrap();
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
        manifest::verify(&six).unwrap();
    }
}
