//! A run's configuration: the task, the model, the data and HF `TrainingArguments`,
//! read from TOML with `--set key=value` overrides. One file per part: [`task`]
//! (the task and its own section), [`data`], [`training`], [`device`], and
//! [`overrides`] (`--set`, and transformers' spellings).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

mod data;
mod device;
mod overrides;
mod task;
mod training;

pub use data::DataConfig;
pub use device::DeviceSpec;
pub use task::{ChunkingConfig, MlmConfig, MultiLabelConfig, TaskConfig};
pub use training::{IntervalStrategy, Precision, Strategy, TrainingArgs};

use overrides::{COMMON, apply_override, hf_spellings};
use task::legacy_default_section;

/// The whole configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// `task = "..."` and that task's own section. Unknown top-level keys and another
    /// task's section are refused by [`RunConfig::from_toml`] (serde cannot deny
    /// unknown fields beside a flattened enum).
    #[serde(flatten)]
    pub task: TaskConfig,
    /// A model directory or a hub id (`owner/name`).
    pub model: String,
    /// A tokenizer other than the model's (a directory, tokenizer.json or hub id).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// The branch, tag or commit of a hub `model` (run_glue's `model_revision`).
    #[serde(default)]
    pub model_revision: Option<String>,
    pub data: DataConfig,
    #[serde(default)]
    pub training: TrainingArgs,
}

impl RunConfig {
    /// Reads `path` and applies `overrides` (`section.key=value`; a bare key means
    /// `training.key`). Values are TOML (`3e-5`, `true`, `"x"`); anything that does
    /// not parse as TOML is taken as a string.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml(&text, overrides, &path.display().to_string())
    }

    pub fn from_toml(text: &str, overrides: &[String], origin: &str) -> Result<Self> {
        let mut value: toml::Table = toml::from_str(text)
            .map_err(|e| TrainError::Config(format!("{origin}: {}", e.to_string().trim())))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        hf_spellings(&mut value).map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        let config: RunConfig = value.clone().try_into().map_err(|e: toml::de::Error| {
            TrainError::Config(format!("{origin}: {}", e.to_string().trim()))
        })?;
        let own = config.task.keys();
        for (key, v) in &value {
            if COMMON.contains(&key.as_str()) || own.contains(key) {
                continue;
            }
            if !legacy_default_section(key, v) {
                return Err(TrainError::Config(format!(
                    "{origin}: unknown key or section '{key}' for task = \"{}\" (expected {})",
                    config.task.name(),
                    COMMON
                        .iter()
                        .map(|s| s.to_string())
                        .chain(own.iter().filter(|k| *k != "task").cloned())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            tracing::warn!(
                "{origin}: [{key}] does not apply to task = \"{}\"; it holds only defaults (as Berth wrote before sections were per task), so it is ignored",
                config.task.name()
            );
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        self.training.validate()?;
        if let TaskConfig::ChunkClassification { chunking }
        | TaskConfig::MultiLabelClassification {
            chunking: Some(chunking),
            ..
        } = &self.task
        {
            chunking.validate()?;
        }
        if let Some(f) = self.data.validation_split
            && !(f > 0.0 && f < 1.0)
        {
            return Err(TrainError::Config(format!(
                "data.validation_split must be in (0, 1), not {f}"
            )));
        }
        if self.data.hub.is_none() && self.data.hub_config.is_some() {
            return Err(TrainError::Config(
                "data.hub_config is set without data.hub".into(),
            ));
        }
        if self.data.hub.is_some() && self.data.format.as_deref().is_some_and(|f| f != "parquet") {
            return Err(TrainError::Config(
                "data.format does not apply to data.hub (the hub's files are parquet)".into(),
            ));
        }
        Ok(())
    }

    /// Hub options for the model and tokenizer (`model_revision`).
    pub fn model_hub(&self) -> berth_data::HubOptions {
        berth_data::HubOptions::from_env().at_revision(self.model_revision.as_deref())
    }

    /// Where relative data files are read from.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .data_dir
            .clone()
            .or_else(|| std::env::var_os("BERTH_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("../shared/data"))
    }

    /// A data file's path: absolute as given, else under [`Self::data_dir`].
    pub fn data_path(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() || p.exists() {
            p.to_path_buf()
        } else {
            self.data_dir().join(p)
        }
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| TrainError::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
