//! Multi-label classification (HF `BertForSequenceClassification` with
//! `problem_type = "multi_label_classification"`): each text has any number of
//! classes; sigmoid per class, binary cross-entropy, a class is predicted when its
//! probability reaches `[multi_label] threshold`.
//!
//! Labels are a list of class names per row (`["sports", "politics"]`) or a 0/1
//! vector with one entry per class.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_collate::{Example, Padding, collate};
use berth_data::Dataset;
use berth_data::arrow::array::{
    Array, ArrayRef, Float32Builder, GenericListArray, ListBuilder, OffsetSizeTrait, StringArray,
    StringBuilder,
};
use berth_data::arrow::compute::cast;
use berth_data::arrow::datatypes::DataType;
use berth_model::{Encoder, EncoderConfig, HeadKind, Mode, Params, SequenceClassifier};
use candle_core::{Device, Tensor};

use super::Documents;
use super::chunk_classification::{Chunker, PooledLoss};
use super::classification::class_output;
use super::{Head, PredictContext, Predictor, Scorer, Task, TaskContext};
use crate::batch::{Output, TaskBatch};
use crate::config::{ChunkingConfig, MultiLabelConfig};
use crate::data::{Prepare, RowSet, Rows, Stage};
use crate::error::{Result, TrainError};

/// One (possibly paired) sequence per row and its classes as a 0/1 vector (`labels`
/// is empty when the rows are unlabelled, for prediction).
#[derive(Clone, Debug)]
pub struct LabelledSequences {
    pub ids: Vec<Vec<u32>>,
    pub types: Vec<Vec<u8>>,
    pub labels: Vec<Vec<f32>>,
}

impl RowSet for LabelledSequences {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn lengths(&self) -> Vec<usize> {
        self.ids.iter().map(Vec::len).collect()
    }
    fn first(&self, n: usize) -> Rows {
        Rows::new(LabelledSequences {
            ids: self.ids[..n].to_vec(),
            types: self.types[..n].to_vec(),
            labels: self.labels.iter().take(n).cloned().collect(),
        })
    }
}

/// The task; see the module docs.
pub struct MultiLabelClassification {
    threshold: f64,
    padding: Padding,
    pad_id: u32,
    device: Device,
    /// Long texts: rows are [`Documents`] and the head pools chunk logits.
    chunker: Option<Chunker>,
}

impl MultiLabelClassification {
    pub fn new(
        config: &MultiLabelConfig,
        chunking: Option<&ChunkingConfig>,
        cx: &TaskContext<'_>,
    ) -> Result<Self> {
        if !(config.threshold > 0.0 && config.threshold < 1.0) {
            return Err(TrainError::Config(format!(
                "multi_label.threshold must be in (0, 1), not {}",
                config.threshold
            )));
        }
        Ok(MultiLabelClassification {
            threshold: config.threshold,
            padding: cx.padding,
            pad_id: cx.pad_id,
            device: cx.device.clone(),
            chunker: chunking.map(|c| Chunker::new(c.clone(), cx)).transpose()?,
        })
    }
}

impl Task for MultiLabelClassification {
    fn head_kind(&self) -> HeadKind {
        HeadKind::SequenceClassification
    }

    fn classifies(&self) -> bool {
        true
    }

