//! The `Encoder` seam: one trainable encoder for every post-LN family (BERT, RoBERTa,
//! XLM-RoBERTa, CamemBERT, DistilBERT, ELECTRA), built from the family's own layout
//! (weight names, position rule, embeddings, which dropouts it has) in its file
//! (`bert.rs`, `roberta.rs`, `distilbert.rs`, `electra.rs`). The fused ops, dropout
//! keys and attention dispatch (`attention.rs`) are shared by every family.

use candle_core::{DType, Device, Tensor};

use crate::activation::Activation;
use crate::attention::{AttentionMask, attend};
use crate::config::EncoderConfig;
use crate::error::{ModelError, Result};
use crate::family::Family;
use crate::layers::{LayerNorm, Linear, Mode, linear_act};
use crate::layout::{LayerNames, layer_norm, linear};
use crate::params::{Init, Params};

fn layer_names(family: Family) -> &'static LayerNames {
    match family {
        Family::DistilBert => &crate::distilbert::LAYER_NAMES,
        Family::Bert
        | Family::Roberta
        | Family::XlmRoberta
        | Family::Camembert
        | Family::Electra => &crate::bert::LAYER_NAMES,
    }
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

impl Layer {
    fn new(p: &mut Params, at: &str, n: &LayerNames, cfg: &EncoderConfig) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let name = |s: &str| format!("{at}.{s}");
        Ok(Layer {
            query: linear(p, &name(n.query), h, h)?,
            key: linear(p, &name(n.key), h, h)?,
            value: linear(p, &name(n.value), h, h)?,
            attn_out: linear(p, &name(n.attn_out), h, h)?,
            attn_norm: layer_norm(p, &name(n.attn_norm), h, eps)?,
            intermediate: linear(p, &name(n.intermediate), cfg.intermediate_size, h)?,
            output: linear(p, &name(n.output), h, cfg.intermediate_size)?,
            out_norm: layer_norm(p, &name(n.out_norm), h, eps)?,
        })
    }
}

/// Word + position (+ token type) embeddings, LayerNorm, dropout, and ELECTRA's
/// projection to the hidden width.
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Option<Tensor>,
    norm: LayerNorm,
    project: Option<Linear>,
}

impl Embeddings {
    fn new(p: &mut Params, prefix: &str, cfg: &EncoderConfig) -> Result<Self> {
        let (e, eps) = (cfg.embedding_size(), cfg.layer_norm_eps);
        let at = format!("{prefix}embeddings");
        let word = p.get(
            &format!("{at}.word_embeddings.weight"),
            &[cfg.vocab_size, e],
            Init::Normal,
        )?;
        let position = match cfg.family {
            Family::DistilBert => crate::distilbert::position_embeddings(p, &at, cfg)?,
            _ => p.get(
                &format!("{at}.position_embeddings.weight"),
                &[cfg.max_position_embeddings, e],
                Init::Normal,
            )?,
        };
        let token_type = match cfg.type_vocab_size {
            0 => None,
            n => Some(p.get(
                &format!("{at}.token_type_embeddings.weight"),
                &[n, e],
                Init::Normal,
            )?),
        };
        let norm = layer_norm(p, &format!("{at}.LayerNorm"), e, eps)?;
        let project = match cfg.family {
            Family::Electra if e != cfg.hidden_size => Some(linear(
                p,
                &format!("{prefix}embeddings_project"),
                cfg.hidden_size,
                e,
            )?),
            _ => None,
        };
        Ok(Embeddings {
            word,
            position,
            token_type,
            norm,
            project,
        })
    }

    /// The position of every token `[B, L]` (u32): `0..L`, or RoBERTa's count of
    /// non-pad tokens so far plus `pad` (pads stay at `pad`).
    fn position_ids(ids: &Tensor, cfg: &EncoderConfig) -> Result<Option<Tensor>> {
        if !cfg.family.positions_after_padding() {
            return Ok(None);
        }
        let pad = cfg.pad_token_id;
        let real = ids.ne(pad)?.to_dtype(DType::F32)?;
        let counted = (real.cumsum(1)? * &real)?;
        Ok(Some((counted + pad as f64)?.to_dtype(DType::U32)?))
    }

    fn forward(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        cfg: &EncoderConfig,
        mode: &Mode,
    ) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let e = cfg.embedding_size();
        let words = self
            .word
            .embedding(&ids.flatten_all()?)?
            .reshape((b, l, e))?;
        let words_pos = match Self::position_ids(ids, cfg)? {
            Some(pos) => {
                (words
                    + self
                        .position
                        .embedding(&pos.flatten_all()?)?
                        .reshape((b, l, e))?)?
            }
            None => {
                let positions = Tensor::arange(0u32, l as u32, ids.device())?;
                words.broadcast_add(&self.position.embedding(&positions)?.unsqueeze(0)?)?
            }
        };
        let ops = mode.ops();
        let normed = match &self.token_type {
            Some(table) => {
                // A one-row table (RoBERTa's family) reads type 0 whatever the batch
                // says: its tokenizers return no token types, so HF's model sees zeros.
                let types = match types.filter(|_| cfg.type_vocab_size > 1) {
                    Some(t) => table.embedding(&t.flatten_all()?)?,
                    None => table.embedding(&Tensor::zeros(b * l, DType::U32, ids.device())?)?,
                };
                self.norm
                    .add_forward(&words_pos, &types.reshape((b, l, e))?, None, ops)?
            }
            None => self.norm.forward_with(&words_pos, ops)?,
        };
        let x = mode.dropout(&normed, cfg.hidden_dropout_prob)?;
        match &self.project {
            Some(p) => p.forward_with(&x, ops),
            None => Ok(x),
        }
    }
}

