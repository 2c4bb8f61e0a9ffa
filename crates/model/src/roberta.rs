//! RoBERTa, XLM-RoBERTa and CamemBERT (transformers `modeling_roberta.py`): BERT's
//! layers under `roberta.`, positions counted from `pad_token_id + 1` over non-pad
//! tokens (`encoder.rs`), no pooler in the heads, `RobertaClassificationHead` and
//! `lm_head`.

use crate::activation::Activation;
use crate::config::EncoderConfig;
use crate::error::Result;
use crate::layout::{ClassifierHead, MlmNames, Squash, linear};
use crate::params::Params;

/// `RobertaClassificationHead`: `<s>` -> dropout -> dense -> tanh -> dropout ->
/// `out_proj`.
pub(crate) fn classifier(cfg: &EncoderConfig, p: &mut Params) -> Result<ClassifierHead> {
    let h = cfg.hidden_size;
    Ok(ClassifierHead {
        dense: Some((linear(p, "classifier.dense", h, h)?, Squash::Tanh)),
        dropout_before_dense: true,
        out: linear(p, "classifier.out_proj", cfg.num_labels(), h)?,
        dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
    })
}

/// `RobertaLMHead`: dense -> exact GELU (whatever `hidden_act`) -> `layer_norm` ->
/// the decoder tied to the word embeddings, plus `lm_head.bias`.
pub(crate) const MLM_NAMES: MlmNames = MlmNames {
    dense: "lm_head.dense",
    norm: "lm_head.layer_norm",
    bias: "lm_head.bias",
    activation: Some(Activation::Gelu),
    eps: None,
};
