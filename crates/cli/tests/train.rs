//! `berth train` and `berth eval` end to end on real data (MRPC pairs) with the real
//! MiniLM, a few steps only.

mod common;

use common::{berth_ok, berth_output, berth_output_env};

#[test]
fn train_then_eval_mrpc_pairs() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cfg = tmp.path().join("mrpc.toml");
    std::fs::write(
        &cfg,
        format!(
            r##"task = "classification"
model = {model:?}
{data}[training]
output_dir = {out:?}
max_steps = 4
per_device_train_batch_size = 8
per_device_eval_batch_size = 16
learning_rate = 5e-5
eval_strategy = "steps"
eval_steps = 2
save_strategy = "steps"
save_steps = 2
save_total_limit = 1
load_best_model_at_end = true
metric_for_best_model = "accuracy"
logging_steps = 1
"##,
            model = model.display().to_string(),
            data = common::mrpc_data(&data, 64, 48, 32),
            out = out.display().to_string(),
        ),
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    let o = berth_output(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "seed=3",
            "--set",
            "report_to=[\"tensorboard\"]",
        ],
        &cache,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("eval_accuracy") && stdout.contains("train_loss"),
        "{stdout}"
    );
    assert!(stderr.contains("step 4/4"), "{stderr}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "trainer_state.json",
        "metrics.jsonl",
        "loss_curve.png",
        "report.md",
        "run_config.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // save_total_limit 1 keeps one checkpoint, and it is the best one.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap())
            .unwrap();
    let kept: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        state["best_model_checkpoint"]
            .as_str()
            .unwrap()
            .ends_with(&kept[0]),
        "{state}"
    );
    assert_eq!(state["global_step"], 4);
    let run_config = std::fs::read_to_string(out.join("run_config.toml")).unwrap();
    assert!(run_config.contains("seed = 3"), "{run_config}");

    // eval on the trained model gives the numbers the run logged for the best step,
    // without the train file (class names come from the checkpoint).
    let metrics = tmp.path().join("metrics.json");
    berth_ok(
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "seed=3",
            "--set",
            "data.train=\"no-such-train-file.tsv\"",
            "--output",
            metrics.to_str().unwrap(),
        ],
        &cache,
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    let best = state["best_metric"].as_f64().unwrap();
    assert!(
        (m["eval_accuracy"].as_f64().unwrap() - best).abs() < 1e-9,
        "{m} vs best {best}"
    );

    // The TensorBoard scalars, read with tensorboard's own reader, are metrics.jsonl.
    tensorboard_equals_metrics_log(&out);

    // transformers opens the run directory and the checkpoint as they are.
    let checkpoint = out.join(&kept[0]);
    let checkpoint_step: u64 = kept[0]["checkpoint-".len()..].parse().unwrap();
    opens_in_transformers(&[(&out, 4), (&checkpoint, checkpoint_step)]);
    // berth predict reads the checkpoint alone (it carries its tokenizer).
    let input = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"#1 String\": \"He said so.\", \"#2 String\": \"He did say it.\"}\n",
    )
    .unwrap();
    let predicted = tmp.path().join("predicted.jsonl");
    berth_ok(
        &[
            "predict",
            "--model",
            checkpoint.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--text-column",
            "#1 String",
            "--pair-column",
            "#2 String",
            "--output",
            predicted.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(
        std::fs::read_to_string(&predicted)
            .unwrap()
            .contains("probabilities")
    );
}

/// `scripts/check_hf_run.py` on `dirs`: transformers' TrainerState, AutoConfig and
/// AutoTokenizer read each, and the tokenizer gives Berth's ids.
fn opens_in_transformers(dirs: &[(&std::path::Path, u64)]) {
    let Some(mut python) = berth_testkit::python_with_transformers() else {
        return;
    };
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Don't tokenize Zürich's naïve café wrongly!",
        "",
    ];
    let script = berth_testkit::workspace_root().join("scripts/check_hf_run.py");
    let mut child = python
        .arg(&script)
        .args(dirs.iter().map(|d| d.0))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&texts).unwrap().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for &(d, steps) in dirs {
        let r = &got[d.to_str().unwrap()];
        assert_eq!(r["global_step"], steps, "{r}");
        assert_eq!(r["id2label"]["1"], "1", "{r}");
        // BertTokenizerFast in transformers 4, BertTokenizer (fast) in 5.
        assert!(
            r["tokenizer_class"]
                .as_str()
                .unwrap()
                .starts_with("BertTokenizer")
                && r["is_fast"] == true,
            "{r}"
        );
        let mut tok =
            berth_data::tokenizers::Tokenizer::from_file(d.join("tokenizer.json")).unwrap();
        // MiniLM's tokenizer.json pads to 128; transformers pads only when asked.
        tok.with_padding(None);
        for (i, t) in texts.iter().enumerate() {
            let ours: Vec<u32> = tok.encode(*t, true).unwrap().get_ids().to_vec();
            let theirs: Vec<u32> = r["ids"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ours, theirs, "{t:?} in {}", d.display());
        }
    }
}

