//! The model a task trains (a BERT with the task's [`Head`]), and the tensors that go
//! in and come out of it.

use std::path::Path;

use berth_model::{BertConfig, LoadReport, Mode, Params};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{Result, TrainError};
use crate::task::{Head, Task};

/// A BERT with the head of its task, and its trainable variables.
pub struct TaskModel {
    head: Box<dyn Head>,
    /// The same weights as detached views: evaluation records no autograd graph.
    eval_head: Box<dyn Head>,
    pub config: BertConfig,
    pub varmap: VarMap,
    pub report: LoadReport,
}

/// One batch as tensors.
pub struct TaskBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    /// Chunked texts: text b owns chunk rows `doc_offsets[b]..doc_offsets[b+1]`.
    pub doc_offsets: Option<Vec<usize>>,
    /// Class ids `[B]`, or token labels `[B, L]` (IGNORE_INDEX = not scored); none
    /// when predicting.
    pub labels: Option<Tensor>,
    pub next_sentence_label: Option<Tensor>,
    /// Texts in the batch.
    pub items: usize,
    /// Non-padding tokens.
    pub real_tokens: usize,
}

impl TaskBatch {
    /// The labels, which training and evaluation need.
    pub fn labels(&self) -> Result<&Tensor> {
        self.labels
            .as_ref()
            .ok_or_else(|| TrainError::Config("a batch without labels".into()))
    }

    /// What each part of the loss averages over, in [`Output::parts`]' order: the
    /// texts for classification, the scored (non-ignored) tokens for masked LM, both
    /// for pre-training (MLM tokens, then NSP pairs). Known before the forward, so
    /// that a window of accumulated micro-batches can be normalised as one batch.
    pub fn loss_items(&self) -> Result<Vec<usize>> {
        let labels = self.labels()?;
        if labels.rank() < 2 {
            return Ok(vec![self.items]);
        }
        let scored = labels
            .ne(berth_model::IGNORE_INDEX)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        Ok(match self.next_sentence_label {
            Some(_) => vec![scored, self.items],
            None => vec![scored],
        })
    }
}

/// What a forward pass gives.
pub struct Output {
    /// Mean loss of the batch (scalar, f32); none when the batch has no labels.
    pub loss: Option<Tensor>,
    /// The means that `loss` sums, one per entry of [`TaskBatch::loss_items`].
    pub parts: Vec<Tensor>,
    /// Classification logits `[B, C]`; MLM logits `[M, V]` of the M labelled
    /// positions only (see `MaskedLm::forward_labelled`).
    pub logits: Tensor,
    /// For MLM, the labels `[M]` of the rows of `logits`.
    pub mlm_labels: Option<Tensor>,
    pub nsp_logits: Option<Tensor>,
}

impl Output {
    /// An output whose loss is the sum of `parts` (none when there are none).
    pub fn new(parts: Vec<Tensor>, logits: Tensor) -> Result<Self> {
        let loss = match parts.split_first() {
            None => None,
            Some((first, rest)) => Some(
                rest.iter()
                    .try_fold(first.clone(), |acc, p| acc.broadcast_add(p))?,
            ),
        };
        Ok(Output {
            loss,
            parts,
            logits,
            mlm_labels: None,
            nsp_logits: None,
        })
    }

    /// The loss, which training needs.
    pub fn loss(&self) -> Result<&Tensor> {
        self.loss
            .as_ref()
            .ok_or_else(|| TrainError::Config("a forward without labels has no loss".into()))
    }
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
            head.bert_mut().set_compute_dtype(dtype);
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
