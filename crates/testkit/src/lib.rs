//! Fixtures shared by Berth's tests: the real data directory and the MiniLM model
//! that `cargo xtask fixtures` installs. When `BERTH_REQUIRE_FIXTURES=1` (as
//! `cargo xtask ci` sets) a missing fixture panics, so CI never skips silently;
//! otherwise the test says it is skipping and returns early.

use std::path::{Path, PathBuf};

/// The workspace root (this crate sits at `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// `$BERTH_DATA_DIR`, or `../shared/data` beside the workspace.
pub fn data_dir_path() -> PathBuf {
    match std::env::var_os("BERTH_DATA_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/data"),
    }
}

/// `$BERTH_CACHE`, or `~/.cache/berth` (as `cargo xtask fixtures` uses).
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/berth")
}

/// Where `cargo xtask fixtures` unpacks all-MiniLM-L6-v2.
pub fn minilm_path() -> PathBuf {
    cache_root().join("models/all-MiniLM-L6-v2")
}

fn required() -> bool {
    std::env::var("BERTH_REQUIRE_FIXTURES").is_ok_and(|v| v == "1")
}

fn present_or_skip(what: &str, path: PathBuf, probe: &str) -> Option<PathBuf> {
    if path.join(probe).exists() {
        return Some(path);
    }
    if required() {
        panic!(
            "fixture missing: {what} at {} (run `cargo xtask fixtures`; BERTH_REQUIRE_FIXTURES=1)",
            path.display()
        );
    }
    eprintln!("SKIPPED: fixture missing: {what} at {}", path.display());
    None
}

/// What a test needs from the machine (a tool, a privilege) is missing: panics when
/// fixtures are required (CI), else says the test is skipping.
pub fn missing(what: &str) {
    if required() {
        panic!("missing: {what} (BERTH_REQUIRE_FIXTURES=1)");
    }
    eprintln!("SKIPPED: missing: {what}");
}

/// The real-data directory, if present (panics when required and missing).
pub fn data_dir() -> Option<PathBuf> {
    present_or_skip("shared data", data_dir_path(), "README.md")
}

/// The all-MiniLM-L6-v2 model directory (config.json, model.safetensors,
/// tokenizer.json, vocab.txt), if installed (panics when required and missing).
pub fn minilm_dir() -> Option<PathBuf> {
    present_or_skip("all-MiniLM-L6-v2", minilm_path(), "tokenizer.json")
}

/// The transformers version `cargo xtask fixtures` installs (no torch) for the tests
/// that open Berth's outputs with Hugging Face's own code.
pub const TRANSFORMERS_VERSION: &str = "5.24.0";
/// The tensorboard version installed beside it (its event reader).
pub const TENSORBOARD_VERSION: &str = "2.20.0";

/// Where `cargo xtask fixtures` installs transformers and tensorboard
/// (`pip install --target`).
pub fn transformers_path() -> PathBuf {
    cache_root().join(format!(
        "python/transformers-{TRANSFORMERS_VERSION}-tensorboard-{TENSORBOARD_VERSION}"
    ))
}

/// A `python3` command that imports that transformers (through `PYTHONPATH`), if
/// installed (panics when required and missing).
pub fn python_with_transformers() -> Option<std::process::Command> {
    let dir = present_or_skip(
        "python transformers",
        transformers_path(),
        "transformers/__init__.py",
    )?;
    let mut cmd = std::process::Command::new("python3");
    cmd.env("PYTHONPATH", dir)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1");
    Some(cmd)
}

/// What a [`fake_hub`] was asked: each request line with its `Authorization` header,
/// as `GET /path HTTP/1.1 | Bearer hf_...`.
pub type HubRequests = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A hub on 127.0.0.1 (pass its address as `HF_ENDPOINT`) that has the model repo
/// `repo` with `files` at `revision` (commit `sha`), answering as huggingface.co
/// answers hf-hub: the repo info, then per file a one-byte range for its etag, commit
/// and size, then the bytes from an offset. Anything else is a 404. It serves until
/// the test process ends.
pub fn fake_hub(
    repo: &str,
    revision: &str,
    sha: &str,
    files: Vec<(String, Vec<u8>)>,
) -> (String, HubRequests) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let seen = HubRequests::default();
    let log = seen.clone();
    let (repo, revision, sha) = (repo.to_string(), revision.to_string(), sha.to_string());
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
            if let Ok(mut log) = log.lock() {
                log.push(format!("{line} | {}", header("authorization")));
            }
            let path = line.split(' ').nth(1).unwrap_or_default().to_string();
            let (status, extra, body): (&str, String, Vec<u8>) = if path
                == format!("/api/models/{repo}/revision/{revision}")
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
                .find(|(f, _)| path == format!("/{repo}/resolve/{revision}/{f}"))
            {
                // "bytes=0-0" (metadata) or "bytes=N-" (the download).
                let range = header("range");
                let spec = range.trim_start_matches("bytes=");
                let (from, to) = spec.split_once('-').unwrap_or(("0", ""));
                let last = data.len().saturating_sub(1);
                let from: usize = from.parse().unwrap_or(0);
                let to: usize = to.parse().map_or(last, |t: usize| t.min(last));
                let body = data.get(from..=to).unwrap_or_default().to_vec();
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
