//! Every task Berth has trains on every encoder family (the tiny transformers-made
//! models of `crates/model/tests/fixtures/families`), its run directory saves the
//! family's architecture, keys and tokenizer class, and `berth predict` reloads it
//! with the logits of the saved weights.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_model::{EncoderConfig, Mode, Params, SequenceClassifier};
use candle_core::{Device, Tensor};
use common::{berth_ok, jsonl_rows};

/// Every family Berth trains, by `model_type` (each has a fixture).
fn families() -> impl Iterator<Item = &'static str> {
    berth_model::Family::ALL
        .into_iter()
        .map(berth_model::Family::model_type)
}

const SENTENCES: [&str; 9] = [
    "The soul becomes dyed with the colour of its thoughts.",
    "You have power over your mind, not outside events.",
    "Waste no more time arguing what a good man should be.",
    "Very little is needed to make a happy life.",
    "The best revenge is not to be like your enemy.",
    "Loss is nothing else but change, and change is nature's delight.",
    "Accept the things to which fate binds you.",
    "If it is not right, do not do it; if it is not true, do not say it.",
    // NFKC folds these (ﬁ, ½): a tokenizer rebuilt without its normalizer differs.
    "Ünïcode ﬁne café ½ and   spaces\ttoo.",
];

fn fixture(family: &str, head: &str) -> PathBuf {
    let dir = berth_testkit::workspace_root()
        .join("crates/model/tests/fixtures/families")
        .join(family);
    assert!(
        dir.join(head).join("model.safetensors").is_file(),
        "missing fixture {} (scripts/make_family_fixtures.py writes it)",
        dir.display()
    );
    dir
}

