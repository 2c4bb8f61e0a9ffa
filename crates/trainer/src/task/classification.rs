//! Sequence classification (HF `BertForSequenceClassification`): one text, or a text
//! pair, per row, truncated to `data.max_length`, and its class.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_collate::{Example, Padding, collate};
use berth_data::Dataset;
use berth_data::arrow::array::{
    ArrayRef, Float32Array, Float32Builder, Int64Array, ListBuilder, StringArray,
};
use berth_model::{Encoder, EncoderConfig, HeadKind, Mode, Params, SequenceClassifier};
use candle_core::{DType, Device};

use super::{Head, PredictContext, Predictor, Scorer, Task, TaskContext, argmax};
use crate::batch::{Output, TaskBatch};
use crate::data::{Prepare, RowSet, Rows};
use crate::error::Result;
use crate::metrics::classification;

/// One (possibly paired) sequence per row, and its class (`labels` is empty when
/// the rows are unlabelled, for prediction).
#[derive(Clone, Debug)]
pub struct Sequences {
    pub ids: Vec<Vec<u32>>,
    pub types: Vec<Vec<u8>>,
    pub labels: Vec<i64>,
}

impl RowSet for Sequences {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn lengths(&self) -> Vec<usize> {
        self.ids.iter().map(Vec::len).collect()
    }
    fn first(&self, n: usize) -> Rows {
        Rows::new(Sequences {
            ids: self.ids[..n].to_vec(),
            types: self.types[..n].to_vec(),
            labels: self.labels.iter().take(n).copied().collect(),
        })
    }
}

/// The task; see the module docs.
pub struct Classification {
    padding: Padding,
    pad_id: u32,
    device: Device,
}

impl Classification {
    pub fn new(cx: &TaskContext<'_>) -> Result<Self> {
        Ok(Classification {
            padding: cx.padding,
            pad_id: cx.pad_id,
            device: cx.device.clone(),
        })
    }
}

impl Task for Classification {
    fn head_kind(&self) -> HeadKind {
        HeadKind::SequenceClassification
    }

    fn classifies(&self) -> bool {
        true
    }

    fn rows(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Rows> {
        let (ids, types) = prep.tokenize(ds, true)?;
        Ok(Rows::new(Sequences {
            ids,
            types,
            labels: prep.labels(ds)?,
        }))
    }

    fn head(&self, config: &EncoderConfig, params: &mut Params) -> Result<Box<dyn Head>> {
        Ok(Box::new(SequenceHead(SequenceClassifier::new(
            config, params,
        )?)))
    }

    fn batch(&self, rows: &Rows, indices: &[usize], _epoch: u64) -> Result<TaskBatch> {
        let r = rows.get::<Sequences>()?;
        let labelled = !r.labels.is_empty();
        let ex: Vec<Example> = indices
            .iter()
            .map(|&i| {
                let e = Example::new(&r.ids[i]).with_token_types(&r.types[i]);
                if labelled {
                    e.with_label(r.labels[i])
                } else {
                    e
                }
            })
            .collect();
        let b = collate(&ex, &self.padding, self.pad_id, &self.device)?;
        Ok(TaskBatch {
            input_ids: b.input_ids,
            attention_mask: b.attention_mask,
            token_type_ids: b.token_type_ids,
            doc_offsets: None,
            labels: b.labels,
            next_sentence_label: None,
            items: indices.len(),
            real_tokens: b.real_tokens,
        })
    }

    fn scorer(&self, num_classes: usize) -> Box<dyn Scorer> {
        Box::new(ClassScorer::new(num_classes))
    }

    fn predictor(&self, cx: &PredictContext<'_>) -> Result<Box<dyn Predictor>> {
        Ok(Box::new(ClassPredictor::new(cx.class_names.clone())))
    }
}

struct SequenceHead(SequenceClassifier);

/// A classifier's output: its logits in f32, and its loss when the batch has labels.
pub(super) fn class_output(
    logits: candle_core::Tensor,
    labels: Option<&candle_core::Tensor>,
    loss: impl Fn(&candle_core::Tensor, &candle_core::Tensor) -> Result<candle_core::Tensor>,
) -> Result<Output> {
    let logits = logits.to_dtype(DType::F32)?;
    let parts = match labels {
        Some(labels) => vec![loss(&logits, labels)?],
        None => Vec::new(),
    };
    Output::new(parts, logits)
}

impl Head for SequenceHead {
    fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        let (ids, types, mask) = (
            &b.input_ids,
            Some(&b.token_type_ids),
            Some(&b.attention_mask),
        );
        let logits = self.0.forward(ids, types, mask, mode)?;
        class_output(logits, b.labels.as_ref(), |l, y| Ok(self.0.loss(l, y)?))
    }

    fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.0.encoder
    }
}

/// Accuracy, precision, recall, F1 and MCC of the argmax class (classification and
/// chunk classification).
pub struct ClassScorer {
    preds: Vec<i64>,
    labels: Vec<i64>,
    num_classes: usize,
}

impl ClassScorer {
    pub fn new(num_classes: usize) -> Self {
        ClassScorer {
            preds: Vec::new(),
            labels: Vec::new(),
            num_classes,
        }
    }
}

