//! The Hugging Face hub through `hf-hub`: a dataset repo's parquet files, split by
//! their paths, and single files of model repos (tokenizers, weights). Honours
//! `HF_HOME`, `HF_HUB_CACHE` and `HF_HUB_OFFLINE`; offline, or when the hub cannot be
//! reached, files come from the cache laid out as `huggingface_hub` and hf-hub lay it
//! out (`<kind>s--owner--name/{refs,snapshots}`).

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use super::LoadOptions;
use super::parquet::load_parquet_files;
use crate::dataset::{Dataset, DatasetDict};
use crate::error::{DataError, Result};

/// Where hub files come from.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// The hub cache directory (the `hub/` folder of `HF_HOME`).
    pub cache_dir: PathBuf,
    /// Use only the cache, never the network.
    pub offline: bool,
    /// A branch, tag or commit sha.
    pub revision: String,
}

impl HubOptions {
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; offline when
    /// `HF_HUB_OFFLINE` is 1/true/yes/on; revision `main`.
    pub fn from_env() -> Self {
        let cache_dir = match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => Cache::from_env().path().clone(),
        };
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        HubOptions {
            cache_dir,
            offline,
            revision: "main".into(),
        }
    }

    /// Offline, reading `cache_dir` only.
    pub fn offline(cache_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            cache_dir: cache_dir.into(),
            offline: true,
            revision: "main".into(),
        }
    }
}

/// A repo's snapshot directory in the cache and the files in it (relative paths).
fn cached_snapshot(repo: &Repo, opts: &HubOptions) -> Option<(PathBuf, Vec<String>)> {
    let root = opts.cache_dir.join(repo.folder_name());
    let rev = repo.revision();
    let commit = if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        rev.to_string()
    } else {
        std::fs::read_to_string(root.join("refs").join(rev))
            .ok()?
            .trim()
            .to_string()
    };
    let snap = root.join("snapshots").join(commit);
    let mut files = Vec::new();
    collect_files(&snap, &snap, &mut files);
    files.sort();
    Some((snap, files))
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn hub_err(repo: &str, message: impl Into<String>) -> DataError {
    DataError::Hub {
        repo: repo.to_string(),
        message: message.into(),
    }
}

/// Fetches the files of `repo_id` that `want` selects (all of them downloaded into
/// the cache when online), returning their local paths keyed by repo path.
pub fn hub_files(
    repo_id: &str,
    repo_type: RepoType,
    opts: &HubOptions,
    want: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, PathBuf)>> {
    let repo = Repo::with_revision(repo_id.to_string(), repo_type, opts.revision.clone());
    let from_cache = || -> Result<Vec<(String, PathBuf)>> {
        let (snap, files) = cached_snapshot(&repo, opts).ok_or_else(|| {
            hub_err(
                repo_id,
                format!(
                    "revision '{}' is not in the cache {}{}",
                    opts.revision,
                    opts.cache_dir.display(),
                    if opts.offline {
                        " (offline: HF_HUB_OFFLINE is set)"
                    } else {
                        ""
                    }
                ),
            )
        })?;
        Ok(files
            .into_iter()
            .filter(|f| want(f))
            .map(|f| (f.clone(), snap.join(&f)))
            .collect())
    };
    if opts.offline {
        return from_cache();
    }
    let online = || -> std::result::Result<Vec<(String, PathBuf)>, String> {
        let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(opts.cache_dir.clone()))
            .with_progress(false)
            .build()
            .map_err(|e| e.to_string())?;
        let api_repo = api.repo(repo.clone());
        let info = api_repo.info().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for s in info.siblings.iter().filter(|s| want(&s.rfilename)) {
            let local = api_repo.get(&s.rfilename).map_err(|e| e.to_string())?;
            out.push((s.rfilename.clone(), local));
        }
        Ok(out)
    };
    match online() {
        Ok(files) => Ok(files),
        Err(net) => {
            tracing::warn!("hub repo '{repo_id}' unreachable ({net}); using the local cache");
            from_cache().map_err(|e| hub_err(repo_id, format!("{e}; online: {net}")))
        }
    }
}

/// One file of a model repo (e.g. `tokenizer.json`), from the cache or the hub.
pub fn hub_model_file(repo_id: &str, filename: &str, opts: &HubOptions) -> Result<PathBuf> {
    hub_files(repo_id, RepoType::Model, opts, &|f| f == filename)?
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .ok_or_else(|| hub_err(repo_id, format!("has no file '{filename}'")))
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
