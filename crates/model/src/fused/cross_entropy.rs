//! Mean cross-entropy with PyTorch's ignore index -100, fused: log-softmax and the
//! negative log-likelihood in one pass over each row; the backward is
//! `(softmax - one_hot) / count` on the kept rows and 0 on the ignored ones.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{err, f32_view, rows_per_task, tensor_like, with_f32s};
use berth_masking::IGNORE_INDEX;

struct CrossEntropy {
    labels: Vec<i64>,
    /// Log-sum-exp of each row, written by the forward.
    lse: OnceLock<Vec<f32>>,
}

impl CrossEntropy {
    fn kept(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "berth-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = l.shape().dims2()?;
        if n != self.labels.len() {
            return Err(err(format!(
                "cross-entropy: {n} rows of logits for {} labels",
                self.labels.len()
            )));
        }
        if let Some((row, &bad)) = self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &y)| y != IGNORE_INDEX && !(0..c as i64).contains(&y))
        {
            return Err(err(format!(
                "cross-entropy: label {bad} of row {row} is outside 0..{c}"
            )));
        }
        if c == 0 && n > 0 {
            return Err(err("cross-entropy over 0 classes"));
        }
        let x = f32_view(s, l, "logits")?;
        let mut lse = vec![0f32; n];
        let per = rows_per_task(c);
        // Partials collected in chunk order and added in that order: deterministic bits.
        let partials: Vec<f64> = lse
            .par_chunks_mut(per)
            .zip(x.par_chunks(per * c))
            .zip(self.labels.par_chunks(per))
            .map(|((lse, xs), ys)| {
                let mut t = 0f64;
                for ((lse, row), &y) in lse.iter_mut().zip(xs.chunks(c)).zip(ys) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                    *lse = max + sum.ln();
                    if y != IGNORE_INDEX {
                        t += (*lse - row[y as usize]) as f64;
                    }
                }
                t
            })
            .collect();
        let total: f64 = partials.iter().sum();
        let _ = self.lse.set(lse);
        let loss = (total / self.kept().max(1) as f64) as f32;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let lse = self
            .lse
            .get()
            .ok_or_else(|| err("cross-entropy: backward before forward"))?;
        let (n, c) = arg.dims2()?;
        if n == 0 {
            return Ok(Some(arg.zeros_like()?));
        }
        let g =
            grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? / self.kept().max(1) as f32;
        let dx = with_f32s([arg], |[x]| {
            let mut dx = super::zeros(x.len());
            let per = rows_per_task(c);
            dx.par_chunks_mut(per * c)
                .zip(x.par_chunks(per * c))
                .zip(self.labels.par_chunks(per))
                .zip(lse.par_chunks(per))
                .for_each(|(((dxs, xs), ys), ls)| {
                    for (((d, row), &y), &l) in dxs.chunks_mut(c).zip(xs.chunks(c)).zip(ys).zip(ls)
                    {
                        if y == IGNORE_INDEX {
                            continue;
                        }
                        for (d, &v) in d.iter_mut().zip(row) {
                            *d = g * (v - l).exp();
                        }
                        d[y as usize] -= g;
                    }
                });
            Ok(dx)
        })?;
        Ok(Some(tensor_like(dx, arg.shape(), arg.dtype())?))
    }
}

/// Mean cross-entropy of `logits` `[N, C]` against `labels` (-100 ignored); 0 when
/// every label is ignored. The loss is f32 whatever the logits' dtype.
pub fn cross_entropy(logits: &Tensor, labels: &[i64]) -> candle_core::Result<Tensor> {
    logits.contiguous()?.apply_op1(CrossEntropy {
        labels: labels.to_vec(),
        lse: OnceLock::new(),
    })
}
