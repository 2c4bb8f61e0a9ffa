//! Masked language modelling (HF `BertForMaskedLM` with
//! `DataCollatorForLanguageModeling`): texts truncated to `data.max_length`, masked
//! afresh every epoch. Prediction is HF's fill-mask: the top-k tokens per `[MASK]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_collate::{Example, MlmCollator, collate};
use berth_data::Dataset;
use berth_data::arrow::array::{
    ArrayRef, Float32Builder, Int64Builder, ListBuilder, StringBuilder, UInt32Builder,
};
use berth_data::berth_masking::{DynamicMasker, MlmConfig as MaskConfig};
use berth_data::tokenizers::Tokenizer;
use berth_model::{Encoder, EncoderConfig, HeadKind, MaskedLm, Mode, Params};
use candle_core::{D, DType, Device, Tensor};

use super::{Head, PredictContext, Predictor, Scorer, Task, TaskContext, argmax};
use crate::batch::{Output, TaskBatch};
use crate::config::MlmConfig;
use crate::data::{Prepare, RowSet, Rows};
use crate::error::{Result, TrainError};
use crate::metrics::LmCounts;

/// Token sequences to mask.
#[derive(Clone, Debug)]
pub struct Texts {
    pub ids: Vec<Vec<u32>>,
}

impl RowSet for Texts {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn lengths(&self) -> Vec<usize> {
        self.ids.iter().map(Vec::len).collect()
    }
    fn first(&self, n: usize) -> Rows {
        Rows::new(Texts {
            ids: self.ids[..n].to_vec(),
        })
    }
}

/// The collator of both masking tasks, from the `[mlm]` section.
pub(super) fn mlm_collator(mlm: &MlmConfig, cx: &TaskContext<'_>) -> Result<MlmCollator> {
    let masker = DynamicMasker::new(
        MaskConfig {
            mlm_probability: mlm.mlm_probability,
            whole_word: mlm.whole_word,
            ..MaskConfig::default()
        },
        berth_data::masking_tokens(cx.tokenizer)?,
        cx.seed,
    )
    .map_err(|e| TrainError::Config(format!("mlm: {e}")))?;
    Ok(MlmCollator {
        masker,
        words: mlm
            .whole_word
            .then(|| berth_data::continuation_table(cx.tokenizer))
            .transpose()?,
        padding: cx.padding,
        pad_id: cx.pad_id,
    })
}

/// The task; see the module docs.
pub struct MaskedLanguageModeling {
    collator: MlmCollator,
    mask_id: u32,
    device: Device,
}

impl MaskedLanguageModeling {
    pub fn new(mlm: &MlmConfig, cx: &TaskContext<'_>) -> Result<Self> {
        Ok(MaskedLanguageModeling {
            collator: mlm_collator(mlm, cx)?,
            mask_id: berth_data::masking_tokens(cx.tokenizer)?.mask,
            device: cx.device.clone(),
        })
    }
}

impl Task for MaskedLanguageModeling {
    fn head_kind(&self) -> HeadKind {
        HeadKind::MaskedLm
    }

