//! From data files to the in-memory rows a task trains on: loaded and tokenized
//! through `berth-data` (cached by fingerprint, so a second run prepares nothing),
//! then held as plain id vectors for batching.

use std::collections::BTreeSet;

use berth_data::arrow::array::{Array, StringArray};
use berth_data::arrow::compute::cast;
use berth_data::arrow::datatypes::{DataType, UInt8Type, UInt32Type};
use berth_data::berth_chunking::ChunkConfig;
use berth_data::berth_masking::NspConfig;
use berth_data::tokenizers::Tokenizer;
use berth_data::{
    Dataset, Format, HubOptions, LoadOptions, MapOptions, SplitSize, TokenizeConfig, TokenizeOp,
    load_hub_split,
};

use crate::config::{RunConfig, Task};
use crate::error::{Result, TrainError};

/// The rows of one split, in the shape its task batches them.
#[derive(Clone, Debug)]
pub enum Rows {
    /// One (possibly paired) sequence per row, and its class.
    Sequences {
        ids: Vec<Vec<u32>>,
        types: Vec<Vec<u8>>,
        labels: Vec<i64>,
    },
    /// A long text's chunks (each `[CLS] .. [SEP]`) and its class.
    Documents {
        chunks: Vec<Vec<Vec<u32>>>,
        labels: Vec<i64>,
    },
    /// Token sequences to mask (MLM).
    Texts { ids: Vec<Vec<u32>> },
    /// Sentence pairs to mask, with `next_sentence_label` (NSP).
    Pairs {
        ids: Vec<Vec<u32>>,
        types: Vec<Vec<u8>>,
        next: Vec<i64>,
    },
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Sequences { ids, .. } | Rows::Texts { ids } | Rows::Pairs { ids, .. } => {
                ids.len()
            }
            Rows::Documents { chunks, .. } => chunks.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens per item (all chunks of a document), for length grouping.
    pub fn lengths(&self) -> Vec<usize> {
        match self {
            Rows::Sequences { ids, .. } | Rows::Texts { ids } | Rows::Pairs { ids, .. } => {
                ids.iter().map(Vec::len).collect()
            }
            Rows::Documents { chunks, .. } => chunks
                .iter()
                .map(|c| c.iter().map(Vec::len).sum())
                .collect(),
        }
    }

    /// The first `n` items.
    pub fn truncate(&mut self, n: usize) {
        match self {
            Rows::Sequences { ids, types, labels } => {
                ids.truncate(n);
                types.truncate(n);
                labels.truncate(n);
            }
            Rows::Documents { chunks, labels } => {
                chunks.truncate(n);
                labels.truncate(n);
            }
            Rows::Texts { ids } => ids.truncate(n),
            Rows::Pairs { ids, types, next } => {
                ids.truncate(n);
                types.truncate(n);
                next.truncate(n);
            }
        }
    }

    /// Class labels, for classification tasks.
    pub fn labels(&self) -> Option<&[i64]> {
        match self {
            Rows::Sequences { labels, .. } | Rows::Documents { labels, .. } => Some(labels),
            _ => None,
        }
    }
}

/// One prepared split.
#[derive(Clone, Debug)]
pub struct Split {
    pub name: String,
    /// The file it came from (for messages and the report).
    pub source: String,
    pub rows: Rows,
}

/// Everything a run trains and evaluates on.
#[derive(Clone, Debug)]
pub struct TaskData {
    pub train: Split,
    pub eval: Option<Split>,
    pub test: Option<Split>,
    /// Class names (classification), index = class id.
    pub class_names: Vec<String>,
}

