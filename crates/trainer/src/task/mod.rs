//! The seam where tasks differ. A [`Task`] owns everything that changes from one
//! task to another: how a split becomes rows, how rows become a batch, the head and
//! its loss, the metrics, the HF architecture a saved model declares, and what
//! `berth predict` writes. The loop, evaluation and prediction only call it.
//!
//! One file per task, each with its own rows, head adaptor, scorer and predictor
//! (tokenizers' `ModelWrapper` and burn's `TrainStep`/`ValidStep` are the models).
//! The two matches over tasks are here, side by side: [`crate::TaskConfig::build`]
//! maps a task's name to its code, and [`crate::TaskConfig::for_checkpoint`] maps a
//! saved model's `architectures` back to its task (for `berth predict`). A new task
//! touches its own file, its head in `berth-model`, its config variant and those two
//! arms.

use std::collections::BTreeMap;

use berth_collate::Padding;
use berth_data::Dataset;
use berth_data::arrow::array::ArrayRef;
use berth_data::tokenizers::Tokenizer;
use berth_model::{Encoder, EncoderConfig, Family, HeadKind, Mode, Params};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};

use crate::batch::{Output, TaskBatch};
use crate::config::TaskConfig;
use crate::data::{Prepare, Rows};
use crate::error::Result;
pub use crate::metrics::argmax;

mod chunk_classification;
mod classification;
mod masked_lm;
mod multi_label;
mod pre_training;

pub use chunk_classification::{ChunkClassification, DocLabel, Documents};
pub use classification::{ClassPredictor, ClassScorer, Classification, Sequences};
pub use masked_lm::{FillMaskPredictor, LmScorer, MaskedLanguageModeling, Texts};
pub use multi_label::{LabelledSequences, MultiLabelClassification, multi_label_metrics};
pub use pre_training::{Pairs, PreTraining};

impl TaskConfig {
    /// The task's code, set up for `cx` (tokenizer, seed, padding, device).
    pub fn build(&self, cx: &TaskContext<'_>) -> Result<Box<dyn Task>> {
        Ok(match self {
            TaskConfig::Classification {} => Box::new(Classification::new(cx)?),
            TaskConfig::ChunkClassification { chunking } => {
                Box::new(ChunkClassification::new(chunking.clone(), cx)?)
            }
            TaskConfig::Mlm { mlm } => Box::new(MaskedLanguageModeling::new(mlm, cx)?),
            TaskConfig::Nsp { mlm } => Box::new(PreTraining::new(mlm, cx)?),
            TaskConfig::MultiLabelClassification {
                multi_label,
                chunking,
            } => Box::new(MultiLabelClassification::new(
                multi_label,
                chunking.as_ref(),
                cx,
            )?),
        })
    }
}

impl TaskConfig {
    /// The task a checkpoint was saved for, from its `architectures` entry (of any
    /// family: `BertForMaskedLM`, `RobertaForSequenceClassification`, ...) and
    /// `problem_type`; `chunking` (prediction's chunk options) makes a sequence
    /// classifier pool the chunks of long texts. Any other architecture is read as a
    /// sequence classifier: one without a classifier (a bare `BertModel`) gets a
    /// fresh one, named in a warning, as transformers does. `berth predict` picks
    /// its task here; [`TaskConfig::build`] above is the other match over tasks.
    pub fn for_checkpoint(
        architecture: &str,
        problem_type: Option<&str>,
        chunking: Option<crate::config::ChunkingConfig>,
    ) -> Result<TaskConfig> {
        let lm = |task: TaskConfig| match chunking {
            Some(_) => Err(crate::error::TrainError::Config(format!(
                "chunk options apply to sequence classifiers, not to a {architecture}"
            ))),
            None => Ok(task),
        };
        match Family::parse_architecture(architecture) {
            Some((_, HeadKind::MaskedLm)) => lm(TaskConfig::Mlm {
                mlm: Default::default(),
            }),
            // Only BERT's pre-training head is MLM + NSP (ELECTRA's, which every
            // google/electra-*-discriminator names, is replaced-token detection:
            // such a checkpoint is read as the start of a classifier).
            Some((Family::Bert, HeadKind::PreTraining)) => lm(TaskConfig::Nsp {
                mlm: Default::default(),
            }),
            Some((_, HeadKind::SequenceClassification))
                if problem_type == Some("multi_label_classification") =>
            {
                Ok(TaskConfig::MultiLabelClassification {
                    multi_label: Default::default(),
                    chunking,
                })
            }
            _ => Ok(match chunking {
                Some(chunking) => TaskConfig::ChunkClassification { chunking },
                None => TaskConfig::Classification {},
            }),
        }
    }
}

/// What a task is built with.
pub struct TaskContext<'a> {
    pub tokenizer: &'a Tokenizer,
    /// The run's seed (MLM masks derive from it).
    pub seed: u64,
    pub padding: Padding,
    /// The tokenizer's pad id, which every batch pads with.
    pub pad_id: u32,
    pub device: Device,
    /// The most rows one forward holds in evaluation and prediction (the eval batch
    /// size): a long text's chunks run in groups of this many, whatever its length.
    pub eval_rows: usize,
}

