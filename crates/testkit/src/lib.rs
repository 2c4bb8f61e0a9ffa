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
