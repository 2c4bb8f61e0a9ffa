//! Fused training ops with their own backward, run on the CPU through candle's
//! `CustomOp` seam (`apply_op{1,2,3}` records the op, so autograd calls its `bwd`).
//!
//! Each op does in one parallel pass what the composed path in `layers.rs` does in
//! several single-threaded element-wise passes, each with its own allocation. The
//! composed path stays the reference: tests compare every op with it, and
//! `BERTH_OPS=composed` (or [`Ops::Composed`] on a [`crate::Mode`]) selects it at run
//! time. A tensor on another device than the CPU always takes the composed path: the
//! CUDA kernels are the GPU issue's, and a missing kernel must never give a wrong
//! result.
//!
//! All ops compute in f32 whatever the input dtype (bf16 inputs are widened), and
//! return each gradient in its input's dtype.

mod attention;
mod bias_act;
mod cross_entropy;
mod dropout;
pub mod launch;
mod layer_norm;
mod linear;

use std::borrow::Cow;
use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Shape, Storage, Tensor};

pub use attention::attention;
pub use bias_act::bias_act;
pub use cross_entropy::cross_entropy;
pub use dropout::{DropoutKey, dropout, keep_mask, philox4x32_10};
pub use layer_norm::add_layer_norm;
pub use linear::linear;

/// Which implementation of the layers runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ops {
    /// The fused ops on a CPU tensor (the composed path elsewhere).
    Fused,
    /// Only candle primitives: the slow, obviously-correct reference.
    Composed,
}

impl Ops {
    /// `BERTH_OPS=composed` selects the reference path; anything else (or unset) the
    /// fused ops. Read once per process.
    pub fn from_env() -> Ops {
        static OPS: OnceLock<Ops> = OnceLock::new();
        *OPS.get_or_init(|| match std::env::var("BERTH_OPS").as_deref() {
            Ok("composed") => Ops::Composed,
            _ => Ops::Fused,
        })
    }

    /// Whether the fused ops run for a tensor on `device`.
    pub fn fused_on(self, device: &Device) -> bool {
        self == Ops::Fused && device.is_cpu()
    }
}

pub(crate) fn err(msg: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(msg.into())
}

/// The f32 values of a CPU storage viewed through a contiguous layout: borrowed for
/// f32, widened for f16/bf16.
pub(crate) fn f32_view<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<Cow<'a, [f32]>> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| err(format!("fused op: {what} must be contiguous")))?;
    Ok(match s {
        CpuStorage::F32(v) => Cow::Borrowed(&v[start..end]),
        CpuStorage::BF16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
        CpuStorage::F16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
        other => {
            return Err(err(format!(
                "fused op: {what} has dtype {:?}, a float was expected",
                other.dtype()
            )));
        }
    })
}

/// A CPU storage of `dtype` holding `v`.
pub(crate) fn storage_of(v: Vec<f32>, dtype: DType) -> candle_core::Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
        DType::F16 => CpuStorage::F16(v.into_iter().map(half::f16::from_f32).collect()),
        other => return Err(err(format!("fused op: cannot produce {other:?}"))),
    })
}

/// Runs `f` over the f32 values of each of `ts` (made contiguous first), all borrowed
/// at once, so a backward reads its inputs without nesting one closure per tensor.
pub(crate) fn with_f32s<const N: usize, R>(
    ts: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let ts = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let views = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(s) => f32_view(s, layout, "backward operand"),
            _ => Err(err("fused op: backward on a non-CPU tensor")),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    f(std::array::from_fn(|i| &*views[i]))
}

/// A tensor of `like`'s dtype on the CPU from f32 values.
pub(crate) fn tensor_like(
    v: Vec<f32>,
    shape: impl Into<Shape>,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
}

/// A raw pointer that parallel workers write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: every user writes index ranges no other worker touches.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows of at least this many elements in total per rayon task: below it the
/// scheduling costs more than the work.
pub(crate) const MIN_TASK_ELEMS: usize = 16 * 1024;

