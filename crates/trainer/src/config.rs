//! A run's configuration: the task, the model, the data and HF `TrainingArguments`,
//! read from TOML with `--set key=value` overrides.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::schedule::SchedulerType;

/// What is trained, with the sections only that task reads (`[chunking]` for chunk
/// classification, `[mlm]` for masked LM and pre-training). `TaskConfig::build` (in
/// `task/mod.rs`, so this module knows no task's code) is the one `match` over tasks;
/// everything else goes through the [`crate::Task`] it builds.
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
fn legacy_default_section(key: &str, value: &toml::Value) -> bool {
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
    fn keys(&self) -> Vec<String> {
        toml::Table::try_from(self)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }
}

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

/// Where the rows come from and which columns mean what.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Relative file names are taken from here; default `$BERTH_DATA_DIR`, else
    /// `../shared/data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// A dataset repo on the Hugging Face hub (`owner/name`) to read instead of
    /// files: `train`, `eval` and `test` then name its splits, read from its parquet
    /// files through hf-hub (cached; `HF_HUB_OFFLINE`, `HF_HUB_CACHE` honoured), as
    /// `load_dataset(hub, hub_config, split=...)`.
    #[serde(default)]
    pub hub: Option<String>,
    /// The repo's config (e.g. `mrpc` of `nyu-mll/glue`); needed when it has several.
    #[serde(default)]
    pub hub_config: Option<String>,
    /// The branch, tag or commit of `hub` (`load_dataset(revision=...)`).
    #[serde(default)]
    pub hub_revision: Option<String>,
    /// A file under `data_dir` (or a path), or with `hub` a split name.
    pub train: String,
    #[serde(default)]
    pub eval: Option<String>,
    /// Evaluated once after training (metrics prefixed `test_`).
    #[serde(default)]
    pub test: Option<String>,
    /// Carve the eval split out of train when `eval` is not given (HF
    /// `train_test_split(test_size)`, seeded by `training.seed`).
    #[serde(default)]
    pub validation_split: Option<f64>,
    /// `parquet`, `csv`, `tsv`, `json` or `text`; by extension when absent.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    #[serde(default)]
    pub pair_column: Option<String>,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    /// Truncation for classification / MLM rows (default: the model's positions).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Use only the first N training rows (after shuffling with `training.seed`).
    #[serde(default)]
    pub max_train_samples: Option<usize>,
    /// Evaluate on a random sample of N eval rows (seeded by `training.seed`, kept in
    /// file order). HF's run_glue takes the first N; a file sorted by label (IMDB's)
    /// would then give one class.
    #[serde(default)]
    pub max_eval_samples: Option<usize>,
    /// The same for the test split.
    #[serde(default)]
    pub max_test_samples: Option<usize>,
}

impl DataConfig {
    /// Rows read from `text_column` (and `pair_column`) only: no files, as
    /// `berth predict` reads its input.
    pub fn for_columns(text_column: &str, pair_column: Option<&str>) -> Self {
        DataConfig {
            data_dir: None,
            hub: None,
            hub_config: None,
            hub_revision: None,
            train: String::new(),
            eval: None,
            test: None,
            validation_split: None,
            format: None,
            text_column: text_column.to_string(),
            pair_column: pair_column.map(str::to_string),
            label_column: default_label_column(),
            max_length: None,
            max_train_samples: None,
            max_eval_samples: None,
            max_test_samples: None,
        }
    }
}

