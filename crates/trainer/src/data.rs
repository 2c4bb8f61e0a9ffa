//! Rows as tasks hold them ([`RowSet`], [`Rows`]), what a task is given to make them
//! ([`Prepare`]), and the label helpers the classifying tasks share. Which files
//! become which splits is `splits.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_data::Dataset;
use berth_data::arrow::array::{Array, StringArray};
use berth_data::arrow::compute::cast;
use berth_data::arrow::datatypes::DataType;
use berth_data::tokenizers::Tokenizer;

use crate::config::DataConfig;
use crate::error::{Result, TrainError};

/// What a task's rows must answer for the loop: how many items, how long each is
/// (for length grouping) and the first `n` of them. Each task defines its own rows
/// (e.g. [`crate::task::Sequences`]) and reads them back with [`Rows::get`].
pub trait RowSet: std::any::Any + Send + Sync + std::fmt::Debug {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Tokens per item (all chunks of a document), for length grouping.
    fn lengths(&self) -> Vec<usize>;
    /// The first `n` items.
    fn first(&self, n: usize) -> Rows;
    /// How many texts have each number of chunks, for chunked rows (the report's
    /// histogram).
    fn chunk_counts(&self) -> Option<std::collections::BTreeMap<usize, usize>> {
        None
    }
}

/// The rows of one split, in the shape its task batches them (shared, cheap to clone).
#[derive(Clone, Debug)]
pub struct Rows(Arc<dyn RowSet>);

impl Rows {
    pub fn new(rows: impl RowSet) -> Self {
        Rows(Arc::new(rows))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn lengths(&self) -> Vec<usize> {
        self.0.lengths()
    }

    pub fn chunk_counts(&self) -> Option<std::collections::BTreeMap<usize, usize>> {
        self.0.chunk_counts()
    }

    /// Keeps the first `n` items.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            *self = self.0.first(n);
        }
    }

    /// The rows as the task that made them sees them; an error when they are another
    /// task's.
    pub fn get<R: RowSet>(&self) -> Result<&R> {
        let any: &dyn std::any::Any = self.0.as_ref();
        any.downcast_ref::<R>().ok_or_else(|| {
            TrainError::Internal(format!(
                "rows of another task ({:?}...) given where {} are expected",
                self.0.len(),
                std::any::type_name::<R>()
            ))
        })
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

/// Which use a split is prepared for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Train,
    /// Eval and test splits (chunking may read more of each text).
    Eval,
    /// Unlabelled rows (`berth predict`): no label column is read.
    Predict,
}

/// Each row's ids and token types.
pub type Tokenized = (Vec<Vec<u32>>, Vec<Vec<u8>>);

/// What a task needs to turn a loaded split into its rows.
pub struct Prepare<'a> {
    pub data: &'a DataConfig,
    pub tokenizer: &'a Tokenizer,
    /// The most tokens the model's positions cover (`max_position_embeddings`, less
    /// RoBERTa's unused first positions).
    pub max_positions: usize,
    /// Class names (classification), index = class id.
    pub class_names: &'a [String],
    pub seed: u64,
    pub stage: Stage,
}

impl Prepare<'_> {
    /// `data.max_length`, at most the model's positions.
    pub fn max_length(&self) -> usize {
        self.data
            .max_length
            .unwrap_or(self.max_positions)
            .min(self.max_positions)
    }

    /// `data.text_column` (with `data.pair_column` when `pairs`) tokenized and
    /// truncated to [`Prepare::max_length`]: each row's ids and token types.
    pub fn tokenize(&self, ds: &Dataset, pairs: bool) -> Result<Tokenized> {
        use berth_data::arrow::datatypes::{UInt8Type, UInt32Type};
        let mut tc = berth_data::TokenizeConfig::new(self.data.text_column.clone());
        if pairs {
            tc.pair_column = self.data.pair_column.clone();
        }
        tc.max_length = Some(self.max_length());
        let t = ds.map_batched(
            &berth_data::TokenizeOp::new(self.tokenizer, tc)?,
            &berth_data::MapOptions::default(),
        )?;
        Ok((
            t.list_rows::<UInt32Type>("input_ids")?,
            t.list_rows::<UInt8Type>("token_type_ids")?,
        ))
    }

    /// The label column as class ids (see `int_labels`); empty when predicting.
    pub fn labels(&self, ds: &Dataset) -> Result<Vec<i64>> {
        match self.stage {
            Stage::Predict => Ok(Vec::new()),
            _ => int_labels(ds, &self.data.label_column, self.class_names),
        }
    }
}