/// What the encoder returns.
pub struct EncoderOutput {
    /// `[B, L, H]`.
    pub sequence: Tensor,
    /// `[B, H]`, when the model has a pooler (BERT's).
    pub pooled: Option<Tensor>,
}

/// A family's encoder (transformers' `BertModel`, `RobertaModel`, `DistilBertModel`,
/// `ElectraModel`, ...), trainable.
pub struct Encoder {
    config: EncoderConfig,
    activation: Activation,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    attn_output_dropout: bool,
    pooler: Option<Linear>,
    dtype: DType,
}

impl Encoder {
    /// Builds the encoder of `config`'s family from `p`. `in_head`: its parameters are
    /// named as inside a head model (`bert.embeddings...`, `roberta.embeddings...`),
    /// else as a bare encoder (`embeddings...`); either is found in a checkpoint
    /// saved the other way. `with_pooler`: BERT's pooler (other families have none
    /// in their heads). A checkpoint holding none of the encoder's weights is an
    /// error, not a model trained from random weights.
    pub fn new(
        config: &EncoderConfig,
        p: &mut Params,
        in_head: bool,
        with_pooler: bool,
    ) -> Result<Self> {
        let family = config.family;
        if with_pooler && family != Family::Bert {
            return Err(ModelError::Checkpoint(format!(
                "a {} encoder has no pooler in Berth's heads",
                family.name()
            )));
        }
        p.set_base_prefix(family.weight_prefix());
        let prefix = if in_head {
            format!("{}.", family.weight_prefix())
        } else {
            String::new()
        };
        let before = p.counts();
        let embeddings = Embeddings::new(p, &prefix, config)?;
        let names = layer_names(family);
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::new(p, &format!("{prefix}{}.{i}", names.stack), names, config))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if with_pooler {
            Some(linear(
                p,
                &format!("{prefix}pooler.dense"),
                config.hidden_size,
                config.hidden_size,
            )?)
        } else {
            None
        };
        p.require_some_loaded(
            before,
            &format!("{prefix}embeddings.word_embeddings.weight"),
            family.name(),
        )?;
        let activation = Activation::parse(&config.hidden_act).map_err(ModelError::Checkpoint)?;
        Ok(Encoder {
            config: config.clone(),
            activation,
            embeddings,
            layers,
            attn_output_dropout: names.attn_output_dropout,
            pooler,
            dtype: DType::F32,
        })
    }

    /// Computes in `dtype` (f32 or bf16); parameters stay f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.dtype = dtype;
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    pub fn family(&self) -> Family {
        self.config.family
    }

    /// The word embedding table `[V, E]` (the MLM decoders are tied to it).
    pub fn word_embeddings(&self) -> &Tensor {
        &self.embeddings.word
    }

    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }

    /// `input_ids` `[B, L]` u32; `token_type_ids` (zeros when absent; ignored by a
    /// family without token types) and `attention_mask` (ones when absent) the same
    /// shape.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<EncoderOutput> {
        self.forward_rows(input_ids, token_type_ids, attention_mask, mode, false)
    }

    /// As [`Encoder::forward`], for a head that reads only the first token (every
    /// sequence classifier): the last layer's attention runs over every token, but
    /// its output projection, LayerNorms and feed-forward only for the first, so
    /// `sequence` is `[B, 1, H]`. The head's output and every gradient are those of
    /// the full forward (dropout draws the full tensor's masks for those rows). HF
    /// computes the other `L - 1` rows and drops them: three quarters of the last
    /// layer's work per token are skipped (6% of bert-base's dense FLOPs, 12% of a
    /// 6-layer MiniLM's).
    pub fn forward_first_token(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<EncoderOutput> {
        self.forward_rows(input_ids, token_type_ids, attention_mask, mode, true)
    }

    fn forward_rows(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
        first_token_only: bool,
    ) -> Result<EncoderOutput> {
        let (b, l) = input_ids.dims2()?;
        if l > self.config.max_tokens() {
            return Err(ModelError::Checkpoint(format!(
                "sequence length {l} exceeds the {} tokens the model's {} positions cover",
                self.config.max_tokens(),
                self.config.max_position_embeddings
            )));
        }
        let ops = mode.ops();
        let x = self
            .embeddings
            .forward(input_ids, token_type_ids, &self.config, mode)?;
        let mut x = x.to_dtype(self.dtype)?;
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
        Ok(EncoderOutput {
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
        let context = attend(&q, &k, &v, heads, mask, probs_dropout, mode)?;
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
        let attn_dropout = if self.attn_output_dropout {
            hidden_dropout()
        } else {
            None
        };
        let x = layer.attn_norm.add_forward(&attn, &x, attn_dropout, ops)?;
        let inter = linear_act(&layer.intermediate, self.activation, &x, ops)?;
        let out = layer.output.forward_with(&inter, ops)?;
        layer.out_norm.add_forward(&out, &x, hidden_dropout(), ops)
    }
}
