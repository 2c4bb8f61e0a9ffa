//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_model::{Encoder, EncoderConfig, Params};
use candle_core::Device;

/// Runs `berth` offline with its cache under `cache`.
pub fn berth_output(args: &[&str], cache: &Path) -> Output {
    berth_output_env(args, cache, &[])
}

/// [`berth_output`] with more environment variables.
pub fn berth_output_env(args: &[&str], cache: &Path, env: &[(&str, &Path)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run berth")
}

/// Runs `berth`, which must succeed; returns its stderr.
pub fn berth_ok(args: &[&str], cache: &Path) -> String {
    let o = berth_output(args, cache);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `[data]` section of an MRPC run (sentence pairs, `max_length` ids, the first
/// `train` shuffled train rows and `eval` dev rows).
pub fn mrpc_data(data: &Path, max_length: usize, train: usize, eval: usize) -> String {
    format!(
        r##"[data]
data_dir = {data:?}
format = "tsv"
train = "mrpc/train.tsv"
eval = "mrpc/dev.tsv"
text_column = "#1 String"
pair_column = "#2 String"
label_column = "Quality"
max_length = {max_length}
max_train_samples = {train}
max_eval_samples = {eval}
"##,
        data = data.display().to_string()
    )
}

/// The rows of a JSON Lines file.
pub fn jsonl_rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A random BERT small enough that a run takes seconds, with MiniLM's tokenizer.
pub fn tiny_model(root: &Path, minilm: &Path) -> PathBuf {
    let dir = root.join("tiny-bert");
    let mut cfg = EncoderConfig::tiny();
    cfg.vocab_size = 30522;
    cfg.hidden_size = 32;
    cfg.max_position_embeddings = 64;
    let mut p = Params::random(&Device::Cpu, 7, cfg.initializer_range);
    Encoder::new(&cfg, &mut p, true, true).unwrap();
    let (varmap, _) = p.finish();
    berth_model::save(&dir, &cfg, "BertModel", &varmap).unwrap();
    for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(minilm.join(f), dir.join(f)).unwrap();
    }
    dir
}
