//! `LN(dropout(x) + residual) * w + b` over the last dimension in one pass, statistics
//! in f32 whatever the input dtype; the residual is optional (the MLM head's
//! LayerNorm has none). The forward keeps each row's mean and 1/std; the backward
//! regenerates the dropout mask and computes dx, dresidual, dw and db in one pass over
//! the rows.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::dropout::apply_mask;
use super::{
    DropoutKey, dot_lanes, err, f32_view, rows_per_task, simd, storage_of, sum_in_order, sum_lanes,
    sum_sq_dev_lanes, tensor_like, with_f32s,
};

struct AddLayerNorm {
    eps: f32,
    dropout: Option<DropoutKey>,
    /// `[mean, rstd]` per row, written by the forward.
    stats: OnceLock<Vec<f32>>,
}

impl AddLayerNorm {
    /// `dropout(x) + r`.
    fn sum(&self, x: &[f32], r: Option<&[f32]>) -> Vec<f32> {
        let mut s = x.to_vec();
        if let Some(k) = &self.dropout {
            apply_mask(k, &mut s);
        }
        if let Some(r) = r {
            const CHUNK: usize = 16 * 1024;
            s.par_chunks_mut(CHUNK)
                .zip(r.par_chunks(CHUNK))
                .for_each(|(s, r)| {
                    simd(
                        #[inline(always)]
                        || s.iter_mut().zip(r).for_each(|(s, r)| *s += r),
                    )
                });
        }
        s
    }

    fn cpu_forward(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
        (ws, wl): (&CpuStorage, &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = *xl.shape().dims().last().unwrap_or(&1);
        if h == 0 {
            return Err(err("layer norm over a dimension of size 0"));
        }
        if wl.shape().dims() != [2, h] {
            return Err(err(format!(
                "layer norm: weight and bias {:?} for width {h}",
                wl.shape()
            )));
        }
        let x = f32_view(xs, xl, "layer norm input")?;
        let r = match residual {
            Some((_, rl)) if rl.shape() != xl.shape() => {
                return Err(err(format!(
                    "layer norm: input {:?} and residual {:?} differ",
                    xl.shape(),
                    rl.shape()
                )));
            }
            Some((rs, rl)) => Some(f32_view(rs, rl, "layer norm residual")?),
            None => None,
        };
        let wb = f32_view(ws, wl, "layer norm weight")?;
        let (w, b) = wb.split_at(h);
        let mut y = self.sum(&x, r.as_deref());
        let mut stats = vec![0f32; 2 * (y.len() / h)];
        let per = rows_per_task(h);
        y.par_chunks_mut(per * h)
            .zip(stats.par_chunks_mut(per * 2))
            .for_each(|(ys, st)| {
                simd(
                    #[inline(always)]
                    || {
                        for (row, st) in ys.chunks_mut(h).zip(st.chunks_mut(2)) {
                            let mean = sum_lanes(row) / h as f32;
                            let var = sum_sq_dev_lanes(row, mean) / h as f32;
                            let rstd = 1.0 / (var + self.eps).sqrt();
                            for ((v, wi), bi) in row.iter_mut().zip(w).zip(b) {
                                *v = (*v - mean) * rstd * wi + bi;
                            }
                            st[0] = mean;
                            st[1] = rstd;
                        }
                    },
                )
            });
        let _ = self.stats.set(stats);
        Ok((storage_of(y, xs.dtype())?, xl.shape().clone()))
    }

    /// (dx, dresidual when there is one, d[weight; bias]).
    fn backward(
        &self,
        x: &Tensor,
        r: Option<&Tensor>,
        wb: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>, Tensor)> {
        let stats = self
            .stats
            .get()
            .ok_or_else(|| err("layer norm: backward before forward"))?;
        let h = *x.dims().last().unwrap_or(&1);
        // Without a residual, x stands in its slot and `sum` ignores it.
        let (dsum, dwb) = with_f32s([x, r.unwrap_or(x), wb, grad], |[xs, rs, wbs, dy]| {
            let s = self.sum(xs, r.map(|_| rs));
            let w = &wbs[..h];
            let mut dsum = super::zeros(s.len());
            let per = rows_per_task(h);
            // Per-chunk partial sums added in chunk order: the same bits whatever
            // rayon's work stealing did.
            let partials = dsum
                .par_chunks_mut(per * h)
                .zip(s.par_chunks(per * h))
                .zip(dy.par_chunks(per * h))
                .zip(stats.par_chunks(per * 2))
                .map(|(((ds, s), dy), st)| {
                    simd(
                        #[inline(always)]
                        || {
                            let mut acc = vec![0f32; 2 * h];
                            let (dw, db) = acc.split_at_mut(h);
                            // x-hat and dy * w of the row, so that the row sums vectorise.
                            let (mut xh, mut g) = (vec![0f32; h], vec![0f32; h]);
                            for (((ds, s), dy), st) in ds
                                .chunks_mut(h)
                                .zip(s.chunks(h))
                                .zip(dy.chunks(h))
                                .zip(st.chunks(2))
                            {
                                let (mean, rstd) = (st[0], st[1]);
                                for j in 0..h {
                                    xh[j] = (s[j] - mean) * rstd;
                                    g[j] = dy[j] * w[j];
                                    dw[j] += dy[j] * xh[j];
                                    db[j] += dy[j];
                                }
                                let mg = sum_lanes(&g) / h as f32;
                                let mgx = dot_lanes(&g, &xh) / h as f32;
                                for j in 0..h {
                                    ds[j] = rstd * (g[j] - mg - xh[j] * mgx);
                                }
                            }
                            acc
                        },
                    )
                })
                .collect::<Vec<_>>();
            Ok((dsum, sum_in_order(partials, 2 * h)))
        })?;
        let dwb = tensor_like(dwb, (2, h), wb.dtype())?;
        let (dx, dr) = match (r, &self.dropout) {
            // dx = dresidual: one tensor for both.
            (Some(r), None) => {
                let d = tensor_like(dsum, x.shape(), x.dtype())?;
                let dr = d.to_dtype(r.dtype())?;
                (d, Some(dr))
            }
            (r, key) => {
                let dr = r
                    .map(|r| tensor_like(dsum.clone(), r.shape(), r.dtype()))
                    .transpose()?;
                let mut dx = dsum;
                if let Some(k) = key {
                    apply_mask(k, &mut dx);
                }
                (tensor_like(dx, x.shape(), x.dtype())?, dr)
            }
        };
        Ok((dx, dr, dwb))
    }
}

impl CustomOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "berth-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((xs, xl), Some((rs, rl)), (ws, wl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        r: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dr, dwb) = self.backward(x, Some(r), wb, grad)?;
        Ok((Some(dx), dr, Some(dwb)))
    }
}

impl CustomOp2 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "berth-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_forward((xs, xl), None, (ws, wl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, _, dwb) = self.backward(x, None, wb, grad)?;
        Ok((Some(dx), Some(dwb)))
    }
}

/// `LayerNorm(dropout(x) + residual)` with `weight` and `bias` `[H]`; no residual
/// when `None`, no dropout when `None`.
pub fn add_layer_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    dropout: Option<DropoutKey>,
) -> candle_core::Result<Tensor> {
    let wb = Tensor::stack(&[weight, bias], 0)?;
    let op = AddLayerNorm {
        eps: eps as f32,
        dropout,
        stats: OnceLock::new(),
    };
    let x = x.contiguous()?;
    match residual {
        Some(r) => x.apply_op3(&r.contiguous()?, &wb, op),
        None => x.apply_op2(&wb, op),
    }
}
