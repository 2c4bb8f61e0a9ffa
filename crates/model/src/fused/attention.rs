//! The attention core as one op: `dropout(softmax(Q K^T / sqrt(d) + mask)) V`, parallel
//! over (batch, head) with single-threaded gemms per head, reading Q, K and V straight
//! from the `[B, L, heads * d]` projections and writing the context in the same layout
//! (no transposed copies). The forward keeps only each row's log-sum-exp; the backward
//! recomputes the probabilities, so no `[B, heads, L, L]` tensor sits in the graph.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{
    DropoutKey, Mat, SendPtr, dot_lanes, err, f32_view, max_lanes, sgemm, sgemm_ptr, simd,
    storage_of, sum_lanes, tensor_like, with_f32s,
};

struct Attention {
    heads: usize,
    /// Additive key mask `[B, L]` (0 attended, the dtype's minimum elsewhere, as HF).
    mask: Option<Vec<f32>>,
    dropout: Option<DropoutKey>,
    /// `(max, 1 / sum of exp(score - max))` of each score row `[B, heads, L]`, written
    /// by the forward. Kept apart rather than as one log-sum-exp: with HF's additive
    /// mask a fully masked row's max is f32::MIN, which would swallow `ln(sum)`.
    stats: OnceLock<Vec<(f32, f32)>>,
}

/// The stats buffer, written in disjoint rows by parallel tasks.
#[derive(Clone, Copy)]
struct StatsPtr(*mut (f32, f32));
// SAFETY: each task writes only its own (batch, head) rows.
unsafe impl Send for StatsPtr {}
unsafe impl Sync for StatsPtr {}

impl StatsPtr {
    fn get(self) -> *mut (f32, f32) {
        self.0
    }
}

struct Dims {
    b: usize,
    l: usize,
    d: usize,
    hd: usize,
}

impl Attention {
    fn dims(&self, shape: &Shape) -> candle_core::Result<Dims> {
        let (b, l, hd) = shape.dims3()?;
        if self.heads == 0 || hd % self.heads != 0 {
            return Err(err(format!(
                "attention: width {hd} is not a multiple of {} heads",
                self.heads
            )));
        }
        if let Some(m) = &self.mask
            && m.len() != b * l
        {
            return Err(err(format!("attention: mask of {} for {b} x {l}", m.len())));
        }
        Ok(Dims {
            b,
            l,
            d: hd / self.heads,
            hd,
        })
    }

    /// Scores of (batch `b`, head `h`) into `s` (`L x L`): scale * Q K^T + mask.
    #[inline(always)]
    fn scores(&self, q: &[f32], k: &[f32], dm: &Dims, b: usize, h: usize, s: &mut [f32]) {
        let off = b * dm.l * dm.hd + h * dm.d;
        let scale = 1.0 / (dm.d as f32).sqrt();
        sgemm(
            dm.l,
            dm.l,
            dm.d,
            s,
            dm.l,
            false,
            Mat::strided(&q[off..], dm.hd),
            Mat {
                data: &k[off..],
                rs: 1,
                cs: dm.hd,
            },
            scale,
            false,
        );
        if let Some(mask) = &self.mask {
            let mrow = &mask[b * dm.l..(b + 1) * dm.l];
            for row in s.chunks_mut(dm.l) {
                for (v, m) in row.iter_mut().zip(mrow) {
                    *v += m;
                }
            }
        }
    }

    /// Multiplies the probabilities of (b, h) by their dropout mask.
    #[inline(always)]
    fn drop(&self, dm: &Dims, b: usize, h: usize, p: &mut [f32], buf: &mut Vec<f32>) {
        if let Some(key) = &self.dropout {
            buf.resize(dm.l * dm.l, 0.0);
            key.fill((((b * self.heads + h) * dm.l) * dm.l) as u64, buf);
            for (v, k) in p.iter_mut().zip(buf.iter()) {
                *v *= k;
            }
        }
    }
    /// P of (b, h) again, from the scores and the row statistics the forward saved
    /// (max and 1 / sum of the exponentials), without the dropout mask.
    #[inline(always)]
    fn recompute_probabilities(
        &self,
        dm: &Dims,
        [q, k]: [&[f32]; 2],
        stats: &[(f32, f32)],
        b: usize,
        h: usize,
        p: &mut [f32],
    ) {
        self.scores(q, k, dm, b, h, p);
        for (row, &(max, inv)) in p.chunks_mut(dm.l).zip(stats) {
            for x in row.iter_mut() {
                *x = super::exp(*x - max) * inv;
            }
        }
    }

