//! belt_nlp's long-document classification: every overlapping chunk of a text is
//! classified and the chunk logits are pooled (mean or max) per text. Saved as HF
//! `BertForSequenceClassification`, so the weights load anywhere.

use berth_collate::{Document, Padding, collate_chunks};
use berth_data::Dataset;
use berth_data::arrow::datatypes::UInt32Type;
use berth_data::berth_chunking::ChunkConfig;
use berth_model::{
    ChunkPooledClassifier, Encoder, EncoderConfig, HeadKind, Mode, Params, pool_chunks,
};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;

use super::{
    ClassPredictor, ClassScorer, Head, PredictContext, Predictor, Scorer, Task, TaskContext,
};
use crate::batch::{Output, TaskBatch};
use crate::config::ChunkingConfig;
use crate::data::{Prepare, RowSet, Rows, Stage};
use crate::error::{Result, TrainError};

/// Long texts' chunks (each `[CLS] .. [SEP]`) and their labels: a class id (`i64`,
/// chunk classification) or a 0/1 vector (`Vec<f32>`, multi-label). `labels` is
/// empty when the rows are unlabelled, for prediction.
#[derive(Clone, Debug)]
pub struct Documents<L = i64> {
    pub chunks: Vec<Vec<Vec<u32>>>,
    pub labels: Vec<L>,
}

/// A text's label as a batch holds it.
pub trait DocLabel: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The labels of one batch: `[B]` class ids or `[B, K]` 0/1 vectors.
    fn tensor(labels: Vec<&Self>, device: &Device) -> Result<Tensor>;
}

impl DocLabel for i64 {
    fn tensor(labels: Vec<&Self>, device: &Device) -> Result<Tensor> {
        let n = labels.len();
        Ok(Tensor::from_vec(
            labels.into_iter().copied().collect::<Vec<_>>(),
            n,
            device,
        )?)
    }
}

impl DocLabel for Vec<f32> {
    fn tensor(labels: Vec<&Self>, device: &Device) -> Result<Tensor> {
        let (n, k) = (labels.len(), labels.first().map_or(0, |l| l.len()));
        let flat: Vec<f32> = labels.into_iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (n, k), device)?)
    }
}

impl<L: DocLabel> RowSet for Documents<L> {
    fn len(&self) -> usize {
        self.chunks.len()
    }
    fn lengths(&self) -> Vec<usize> {
        self.chunks
            .iter()
            .map(|c| c.iter().map(Vec::len).sum())
            .collect()
    }
    fn first(&self, n: usize) -> Rows {
        Rows::new(Documents {
            chunks: self.chunks[..n].to_vec(),
            labels: self.labels.iter().take(n).cloned().collect(),
        })
    }

    fn chunk_counts(&self) -> Option<std::collections::BTreeMap<usize, usize>> {
        let mut counts = std::collections::BTreeMap::<usize, usize>::new();
        for c in &self.chunks {
            *counts.entry(c.len()).or_default() += 1;
        }
        Some(counts)
    }
}

/// What chunk classification and chunked multi-label share: cutting a split's texts
/// into chunks, batching a text's chunks (all of them, or `train_chunks_per_doc`
/// sampled ones in training) and the pooled head.
pub(super) struct Chunker {
    pub config: ChunkingConfig,
    padding: Padding,
    pad_id: u32,
    seed: u64,
    device: Device,
    eval_rows: usize,
}

impl Chunker {
    pub fn new(config: ChunkingConfig, cx: &TaskContext<'_>) -> Result<Self> {
        config.validate()?;
        Ok(Chunker {
            config,
            padding: cx.padding,
            pad_id: cx.pad_id,
            seed: cx.seed,
            device: cx.device.clone(),
            eval_rows: cx.eval_rows.max(1),
        })
    }

