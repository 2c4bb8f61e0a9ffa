//! Tokenizers from the "slow" files older hub repos and packaged models ship without a
//! `tokenizer.json`, built as transformers' `convert_slow_tokenizer` builds the fast
//! one: `vocab.txt` (+ `tokenizer_config.json`'s `do_lower_case`, `strip_accents`,
//! `tokenize_chinese_chars` and special tokens) as BERT's WordPiece, `vocab.json` +
//! `merges.txt` as RoBERTa's byte-level BPE. A SentencePiece `.model` alone is refused
//! with the file to add.

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{DataError, Result};

/// The tokenizer of a model directory that has no `tokenizer.json`.
pub fn from_slow_files(dir: &Path) -> Result<Tokenizer> {
    let bad = |message: String| DataError::Tokenizer {
        what: dir.display().to_string(),
        message,
    };
    let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(json!({}));
    let json = if dir.join("vocab.txt").is_file() {
        wordpiece(dir, &config)?
    } else if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
        byte_level_bpe(dir, &config)?
    } else if let Some(sp) = sentencepiece_file(dir) {
        return Err(bad(format!(
            "the directory has no tokenizer.json, only the SentencePiece model {sp}, which Berth does not convert: add the tokenizer.json that `AutoTokenizer.from_pretrained(dir).save_pretrained(dir)` writes"
        )));
    } else {
        return Err(bad(
            "the directory has no tokenizer.json, and no vocab.txt (WordPiece) or vocab.json + merges.txt (byte-level BPE) to build one from".into(),
        ));
    };
    json.to_string()
        .parse::<Tokenizer>()
        .map_err(|e| bad(format!("building the tokenizer from its slow files: {e}")))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| DataError::Tokenizer {
            what: path.display().to_string(),
            message: format!("not valid JSON: {e}"),
        })
}

fn sentencepiece_file(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".model"))
}

/// `config[key]` as a special token's text: a string, or an AddedToken object's
/// `content`; else `default`.
fn special(config: &Value, key: &str, default: &str) -> String {
    match &config[key] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string(),
        _ => default.to_string(),
    }
}

/// `added_tokens` entries for `tokens` (those in `vocab`), special, not normalized.
fn added_tokens(
    vocab: &serde_json::Map<String, Value>,
    tokens: &[(String, bool)],
    what: &Path,
) -> Result<Vec<Value>> {
    tokens
        .iter()
        .map(|(t, lstrip)| {
            let id = vocab
                .get(t)
                .and_then(Value::as_u64)
                .ok_or_else(|| DataError::Tokenizer {
                    what: what.display().to_string(),
                    message: format!("the vocabulary has no special token '{t}'"),
                })?;
            Ok(
                json!({"id": id, "content": t, "single_word": false, "lstrip": lstrip,
                      "rstrip": false, "normalized": false, "special": true}),
            )
        })
        .collect()
}

/// `BertConverter`: BertNormalizer, BertPreTokenizer, WordPiece (`##`, 100 chars per
/// word), `[CLS] $A [SEP] ($B:1 [SEP]:1)`.
fn wordpiece(dir: &Path, config: &Value) -> Result<Value> {
    let path = dir.join("vocab.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut vocab = serde_json::Map::new();
    for (i, line) in text.split_terminator('\n').enumerate() {
        // transformers' load_vocab: one token per line, only the newline stripped,
        // and a token listed twice keeps its last index.
        vocab.insert(line.to_string(), json!(i));
    }
    let [cls, sep, unk, pad, mask] = [
        ("cls_token", "[CLS]"),
        ("sep_token", "[SEP]"),
        ("unk_token", "[UNK]"),
        ("pad_token", "[PAD]"),
        ("mask_token", "[MASK]"),
    ]
    .map(|(k, d)| special(config, k, d));
    let specials: Vec<(String, bool)> = [&pad, &unk, &cls, &sep, &mask]
        .into_iter()
        .filter(|t| vocab.contains_key(t.as_str()))
        .map(|t| (t.clone(), false))
        .collect();
    let added = added_tokens(&vocab, &specials, &path)?;
    let id = |t: &str| -> Result<u64> {
        vocab
            .get(t)
            .and_then(Value::as_u64)
            .ok_or_else(|| DataError::Tokenizer {
                what: path.display().to_string(),
                message: format!("the vocabulary has no '{t}', which a BERT tokenizer needs"),
            })
    };
    let (cls_id, sep_id) = (id(&cls)?, id(&sep)?);
    id(&unk)?;
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": {
            "type": "BertNormalizer", "clean_text": true,
            "handle_chinese_chars": config["tokenize_chinese_chars"].as_bool().unwrap_or(true),
            "strip_accents": config.get("strip_accents").cloned().unwrap_or(Value::Null),
            "lowercase": config["do_lower_case"].as_bool().unwrap_or(true),
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": cls, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": sep, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": cls, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": sep, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": sep, "type_id": 1}}],
            "special_tokens": {
                cls.clone(): {"id": cls, "ids": [cls_id], "tokens": [cls]},
                sep.clone(): {"id": sep, "ids": [sep_id], "tokens": [sep]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": unk, "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }))
}

/// `RobertaConverter`: ByteLevel (`add_prefix_space` from the config, default false),
/// BPE, `<s> $A </s>` and `<s> $A </s></s> $B </s>` (RobertaProcessing, offsets
/// trimmed), `<mask>` stripping the space before it.
fn byte_level_bpe(dir: &Path, config: &Value) -> Result<Value> {
    let vpath = dir.join("vocab.json");
    let vocab = match read_json(&vpath)? {
        Some(Value::Object(v)) => v,
        _ => {
            return Err(DataError::Tokenizer {
                what: vpath.display().to_string(),
                message: "not a JSON object of token -> id".into(),
            });
        }
    };
    let mpath = dir.join("merges.txt");
    let text = std::fs::read_to_string(&mpath).map_err(|e| DataError::io(&mpath, e))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        if line.split(' ').count() != 2 {
            return Err(DataError::Tokenizer {
                what: format!("{}:{}", mpath.display(), i + 1),
                message: format!("a merge is two tokens separated by one space, not {line:?}"),
            });
        }
        merges.push(json!(line));
    }
    let [bos, eos, unk, pad, mask] = [
        ("bos_token", "<s>"),
        ("eos_token", "</s>"),
        ("unk_token", "<unk>"),
        ("pad_token", "<pad>"),
        ("mask_token", "<mask>"),
    ]
    .map(|(k, d)| special(config, k, d));
    let specials: Vec<(String, bool)> = [&bos, &pad, &eos, &unk, &mask]
        .into_iter()
        .filter(|t| vocab.contains_key(t.as_str()))
        .map(|t| (t.clone(), *t == mask))
        .collect();
    let added = added_tokens(&vocab, &specials, &vpath)?;
    let id = |t: &str| -> Result<u64> {
        vocab
            .get(t)
            .and_then(Value::as_u64)
            .ok_or_else(|| DataError::Tokenizer {
                what: vpath.display().to_string(),
                message: format!("the vocabulary has no '{t}', which a RoBERTa tokenizer needs"),
            })
    };
    let prefix_space = config["add_prefix_space"].as_bool().unwrap_or(false);
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": prefix_space,
                          "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "RobertaProcessing", "sep": [eos, id(&eos)?], "cls": [bos, id(&bos)?],
                           "trim_offsets": true, "add_prefix_space": prefix_space},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    }))
}