/// A model directory of `family` with `head`'s weights and the family's tokenizer.
fn model_dir(root: &Path, family: &str, head: &str) -> PathBuf {
    let src = fixture(family, head);
    let dir = root.join(format!("{family}-{head}"));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(head).join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Labelled rows for every task: a sentence, two sentences joined (long enough to
/// chunk), a class and a set of classes.
fn data(root: &Path) -> PathBuf {
    let rows: Vec<serde_json::Value> = (0..16)
        .map(|i| {
            let (a, b) = (SENTENCES[i % 8], SENTENCES[(i + 3) % 8]);
            // Three classes, as the fixtures' classifiers have.
            let label = ["neg", "neu", "pos"][i % 3];
            let tags: &[&str] = [&["calm"][..], &["calm", "stoic"], &["wise"]][i % 3];
            serde_json::json!({
                "text": a,
                "long": format!("{a} {b} {a}"),
                "label": label,
                "tags": tags,
            })
        })
        .collect();
    let path = root.join("train.jsonl");
    write_jsonl(&path, &rows);
    path
}

fn run_config(task: &str, model: &Path, data: &Path, out: &Path) -> String {
    let (text, label, section) = match task {
        "classification" => ("text", "label", ""),
        "chunk_classification" => (
            "long",
            "label",
            "[chunking]\nchunk_size = 12\nstride = 8\npool = \"mean\"\n",
        ),
        "multi_label_classification" => ("text", "tags", ""),
        "mlm" => ("text", "label", "[mlm]\nmlm_probability = 0.3\n"),
        other => panic!("no config for {other}"),
    };
    format!(
        r#"task = "{task}"
model = {model:?}

[data]
data_dir = {dir:?}
format = "json"
train = "train.jsonl"
eval = "train.jsonl"
text_column = "{text}"
label_column = "{label}"
max_length = 24

{section}
[training]
output_dir = {out:?}
max_steps = 3
per_device_train_batch_size = 4
per_device_eval_batch_size = 8
learning_rate = 1e-3
eval_strategy = "epoch"
save_strategy = "no"
logging_steps = 1
"#,
        model = model.display().to_string(),
        dir = data.parent().unwrap().display().to_string(),
        out = out.display().to_string(),
    )
}

fn keys(file: &Path) -> BTreeSet<String> {
    candle_core::safetensors::load(file, &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect()
}

/// The classifier logits of `dir`'s saved weights for `texts`, one text at a time
/// (no padding), tokenized by the run's own tokenizer.json and cut to `max_length`
/// ids, by default where the model's positions end, as `berth predict` does.
fn logits_of(dir: &Path, texts: &[&str], max_length: Option<usize>) -> Vec<Vec<f32>> {
    let cfg = EncoderConfig::from_file(&dir.join("config.json")).unwrap();
    let max_length = max_length.unwrap_or(cfg.max_tokens());
    let mut p = Params::from_dir(dir, &Device::Cpu, 0, 0.02).unwrap();
    let model = SequenceClassifier::new(&cfg, &mut p).unwrap();
    let mut tok = berth_data::tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tok.with_padding(None);
    tok.with_truncation(Some(berth_data::tokenizers::TruncationParams {
        max_length,
        ..Default::default()
    }))
    .unwrap();
    texts
        .iter()
        .map(|t| {
            let enc = tok.encode(*t, true).unwrap();
            let ids = Tensor::new(enc.get_ids(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let types = Tensor::new(enc.get_type_ids(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            model
                .forward(&ids, Some(&types), None, &Mode::eval())
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn column(rows: &[serde_json::Value], name: &str) -> Vec<Vec<f32>> {
    rows.iter()
        .map(|r| {
            r[name]
                .as_array()
                .unwrap_or_else(|| panic!("no {name} in {r}"))
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

#[test]
fn every_task_trains_on_every_family_and_predict_reloads_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let train = data(tmp.path());
    let mut runs = Vec::new();
    for family in families() {
        let tasks: &[&str] = if family == "electra" {
            &[
                "classification",
                "chunk_classification",
                "multi_label_classification",
            ]
        } else {
            &[
                "classification",
                "chunk_classification",
                "multi_label_classification",
                "mlm",
            ]
        };
        for &task in tasks {
            let head = if task == "mlm" { "mlm" } else { "seqcls" };
            let model = model_dir(tmp.path(), family, head);
            let out = tmp.path().join(format!("run-{family}-{task}"));
            let cfg = tmp.path().join(format!("{family}-{task}.toml"));
            std::fs::write(&cfg, run_config(task, &model, &train, &out)).unwrap();
            let stderr = berth_ok(&["train", "--config", cfg.to_str().unwrap()], &cache);
            assert!(stderr.contains("step 3/3"), "{family} {task}: {stderr}");
            check_run_dir(family, task, head, &out);
            predict_reloads(family, task, &out, &train, &cache);
            runs.push((family, task, out));
        }
    }
    opens_in_transformers(&runs);
}

/// The run saves the family's architecture and model_type, exactly transformers'
/// keys, and the family's tokenizer class.
fn check_run_dir(family: &str, task: &str, head: &str, out: &Path) {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let fixture_cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(family, head).join(head).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["model_type"], family, "{task}");
    assert_eq!(
        cfg["architectures"][0], fixture_cfg["architectures"][0],
        "{family} {task}"
    );
    if task == "multi_label_classification" {
        assert_eq!(cfg["problem_type"], "multi_label_classification");
    }
    assert_eq!(
        keys(&out.join("model.safetensors")),
        keys(&fixture(family, head).join(head).join("model.safetensors")),
        "{family} {task}: the saved keys are not transformers'"
    );
    let tok_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        tok_cfg["tokenizer_class"],
        written_class(family),
        "{family} {task}"
    );
}

/// The `tokenizer_class` a run of `family`'s fixture writes: the family's, except for
/// the Unigram fixtures, whose NFKC normalizer transformers would drop when it
/// rebuilds an XLM-R tokenizer from its class (a real XLM-R's `Precompiled` one it
/// keeps).
fn written_class(family: &str) -> &'static str {
    match family {
        "xlm-roberta" | "camembert" => "PreTrainedTokenizerFast",
        f => berth_model::Family::from_model_type(f)
            .unwrap()
            .tokenizer_class(),
    }
}

/// `berth predict` on the run directory: a classifier's logits are those of its
/// saved weights (computed here from model.safetensors), a masked LM fills each
/// mask.
fn predict_reloads(family: &str, task: &str, out: &Path, train: &Path, cache: &Path) {
    let pred = out.with_extension("pred.jsonl");
    let input = out.with_extension("input.jsonl");
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        out.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        pred.display().to_string(),
    ];
    match task {
        "mlm" => {
            let tok =
                berth_data::tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
            let mask = ["[MASK]", "<mask>"]
                .into_iter()
                .find(|m| tok.token_to_id(m).is_some())
                .unwrap();
            write_jsonl(
                &input,
                &[serde_json::json!({"text": format!("The soul becomes {mask} with colour.")})],
            );
            args.extend(["--top-k".into(), "3".into()]);
            berth_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), cache);
            let rows = jsonl_rows(&pred);
            assert_eq!(rows.len(), 1, "{family}");
            let fills = rows[0].to_string();
            assert!(fills.contains("score"), "{family} mlm: {fills}");
        }
        _ => {
            std::fs::copy(train, &input).unwrap();
            let texts: Vec<String> = jsonl_rows(&input)
                .iter()
                .map(|r| r["text"].as_str().unwrap().to_string())
                .collect();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            berth_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), cache);
            let rows = jsonl_rows(&pred);
            let mut want = logits_of(out, &texts, None);
            let got = if task == "multi_label_classification" {
                // Multi-label prediction writes each class's sigmoid.
                for w in &mut want {
                    w.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp()));
                }
                column(&rows, "probabilities")
            } else {
                column(&rows, "logits")
            };
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.len(), w.len(), "{family} {task}: classes");
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() < 1e-5, "{family} {task}: {g:?} vs {w:?}");
                }
            }
        }
    }
}