fn default_text_column() -> String {
    "text".into()
}
fn default_label_column() -> String {
    "label".into()
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

/// HF `TrainingArguments`, the fields Berth acts on, with HF's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingArgs {
    pub output_dir: PathBuf,
    pub num_train_epochs: f64,
    /// > 0 overrides `num_train_epochs`.
    pub max_steps: i64,
    /// Texts per device batch (a chunked text counts once, whatever its chunks).
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub max_grad_norm: f64,
    /// `linear`, `cosine`, `constant` or `constant_with_warmup`.
    pub lr_scheduler_type: SchedulerType,
    pub warmup_ratio: f64,
    /// > 0 overrides `warmup_ratio`.
    pub warmup_steps: usize,
    /// `no`, `steps` or `epoch` (`evaluation_strategy`, transformers 4's name, is
    /// read as this).
    #[serde(alias = "evaluation_strategy")]
    pub eval_strategy: IntervalStrategy,
    /// Default: `logging_steps`.
    pub eval_steps: Option<usize>,
    pub logging_steps: usize,
    /// `no`, `steps` or `epoch`.
    pub save_strategy: IntervalStrategy,
    pub save_steps: usize,
    pub save_total_limit: Option<usize>,
    pub load_best_model_at_end: bool,
    /// Default `loss` (i.e. `eval_loss`).
    pub metric_for_best_model: Option<String>,
    /// Default: false for metrics ending in `loss`, else true.
    pub greater_is_better: Option<bool>,
    /// Stop after this many evaluations without improvement (HF's
    /// `EarlyStoppingCallback`).
    pub early_stopping_patience: Option<usize>,
    pub early_stopping_threshold: f64,
    pub seed: u64,
    /// `auto` (default: a GPU when there is one), `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceSpec,
    /// `f32` or `bf16` (bf16 compute, f32 master weights and optimizer state).
    pub precision: Precision,
    /// HF `group_by_length`: batches of similar lengths (megabatches).
    pub group_by_length: bool,
    pub dataloader_drop_last: bool,
    /// Pad batches to a multiple of this (8 suits tensor cores).
    pub pad_to_multiple_of: Option<usize>,
    /// `latest` or a checkpoint directory.
    pub resume_from_checkpoint: Option<String>,
    /// No progress bar even on a terminal (the log lines stay).
    pub disable_tqdm: bool,
    /// Where logged values also go, as HF's `report_to`: `"tensorboard"` (or
    /// `"all"`) writes TensorBoard event files under `output_dir/runs/`; `"none"` or
    /// empty (the default), nowhere else. A string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub report_to: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Default for TrainingArgs {
    fn default() -> Self {
        TrainingArgs {
            output_dir: PathBuf::from("runs/berth"),
            num_train_epochs: 3.0,
            max_steps: -1,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            lr_scheduler_type: SchedulerType::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            eval_strategy: IntervalStrategy::No,
            eval_steps: None,
            logging_steps: 500,
            save_strategy: IntervalStrategy::Steps,
            save_steps: 500,
            save_total_limit: None,
            load_best_model_at_end: false,
            metric_for_best_model: None,
            greater_is_better: None,
            early_stopping_patience: None,
            early_stopping_threshold: 0.0,
            seed: 42,
            device: DeviceSpec::Auto,
            precision: Precision::F32,
            group_by_length: false,
            dataloader_drop_last: false,
            pad_to_multiple_of: None,
            resume_from_checkpoint: None,
            disable_tqdm: false,
            report_to: Vec::new(),
        }
    }
}

/// HF's `IntervalStrategy`: when evaluation or saving happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalStrategy {
    No,
    Steps,
    Epoch,
}

/// An [`IntervalStrategy`] with its step count: never, every N steps, or at each
/// epoch end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    No,
    Steps(usize),
    Epoch,
}

/// Compute precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    /// bf16 compute, f32 master weights and optimizer state.
    Bf16,
}

/// Options shown as the names a config spells them with (`constant_with_warmup`,
/// `bf16`, `epoch`).
macro_rules! display_as_config_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match toml::Value::try_from(self) {
                    Ok(toml::Value::String(s)) => f.write_str(&s),
                    _ => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}
display_as_config_name!(SchedulerType, Precision, IntervalStrategy);