impl Scorer for ClassScorer {
    fn add(&mut self, batch: &TaskBatch, out: &Output) -> Result<()> {
        self.preds
            .extend(out.logits.to_vec2::<f32>()?.iter().map(|r| argmax(r)));
        self.labels.extend(batch.labels()?.to_vec1::<i64>()?);
        Ok(())
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        classification(&self.preds, &self.labels, self.num_classes)
    }

    fn details(&self, class_names: &[String]) -> Option<String> {
        Some(confusion_markdown(
            &self.preds,
            &self.labels,
            self.num_classes.max(2),
            class_names,
        ))
    }

    /// `[n, preds.., labels..]` (class ids are exact in f64).
    fn state(&self) -> Vec<f64> {
        let mut v = vec![self.preds.len() as f64];
        v.extend(self.preds.iter().chain(&self.labels).map(|&x| x as f64));
        v
    }

    fn merge(&mut self, state: &[f64]) -> Result<()> {
        let n = state.first().map_or(0, |&n| n as usize);
        if state.len() != 1 + 2 * n {
            return Err(super::bad_state("classification", state.len()));
        }
        self.preds.extend(state[1..=n].iter().map(|&x| x as i64));
        self.labels.extend(state[1 + n..].iter().map(|&x| x as i64));
        Ok(())
    }
}

/// The confusion matrix (rows: true class, columns: predicted) and each class's
/// precision, recall, F1 and support, as markdown tables.
pub fn confusion_markdown(
    preds: &[i64],
    labels: &[i64],
    k: usize,
    class_names: &[String],
) -> String {
    use std::fmt::Write as _;
    let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut cm = vec![vec![0u64; k]; k];
    for (&p, &l) in preds.iter().zip(labels) {
        if (0..k as i64).contains(&p) && (0..k as i64).contains(&l) {
            cm[l as usize][p as usize] += 1;
        }
    }
    let mut s = String::from("| true \\ predicted |");
    for c in 0..k {
        let _ = write!(s, " {} |", name(c));
    }
    s.push_str("\n| --- |");
    s.push_str(&" ---: |".repeat(k));
    s.push('\n');
    for (l, row) in cm.iter().enumerate() {
        let _ = write!(s, "| {} |", name(l));
        for v in row {
            let _ = write!(s, " {v} |");
        }
        s.push('\n');
    }
    s.push_str(
        "\n| class | precision | recall | f1 | support |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    for (c, row) in cm.iter().enumerate() {
        let tp = row[c] as f64;
        let predicted: f64 = cm.iter().map(|r| r[c] as f64).sum();
        let support: u64 = row.iter().sum();
        let p = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let r = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        let _ = writeln!(s, "| {} | {p:.4} | {r:.4} | {f:.4} | {support} |", name(c));
    }
    s
}

/// `logits`, `label` (argmax) and, with class names, `label_name` per row.
pub struct ClassPredictor {
    logits: Vec<Vec<f32>>,
    class_names: Vec<String>,
}

impl ClassPredictor {
    pub fn new(class_names: Vec<String>) -> Self {
        ClassPredictor {
            logits: Vec::new(),
            class_names,
        }
    }
}

impl Predictor for ClassPredictor {
    fn add(&mut self, _batch: &TaskBatch, out: &Output) -> Result<()> {
        self.logits.extend(out.logits.to_vec2::<f32>()?);
        Ok(())
    }

    fn columns(self: Box<Self>) -> Result<Vec<(String, ArrayRef)>> {
        let labels: Vec<i64> = self.logits.iter().map(|l| argmax(l)).collect();
        let mut builder = ListBuilder::new(Float32Builder::new());
        for l in &self.logits {
            builder.values().append_slice(l);
            builder.append(true);
        }
        // softmax per row (f64 for the sum), as pipeline()'s scores.
        let probs: Vec<Vec<f32>> = self
            .logits
            .iter()
            .map(|l| {
                let max = l.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let e: Vec<f64> = l.iter().map(|&v| ((v - max) as f64).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.iter().map(|&v| (v / sum) as f32).collect()
            })
            .collect();
        let mut prob_builder = ListBuilder::new(Float32Builder::new());
        for p in &probs {
            prob_builder.values().append_slice(p);
            prob_builder.append(true);
        }
        let score: Float32Array = probs
            .iter()
            .zip(&labels)
            .map(|(p, &l)| p.get(l as usize).copied())
            .collect();
        let mut columns: Vec<(String, ArrayRef)> = vec![
            ("logits".into(), Arc::new(builder.finish())),
            ("probabilities".into(), Arc::new(prob_builder.finish())),
            ("label".into(), Arc::new(Int64Array::from(labels.clone()))),
            ("score".into(), Arc::new(score)),
        ];
        if !self.class_names.is_empty() {
            let names: StringArray = labels
                .iter()
                .map(|&i| self.class_names.get(i as usize).map(String::as_str))
                .collect();
            columns.push(("label_name".into(), Arc::new(names)));
        }
        Ok(columns)
    }
}
