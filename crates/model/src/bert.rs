//! The encoder, equal to HF `BertModel`: embeddings, N post-LN self-attention layers,
//! and the pooler (dense + tanh on `[CLS]`).

use candle_core::{DType, Device, Tensor};

use crate::activation::Activation;
use crate::config::BertConfig;
use crate::error::Result;
use crate::fused;
use crate::layers::{LayerNorm, Linear, Mode, linear_act, softmax_last};
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

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// What the encoder returns.
pub struct BertOutput {
    /// `[B, L, H]`.
    pub sequence: Tensor,
    /// `[B, H]`, when the model has a pooler.
    pub pooled: Option<Tensor>,
}

/// HF `BertModel`.
pub struct BertModel {
    config: BertConfig,
    activation: Activation,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    dtype: DType,
}

impl BertModel {
    /// Builds the encoder from `p`, its parameters named `{prefix}embeddings...`
    /// (`prefix` is "bert." inside a head model, "" for a bare `BertModel`).
    pub fn new(
        config: &BertConfig,
        p: &mut Params,
        prefix: &str,
        with_pooler: bool,
    ) -> Result<Self> {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let e = format!("{prefix}embeddings");
        let word = p.get(
            &format!("{e}.word_embeddings.weight"),
            &[config.vocab_size, h],
            Init::Normal,
        )?;
        let position = p.get(
            &format!("{e}.position_embeddings.weight"),
            &[config.max_position_embeddings, h],
            Init::Normal,
        )?;
        let token_type = p.get(
            &format!("{e}.token_type_embeddings.weight"),
            &[config.type_vocab_size, h],
            Init::Normal,
        )?;
        let emb_norm = layer_norm(p, &format!("{e}.LayerNorm"), h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = format!("{prefix}encoder.layer.{i}");
            layers.push(Layer {
                query: linear(p, &format!("{l}.attention.self.query"), h, h)?,
                key: linear(p, &format!("{l}.attention.self.key"), h, h)?,
                value: linear(p, &format!("{l}.attention.self.value"), h, h)?,
                attn_out: linear(p, &format!("{l}.attention.output.dense"), h, h)?,
                attn_norm: layer_norm(p, &format!("{l}.attention.output.LayerNorm"), h, eps)?,
                intermediate: linear(
                    p,
                    &format!("{l}.intermediate.dense"),
                    config.intermediate_size,
                    h,
                )?,
                output: linear(p, &format!("{l}.output.dense"), h, config.intermediate_size)?,
                out_norm: layer_norm(p, &format!("{l}.output.LayerNorm"), h, eps)?,
            });
        }
        let pooler = if with_pooler {
            Some(linear(p, &format!("{prefix}pooler.dense"), h, h)?)
        } else {
            None
        };
        let activation =
            Activation::parse(&config.hidden_act).map_err(crate::error::ModelError::Checkpoint)?;
        Ok(BertModel {
            config: config.clone(),
            activation,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            pooler,
            dtype: DType::F32,
        })
    }

