//! Building blocks: linear, LayerNorm, dropout and softmax, each dispatching to a fused
//! op ([`crate::fused`]) where [`Ops`] and the device allow, else to its composed form
//! (differentiable candle primitives only: candle's own `layer_norm` and
//! `softmax_last_dim` record no backward op, see STYLE.md), which stays the reference.

use std::cell::Cell;

use candle_core::{D, DType, Tensor};

use crate::activation::Activation;
use crate::error::Result;
use crate::fused::{self, DropoutKey, Ops};

/// Whether dropout is active, the seed its masks derive from, and which ops run.
///
/// Masks come from a counter-based generator (see `fused::dropout`): the mask of
/// dropout call `n` of a forward pass is a function of (seed, n, element), so the
/// fused and composed paths, and later a GPU, draw identical masks.
pub struct Mode {
    train: bool,
    seed: u64,
    site: Cell<u64>,
    /// The first sample of the batch this forward runs, within the batch whose
    /// masks it reproduces ([`Mode::starting_at_sample`]).
    first_sample: u64,
    ops: Ops,
}

impl Mode {
    /// Dropout off (inference, evaluation).
    pub fn eval() -> Self {
        Mode {
            train: false,
            seed: 0,
            site: Cell::new(0),
            first_sample: 0,
            ops: Ops::from_env(),
        }
    }

    /// Dropout on, masks drawn from `seed` (same seed, same masks).
    pub fn train(seed: u64) -> Self {
        Mode {
            train: true,
            seed,
            site: Cell::new(0),
            first_sample: 0,
            ops: Ops::from_env(),
        }
    }

    /// The same mode running `ops` (the composed reference, or the fused ops).
    pub fn with_ops(mut self, ops: Ops) -> Self {
        self.ops = ops;
        self
    }

    /// A fresh mode (sites from the first) for a forward over samples `first..` of
    /// this mode's batch (offsets add up, so groups of groups draw right): every site draws the masks those samples get in one forward over the
    /// whole batch (same seed, same sequence length), so a batch run in groups of
    /// samples, as chunk classification's bounded-memory step does, drops exactly the
    /// same elements, and two passes over one group drop the same elements twice.
    pub fn starting_at_sample(&self, first: usize) -> Self {
        Mode {
            train: self.train,
            seed: self.seed,
            site: Cell::new(0),
            first_sample: self.first_sample + first as u64,
            ops: self.ops,
        }
    }

    pub fn ops(&self) -> Ops {
        self.ops
    }

    pub fn is_train(&self) -> bool {
        self.train
    }

    /// The key of the next dropout call site with probability `p`, or `None` when
    /// dropout is off (eval mode or `p == 0`); each call takes a new site. The site's
    /// tensor is sample-major with `per_sample` elements per sample.
    pub fn next_dropout(&self, p: f64, per_sample: usize) -> Option<DropoutKey> {
        if !self.train || p <= 0.0 {
            return None;
        }
        let site = self.site.get();
        self.site.set(site + 1);
        Some(DropoutKey {
            seed: self.seed,
            site,
            p: p as f32,
            rows: None,
            offset: self.first_sample * per_sample as u64,
        })
    }

    /// Inverted dropout with probability `p`; identity in eval mode.
    pub fn dropout(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        let per_sample = match x.dims().first() {
            Some(&b) if b > 0 => x.elem_count() / b,
            _ => x.elem_count(),
        };
        match self.next_dropout(p, per_sample) {
            None => Ok(x.clone()),
            Some(key) => apply_dropout(x, key, self.ops),
        }
    }
}

/// `x` times the mask of `key`: the fused op on the CPU, a host-drawn mask otherwise.
pub(crate) fn apply_dropout(x: &Tensor, key: DropoutKey, ops: Ops) -> Result<Tensor> {
    if ops.fused_on(x.device()) {
        return Ok(fused::dropout(x, key)?);
    }
    let mask = fused::keep_mask(&key, x.elem_count());
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}

/// `y = x W^T + b`, W as `[out, in]` (PyTorch's layout).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// The composed path: candle's matmul and broadcast add.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.to_dtype(x.dtype())?;
        let y = x.broadcast_matmul(&w.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.to_dtype(x.dtype())?)?,
            None => y,
        })
    }

    /// The fused op (bias folded into the gemm) where `ops` allows, else `forward`.
    pub fn forward_with(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        if ops.fused_on(x.device()) {
            Ok(fused::linear(x, &self.weight, self.bias.as_ref())?)
        } else {
            self.forward(x)
        }
    }
}

