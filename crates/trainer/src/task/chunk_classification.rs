//! belt_nlp's long-document classification: every overlapping chunk of a text is
//! classified and the chunk logits are pooled (mean or max) per text. Saved as HF
//! `BertForSequenceClassification`, so the weights load anywhere.

use berth_collate::{Document, Padding, collate_chunks};
use berth_data::Dataset;
use berth_data::arrow::datatypes::UInt32Type;
use berth_data::berth_chunking::ChunkConfig;
use berth_model::{BertConfig, BertModel, ChunkPooledClassifier, Mode, Params};
use candle_core::Device;

use super::{
    ClassPredictor, ClassScorer, Head, PredictContext, Predictor, Scorer, Task, TaskContext,
};
use crate::batch::{Output, TaskBatch};
use crate::config::ChunkingConfig;
use crate::data::{Prepare, RowSet, Rows, Stage};
use crate::error::{Result, TrainError};

/// A long text's chunks (each `[CLS] .. [SEP]`) and its class (`labels` is empty
/// when the rows are unlabelled, for prediction).
#[derive(Clone, Debug)]
pub struct Documents {
    pub chunks: Vec<Vec<Vec<u32>>>,
    pub labels: Vec<i64>,
}

impl RowSet for Documents {
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
            labels: self.labels.iter().take(n).copied().collect(),
        })
    }

    /// A histogram of chunks per text.
    fn describe(&self) -> Option<String> {
        use std::fmt::Write as _;
        let mut counts = std::collections::BTreeMap::<usize, usize>::new();
        for c in &self.chunks {
            *counts.entry(c.len()).or_default() += 1;
        }
        let most = counts.values().copied().max().unwrap_or(1).max(1);
        let mut s = String::from("| chunks | texts | |\n| ---: | ---: | --- |\n");
        for (k, n) in counts {
            let bar = "#".repeat((n * 40).div_ceil(most));
            let _ = writeln!(s, "| {k} | {n} | `{bar}` |");
        }
        Some(s)
    }
}

/// The task; see the module docs.
pub struct ChunkClassification {
    chunking: ChunkingConfig,
    padding: Padding,
    pad_id: u32,
    device: Device,
}

impl ChunkClassification {
    pub fn new(chunking: ChunkingConfig, cx: &TaskContext<'_>) -> Result<Self> {
        Ok(ChunkClassification {
            chunking,
            padding: cx.padding,
            pad_id: cx.pad_id,
            device: cx.device.clone(),
        })
    }
}

impl Task for ChunkClassification {
    fn architecture(&self) -> &'static str {
        "BertForSequenceClassification"
    }

    fn classifies(&self) -> bool {
        true
    }

    fn rows(&self, ds: &Dataset, prep: &Prepare<'_>) -> Result<Rows> {
        let c = &self.chunking;
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
        Ok(Rows::new(Documents {
            chunks: t.nested_list_rows::<UInt32Type>("chunks")?,
            labels: prep.labels(ds)?,
        }))
    }

    fn head(&self, config: &BertConfig, params: &mut Params) -> Result<Box<dyn Head>> {
        Ok(Box::new(ChunkHead(ChunkPooledClassifier::new(
            config,
            params,
            self.chunking.pool,
        )?)))
    }

    fn batch(&self, rows: &Rows, indices: &[usize], _epoch: u64) -> Result<TaskBatch> {
        let r = rows.get::<Documents>()?;
        let labelled = !r.labels.is_empty();
        let docs: Vec<Document> = indices
            .iter()
            .map(|&i| Document {
                chunks: r.chunks[i].iter().map(Vec::as_slice).collect(),
                label: labelled.then(|| r.labels[i]),
            })
            .collect();
        let b = collate_chunks(&docs, &self.padding, self.pad_id, &self.device)?;
        Ok(TaskBatch {
            input_ids: b.input_ids,
            attention_mask: b.attention_mask,
            token_type_ids: b.token_type_ids,
            labels: b.labels,
            doc_offsets: Some(b.doc_offsets),
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

struct ChunkHead(ChunkPooledClassifier);

impl Head for ChunkHead {
    fn forward(&self, b: &TaskBatch, mode: &Mode) -> Result<Output> {
        let offsets = b.doc_offsets.as_deref().ok_or_else(|| {
            TrainError::Config("chunk classification needs chunked batches".into())
        })?;
        let (ids, types, mask) = (
            &b.input_ids,
            Some(&b.token_type_ids),
            Some(&b.attention_mask),
        );
        let logits = self.0.forward(ids, types, mask, offsets, mode)?;
        super::classification::class_output(logits, b.labels.as_ref(), |l, y| self.0.loss(l, y))
    }

    fn bert_mut(&mut self) -> &mut BertModel {
        &mut self.0.inner.bert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_chunks_per_text() {
        let d = Documents {
            chunks: vec![
                vec![vec![1]],
                vec![vec![1], vec![2]],
                vec![vec![3], vec![4]],
            ],
            labels: Vec::new(),
        };
        let md = d.describe().unwrap();
        assert!(md.contains("| 1 | 1 |") && md.contains("| 2 | 2 |"), "{md}");
    }
}
