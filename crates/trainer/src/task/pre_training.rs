//! BERT pre-training (HF `BertForPreTraining`): sentence pairs built from documents
//! (`TextDatasetForNextSentencePrediction`), masked afresh every epoch, with the MLM
//! and next-sentence losses. Prediction reads a text (and `data.pair_column`) as
//! given, fills its `[MASK]`s and says whether B follows A.

use std::sync::Arc;

use berth_collate::{Example, MlmCollator};
use berth_data::Dataset;
use berth_data::arrow::array::{Array, ArrayRef, Float32Builder, Int64Array, ListBuilder};
use berth_data::arrow::compute::cast;
use berth_data::arrow::datatypes::{DataType, UInt8Type, UInt32Type};
use berth_data::berth_masking::NspConfig;
use berth_model::{Encoder, EncoderConfig, HeadKind, Mode, Params};
use candle_core::{DType, Device};

use super::masked_lm::{mask_positions, mlm_batch, mlm_collator, unmasked_batch};
use super::{
    FillMaskPredictor, Head, LmScorer, PredictContext, Predictor, Scorer, Task, TaskContext, argmax,
};
use crate::batch::{Output, TaskBatch};
use crate::config::MlmConfig;
use crate::data::{Prepare, RowSet, Rows, Stage, arrow_err};
use crate::error::{Result, TrainError};

/// Sentence pairs to mask, with `next_sentence_label` (empty when predicting).
#[derive(Clone, Debug)]
pub struct Pairs {
    pub ids: Vec<Vec<u32>>,
    pub types: Vec<Vec<u8>>,
    pub next: Vec<i64>,
}

impl RowSet for Pairs {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn lengths(&self) -> Vec<usize> {
        self.ids.iter().map(Vec::len).collect()
    }
    fn first(&self, n: usize) -> Rows {
        Rows::new(Pairs {
            ids: self.ids[..n].to_vec(),
            types: self.types[..n].to_vec(),
            next: self.next.iter().take(n).copied().collect(),
        })
    }
}

/// The task; see the module docs.
pub struct PreTraining {
    collator: MlmCollator,
    next_probability: f64,
    mask_id: u32,
    device: Device,
}

impl PreTraining {
    pub fn new(mlm: &MlmConfig, cx: &TaskContext<'_>) -> Result<Self> {
        Ok(PreTraining {
            collator: mlm_collator(mlm, cx)?,
            next_probability: mlm.next_probability,
            mask_id: berth_data::masking_tokens(cx.tokenizer)?.mask,
            device: cx.device.clone(),
        })
    }

    fn examples<'a>(r: &'a Pairs, indices: &[usize]) -> Vec<Example<'a>> {
        indices
            .iter()
            .map(|&i| Example {
                next_sentence_label: r.next.get(i).copied(),
                ..Example::new(&r.ids[i]).with_token_types(&r.types[i])
            })
            .collect()
    }
}

impl Task for PreTraining {
    fn head_kind(&self) -> HeadKind {
        HeadKind::PreTraining
    }

    fn rows(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Rows> {
        let d = prep.data;
        if prep.stage == Stage::Predict {
            let (ids, types) = prep.tokenize(ds, true)?;
            return Ok(Rows::new(Pairs {
                ids,
                types,
                next: Vec::new(),
            }));
        }
        let nsp = NspConfig {
            max_length: prep.max_length(),
            next_probability: self.next_probability,
            ..NspConfig::default()
        };
        let t = ds.nsp_pairs(&d.text_column, prep.tokenizer, &nsp, prep.seed)?;
        let next = t.column("next_sentence_label")?;
        let next = cast(&next, &DataType::Int64).map_err(|e| arrow_err(ds, e))?;
        let next = next
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| {
                TrainError::internal("next_sentence_label is not an Int64 column after its cast")
            })?
            .values()
            .to_vec();
        Ok(Rows::new(Pairs {
            ids: t.list_rows::<UInt32Type>("input_ids")?,
            types: t.list_rows::<UInt8Type>("token_type_ids")?,
            next,
        }))
    }