/// `n` zeros, written by rayon's threads: a fresh `vec![0.0; n]` from reused heap
/// memory is one serial memset, and the fused ops allocate hundreds of megabytes of
/// outputs and gradients per step.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    if n < 4 * MIN_TASK_ELEMS {
        return vec![0f32; n];
    }
    // SAFETY: each chunk is filled whole.
    unsafe {
        par_init(n, MIN_TASK_ELEMS, |_, c| {
            c.fill(std::mem::MaybeUninit::new(0.0))
        })
    }
}

/// A buffer of `n` values built on rayon's threads without zeroing it first: `init`
/// gets each chunk of `chunk` elements (the last may be shorter) with its index.
///
/// # Safety
/// `init` must write every element of the chunk it is given.
pub(crate) unsafe fn par_init(
    n: usize,
    chunk: usize,
    init: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| init(i, c));
    // SAFETY: the chunks cover all n elements, and the caller's `init` wrote each.
    unsafe { v.set_len(n) };
    v
}

/// A buffer of `n` values that `write` fills completely through a raw pointer (a
/// gemm that does not read its destination), so it is never zeroed first.
///
/// # Safety
/// `write` must write every one of the `n` elements behind the pointer, and read none
/// before writing it.
pub(crate) unsafe fn written_by(n: usize, write: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    write(v.as_mut_ptr());
    // SAFETY: the caller's promise: all n elements are initialised.
    unsafe { v.set_len(n) };
    v
}

/// Adds per-chunk partial vectors of length `n` in chunk order, so a parallel
/// reduction gives the same bits whatever rayon's scheduling (resume is bit-exact).
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    let mut total = vec![0f32; n];
    for p in partials {
        for (t, v) in total.iter_mut().zip(&p) {
            *t += v;
        }
    }
    total
}

pub(crate) fn rows_per_task(cols: usize) -> usize {
    MIN_TASK_ELEMS.div_ceil(cols.max(1)).max(1)
}

/// Runs `f` compiled for the widest x86 vector extension this CPU has (AVX-512, else
/// AVX2 + FMA, else the build's baseline, SSE2). A release build targets baseline
/// x86-64 so that one binary runs anywhere; without this the fused ops' loops ran 4
/// lanes wide on a 16-lane machine. `f` is inlined into a `#[target_feature]`
/// function (callers mark the closure `#[inline(always)]`: it has three call sites
/// here, and without the mark it stays a baseline function), so its loops, and the
/// `#[inline(always)]` helpers they call, are
/// vectorised for that extension.
///
/// The result has the same bits whichever version runs: the loops are element-wise
/// (the compiler never reassociates float sums or contracts a multiply and an add
/// into an FMA on its own), and the reductions that vectorise ([`sum_lanes`],
/// [`dot_lanes`]) fix their lane order in the source.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    if FORCE_BASELINE.load(std::sync::atomic::Ordering::Relaxed) {
        return f();
    }
    #[cfg(target_arch = "x86_64")]
    {
        match Isa::detect() {
            // SAFETY: the CPU reported these features.
            Isa::Avx512 => return unsafe { with_avx512(f) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { with_avx2(f) },
            Isa::Baseline => {}
        }
    }
    f()
}

/// Tests set this to run the baseline versions in the same process (every thread
/// at once: the bits are the same either way, so concurrent tests are unaffected).
#[cfg(test)]
pub(crate) static FORCE_BASELINE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

#[cfg(target_arch = "x86_64")]
impl Isa {
    /// Detected once per process. `BERTH_SIMD=baseline|avx2` caps it, to compare the
    /// versions on one machine.
    fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            use std::arch::is_x86_feature_detected as has;
            let cap = std::env::var("BERTH_SIMD").unwrap_or_default();
            let avx2 = has!("avx2") && has!("fma");
            if cap != "baseline" && cap != "avx2" && avx2 && has!("avx512f") {
                Isa::Avx512
            } else if cap != "baseline" && avx2 {
                Isa::Avx2
            } else {
                Isa::Baseline
            }
        })
    }
}