/// Loads and prepares the splits of `config` with `tokenizer`; `max_positions` is
/// the model's `max_position_embeddings`.
pub fn prepare(
    config: &RunConfig,
    tokenizer: &Tokenizer,
    max_positions: usize,
) -> Result<TaskData> {
    let d = &config.data;
    let format = d.format.as_deref().map(Format::from_name).transpose()?;
    let hub = HubOptions::from_env();
    let load = |file: &str| -> Result<Dataset> {
        if let Some(repo) = &d.hub {
            return Ok(load_hub_split(
                repo,
                d.hub_config.as_deref(),
                file,
                &hub,
                &LoadOptions::default(),
            )?);
        }
        let path = config.data_path(file);
        let path_str = path
            .to_str()
            .ok_or_else(|| TrainError::Config(format!("{}: not a UTF-8 path", path.display())))?;
        if !path.exists() {
            return Err(TrainError::Config(format!(
                "data file {} does not exist (data_dir {}; set data.data_dir or BERTH_DATA_DIR, or data.hub)",
                path.display(),
                config.data_dir().display()
            )));
        }
        Ok(berth_data::load(
            path_str,
            format.clone(),
            &LoadOptions::default(),
        )?)
    };
    let seed = config.training.seed;
    let train_ds = load(&d.train)?.shuffle(seed)?;
    let (train_ds, eval_ds) = match (&d.eval, d.validation_split) {
        (Some(f), _) => (train_ds, Some(load(f)?)),
        (None, Some(frac)) => {
            let parts = train_ds.train_test_split(SplitSize::Fraction(frac), seed)?;
            (
                parts.split("train")?.clone(),
                Some(parts.split("test")?.clone()),
            )
        }
        (None, None) => (train_ds, None),
    };
    let eval_ds = eval_ds
        .map(|ds| sample(ds, d.max_eval_samples, seed))
        .transpose()?;
    let test_ds = d
        .test
        .as_deref()
        .map(|f| sample(load(f)?, d.max_test_samples, seed))
        .transpose()?;

    let class_names = match config.task {
        Task::Classification | Task::ChunkClassification => {
            class_names(&train_ds, &d.label_column)?
        }
        Task::Mlm | Task::Nsp => Vec::new(),
    };
    let prep = |ds: &Dataset, name: &str| -> Result<Split> {
        Ok(Split {
            name: name.to_string(),
            source: ds.source_name().to_string(),
            rows: rows_of(
                config,
                ds,
                tokenizer,
                max_positions,
                &class_names,
                name != "train",
            )?,
        })
    };
    // A classification row is one example: take the first N of the shuffled rows
    // before tokenizing (MLM/NSP rows exist only after grouping, so they are cut below).
    let train_ds = match d.max_train_samples {
        Some(n)
            if n < train_ds.num_rows()
                && matches!(
                    config.task,
                    Task::Classification | Task::ChunkClassification
                ) =>
        {
            train_ds.select(&(0..n).collect::<Vec<_>>())?
        }
        _ => train_ds,
    };
    let mut train = prep(&train_ds, "train")?;
    if let Some(n) = d.max_train_samples {
        train.rows.truncate(n);
    }
    let eval = eval_ds.as_ref().map(|ds| prep(ds, "eval")).transpose()?;
    let test = test_ds.as_ref().map(|ds| prep(ds, "test")).transpose()?;
    if train.rows.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no training rows",
            train.source
        )));
    }
    Ok(TaskData {
        train,
        eval,
        test,
        class_names,
    })
}

/// At most `n` rows of `ds`, drawn at random with `seed` and kept in their order.
fn sample(ds: Dataset, n: Option<usize>, seed: u64) -> Result<Dataset> {
    match n {
        Some(n) if n < ds.num_rows() => {
            let mut keep = berth_data::permutation(ds.num_rows(), seed);
            keep.truncate(n);
            keep.sort_unstable();
            Ok(ds.select(&keep)?)
        }
        _ => Ok(ds),
    }
}

/// Class names: the dataset's own (HF ClassLabel metadata) when it has them; else
/// the sorted distinct string labels; else `0..=max` of integer labels.
fn class_names(ds: &Dataset, column: &str) -> Result<Vec<String>> {
    if let Some(names) = ds.class_names(column) {
        return Ok(names);
    }
    if let Some(values) = text_labels(ds, column)? {
        let set: BTreeSet<String> = values.into_iter().flatten().collect();
        return Ok(set.into_iter().collect());
    }
    let labels = int_labels(ds, column, &[])?;
    let max = labels.iter().copied().max().unwrap_or(1).max(1);
    Ok((0..=max).map(|i| i.to_string()).collect())
}

/// A text label column's values (None when the column is not text).
fn text_labels(ds: &Dataset, column: &str) -> Result<Option<Vec<Option<String>>>> {
    let col = ds.column(column)?;
    if !matches!(col.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
        return Ok(None);
    }
    let col = cast(&col, &DataType::Utf8).map_err(|e| arrow_err(ds, e))?;
    let s = col
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| TrainError::Config(format!("column '{column}': not text")))?;
    Ok(Some(s.iter().map(|v| v.map(str::to_string)).collect()))
}

/// The label column as class ids; a missing or out-of-range label is an error naming
/// the file, row and column.
fn int_labels(ds: &Dataset, column: &str, names: &[String]) -> Result<Vec<i64>> {
    let col = ds.column(column)?;
    let bad = |row: usize, what: String| {
        TrainError::Data(berth_data::DataError::Value {
            source_name: ds.source_name().into(),
            row,
            column: column.to_string(),
            message: what,
        })
    };
    let values: Vec<Option<i64>> = if let Some(text) = text_labels(ds, column)? {
        text.into_iter()
            .enumerate()
            .map(|(row, v)| match v {
                None => Ok(None),
                Some(v) => names
                    .iter()
                    .position(|n| *n == v)
                    .map(|i| Some(i as i64))
                    .ok_or_else(|| bad(row, format!("label '{v}' is not one of {names:?}"))),
            })
            .collect::<Result<_>>()?
    } else {
        let c = cast(&col, &DataType::Int64).map_err(|e| {
            bad(
                0,
                format!("labels of type {} are not class ids ({e})", col.data_type()),
            )
        })?;
        let c = c
            .as_any()
            .downcast_ref::<berth_data::arrow::array::Int64Array>()
            .ok_or_else(|| bad(0, "labels are not integers".into()))?;
        c.iter().collect()
    };
    values
        .into_iter()
        .enumerate()
        .map(|(row, v)| {
            let v = v.ok_or_else(|| bad(row, "missing label".into()))?;
            if v < 0 || (!names.is_empty() && v as usize >= names.len()) {
                return Err(bad(
                    row,
                    format!(
                        "label {v} is outside 0..{} (classes {names:?})",
                        names.len()
                    ),
                ));
            }
            Ok(v)
        })
        .collect()
}