    fn rows(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Rows> {
        let (ids, _) = prep.tokenize(ds, false)?;
        Ok(Rows::new(Texts { ids }))
    }

    fn head(&self, config: &EncoderConfig, params: &mut Params) -> Result<Box<dyn Head>> {
        Ok(Box::new(MlmHead {
            model: MaskedLm::new(config, params)?,
            mask_id: self.mask_id,
        }))
    }

    fn batch(&self, rows: &Rows, indices: &[usize], epoch: u64) -> Result<TaskBatch> {
        let r = rows.get::<Texts>()?;
        let ex: Vec<Example> = indices.iter().map(|&i| Example::new(&r.ids[i])).collect();
        mlm_batch(&self.collator, &ex, indices, epoch, &self.device)
    }

    fn predict_batch(&self, rows: &Rows, indices: &[usize]) -> Result<TaskBatch> {
        let r = rows.get::<Texts>()?;
        let ex: Vec<Example> = indices.iter().map(|&i| Example::new(&r.ids[i])).collect();
        unmasked_batch(&self.collator, &ex, &self.device)
    }

    fn scorer(&self, _num_classes: usize) -> Box<dyn Scorer> {
        Box::new(LmScorer::default())
    }

    fn predictor(&self, cx: &PredictContext<'_>) -> Result<Box<dyn Predictor>> {
        Ok(Box::new(FillMaskPredictor::new(
            cx.tokenizer,
            self.mask_id,
            cx.top_k,
        )))
    }
}

/// Rows masked for `epoch`, as a batch.
pub(super) fn mlm_batch(
    collator: &MlmCollator,
    rows: &[Example],
    indices: &[usize],
    epoch: u64,
    device: &Device,
) -> Result<TaskBatch> {
    let b = collator.collate(rows, indices, epoch, device)?;
    Ok(TaskBatch {
        input_ids: b.input_ids,
        attention_mask: b.attention_mask,
        token_type_ids: b.token_type_ids,
        doc_offsets: None,
        labels: b.labels,
        next_sentence_label: b.next_sentence_label,
        items: rows.len(),
        real_tokens: b.real_tokens,
    })
}

/// Rows as they are (their own `[MASK]`s), without labels: what prediction reads.
pub(super) fn unmasked_batch(
    collator: &MlmCollator,
    rows: &[Example],
    device: &Device,
) -> Result<TaskBatch> {
    let b = collate(rows, &collator.padding, collator.pad_id, device)?;
    Ok(TaskBatch {
        input_ids: b.input_ids,
        attention_mask: b.attention_mask,
        token_type_ids: b.token_type_ids,
        doc_offsets: None,
        labels: None,
        next_sentence_label: None,
        items: rows.len(),
        real_tokens: b.real_tokens,
    })
}

/// Labels `[B, L]` that score the `[MASK]` positions of `input_ids` (with the mask
/// id as a stand-in label) and nothing else: how prediction asks a head for the
/// logits of the positions to fill. A batch without a `[MASK]` scores its first
/// position alone (not read), so the head projects one row onto the vocabulary, not
/// every position.
pub(super) fn mask_positions(input_ids: &Tensor, mask_id: u32) -> Result<Tensor> {
    let mut is_mask = input_ids.eq(mask_id)?;
    if is_mask
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?
        == 0.0
    {
        let (b, l) = input_ids.dims2()?;
        let mut first = vec![0u8; b * l];
        first[0] = 1;
        is_mask = Tensor::from_vec(first, (b, l), input_ids.device())?;
    }
    let fill = Tensor::full(mask_id as i64, input_ids.shape(), input_ids.device())?;
    let ignore = Tensor::full(
        berth_model::IGNORE_INDEX,
        input_ids.shape(),
        input_ids.device(),
    )?;
    Ok(is_mask.where_cond(&fill, &ignore)?)
}

struct MlmHead {
    model: MaskedLm,
    mask_id: u32,
}

impl Head for MlmHead {
    fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        let ids = &b.input_ids;
        let (types, mask) = (Some(&b.token_type_ids), Some(&b.attention_mask));
        let labels = match &b.labels {
            Some(l) => l.clone(),
            None => mask_positions(ids, self.mask_id)?,
        };
        let (logits, kept) = self
            .model
            .forward_labelled(ids, types, mask, &labels, mode)?;
        let logits = logits.to_dtype(DType::F32)?;
        let parts = match &b.labels {
            Some(_) => vec![self.model.loss(&logits, &kept)?],
            None => Vec::new(),
        };
        let mut out = Output::new(parts, logits)?;
        out.mlm_labels = Some(kept);
        Ok(out)
    }

    fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.model.encoder
    }
}