/// transformers' AutoConfig and AutoTokenizer open each run (transformers without
/// torch, from `cargo xtask fixtures`), and its tokenizer gives the run's ids.
fn opens_in_transformers(runs: &[(&str, &str, PathBuf)]) {
    let Some(mut python) = berth_testkit::python_with_transformers() else {
        return;
    };
    let script = berth_testkit::workspace_root().join("scripts/check_hf_run.py");
    let o = python
        .arg(&script)
        .args(runs.iter().map(|r| &r.2))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(serde_json::to_string(&SENTENCES).unwrap().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (family, task, dir) in runs {
        let r = &got[dir.to_str().unwrap()];
        // transformers 5 names ElectraTokenizer's class BertTokenizer (an alias), and
        // PreTrainedTokenizerFast's TokenizersBackend.
        let class = match written_class(family) {
            "ElectraTokenizer" => "BertTokenizer",
            "PreTrainedTokenizerFast" => "TokenizersBackend",
            c => c,
        };
        assert!(
            r["tokenizer_class"].as_str().unwrap().starts_with(class) && r["is_fast"] == true,
            "{family} {task}: {r}"
        );
        assert_eq!(r["model_type"], *family, "{family} {task}: {r}");
        let tok = berth_data::tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        for (i, t) in SENTENCES.iter().enumerate() {
            let ours: Vec<u32> = tok.encode(*t, true).unwrap().get_ids().to_vec();
            let theirs: Vec<u32> = r["ids"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ours, theirs, "{family} {task}: {t:?}");
        }
    }
}

#[test]
fn predict_max_length_truncates_as_the_tokenizer_does() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = data(tmp.path());
    let texts: Vec<String> = jsonl_rows(&input)
        .iter()
        .map(|r| r["long"].as_str().unwrap().to_string())
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for family in ["bert", "roberta"] {
        let model = model_dir(tmp.path(), family, "seqcls");
        let pred = tmp.path().join(format!("{family}-pred.jsonl"));
        let args = [
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--text-column",
            "long",
            "--max-length",
            "7",
            "--output",
            pred.to_str().unwrap(),
        ];
        berth_ok(&args, &cache);
        let got = column(&jsonl_rows(&pred), "logits");
        let (cut, full) = (
            logits_of(&model, &texts, Some(7)),
            logits_of(&model, &texts, None),
        );
        for ((g, c), f) in got.iter().zip(&cut).zip(&full) {
            for (a, b) in g.iter().zip(c) {
                assert!((a - b).abs() < 1e-5, "{family}: {g:?} vs {c:?}");
            }
            assert!(
                g.iter().zip(f).any(|(a, b)| (a - b).abs() > 1e-4),
                "{family}: cutting to 7 ids changed nothing"
            );
        }
    }
    let o = common::berth_output(
        &[
            "predict",
            "--model",
            model_dir(tmp.path(), "bert", "seqcls").to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--max-length",
            "7",
            "--chunk-size",
            "5",
            "--output",
            tmp.path().join("x.jsonl").to_str().unwrap(),
        ],
        &cache,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("--max-length truncates texts"),
        "{stderr}"
    );
}