#[test]
fn config_mistakes_name_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "task = \"classification\"\nmodel = \"m\"\n[data]\ntrain = \"x.jsonl\"\n[training]\nlearning_rat = 1e-4\n",
    )
    .unwrap();
    let o = berth_output(&["train", "--config", cfg.to_str().unwrap()], tmp.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("learning_rat"),
        "{err}"
    );

    // The same mistake made with --set is caught the same way.
    std::fs::write(
        &cfg,
        "task = \"classification\"\nmodel = \"m\"\n[data]\ntrain = \"x.jsonl\"\n",
    )
    .unwrap();
    let o = berth_output(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "training.learning_rat=1e-4",
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("learning_rat"), "{err}");

    // Without the `cuda` feature, asking for a GPU says how to get one.
    let o = berth_output(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "device=cuda",
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`cuda` feature"), "{err}");

    // A model that is not there is named.
    let o = berth_output(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "model=\"/nonexistent-model\"",
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent-model"), "{err}");
}

/// `[data] hub` reads a dataset repo's parquet splits through an hf-hub cache, as
/// `load_dataset("stanfordnlp/imdb", split=...)`; only the named splits are read.
#[test]
fn train_reads_a_hub_dataset_from_an_offline_cache() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The cache as hf-hub lays it out: refs/main names a snapshot whose files are
    // links (into blobs/ there; to the shared copies of the same files here).
    let hub = tmp.path().join("hub");
    let commit = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31";
    let repo = hub.join("datasets--stanfordnlp--imdb");
    let snap = repo.join("snapshots").join(commit).join("plain_text");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for split in ["train", "test"] {
        std::os::unix::fs::symlink(
            data.join(format!("imdb/{split}.parquet")),
            snap.join(format!("{split}-00000-of-00001.parquet")),
        )
        .unwrap();
    }
    // A split the run does not name is never opened.
    std::fs::write(
        snap.join("unsupervised-00000-of-00001.parquet"),
        "not parquet",
    )
    .unwrap();

    let out = tmp.path().join("run");
    let cfg = tmp.path().join("imdb-hub.toml");
    std::fs::write(
        &cfg,
        format!(
            r##"task = "chunk_classification"
model = {model:?}
[data]
hub = "stanfordnlp/imdb"
train = "train"
test = "test"
max_train_samples = 16
max_test_samples = 24
[chunking]
chunk_size = 62
stride = 62
max_text_len = 62
eval_max_text_len = 124
[training]
output_dir = {out:?}
max_steps = 2
per_device_train_batch_size = 8
per_device_eval_batch_size = 8
save_strategy = "no"
logging_steps = 1
"##,
            model = model.display().to_string(),
            out = out.display().to_string(),
        ),
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    let env = [("HF_HUB_CACHE", hub.as_path())];
    let o = berth_output_env(&["train", "--config", cfg.to_str().unwrap()], &cache, &env);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("on 16 rows (stanfordnlp/imdb/plain_text/train)"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("test_accuracy"), "{stdout}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("stanfordnlp/imdb/plain_text/test"),
        "{report}"
    );
    // The chunks-per-text histogram, as a table and as an SVG image beside it.
    assert!(
        report.contains("![chunks per text](chunks.svg)"),
        "{report}"
    );
    let svg = std::fs::read_to_string(out.join("chunks.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains(" texts</title>"),
        "{svg}"
    );

    // A split the repo lacks is named, with the repo (a run of its own: `out`
    // holds the finished one).
    let elsewhere = format!(
        "output_dir={:?}",
        tmp.path().join("run-validation").display().to_string()
    );
    let o = berth_output_env(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "data.eval=\"validation\"",
            "--set",
            &elsewhere,
        ],
        &cache,
        &env,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stanfordnlp/imdb") && err.contains("'validation'"),
        "{err}"
    );
}

/// Every number of every `metrics.jsonl` entry is in the event files at its step,
/// under HF's tag (`train/loss`, `eval/accuracy`, ...).
fn tensorboard_equals_metrics_log(out: &std::path::Path) {
    let Some(mut python) = berth_testkit::python_with_transformers() else {
        return;
    };
    let script = berth_testkit::workspace_root().join("scripts/read_tensorboard.py");
    let o = python.arg(&script).arg(out).output().expect("run python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scalars: Vec<(u64, String, f64)> = serde_json::from_slice(&o.stdout).unwrap();
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let mut expected = 0;
    for line in log.lines() {
        let entry: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        let step = entry["step"].as_u64().unwrap();
        for (k, v) in &entry {
            let Some(v) = v.as_f64().filter(|_| k != "step") else {
                continue;
            };
            let tag = match (k.strip_prefix("eval_"), k.strip_prefix("test_")) {
                (Some(r), _) => format!("eval/{r}"),
                (_, Some(r)) => format!("test/{r}"),
                _ => format!("train/{k}"),
            };
            expected += 1;
            assert!(
                scalars.iter().any(|(s, t, x)| *s == step
                    && *t == tag
                    && (x - v).abs() <= 1e-6 * v.abs().max(1.0)),
                "{tag}={v} at step {step} not in the event files"
            );
        }
    }
    assert_eq!(scalars.len(), expected, "{scalars:?}");
}
