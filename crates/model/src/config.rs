//! `config.json` as transformers writes it for each encoder family, with unknown keys
//! kept so a loaded config is saved back unchanged. Families that name the same
//! hyper-parameters differently (DistilBERT's `dim`, `n_layers`, ...) are read into
//! BERT's names and written back in their own.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::family::Family;

/// DistilBERT's keys and the BERT names they are read as (transformers'
/// `DistilBertConfig.attribute_map`, and its dropouts and activation).
const DISTILBERT_KEYS: [(&str, &str); 8] = [
    ("dim", "hidden_size"),
    ("n_layers", "num_hidden_layers"),
    ("n_heads", "num_attention_heads"),
    ("hidden_dim", "intermediate_size"),
    ("activation", "hidden_act"),
    ("dropout", "hidden_dropout_prob"),
    ("attention_dropout", "attention_probs_dropout_prob"),
    ("seq_classif_dropout", "classifier_dropout"),
];

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_init() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

/// An encoder's hyper-parameters, in transformers `BertConfig`'s names whatever the
/// family (`model_type`; BERT when absent, as the oldest configs are).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    #[serde(rename = "model_type", default)]
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    /// ELECTRA's embedding width (projected to `hidden_size` when they differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// DistilBERT: fixed sinusoidal position embeddings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinusoidal_pos_embds: Option<bool>,
    /// Dropout before the classifier; `hidden_dropout_prob` when absent (HF, which
    /// writes it as `null` then).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// Every other key of the file, written back as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl EncoderConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Self::from_value(value).map_err(bad)
    }

    /// A config from `config.json`'s parsed contents.
    pub fn from_value(value: serde_json::Value) -> std::result::Result<Self, String> {
        let serde_json::Value::Object(mut obj) = value else {
            return Err("config.json is not a JSON object".into());
        };
        let family = match obj.get("model_type") {
            None => Family::Bert,
            Some(serde_json::Value::String(t)) => Family::from_model_type(t)?,
            Some(other) => return Err(format!("model_type {other} is not a string")),
        };
        if family == Family::DistilBert {
            for (theirs, ours) in DISTILBERT_KEYS {
                if let Some(v) = obj.remove(theirs) {
                    obj.insert(ours.into(), v);
                }
            }
            // transformers' DistilBertConfig defaults, and what its model hard-codes.
            obj.entry("classifier_dropout").or_insert(0.2.into());
            obj.insert("type_vocab_size".into(), 0.into());
            obj.insert("layer_norm_eps".into(), 1e-12.into());
        }
        if family.positions_after_padding() {
            obj.entry("pad_token_id").or_insert(1.into());
        }
        let cfg: EncoderConfig =
            serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as `config.json` holds it, in the family's own key names.
    pub fn to_value(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a config serializes");
        if let (Family::DistilBert, Some(obj)) = (self.family, v.as_object_mut()) {
            obj.remove("type_vocab_size");
            obj.remove("layer_norm_eps");
            for (theirs, ours) in DISTILBERT_KEYS {
                if let Some(x) = obj.remove(ours) {
                    obj.insert(theirs.into(), x);
                }
            }
        }
        v
    }

    /// The embedding width: ELECTRA's `embedding_size` (128 when absent, as
    /// transformers' default), else `hidden_size`.
    pub fn embedding_size(&self) -> usize {
        match (self.family, self.embedding_size) {
            (Family::Electra, e) => e.unwrap_or(128),
            _ => self.hidden_size,
        }
    }

    /// The longest sequence the position embeddings cover: `max_position_embeddings`,
    /// less the `pad_token_id + 1` positions RoBERTa's rule never uses (512 of 514).
    pub fn max_tokens(&self) -> usize {
        if self.family.positions_after_padding() {
            self.max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1)
        } else {
            self.max_position_embeddings
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        crate::activation::Activation::parse(&self.hidden_act)?;
        if self.max_tokens() == 0 {
            return Err(format!(
                "max_position_embeddings {} leaves no position for a token",
                self.max_position_embeddings
            ));
        }
        Ok(())
    }

    /// Classes: the size of `id2label`, else 2 (HF's default).
    pub fn num_labels(&self) -> usize {
        self.id2label.as_ref().map_or(2, BTreeMap::len)
    }

    /// Sets `num_labels` classes named `names` (or `LABEL_i`), as HF does.
    pub fn set_labels(&mut self, names: &[String]) {
        let id2label: BTreeMap<String, String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), n.clone()))
            .collect();
        let label2id = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as i64))
            .collect();
        self.id2label = Some(id2label);
        self.label2id = Some(label2id);
    }

    /// The name of class `i`, when known.
    pub fn label_name(&self, i: usize) -> Option<&str> {
        self.id2label
            .as_ref()?
            .get(&i.to_string())
            .map(String::as_str)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// A small random-init config for tests and benches.
    pub fn tiny() -> Self {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 32, "max_position_embeddings": 40,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1
        }))
        .expect("literal config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_minilm_and_keeps_unknown_keys() {
        let Some(dir) = berth_testkit::minilm_dir() else {
            return;
        };
        let cfg = EncoderConfig::from_file(&dir.join("config.json")).unwrap();
        assert_eq!(
            (
                cfg.hidden_size,
                cfg.num_hidden_layers,
                cfg.num_attention_heads
            ),
            (384, 6, 12)
        );
        assert_eq!(
            (
                cfg.intermediate_size,
                cfg.vocab_size,
                cfg.max_position_embeddings
            ),
            (1536, 30522, 512)
        );
        let back: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        let orig: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        for (k, v) in orig.as_object().unwrap() {
            assert_eq!(back.get(k), Some(v), "key {k}");
        }
    }

    #[test]
    fn rejects_heads_that_do_not_divide_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let mut v = serde_json::to_value(EncoderConfig::tiny()).unwrap();
        v["num_attention_heads"] = 3.into();
        std::fs::write(&p, v.to_string()).unwrap();
        let err = EncoderConfig::from_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("not a multiple of num_attention_heads 3"),
            "{err}"
        );
    }
}