/// LayerNorm over the last dimension, statistics in f32 whatever the input dtype.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = normed
            .broadcast_mul(&self.weight.to_dtype(DType::F32)?)?
            .broadcast_add(&self.bias.to_dtype(DType::F32)?)?;
        Ok(y.to_dtype(dtype)?)
    }

    /// `LN(x)`: the fused op where `ops` allows, else `forward`.
    pub fn forward_with(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        if ops.fused_on(x.device()) {
            return Ok(fused::add_layer_norm(
                x,
                None,
                &self.weight,
                &self.bias,
                self.eps,
                None,
            )?);
        }
        self.forward(x)
    }

    /// `LN(dropout(x) + residual)`: one fused op where `ops` allows, else the
    /// composed dropout, add and `forward`.
    pub fn add_forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        dropout: Option<DropoutKey>,
        ops: Ops,
    ) -> Result<Tensor> {
        if ops.fused_on(x.device()) {
            return Ok(fused::add_layer_norm(
                x,
                Some(residual),
                &self.weight,
                &self.bias,
                self.eps,
                dropout,
            )?);
        }
        let x = match dropout {
            Some(key) => apply_dropout(x, key, ops)?,
            None => x.clone(),
        };
        self.forward(&(x + residual)?)
    }
}

/// Softmax over the last dimension, in f32, from primitives (max subtracted for
/// stability; the max carries no gradient, which leaves the result's gradient exact).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?.to_dtype(dtype)?)
}

/// `activation(x W^T + b)`: the gemm, then bias and activation in one fused op where
/// `ops` allows; the composed linear and activation otherwise.
pub fn linear_act(lin: &Linear, act: Activation, x: &Tensor, ops: Ops) -> Result<Tensor> {
    match (&lin.bias, ops.fused_on(x.device())) {
        (Some(b), true) => {
            let z = fused::linear(x, &lin.weight, None)?;
            Ok(fused::bias_act(&z, &b.to_dtype(z.dtype())?, act)?)
        }
        _ => act.forward(&lin.forward_with(x, ops)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn layer_norm_matches_the_definition_and_passes_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[[1f32, 2., 4.], [0., -1., 3.]], &dev).unwrap())
            .unwrap();
        let w = Var::from_tensor(&Tensor::new(&[1f32, 2., 0.5], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0f32, 1., -1.], &dev).unwrap()).unwrap();
        let ln = LayerNorm {
            weight: w.as_tensor().clone(),
            bias: b.as_tensor().clone(),
            eps: 1e-12,
        };
        let y = ln.forward(x.as_tensor()).unwrap();
        let row: Vec<f32> = y.to_vec2::<f32>().unwrap()[0].clone();
        let (m, v) = (
            7f32 / 3.,
            ((1f32 - 7. / 3.).powi(2) + (2f32 - 7. / 3.).powi(2) + (4f32 - 7. / 3.).powi(2)) / 3.,
        );
        let want = [
            (1. - m) / v.sqrt(),
            (2. - m) / v.sqrt() * 2. + 1.,
            (4. - m) / v.sqrt() * 0.5 - 1.,
        ];
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let loss = (y.sqr().unwrap().sum_all().unwrap() + y.sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        for v in [&x, &w, &b] {
            let g = grads
                .get(v.as_tensor())
                .expect("gradient reaches the input and both parameters");
            assert!(
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_pass_gradients() {
        let x = Var::from_tensor(
            &Tensor::new(&[[1f32, 2., 3.], [-1e4, 0., 1e4]], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let p = softmax_last(x.as_tensor()).unwrap();
        for row in p.to_vec2::<f32>().unwrap() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let w = Tensor::new(&[[1f32, 0., 0.], [0., 1., 0.]], &Device::Cpu).unwrap();
        let grads = p.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
    }

    #[test]
    fn dropout_is_seeded_and_off_in_eval() {
        let x = Tensor::ones((4, 64), DType::F32, &candle_core::Device::Cpu).unwrap();
        let a = Mode::train(3)
            .dropout(&x, 0.5)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let b = Mode::train(3)
            .dropout(&x, 0.5)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert!(a.iter().flatten().all(|&v| v == 0.0 || v == 2.0));
        assert_eq!(
            Mode::eval()
                .dropout(&x, 0.5)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            x.to_vec2::<f32>().unwrap()
        );
    }
}