    fn problem_type(&self) -> Option<&'static str> {
        Some("multi_label_classification")
    }

    fn class_names(&self, ds: &Dataset, column: &str) -> Result<Vec<String>> {
        match label_lists(ds, column)? {
            LabelLists::Names(rows) => {
                let all: BTreeSet<String> = rows.into_iter().flatten().collect();
                Ok(all.into_iter().collect())
            }
            LabelLists::Vectors(rows) => {
                let k = rows.first().map_or(0, Vec::len);
                Ok((0..k).map(|i| i.to_string()).collect())
            }
        }
    }

    fn rows(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Rows> {
        let labels = match prep.stage {
            Stage::Predict => Vec::new(),
            _ => multi_hot(ds, &prep.data.label_column, prep.class_names)?,
        };
        if let Some(chunker) = &self.chunker {
            return Ok(Rows::new(Documents {
                chunks: chunker.chunks(ds, prep)?,
                labels,
            }));
        }
        let (ids, types) = prep.tokenize(ds, true)?;
        Ok(Rows::new(LabelledSequences { ids, types, labels }))
    }

    fn head(&self, config: &EncoderConfig, params: &mut Params) -> Result<Box<dyn Head>> {
        if let Some(chunker) = &self.chunker {
            return chunker.head(config, params, PooledLoss::MultiLabel);
        }
        Ok(Box::new(MultiLabelHead(SequenceClassifier::new(
            config, params,
        )?)))
    }

    fn train_batch(&self, rows: &Rows, indices: &[usize], epoch: u64) -> Result<TaskBatch> {
        match &self.chunker {
            Some(chunker) => chunker.batch::<Vec<f32>>(rows, indices, Some(epoch)),
            None => self.batch(rows, indices, epoch),
        }
    }

    fn batch(&self, rows: &Rows, indices: &[usize], _epoch: u64) -> Result<TaskBatch> {
        if let Some(chunker) = &self.chunker {
            return chunker.batch::<Vec<f32>>(rows, indices, None);
        }
        let r = rows.get::<LabelledSequences>()?;
        let ex: Vec<Example> = indices
            .iter()
            .map(|&i| Example::new(&r.ids[i]).with_token_types(&r.types[i]))
            .collect();
        let b = collate(&ex, &self.padding, self.pad_id, &self.device)?;
        let labels = if r.labels.is_empty() {
            None
        } else {
            let k = r.labels[indices[0]].len();
            let flat: Vec<f32> = indices.iter().flat_map(|&i| r.labels[i].clone()).collect();
            Some(Tensor::from_vec(flat, (indices.len(), k), &self.device)?)
        };
        Ok(TaskBatch {
            input_ids: b.input_ids,
            attention_mask: b.attention_mask,
            token_type_ids: b.token_type_ids,
            doc_offsets: None,
            labels,
            next_sentence_label: None,
            items: indices.len(),
            real_tokens: b.real_tokens,
        })
    }

    fn scorer(&self, _num_classes: usize) -> Box<dyn Scorer> {
        Box::new(MultiLabelScorer {
            threshold: self.threshold,
            predicted: Vec::new(),
            truth: Vec::new(),
        })
    }

    fn predictor(&self, cx: &PredictContext<'_>) -> Result<Box<dyn Predictor>> {
        Ok(Box::new(MultiLabelPredictor {
            threshold: self.threshold,
            class_names: cx.class_names.clone(),
            probs: Vec::new(),
        }))
    }
}

struct MultiLabelHead(SequenceClassifier);

