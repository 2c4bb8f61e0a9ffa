//! `task = "..."` and the sections only that task reads: `[chunking]`, `[mlm]`,
//! `[multi_label]`.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What is trained, with the sections only that task reads (`[chunking]` for chunk
/// classification, `[mlm]` for masked LM and pre-training). `TaskConfig::build` and
/// `TaskConfig::for_checkpoint` (in `task/mod.rs`, so this module knows no task's
/// code) are the only matches over tasks; everything else goes through the
/// [`crate::Task`] it builds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskConfig {
    /// One text (or a text pair) per row, truncated to `data.max_length`.
    Classification {},
    /// belt_nlp: every chunk of a long text classified, logits pooled per text.
    ChunkClassification {
        #[serde(default, deserialize_with = "section::chunking")]
        chunking: ChunkingConfig,
    },
    /// Masked language modelling (dynamic masking every epoch).
    Mlm {
        #[serde(default, deserialize_with = "section::mlm")]
        mlm: MlmConfig,
    },
    /// MLM + next-sentence prediction (HF `BertForPreTraining`).
    Nsp {
        #[serde(default, deserialize_with = "section::mlm")]
        mlm: MlmConfig,
    },
    /// Any number of classes per text (HF `problem_type =
    /// "multi_label_classification"`): sigmoid and binary cross-entropy.
    MultiLabelClassification {
        #[serde(default, deserialize_with = "section::multi_label")]
        multi_label: MultiLabelConfig,
        /// With a `[chunking]` section, long texts: the chunks' logits are pooled
        /// per text, then the sigmoid.
        #[serde(
            default,
            deserialize_with = "section::some_chunking",
            skip_serializing_if = "Option::is_none"
        )]
        chunking: Option<ChunkingConfig>,
    },
}

/// A task's own section, read with its key path in errors: serde's flatten (which
/// puts the task beside the common keys) drops the path toml gives elsewhere, so an
/// error would not say which key of which section it is about.
mod section {
    use serde::de::{Deserialize, Deserializer, Error};

    fn read<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        name: &str,
        d: D,
    ) -> Result<T, D::Error> {
        serde_path_to_error::deserialize(d).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                name.to_string()
            } else {
                format!("{name}.{path}")
            };
            D::Error::custom(format!("{} in `{key}`", e.into_inner()))
        })
    }

    pub fn chunking<'de, D: Deserializer<'de>>(d: D) -> Result<super::ChunkingConfig, D::Error> {
        read("chunking", d)
    }

    pub fn some_chunking<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<super::ChunkingConfig>, D::Error> {
        read("chunking", d).map(Some)
    }

    pub fn mlm<'de, D: Deserializer<'de>>(d: D) -> Result<super::MlmConfig, D::Error> {
        read("mlm", d)
    }

    pub fn multi_label<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<super::MultiLabelConfig, D::Error> {
        read("multi_label", d)
    }
}

/// Berth wrote `[chunking]` and `[mlm]` into every `run_config.toml` before sections
/// became per task; such a section holding only its defaults is read past (with a
/// warning), so older run directories still evaluate and resume.
pub(super) fn legacy_default_section(key: &str, value: &toml::Value) -> bool {
    match key {
        "chunking" => value
            .clone()
            .try_into::<ChunkingConfig>()
            .is_ok_and(|c| c == ChunkingConfig::default()),
        "mlm" => value
            .clone()
            .try_into::<MlmConfig>()
            .is_ok_and(|c| c == MlmConfig::default()),
        _ => false,
    }
}

impl TaskConfig {
    /// The `task = "..."` name.
    pub fn name(&self) -> String {
        toml::Table::try_from(self)
            .ok()
            .and_then(|t| t.get("task")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The top-level keys this task's TOML has: `task` and its own section.
    pub(super) fn keys(&self) -> Vec<String> {
        toml::Table::try_from(self)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// belt_nlp's chunking, for `chunk_classification`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkingConfig {
    pub chunk_size: usize,
    pub stride: usize,
    pub min_chunk_len: usize,
    pub max_text_len: Option<usize>,
    /// `max_text_len` for the eval and test splits (default: the same): predict from
    /// more of each text than training saw, belt_nlp-style. 0 means the whole text.
    #[serde(default)]
    pub eval_max_text_len: Option<usize>,
    /// `mean` or `max`.
    pub pool: berth_model::Pool,
    /// At most this many chunks in one forward (off by default). Training takes the
    /// two-pass exact gradient (every chunk without a graph, then groups of this
    /// many with one), so a step's memory is bounded whatever a text's length;
    /// evaluation and prediction run chunks in groups of this many too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_group_size: Option<usize>,
    /// Train on this many chunks of each longer text per epoch, drawn at random
    /// (seeded, part of the data order); evaluation always uses every chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_chunks_per_doc: Option<usize>,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        ChunkingConfig {
            chunk_size: 510,
            stride: 510,
            min_chunk_len: 1,
            max_text_len: None,
            eval_max_text_len: None,
            pool: berth_model::Pool::Mean,
            chunk_group_size: None,
            train_chunks_per_doc: None,
        }
    }
}

impl ChunkingConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("chunk_group_size", self.chunk_group_size),
            ("train_chunks_per_doc", self.train_chunks_per_doc),
        ] {
            if v == Some(0) {
                return Err(TrainError::Config(format!(
                    "chunking.{name} must be at least 1 (leave it out to turn it off)"
                )));
            }
        }
        Ok(())
    }
}

/// Masking for `mlm` and `nsp` (HF `DataCollatorForLanguageModeling`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlmConfig {
    pub mlm_probability: f64,
    pub whole_word: bool,
    /// NSP: share of pairs whose B really follows A.
    pub next_probability: f64,
}

impl Default for MlmConfig {
    fn default() -> Self {
        MlmConfig {
            mlm_probability: 0.15,
            whole_word: false,
            next_probability: 0.5,
        }
    }
}

/// The `[multi_label]` section, for `multi_label_classification`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiLabelConfig {
    /// A class is predicted when its probability is at least this.
    pub threshold: f64,
}

impl Default for MultiLabelConfig {
    fn default() -> Self {
        MultiLabelConfig { threshold: 0.5 }
    }
}
