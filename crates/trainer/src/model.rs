//! The model a task trains, and how a batch of its rows becomes tensors.

use std::path::Path;

use berth_collate::{Batch, Document, Example, Label, Padding, collate, collate_chunks};
use berth_data::berth_masking::DynamicMasker;
use berth_model::{
    BertConfig, BertModel, ChunkPooledClassifier, LoadReport, MaskedLm, Mode, Params, Pool,
    PreTraining, SequenceClassifier,
};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarMap;

use crate::config::Task;
use crate::data::Rows;
use crate::error::{Result, TrainError};

enum Head {
    Sequence(SequenceClassifier),
    Chunked(ChunkPooledClassifier),
    Mlm(MaskedLm),
    PreTraining(PreTraining),
}

/// A BERT with the head of its task, and its trainable variables.
pub struct TaskModel {
    head: Head,
    /// The same weights as detached views: evaluation records no autograd graph.
    eval_head: Head,
    pub config: BertConfig,
    pub varmap: VarMap,
    pub report: LoadReport,
    pub task: Task,
}

/// One batch as tensors.
pub struct TaskBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    /// Chunked texts: text b owns chunk rows `doc_offsets[b]..doc_offsets[b+1]`.
    pub doc_offsets: Option<Vec<usize>>,
    /// Class ids `[B]`, or token labels `[B, L]` (-100 = not scored).
    pub labels: Tensor,
    pub next_sentence_label: Option<Tensor>,
    /// Texts in the batch.
    pub items: usize,
    /// Non-padding tokens.
    pub real_tokens: usize,
}

impl TaskBatch {
    /// What each part of the loss averages over, in [`Output::parts`]' order: the
    /// texts for classification, the scored (non -100) tokens for masked LM, both for
    /// pre-training (MLM tokens, then NSP pairs). Known before the forward, so that a
    /// window of accumulated micro-batches can be normalised as one batch.
    pub fn loss_items(&self) -> Result<Vec<usize>> {
        if self.labels.rank() < 2 {
            return Ok(vec![self.items]);
        }
        let scored = self
            .labels
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
    /// Mean loss of the batch (scalar, f32).
    pub loss: Tensor,
    /// The means that `loss` sums, one per entry of [`TaskBatch::loss_items`].
    pub parts: Vec<Tensor>,
    /// Classification logits `[B, C]`; MLM logits `[M, V]` of the M labelled
    /// positions only (see `MaskedLm::forward_labelled`).
    pub logits: Tensor,
    /// For MLM, the labels `[M]` of the rows of `logits`.
    pub mlm_labels: Option<Tensor>,
    pub nsp_logits: Option<Tensor>,
}

/// The HF architecture name written into a saved config.
pub fn architecture(task: Task) -> &'static str {
    match task {
        Task::Classification | Task::ChunkClassification => "BertForSequenceClassification",
        Task::Mlm => "BertForMaskedLM",
        Task::Nsp => "BertForPreTraining",
    }
}

impl TaskModel {
    /// Loads `dir` (config.json + model.safetensors) with the head of `task`;
    /// `class_names` set num_labels and id2label for classification.
    pub fn load(
        task: Task,
        dir: &Path,
        device: &Device,
        seed: u64,
        class_names: &[String],
        pool: Pool,
    ) -> Result<Self> {
        let (mut config, mut params) = berth_model::open_dir(dir, device, seed)?;
        if matches!(task, Task::Classification | Task::ChunkClassification) {
            let same = config
                .id2label
                .as_ref()
                .is_some_and(|m| m.len() == class_names.len());
            if !same {
                config.set_labels(class_names);
            }
        }
        let build = |params: &mut Params| -> Result<Head> {
            Ok(match task {
                Task::Classification => Head::Sequence(SequenceClassifier::new(&config, params)?),
                Task::ChunkClassification => {
                    Head::Chunked(ChunkPooledClassifier::new(&config, params, pool)?)
                }
                Task::Mlm => Head::Mlm(MaskedLm::new(&config, params)?),
                Task::Nsp => Head::PreTraining(PreTraining::new(&config, params)?),
            })
        };
        let head = build(&mut params)?;
        let (varmap, report) = params.finish();
        let eval_head = build(&mut Params::detached_view(&varmap, device)?)?;
        Ok(TaskModel {
            head,
            eval_head,
            config,
            varmap,
            report,
            task,
        })
    }

