//! Whether resuming a checkpoint with the current configuration continues the same
//! run: its `training_config.toml` and the current configuration must agree on
//! everything that changes the result. Raising `max_steps` or `num_train_epochs`
//! (as HF allows) and changing how the run logs, evaluates, saves or where it reads
//! and writes stay allowed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::RunConfig;
use crate::error::{Result, TrainError};

/// Keys (flattened, `section.key`) a resume may change: none of them changes the
/// weights a step computes. Everything else (model, data files and columns, seed,
/// the task and its section, batch sizes, accumulation, learning rate, schedule,
/// precision, ...) must be as the checkpoint was trained.
const MAY_CHANGE: &[&str] = &[
    "training.max_steps",
    "training.num_train_epochs",
    "training.output_dir",
    "training.resume_from_checkpoint",
    "training.overwrite_output_dir",
    "training.logging_steps",
    "training.eval_strategy",
    "training.eval_steps",
    "training.save_strategy",
    "training.save_steps",
    "training.save_total_limit",
    "training.load_best_model_at_end",
    "training.metric_for_best_model",
    "training.greater_is_better",
    "training.early_stopping_patience",
    "training.early_stopping_threshold",
    "training.per_device_eval_batch_size",
    "training.disable_tqdm",
    "training.report_to",
    "training.device",
    "data.data_dir",
    "data.eval",
    "data.test",
    "data.max_eval_samples",
    "data.max_test_samples",
    "chunking.eval_max_text_len",
];

/// The configuration's values by flattened key (`training.seed`, `model`, ...).
fn flatten(config: &RunConfig) -> Result<BTreeMap<String, toml::Value>> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let value = toml::Value::try_from(config)
        .map_err(|e| TrainError::internal(format!("the run configuration as TOML: {e}")))?;
    let mut out = BTreeMap::new();
    walk("", &value, &mut out);
    Ok(out)
}

/// A changed key with its value before and now (`None` where a side does not set it).
type Change = (String, Option<toml::Value>, Option<toml::Value>);

/// The keys that differ between `trained` and `now` and change the result, in key
/// order.
pub(crate) fn changed(trained: &RunConfig, now: &RunConfig) -> Result<Vec<Change>> {
    let (a, b) = (flatten(trained)?, flatten(now)?);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| !MAY_CHANGE.contains(&k.as_str()))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), a.get(k).cloned(), b.get(k).cloned()))
        .collect())
}

/// Refuses to resume `checkpoint` with `now` when its `training_config.toml` differs
/// in what changes the result, naming each key with both values. A checkpoint
/// without that file (or one this Berth cannot read) is resumed with a warning: its
/// seed and rank count are still checked from its state.
pub(crate) fn check(checkpoint: &Path, now: &RunConfig) -> Result<()> {
    let path = checkpoint.join("training_config.toml");
    let trained = match std::fs::read_to_string(&path) {
        Ok(text) => RunConfig::from_toml(&text, &[], &path.display().to_string()),
        Err(e) => Err(TrainError::io(&path, e)),
    };
    let trained = match trained {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "{}: cannot compare the checkpoint's configuration with this run's ({e}); resuming without that check",
                checkpoint.display()
            );
            return Ok(());
        }
    };
    let diff = changed(&trained, now)?;
    if diff.is_empty() {
        return Ok(());
    }
    let show = |v: &Option<toml::Value>| v.as_ref().map_or("(not set)".into(), |v| v.to_string());
    let list = diff
        .iter()
        .map(|(k, a, b)| format!("{k} {} -> {}", show(a), show(b)))
        .collect::<Vec<_>>()
        .join(", ");
    Err(TrainError::checkpoint(
        checkpoint,
        format!(
            "was trained with another configuration: {list}; resuming would not continue the same run. Resume with the checkpoint's values (its training_config.toml), or start a new run (another output_dir, or overwrite_output_dir = true)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"
task = "classification"
model = "m"
[data]
train = "train.csv"
eval = "dev.csv"
[training]
output_dir = "out"
max_steps = 10
seed = 42
learning_rate = 5e-5
"#;

    fn with(sets: &[&str]) -> RunConfig {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RunConfig::from_toml(RUN, &sets, "run.toml").unwrap()
    }

    #[test]
    fn what_changes_the_result_is_named_and_the_rest_may_change() {
        let base = with(&[]);
        assert!(changed(&base, &base).unwrap().is_empty());
        let allowed = with(&[
            "max_steps=20",
            "logging_steps=1",
            "save_steps=2",
            "eval_strategy=\"steps\"",
            "eval_steps=2",
            "per_device_eval_batch_size=64",
            "output_dir=\"elsewhere\"",
            "resume_from_checkpoint=\"latest\"",
            "device=\"cpu\"",
            "data.test=\"test.csv\"",
        ]);
        assert!(changed(&base, &allowed).unwrap().is_empty());
        let diff = changed(
            &base,
            &with(&["seed=7", "learning_rate=3e-5", "data.train=\"other.csv\""]),
        )
        .unwrap();
        let keys: Vec<&str> = diff.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(
            keys,
            ["data.train", "training.learning_rate", "training.seed"]
        );
        assert_eq!(diff[2].1, Some(toml::Value::Integer(42)));
        assert_eq!(diff[2].2, Some(toml::Value::Integer(7)));
        // A key one side does not set counts.
        let diff = changed(&base, &with(&["data.text_column=\"review\""])).unwrap();
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert_eq!(diff[0].0, "data.text_column");
    }

    #[test]
    fn a_checkpoint_trained_otherwise_is_refused_naming_the_keys() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("training_config.toml"),
            with(&[]).to_toml().unwrap(),
        )
        .unwrap();
        check(d.path(), &with(&["max_steps=30"])).unwrap();
        let e = check(
            d.path(),
            &with(&["seed=7", "per_device_train_batch_size=4"]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("training.seed 42 -> 7")
                && e.contains("training.per_device_train_batch_size 8 -> 4")
                && e.contains("training_config.toml"),
            "{e}"
        );
        // Without the file there is nothing to compare: resumed (with a warning).
        let bare = tempfile::tempdir().unwrap();
        check(bare.path(), &with(&["seed=7"])).unwrap();
    }
}