/// `auto` (a GPU when the binary has CUDA and one is there, else the CPU, as HF
/// picks), `cpu`, `cuda` (the first GPU) or `cuda:N`; written and read as that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                Some(Err(_)) => Err(TrainError::Device(format!("'{s}': expected cuda:N"))),
                None => Err(TrainError::Device(format!(
                    "device must be auto, cpu, cuda or cuda:N, not '{s}'"
                ))),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = TrainError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The candle device, with a clear error when CUDA is not compiled in or there is
    /// no usable GPU.
    pub fn device(&self) -> Result<candle_core::Device> {
        match *self {
            DeviceSpec::Auto => Ok(candle_core::utils::cuda_is_available()
                .then(|| candle_core::Device::new_cuda(0).ok())
                .flatten()
                .unwrap_or(candle_core::Device::Cpu)),
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(TrainError::Device(format!(
                        "'{self}' asked for, but this binary was built without the `cuda` feature (build with --features cuda, see ../shared/gpu/README.md)"
                    )));
                }
                candle_core::Device::new_cuda(n)
                    .map_err(|e| TrainError::Device(format!("'{self}': no usable GPU ({e})")))
            }
        }
    }
}

impl TrainingArgs {
    pub fn eval_strategy(&self) -> Strategy {
        strategy(
            self.eval_strategy,
            self.eval_steps.unwrap_or(self.logging_steps),
        )
    }

    pub fn save_strategy(&self) -> Strategy {
        strategy(self.save_strategy, self.save_steps)
    }

    /// Whether `report_to` asks for TensorBoard event files.
    pub fn tensorboard(&self) -> bool {
        self.report_to
            .iter()
            .any(|r| r == "tensorboard" || r == "all")
    }

    /// The metric that picks the best checkpoint, with its `eval_` prefix.
    pub fn best_metric(&self) -> String {
        let m = self.metric_for_best_model.as_deref().unwrap_or("loss");
        if m.starts_with("eval_") {
            m.to_string()
        } else {
            format!("eval_{m}")
        }
    }

    pub fn greater_is_better(&self) -> bool {
        self.greater_is_better
            .unwrap_or_else(|| !self.best_metric().ends_with("loss"))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(TrainError::Config(what));
        if self.per_device_train_batch_size == 0 || self.per_device_eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps must be at least 1".into());
        }
        if self.max_steps <= 0 && self.num_train_epochs <= 0.0 {
            return bad("set num_train_epochs > 0 or max_steps > 0".into());
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "warmup_ratio must be in [0, 1], not {}",
                self.warmup_ratio
            ));
        }
        if self.learning_rate.is_nan() || self.learning_rate < 0.0 {
            return bad(format!(
                "learning_rate must be >= 0, not {}",
                self.learning_rate
            ));
        }
        for (field, value, steps) in [
            (
                "eval_strategy",
                self.eval_strategy,
                self.eval_steps.unwrap_or(self.logging_steps),
            ),
            ("save_strategy", self.save_strategy, self.save_steps),
        ] {
            if value == IntervalStrategy::Steps && steps == 0 {
                return bad(format!("{field} = \"steps\" needs a step count > 0"));
            }
        }
        if self.load_best_model_at_end {
            let (e, s) = (self.eval_strategy(), self.save_strategy());
            let same = match (e, s) {
                (Strategy::Steps(a), Strategy::Steps(b)) => b % a == 0,
                (Strategy::Epoch, Strategy::Epoch) => true,
                _ => false,
            };
            if !same {
                return bad(
                    "load_best_model_at_end needs eval_strategy and save_strategy alike (steps with save_steps a multiple of eval_steps, or both epoch)"
                        .into(),
                );
            }
        }
        if let Some(r) = self
            .report_to
            .iter()
            .find(|r| !["none", "all", "tensorboard"].contains(&r.as_str()))
        {
            return bad(format!(
                "report_to: '{r}' is not one Berth writes (tensorboard, all or none)"
            ));
        }
        if self.early_stopping_patience.is_some() && self.eval_strategy() == Strategy::No {
            return bad("early_stopping_patience needs an eval_strategy".into());
        }
        Ok(())
    }
}

