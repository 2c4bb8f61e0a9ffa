//! Pre-training data as dataset ops: MLM masking of `input_ids` (adds `labels`), and
//! NSP pairs built from documents (one row per document, e.g. a paragraph).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{Int64Type, UInt8Type, UInt32Type};
use berth_masking::{
    ContinuationTable, MaskingTokens, MlmConfig, NspConfig, encode_pair, mask_tokens, nsp_pairs,
    rng_for, split_sentences,
};
use rand::SeedableRng;
use tokenizers::Tokenizer;

use crate::chunk_op::id_lists;
use crate::columns::{list_of, text_values, with_columns};
use crate::dataset::Dataset;
use crate::encoder::{tokenizer_digest, unpadded};
use crate::error::{DataError, Result};
use crate::ops::BatchOp;
use crate::special::special_tokens;

/// Masks `input_ids` as HF's MLM collator does and adds `labels` (`List<Int64>`, -100
/// where not selected). Row `r` is masked with `rng_for(seed, r)`, so the output does
/// not depend on batch size or workers.
pub struct MlmOp {
    config: MlmConfig,
    tokens: MaskingTokens,
    seed: u64,
    /// For whole-word masking: which vocabulary ids continue a word.
    continuation: Option<ContinuationTable>,
}

impl MlmOp {
    /// `continuation` (see [`crate::continuation_table`]) is needed for whole-word masking.
    pub fn new(
        config: MlmConfig,
        tokens: MaskingTokens,
        seed: u64,
        continuation: Option<ContinuationTable>,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|e| DataError::InvalidArgument(e.to_string()))?;
        if config.whole_word && continuation.is_none() {
            return Err(DataError::InvalidArgument(
                "whole-word masking needs the tokenizer's continuation table".into(),
            ));
        }
        Ok(MlmOp {
            config,
            tokens,
            seed,
            continuation,
        })
    }
}

impl BatchOp for MlmOp {
    fn keeps_rows(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "mlm"
    }

    fn params(&self) -> String {
        let table = self.continuation.as_ref().map(ContinuationTable::count);
        format!(
            "{:?}|{:?}|seed={}|wwm_table={table:?}",
            self.config, self.tokens, self.seed
        )
    }

    fn apply(&self, batch: &RecordBatch, first_row: usize, source: &str) -> Result<RecordBatch> {
        let rows = id_lists(batch, "input_ids", first_row, source)?;
        let masked: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, ids)| {
                let starts = self.continuation.as_ref().map(|t| t.word_starts(ids));
                mask_tokens(
                    ids,
                    starts.as_deref(),
                    &self.config,
                    &self.tokens,
                    &mut rng_for(self.seed, (first_row + i) as u64),
                )
            })
            .collect();
        with_columns(
            batch,
            vec![
                (
                    "input_ids",
                    list_of::<UInt32Type>(masked.iter().map(|m| &m.input_ids)),
                ),
                (
                    "labels",
                    list_of::<Int64Type>(masked.iter().map(|m| &m.labels)),
                ),
            ],
        )
    }
}

