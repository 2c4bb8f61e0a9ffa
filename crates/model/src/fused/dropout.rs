//! Dropout from a counter-based generator: whether element `i` of dropout call site
//! `site` is kept is a pure function of `(seed, site, i)` (Philox4x32-10, Salmon et
//! al., SC'11, the generator of cuRAND and PyTorch's CUDA RNG), computed with integer
//! operations only. Masks are regenerated in the backward and never stored, and the
//! same function can run in a CUDA kernel to draw identical masks on CPU and GPU.
//!
//! Element `i` reads lane `i % 4` of Philox4x32-10 at counter
//! `[i/4 (low 32 bits), i/4 (high 32 bits), site (low), site (high)]` under key
//! `[seed (low), seed (high)]`; it is kept when that u32 is `>= round(p * 2^32)`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{err, f32_view, storage_of, tensor_like, with_f32s};

const M0: u64 = 0xD251_1F53;
const M1: u64 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds.
#[inline(always)]
pub fn philox4x32_10(mut ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut k0, mut k1) = (key[0], key[1]);
    for _ in 0..10 {
        let p0 = M0 * ctr[0] as u64;
        let p1 = M1 * ctr[2] as u64;
        ctr = [
            ((p1 >> 32) as u32) ^ ctr[1] ^ k0,
            p1 as u32,
            ((p0 >> 32) as u32) ^ ctr[3] ^ k1,
            p0 as u32,
        ];
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    ctr
}

/// Where a dropout mask comes from: the step's seed and the call site within it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutKey {
    pub seed: u64,
    pub site: u64,
    /// Drop probability, in [0, 1).
    pub p: f32,
}

impl DropoutKey {
    fn threshold(&self) -> u64 {
        (self.p as f64 * 4_294_967_296.0).round() as u64
    }

    /// The scale of kept elements, `1 / (1 - p)`.
    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }

    /// Writes `scale` or 0 for elements `start..start + out.len()` of this site.
    pub fn fill(&self, start: u64, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2. Integer operations only: the same bits as the
            // portable kernel.
            return self.fill_with(start, out, |c, k| unsafe { philox_lanes_avx2(c, k) });
        }
        self.fill_with(start, out, philox_lanes)
    }

    #[inline(always)]
    fn fill_with(
        &self,
        start: u64,
        out: &mut [f32],
        lanes: impl Fn([[u32; LANES]; 4], [u32; 2]) -> [[u32; LANES]; 4],
    ) {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let (s0, s1) = (self.site as u32, (self.site >> 32) as u32);
        let th = self.threshold();
        let scale = self.scale();
        let pick = |r: u32| if (r as u64) < th { 0.0 } else { scale };
        let end = start + out.len() as u64;
        let (mut idx, mut o) = (start, 0usize);
        while idx < end {
            let lane0 = (idx % 4) as usize;
            if lane0 == 0 && end - idx >= (4 * LANES) as u64 {
                // LANES whole blocks at once, laid out so the multiplies vectorise.
                let block = idx / 4;
                let mut c = [[0u32; LANES]; 4];
                for (j, b) in (block..block + LANES as u64).enumerate() {
                    c[0][j] = b as u32;
                    c[1][j] = (b >> 32) as u32;
                    c[2][j] = s0;
                    c[3][j] = s1;
                }
                let r = lanes(c, key);
                for j in 0..LANES {
                    for (lane, rl) in r.iter().enumerate() {
                        out[o + 4 * j + lane] = pick(rl[j]);
                    }
                }
                o += 4 * LANES;
                idx += (4 * LANES) as u64;
                continue;
            }
            let block = idx / 4;
            let r = philox4x32_10([block as u32, (block >> 32) as u32, s0, s1], key);
            let take = (4 - lane0).min((end - idx) as usize);
            for j in 0..take {
                out[o + j] = pick(r[lane0 + j]);
            }
            o += take;
            idx += take as u64;
        }
    }
}

const LANES: usize = 8;

/// [`philox_lanes`] compiled for AVX2: eight 32x32->64 multiplies per instruction
/// pair (a separate function, so the vectoriser sees the loop alone).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
unsafe fn philox_lanes_avx2(c: [[u32; LANES]; 4], key: [u32; 2]) -> [[u32; LANES]; 4] {
    philox_lanes(c, key)
}

/// Philox4x32-10 of `LANES` counters at once, word `w` of counter `j` at `c[w][j]`.
#[inline(always)]
fn philox_lanes(mut c: [[u32; LANES]; 4], key: [u32; 2]) -> [[u32; LANES]; 4] {
    let (mut k0, mut k1) = (key[0], key[1]);
    for _ in 0..10 {
        let mut n = [[0u32; LANES]; 4];
        for j in 0..LANES {
            let p0 = M0 * c[0][j] as u64;
            let p1 = M1 * c[2][j] as u64;
            n[0][j] = ((p1 >> 32) as u32) ^ c[1][j] ^ k0;
            n[1][j] = p1 as u32;
            n[2][j] = ((p0 >> 32) as u32) ^ c[3][j] ^ k1;
            n[3][j] = p0 as u32;
        }
        c = n;
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    c
}

/// The mask of `n` elements (`1/(1-p)` kept, 0 dropped): what the composed path
/// multiplies by, identical to what the fused ops draw.
pub fn keep_mask(key: &DropoutKey, n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n];
    let chunk = 16 * 1024;
    m.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(c, out)| key.fill((c * chunk) as u64, out));
    m
}

/// `x * mask / (1 - p)` in one pass, the mask regenerated in the backward.
struct Dropout(DropoutKey);

/// Multiplies `x` (the site's elements from 0) by its mask in place.
pub(crate) fn apply_mask(key: &DropoutKey, x: &mut [f32]) {
    const CHUNK: usize = 8192;
    x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
        let mut m = [0f32; CHUNK];
        key.fill((c * CHUNK) as u64, &mut m[..out.len()]);
        for (o, k) in out.iter_mut().zip(&m) {
            *o *= k;
        }
    });
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "berth-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut x = f32_view(s, l, "dropout input")?.into_owned();
        apply_mask(&self.0, &mut x);
        Ok((storage_of(x, s.dtype())?, l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = with_f32s([grad], |[g]| {
            let mut g = g.to_vec();
            apply_mask(&self.0, &mut g);
            Ok(g)
        })?;
        Ok(Some(tensor_like(g, arg.shape(), arg.dtype())?))
    }
}

/// Inverted dropout of `x` with `key`'s probability and mask.
pub fn dropout(x: &Tensor, key: DropoutKey) -> candle_core::Result<Tensor> {
    if !(0.0..1.0).contains(&key.p) {
        return Err(err(format!(
            "dropout probability {} is outside [0, 1)",
            key.p
        )));
    }
    x.contiguous()?.apply_op1(Dropout(key))
}
