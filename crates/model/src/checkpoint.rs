//! Loading HF checkpoints (a directory or a hub repo id) and saving Berth's in the
//! same form: `config.json` + `model.safetensors` with HF parameter names (a
//! `pytorch_model.bin` is read too).

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use crate::config::EncoderConfig;
use crate::error::{ModelError, Result};
use crate::params::Params;

/// A checkpoint directory: given as a path, or fetched from the hub (through the
/// hf-hub cache, offline when `HF_HUB_OFFLINE` is set).
pub fn resolve_model_dir(spec: &str, hub: &berth_hub::HubOptions) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if spec.split('/').count() == 2 && !spec.starts_with(['/', '.']) {
        let model = berth_hub::hf_hub::RepoType::Model;
        let files = berth_hub::hub_files(spec, model, hub, &|f| {
            matches!(
                f,
                "config.json"
                    | "model.safetensors"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "special_tokens_map.json"
                    | "vocab.txt"
                    | "vocab.json"
                    | "merges.txt"
            )
        })?;
        // An older repo with PyTorch weights only: fetch them (never both).
        if !files.iter().any(|(f, _)| f == "model.safetensors") {
            berth_hub::hub_files(spec, model, hub, &|f| f == "pytorch_model.bin")?;
        }
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
pub fn open_dir(dir: &Path, device: &Device, seed: u64) -> Result<(EncoderConfig, Params)> {
    let config = EncoderConfig::from_file(&dir.join("config.json"))?;
    let params = Params::from_dir(dir, device, seed, config.initializer_range)?;
    Ok((config, params))
}

/// Writes `config.json` (with `architectures`) and `model.safetensors` into `dir`,
/// through a temp directory renamed into place.
pub fn save(dir: &Path, config: &EncoderConfig, architecture: &str, varmap: &VarMap) -> Result<()> {
    write_dir_atomically(dir, |tmp| save_into(tmp, config, architecture, varmap))
}

/// `config.json` + `model.safetensors` into an existing directory.
pub fn save_into(
    dir: &Path,
    config: &EncoderConfig,
    architecture: &str,
    varmap: &VarMap,
) -> Result<()> {
    let mut config = config.clone();
    config.architectures = Some(vec![architecture.to_string()]);
    let tensors = crate::params::varmap_tensors(varmap)?;
    let json = serde_json::to_string_pretty(&config.to_value())
        .map_err(|e| ModelError::Checkpoint(e.to_string()))?;
    std::fs::write(dir.join("config.json"), json)
        .map_err(|e| ModelError::io(dir.join("config.json"), e))?;
    let file = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &file).map_err(|e| io_error(&file, e))
}

/// A candle write error as the I/O error it is, naming the file (candle's own message
/// does not).
pub fn io_error(file: &Path, e: candle_core::Error) -> ModelError {
    match e {
        candle_core::Error::Io(io) => ModelError::io(file, io),
        // safetensors' own `IoError` (a full disk while serializing, say), found
        // through the source chain: candle does not re-export its type.
        e => match io_source(&e) {
            Some(io) => ModelError::io(file, std::io::Error::new(io.kind(), io.to_string())),
            None => ModelError::Checkpoint(format!("{}: {e}", file.display())),
        },
    }
}

/// The I/O error at the root of `e`'s source chain, if any.
fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = at {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        at = err.source();
    }
    None
}

/// Fills a fresh temp sibling of `dir` with `write`, then moves it into place: a
/// reader never sees a half-written directory, and a failed write leaves the old one
/// (the old copy is renamed aside and removed only once the new one is in place;
/// [`berth_fs::replace_dir`]).
pub fn write_dir_atomically<E: From<berth_fs::Error>>(
    dir: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    berth_fs::replace_dir(dir, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(dir: &Path, name: &str, text: &str) -> Result<()> {
        std::fs::write(dir.join(name), text).map_err(|e| ModelError::io(dir.join(name), e))
    }

    /// Every entry of `dir`'s parent, so that a leftover temp or old copy shows.
    fn siblings(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_a_directory_and_leaves_no_temp_or_old_copy() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("checkpoint-1");
        write_dir_atomically(&dir, |t| write_file(t, "a.txt", "one")).unwrap();
        write_dir_atomically(&dir, |t| {
            // The old copy is still complete while the new one is written.
            assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "one");
            write_file(t, "b.txt", "two")
        })
        .unwrap();
        assert!(
            !dir.join("a.txt").exists(),
            "the old directory's files are gone"
        );
        assert_eq!(std::fs::read_to_string(dir.join("b.txt")).unwrap(), "two");
        assert_eq!(siblings(&dir), vec!["checkpoint-1".to_string()]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("final");
        write_dir_atomically(&dir, |t| write_file(t, "a.txt", "one")).unwrap();
        let err = write_dir_atomically(&dir, |t| {
            write_file(t, "half.txt", "x")?;
            Err(ModelError::Checkpoint("disk full".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "one");
        assert!(!dir.join("half.txt").exists());
        assert_eq!(siblings(&dir), vec!["final".to_string()]);
    }

    #[test]
    fn a_safetensors_write_error_is_the_io_error_it_is_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("gone/model.safetensors");
        let t = candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        let e = candle_core::safetensors::save(&std::collections::HashMap::from([("a", t)]), &file)
            .unwrap_err();
        match io_error(&file, e) {
            ModelError::Io { path, source } => {
                assert_eq!(path, file);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("not an I/O error: {other}"),
        }
    }
}