impl Dataset {
    /// NSP pairs from documents: each row of `text_column` is a document (a paragraph
    /// of Meditations, say), split into sentences (see `berth_masking::split_sentences`)
    /// and tokenized without special tokens. Rows out: `input_ids`
    /// (`[CLS] A [SEP] B [SEP]`), `token_type_ids`, `attention_mask`,
    /// `next_sentence_label` (0 = IsNext, 1 = NotNext). Cached by fingerprint.
    pub fn nsp_pairs(
        &self,
        text_column: &str,
        tokenizer: &Tokenizer,
        config: &NspConfig,
        seed: u64,
    ) -> Result<Dataset> {
        let tok = unpadded(tokenizer)?;
        let special = special_tokens(&tok)?;
        let params = format!(
            "{text_column}|{config:?}|seed={seed}|tokenizer={}",
            tokenizer_digest(&tok)?
        );
        let fp = self.fingerprint().derive("nsp", 1, &params);
        let encoder = crate::encoder::TextEncoder::new(&tok, None, false)?;
        Dataset::materialize(self.cache_mode(), fp, self.source_name().into(), |emit| {
            let mut documents: Vec<Vec<Vec<u32>>> = Vec::with_capacity(self.num_rows());
            let mut first_row = 0;
            for batch in self.iter_batches(1000) {
                let batch = batch?;
                let texts = text_values(&batch, text_column, first_row, self.source_name())
                    .map_err(|e| self.at_file(e))?;
                for (i, text) in texts.into_iter().enumerate() {
                    let sentences = split_sentences(text);
                    // Errors name the document's row, not the sentence's index.
                    let enc = encoder
                        .encode(
                            &sentences,
                            None,
                            first_row + i,
                            self.source_name(),
                            text_column,
                        )
                        .map_err(|e| match e {
                            DataError::Value {
                                column, message, ..
                            } => self.value_error(first_row + i, &column, message),
                            other => other,
                        })?;
                    documents.push(
                        (0..enc.len())
                            .map(|s| enc.row(s).to_vec())
                            .filter(|ids| !ids.is_empty())
                            .collect(),
                    );
                }
                first_row += batch.num_rows();
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let pairs = nsp_pairs(&documents, config, &mut rng)
                .map_err(|e| DataError::InvalidArgument(format!("{}: {e}", self.source_name())))?;
            for chunk in pairs.chunks(1000) {
                let encoded: Vec<(Vec<u32>, Vec<u8>)> = chunk
                    .iter()
                    .map(|p| encode_pair(p, special.cls, special.sep))
                    .collect();
                let masks: Vec<Vec<u8>> =
                    encoded.iter().map(|(ids, _)| vec![1; ids.len()]).collect();
                let labels: ArrayRef = Arc::new(Int64Array::from_iter_values(
                    chunk.iter().map(|p| p.label as i64),
                ));
                let batch = RecordBatch::try_from_iter([
                    (
                        "input_ids",
                        list_of::<UInt32Type>(encoded.iter().map(|(i, _)| i)),
                    ),
                    (
                        "token_type_ids",
                        list_of::<UInt8Type>(encoded.iter().map(|(_, t)| t)),
                    ),
                    ("attention_mask", list_of::<UInt8Type>(masks.iter())),
                    ("next_sentence_label", labels),
                ])
                .map_err(|e| DataError::arrow("nsp", e))?;
                emit(batch)?;
            }
            if pairs.is_empty() {
                return Err(DataError::InvalidArgument(format!(
                    "{}: no NSP pairs (no document has two sentences)",
                    self.source_name()
                )));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::MapOptions;
    use crate::special::{continuation_table, masking_tokens};
    use arrow::array::{Array, ListArray, StringArray};

    fn tok() -> Option<Tokenizer> {
        let dir = berth_testkit::minilm_dir()?;
        Some(Tokenizer::from_file(dir.join("tokenizer.json")).unwrap())
    }

    fn docs() -> Dataset {
        let texts: Vec<String> = (0..40)
            .map(|d| {
                format!("Document {d} opens here. It goes on a while! Does it end? It ends now.")
            })
            .collect();
        let batch =
            RecordBatch::try_from_iter([("text", Arc::new(StringArray::from(texts)) as ArrayRef)])
                .unwrap();
        Dataset::from_batch(batch, "docs").unwrap()
    }

    #[test]
    fn nsp_rows_are_cls_a_sep_b_sep_with_labels() {
        let Some(tok) = tok() else { return };
        let out = docs()
            .nsp_pairs(
                "text",
                &tok,
                &NspConfig {
                    max_length: 32,
                    ..NspConfig::default()
                },
                7,
            )
            .unwrap();
        assert_eq!(out.num_rows(), 40 * 3);
        assert_eq!(
            out.column_names(),
            vec![
                "input_ids",
                "token_type_ids",
                "attention_mask",
                "next_sentence_label"
            ]
        );
        let ids = out.column("input_ids").unwrap();
        let ids = ids.as_any().downcast_ref::<ListArray>().unwrap();
        for r in 0..out.num_rows() {
            let row = ids.value(r);
            let row = row
                .as_any()
                .downcast_ref::<arrow::array::UInt32Array>()
                .unwrap()
                .values()
                .to_vec();
            assert!(row.len() <= 32);
            assert_eq!(row[0], 101);
            assert_eq!(row.iter().filter(|&&i| i == 102).count(), 2);
            assert_eq!(*row.last().unwrap(), 102);
        }
        let again = docs()
            .nsp_pairs(
                "text",
                &tok,
                &NspConfig {
                    max_length: 32,
                    ..NspConfig::default()
                },
                7,
            )
            .unwrap();
        assert_eq!(again.batches(), out.batches());
    }

    #[test]
    fn mlm_op_adds_labels_and_is_independent_of_batching() {
        let Some(tok) = tok() else { return };
        let ds = docs()
            .map_batched(
                &crate::TokenizeOp::new(&tok, crate::TokenizeConfig::new("text")).unwrap(),
                &MapOptions::default(),
            )
            .unwrap();
        let op = MlmOp::new(
            MlmConfig {
                whole_word: true,
                ..MlmConfig::default()
            },
            masking_tokens(&tok).unwrap(),
            3,
            Some(continuation_table(&tok).unwrap()),
        )
        .unwrap();
        let a = ds
            .map_batched(
                &op,
                &MapOptions {
                    batch_size: 7,
                    num_workers: 2,
                },
            )
            .unwrap();
        let b = ds
            .map_batched(
                &op,
                &MapOptions {
                    batch_size: 1000,
                    num_workers: 1,
                },
            )
            .unwrap();
        assert_eq!(
            a.column("labels").unwrap().to_data(),
            b.column("labels").unwrap().to_data()
        );
        assert_eq!(
            a.column("input_ids").unwrap().to_data(),
            b.column("input_ids").unwrap().to_data()
        );
        assert!(a.column_names().contains(&"labels".to_string()));
    }

    #[test]
    fn a_bad_document_is_named_by_its_file_line_after_a_shuffle() {
        let Some(tok) = tok() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.jsonl");
        let mut lines: Vec<String> = (0..30)
            .map(|d| format!("{{\"text\": \"Document {d} opens. It ends.\"}}"))
            .collect();
        lines[11] = "{\"text\": null}".to_string();
        // A blank line before it: line numbers are the file's, not the row's.
        lines.insert(3, String::new());
        std::fs::write(&path, lines.join("\n")).unwrap();
        let ds = crate::load(
            path.to_str().unwrap(),
            None,
            &crate::LoadOptions::in_memory(),
        )
        .unwrap()
        .shuffle(3)
        .unwrap();
        let e = ds
            .nsp_pairs("text", &tok, &NspConfig::default(), 7)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: line 13, column 'text': text is null", path.display())
        );
    }
}
