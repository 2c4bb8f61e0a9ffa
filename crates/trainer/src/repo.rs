//! What makes a run directory (and each `checkpoint-N/`) a Hugging Face model repo
//! that transformers opens as it is: the tokenizer files `AutoTokenizer` reads, a
//! model card, and the `*_results.json` files HF's `Trainer.save_metrics` writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use berth_data::tokenizers::Tokenizer;
use serde_json::{Value, json};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};

/// `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` and, for a
/// WordPiece tokenizer, `vocab.txt`: copied from `source` (the directory the run's
/// tokenizer came from) when it has them, so they stay byte for byte what the user
/// gave, else written from `tokenizer` as transformers' `save_pretrained` would for
/// the model `config` (its family's `tokenizer_class`, `model_max_length` the tokens
/// its positions cover).
pub fn write_tokenizer_files(
    dir: &Path,
    tokenizer: &Tokenizer,
    source: Option<&Path>,
    config: &berth_model::EncoderConfig,
) -> Result<()> {
    let text = tokenizer
        .to_string(false)
        .map_err(|e| TrainError::Internal(format!("tokenizer: {e}")))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| TrainError::Internal(format!("tokenizer: {e}")))?;
    let specials = special_tokens(tokenizer, &json);
    let generated: [(&str, Option<String>); 4] = [
        ("tokenizer.json", Some(text)),
        (
            "tokenizer_config.json",
            Some(pretty(&tokenizer_config(
                &json,
                &specials,
                config.max_tokens(),
                config.family,
            ))),
        ),
        (
            "special_tokens_map.json",
            Some(pretty(&Value::Object(
                specials
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect(),
            ))),
        ),
        ("vocab.txt", vocab_txt(tokenizer, &json)),
    ];
    for (name, made) in generated {
        let from = source.map(|d| d.join(name)).filter(|f| f.is_file());
        let bytes = if let Some(from) = from {
            std::fs::read(&from).map_err(|e| TrainError::io(&from, e))?
        } else if let Some(text) = made {
            text.into_bytes()
        } else {
            continue;
        };
        berth_fs::write_file(&dir.join(name), &bytes)?;
    }
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// HF's special-token attributes (`cls_token`, ...) that the vocabulary has.
fn special_tokens(tokenizer: &Tokenizer, json: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let added: Vec<String> = json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["content"].as_str().map(str::to_string))
        .collect();
    for (attr, candidates) in [
        ("cls_token", &["[CLS]", "<s>"][..]),
        ("sep_token", &["[SEP]", "</s>"]),
        ("pad_token", &["[PAD]", "<pad>"]),
        ("unk_token", &["[UNK]", "<unk>"]),
        ("mask_token", &["[MASK]", "<mask>"]),
        ("bos_token", &["<s>"]),
        ("eos_token", &["</s>"]),
    ] {
        if let Some(t) = candidates
            .iter()
            .find(|c| tokenizer.token_to_id(c).is_some() || added.iter().any(|a| a == *c))
        {
            out.insert(attr.to_string(), t.to_string());
        }
    }
    out
}

/// `tokenizer_config.json` as transformers writes it: the special tokens,
/// `model_max_length`, and the family's `tokenizer_class` where transformers 5 gives
/// that class the tokenizer.json's ids, else `PreTrainedTokenizerFast` (which reads
/// tokenizer.json as it is). transformers 5 rebuilds a RoBERTa or XLM-R tokenizer's
/// pipeline from the class and keeps only tokenizer.json's vocabulary, post-processor
/// and a `Precompiled` normalizer: so the family class is written for WordPiece
/// (BERT, DistilBERT, ELECTRA; with the normalizer's choices), for byte-level BPE
/// without a normalizer (RoBERTa; with its `add_prefix_space` and `trim_offsets`) and
/// for Unigram whose normalizer is SentencePiece's `Precompiled` (XLM-R, CamemBERT).
fn tokenizer_config(
    json: &Value,
    specials: &BTreeMap<String, String>,
    max_len: usize,
    family: berth_model::Family,
) -> Value {
    use berth_model::Family;
    let norm = &json["normalizer"];
    let mut c = serde_json::Map::new();
    c.insert("clean_up_tokenization_spaces".into(), json!(true));
    c.insert("model_max_length".into(), json!(max_len));
    let kind = json["model"]["type"].as_str().unwrap_or_default();
    if kind == "WordPiece" {
        c.insert(
            "do_lower_case".into(),
            json!(norm["lowercase"].as_bool().unwrap_or(false)),
        );
        c.insert(
            "strip_accents".into(),
            norm.get("strip_accents").cloned().unwrap_or(Value::Null),
        );
        c.insert(
            "tokenize_chinese_chars".into(),
            json!(norm["handle_chinese_chars"].as_bool().unwrap_or(true)),
        );
    }
    let faithful = match family {
        Family::Bert | Family::DistilBert | Family::Electra => kind == "WordPiece",
        Family::Roberta => {
            let pre = &json["pre_tokenizer"];
            let ok = kind == "BPE" && json["normalizer"].is_null() && pre["type"] == "ByteLevel";
            if ok {
                c.insert(
                    "add_prefix_space".into(),
                    json!(pre["add_prefix_space"].as_bool().unwrap_or(false)),
                );
                c.insert(
                    "trim_offsets".into(),
                    json!(
                        json["post_processor"]["trim_offsets"]
                            .as_bool()
                            .unwrap_or(true)
                    ),
                );
            }
            ok
        }
        Family::XlmRoberta | Family::Camembert => {
            kind == "Unigram" && norm["type"] == "Precompiled"
        }
    };
    c.insert(
        "tokenizer_class".into(),
        json!(if faithful {
            family.tokenizer_class()
        } else {
            "PreTrainedTokenizerFast"
        }),
    );
    for (k, v) in specials {
        c.insert(k.clone(), json!(v));
    }
    Value::Object(c)
}