/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Lanes of the fixed-order reductions: one AVX-512 register of f32.
const LANES: usize = 16;

/// Adds `LANES` partial sums pairwise, in a fixed tree.
#[inline(always)]
fn reduce_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for j in 0..w {
            acc[j] += acc[j + w];
        }
        w /= 2;
    }
    acc[0]
}

/// The sum of `x` with `LANES` interleaved partial sums (element `i` into partial
/// `i % LANES`, the tail in order after them): vectorisable, and the same bits on
/// every ISA.
#[inline(always)]
pub(crate) fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    let mut s = reduce_lanes(acc);
    for &v in chunks.remainder() {
        s += v;
    }
    s
}

/// The dot product of `a` and `b`, summed as [`sum_lanes`] sums.
#[inline(always)]
pub(crate) fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = reduce_lanes(acc);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// The sum of `(x - mean)^2`, summed as [`sum_lanes`] sums.
#[inline(always)]
pub(crate) fn sum_sq_dev_lanes(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            let d = c[j] - mean;
            acc[j] += d * d;
        }
    }
    let mut s = reduce_lanes(acc);
    for &v in chunks.remainder() {
        s += (v - mean) * (v - mean);
    }
    s
}

/// The maximum of `x` (`-inf` when empty), in `LANES` lanes.
#[inline(always)]
pub(crate) fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.into_iter().chain(chunks.remainder().iter().copied()) {
        m = if v > m { v } else { m };
    }
    m
}

#[cfg(test)]
mod tests;

/// `exp(x)` for f32, branch-free so that softmax loops vectorise (libm's `expf` is a
/// call per element): Cody-Waite reduction `x = n ln2 + r`, Cephes' degree-6
/// polynomial for `exp(r)`, and `2^n` built in the exponent bits. Within 2 ulp of
/// `f32::exp` down to the smallest normal (x = -87.34); 0 below, where `expf` is
/// subnormal or 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.336_54, 88.3);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n sits in the low mantissa bits of t (|n| < 2^22): 2^n without a float-to-int
    // conversion, whose saturating semantics cost several instructions per lane.
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    if x < -87.336_54 { 0.0 } else { e * scale }
}

/// A strided matrix view: `data[i * rs + j * cs]` is element `(i, j)`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// Rows `rs` apart, columns adjacent (one head's slice of `[L, heads * d]`).
    pub fn strided(data: &'a [f32], rs: usize) -> Self {
        Mat { data, rs, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst (m x n, row stride dst_rs) = [dst +] scale * lhs (m x k) * rhs (k x n)`, with
/// `gemm`'s f32 kernels (the ones candle's matmul calls), on rayon's threads when
/// `parallel`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    scale: f32,
    parallel: bool,
) {
    assert!(
        lhs.fits(m, k) && rhs.fits(k, n) && (m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len()),
        "sgemm: a matrix view exceeds its buffer"
    );
    // SAFETY: every view was checked to lie inside its slice above; `dst` is borrowed
    // mutably, so nothing else reads or writes it meanwhile.
    unsafe {
        sgemm_ptr(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_rs,
            accumulate,
            lhs,
            rhs,
            scale,
            parallel,
        )
    }
}

/// [`sgemm`] into a raw destination, for parallel workers that write disjoint strided
/// blocks of one buffer.
///
/// # Safety
/// `dst` must be valid for writes at `i * dst_rs + j` for `i < m`, `j < n`, and no
/// other thread may access those elements meanwhile; `lhs` and `rhs` must fit
/// `m x k` and `k x n`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_ptr(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    scale: f32,
    parallel: bool,
) {
    debug_assert!(lhs.fits(m, k) && rhs.fits(k, n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: within the caller's promise.
                    unsafe { *dst.add(i * dst_rs + j) = 0.0 };
                }
            }
        }
        return;
    }
    let parallelism = if parallel && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's promise for dst; lhs and rhs are slices that hold their views.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}