/// Class names: the dataset's own (HF ClassLabel metadata) when it has them; else
/// the sorted distinct string labels; else `0..=max` of integer labels.
pub(crate) fn class_names(ds: &Dataset, column: &str) -> Result<Vec<String>> {
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
    let s = col.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
        TrainError::Internal(format!("column '{column}': not text after its cast"))
    })?;
    Ok(Some(s.iter().map(|v| v.map(str::to_string)).collect()))
}

/// The label column as class ids; a missing or out-of-range label is an error naming
/// the file and line (or row) it came from, the column, the value and the classes.
/// With no `names` (they are being derived from this column) any id from 0 up is a
/// class; a negative one is not.
pub fn int_labels(ds: &Dataset, column: &str, names: &[String]) -> Result<Vec<i64>> {
    let col = ds.column(column)?;
    let bad = |row: usize, what: String| TrainError::Data(ds.value_error(row, column, what));
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
        if let Some(row) = non_integer_row(&col) {
            let value = berth_data::arrow::util::display::array_value_to_string(&col, row)
                .unwrap_or_default();
            return Err(bad(
                row,
                format!("label {value} is not a class id (an integer from 0)"),
            ));
        }
        let c = cast(&col, &DataType::Int64).map_err(|e| {
            TrainError::Data(berth_data::DataError::ColumnType {
                source_name: ds.source_name().into(),
                column: column.to_string(),
                expected: format!("class ids or names ({e})"),
                found: col.data_type().to_string(),
            })
        })?;
        let c = c
            .as_any()
            .downcast_ref::<berth_data::arrow::array::Int64Array>()
            .ok_or_else(|| bad(0, "labels are not integers".into()))?;
        // A value the cast could not hold (1e30, a u64 past i64) comes out null: it is
        // a bad label, not a missing one.
        if let Some(row) = (0..c.len()).find(|&r| col.is_valid(r) && c.is_null(r)) {
            let value = berth_data::arrow::util::display::array_value_to_string(&col, row)
                .unwrap_or_default();
            return Err(bad(
                row,
                format!("label {value} is not a class id (an integer from 0)"),
            ));
        }
        c.iter().collect()
    };
    let classes = || {
        if names.is_empty() {
            let seen: BTreeSet<i64> = values.iter().flatten().copied().collect();
            format!("labels seen: {seen:?}")
        } else {
            format!("classes {names:?}")
        }
    };
    values
        .iter()
        .enumerate()
        .map(|(row, v)| {
            let v = v.ok_or_else(|| bad(row, "missing label".into()))?;
            if v < 0 || (!names.is_empty() && v as usize >= names.len()) {
                let range = if names.is_empty() {
                    "class ids count from 0".to_string()
                } else {
                    format!("class ids are 0..{}", names.len())
                };
                return Err(bad(
                    row,
                    format!("label {v} is not a class id: {range} ({})", classes()),
                ));
            }
            Ok(v)
        })
        .collect()
}

/// The first row of a float label column that is not a whole number (NaN, inf, 0.5),
/// which a cast to integers would drop or truncate without a word.
fn non_integer_row(col: &berth_data::arrow::array::ArrayRef) -> Option<usize> {
    use berth_data::arrow::array::{Array, Float64Array};
    if !col.data_type().is_floating() {
        return None;
    }
    let f = cast(col, &DataType::Float64).ok()?;
    let f = f.as_any().downcast_ref::<Float64Array>()?;
    (0..f.len()).find(|&i| f.is_valid(i) && (!f.value(i).is_finite() || f.value(i).fract() != 0.0))
}

pub(crate) fn arrow_err(ds: &Dataset, e: berth_data::arrow::error::ArrowError) -> TrainError {
    TrainError::Data(berth_data::DataError::Arrow {
        context: format!("{}: cast", ds.source_name()),
        source: e,
    })
}