/// One token per line in id order, for a WordPiece tokenizer (`BertTokenizer`'s
/// slow form reads it); none for other models.
fn vocab_txt(tokenizer: &Tokenizer, json: &Value) -> Option<String> {
    if json["model"]["type"] != "WordPiece" {
        return None;
    }
    let vocab = tokenizer.get_vocab(false);
    let mut by_id: Vec<(u32, &String)> = vocab.iter().map(|(t, &i)| (i, t)).collect();
    by_id.sort();
    let mut s = String::new();
    for (_, t) in by_id {
        s.push_str(t);
        s.push('\n');
    }
    Some(s)
}

/// HF's `train_results.json`, `eval_results.json`, `test_results.json` (each present
/// when it has values) and `all_results.json`, their union.
pub fn write_results(
    dir: &Path,
    epoch: f64,
    train: &BTreeMap<String, f64>,
    eval: &BTreeMap<String, f64>,
    test: &BTreeMap<String, f64>,
) -> Result<()> {
    let mut all = serde_json::Map::new();
    for (file, m) in [
        ("train_results.json", train),
        ("eval_results.json", eval),
        ("test_results.json", test),
    ] {
        if m.is_empty() {
            continue;
        }
        let mut obj: serde_json::Map<String, Value> =
            m.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        obj.insert("epoch".into(), json!(epoch));
        berth_fs::write_file(
            &dir.join(file),
            pretty(&Value::Object(obj.clone())).as_bytes(),
        )?;
        all.extend(obj);
    }
    berth_fs::write_file(
        &dir.join("all_results.json"),
        pretty(&Value::Object(all)).as_bytes(),
    )?;
    Ok(())
}

/// A model card (`README.md`) as HF's `Trainer.create_model_card` writes one: the
/// base model, the task and data, the results so far and the hyperparameters.
pub fn model_card(
    config: &RunConfig,
    train_source: &str,
    step: usize,
    epoch: f64,
    metrics: &BTreeMap<String, f64>,
) -> String {
    let t = &config.training;
    let task = config.task.name();
    let name = t
        .output_dir
        .file_name()
        .map_or("berth-model".into(), |n| n.to_string_lossy().into_owned());
    let mut s = String::new();
    let _ = writeln!(s, "---\nlibrary_name: transformers");
    let _ = writeln!(s, "base_model: {}", config.model);
    let _ = writeln!(s, "tags:\n- berth\n- generated_from_trainer\n- {task}");
    let _ = writeln!(s, "---\n\n# {name}\n");
    let _ = writeln!(
        s,
        "This model is a fine-tuned version of `{}` (task `{task}`) on `{train_source}`, trained with Berth to step {step} ({epoch:.2} epochs).\n",
        config.model
    );
    if !metrics.is_empty() {
        let _ = writeln!(s, "## Results\n\n| metric | value |\n| --- | --- |");
        for (k, v) in metrics {
            let _ = writeln!(s, "| {k} | {v:.4} |");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "## Training hyperparameters\n");
    for (k, v) in [
        ("learning_rate", t.learning_rate.to_string()),
        (
            "train_batch_size",
            t.per_device_train_batch_size.to_string(),
        ),
        ("eval_batch_size", t.per_device_eval_batch_size.to_string()),
        (
            "gradient_accumulation_steps",
            t.gradient_accumulation_steps.to_string(),
        ),
        ("seed", t.seed.to_string()),
        (
            "optimizer",
            format!(
                "AdamW with betas=({}, {}) and epsilon={}, weight_decay={}",
                t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay
            ),
        ),
        ("lr_scheduler_type", t.lr_scheduler_type.to_string()),
        (
            "warmup",
            format!("ratio {}, steps {}", t.warmup_ratio, t.warmup_steps),
        ),
        ("num_epochs", t.num_train_epochs.to_string()),
        ("max_steps", t.max_steps.to_string()),
        ("precision", t.precision.to_string()),
    ] {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(
        s,
        "\n## Framework versions\n\n- Berth {}",
        env!("CARGO_PKG_VERSION")
    );
    s
}
