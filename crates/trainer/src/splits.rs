//! Which files become which splits: the train, eval and test files (or hub splits)
//! of a config, loaded, shuffled, sampled and prepared as rows of the run's task.

use berth_data::tokenizers::Tokenizer;
use berth_data::{Dataset, Format, HubOptions, LoadOptions, SplitSize, load_hub_split};

use crate::config::RunConfig;
use crate::data::{Prepare, Split, Stage};
use crate::error::{Result, TrainError};
use crate::task::Task;

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
            hub: HubOptions::from_env().at_revision(config.data.hub_revision.as_deref()),
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
/// `tokenizer`; `max_positions` is the most tokens the model's positions cover
/// ([`berth_model::EncoderConfig::max_tokens`]).
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
        task.class_names(&train_ds, &d.label_column)?
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
