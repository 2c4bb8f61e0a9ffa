//! BERT's layout (transformers `modeling_bert.py`): the layer names every post-LN
//! family but DistilBERT shares, the pooler + classifier head, `cls.predictions`,
//! and NSP's `cls.seq_relationship` (in `heads.rs`'s `PreTraining`).

use crate::config::EncoderConfig;
use crate::error::Result;
use crate::layout::{ClassifierHead, LayerNames, MlmNames, linear};
use crate::params::Params;

/// `encoder.layer.{i}.attention.self.query`, ...: BERT's, RoBERTa's and ELECTRA's.
pub(crate) const LAYER_NAMES: LayerNames = LayerNames {
    stack: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    out_norm: "output.LayerNorm",
    attn_output_dropout: true,
};

/// `BertForSequenceClassification`: the pooler's output -> dropout -> `classifier`.
pub(crate) fn classifier(cfg: &EncoderConfig, p: &mut Params) -> Result<ClassifierHead> {
    Ok(ClassifierHead {
        dense: None,
        dropout_before_dense: false,
        out: linear(p, "classifier", cfg.num_labels(), cfg.hidden_size)?,
        dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
    })
}

/// `cls.predictions` (`BertOnlyMLMHead`), its activation `hidden_act`.
pub(crate) const MLM_NAMES: MlmNames = MlmNames {
    dense: "cls.predictions.transform.dense",
    norm: "cls.predictions.transform.LayerNorm",
    bias: "cls.predictions.bias",
    activation: None,
    eps: None,
};
