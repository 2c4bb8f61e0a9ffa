//! The Hugging Face hub through `hf-hub`: the files of a model or dataset repo, from
//! the network or from the cache laid out as `huggingface_hub` and hf-hub lay it out
//! (`<kind>s--owner--name/{refs,snapshots}`). Honours `HF_HOME`, `HF_HUB_CACHE`,
//! `HF_HUB_OFFLINE`, `HF_TOKEN` (else the token file `huggingface-cli login` writes)
//! and `HF_ENDPOINT`; offline, or when the hub cannot be reached, files come from the
//! cache. Used by berth-data (datasets, tokenizers) and berth-model (weights), so the
//! model crate needs no Arrow or Parquet to resolve a hub id.

use std::path::{Path, PathBuf};

pub use hf_hub;
use hf_hub::{Cache, Repo, RepoType};

/// A hub repo that could not be read, with why.
#[derive(Debug, thiserror::Error)]
#[error("hub repo '{repo}': {message}")]
pub struct HubError {
    pub repo: String,
    pub message: String,
}

/// Where hub files come from.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// The hub cache directory (the `hub/` folder of `HF_HOME`).
    pub cache_dir: PathBuf,
    /// Use only the cache, never the network.
    pub offline: bool,
    /// A branch, tag or commit sha.
    pub revision: String,
    /// Sent as `Authorization: Bearer` (private and gated repos): `HF_TOKEN`, else
    /// hf-hub's token file under `HF_HOME`.
    pub token: Option<String>,
    /// The hub's address (`HF_ENDPOINT`, e.g. a mirror); default huggingface.co.
    pub endpoint: Option<String>,
    /// Show download progress (on a terminal).
    pub progress: bool,
}

impl HubOptions {
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; offline when
    /// `HF_HUB_OFFLINE` is 1/true/yes/on; `HF_TOKEN`, `HF_ENDPOINT`; revision `main`;
    /// download progress on a terminal.
    pub fn from_env() -> Self {
        let mut o = Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        o.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        o
    }