    /// Every text of `ds` as chunks.
    pub fn chunks(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Vec<Vec<Vec<u32>>>> {
        if let Some(pair) = &prep.data.pair_column {
            return Err(TrainError::Config(format!(
                "chunking reads one text column ('{}'); data.pair_column = '{pair}' cannot be chunked with it",
                prep.data.text_column
            )));
        }
        let c = &self.config;
        let max_text_len = match (prep.stage, c.eval_max_text_len) {
            (Stage::Eval | Stage::Predict, Some(0)) => None,
            (Stage::Eval | Stage::Predict, Some(n)) => Some(n),
            _ => c.max_text_len,
        };
        let cc = ChunkConfig::new(
            c.chunk_size,
            c.stride,
            c.min_chunk_len,
            max_text_len,
            prep.max_positions,
        )
        .map_err(|e| TrainError::Config(format!("chunking: {e}")))?;
        let t = ds.chunk_texts(prep.tokenizer, &prep.data.text_column, cc)?;
        Ok(t.nested_list_rows::<UInt32Type>("chunks")?)
    }

    /// Texts `indices` with all their chunks, or (`sample_epoch`, training with
    /// `train_chunks_per_doc = k`) k of each text's chunks drawn for that epoch: a
    /// function of (seed, epoch, text), kept in the text's order.
    pub fn batch<L: DocLabel>(
        &self,
        rows: &Rows,
        indices: &[usize],
        sample_epoch: Option<u64>,
    ) -> Result<TaskBatch> {
        let r = rows.get::<Documents<L>>()?;
        let sample = sample_epoch.zip(self.config.train_chunks_per_doc);
        let docs: Vec<Document> = indices
            .iter()
            .map(|&i| {
                let all = &r.chunks[i];
                let chunks = match sample {
                    Some((epoch, k)) if all.len() > k => {
                        sample_chunks(self.seed, epoch, i, all.len(), k)
                            .into_iter()
                            .map(|c| all[c].as_slice())
                            .collect()
                    }
                    _ => all.iter().map(Vec::as_slice).collect(),
                };
                Document {
                    chunks,
                    label: None,
                }
            })
            .collect();
        let b = collate_chunks(&docs, &self.padding, self.pad_id, &self.device)?;
        let labels = if r.labels.is_empty() {
            None
        } else {
            let picked = indices.iter().map(|&i| &r.labels[i]).collect();
            Some(L::tensor(picked, &self.device)?)
        };
        Ok(TaskBatch {
            input_ids: b.input_ids,
            attention_mask: b.attention_mask,
            token_type_ids: b.token_type_ids,
            labels,
            doc_offsets: Some(b.doc_offsets),
            next_sentence_label: None,
            items: indices.len(),
            real_tokens: b.real_tokens,
        })
    }

    /// The pooled head over `params`, with `loss` on the pooled logits.
    pub fn head(
        &self,
        config: &EncoderConfig,
        params: &mut Params,
        loss: PooledLoss,
    ) -> Result<Box<dyn Head>> {
        Ok(Box::new(PooledHead {
            model: ChunkPooledClassifier::new(config, params, self.config.pool)?,
            loss,
            group: self.config.chunk_group_size,
            eval_group: self.eval_rows,
        }))
    }
}

/// The row groups `(first, n)` that `rows` chunk rows run in: `group` rows at a
/// time when set; else all at once in training (one pass) and `eval_group` at a
/// time in evaluation and prediction.
fn chunk_groups(
    rows: usize,
    group: Option<usize>,
    eval_group: usize,
    train: bool,
) -> Vec<(usize, usize)> {
    let n = match (group, train) {
        (Some(g), _) => g,
        (None, true) => rows,
        (None, false) => eval_group,
    }
    .max(1);
    (0..rows).step_by(n).map(|s| (s, n.min(rows - s))).collect()
}

/// `k` distinct chunk indices of `0..n`, sorted, drawn from (seed, epoch, text).
fn sample_chunks(seed: u64, epoch: u64, text: usize, n: usize, k: usize) -> Vec<usize> {
    let mut x = seed ^ 0xC2B2_AE3D_27D4_EB4F;
    for v in [epoch, text as u64] {
        x = (x ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(x);
    let mut picked = rand::seq::index::sample(&mut rng, n, k).into_vec();
    picked.sort_unstable();
    picked
}

/// The loss on pooled logits.
#[derive(Clone, Copy, Debug)]
pub(super) enum PooledLoss {
    /// The sequence classifier's: cross-entropy (MSE for one label).
    Class,
    /// Sigmoid and binary cross-entropy per class.
    MultiLabel,
}

/// belt_nlp's head: the sequence classifier on every chunk, logits pooled per text,
/// the loss on the pooled logits.
///
/// With `group = Some(n)` no forward holds more than n chunks. Training takes the
/// two-pass exact gradient: the loss depends on the chunks only through the pooled
/// logits, so (1) every chunk runs without a graph, (2) the pooled loss gives the
/// gradient of each chunk's logits (mean: the pooled gradient / K; max: the arg-max
/// chunk of each class), (3) the chunks run again n at a time with a graph, each
/// group backpropagating its logits times that gradient. The sum over groups is the
/// one-pass gradient, for one extra forward. Each group's dropout masks are those
/// of the whole batch ([`Mode::starting_at_sample`]), so pass 1 and pass 2 agree.
///
/// Evaluation and prediction run a batch's chunks `group` at a time, else
/// `eval_group` (the eval batch size) at a time: a text's chunks may span several
/// forwards, and their logits are pooled once the text's last chunk is in, so the
/// memory of a forward does not grow with a text's length.
struct PooledHead {
    model: ChunkPooledClassifier,
    loss: PooledLoss,
    group: Option<usize>,
    eval_group: usize,
}

impl PooledHead {
    fn loss(&self, pooled: &Tensor, labels: &Tensor) -> Result<Tensor> {
        Ok(match self.loss {
            PooledLoss::Class => self.model.loss(pooled, labels)?,
            PooledLoss::MultiLabel => berth_model::bce_with_logits(pooled, labels)?,
        })
    }

    /// The logits of chunk rows `first..first + n`, dropout as in one pass over all.
    fn rows(&self, b: &TaskBatch, first: usize, n: usize, mode: &Mode) -> Result<Tensor> {
        let part = |t: &Tensor| t.narrow(0, first, n);
        let (ids, types, mask) = (
            part(&b.input_ids)?,
            part(&b.token_type_ids)?,
            part(&b.attention_mask)?,
        );
        let m = mode.starting_at_sample(first);
        Ok(self
            .model
            .inner
            .forward(&ids, Some(&types), Some(&mask), &m)?)
    }

    /// Chunk row groups `(first, n)` of a forward in `mode`: in training one of all
    /// rows when ungrouped; in evaluation at most `eval_group` rows each.
    fn groups(&self, rows: usize, mode: &Mode) -> Vec<(usize, usize)> {
        chunk_groups(rows, self.group, self.eval_group, mode.is_train())
    }

    fn offsets<'b>(&self, b: &'b TaskBatch) -> Result<&'b [usize]> {
        b.doc_offsets
            .as_deref()
            .ok_or_else(|| TrainError::internal("chunk classification needs chunked batches"))
    }
}

impl Head for PooledHead {
    fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        let offsets = self.offsets(b)?;
        // Pooled in f32, as the two-pass step pools (bf16 logits would pool otherwise).
        let logits = self.chunk_logits(b, mode)?.to_dtype(DType::F32)?;
        let pooled = pool_chunks(&logits, offsets, self.model.pool)?;
        super::classification::class_output(pooled, b.labels.as_ref(), |l, y| self.loss(l, y))
    }

