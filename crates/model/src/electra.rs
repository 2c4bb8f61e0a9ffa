//! ELECTRA discriminators (transformers `modeling_electra.py`): BERT's layers under
//! `electra.`, embeddings of `embedding_size` projected by `embeddings_project` when
//! that differs from `hidden_size` (`encoder.rs`), no pooler, and
//! `ElectraClassificationHead`. A discriminator has no MLM head.

use crate::config::EncoderConfig;
use crate::error::Result;
use crate::layout::{ClassifierHead, Squash, linear};
use crate::params::Params;

/// `ElectraClassificationHead`: first token -> dropout -> dense -> GELU -> dropout
/// -> `out_proj`.
pub(crate) fn classifier(cfg: &EncoderConfig, p: &mut Params) -> Result<ClassifierHead> {
    let h = cfg.hidden_size;
    Ok(ClassifierHead {
        dense: Some((linear(p, "classifier.dense", h, h)?, Squash::Gelu)),
        dropout_before_dense: true,
        out: linear(p, "classifier.out_proj", cfg.num_labels(), h)?,
        dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
    })
}
