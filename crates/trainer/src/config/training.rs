//! `[training]`: HF `TrainingArguments`, the fields Berth acts on, with HF's defaults,
//! and the strategies and precision they name.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::schedule::SchedulerType;

use super::DeviceSpec;

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
    /// Start over in an `output_dir` that holds a run (transformers 4.x's name): the
    /// old run is moved aside and removed once this run's first checkpoint (or its
    /// end) is written. Without it a fresh run there is refused.
    pub overwrite_output_dir: bool,
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
            overwrite_output_dir: false,
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
        if self.overwrite_output_dir && self.resume_from_checkpoint.is_some() {
            return bad(
                "resume_from_checkpoint and overwrite_output_dir = true together: the first continues the run in output_dir, the second replaces it; set one"
                    .into(),
            );
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