    /// The backward of (batch, head) `bh`: recomputes P from the saved row stats and
    /// the mask, then dV = (P o M)^T dO, dP = (dO V^T) o M,
    /// dS = P o (dP - rowsum(dP o P)), dQ = dS K / sqrt(d), dK = dS^T Q / sqrt(d).
    ///
    /// # Safety
    /// `dst` must point at `[B, L, heads * d]` buffers whose (b, h) blocks no other
    /// thread touches meanwhile.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn backward_head(
        &self,
        dm: &Dims,
        [q, k, v, dout]: [&[f32]; 4],
        stats: &[(f32, f32)],
        bh: usize,
        p: &mut [f32],
        dp: &mut [f32],
        buf: &mut Vec<f32>,
        dst: Grads,
    ) {
        let (b, h) = (bh / self.heads, bh % self.heads);
        let off = b * dm.l * dm.hd + h * dm.d;
        self.recompute_probabilities(dm, [q, k], stats, b, h, p);
        let strided = |data| Mat::strided(data, dm.hd);
        let (qv, kv, dov) = (
            strided(&q[off..]),
            strided(&k[off..]),
            strided(&dout[off..]),
        );
        // dP' = dO V^T
        sgemm(
            dm.l,
            dm.l,
            dm.d,
            dp,
            dm.l,
            false,
            dov,
            Mat {
                data: &v[off..],
                rs: 1,
                cs: dm.hd,
            },
            1.0,
            false,
        );
        // P o M, the probabilities the forward multiplied V by, and dP = dP' o M.
        let pm: &[f32] = match &self.dropout {
            Some(key) => {
                buf.resize(dm.l * dm.l, 0.0);
                key.fill((bh * dm.l * dm.l) as u64, buf);
                for (d, m) in dp.iter_mut().zip(buf.iter()) {
                    *d *= m;
                }
                for (m, &pv) in buf.iter_mut().zip(p.iter()) {
                    *m *= pv;
                }
                buf
            }
            None => p,
        };
        let scale = 1.0 / (dm.d as f32).sqrt();
        // SAFETY: the caller's promise: (b, h) owns these blocks of dv, dq and dk.
        unsafe {
            sgemm_ptr(
                dm.l,
                dm.d,
                dm.l,
                dst.dv.get().add(off),
                dm.hd,
                false,
                Mat::t(pm, dm.l),
                dov,
                1.0,
                false,
            )
        };
        softmax_backward(dp, p, dm.l);
        // SAFETY: as above.
        unsafe {
            sgemm_ptr(
                dm.l,
                dm.d,
                dm.l,
                dst.dq.get().add(off),
                dm.hd,
                false,
                Mat::rows(dp, dm.l),
                kv,
                scale,
                false,
            );
            sgemm_ptr(
                dm.l,
                dm.d,
                dm.l,
                dst.dk.get().add(off),
                dm.hd,
                false,
                Mat::t(dp, dm.l),
                qv,
                scale,
                false,
            );
        }
    }
}

/// The softmax's backward in place, row by row of length `l`: dS = P o (dP -
/// rowsum(dP o P)), into `dp`.
#[inline(always)]
fn softmax_backward(dp: &mut [f32], p: &[f32], l: usize) {
    for (drow, prow) in dp.chunks_mut(l).zip(p.chunks(l)) {
        let di = dot_lanes(drow, prow);
        for (d, &pv) in drow.iter_mut().zip(prow) {
            *d = pv * (*d - di);
        }
    }
}

