//! The model a task trains (a BERT with the task's [`Head`]), and the tensors that go
//! in and come out of it.

use std::path::Path;

use berth_model::{EncoderConfig, LoadReport, Mode, Params};
use candle_core::{DType, Device};
use candle_nn::VarMap;

use crate::batch::{Output, TaskBatch};
use crate::error::Result;
use crate::task::{Head, Task};

/// A BERT with the head of its task, and its trainable variables.
pub struct TaskModel {
    head: Box<dyn Head>,
    /// The same weights as detached views: evaluation records no autograd graph.
    eval_head: Box<dyn Head>,
    pub config: EncoderConfig,
    pub varmap: VarMap,
    pub report: LoadReport,
}

impl TaskModel {
    /// Loads `dir` (config.json + model.safetensors) with the head of `task`; for a
    /// classifying task `class_names` set num_labels and id2label when the checkpoint
    /// has another number of classes.
    pub fn load(
        task: &dyn Task,
        dir: &Path,
        device: &Device,
        seed: u64,
        class_names: &[String],
    ) -> Result<Self> {
        let (mut config, mut params) = berth_model::open_dir(dir, device, seed)?;
        if let Some(p) = task.problem_type() {
            config.problem_type = Some(p.to_string());
        }
        if task.classifies() {
            let same = config
                .id2label
                .as_ref()
                .is_some_and(|m| m.len() == class_names.len());
            if !same {
                config.set_labels(class_names);
            }
        }
        let head = task.head(&config, &mut params)?;
        let (varmap, report) = params.finish();
        let eval_head = task.head(&config, &mut Params::detached_view(&varmap, device)?)?;
        Ok(TaskModel {
            head,
            eval_head,
            config,
            varmap,
            report,
        })
    }

    /// bf16 compute keeps the f32 variables as master weights: every matmul casts
    /// its weight, so gradients flow back to the f32 `Var`s.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        for head in [&mut self.head, &mut self.eval_head] {
            head.encoder_mut().set_compute_dtype(dtype);
        }
    }

    /// Training mode runs the tracked model; eval mode the detached views.
    pub fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        if mode.is_train() {
            self.head.forward(b, mode)
        } else {
            self.eval_head.forward(b, mode)
        }
    }

    /// One training micro-batch (see [`Head::train_step`]): the loss parts' values,
    /// the gradients handed to `sink`.
    pub fn train_step(
        &self,
        b: &TaskBatch,
        mode: &Mode,
        weights: &[f64],
        sink: &mut dyn FnMut(candle_core::backprop::GradStore) -> Result<()>,
    ) -> Result<Vec<f32>> {
        self.head
            .train_step(self.eval_head.as_ref(), b, mode, weights, sink)
    }

    /// The class names of the checkpoint's `id2label`, in id order (empty without).
    pub fn class_names(&self) -> Vec<String> {
        match &self.config.id2label {
            Some(m) => (0..m.len())
                .map(|i| {
                    self.config
                        .label_name(i)
                        .map_or_else(|| format!("LABEL_{i}"), str::to_string)
                })
                .collect(),
            None => Vec::new(),
        }
    }
}