/// What prediction writes beside the logits.
pub struct PredictContext<'a> {
    pub tokenizer: &'a Tokenizer,
    /// Class names from the checkpoint's `id2label` (empty: none).
    pub class_names: Vec<String>,
    /// Fills per `[MASK]` for masked LM (HF fill-mask's `top_k`).
    pub top_k: usize,
}

/// One task: see the module docs.
pub trait Task: Send + Sync {
    /// The head whose HF architecture (for the model's family) a saved
    /// `config.json` names, e.g. `RobertaForSequenceClassification`.
    fn head_kind(&self) -> HeadKind;

    /// Whether the labels are classes named from the label column (they set the
    /// model's `num_labels` / `id2label`), one dataset row per item.
    fn classifies(&self) -> bool {
        false
    }

    /// HF's `problem_type` written into a saved `config.json` (read back by
    /// transformers to pick the loss), if the task has one.
    fn problem_type(&self) -> Option<&'static str> {
        None
    }

    /// The class names a classifying task trains on, from the train split's label
    /// column: its ClassLabel names, else the sorted distinct labels.
    fn class_names(&self, ds: &Dataset, column: &str) -> Result<Vec<String>> {
        crate::data::class_names(ds, column)
    }

    /// The rows of one loaded split.
    fn rows(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Rows>;

    /// The BERT with this task's head, its weights taken from `params`.
    fn head(&self, config: &EncoderConfig, params: &mut Params) -> Result<Box<dyn Head>>;

    /// Items `indices` of `rows` as tensors; MLM rows are masked afresh for `epoch`
    /// (masks depend on seed, epoch and row index only).
    fn batch(&self, rows: &Rows, indices: &[usize], epoch: u64) -> Result<TaskBatch>;

    /// Items `indices` of `rows` as a training step reads them (chunked texts may
    /// sample `train_chunks_per_doc` chunks); evaluation reads [`Task::batch`].
    fn train_batch(&self, rows: &Rows, indices: &[usize], epoch: u64) -> Result<TaskBatch> {
        self.batch(rows, indices, epoch)
    }

    /// Items `indices` of unlabelled `rows` as prediction reads them (no masking,
    /// no labels).
    fn predict_batch(&self, rows: &Rows, indices: &[usize]) -> Result<TaskBatch> {
        self.batch(rows, indices, 0)
    }

    /// Accumulates evaluation metrics (the loss is averaged by the caller).
    fn scorer(&self, num_classes: usize) -> Box<dyn Scorer>;

    /// Collects what `berth predict` writes for each row.
    fn predictor(&self, cx: &PredictContext<'_>) -> Result<Box<dyn Predictor>>;
}

/// A model with a task's head: a batch in, logits and loss out.
pub trait Head: Send + Sync {
    /// The loss (when the batch has labels), its parts and the logits.
    fn forward(&self, batch: &TaskBatch, mode: &Mode) -> Result<Output>;

    /// One micro-batch of training: the values of its loss parts (in
    /// [`Output::parts`]' order) and, when their sum is finite, the gradients of
    /// `Σ part x weight` handed to `sink` (possibly in pieces, which add up).
    /// `detached` is this head over detached weights, for a pass without a graph.
    /// By default one forward with a graph and one backward.
    fn train_step(
        &self,
        detached: &dyn Head,
        batch: &TaskBatch,
        mode: &Mode,
        weights: &[f64],
        sink: &mut dyn FnMut(GradStore) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let _ = detached;
        one_pass_step(self, batch, mode, weights, sink)
    }

    /// The logits of every row of the batch before pooling (chunk heads only).
    fn chunk_logits(&self, _batch: &TaskBatch, _mode: &Mode) -> Result<Tensor> {
        Err(crate::error::TrainError::internal(
            "this head does not pool chunks",
        ))
    }

    /// The encoder, to set its compute dtype.
    fn encoder_mut(&mut self) -> &mut Encoder;
}

/// [`Head::train_step`]'s default: forward with a graph, each part read once (a
/// device sync each on a GPU), then one backward of the weighted parts.
pub(crate) fn one_pass_step<H: Head + ?Sized>(
    head: &H,
    batch: &TaskBatch,
    mode: &Mode,
    weights: &[f64],
    sink: &mut dyn FnMut(GradStore) -> Result<()>,
) -> Result<Vec<f32>> {
    let out = head.forward(batch, mode)?;
    let values = out
        .parts
        .iter()
        .map(|p| p.to_scalar::<f32>())
        .collect::<candle_core::Result<Vec<f32>>>()?;
    if values.iter().sum::<f32>().is_finite() {
        sink(window_loss(&out.parts, weights)?.backward()?)?;
    }
    Ok(values)
}

/// A micro-batch's share of its window's loss, `Σ part x weight`. A part with no
/// items weighs 0 but stays in the graph, so its parameters still get (zero)
/// gradients and AdamW still decays them.
fn window_loss(parts: &[Tensor], weights: &[f64]) -> Result<Tensor> {
    let mut scaled = parts.iter().zip(weights).map(|(p, &w)| p * w);
    let first = scaled
        .next()
        .ok_or_else(|| crate::error::TrainError::internal("a head with no loss"))??;
    Ok(scaled.try_fold(first, |t, s| t + s?)?)
}

/// Evaluation metrics over batches.
pub trait Scorer {
    fn add(&mut self, batch: &TaskBatch, out: &Output) -> Result<()>;
    /// The metrics, without a prefix.
    fn metrics(&self) -> BTreeMap<String, f64>;
    /// Markdown for the report beyond the metrics (a confusion matrix), if any.
    fn details(&self, _class_names: &[String]) -> Option<String> {
        None
    }
    /// What this scorer has seen, as numbers another rank's scorer of the same task
    /// can [`Scorer::merge`] (sharded evaluation gathers them).
    fn state(&self) -> Vec<f64>;
    /// Adds another scorer's [`Scorer::state`]: the metrics are then those of both
    /// scorers' batches together.
    fn merge(&mut self, state: &[f64]) -> Result<()>;
}

/// A scorer state that does not have the shape its scorer writes.
pub(crate) fn bad_state(what: &str, len: usize) -> crate::error::TrainError {
    crate::error::TrainError::Internal(format!(
        "a gathered {what} scorer state of {len} numbers is malformed (ranks out of step?)"
    ))
}

/// Prediction columns over batches, row i of the output for row i of the input.
pub trait Predictor {
    fn add(&mut self, batch: &TaskBatch, out: &Output) -> Result<()>;
    fn columns(self: Box<Self>) -> Result<Vec<(String, ArrayRef)>>;
}

/// The mean loss and the task's metrics over `rows`, batches of `batch_size` in
/// order, named `<prefix>_<metric>`; with the scorer, for its report details.
///
/// With several ranks, batch `i` is evaluated by rank `i % world_size`, and the
/// losses and scorer states are gathered: every rank gets the metrics a single
/// process would (up to the order of float sums).
pub fn evaluate(
    task: &dyn Task,
    forward: &dyn Fn(&TaskBatch) -> Result<Output>,
    rows: &Rows,
    batch_size: usize,
    num_classes: usize,
    prefix: &str,
    collective: &dyn berth_collective::Collective,
) -> Result<(BTreeMap<String, f64>, Box<dyn Scorer>)> {
    let started = std::time::Instant::now();
    let n = rows.len();
    let mut scorer = task.scorer(num_classes);
    let mut loss_sum = 0f64;
    let (rank, world) = (collective.rank(), collective.world_size());
    let batches: Vec<Vec<usize>> = sequential(n, batch_size)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % world == rank)
        .map(|(_, b)| b)
        .collect();
    let mine: usize = batches.iter().map(Vec::len).sum();
    let progress = berth_data::Progress::new(format!("Evaluating ({prefix})"), mine);
    for indices in batches {
        let batch = task.batch(rows, &indices, 0)?;
        let out = forward(&batch)?;
        progress.inc(indices.len());
        let loss = match &out.loss {
            Some(l) => l.to_scalar::<f32>()? as f64,
            None => f64::NAN,
        };
        loss_sum += loss * indices.len() as f64;
        scorer.add(&batch, &out)?;
    }
    progress.finish_and_clear();
    if world > 1 {
        let mut sums = [loss_sum];
        collective.all_reduce_sum_f64(&mut sums)?;
        loss_sum = sums[0];
        let bytes: Vec<u8> = scorer
            .state()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut all = task.scorer(num_classes);
        for part in collective.all_gather_bytes(&bytes)? {
            let state: Vec<f64> = part
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            all.merge(&state)?;
        }
        scorer = all;
    }
    let mut m = scorer.metrics();
    m.insert("loss".into(), loss_sum / n.max(1) as f64);
    let runtime = started.elapsed().as_secs_f64();
    m.insert("runtime".into(), round4(runtime));
    m.insert(
        "samples_per_second".into(),
        round4(n as f64 / runtime.max(1e-9)),
    );
    Ok((
        m.into_iter()
            .map(|(k, v)| (format!("{prefix}_{k}"), v))
            .collect(),
        scorer,
    ))
}

/// What `task` predicts for every item of `rows`, in order.
pub fn predict(
    task: &dyn Task,
    forward: &dyn Fn(&TaskBatch) -> Result<Output>,
    rows: &Rows,
    batch_size: usize,
    cx: &PredictContext<'_>,
) -> Result<Vec<(String, ArrayRef)>> {
    let mut predictor = task.predictor(cx)?;
    let progress = berth_data::Progress::new("Predicting", rows.len());
    for indices in sequential(rows.len(), batch_size) {
        let batch = task.predict_batch(rows, &indices)?;
        predictor.add(&batch, &forward(&batch)?)?;
        progress.inc(indices.len());
    }
    progress.finish();
    predictor.columns()
}

fn sequential(n: usize, batch_size: usize) -> Vec<Vec<usize>> {
    use berth_collate::BatchSampler;
    berth_collate::SequentialSampler {
        len: n,
        batch_size: batch_size.max(1),
        drop_last: false,
    }
    .batches(0)
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}