/// Masked-token accuracy counts: (correct, scored) over labels that are scored.
pub(super) fn mlm_hits(logits: &Tensor, labels: &Tensor) -> Result<(u64, u64)> {
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

/// `mlm_loss`, `perplexity`, `mlm_accuracy` and, for pre-training, `nsp_accuracy`.
#[derive(Default)]
pub struct LmScorer(LmCounts);

impl Scorer for LmScorer {
    fn add(&mut self, batch: &TaskBatch, out: &Output) -> Result<()> {
        let lm = &mut self.0;
        let labels = match &out.mlm_labels {
            Some(l) => l,
            None => batch.labels()?,
        };
        let (c, k) = mlm_hits(&out.logits, labels)?;
        lm.mlm_correct += c;
        lm.mlm_tokens += k;
        // The MLM part alone, for perplexity.
        let mlm_loss = match out.parts.first() {
            Some(p) => p.to_scalar::<f32>()? as f64,
            None => 0.0,
        };
        lm.mlm_loss_sum += mlm_loss * k as f64;
        if let (Some(nsp), Some(next)) = (&out.nsp_logits, &batch.next_sentence_label) {
            let p: Vec<i64> = nsp.to_vec2::<f32>()?.iter().map(|r| argmax(r)).collect();
            let l = next.to_vec1::<i64>()?;
            lm.nsp_correct += p.iter().zip(&l).filter(|(a, b)| a == b).count() as u64;
            lm.nsp_total += l.len() as u64;
        }
        Ok(())
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        self.0.metrics()
    }

    fn state(&self) -> Vec<f64> {
        let c = &self.0;
        vec![
            c.mlm_loss_sum,
            c.mlm_tokens as f64,
            c.mlm_correct as f64,
            c.nsp_correct as f64,
            c.nsp_total as f64,
        ]
    }

    fn merge(&mut self, state: &[f64]) -> Result<()> {
        let &[loss, tokens, correct, nsp_correct, nsp_total] = state else {
            return Err(super::bad_state("language-model", state.len()));
        };
        let c = &mut self.0;
        c.mlm_loss_sum += loss;
        c.mlm_tokens += tokens as u64;
        c.mlm_correct += correct as u64;
        c.nsp_correct += nsp_correct as u64;
        c.nsp_total += nsp_total as u64;
        Ok(())
    }
}

/// HF fill-mask: per `[MASK]` of a row (in order), its token position and the
/// `top_k` most likely tokens with their probabilities. Columns `mask_positions`
/// (`List<Int64>`), `fill_token_ids` (`List<List<UInt32>>`), `fill_tokens`
/// (`List<List<Utf8>>`) and `fill_scores` (`List<List<Float32>>`); pre-training adds the
/// next-sentence columns.
pub struct FillMaskPredictor {
    vocab: Vec<String>,
    mask_id: u32,
    top_k: usize,
    positions: ListBuilder<Int64Builder>,
    ids: ListBuilder<ListBuilder<UInt32Builder>>,
    tokens: ListBuilder<ListBuilder<StringBuilder>>,
    scores: ListBuilder<ListBuilder<Float32Builder>>,
}

impl FillMaskPredictor {
    pub fn new(tokenizer: &Tokenizer, mask_id: u32, top_k: usize) -> Self {
        let vocab = (0..tokenizer.get_vocab_size(true) as u32)
            .map(|id| tokenizer.id_to_token(id).unwrap_or_default())
            .collect();
        FillMaskPredictor {
            vocab,
            mask_id,
            top_k: top_k.max(1),
            positions: ListBuilder::new(Int64Builder::new()),
            ids: ListBuilder::new(ListBuilder::new(UInt32Builder::new())),
            tokens: ListBuilder::new(ListBuilder::new(StringBuilder::new())),
            scores: ListBuilder::new(ListBuilder::new(Float32Builder::new())),
        }
    }
}

impl Predictor for FillMaskPredictor {
    fn add(&mut self, batch: &TaskBatch, out: &Output) -> Result<()> {
        let ids = batch.input_ids.to_vec2::<u32>()?;
        let masks: usize = ids.iter().flatten().filter(|&&i| i == self.mask_id).count();
        // The head scored the [MASK] positions in row-major order (every position
        // when there is none, which then is not read).
        let probs = if masks > 0 {
            candle_nn::ops::softmax_last_dim(&out.logits)?.to_vec2::<f32>()?
        } else {
            Vec::new()
        };
        let mut next = probs.iter();
        for row in &ids {
            for (pos, &id) in row.iter().enumerate() {
                if id != self.mask_id {
                    continue;
                }
                let p = next.next().ok_or_else(|| {
                    TrainError::internal("fewer masked logits than [MASK] tokens")
                })?;
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
                order.truncate(self.top_k);
                self.positions.values().append_value(pos as i64);
                for &k in &order {
                    self.ids.values().values().append_value(k as u32);
                    self.tokens
                        .values()
                        .values()
                        .append_value(self.vocab.get(k).map_or("", String::as_str));
                    self.scores.values().values().append_value(p[k]);
                }
                self.ids.values().append(true);
                self.tokens.values().append(true);
                self.scores.values().append(true);
            }
            self.positions.append(true);
            self.ids.append(true);
            self.tokens.append(true);
            self.scores.append(true);
        }
        Ok(())
    }

    fn columns(mut self: Box<Self>) -> Result<Vec<(String, ArrayRef)>> {
        Ok(vec![
            ("mask_positions".into(), Arc::new(self.positions.finish())),
            ("fill_token_ids".into(), Arc::new(self.ids.finish())),
            ("fill_tokens".into(), Arc::new(self.tokens.finish())),
            ("fill_scores".into(), Arc::new(self.scores.finish())),
        ])
    }
}