    fn chunk_logits(&self, b: &TaskBatch, mode: &Mode) -> Result<Tensor> {
        // One group (the whole batch) when ungrouped; each group draws the masks of
        // one pass over the batch, so the groups' logits are one pass's rows.
        let mut parts = self
            .groups(b.input_ids.dim(0)?, mode)
            .into_iter()
            .map(|(s, n)| self.rows(b, s, n, mode))
            .collect::<Result<Vec<_>>>()?;
        Ok(match parts.len() {
            1 => parts.remove(0),
            _ => Tensor::cat(&parts, 0)?,
        })
    }

    fn train_step(
        &self,
        detached: &dyn Head,
        b: &TaskBatch,
        mode: &Mode,
        weights: &[f64],
        sink: &mut dyn FnMut(GradStore) -> Result<()>,
    ) -> Result<Vec<f32>> {
        if self.group.is_none() {
            return super::one_pass_step(self, b, mode, weights, sink);
        }
        let offsets = self.offsets(b)?;
        // Pass 1: every chunk, no graph (the detached weights), grouped.
        let logits = detached.chunk_logits(b, mode)?.to_dtype(DType::F32)?;
        let logits = Var::from_tensor(&logits)?;
        let pooled = pool_chunks(logits.as_tensor(), offsets, self.model.pool)?;
        let loss = self.loss(&pooled, b.labels()?)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Ok(vec![value]);
        }
        debug_assert_eq!(weights.len(), 1, "a pooled head has one loss part");
        let weight = weights.first().copied().unwrap_or(1.0);
        let d = (loss * weight)?.backward()?;
        let d_logits = d
            .get(logits.as_tensor())
            .ok_or_else(|| TrainError::internal("pooled loss has no chunk gradient"))?
            .clone();
        drop(d);
        // Pass 2: each group again with a graph, its logits weighted by their gradient.
        for (s, n) in self.groups(d_logits.dim(0)?, mode) {
            let group = self.rows(b, s, n, mode)?;
            let g = d_logits.narrow(0, s, n)?.to_dtype(group.dtype())?.detach();
            sink((group * g)?.sum_all()?.backward()?)?;
        }
        Ok(vec![value])
    }

    fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.model.inner.encoder
    }
}