    fn head(&self, config: &EncoderConfig, params: &mut Params) -> Result<Box<dyn Head>> {
        Ok(Box::new(PreTrainingHead {
            model: berth_model::PreTraining::new(config, params)?,
            mask_id: self.mask_id,
        }))
    }

    fn batch(&self, rows: &Rows, indices: &[usize], epoch: u64) -> Result<TaskBatch> {
        let r = rows.get::<Pairs>()?;
        let ex = Self::examples(r, indices);
        mlm_batch(&self.collator, &ex, indices, epoch, &self.device)
    }

    fn predict_batch(&self, rows: &Rows, indices: &[usize]) -> Result<TaskBatch> {
        let r = rows.get::<Pairs>()?;
        let ex = Self::examples(r, indices);
        unmasked_batch(&self.collator, &ex, &self.device)
    }

    fn scorer(&self, _num_classes: usize) -> Box<dyn Scorer> {
        Box::new(LmScorer::default())
    }

    fn predictor(&self, cx: &PredictContext<'_>) -> Result<Box<dyn Predictor>> {
        Ok(Box::new(NextSentencePredictor {
            fills: FillMaskPredictor::new(cx.tokenizer, self.mask_id, cx.top_k),
            logits: Vec::new(),
        }))
    }
}

struct PreTrainingHead {
    model: berth_model::PreTraining,
    mask_id: u32,
}

impl Head for PreTrainingHead {
    fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        let ids = &b.input_ids;
        let (types, mask) = (Some(&b.token_type_ids), Some(&b.attention_mask));
        let labels = match &b.labels {
            Some(l) => l.clone(),
            None => mask_positions(ids, self.mask_id)?,
        };
        let (logits, kept, nsp) = self
            .model
            .forward_labelled(ids, types, mask, &labels, mode)?;
        let (logits, nsp) = (logits.to_dtype(DType::F32)?, nsp.to_dtype(DType::F32)?);
        let parts = match (&b.labels, &b.next_sentence_label) {
            (Some(_), Some(next)) => {
                let (mlm, nsp_loss) = self.model.loss_parts(&logits, &nsp, &kept, next)?;
                vec![mlm, nsp_loss]
            }
            (Some(_), None) => {
                return Err(TrainError::internal(
                    "pre-training batches need next_sentence_label",
                ));
            }
            (None, _) => Vec::new(),
        };
        let mut out = Output::new(parts, logits)?;
        out.mlm_labels = Some(kept);
        out.nsp_logits = Some(nsp);
        Ok(out)
    }

    fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.model.encoder
    }
}

/// Fill-mask columns plus `nsp_logits` and `next_sentence_label` (argmax: 0 when B
/// follows A, 1 when it does not, as HF's labels).
struct NextSentencePredictor {
    fills: FillMaskPredictor,
    logits: Vec<Vec<f32>>,
}

impl Predictor for NextSentencePredictor {
    fn add(&mut self, batch: &TaskBatch, out: &Output) -> Result<()> {
        self.fills.add(batch, out)?;
        let nsp = out
            .nsp_logits
            .as_ref()
            .ok_or_else(|| TrainError::internal("a pre-training output without NSP"))?;
        self.logits.extend(nsp.to_vec2::<f32>()?);
        Ok(())
    }

    fn columns(self: Box<Self>) -> Result<Vec<(String, ArrayRef)>> {
        let NextSentencePredictor { fills, logits } = *self;
        let mut columns = Box::new(fills).columns()?;
        let mut builder = ListBuilder::new(Float32Builder::new());
        for l in &logits {
            builder.values().append_slice(l);
            builder.append(true);
        }
        let next: Int64Array = logits.iter().map(|l| Some(argmax(l))).collect();
        columns.push(("nsp_logits".into(), Arc::new(builder.finish())));
        columns.push(("next_sentence_label".into(), Arc::new(next)));
        Ok(columns)
    }
}
