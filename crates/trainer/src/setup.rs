//! What training and inference both build from a configuration: the tokenizer, the
//! task, and the model with the task's head.

use std::path::Path;

use berth_collate::Padding;
use berth_data::tokenizers::Tokenizer;
use candle_core::{DType, Device};

use crate::config::{Precision, RunConfig};
use crate::error::{Result, TrainError};
use crate::model::TaskModel;
use crate::task::{Task, TaskContext};

/// The run's tokenizer: `tokenizer` when the config names one, else the model's.
pub(crate) fn load_tokenizer(config: &RunConfig, model_dir: &Path) -> Result<Tokenizer> {
    let spec = match &config.tokenizer {
        Some(t) => t.clone(),
        None => model_dir
            .to_str()
            .ok_or_else(|| TrainError::Config("model path is not UTF-8".into()))?
            .to_string(),
    };
    Ok(berth_data::load_tokenizer(&spec, &config.model_hub())?)
}

/// The config's task, batching onto `device`.
pub(crate) fn build_task(
    config: &RunConfig,
    tokenizer: &Tokenizer,
    device: &Device,
) -> Result<Box<dyn Task>> {
    config.task.build(&TaskContext {
        tokenizer,
        seed: config.training.seed,
        padding: Padding::Longest {
            multiple_of: config.training.pad_to_multiple_of,
        },
        pad_id: berth_data::special_tokens(tokenizer)?.pad,
        device: device.clone(),
        eval_rows: config.training.per_device_eval_batch_size,
    })
}

/// The model of `model_dir` with the task's head, in the config's precision.
pub(crate) fn load_model(
    config: &RunConfig,
    task: &dyn Task,
    model_dir: &Path,
    device: &Device,
    class_names: &[String],
) -> Result<TaskModel> {
    crate::checkpoint::manifest::verify_if_present(model_dir)?;
    let mut model = TaskModel::load(task, model_dir, device, config.training.seed, class_names)?;
    if config.training.precision == Precision::Bf16 {
        model.set_compute_dtype(DType::BF16);
    }
    Ok(model)
}
