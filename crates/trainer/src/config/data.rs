//! `[data]`: where the rows come from and which columns mean what.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the rows come from and which columns mean what.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Relative file names are taken from here; default `$BERTH_DATA_DIR`, else
    /// `../shared/data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// A dataset repo on the Hugging Face hub (`owner/name`) to read instead of
    /// files: `train`, `eval` and `test` then name its splits, read from its parquet
    /// files through hf-hub (cached; `HF_HUB_OFFLINE`, `HF_HUB_CACHE` honoured), as
    /// `load_dataset(hub, hub_config, split=...)`.
    #[serde(default)]
    pub hub: Option<String>,
    /// The repo's config (e.g. `mrpc` of `nyu-mll/glue`); needed when it has several.
    #[serde(default)]
    pub hub_config: Option<String>,
    /// The branch, tag or commit of `hub` (`load_dataset(revision=...)`).
    #[serde(default)]
    pub hub_revision: Option<String>,
    /// A file under `data_dir` (or a path), or with `hub` a split name.
    pub train: String,
    #[serde(default)]
    pub eval: Option<String>,
    /// Evaluated once after training (metrics prefixed `test_`).
    #[serde(default)]
    pub test: Option<String>,
    /// Carve the eval split out of train when `eval` is not given (HF
    /// `train_test_split(test_size)`, seeded by `training.seed`).
    #[serde(default)]
    pub validation_split: Option<f64>,
    /// `parquet`, `csv`, `tsv`, `json` or `text`; by extension when absent.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    #[serde(default)]
    pub pair_column: Option<String>,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    /// Truncation for classification / MLM rows (default: the model's positions).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Use only the first N training rows (after shuffling with `training.seed`).
    #[serde(default)]
    pub max_train_samples: Option<usize>,
    /// Evaluate on a random sample of N eval rows (seeded by `training.seed`, kept in
    /// file order). HF's run_glue takes the first N; a file sorted by label (IMDB's)
    /// would then give one class.
    #[serde(default)]
    pub max_eval_samples: Option<usize>,
    /// The same for the test split.
    #[serde(default)]
    pub max_test_samples: Option<usize>,
}

impl DataConfig {
    /// Rows read from `text_column` (and `pair_column`) only: no files, as
    /// `berth predict` reads its input.
    pub fn for_columns(text_column: &str, pair_column: Option<&str>) -> Self {
        DataConfig {
            data_dir: None,
            hub: None,
            hub_config: None,
            hub_revision: None,
            train: String::new(),
            eval: None,
            test: None,
            validation_split: None,
            format: None,
            text_column: text_column.to_string(),
            pair_column: pair_column.map(str::to_string),
            label_column: default_label_column(),
            max_length: None,
            max_train_samples: None,
            max_eval_samples: None,
            max_test_samples: None,
        }
    }
}

fn default_text_column() -> String {
    "text".into()
}
fn default_label_column() -> String {
    "label".into()
}
