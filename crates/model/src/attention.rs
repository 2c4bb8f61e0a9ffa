//! The attention core every encoder family shares: `softmax(Q Kᵀ / √d + mask)`, its
//! dropout, times V. The fused op runs on the CPU, the composed reference elsewhere
//! (and under [`crate::Ops::Composed`]).

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::fused::{self, DropoutKey};
use crate::layers::{Mode, softmax_last};

/// The attention mask in both forms: additive `[B, 1, 1, L]` for the composed path,
/// and the same values on the host for the fused op.
pub(crate) struct AttentionMask {
    tensor: Tensor,
    host: Vec<f32>,
}

impl AttentionMask {
    /// 0 where attended, the dtype's minimum elsewhere (HF). The host copy only
    /// for the fused op (on a GPU it would cost a device sync per forward).
    pub(crate) fn new(m: &Tensor, b: usize, l: usize, host: bool) -> Result<Self> {
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

/// The context `[B, L, heads * d]` of `q`, `k`, `v` (each `[B, L, heads * d]`).
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&AttentionMask>,
    dropout: Option<DropoutKey>,
    mode: &Mode,
) -> Result<Tensor> {
    if mode.ops().fused_on(q.device()) {
        Ok(fused::attention(
            q,
            k,
            v,
            heads,
            mask.map(|m| m.host.clone()),
            dropout,
        )?)
    } else {
        composed_attention(q, k, v, heads, mask.map(|m| &m.tensor), dropout, mode)
    }
}

/// The reference attention core from candle primitives: `[B, L, heads * d]` in and out.
fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
    dropout: Option<DropoutKey>,
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