/// The task; see the module docs.
pub struct ChunkClassification(Chunker);

impl ChunkClassification {
    pub fn new(chunking: ChunkingConfig, cx: &TaskContext<'_>) -> Result<Self> {
        Ok(ChunkClassification(Chunker::new(chunking, cx)?))
    }
}

impl Task for ChunkClassification {
    fn head_kind(&self) -> HeadKind {
        HeadKind::SequenceClassification
    }

    fn classifies(&self) -> bool {
        true
    }

    fn rows(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Rows> {
        Ok(Rows::new(Documents {
            chunks: self.0.chunks(ds, prep)?,
            labels: prep.labels(ds)?,
        }))
    }

    fn head(&self, config: &EncoderConfig, params: &mut Params) -> Result<Box<dyn Head>> {
        self.0.head(config, params, PooledLoss::Class)
    }

    fn batch(&self, rows: &Rows, indices: &[usize], _epoch: u64) -> Result<TaskBatch> {
        self.0.batch::<i64>(rows, indices, None)
    }

    fn train_batch(&self, rows: &Rows, indices: &[usize], epoch: u64) -> Result<TaskBatch> {
        self.0.batch::<i64>(rows, indices, Some(epoch))
    }

    fn scorer(&self, num_classes: usize) -> Box<dyn Scorer> {
        Box::new(ClassScorer::new(num_classes))
    }

    fn predictor(&self, cx: &PredictContext<'_>) -> Result<Box<dyn Predictor>> {
        Ok(Box::new(ClassPredictor::new(cx.class_names.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_runs_chunks_in_groups_of_the_eval_batch_size() {
        // Training without chunk_group_size: one pass over every row.
        assert_eq!(chunk_groups(7, None, 2, true), vec![(0, 7)]);
        // Evaluation: at most eval_group rows per forward, a text's chunks spanning
        // several.
        assert_eq!(
            chunk_groups(7, None, 3, false),
            vec![(0, 3), (3, 3), (6, 1)]
        );
        // chunk_group_size, when set, is the group in both.
        assert_eq!(
            chunk_groups(5, Some(2), 3, true),
            vec![(0, 2), (2, 2), (4, 1)]
        );
        assert_eq!(
            chunk_groups(5, Some(2), 3, false),
            vec![(0, 2), (2, 2), (4, 1)]
        );
        assert_eq!(chunk_groups(0, None, 3, false), vec![]);
    }

    #[test]
    fn the_report_counts_chunks_per_text() {
        let d: Documents = Documents {
            chunks: vec![
                vec![vec![1]],
                vec![vec![1], vec![2]],
                vec![vec![3], vec![4]],
            ],
            labels: Vec::new(),
        };
        let md = crate::report::chunks_table(&d.chunk_counts().unwrap());
        assert!(md.contains("| 1 | 1 |") && md.contains("| 2 | 2 |"), "{md}");
    }
}