    /// [`HubOptions::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let cache = Cache::from_env();
        let cache_dir = match var("HF_HUB_CACHE") {
            Some(d) => PathBuf::from(d),
            None => cache.path().clone(),
        };
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        HubOptions {
            cache_dir,
            offline,
            revision: "main".into(),
            token: var("HF_TOKEN").or_else(|| cache.token()),
            endpoint: var("HF_ENDPOINT"),
            progress: false,
        }
    }

    /// Offline, reading `cache_dir` only.
    pub fn offline(cache_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            cache_dir: cache_dir.into(),
            offline: true,
            revision: "main".into(),
            token: None,
            endpoint: None,
            progress: false,
        }
    }

    /// The same, at `revision` (a branch, tag or commit; `None` keeps this one).
    pub fn at_revision(mut self, revision: Option<&str>) -> Self {
        if let Some(r) = revision {
            self.revision = r.to_string();
        }
        self
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

fn hub_err(repo: &str, message: impl Into<String>) -> HubError {
    HubError {
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
) -> Result<Vec<(String, PathBuf)>, HubError> {
    let repo = Repo::with_revision(repo_id.to_string(), repo_type, opts.revision.clone());
    let from_cache = || -> Result<Vec<(String, PathBuf)>, HubError> {
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
        let mut builder =
            hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(opts.cache_dir.clone()))
                .with_progress(opts.progress)
                .with_token(opts.token.clone());
        if let Some(e) = &opts.endpoint {
            builder = builder.with_endpoint(e.trim_end_matches('/').to_string());
        }
        let api = builder.build().map_err(|e| e.to_string())?;
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
pub fn hub_model_file(
    repo_id: &str,
    filename: &str,
    opts: &HubOptions,
) -> Result<PathBuf, HubError> {
    hub_files(repo_id, RepoType::Model, opts, &|f| f == filename)?
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .ok_or_else(|| hub_err(repo_id, format!("has no file '{filename}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with `models--owner--name`, its `main` ref and one snapshot.
    fn fake_cache(root: &Path) {
        let repo = root.join("models--owner--name");
        let sha = "a".repeat(40);
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), &sha).unwrap();
        let snap = repo.join("snapshots").join(&sha);
        std::fs::create_dir_all(snap.join("sub")).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("sub/tokenizer.json"), "{}").unwrap();
    }

    #[test]
    fn offline_files_come_from_the_cache_layout() {
        let dir = tempfile_dir();
        fake_cache(&dir);
        let opts = HubOptions::offline(&dir);
        let files = hub_files("owner/name", RepoType::Model, &opts, &|_| true).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["config.json", "sub/tokenizer.json"]);
        assert!(files.iter().all(|(_, p)| p.is_file()));
        let p = hub_model_file("owner/name", "config.json", &opts).unwrap();
        assert!(p.ends_with("config.json"));
        let missing = hub_model_file("owner/name", "model.safetensors", &opts).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("has no file 'model.safetensors'"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_uncached_repo_offline_names_the_repo_revision_and_cache() {
        let dir = tempfile_dir();
        let opts = HubOptions::offline(&dir);
        let e = hub_files("owner/absent", RepoType::Model, &opts, &|_| true).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("owner/absent") && msg.contains("'main'"),
            "{msg}"
        );
        assert!(msg.contains("offline"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh directory under the system temp dir (no tempfile dependency here).
    #[test]
    fn token_and_endpoint_come_from_the_environment() {
        let o = HubOptions::from_vars(|k| match k {
            "HF_TOKEN" => Some("hf_abc".into()),
            "HF_ENDPOINT" => Some("https://mirror.example".into()),
            "HF_HUB_OFFLINE" => Some("1".into()),
            _ => None,
        });
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert_eq!(o.endpoint.as_deref(), Some("https://mirror.example"));
        assert!(o.offline);
        assert_eq!(o.at_revision(Some("v2")).revision, "v2");
    }

    #[test]
    fn the_endpoint_token_and_revision_reach_the_hub() {
        use std::io::{Read, Write};
        let dir = tempfile_dir();
        fake_cache(&dir);
        // The same snapshot under a tag, for the fallback once the hub says 404.
        std::fs::write(dir.join("models--owner--name/refs/v1"), "a".repeat(40)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            String::from_utf8_lossy(&head).to_lowercase()
        });
        let opts = HubOptions {
            cache_dir: dir.clone(),
            offline: false,
            revision: "v1".into(),
            token: Some("hf_test".into()),
            endpoint: Some(format!("http://{addr}/")),
            progress: false,
        };
        let files = hub_files("owner/name", RepoType::Model, &opts, &|_| true).unwrap();
        assert_eq!(files.len(), 2);
        let head = server.join().unwrap();
        assert!(
            head.starts_with("get /api/models/owner/name/revision/v1"),
            "{head}"
        );
        assert!(head.contains("authorization: bearer hf_test"), "{head}");
    }

    /// A hub at `HF_ENDPOINT` that has `files` at `revision` (commit `sha`), as
    /// huggingface.co answers hf-hub: the repo info, then per file a one-byte range
    /// for its etag, commit and size, then the bytes from an offset. Every request
    /// line and its authorization header are recorded.
    fn fake_hub(
        revision: &'static str,
        sha: &'static str,
        files: &'static [(&'static str, &'static [u8])],
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let line = head.lines().next().unwrap_or_default().to_string();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                log.lock()
                    .unwrap()
                    .push(format!("{line} | {}", header("authorization")));
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                let (status, extra, body): (&str, String, Vec<u8>) = if path
                    == format!("/api/models/owner/name/revision/{revision}")
                {
                    let siblings: Vec<String> = files
                        .iter()
                        .map(|(f, _)| format!("{{\"rfilename\":\"{f}\"}}"))
                        .collect();
                    let json = format!(
                        "{{\"siblings\":[{}],\"sha\":\"{sha}\"}}",
                        siblings.join(",")
                    );
                    ("200 OK", String::new(), json.into_bytes())
                } else if let Some((_, data)) = files
                    .iter()
                    .find(|(f, _)| path == format!("/owner/name/resolve/{revision}/{f}"))
                {
                    // "bytes=0-0" (metadata) or "bytes=N-" (the download).
                    let range = header("range");
                    let spec = range.trim_start_matches("bytes=");
                    let (from, to) = spec.split_once('-').unwrap_or(("0", ""));
                    let from: usize = from.parse().unwrap_or(0);
                    let to: usize = to
                        .parse()
                        .map_or(data.len().saturating_sub(1), |t: usize| t);
                    let body = data[from.min(data.len())..=to.min(data.len() - 1)].to_vec();
                    let extra = format!(
                        "x-repo-commit: {sha}\r\netag: \"etag-{}\"\r\nContent-Range: bytes {from}-{to}/{}\r\n",
                        data.len(),
                        data.len()
                    );
                    ("206 Partial Content", extra, body)
                } else {
                    ("404 Not Found", String::new(), Vec::new())
                };
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = s.write_all(&body);
            }
        });
        (format!("http://{addr}"), seen)
    }

    #[test]
    fn files_download_from_the_endpoint_into_the_cache_layout() {
        const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
        static FILES: [(&str, &[u8]); 2] = [
            ("config.json", b"{\"hidden_size\": 4}"),
            ("vocab.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n"),
        ];
        let (endpoint, seen) = fake_hub("v1", SHA, &FILES);
        let dir = tempfile_dir();
        let opts = HubOptions {
            cache_dir: dir.clone(),
            offline: false,
            revision: "v1".into(),
            token: Some("hf_test".into()),
            endpoint: Some(endpoint),
            // hf-hub's indicatif bar; with stderr not a terminal it draws nothing.
            progress: true,
        };
        let files = hub_files("owner/name", RepoType::Model, &opts, &|_| true).unwrap();
        let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, vec!["config.json", "vocab.txt"]);
        for ((_, path), (_, want)) in files.iter().zip(&FILES) {
            assert_eq!(std::fs::read(path).unwrap(), *want, "{}", path.display());
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.len(),
            5,
            "info, then a range and a download per file: {seen:?}"
        );
        assert!(
            seen[0].starts_with("GET /api/models/owner/name/revision/v1 "),
            "{seen:?}"
        );
        assert!(
            seen.iter().all(|l| l.ends_with("| Bearer hf_test")),
            "{seen:?}"
        );
        // The layout hf-hub and huggingface_hub share: the tag's ref names the
        // commit, whose snapshot holds the files; offline finds them there.
        let repo = dir.join("models--owner--name");
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/v1"))
                .unwrap()
                .trim(),
            SHA
        );
        assert!(repo.join("snapshots").join(SHA).join("vocab.txt").exists());
        let offline = HubOptions::offline(&dir).at_revision(Some("v1"));
        let again = hub_files("owner/name", RepoType::Model, &offline, &|f| {
            f == "vocab.txt"
        })
        .unwrap();
        assert_eq!(std::fs::read(&again[0].1).unwrap(), FILES[1].1);
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "berth-hub-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
