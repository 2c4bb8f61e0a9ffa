//! The tensors that go into a task's head and come out of it.

use candle_core::{DType, Tensor};

use crate::error::{Result, TrainError};

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
            .ok_or_else(|| TrainError::internal("a batch without labels"))
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
            .ok_or_else(|| TrainError::internal("a forward without labels has no loss"))
    }
}