fn strategy(kind: IntervalStrategy, steps: usize) -> Strategy {
    match kind {
        IntervalStrategy::No => Strategy::No,
        IntervalStrategy::Steps => Strategy::Steps(steps),
        IntervalStrategy::Epoch => Strategy::Epoch,
    }
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
        toml::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
    }
}

/// `[training]` keys as transformers 4 and 5 spell them, read as Berth's:
/// `warmup_steps` a float in [0, 1) is a ratio of the total steps (transformers 5
/// reads it so, having dropped `warmup_ratio`, which stays for 4.x users);
/// `bf16 = true` is `precision = "bf16"`; `use_cpu = true` is `device = "cpu"`.
fn hf_spellings(root: &mut toml::Table) -> std::result::Result<(), String> {
    let Some(toml::Value::Table(t)) = root.get_mut("training") else {
        return Ok(());
    };
    if let Some(toml::Value::Float(f)) = t.get("warmup_steps").cloned() {
        if (0.0..1.0).contains(&f) {
            if t.contains_key("warmup_ratio") {
                return Err(
                    "training.warmup_steps is a ratio and warmup_ratio is set too: keep one".into(),
                );
            }
            t.remove("warmup_steps");
            t.insert("warmup_ratio".into(), toml::Value::Float(f));
        } else if f.fract() == 0.0 && f >= 1.0 {
            t.insert("warmup_steps".into(), toml::Value::Integer(f as i64));
        } else {
            return Err(format!(
                "training.warmup_steps = {f}: a step count (an integer) or a ratio in [0, 1)"
            ));
        }
    }
    for (flag, key, value) in [("bf16", "precision", "bf16"), ("use_cpu", "device", "cpu")] {
        match t.remove(flag) {
            None | Some(toml::Value::Boolean(false)) => {}
            Some(toml::Value::Boolean(true)) => match t.get(key).and_then(|v| v.as_str()) {
                Some(other) if other != value => {
                    return Err(format!(
                        "training.{flag} = true and training.{key} = \"{other}\" disagree"
                    ));
                }
                _ => {
                    t.insert(key.into(), toml::Value::String(value.into()));
                }
            },
            Some(other) => {
                return Err(format!(
                    "training.{flag} must be true or false, not {other}"
                ));
            }
        }
    }
    Ok(())
}

/// The top-level keys of every task (beside `task` and the task's own section).
const COMMON: &[&str] = &["model", "tokenizer", "model_revision", "data", "training"];

fn apply_override(root: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set '{spec}': expected key=value")))?;
    let key = key.trim();
    let mut path: Vec<&str> = key.split('.').collect();
    if path.len() == 1 && !["task", "model", "tokenizer", "model_revision"].contains(&path[0]) {
        path.insert(0, "training");
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| TrainError::Config(format!("--set '{spec}': empty key")))?;
    let mut table = root;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("--set '{spec}': '{p}' is not a table")))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
