//! A trained model with its task, for `berth eval` and `berth predict`: nothing of a
//! training run is built (no optimizer, no train split), and both go through the same
//! [`Task`] as training, so eval scores what the run logged and predict's argmax is
//! evaluation's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_data::Dataset;
use berth_data::arrow::array::ArrayRef;
use berth_data::tokenizers::Tokenizer;
use berth_model::{EncoderConfig, Mode};
use candle_core::Device;

use crate::config::{DataConfig, DeviceSpec, Precision, RunConfig, TaskConfig};
use crate::data::{Prepare, Split, Stage};
use crate::error::Result;
use crate::model::TaskModel;
use crate::setup::{build_task, load_model, load_tokenizer};
use crate::task::{PredictContext, Task};

/// A trained model and its task.
pub struct Inference {
    pub task: Box<dyn Task>,
    pub model: TaskModel,
    pub tokenizer: Tokenizer,
    pub model_dir: PathBuf,
    pub device: Device,
}

impl Inference {
    /// The model named by `config.model` (directory or hub id) with the head of
    /// `config.task`; class names come from the checkpoint's `id2label`.
    pub fn load(config: &RunConfig) -> Result<Self> {
        let device = config.training.device.device()?;
        let model_dir = berth_model::resolve_model_dir(&config.model, &config.model_hub())?;
        let tokenizer = load_tokenizer(config, &model_dir)?;
        let task = build_task(config, &tokenizer, &device)?;
        let checkpoint = EncoderConfig::from_file(&model_dir.join("config.json"))?;
        let names: Vec<String> = (0..checkpoint.num_labels())
            .map(|i| {
                checkpoint
                    .label_name(i)
                    .map_or_else(|| format!("LABEL_{i}"), str::to_string)
            })
            .collect();
        let model = load_model(config, task.as_ref(), &model_dir, &device, &names)?;
        Ok(Inference {
            task,
            model,
            tokenizer,
            model_dir,
            device,
        })
    }

    /// For `berth predict`: `task` on `model` without a run config, `batch_size`
    /// rows per forward.
    pub fn for_prediction(
        task: TaskConfig,
        model: &str,
        revision: Option<&str>,
        device: DeviceSpec,
        precision: Precision,
        batch_size: usize,
    ) -> Result<Self> {
        let mut config = RunConfig {
            task,
            model: model.to_string(),
            tokenizer: None,
            model_revision: revision.map(str::to_string),
            data: DataConfig::for_columns("text", None),
            training: Default::default(),
        };
        config.training.device = device;
        config.training.precision = precision;
        config.training.per_device_eval_batch_size = batch_size.max(1);
        Self::load(&config)
    }

    /// The checkpoint's class names (empty for tasks without classes).
    pub fn class_names(&self) -> Vec<String> {
        if self.task.classifies() {
            self.model.class_names()
        } else {
            Vec::new()
        }
    }

    /// `config`'s eval and test splits (the train file is not read), prepared for
    /// this model.
    pub fn splits(&self, config: &RunConfig) -> Result<Vec<Split>> {
        let data = crate::splits::prepare_evaluation(
            config,
            self.task.as_ref(),
            &self.tokenizer,
            self.model.config.max_tokens(),
            &self.class_names(),
        )?;
        Ok([data.eval, data.test].into_iter().flatten().collect())
    }

    /// Loss and the task's metrics on `split`, named `<prefix>_<metric>`.
    pub fn evaluate(
        &self,
        split: &Split,
        prefix: &str,
        batch_size: usize,
    ) -> Result<BTreeMap<String, f64>> {
        let mode = Mode::eval();
        crate::task::evaluate(
            self.task.as_ref(),
            &|b| self.model.forward(b, &mode),
            &split.rows,
            batch_size,
            self.class_names().len(),
            prefix,
            &berth_collective::SingleProcess,
        )
        .map(|r| r.0)
    }

    /// The task's prediction columns for every row of `ds` (its text in
    /// `data.text_column`, and `data.pair_column` for pairs), in order.
    pub fn predict(
        &self,
        ds: &Dataset,
        data: &DataConfig,
        batch_size: usize,
        top_k: usize,
    ) -> Result<Vec<(String, ArrayRef)>> {
        let class_names = self.class_names();
        let prep = Prepare {
            data,
            tokenizer: &self.tokenizer,
            max_positions: self.model.config.max_tokens(),
            class_names: &class_names,
            seed: 0,
            stage: Stage::Predict,
        };
        let rows = self.task.rows(ds, &prep)?;
        let mode = Mode::eval();
        crate::task::predict(
            self.task.as_ref(),
            &|b| self.model.forward(b, &mode),
            &rows,
            batch_size,
            &PredictContext {
                tokenizer: &self.tokenizer,
                class_names,
                top_k,
            },
        )
    }
}
