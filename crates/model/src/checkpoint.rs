//! Loading HF checkpoints (a directory or a hub repo id) and saving Berth's in the
//! same form: `config.json` + `model.safetensors` with HF parameter names.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use crate::config::BertConfig;
use crate::error::{ModelError, Result};
use crate::params::Params;

/// A checkpoint directory: given as a path, or fetched from the hub (through the
/// hf-hub cache, offline when `HF_HUB_OFFLINE` is set).
pub fn resolve_model_dir(spec: &str, hub: &berth_data::HubOptions) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if spec.split('/').count() == 2 && !spec.starts_with(['/', '.']) {
        let files = berth_data::hub_files(spec, berth_data::hf_hub::RepoType::Model, hub, &|f| {
            matches!(
                f,
                "config.json" | "model.safetensors" | "tokenizer.json" | "vocab.txt"
            )
        })?;
        let config = files
            .iter()
            .find(|(f, _)| f == "config.json")
            .ok_or_else(|| {
                ModelError::Checkpoint(format!("hub repo '{spec}' has no config.json"))
            })?;
        if let Some(dir) = config.1.parent() {
            return Ok(dir.to_path_buf());
        }
    }
    Err(ModelError::Checkpoint(format!(
        "'{spec}' is neither a model directory nor a hub id owner/name"
    )))
}

/// The config and the parameter source of a model directory.
pub fn open_dir(dir: &Path, device: &Device, seed: u64) -> Result<(BertConfig, Params)> {
    let config = BertConfig::from_file(&dir.join("config.json"))?;
    let params = Params::from_dir(dir, device, seed, config.initializer_range)?;
    Ok((config, params))
}

/// Writes `config.json` (with `architectures`) and `model.safetensors` into `dir`,
/// through a temp directory renamed into place.
pub fn save(dir: &Path, config: &BertConfig, architecture: &str, varmap: &VarMap) -> Result<()> {
    write_dir_atomically(dir, |tmp| save_into(tmp, config, architecture, varmap))
}

/// `config.json` + `model.safetensors` into an existing directory.
pub fn save_into(
    dir: &Path,
    config: &BertConfig,
    architecture: &str,
    varmap: &VarMap,
) -> Result<()> {
    let mut config = config.clone();
    config.architectures = Some(vec![architecture.to_string()]);
    let tensors = crate::params::varmap_tensors(varmap)?;
    let json =
        serde_json::to_string_pretty(&config).map_err(|e| ModelError::Checkpoint(e.to_string()))?;
    std::fs::write(dir.join("config.json"), json)
        .map_err(|e| ModelError::io(dir.join("config.json"), e))?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// Fills a fresh temp sibling of `dir` with `write`, then renames it over `dir`: a
/// reader never sees a half-written directory, and a failed write leaves the old one.
pub fn write_dir_atomically<E: From<ModelError>>(
    dir: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| ModelError::io(dir, e))?;
    Ok(())
}
