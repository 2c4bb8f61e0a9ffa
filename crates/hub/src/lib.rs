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
    /// Draw a download bar (hf-hub's indicatif bar, on a terminal). Without it, each
    /// download is told in plain lines on stderr, as a redirected log wants them: the
    /// file and its size, each further quarter, and the time it took.
    pub progress: bool,
}

impl HubOptions {
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; offline when
    /// `HF_HUB_OFFLINE` is 1/true/yes/on; `HF_TOKEN`, `HF_ENDPOINT`; revision `main`;
    /// a download bar when stderr is a terminal, plain lines otherwise.
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
        let cache = Cache::new(opts.cache_dir.clone());
        let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
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
            let file = &s.rfilename;
            // As hf-hub's `get`: a file already in the cache is not fetched again.
            let local = match cache.repo(repo.clone()).get(file) {
                Some(path) => Ok(path),
                None if opts.progress => api_repo.download(file),
                None => api_repo.download_with_progress(file, Lines::new(repo_id)),
            }
            .map_err(|e| format!("{file}: {e}"))?;
            out.push((file.clone(), local));
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

/// Download progress as plain lines on stderr, for a log that is not a terminal: the
/// file and its size when it starts, each further quarter of a file of 1 MB or more,
/// and the time it took.
struct Lines {
    /// Where a line goes (stderr; tests collect them).
    say: Box<dyn FnMut(String)>,
    repo: String,
    file: String,
    size: usize,
    done: usize,
    /// The next quarter to report (1 to 3).
    quarter: usize,
    started: std::time::Instant,
    /// The first line is said: hf-hub calls `init` again when the body starts, and
    /// on each retry, each time followed by `update` with the bytes already on disk.
    started_said: bool,
}

impl Lines {
    fn new(repo: &str) -> Self {
        Lines::with_sink(repo, Box::new(|line| eprintln!("{line}")))
    }

    fn with_sink(repo: &str, say: Box<dyn FnMut(String)>) -> Self {
        Lines {
            say,
            repo: repo.to_string(),
            file: String::new(),
            size: 0,
            done: 0,
            quarter: 1,
            started: std::time::Instant::now(),
            started_said: false,
        }
    }
}

/// A byte count as people read it: `812 B`, `1.5 kB`, `90.9 MB`, `1.3 GB`.
fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

impl hf_hub::api::Progress for Lines {
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_string();
        self.size = size;
        self.done = 0;
        if self.started_said {
            return;
        }
        self.started_said = true;
        self.started = std::time::Instant::now();
        (self.say)(format!(
            "downloading {} {} ({})",
            self.repo,
            self.file,
            human_bytes(size)
        ));
    }

    fn update(&mut self, size: usize) {
        self.done += size;
        if self.size < 1_000_000 {
            return;
        }
        while self.quarter < 4 && self.done * 4 >= self.size * self.quarter {
            (self.say)(format!(
                "downloading {} {}: {}% ({} of {})",
                self.repo,
                self.file,
                self.quarter * 25,
                human_bytes(self.done),
                human_bytes(self.size)
            ));
            self.quarter += 1;
        }
    }

    fn finish(&mut self) {
        (self.say)(format!(
            "downloaded {} {} ({} in {:.1} s)",
            self.repo,
            self.file,
            human_bytes(self.size),
            self.started.elapsed().as_secs_f64()
        ));
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

    #[test]
    fn files_download_from_the_endpoint_into_the_cache_layout() {
        const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
        static FILES: [(&str, &[u8]); 2] = [
            ("config.json", b"{\"hidden_size\": 4}"),
            ("vocab.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n"),
        ];
        let files = FILES
            .iter()
            .map(|(f, d)| (f.to_string(), d.to_vec()))
            .collect();
        let (endpoint, seen) = berth_testkit::fake_hub("owner/name", "v1", SHA, files);
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

    #[test]
    fn a_cached_file_is_not_fetched_again() {
        const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";
        let files = vec![
            ("config.json".to_string(), b"{}".to_vec()),
            ("model.safetensors".to_string(), vec![7u8; 2_500]),
        ];
        let (endpoint, seen) = berth_testkit::fake_hub("owner/name", "main", SHA, files);
        let dir = tempfile_dir();
        let opts = HubOptions {
            cache_dir: dir.clone(),
            offline: false,
            revision: "main".into(),
            token: None,
            endpoint: Some(endpoint),
            progress: false,
        };
        let first = hub_files("owner/name", RepoType::Model, &opts, &|_| true).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 5, "info, then 2 per file");
        let again = hub_files("owner/name", RepoType::Model, &opts, &|_| true).unwrap();
        assert_eq!(first, again);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 6, "only the repo info again: {seen:?}");
        assert!(seen[5].starts_with("GET /api/models/owner/name/revision/main "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The lines a [`Lines`] says for `f`'s calls.
    fn said(f: impl FnOnce(&mut Lines)) -> Vec<String> {
        let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = out.clone();
        let mut p = Lines::with_sink("owner/name", Box::new(move |l| sink.borrow_mut().push(l)));
        f(&mut p);
        out.take()
    }

    #[test]
    fn downloads_are_told_at_the_start_each_quarter_and_the_end() {
        use hf_hub::api::Progress;
        let lines = said(|p| {
            p.init(4_000_000, "model.safetensors");
            for _ in 0..8 {
                p.update(500_000);
            }
            p.finish();
        });
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(
            lines[0],
            "downloading owner/name model.safetensors (4.0 MB)"
        );
        assert_eq!(
            lines[1],
            "downloading owner/name model.safetensors: 25% (1.0 MB of 4.0 MB)"
        );
        assert_eq!(
            lines[2],
            "downloading owner/name model.safetensors: 50% (2.0 MB of 4.0 MB)"
        );
        assert_eq!(
            lines[3],
            "downloading owner/name model.safetensors: 75% (3.0 MB of 4.0 MB)"
        );
        assert!(
            lines[4].starts_with("downloaded owner/name model.safetensors (4.0 MB in "),
            "{lines:?}"
        );
        // As hf-hub calls it: `init` before the request and again when the body
        // starts, then `update` with the bytes already on disk; on a retry the same.
        let lines = said(|p| {
            p.init(4_000_000, "model.safetensors");
            p.init(4_000_000, "model.safetensors");
            p.update(0);
            p.update(1_500_000);
            p.init(4_000_000, "model.safetensors");
            p.update(1_500_000);
            p.update(2_500_000);
            p.finish();
        });
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(
            lines[0],
            "downloading owner/name model.safetensors (4.0 MB)"
        );
        assert!(lines[1].ends_with(": 25% (1.5 MB of 4.0 MB)"), "{lines:?}");
        assert!(lines[2].ends_with(": 50% (4.0 MB of 4.0 MB)"), "{lines:?}");
        assert!(lines[3].ends_with(": 75% (4.0 MB of 4.0 MB)"), "{lines:?}");
        // One update past several quarters says each; small files only start and end.
        let lines = said(|p| {
            p.init(2_000_000, "f");
            p.update(2_000_000);
        });
        assert_eq!(lines.len(), 4, "{lines:?}");
        let lines = said(|p| {
            p.init(900_000, "config.json");
            p.update(900_000);
            p.finish();
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_000), "1.0 kB");
        assert_eq!(human_bytes(90_868_376), "90.9 MB");
        assert_eq!(human_bytes(1_340_000_000), "1.3 GB");
        assert_eq!(human_bytes(5_000_000_000_000_000), "5000.0 TB");
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
