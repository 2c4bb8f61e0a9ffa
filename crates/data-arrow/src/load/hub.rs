//! Dataset repos of the Hugging Face hub: a repo's parquet files, split by their paths,
//! like `load_dataset("owner/name")`. Fetching and the offline cache are berth-hub's.

use std::path::PathBuf;

use berth_hub::hf_hub::RepoType;
pub use berth_hub::{HubError, HubOptions, hub_files, hub_model_file};

use super::LoadOptions;
use super::parquet::load_parquet_files;
use crate::dataset::{Dataset, DatasetDict};
use crate::error::{DataError, Result};

fn hub_err(repo: &str, message: impl Into<String>) -> DataError {
    DataError::Hub {
        repo: repo.to_string(),
        message: message.into(),
    }
}

impl From<HubError> for DataError {
    fn from(e: HubError) -> Self {
        DataError::Hub {
            repo: e.repo,
            message: e.message,
        }
    }
}

/// Loads a dataset repo's parquet files as splits, like `load_dataset("owner/name")`:
/// files under a `config` folder when given (else under the only config folder, or
/// `default`), split by their folder (`train/0000.parquet`) or file name prefix
/// (`train-00000-of-00001.parquet`).
pub fn load_hub(
    repo_id: &str,
    config: Option<&str>,
    hub: &HubOptions,
    opts: &LoadOptions,
) -> Result<DatasetDict> {
    let (chosen, by_split) = hub_parquet_splits(repo_id, config, None, hub)?;
    let mut dict = DatasetDict::new();
    for (split, paths) in by_split {
        let name = format!("{repo_id}/{chosen}/{split}");
        dict.insert(split, load_parquet_files(&paths, &name, opts)?);
    }
    Ok(dict)
}

/// One split of a dataset repo, like `load_dataset("owner/name", split="test")`:
/// only that split's parquet files are fetched.
pub fn load_hub_split(
    repo_id: &str,
    config: Option<&str>,
    split: &str,
    hub: &HubOptions,
    opts: &LoadOptions,
) -> Result<Dataset> {
    let (chosen, by_split) = hub_parquet_splits(repo_id, config, Some(split), hub)?;
    let (_, paths) = by_split
        .into_iter()
        .find(|(s, _)| s == split)
        .ok_or_else(|| hub_err(repo_id, format!("config '{chosen}' has no split '{split}'")))?;
    load_parquet_files(&paths, &format!("{repo_id}/{chosen}/{split}"), opts)
}

/// Each split's name and its parquet files.
type SplitFiles = Vec<(String, Vec<PathBuf>)>;

/// The chosen config and its splits' parquet files (sorted, splits in train,
/// validation, test order), fetching only `split`'s files when given.
fn hub_parquet_splits(
    repo_id: &str,
    config: Option<&str>,
    split: Option<&str>,
    hub: &HubOptions,
) -> Result<(String, SplitFiles)> {
    let files = hub_files(repo_id, RepoType::Dataset, hub, &|f| {
        f.ends_with(".parquet")
            && split.is_none_or(|want| config_and_split(f).is_some_and(|(_, s)| s == want))
    })?;
    if files.is_empty() {
        return Err(hub_err(
            repo_id,
            match split {
                Some(s) => format!("has no parquet files for split '{s}'"),
                None => "has no parquet files".to_string(),
            },
        ));
    }
    let configs = config_names(&files);
    let chosen = match config {
        Some(c) => c.to_string(),
        None if configs.len() == 1 => configs[0].clone(),
        None if configs.iter().any(|c| c == "default") => "default".into(),
        None => {
            return Err(hub_err(
                repo_id,
                format!("several configs ({}); name one", configs.join(", ")),
            ));
        }
    };
    let mut by_split: SplitFiles = Vec::new();
    for (rel, local) in &files {
        let Some((cfg, split)) = config_and_split(rel) else {
            continue;
        };
        if cfg != chosen {
            continue;
        }
        match by_split.iter_mut().find(|(s, _)| *s == split) {
            Some((_, v)) => v.push(local.clone()),
            None => by_split.push((split, vec![local.clone()])),
        }
    }
    if by_split.is_empty() {
        return Err(hub_err(
            repo_id,
            format!(
                "no parquet files for config '{chosen}' (configs: {})",
                configs.join(", ")
            ),
        ));
    }
    by_split.sort_by_key(|(s, _)| split_rank(s));
    for (_, paths) in &mut by_split {
        paths.sort();
    }
    Ok((chosen, by_split))
}

fn split_rank(s: &str) -> (u8, String) {
    let r = match s {
        "train" => 0,
        "validation" | "valid" | "dev" => 1,
        "test" => 2,
        _ => 3,
    };
    (r, s.to_string())
}

fn config_names(files: &[(String, PathBuf)]) -> Vec<String> {
    let mut v: Vec<String> = files
        .iter()
        .filter_map(|(f, _)| config_and_split(f).map(|(c, _)| c))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// `(config, split)` of a parquet path in a dataset repo.
fn config_and_split(rel: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = rel.split('/').collect();
    let file = parts.last()?;
    let stem = file.strip_suffix(".parquet")?;
    let from_name = stem
        .split(['-', '_'])
        .next()
        .filter(|s| !s.is_empty() && !s.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string);
    match parts.len() {
        // data.parquet or train-0000.parquet at the root
        1 => Some((
            "default".into(),
            from_name.unwrap_or_else(|| "train".into()),
        )),
        // plain_text/train-....parquet, data/train-....parquet, train/0000.parquet
        2 => {
            let dir = parts[0];
            if dir == "data" {
                Some(("default".into(), from_name?))
            } else if from_name.is_some() && !matches!(from_name.as_deref(), Some("data")) {
                Some((dir.to_string(), from_name?))
            } else {
                Some(("default".into(), dir.to_string()))
            }
        }
        // plain_text/train/0000.parquet (refs/convert/parquet layout)
        _ => Some((
            parts[parts.len() - 3].to_string(),
            parts[parts.len() - 2].to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_configs_follow_hub_layouts() {
        let c = |s: &str| config_and_split(s).map(|(a, b)| format!("{a}:{b}"));
        assert_eq!(
            c("plain_text/train-00000-of-00001.parquet").as_deref(),
            Some("plain_text:train")
        );
        assert_eq!(
            c("plain_text/unsupervised-00000-of-00001.parquet").as_deref(),
            Some("plain_text:unsupervised")
        );
        assert_eq!(
            c("data/test-00000-of-00002.parquet").as_deref(),
            Some("default:test")
        );
        assert_eq!(c("train/0000.parquet").as_deref(), Some("default:train"));
        assert_eq!(
            c("plain_text/validation/0000.parquet").as_deref(),
            Some("plain_text:validation")
        );
        assert_eq!(c("README.md"), None);
    }

    #[test]
    fn offline_without_cache_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_hub(
            "stanfordnlp/imdb",
            None,
            &HubOptions::offline(dir.path()),
            &LoadOptions::in_memory(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("stanfordnlp/imdb") && err.contains("not in the cache"),
            "{err}"
        );
    }
}
