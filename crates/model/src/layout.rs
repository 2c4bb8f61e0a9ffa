//! The vocabulary a family's file describes its layout in: weight-name tables for its
//! layers and MLM head, its classification head's shape, and the `linear` /
//! `layer_norm` parameter helpers. The family files (`bert.rs`, `roberta.rs`,
//! `distilbert.rs`, `electra.rs`) build on this alone; `encoder.rs` and `heads.rs`
//! read the family files.

use candle_core::Tensor;

use crate::activation::Activation;
use crate::error::Result;
use crate::layers::{LayerNorm, Linear, Mode};
use crate::params::{Init, Params};

pub(crate) fn linear(p: &mut Params, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
    Ok(Linear {
        weight: p.get(&format!("{name}.weight"), &[out_dim, in_dim], Init::Normal)?,
        bias: Some(p.get(&format!("{name}.bias"), &[out_dim], Init::Zeros)?),
    })
}

pub(crate) fn layer_norm(p: &mut Params, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm {
        weight: p.get(&format!("{name}.weight"), &[dim], Init::Ones)?,
        bias: p.get(&format!("{name}.bias"), &[dim], Init::Zeros)?,
        eps,
    })
}

/// The names of one family's layer parameters, under `{prefix}{stack}.{i}.`.
pub(crate) struct LayerNames {
    pub stack: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub out_norm: &'static str,
    /// Whether the attention output is dropped out before its residual add (BERT's
    /// `BertSelfOutput`; DistilBERT has no dropout there).
    pub attn_output_dropout: bool,
}

/// How a classifier head squashes its dense layer's output.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Squash {
    Tanh,
    Gelu,
    Relu,
}

/// A family's classification head over the first token (or BERT's pooled output):
/// [`dropout ->`] `dense -> squash ->` dropout -> `out`, with the family's names
/// (see each family's `classifier`).
pub(crate) struct ClassifierHead {
    /// `None`: the input is the pooler's output (BERT).
    pub dense: Option<(Linear, Squash)>,
    /// Dropout before `dense` too (RoBERTa's and ELECTRA's heads).
    pub dropout_before_dense: bool,
    pub out: Linear,
    pub dropout: f64,
}

impl ClassifierHead {
    pub(crate) fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let ops = mode.ops();
        let x = match &self.dense {
            None => x.clone(),
            Some((dense, squash)) => {
                let x = if self.dropout_before_dense {
                    mode.dropout(x, self.dropout)?
                } else {
                    x.clone()
                };
                let y = dense.forward_with(&x, ops)?;
                match squash {
                    Squash::Tanh => y.tanh()?,
                    Squash::Gelu => y.gelu_erf()?,
                    Squash::Relu => y.relu()?,
                }
            }
        };
        self.out.forward_with(&mode.dropout(&x, self.dropout)?, ops)
    }
}

/// The names of a family's MLM head parameters.
pub(crate) struct MlmNames {
    pub dense: &'static str,
    pub norm: &'static str,
    pub bias: &'static str,
    /// `None`: the config's `hidden_act`.
    pub activation: Option<Activation>,
    /// `None`: the config's `layer_norm_eps`.
    pub eps: Option<f64>,
}
