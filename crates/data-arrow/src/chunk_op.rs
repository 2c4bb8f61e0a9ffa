//! The chunking map op: `input_ids` (tokenized without special tokens) to `chunks`
//! (`List<List<UInt32>>`, each `[CLS] .. [SEP]`, unpadded) and `num_chunks` (`UInt32`), so
//! a dataset is chunked once and cached.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ListArray, RecordBatch, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, UInt32Type};
use berth_chunking::{ChunkConfig, SpecialTokens, chunk_ids};

use crate::columns::{column_of, list_of, with_columns};
use crate::error::{DataError, Result};
use crate::ops::BatchOp;

/// Reads `ids_column` (a List of integer ids without special tokens) and adds
/// `chunks` and `num_chunks`.
pub struct ChunkOp {
    config: ChunkConfig,
    special: SpecialTokens,
    ids_column: String,
}

impl ChunkOp {
    pub fn new(config: ChunkConfig, special: SpecialTokens, ids_column: impl Into<String>) -> Self {
        ChunkOp {
            config,
            special,
            ids_column: ids_column.into(),
        }
    }
}

/// The rows of a list-of-integers column as `Vec<u32>` each.
pub(crate) fn id_lists(
    batch: &RecordBatch,
    column: &str,
    first_row: usize,
    source: &str,
) -> Result<Vec<Vec<u32>>> {
    let col = column_of(batch, column, source)?;
    let type_err = || DataError::ColumnType {
        source_name: source.to_string(),
        column: column.to_string(),
        expected: "a list of token ids".into(),
        found: col.data_type().to_string(),
    };
    let list = col
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(type_err)?;
    if !list.value_type().is_integer() {
        return Err(type_err());
    }
    let values = arrow::compute::cast(list.values(), &DataType::UInt32)
        .map_err(|e| DataError::arrow(format!("{source}: column '{column}'"), e))?;
    let values = values
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(type_err)?;
    let offsets = list.value_offsets();
    (0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Err(DataError::Value {
                    source_name: source.to_string(),
                    row: first_row + i,
                    column: column.to_string(),
                    message: "ids are null".into(),
                });
            }
            Ok(values.values()[offsets[i] as usize..offsets[i + 1] as usize].to_vec())
        })
        .collect()
}

impl crate::dataset::Dataset {
    /// belt_nlp's preprocessing of `text_column` in one call: tokenize each whole text
    /// without special tokens (adding `input_ids`, `token_type_ids`, `attention_mask`),
    /// then add `chunks` and `num_chunks`. Both steps are cached like any map.
    pub fn chunk_texts(
        &self,
        tokenizer: &tokenizers::Tokenizer,
        text_column: &str,
        config: ChunkConfig,
    ) -> Result<crate::dataset::Dataset> {
        let mut tok_cfg = crate::tokenize::TokenizeConfig::new(text_column);
        tok_cfg.add_special_tokens = false;
        let opts = crate::ops::MapOptions::default();
        let tokenized = self.map_batched(
            &crate::tokenize::TokenizeOp::new(tokenizer, tok_cfg)?,
            &opts,
        )?;
        let special = crate::special::special_tokens(tokenizer)?;
        tokenized.map_batched(&ChunkOp::new(config, special, "input_ids"), &opts)
    }
}

impl BatchOp for ChunkOp {
    fn name(&self) -> &str {
        "chunk"
    }

    fn params(&self) -> String {
        format!("{:?}|{:?}|{}", self.config, self.special, self.ids_column)
    }

    fn apply(&self, batch: &RecordBatch, first_row: usize, source: &str) -> Result<RecordBatch> {
        let rows = id_lists(batch, &self.ids_column, first_row, source)?;
        let per_row: Vec<Vec<Vec<u32>>> = rows
            .iter()
            .map(|ids| chunk_ids(ids, &self.config, &self.special))
            .collect();
        let counts: Vec<u32> = per_row.iter().map(|c| c.len() as u32).collect();
        let inner = list_of::<UInt32Type>(per_row.iter().flatten());
        let mut offsets = vec![0i32];
        for c in &counts {
            offsets.push(offsets.last().copied().unwrap_or(0) + *c as i32);
        }
        let outer = ListArray::new(
            Arc::new(Field::new("item", inner.data_type().clone(), false)),
            OffsetBuffer::new(offsets.into()),
            inner,
            None,
        );
        with_columns(
            batch,
            vec![
                ("chunks", Arc::new(outer) as ArrayRef),
                (
                    "num_chunks",
                    Arc::new(UInt32Array::from(counts)) as ArrayRef,
                ),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;
    use crate::ops::MapOptions;

    #[test]
    fn chunks_every_row_and_counts_them() {
        let ids = list_of::<UInt32Type>([vec![1u32, 2, 3, 4, 5], vec![], vec![9]].iter());
        let batch = RecordBatch::try_from_iter([("input_ids", ids)]).unwrap();
        let ds = Dataset::from_batch(batch, "ids").unwrap();
        let op = ChunkOp::new(
            ChunkConfig::new(2, 2, 1, None, 512).unwrap(),
            SpecialTokens {
                cls: 101,
                sep: 102,
                pad: 0,
            },
            "input_ids",
        );
        let out = ds.map_batched(&op, &MapOptions::default()).unwrap();
        let n = out.column("num_chunks").unwrap();
        assert_eq!(
            n.as_any().downcast_ref::<UInt32Array>().unwrap().values(),
            &[3, 1, 1]
        );
        let chunks = out.column("chunks").unwrap();
        let chunks = chunks.as_any().downcast_ref::<ListArray>().unwrap();
        let first = chunks.value(0);
        let first = first.as_any().downcast_ref::<ListArray>().unwrap();
        let c2 = first.value(2);
        assert_eq!(
            c2.as_any().downcast_ref::<UInt32Array>().unwrap().values(),
            &[101, 5, 102]
        );
        let empty = chunks.value(1);
        let empty = empty.as_any().downcast_ref::<ListArray>().unwrap().value(0);
        assert_eq!(
            empty
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap()
                .values(),
            &[101, 102]
        );
    }

    #[test]
    fn a_non_list_column_is_named() {
        let batch = RecordBatch::try_from_iter([(
            "input_ids",
            Arc::new(UInt32Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        let ds = Dataset::from_batch(batch, "flat").unwrap();
        let op = ChunkOp::new(
            ChunkConfig::new(2, 2, 1, None, 512).unwrap(),
            SpecialTokens {
                cls: 101,
                sep: 102,
                pad: 0,
            },
            "input_ids",
        );
        let err = ds
            .map_batched(&op, &MapOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "flat: column 'input_ids' must be a list of token ids, found UInt32"
        );
    }
}