impl Head for MultiLabelHead {
    fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        let (ids, types, mask) = (
            &b.input_ids,
            Some(&b.token_type_ids),
            Some(&b.attention_mask),
        );
        let logits = self.0.forward(ids, types, mask, mode)?;
        class_output(logits, b.labels.as_ref(), |l, y| {
            Ok(berth_model::bce_with_logits(l, y)?)
        })
    }

    fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.0.encoder
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Exact-match accuracy (every class right), micro and macro precision, recall and
/// F1 over classes, as scikit-learn's `average="micro"`/`"macro"` on the 0/1 matrix.
pub fn multi_label_metrics(predicted: &[Vec<bool>], truth: &[Vec<bool>]) -> BTreeMap<String, f64> {
    let k = truth.first().map_or(0, Vec::len);
    let (mut tp, mut fp, mut fnn) = (vec![0f64; k], vec![0f64; k], vec![0f64; k]);
    let mut exact = 0usize;
    for (p, t) in predicted.iter().zip(truth) {
        if p == t {
            exact += 1;
        }
        for c in 0..k {
            match (p[c], t[c]) {
                (true, true) => tp[c] += 1.0,
                (true, false) => fp[c] += 1.0,
                (false, true) => fnn[c] += 1.0,
                _ => {}
            }
        }
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let f1 = |p: f64, r: f64| {
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    };
    let (stp, sfp, sfn): (f64, f64, f64) = (tp.iter().sum(), fp.iter().sum(), fnn.iter().sum());
    let (mp, mr) = (ratio(stp, stp + sfp), ratio(stp, stp + sfn));
    let per: Vec<(f64, f64, f64)> = (0..k)
        .map(|c| {
            let (p, r) = (ratio(tp[c], tp[c] + fp[c]), ratio(tp[c], tp[c] + fnn[c]));
            (p, r, f1(p, r))
        })
        .collect();
    let macro_of =
        |f: fn(&(f64, f64, f64)) -> f64| per.iter().map(f).sum::<f64>() / k.max(1) as f64;
    let mut m = BTreeMap::new();
    m.insert(
        "exact_match".into(),
        ratio(exact as f64, predicted.len() as f64),
    );
    m.insert("precision_micro".into(), mp);
    m.insert("recall_micro".into(), mr);
    m.insert("f1_micro".into(), f1(mp, mr));
    m.insert("precision_macro".into(), macro_of(|x| x.0));
    m.insert("recall_macro".into(), macro_of(|x| x.1));
    m.insert("f1_macro".into(), macro_of(|x| x.2));
    m
}

struct MultiLabelScorer {
    threshold: f64,
    predicted: Vec<Vec<bool>>,
    truth: Vec<Vec<bool>>,
}

impl Scorer for MultiLabelScorer {
    fn add(&mut self, batch: &TaskBatch, out: &Output) -> Result<()> {
        for row in out.logits.to_vec2::<f32>()? {
            self.predicted.push(
                row.iter()
                    .map(|&x| sigmoid(x) as f64 >= self.threshold)
                    .collect(),
            );
        }
        for row in batch.labels()?.to_vec2::<f32>()? {
            self.truth.push(row.iter().map(|&y| y >= 0.5).collect());
        }
        Ok(())
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        multi_label_metrics(&self.predicted, &self.truth)
    }

    /// `[rows, classes, predicted.., truth..]` as 0/1, row by row.
    fn state(&self) -> Vec<f64> {
        let k = self.predicted.first().map_or(0, Vec::len);
        let mut v = vec![self.predicted.len() as f64, k as f64];
        for rows in [&self.predicted, &self.truth] {
            v.extend(rows.iter().flatten().map(|&b| f64::from(u8::from(b))));
        }
        v
    }

    fn merge(&mut self, state: &[f64]) -> Result<()> {
        let (n, k) = match state {
            [n, k, ..] => (*n as usize, *k as usize),
            _ => return Err(super::bad_state("multi-label", state.len())),
        };
        if state.len() != 2 + 2 * n * k || (k == 0 && n > 0) {
            return Err(super::bad_state("multi-label", state.len()));
        }
        let rows = |part: &[f64]| -> Vec<Vec<bool>> {
            part.chunks(k.max(1))
                .map(|r| r.iter().map(|&x| x != 0.0).collect())
                .collect()
        };
        self.predicted.extend(rows(&state[2..2 + n * k]));
        self.truth.extend(rows(&state[2 + n * k..]));
        Ok(())
    }
}

/// `logits`, `probabilities` (sigmoid), and the classes at or above the threshold:
/// `labels` (their names) with their `scores`.
struct MultiLabelPredictor {
    threshold: f64,
    class_names: Vec<String>,
    probs: Vec<Vec<f32>>,
}

impl Predictor for MultiLabelPredictor {
    fn add(&mut self, _batch: &TaskBatch, out: &Output) -> Result<()> {
        for row in out.logits.to_vec2::<f32>()? {
            self.probs.push(row.into_iter().map(sigmoid).collect());
        }
        Ok(())
    }

    fn columns(self: Box<Self>) -> Result<Vec<(String, ArrayRef)>> {
        let mut probs = ListBuilder::new(Float32Builder::new());
        let mut names = ListBuilder::new(StringBuilder::new());
        let mut scores = ListBuilder::new(Float32Builder::new());
        for row in &self.probs {
            probs.values().append_slice(row);
            probs.append(true);
            for (c, &p) in row.iter().enumerate() {
                if p as f64 >= self.threshold {
                    let name = self.class_names.get(c).cloned().unwrap_or(c.to_string());
                    names.values().append_value(name);
                    scores.values().append_value(p);
                }
            }
            names.append(true);
            scores.append(true);
        }
        Ok(vec![
            ("probabilities".into(), Arc::new(probs.finish())),
            ("labels".into(), Arc::new(names.finish())),
            ("scores".into(), Arc::new(scores.finish())),
        ])
    }
}

/// A label column's rows: names, or 0/1 vectors.
enum LabelLists {
    Names(Vec<Vec<String>>),
    Vectors(Vec<Vec<f32>>),
}

fn bad(ds: &Dataset, column: &str, row: usize, message: String) -> TrainError {
    TrainError::Data(ds.value_error(row, column, message))
}

fn label_lists(ds: &Dataset, column: &str) -> Result<LabelLists> {
    let col = ds.column(column)?;
    match col.data_type() {
        DataType::List(_) => lists::<i32>(ds, column, &col),
        DataType::LargeList(_) => lists::<i64>(ds, column, &col),
        other => Err(bad(
            ds,
            column,
            0,
            format!(
                "multi-label labels must be a list of class names or a 0/1 vector, not {other}"
            ),
        )),
    }
}

fn lists<O: OffsetSizeTrait>(ds: &Dataset, column: &str, col: &ArrayRef) -> Result<LabelLists> {
    let list = col
        .as_any()
        .downcast_ref::<GenericListArray<O>>()
        .ok_or_else(|| bad(ds, column, 0, "not a list".into()))?;
    let text = matches!(
        list.value_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    let mut names = Vec::new();
    let mut vectors = Vec::new();
    for row in 0..list.len() {
        if list.is_null(row) {
            return Err(bad(ds, column, row, "missing labels".into()));
        }
        let values = list.value(row);
        if text {
            let v =
                cast(&values, &DataType::Utf8).map_err(|e| bad(ds, column, row, e.to_string()))?;
            let s = v
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| bad(ds, column, row, "not text".into()))?;
            names.push(
                s.iter()
                    .map(|x| x.unwrap_or_default().to_string())
                    .collect(),
            );
        } else {
            let v = cast(&values, &DataType::Float32)
                .map_err(|e| bad(ds, column, row, format!("labels are not 0/1 values ({e})")))?;
            let f = v
                .as_any()
                .downcast_ref::<berth_data::arrow::array::Float32Array>()
                .ok_or_else(|| bad(ds, column, row, "not numbers".into()))?;
            let row_values: Vec<f32> = f.iter().map(|x| x.unwrap_or(f32::NAN)).collect();
            if let Some(x) = row_values.iter().find(|&&x| x != 0.0 && x != 1.0) {
                return Err(bad(
                    ds,
                    column,
                    row,
                    format!("label value {x} is not 0 or 1"),
                ));
            }
            vectors.push(row_values);
        }
    }
    Ok(if text {
        LabelLists::Names(names)
    } else {
        LabelLists::Vectors(vectors)
    })
}

/// Each row's classes as a 0/1 vector over `class_names`; a name outside them, or a
/// vector of another length, is an error naming the file, row and column.
fn multi_hot(ds: &Dataset, column: &str, class_names: &[String]) -> Result<Vec<Vec<f32>>> {
    let k = class_names.len();
    match label_lists(ds, column)? {
        LabelLists::Names(rows) => rows
            .into_iter()
            .enumerate()
            .map(|(row, names)| {
                let mut v = vec![0f32; k];
                for n in names {
                    let c = class_names.iter().position(|x| *x == n).ok_or_else(|| {
                        bad(
                            ds,
                            column,
                            row,
                            format!("label '{n}' is not one of {class_names:?}"),
                        )
                    })?;
                    v[c] = 1.0;
                }
                Ok(v)
            })
            .collect(),
        LabelLists::Vectors(rows) => rows
            .into_iter()
            .enumerate()
            .map(|(row, v)| {
                if v.len() == k {
                    Ok(v)
                } else {
                    Err(bad(
                        ds,
                        column,
                        row,
                        format!("{} label values, the model has {k} classes", v.len()),
                    ))
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        // truth: [1,0,1], [0,1,0], [1,1,0]; predicted: [1,0,0], [0,1,0], [1,0,1]
        let t = |v: [u8; 3]| v.iter().map(|&x| x == 1).collect::<Vec<bool>>();
        let truth = [t([1, 0, 1]), t([0, 1, 0]), t([1, 1, 0])];
        let pred = [t([1, 0, 0]), t([0, 1, 0]), t([1, 0, 1])];
        let m = multi_label_metrics(&pred, &truth);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(m["exact_match"], 1.0 / 3.0);
        // micro: tp 3 (c0 x2, c1 x1), fp 1 (c2), fn 2 (c2, c1) -> p 3/4, r 3/5
        close(m["precision_micro"], 0.75);
        close(m["recall_micro"], 0.6);
        close(m["f1_micro"], 2.0 * 0.75 * 0.6 / 1.35);
        // per class: c0 p1 r1 f1; c1 p1 r1/2 f2/3; c2 p0 r0 f0
        close(m["f1_macro"], (1.0 + 2.0 / 3.0) / 3.0);
        close(m["recall_macro"], (1.0 + 0.5) / 3.0);
    }

    fn dataset(column: ArrayRef) -> Dataset {
        let batch =
            berth_data::arrow::array::RecordBatch::try_from_iter([("labels", column)]).unwrap();
        Dataset::from_batch(batch, "labels.jsonl").unwrap()
    }

    #[test]
    fn labels_are_names_or_vectors_and_bad_ones_name_the_row() {
        use berth_data::arrow::array::{Int64Builder, ListBuilder, StringBuilder};
        let mut names = ListBuilder::new(StringBuilder::new());
        for row in [vec!["sports"], vec![], vec!["politics", "sports"]] {
            for n in row {
                names.values().append_value(n);
            }
            names.append(true);
        }
        let ds = dataset(Arc::new(names.finish()));
        let classes = vec!["politics".to_string(), "sports".to_string()];
        let LabelLists::Names(rows) = label_lists(&ds, "labels").unwrap() else {
            panic!("names")
        };
        let all: BTreeSet<String> = rows.into_iter().flatten().collect();
        assert_eq!(all.into_iter().collect::<Vec<_>>(), classes);
        assert_eq!(
            multi_hot(&ds, "labels", &classes).unwrap(),
            vec![vec![0.0, 1.0], vec![0.0, 0.0], vec![1.0, 1.0]]
        );
        let e = multi_hot(&ds, "labels", &["sports".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("labels.jsonl") && e.contains("row 2") && e.contains("politics"),
            "{e}"
        );

        let mut vectors = ListBuilder::new(Int64Builder::new());
        for row in [vec![1, 0, 1], vec![0, 2, 0]] {
            vectors.values().append_slice(&row);
            vectors.append(true);
        }
        let ds = dataset(Arc::new(vectors.finish()));
        let e = multi_hot(&ds, "labels", &["0".into(), "1".into(), "2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains("not 0 or 1"), "{e}");
    }

    #[test]
    fn prediction_lists_the_classes_over_the_threshold() {
        let p = Box::new(MultiLabelPredictor {
            threshold: 0.5,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            probs: vec![vec![0.9, 0.2, 0.5], vec![0.1, 0.1, 0.1]],
        });
        let cols = p.columns().unwrap();
        let labels = cols[1]
            .1
            .as_any()
            .downcast_ref::<GenericListArray<i32>>()
            .unwrap();
        let row0 = labels.value(0);
        let row0 = row0.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(row0.iter().flatten().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(labels.value(1).len(), 0);
    }

    #[test]
    fn multi_label_scorer_states_merge_row_by_row() {
        let scorer = |predicted: Vec<Vec<bool>>, truth: Vec<Vec<bool>>| MultiLabelScorer {
            threshold: 0.5,
            predicted,
            truth,
        };
        let (t, f) = (true, false);
        let a = scorer(vec![vec![t, f, t]], vec![vec![t, t, f]]);
        let b = scorer(
            vec![vec![f, f, t], vec![t, t, t]],
            vec![vec![f, f, t], vec![t, f, t]],
        );
        let whole = scorer(
            vec![vec![t, f, t], vec![f, f, t], vec![t, t, t]],
            vec![vec![t, t, f], vec![f, f, t], vec![t, f, t]],
        );
        let mut gathered = scorer(Vec::new(), Vec::new());
        for s in [a.state(), b.state(), scorer(Vec::new(), Vec::new()).state()] {
            gathered.merge(&s).unwrap();
        }
        assert_eq!(gathered.metrics(), whole.metrics());
        assert!(gathered.merge(&[1.0, 3.0, 1.0]).is_err());
    }
}
