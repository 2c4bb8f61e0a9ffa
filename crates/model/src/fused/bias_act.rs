//! `act(z + b)` in one pass for the feed-forward activation: exact GELU (HF's "gelu",
//! with an erf accurate to f32 rounding that vectorises), its tanh approximation, and
//! ReLU. The backward recomputes `z + b` and returns dz and db.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{err, f32_view, rows_per_task, simd, storage_of, sum_in_order, tensor_like, with_f32s};
use crate::activation::Activation;

/// erf for f32: the odd rational approximation of Eigen's `generic_fast_erf_float`
/// on `[-4, 4]` (erf is ±1 in f32 beyond), branch-free so that it vectorises. Plain
/// multiply-adds, not `mul_add`: without FMA enabled at compile time that is a libm call.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-08;
    p = p * x2 + -2.101_024e-06;
    p = p * x2 + -5.692_506_4e-05;
    p = p * x2 + -7.349_906_3e-04;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-02;
    let p = p * x;
    let mut q = -1.456_607_2e-05_f32;
    q = q * x2 + -2.133_740_6e-04;
    q = q * x2 + -1.682_827e-03;
    q = q * x2 + -7.373_329e-03;
    q = q * x2 + -1.426_474e-02;
    p / q
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn tanh_fast(u: f32) -> f32 {
    // tanh(u) = 1 - 2 / (exp(2u) + 1); exact enough in f32, saturates cleanly.
    let e = super::exp(2.0 * u.clamp(-15.0, 15.0));
    1.0 - 2.0 / (e + 1.0)
}

/// gelu(v) and gelu'(v).
#[inline(always)]
fn gelu(v: f32) -> (f32, f32) {
    let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * super::exp(-0.5 * v * v);
    (v * cdf, cdf + v * pdf)
}

/// gelu_tanh(v) and its derivative.
#[inline(always)]
fn gelu_tanh(v: f32) -> (f32, f32) {
    let u = SQRT_2_OVER_PI * (v + 0.044_715 * v * v * v);
    let t = tanh_fast(u);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * v * v);
    (
        0.5 * v * (1.0 + t),
        0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du,
    )
}

/// relu(v) and its derivative.
#[inline(always)]
fn relu(v: f32) -> (f32, f32) {
    if v > 0.0 { (v, 1.0) } else { (0.0, 0.0) }
}

/// Runs `$body` with `$f` bound to the activation's `fn(f32) -> (act, act')`, the
/// `match` outside the loops so that each loop is one straight-line body that
/// vectorises.
macro_rules! with_act {
    ($a:expr, $f:ident => $body:expr) => {
        match $a {
            Activation::Gelu => {
                let $f = gelu;
                $body
            }
            Activation::GeluTanh => {
                let $f = gelu_tanh;
                $body
            }
            Activation::Relu => {
                let $f = relu;
                $body
            }
        }
    };
}

struct BiasAct(Activation);

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "berth-bias-act"
    }

    fn cpu_fwd(
        &self,
        zs: &CpuStorage,
        zl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = *zl.shape().dims().last().unwrap_or(&1);
        if bl.shape().elem_count() != w {
            return Err(err(format!(
                "bias activation: bias {:?} for width {w}",
                bl.shape()
            )));
        }
        if w == 0 || zl.shape().elem_count() == 0 {
            return Ok((storage_of(Vec::new(), zs.dtype())?, zl.shape().clone()));
        }
        let z = f32_view(zs, zl, "activation input")?;
        let b = f32_view(bs, bl, "activation bias")?;
        let a = self.0;
        let mut y = super::zeros(z.len());
        let per = rows_per_task(w) * w;
        y.par_chunks_mut(per)
            .zip(z.par_chunks(per))
            .for_each(|(ys, zs)| {
                simd(
                    #[inline(always)]
                    || {
                        with_act!(a, act => {
                            for (yr, zr) in ys.chunks_mut(w).zip(zs.chunks(w)) {
                                for ((y, &z), &b) in yr.iter_mut().zip(zr).zip(b.iter()) {
                                    *y = act(z + b).0;
                                }
                            }
                        })
                    },
                )
            });
        Ok((storage_of(y, zs.dtype())?, zl.shape().clone()))
    }

    fn bwd(
        &self,
        z: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let w = b.elem_count();
        if w == 0 || z.elem_count() == 0 {
            return Ok((Some(z.zeros_like()?), Some(b.zeros_like()?)));
        }
        let a = self.0;
        let (dz, db) = with_f32s([z, b, grad], |[zs, bs, dy]| {
            let mut dz = super::zeros(zs.len());
            let per = rows_per_task(w) * w;
            // Partials added in chunk order: deterministic bits.
            let partials = dz
                .par_chunks_mut(per)
                .zip(zs.par_chunks(per))
                .zip(dy.par_chunks(per))
                .map(|((dzs, zs), dys)| {
                    simd(
                        #[inline(always)]
                        || {
                            let mut acc = vec![0f32; w];
                            with_act!(a, act => {
                                for ((dr, zr), gr) in
                                    dzs.chunks_mut(w).zip(zs.chunks(w)).zip(dys.chunks(w))
                                {
                                    for (((d, &z), &g), (&b, acc)) in dr
                                        .iter_mut()
                                        .zip(zr)
                                        .zip(gr)
                                        .zip(bs.iter().zip(acc.iter_mut()))
                                    {
                                        *d = g * act(z + b).1;
                                        *acc += *d;
                                    }
                                }
                            });
                            acc
                        },
                    )
                })
                .collect::<Vec<_>>();
            Ok((dz, sum_in_order(partials, w)))
        })?;
        Ok((
            Some(tensor_like(dz, z.shape(), z.dtype())?),
            Some(tensor_like(db, b.shape(), b.dtype())?),
        ))
    }
}

/// `activation(z + bias)`, bias `[W]` broadcast over the rows of `z` `[..., W]`.
pub fn bias_act(z: &Tensor, bias: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    z.contiguous()?
        .apply_op2(&bias.contiguous()?, BiasAct(activation))
}
