//! Loading HF checkpoints (a directory or a hub repo id) and saving Berth's in the
//! same form: `config.json` + `model.safetensors` with HF parameter names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
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
    let mut config = config.clone();
    config.architectures = Some(vec![architecture.to_string()]);
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Checkpoint("parameter store lock poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
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
    let write = || -> Result<()> {
        let json = serde_json::to_string_pretty(&config)
            .map_err(|e| ModelError::Checkpoint(e.to_string()))?;
        std::fs::write(tmp.join("config.json"), json)
            .map_err(|e| ModelError::io(tmp.join("config.json"), e))?;
        candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| ModelError::io(dir, e))
}