task = "classification"
model = "m"
[data]
train = "t.jsonl"
"#;

    #[test]
    fn defaults_are_hf_training_arguments() {
        let c = RunConfig::from_toml(MIN, &[], "x").unwrap();
        let t = &c.training;
        assert_eq!(t.learning_rate, 5e-5);
        assert_eq!(
            (t.adam_beta1, t.adam_beta2, t.adam_epsilon),
            (0.9, 0.999, 1e-8)
        );
        assert_eq!(t.max_grad_norm, 1.0);
        assert_eq!(t.num_train_epochs, 3.0);
        assert_eq!(t.lr_scheduler_type, SchedulerType::Linear);
        assert_eq!(t.best_metric(), "eval_loss");
        assert!(!t.greater_is_better());
    }

    #[test]
    fn overrides_parse_as_toml_or_string() {
        let c = RunConfig::from_toml(
            MIN,
            &[
                "training.learning_rate=3e-5".into(),
                "seed=7".into(),
                "data.pair_column=#2 String".into(),
                "training.metric_for_best_model=accuracy".into(),
            ],
            "x",
        )
        .unwrap();
        assert_eq!(c.training.learning_rate, 3e-5);
        assert_eq!(c.training.seed, 7);
        assert_eq!(c.data.pair_column.as_deref(), Some("#2 String"));
        assert!(c.training.greater_is_better());
    }

    #[test]
    fn partial_sections_take_defaults() {
        let with = |task: &str, section: &str| {
            let text = MIN.replace("\"classification\"", &format!("{task:?}"));
            RunConfig::from_toml(&format!("{text}{section}"), &[], "x").unwrap()
        };
        let TaskConfig::Mlm { mlm } = with("mlm", "[mlm]\nwhole_word = true\n").task else {
            panic!("not mlm")
        };
        assert!(mlm.whole_word);
        assert_eq!((mlm.mlm_probability, mlm.next_probability), (0.15, 0.5));
        let TaskConfig::ChunkClassification { chunking } =
            with("chunk_classification", "[chunking]\nchunk_size = 126\n").task
        else {
            panic!("not chunk_classification")
        };
        assert_eq!((chunking.chunk_size, chunking.stride), (126, 510));
        assert_eq!(chunking.pool, berth_model::Pool::Mean);
        assert_eq!(chunking.chunk_group_size, None);
        // Multi-label reads long texts with a [chunking] section, short ones without.
        let multi = |section: &str| with("multi_label_classification", section).task;
        let TaskConfig::MultiLabelClassification { chunking, .. } =
            multi("[chunking]\nchunk_group_size = 4\ntrain_chunks_per_doc = 2\n")
        else {
            panic!("not multi-label")
        };
        let chunking = chunking.expect("chunked");
        assert_eq!(
            (chunking.chunk_group_size, chunking.train_chunks_per_doc),
            (Some(4), Some(2))
        );
        let TaskConfig::MultiLabelClassification { chunking, .. } = multi("") else {
            panic!("not multi-label")
        };
        assert!(chunking.is_none());
        let e = RunConfig::from_toml(
            &MIN.replace("\"classification\"", "\"chunk_classification\""),
            &["chunking.chunk_group_size=0".into()],
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("chunking.chunk_group_size must be at least 1"),
            "{e}"
        );
        // A task without its section takes the section's defaults.
        assert_eq!(
            with("nsp", "").task,
            TaskConfig::Nsp {
                mlm: MlmConfig::default()
            }
        );
    }

    #[test]
    fn another_tasks_section_or_an_unknown_key_is_refused() {
        let e = RunConfig::from_toml(&format!("{MIN}[mlm]\nwhole_word = true\n"), &[], "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml") && e.contains("'mlm'") && e.contains("classification"),
            "{e}"
        );
        let e = RunConfig::from_toml(&format!("modle = \"x\"\n{MIN}"), &[], "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'modle'"), "{e}");
        let e = RunConfig::from_toml(MIN, &["task=\"tagging\"".into()], "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tagging"), "{e}");
        let e = RunConfig::from_toml(MIN, &["device=\"gpu\"".into()], "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpu"), "{e}");
    }

    #[test]
    fn a_task_section_error_names_its_key_and_old_default_sections_are_read_past() {
        let chunk = MIN.replace("\"classification\"", "\"chunk_classification\"");
        let e = RunConfig::from_toml(&chunk, &["chunking.pool=\"avg\"".into()], "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("`chunking.pool`"), "{e}");
        let e = RunConfig::from_toml(&chunk, &["chunking.chunk_size=\"big\"".into()], "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`chunking.chunk_size`"), "{e}");
        // What Berth wrote before sections were per task: every section, defaults.
        let old = format!(
            "{MIN}[chunking]\nchunk_size = 510\nstride = 510\nmin_chunk_len = 1\npool = \"mean\"\n[mlm]\nmlm_probability = 0.15\nwhole_word = false\nnext_probability = 0.5\n"
        );
        assert_eq!(
            RunConfig::from_toml(&old, &[], "old.toml").unwrap().task,
            TaskConfig::Classification {}
        );
        // A section that says something is still refused.
        let e = RunConfig::from_toml(
            &old.replace("whole_word = false", "whole_word = true"),
            &[],
            "old.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'mlm'"), "{e}");
    }

    #[test]
    fn transformers_spellings_are_read() {
        let c = RunConfig::from_toml(
            MIN,
            &[
                "evaluation_strategy=\"epoch\"".into(),
                "warmup_steps=0.1".into(),
                "bf16=true".into(),
                "use_cpu=true".into(),
            ],
            "x",
        )
        .unwrap();
        let t = &c.training;
        assert_eq!(t.eval_strategy(), Strategy::Epoch);
        assert_eq!((t.warmup_ratio, t.warmup_steps), (0.1, 0));
        assert_eq!(t.precision, Precision::Bf16);
        assert_eq!(t.device, DeviceSpec::Cpu);
        let c = RunConfig::from_toml(MIN, &["warmup_steps=10.0".into()], "x").unwrap();
        assert_eq!(c.training.warmup_steps, 10);
        assert_eq!(
            RunConfig::from_toml(MIN, &[], "x").unwrap().training.device,
            DeviceSpec::Auto
        );
        for bad in ["warmup_steps=2.5", "bf16=\"yes\""] {
            let e = RunConfig::from_toml(MIN, &[bad.into()], "c.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("c.toml") && e.contains(bad.split('=').next().unwrap()),
                "{e}"
            );
        }
        let e = RunConfig::from_toml(
            MIN,
            &["use_cpu=true".into(), "device=\"cuda\"".into()],
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("disagree"), "{e}");
    }

    #[test]
    fn a_written_config_reads_back_the_same() {
        let text = MIN.replace("\"classification\"", "\"chunk_classification\"");
        let c = RunConfig::from_toml(
            &text,
            &[
                "chunking.pool=\"max\"".into(),
                "device=\"cuda:1\"".into(),
                "precision=\"bf16\"".into(),
                "eval_strategy=\"epoch\"".into(),
            ],
            "x",
        )
        .unwrap();
        let back = RunConfig::from_toml(&c.to_toml().unwrap(), &[], "written").unwrap();
        assert_eq!(back.task, c.task);
        assert_eq!(back.training.device, DeviceSpec::Cuda(1));
        assert_eq!(back.training.precision, Precision::Bf16);
        assert_eq!(back.training.eval_strategy(), Strategy::Epoch);
        assert_eq!(c.task.name(), "chunk_classification");
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = RunConfig::from_toml(MIN, &["training.learnin_rate=1".into()], "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cfg.toml") && e.contains("learnin_rate"), "{e}");
        let e = RunConfig::from_toml(MIN, &["lr_scheduler_type=wavy".into()], "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wavy"), "{e}");
        let e = RunConfig::from_toml(MIN, &["eval_strategy=sometimes".into()], "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
        let e = RunConfig::from_toml(MIN, &["data.hub_config=\"mrpc\"".into()], "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.hub_config") && e.contains("data.hub"),
            "{e}"
        );
        let hub = |format: &str| {
            RunConfig::from_toml(
                MIN,
                &[
                    "data.hub=\"nyu-mll/glue\"".into(),
                    format!("data.format={format:?}"),
                ],
                "x",
            )
        };
        assert!(hub("parquet").is_ok());
        let e = hub("tsv").unwrap_err().to_string();
        assert!(e.contains("data.format") && e.contains("parquet"), "{e}");
    }
}
