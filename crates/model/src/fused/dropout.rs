//! Dropout from a counter-based generator: whether element `i` of dropout call site
//! `site` is kept is a pure function of `(seed, site, i)` (Philox4x32-10, Salmon et
//! al., SC'11, the generator of cuRAND and PyTorch's CUDA RNG), computed with integer
//! operations only. Masks are regenerated in the backward and never stored, and the
//! same function can run in a CUDA kernel to draw identical masks on CPU and GPU.
//!
//! Elements come in groups of 64: element `i` is `t = i % 64` of group `g = i / 64`,
//! and reads output word `t / 16` of Philox4x32-10 at counter block
//! `b = 16 g + t % 16`, i.e. counter `[b (low 32 bits), b (high 32 bits), site (low),
//! site (high)]` under key `[seed (low), seed (high)]`; it is kept when that u32 is
//! `>= round(p * 2^32)`. Every output of every block is used once. The grouping lets
//! 16 blocks be computed in the lanes of one vector register and each output word
//! stored as 16 contiguous elements (a CUDA kernel maps a thread to a block the same
//! way).
//!
//! A tensor holding part of a site draws the elements of the site's full tensor it
//! holds: `offset` (samples `s..` of a batch start at `s x` elements per sample, see
//! [`DropoutKey::offset`]) plus, for a slice of rows, [`DropoutKey::rows`]' mapping.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{err, f32_view, simd, storage_of, tensor_like, with_f32s};

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
    /// `None`: element `i` of the tensor is element `i` of the site. `Some((width,
    /// step))`: the tensor holds rows `0, step, 2 step, ...` (each `width` elements)
    /// of the site's full tensor, and row `r`, column `c` draws the site's element
    /// `r step width + c`. The first tokens `[B, 1, H]` of a `[B, L, H]` site are
    /// `(H, L)`: the slice is dropped exactly as the full tensor's first tokens.
    pub rows: Option<(u64, u64)>,
    /// Where element 0 of the site's full tensor sits in the site's stream: a
    /// forward over samples `s..` of a batch draws from `s x` (elements per sample),
    /// so that running a batch in groups of samples drops exactly what one pass over
    /// the whole batch drops (see [`crate::Mode::starting_at_sample`]).
    pub offset: u64,
}

impl DropoutKey {
    /// `round(p 2^32)`: an element whose Philox word is below it is dropped.
    pub fn threshold(&self) -> u64 {
        (self.p as f64 * 4_294_967_296.0).round() as u64
    }

    /// The scale of kept elements, `1 / (1 - p)`.
    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }

    /// Writes `scale` or 0 for elements `start..start + out.len()` of this tensor:
    /// site elements `offset + start..` (each row at its place in the full tensor when
    /// [`DropoutKey::rows`] maps rows).
    /// Compiled for the CPU's widest vectors (the `simd` module); integer operations
    /// only, so the same bits on every ISA.
    pub fn fill(&self, start: u64, out: &mut [f32]) {
        simd(
            #[inline(always)]
            || match self.rows {
                Some((width, step)) if width > 0 && step != 1 => {
                    // Row by row, each piece at its place in the full tensor.
                    let (mut idx, mut o) = (start, 0usize);
                    while o < out.len() {
                        let (r, c) = (idx / width, idx % width);
                        let n = ((width - c) as usize).min(out.len() - o);
                        self.fill_with(self.offset + r * step * width + c, &mut out[o..o + n]);
                        o += n;
                        idx += n as u64;
                    }
                }
                _ => self.fill_with(self.offset + start, out),
            },
        )
    }

    /// The same site, applied to rows `0, step, 2 step, ...` of `width` elements of
    /// its full tensor (see [`DropoutKey::rows`]).
    pub fn every_nth_row(self, width: usize, step: usize) -> Self {
        debug_assert!(self.rows.is_none(), "row maps do not compose");
        DropoutKey {
            rows: Some((width as u64, step as u64)),
            ..self
        }
    }

    #[inline(always)]
    fn fill_with(&self, start: u64, out: &mut [f32]) {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let (s0, s1) = (self.site as u32, (self.site >> 32) as u32);
        let th = self.threshold();
        let scale = self.scale();
        let pick = |r: u32| if (r as u64) < th { 0.0 } else { scale };
        let end = start + out.len() as u64;
        let (mut idx, mut o) = (start, 0usize);
        while idx < end {
            let t = (idx % GROUP) as usize;
            if t == 0 && end - idx >= GROUP {
                // A whole group: LANES counters at once, each lane's outputs stored
                // contiguously, so both the multiplies and the stores vectorise.
                let c = counters(idx / GROUP, s0, s1);
                let r = philox_lanes(c, key);
                for (lane, rl) in r.iter().enumerate() {
                    for (d, &v) in out[o + lane * LANES..o + (lane + 1) * LANES]
                        .iter_mut()
                        .zip(rl)
                    {
                        *d = pick(v);
                    }
                }
                o += GROUP as usize;
                idx += GROUP;
                continue;
            }
            // Part of a group: one Philox call per element, as the mapping defines.
            let block = (idx / GROUP) * LANES as u64 + (t % LANES) as u64;
            let r = philox4x32_10([block as u32, (block >> 32) as u32, s0, s1], key);
            out[o] = pick(r[t / LANES]);
            o += 1;
            idx += 1;
        }
    }
}

/// The counters of group `g`: blocks `g * LANES + j`, word `w` of counter `j` at
/// `c[w][j]`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // j indexes four arrays: the words of counter j.
fn counters(g: u64, s0: u32, s1: u32) -> [[u32; LANES]; 4] {
    let mut c = [[0u32; LANES]; 4];
    for j in 0..LANES {
        let b = g * LANES as u64 + j as u64;
        c[0][j] = b as u32;
        c[1][j] = (b >> 32) as u32;
        c[2][j] = s0;
        c[3][j] = s1;
    }
    c
}

/// Elements per group of `LANES` Philox blocks (4 outputs each).
const GROUP: u64 = 4 * LANES as u64;

/// Philox blocks generated at once: 16 lanes of 32 bits fill one AVX-512 register.
const LANES: usize = 16;

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
        simd(
            #[inline(always)]
            || {
                for (o, k) in out.iter_mut().zip(&m) {
                    *o *= k;
                }
            },
        )
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