    /// bf16 compute keeps the f32 variables as master weights: every matmul casts
    /// its weight, so gradients flow back to the f32 `Var`s.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        for head in [&mut self.head, &mut self.eval_head] {
            bert_mut(head).set_compute_dtype(dtype);
        }
    }

    /// Training mode runs the tracked model; eval mode the detached views.
    pub fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        let head = if mode.is_train() {
            &self.head
        } else {
            &self.eval_head
        };
        let (ids, types, mask) = (
            &b.input_ids,
            Some(&b.token_type_ids),
            Some(&b.attention_mask),
        );
        Ok(match head {
            Head::Sequence(m) => {
                let logits = m.forward(ids, types, mask, mode)?.to_dtype(DType::F32)?;
                let loss = m.loss(&logits, &b.labels)?;
                Output {
                    parts: vec![loss.clone()],
                    loss,
                    logits,
                    mlm_labels: None,
                    nsp_logits: None,
                }
            }
            Head::Chunked(m) => {
                let offsets = b.doc_offsets.as_deref().ok_or_else(|| {
                    TrainError::Config("chunk classification needs chunked batches".into())
                })?;
                let logits = m
                    .forward(ids, types, mask, offsets, mode)?
                    .to_dtype(DType::F32)?;
                let loss = m.loss(&logits, &b.labels)?;
                Output {
                    parts: vec![loss.clone()],
                    loss,
                    logits,
                    mlm_labels: None,
                    nsp_logits: None,
                }
            }
            Head::Mlm(m) => {
                let (logits, labels) = m.forward_labelled(ids, types, mask, &b.labels, mode)?;
                let logits = logits.to_dtype(DType::F32)?;
                let loss = m.loss(&logits, &labels)?;
                Output {
                    parts: vec![loss.clone()],
                    loss,
                    logits,
                    mlm_labels: Some(labels),
                    nsp_logits: None,
                }
            }
            Head::PreTraining(m) => {
                let (logits, labels, nsp) =
                    m.forward_labelled(ids, types, mask, &b.labels, mode)?;
                let (logits, nsp) = (logits.to_dtype(DType::F32)?, nsp.to_dtype(DType::F32)?);
                let next = b.next_sentence_label.as_ref().ok_or_else(|| {
                    TrainError::Config("pre-training batches need next_sentence_label".into())
                })?;
                let (mlm, nsp_loss) = m.loss_parts(&logits, &nsp, &labels, next)?;
                Output {
                    loss: (&mlm + &nsp_loss)?,
                    parts: vec![mlm, nsp_loss],
                    logits,
                    mlm_labels: Some(labels),
                    nsp_logits: Some(nsp),
                }
            }
        })
    }
}

fn bert_mut(head: &mut Head) -> &mut BertModel {
    match head {
        Head::Sequence(m) => &mut m.bert,
        Head::Chunked(m) => &mut m.inner.bert,
        Head::Mlm(m) => &mut m.bert,
        Head::PreTraining(m) => &mut m.bert,
    }
}

/// Masked-token accuracy counts: (correct, scored) over labels != -100.
pub fn mlm_hits(logits: &Tensor, labels: &Tensor) -> Result<(u64, u64)> {
    let pred = logits.argmax(D::Minus1)?.to_dtype(DType::I64)?;
    let scored = labels.ne(berth_model::IGNORE_INDEX)?;
    let correct = pred.eq(labels)?.mul(&scored)?;
    let n = scored.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as u64;
    let c = correct
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as u64;
    Ok((c, n))
}

/// How rows are padded and masked into batches.
pub struct Batcher {
    pub padding: Padding,
    pub pad_id: u32,
    pub masker: Option<DynamicMasker>,
    /// Whole-word masking: which vocabulary ids continue a word (`##..`).
    pub continuation: Option<Vec<bool>>,
    pub device: Device,
}