fn rows_of(
    config: &RunConfig,
    ds: &Dataset,
    tokenizer: &Tokenizer,
    max_positions: usize,
    class_names: &[String],
    evaluation: bool,
) -> Result<Rows> {
    let d = &config.data;
    let max_length = d.max_length.unwrap_or(max_positions).min(max_positions);
    let opts = MapOptions::default();
    Ok(match config.task {
        Task::Classification => {
            let mut tc = TokenizeConfig::new(d.text_column.clone());
            tc.pair_column = d.pair_column.clone();
            tc.max_length = Some(max_length);
            let t = ds.map_batched(&TokenizeOp::new(tokenizer, tc)?, &opts)?;
            Rows::Sequences {
                ids: t.list_rows::<UInt32Type>("input_ids")?,
                types: t.list_rows::<UInt8Type>("token_type_ids")?,
                labels: int_labels(ds, &d.label_column, class_names)?,
            }
        }
        Task::ChunkClassification => {
            let c = &config.chunking;
            let max_text_len = match (evaluation, c.eval_max_text_len) {
                (true, Some(0)) => None,
                (true, Some(n)) => Some(n),
                _ => c.max_text_len,
            };
            let cc = ChunkConfig::new(
                c.chunk_size,
                c.stride,
                c.min_chunk_len,
                max_text_len,
                max_positions,
            )
            .map_err(|e| TrainError::Config(format!("chunking: {e}")))?;
            let t = ds.chunk_texts(tokenizer, &d.text_column, cc)?;
            Rows::Documents {
                chunks: t.nested_list_rows::<UInt32Type>("chunks")?,
                labels: int_labels(ds, &d.label_column, class_names)?,
            }
        }
        Task::Mlm => {
            let mut tc = TokenizeConfig::new(d.text_column.clone());
            tc.max_length = Some(max_length);
            let t = ds.map_batched(&TokenizeOp::new(tokenizer, tc)?, &opts)?;
            Rows::Texts {
                ids: t.list_rows::<UInt32Type>("input_ids")?,
            }
        }
        Task::Nsp => {
            let nsp = NspConfig {
                max_length,
                next_probability: config.mlm.next_probability,
                ..NspConfig::default()
            };
            let t = ds.nsp_pairs(&d.text_column, tokenizer, &nsp, config.training.seed)?;
            let next = t.column("next_sentence_label")?;
            let next = cast(&next, &DataType::Int64).map_err(|e| arrow_err(ds, e))?;
            let next = next
                .as_any()
                .downcast_ref::<berth_data::arrow::array::Int64Array>()
                .ok_or_else(|| TrainError::Config("next_sentence_label".into()))?
                .values()
                .to_vec();
            Rows::Pairs {
                ids: t.list_rows::<UInt32Type>("input_ids")?,
                types: t.list_rows::<UInt8Type>("token_type_ids")?,
                next,
            }
        }
    })
}

fn arrow_err(ds: &Dataset, e: berth_data::arrow::error::ArrowError) -> TrainError {
    TrainError::Data(berth_data::DataError::Arrow {
        context: format!("{}: cast", ds.source_name()),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_data::arrow::array::{Int64Array, RecordBatch};

    use super::*;

    fn labels(ds: &Dataset) -> Vec<i64> {
        let col = ds.column("label").unwrap();
        let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
        col.values().to_vec()
    }

    #[test]
    fn eval_samples_are_random_rows_in_file_order() {
        // 100 rows sorted by label, as IMDB's files are: the first 10 would all be 0.
        let batch = RecordBatch::try_from_iter([(
            "label",
            Arc::new(Int64Array::from_iter_values((0..100).map(|i| i / 50)))
                as berth_data::arrow::array::ArrayRef,
        )])
        .unwrap();
        let ds = Dataset::from_batch(batch, "sorted").unwrap();
        let a = sample(ds.clone(), Some(10), 7).unwrap();
        assert_eq!(a.num_rows(), 10);
        let got = labels(&a);
        assert!(got.contains(&0) && got.contains(&1), "{got:?}");
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "file order: {got:?}");
        assert_eq!(labels(&sample(ds.clone(), Some(10), 7).unwrap()), got);
        assert_eq!(sample(ds.clone(), Some(1000), 7).unwrap().num_rows(), 100);
        assert_eq!(sample(ds, None, 7).unwrap().num_rows(), 100);
    }
}