/// Where the backward's parallel tasks write dQ, dK and dV.
#[derive(Clone, Copy)]
struct Grads {
    dq: SendPtr,
    dk: SendPtr,
    dv: SendPtr,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "berth-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if ql.shape() != kl.shape() || ql.shape() != vl.shape() {
            return Err(err(format!(
                "attention: q {:?}, k {:?}, v {:?} differ",
                ql.shape(),
                kl.shape(),
                vl.shape()
            )));
        }
        let dm = self.dims(ql.shape())?;
        let q = f32_view(qs, ql, "query")?;
        let k = f32_view(ks, kl, "key")?;
        let v = f32_view(vs, vl, "value")?;
        let mut out = super::zeros(dm.b * dm.l * dm.hd);
        if out.is_empty() {
            let _ = self.stats.set(Vec::new());
            return Ok((storage_of(out, qs.dtype())?, ql.shape().clone()));
        }
        let mut lse = vec![(0f32, 0f32); dm.b * self.heads * dm.l];
        let optr = SendPtr(out.as_mut_ptr());
        let lptr = StatsPtr(lse.as_mut_ptr());
        (0..dm.b * self.heads).into_par_iter().for_each_init(
            || (vec![0f32; dm.l * dm.l], Vec::new()),
            |(p, buf), bh| {
                simd(
                    #[inline(always)]
                    || {
                        let (b, h) = (bh / self.heads, bh % self.heads);
                        self.scores(&q, &k, &dm, b, h, p);
                        // SAFETY: task bh alone owns lse[bh * L..(bh + 1) * L].
                        let lse = unsafe {
                            std::slice::from_raw_parts_mut(lptr.get().add(bh * dm.l), dm.l)
                        };
                        for (row, lse) in p.chunks_mut(dm.l).zip(lse) {
                            let max = max_lanes(row);
                            if max == f32::NEG_INFINITY {
                                row.fill(0.0);
                                *lse = (0.0, 0.0);
                                continue;
                            }
                            // Apart from the sum, so that the exponentials vectorise.
                            for x in row.iter_mut() {
                                *x = super::exp(*x - max);
                            }
                            let inv = 1.0 / sum_lanes(row);
                            for x in row.iter_mut() {
                                *x *= inv;
                            }
                            *lse = (max, inv);
                        }
                        self.drop(&dm, b, h, p, buf);
                        let off = b * dm.l * dm.hd + h * dm.d;
                        // SAFETY: (b, h) writes columns h*d..(h+1)*d of rows b*L..(b+1)*L, which
                        // no other task touches; the views fit their slices.
                        unsafe {
                            sgemm_ptr(
                                dm.l,
                                dm.d,
                                dm.l,
                                optr.get().add(off),
                                dm.hd,
                                false,
                                Mat::rows(p, dm.l),
                                Mat::strided(&v[off..], dm.hd),
                                1.0,
                                false,
                            )
                        };
                    },
                )
            },
        );
        let _ = self.stats.set(lse);
        Ok((storage_of(out, qs.dtype())?, ql.shape().clone()))
    }

    fn bwd(
        &self,
        qt: &Tensor,
        kt: &Tensor,
        vt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self
            .stats
            .get()
            .ok_or_else(|| err("attention: backward before forward"))?;
        let dm = self.dims(qt.shape())?;
        let n = dm.b * dm.l * dm.hd;
        let (mut dq, mut dk, mut dv) = (super::zeros(n), super::zeros(n), super::zeros(n));
        if n == 0 {
            return Ok((
                Some(qt.zeros_like()?),
                Some(kt.zeros_like()?),
                Some(vt.zeros_like()?),
            ));
        }
        let dst = Grads {
            dq: SendPtr(dq.as_mut_ptr()),
            dk: SendPtr(dk.as_mut_ptr()),
            dv: SendPtr(dv.as_mut_ptr()),
        };
        with_f32s([qt, kt, vt, grad], |[q, k, v, dout]| {
            (0..dm.b * self.heads).into_par_iter().for_each_init(
                || (vec![0f32; dm.l * dm.l], vec![0f32; dm.l * dm.l], Vec::new()),
                |(p, dp, buf), bh| {
                    // SAFETY: task bh writes only its own (batch, head) blocks of dst.
                    simd(
                        #[inline(always)]
                        || unsafe {
                            self.backward_head(
                                &dm,
                                [q, k, v, dout],
                                &stats[bh * dm.l..],
                                bh,
                                p,
                                dp,
                                buf,
                                dst,
                            )
                        },
                    )
                },
            );
            Ok(())
        })?;
        Ok((
            Some(tensor_like(dq, qt.shape(), qt.dtype())?),
            Some(tensor_like(dk, kt.shape(), kt.dtype())?),
            Some(tensor_like(dv, vt.shape(), vt.dtype())?),
        ))
    }
}

/// `dropout(softmax(q k^T / sqrt(d) + mask)) v` for `q`, `k`, `v` `[B, L, heads * d]`,
/// `mask` the additive key mask `[B * L]` (row-major `[B, L]`); the context comes back
/// as `[B, L, heads * d]`. The dropout key's element `i` is element `i` of the
/// probabilities laid out `[B, heads, L, L]`, as in the composed path.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<Vec<f32>>,
    dropout: Option<DropoutKey>,
) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            heads,
            mask,
            dropout,
            stats: OnceLock::new(),
        },
    )
}