impl Batcher {
    /// The batch of items `indices` of `rows`; MLM rows are masked afresh for
    /// `epoch` (masks depend on seed, epoch and row index only).
    pub fn batch(&self, rows: &Rows, indices: &[usize], epoch: u64) -> Result<TaskBatch> {
        let dev = &self.device;
        let to_batch = |b: Batch, items: usize| -> Result<TaskBatch> {
            Ok(TaskBatch {
                input_ids: b.input_ids,
                attention_mask: b.attention_mask,
                token_type_ids: b.token_type_ids,
                doc_offsets: None,
                labels: b
                    .labels
                    .ok_or_else(|| TrainError::Config("a batch without labels".into()))?,
                next_sentence_label: b.next_sentence_label,
                items,
                real_tokens: b.real_tokens,
            })
        };
        match rows {
            Rows::Sequences { ids, types, labels } => {
                let ex: Vec<Example> = indices
                    .iter()
                    .map(|&i| {
                        Example::new(&ids[i])
                            .with_token_types(&types[i])
                            .with_label(labels[i])
                    })
                    .collect();
                to_batch(
                    collate(&ex, &self.padding, self.pad_id, dev)?,
                    indices.len(),
                )
            }
            Rows::Documents { chunks, labels } => {
                let docs: Vec<Document> = indices
                    .iter()
                    .map(|&i| Document {
                        chunks: chunks[i].iter().map(Vec::as_slice).collect(),
                        label: Some(labels[i]),
                    })
                    .collect();
                let b = collate_chunks(&docs, &self.padding, self.pad_id, dev)?;
                Ok(TaskBatch {
                    input_ids: b.input_ids,
                    attention_mask: b.attention_mask,
                    token_type_ids: b.token_type_ids,
                    labels: b
                        .labels
                        .ok_or_else(|| TrainError::Config("a batch without labels".into()))?,
                    doc_offsets: Some(b.doc_offsets),
                    next_sentence_label: None,
                    items: indices.len(),
                    real_tokens: b.real_tokens,
                })
            }
            Rows::Texts { ids } => {
                let masker = self.masker()?;
                let masked: Vec<_> = indices
                    .iter()
                    .map(|&i| self.mask(masker, &ids[i], epoch, i))
                    .collect();
                let ex: Vec<Example> = masked
                    .iter()
                    .map(|m| Example {
                        label: Some(Label::Tokens(m.labels.clone())),
                        ..Example::new(&m.input_ids)
                    })
                    .collect();
                to_batch(
                    collate(&ex, &self.padding, self.pad_id, dev)?,
                    indices.len(),
                )
            }
            Rows::Pairs { ids, types, next } => {
                let masker = self.masker()?;
                let masked: Vec<_> = indices
                    .iter()
                    .map(|&i| self.mask(masker, &ids[i], epoch, i))
                    .collect();
                let ex: Vec<Example> = masked
                    .iter()
                    .zip(indices)
                    .map(|(m, &i)| Example {
                        label: Some(Label::Tokens(m.labels.clone())),
                        next_sentence_label: Some(next[i]),
                        ..Example::new(&m.input_ids).with_token_types(&types[i])
                    })
                    .collect();
                to_batch(
                    collate(&ex, &self.padding, self.pad_id, dev)?,
                    indices.len(),
                )
            }
        }
    }

    fn mask(
        &self,
        masker: &DynamicMasker,
        ids: &[u32],
        epoch: u64,
        index: usize,
    ) -> berth_data::berth_masking::Masked {
        let starts = self.continuation.as_ref().map(|table| {
            berth_data::berth_masking::word_starts_from_continuations(ids, |id| {
                table.get(id as usize).copied().unwrap_or(false)
            })
        });
        masker.mask(ids, starts.as_deref(), epoch, index as u64)
    }

    fn masker(&self) -> Result<&DynamicMasker> {
        self.masker
            .as_ref()
            .ok_or_else(|| TrainError::Config("MLM rows need a masker".into()))
    }
}