    /// Computes in `dtype` (f32 or bf16); parameters stay f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.dtype = dtype;
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The word embedding table `[V, H]` (the MLM decoder is tied to it).
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word
    }

    pub fn device(&self) -> &Device {
        self.word.device()
    }

    /// `input_ids` `[B, L]` u32; `token_type_ids` (zeros when absent) and
    /// `attention_mask` (ones when absent) the same shape.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<BertOutput> {
        self.forward_rows(input_ids, token_type_ids, attention_mask, mode, false)
    }

    /// As [`BertModel::forward`], for a head that reads only the first token (the
    /// pooler of a sequence classifier): the last layer's attention runs over every
    /// token, but its output projection, LayerNorms and feed-forward only for the
    /// first, so `sequence` is `[B, 1, H]`. The pooled output and every gradient are
    /// those of the full forward (dropout draws the full tensor's masks for those
    /// rows). HF computes the other `L - 1` rows and drops them: three quarters of the
    /// last layer's work per token are skipped (6% of bert-base's dense FLOPs, 12% of
    /// a 6-layer MiniLM's).
    pub fn forward_first_token(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<BertOutput> {
        self.forward_rows(input_ids, token_type_ids, attention_mask, mode, true)
    }

    fn forward_rows(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
        first_token_only: bool,
    ) -> Result<BertOutput> {
        let (b, l) = input_ids.dims2()?;
        let h = self.config.hidden_size;
        if l > self.config.max_position_embeddings {
            return Err(crate::error::ModelError::Checkpoint(format!(
                "sequence length {l} exceeds max_position_embeddings {}",
                self.config.max_position_embeddings
            )));
        }
        let flat = input_ids.flatten_all()?;
        let words = self.word.embedding(&flat)?.reshape((b, l, h))?;
        let positions = Tensor::arange(0u32, l as u32, input_ids.device())?;
        let pos = self.position.embedding(&positions)?.unsqueeze(0)?;
        let types = match token_type_ids {
            Some(t) => self
                .token_type
                .embedding(&t.flatten_all()?)?
                .reshape((b, l, h))?,
            None => self
                .token_type
                .embedding(&Tensor::zeros(b * l, DType::U32, input_ids.device())?)?
                .reshape((b, l, h))?,
        };
        let ops = mode.ops();
        let normed = self
            .emb_norm
            .add_forward(&words.broadcast_add(&pos)?, &types, None, ops)?;
        let mut x = mode.dropout(&normed, self.config.hidden_dropout_prob)?;
        x = x.to_dtype(self.dtype)?;
        let mask = match attention_mask {
            Some(m) => Some(AttentionMask::new(m, b, l, ops.fused_on(m.device()))?),
            None => None,
        };
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            let first_only = first_token_only && i == last;
            x = self.layer_forward(layer, &x, mask.as_ref(), mode, first_only)?;
        }
        let pooled = match &self.pooler {
            Some(p) => Some(
                p.forward_with(&x.narrow(1, 0, 1)?.squeeze(1)?, ops)?
                    .tanh()?,
            ),
            None => None,
        };
        Ok(BertOutput {
            sequence: x,
            pooled,
        })
    }

    /// One layer; with `first_only`, everything after the attention core runs on the
    /// first token of each sequence alone (`[B, 1, H]` out).
    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        mask: Option<&AttentionMask>,
        mode: &Mode,
        first_only: bool,
    ) -> Result<Tensor> {
        let ops = mode.ops();
        let heads = self.config.num_attention_heads;
        let q = layer.query.forward_with(x, ops)?;
        let k = layer.key.forward_with(x, ops)?;
        let v = layer.value.forward_with(x, ops)?;
        let (_, l, h) = x.dims3()?;
        let probs_dropout =
            mode.next_dropout(self.config.attention_probs_dropout_prob, heads * l * l);
        let context = if ops.fused_on(x.device()) {
            fused::attention(
                &q,
                &k,
                &v,
                heads,
                mask.map(|m| m.host.clone()),
                probs_dropout,
            )?
        } else {
            composed_attention(
                &q,
                &k,
                &v,
                heads,
                mask.map(|m| &m.tensor),
                probs_dropout,
                mode,
            )?
        };
        let (context, x, rows) = if first_only {
            let first = |t: &Tensor| t.narrow(1, 0, 1);
            // Row b of the slice is row b * L of the full [B * L, H] activations.
            let rows = move |k: crate::fused::DropoutKey| k.every_nth_row(h, l);
            (first(&context)?, first(x)?, Some(rows))
        } else {
            (context, x.clone(), None)
        };
        let hidden_dropout = || {
            let key = mode.next_dropout(self.config.hidden_dropout_prob, l * h);
            match rows {
                Some(rows) => key.map(rows),
                None => key,
            }
        };
        let attn = layer.attn_out.forward_with(&context, ops)?;
        let x = layer
            .attn_norm
            .add_forward(&attn, &x, hidden_dropout(), ops)?;
        let inter = linear_act(&layer.intermediate, self.activation, &x, ops)?;
        let out = layer.output.forward_with(&inter, ops)?;
        layer.out_norm.add_forward(&out, &x, hidden_dropout(), ops)
    }
}

/// The attention mask in both forms: additive `[B, 1, 1, L]` for the composed path,
/// and the same values on the host for the fused op.
struct AttentionMask {
    tensor: Tensor,
    host: Vec<f32>,
}

impl AttentionMask {
    /// 0 where attended, the dtype's minimum elsewhere (HF). The host copy only
    /// for the fused op (on a GPU it would cost a device sync per forward).
    fn new(m: &Tensor, b: usize, l: usize, host: bool) -> Result<Self> {
        let m = m.to_dtype(DType::F32)?;
        let neg = ((m.ones_like()? - m)? * f32::MIN as f64)?;
        let host = if host {
            neg.flatten_all()?.to_vec1::<f32>()?
        } else {
            Vec::new()
        };
        Ok(AttentionMask {
            tensor: neg.reshape((b, 1, 1, l))?,
            host,
        })
    }
}

/// The reference attention core from candle primitives: `[B, L, heads * d]` in and out.
fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
    dropout: Option<crate::fused::DropoutKey>,
    mode: &Mode,
) -> Result<Tensor> {
    let (b, l, h) = q.dims3()?;
    let hd = h / heads;
    let split = |t: &Tensor| -> Result<Tensor> {
        Ok(t.reshape((b, l, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.to_dtype(DType::F32)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = softmax_last(&scores)?.to_dtype(q.dtype())?;
    let probs = match dropout {
        Some(key) => crate::layers::apply_dropout(&probs, key, mode.ops())?,
        None => probs,
    };
    Ok(probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?)
}
