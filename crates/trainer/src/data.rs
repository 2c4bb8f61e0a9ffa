//! From data files to the in-memory rows a task trains on: loaded and tokenized
//! through `berth-data` (cached by fingerprint, so a second run prepares nothing),
//! then held as plain id vectors for batching.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_data::arrow::array::{Array, StringArray};
use berth_data::arrow::compute::cast;
use berth_data::arrow::datatypes::DataType;
use berth_data::tokenizers::Tokenizer;
use berth_data::{Dataset, Format, HubOptions, LoadOptions, SplitSize, load_hub_split};

use crate::config::{DataConfig, RunConfig};
use crate::error::{Result, TrainError};
use crate::task::Task;

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
            TrainError::Config(format!(
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

/// Everything a run trains and evaluates on.
#[derive(Clone, Debug)]
pub struct TaskData {
    pub train: Split,
    pub eval: Option<Split>,
    pub test: Option<Split>,
    /// Class names (classification), index = class id.
    pub class_names: Vec<String>,
}

/// The splits `berth eval` scores, prepared without the train file (unless the eval
/// split is carved out of it by `data.validation_split`).
#[derive(Clone, Debug)]
pub struct EvalData {
    pub eval: Option<Split>,
    pub test: Option<Split>,
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

/// What a task needs to turn a loaded split into its rows.
pub struct Prepare<'a> {
    pub data: &'a DataConfig,
    pub tokenizer: &'a Tokenizer,
    /// The model's `max_position_embeddings`.
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

    /// The label column as class ids (see [`int_labels`]); empty when predicting.
    pub fn labels(&self, ds: &Dataset) -> Result<Vec<i64>> {
        match self.stage {
            Stage::Predict => Ok(Vec::new()),
            _ => int_labels(ds, &self.data.label_column, self.class_names),
        }
    }
}

/// Reads a split named in the config: a file under the data dir, or a hub split.
struct Loader<'a> {
    config: &'a RunConfig,
    format: Option<Format>,
    hub: HubOptions,
}

impl<'a> Loader<'a> {
    fn new(config: &'a RunConfig) -> Result<Self> {
        Ok(Loader {
            config,
            format: config
                .data
                .format
                .as_deref()
                .map(Format::from_name)
                .transpose()?,
            hub: HubOptions::from_env(),
        })
    }

    fn load(&self, file: &str) -> Result<Dataset> {
        let (config, d) = (self.config, &self.config.data);
        if let Some(repo) = &d.hub {
            return Ok(load_hub_split(
                repo,
                d.hub_config.as_deref(),
                file,
                &self.hub,
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
            self.format.clone(),
            &LoadOptions::default(),
        )?)
    }

    /// The shuffled train rows and the eval rows (from `data.eval`, or carved out of
    /// train by `data.validation_split`), eval sampled to `max_eval_samples`.
    fn train_and_eval(&self) -> Result<(Dataset, Option<Dataset>)> {
        let d = &self.config.data;
        let seed = self.config.training.seed;
        let train = self.load(&d.train)?.shuffle(seed)?;
        let (train, eval) = match (&d.eval, d.validation_split) {
            (Some(f), _) => (train, Some(self.load(f)?)),
            (None, Some(frac)) => {
                let parts = train.train_test_split(SplitSize::Fraction(frac), seed)?;
                (
                    parts.split("train")?.clone(),
                    Some(parts.split("test")?.clone()),
                )
            }
            (None, None) => (train, None),
        };
        let eval = eval
            .map(|ds| sample(ds, d.max_eval_samples, seed))
            .transpose()?;
        Ok((train, eval))
    }

    fn test(&self) -> Result<Option<Dataset>> {
        let d = &self.config.data;
        d.test
            .as_deref()
            .map(|f| sample(self.load(f)?, d.max_test_samples, self.config.training.seed))
            .transpose()
    }
}

/// Prepares `ds` as the rows of `task`.
fn split(task: &dyn Task, ds: &Dataset, name: &str, prep: &Prepare<'_>) -> Result<Split> {
    Ok(Split {
        name: name.to_string(),
        source: ds.source_name().to_string(),
        rows: task.rows(ds, prep)?,
    })
}

/// Loads and prepares the splits of `config` as rows of `task`, tokenized with
/// `tokenizer`; `max_positions` is the model's `max_position_embeddings`.
pub fn prepare(
    config: &RunConfig,
    task: &dyn Task,
    tokenizer: &Tokenizer,
    max_positions: usize,
) -> Result<TaskData> {
    let d = &config.data;
    let loader = Loader::new(config)?;
    let (train_ds, eval_ds) = loader.train_and_eval()?;
    let test_ds = loader.test()?;
    let class_names = if task.classifies() {
        class_names(&train_ds, &d.label_column)?
    } else {
        Vec::new()
    };
    let prep = |stage| Prepare {
        data: d,
        tokenizer,
        max_positions,
        class_names: &class_names,
        seed: config.training.seed,
        stage,
    };
    // A classification row is one example: take the first N of the shuffled rows
    // before tokenizing (MLM/NSP rows exist only after grouping, so they are cut below).
    let train_ds = match d.max_train_samples {
        Some(n) if n < train_ds.num_rows() && task.classifies() => {
            train_ds.select(&(0..n).collect::<Vec<_>>())?
        }
        _ => train_ds,
    };
    let mut train = split(task, &train_ds, "train", &prep(Stage::Train))?;
    if let Some(n) = d.max_train_samples {
        train.rows.truncate(n);
    }
    let eval = eval_ds
        .as_ref()
        .map(|ds| split(task, ds, "eval", &prep(Stage::Eval)))
        .transpose()?;
    let test = test_ds
        .as_ref()
        .map(|ds| split(task, ds, "test", &prep(Stage::Eval)))
        .transpose()?;
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

/// The eval and test splits of `config` only: the train file is not read unless
/// `data.validation_split` carves the eval split out of it. `class_names` are the
/// trained model's (its `id2label`).
pub fn prepare_evaluation(
    config: &RunConfig,
    task: &dyn Task,
    tokenizer: &Tokenizer,
    max_positions: usize,
    class_names: &[String],
) -> Result<EvalData> {
    let d = &config.data;
    let loader = Loader::new(config)?;
    let eval_ds = match (&d.eval, d.validation_split) {
        (Some(f), _) => Some(sample(
            loader.load(f)?,
            d.max_eval_samples,
            config.training.seed,
        )?),
        (None, Some(_)) => loader.train_and_eval()?.1,
        (None, None) => None,
    };
    let prep = Prepare {
        data: d,
        tokenizer,
        max_positions,
        class_names,
        seed: config.training.seed,
        stage: Stage::Eval,
    };
    Ok(EvalData {
        eval: eval_ds
            .as_ref()
            .map(|ds| split(task, ds, "eval", &prep))
            .transpose()?,
        test: loader
            .test()?
            .as_ref()
            .map(|ds| split(task, ds, "test", &prep))
            .transpose()?,
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
    let s = col
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| TrainError::Config(format!("column '{column}': not text")))?;
    Ok(Some(s.iter().map(|v| v.map(str::to_string)).collect()))
}

/// The label column as class ids; a missing or out-of-range label is an error naming
/// the file, row and column.
pub fn int_labels(ds: &Dataset, column: &str, names: &[String]) -> Result<Vec<i64>> {
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

pub(crate) fn arrow_err(ds: &Dataset, e: berth_data::arrow::error::ArrowError) -> TrainError {
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
