//! `berth-kernel-emu`: Berth's CUDA kernels (`crates/model/kernels/*.cu`) compiled by
//! the host C++ compiler against `emu.h`, which runs a launch's grid on the CPU, each
//! CUDA thread a fiber (barriers, warp shuffles, shared memory). Tests compare them
//! with the CPU fused ops, so a kernel's
//! logic (indexing, masking, rounding) is checked without a GPU; nvcc compiles the
//! same sources for the `cuda` feature.
//!
//! Each kernel comes in two builds: as written ([`Build::AsWritten`]) and with every
//! element index shifted by one ([`Build::ShiftedIndex`]), which a negative test runs
//! to see the comparison fail.

use std::os::raw::c_uint;

/// Which build of the kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    AsWritten,
    /// Test-only: each kernel reads the element after the one it writes.
    ShiftedIndex,
}

/// A launch: `grid` blocks of `block` threads (1-D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: u32,
    pub block: u32,
}

/// The dropout kernel's arguments beside its tensors (`fused::DropoutKey`'s).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutArgs {
    pub seed: u64,
    pub site: u64,
    /// round(p 2^32): a word below it drops its element.
    pub threshold: u64,
    /// 1 / (1 - p).
    pub scale: f32,
    pub offset: u64,
    /// `(width, step)` for a slice of rows of the site's tensor, else `(0, 1)`.
    pub rows: (u64, u64),
}

type DropoutF32 = unsafe extern "C" fn(
    c_uint,
    c_uint,
    *const f32,
    *mut f32,
    u64,
    u64,
    u64,
    u64,
    f32,
    u64,
    u64,
    u64,
);
type DropoutBf16 = unsafe extern "C" fn(
    c_uint,
    c_uint,
    *const u16,
    *mut u16,
    u64,
    u64,
    u64,
    u64,
    f32,
    u64,
    u64,
    u64,
);

unsafe extern "C" {
    fn berth_emu_dropout_f32(
        grid: c_uint,
        block: c_uint,
        x: *const f32,
        y: *mut f32,
        n: u64,
        seed: u64,
        site: u64,
        threshold: u64,
        scale: f32,
        offset: u64,
        width: u64,
        step: u64,
    );
    fn berth_emu_dropout_f32_shifted(
        grid: c_uint,
        block: c_uint,
        x: *const f32,
        y: *mut f32,
        n: u64,
        seed: u64,
        site: u64,
        threshold: u64,
        scale: f32,
        offset: u64,
        width: u64,
        step: u64,
    );
    fn berth_emu_dropout_bf16(
        grid: c_uint,
        block: c_uint,
        x: *const u16,
        y: *mut u16,
        n: u64,
        seed: u64,
        site: u64,
        threshold: u64,
        scale: f32,
        offset: u64,
        width: u64,
        step: u64,
    );
    fn berth_emu_dropout_bf16_shifted(
        grid: c_uint,
        block: c_uint,
        x: *const u16,
        y: *mut u16,
        n: u64,
        seed: u64,
        site: u64,
        threshold: u64,
        scale: f32,
        offset: u64,
        width: u64,
        step: u64,
    );
}

/// `berth_dropout_f32` over `x` (dropout.cu).
pub fn dropout_f32(x: &[f32], a: &DropoutArgs, launch: Launch, build: Build) -> Vec<f32> {
    let f: DropoutF32 = match build {
        Build::AsWritten => berth_emu_dropout_f32,
        Build::ShiftedIndex => berth_emu_dropout_f32_shifted,
    };
    let mut y = vec![0f32; x.len()];
    // SAFETY: x and y hold n elements each; the kernel touches indices below n only.
    unsafe {
        f(
            launch.grid,
            launch.block,
            x.as_ptr(),
            y.as_mut_ptr(),
            x.len() as u64,
            a.seed,
            a.site,
            a.threshold,
            a.scale,
            a.offset,
            a.rows.0,
            a.rows.1,
        )
    };
    y
}

/// `berth_dropout_bf16` over `x`, bf16 as its bits (dropout.cu).
pub fn dropout_bf16(x: &[u16], a: &DropoutArgs, launch: Launch, build: Build) -> Vec<u16> {
    let f: DropoutBf16 = match build {
        Build::AsWritten => berth_emu_dropout_bf16,
        Build::ShiftedIndex => berth_emu_dropout_bf16_shifted,
    };
    let mut y = vec![0u16; x.len()];
    // SAFETY: as dropout_f32.
    unsafe {
        f(
            launch.grid,
            launch.block,
            x.as_ptr(),
            y.as_mut_ptr(),
            x.len() as u64,
            a.seed,
            a.site,
            a.threshold,
            a.scale,
            a.offset,
            a.rows.0,
            a.rows.1,
        )
    };
    y
}

unsafe extern "C" {
    fn berth_emu_bias_act_fwd_f32(
        grid: c_uint,
        block: c_uint,
        z: *const f32,
        b: *const f32,
        y: *mut f32,
        rows: u64,
        width: u64,
        act: i32,
    );
    fn berth_emu_bias_act_fwd_f32_shifted(
        grid: c_uint,
        block: c_uint,
        z: *const f32,
        b: *const f32,
        y: *mut f32,
        rows: u64,
        width: u64,
        act: i32,
    );
    fn berth_emu_bias_act_bwd_f32(
        grid: c_uint,
        block: c_uint,
        z: *const f32,
        b: *const f32,
        dy: *const f32,
        dz: *mut f32,
        rows: u64,
        width: u64,
        act: i32,
    );
    fn berth_emu_bias_act_fwd_bf16(
        grid: c_uint,
        block: c_uint,
        z: *const u16,
        b: *const u16,
        y: *mut u16,
        rows: u64,
        width: u64,
        act: i32,
    );
    fn berth_emu_bias_act_bwd_bf16(
        grid: c_uint,
        block: c_uint,
        z: *const u16,
        b: *const u16,
        dy: *const u16,
        dz: *mut u16,
        rows: u64,
        width: u64,
        act: i32,
    );
    fn berth_emu_column_sum_f32(
        grid: c_uint,
        block: c_uint,
        x: *const f32,
        out: *mut f32,
        rows: u64,
        width: u64,
    );
}

/// The activation a bias-activation kernel applies (`berth_model::Activation`'s
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Act {
    Gelu = 0,
    GeluTanh = 1,
    Relu = 2,
}

fn check_bias(z: usize, b: usize) -> u64 {
    assert!(
        b > 0 && z.is_multiple_of(b),
        "z of {z} elements is not rows of the bias's {b}"
    );
    (z / b) as u64
}

/// `act(z + b)` over rows of `b.len()` (bias_act.cu).
pub fn bias_act_f32(z: &[f32], b: &[f32], act: Act, launch: Launch, build: Build) -> Vec<f32> {
    let rows = check_bias(z.len(), b.len());
    let mut y = vec![0f32; z.len()];
    let f = match build {
        Build::AsWritten => berth_emu_bias_act_fwd_f32,
        Build::ShiftedIndex => berth_emu_bias_act_fwd_f32_shifted,
    };
    // SAFETY: z and y hold rows x width elements, b width; the kernel stays below.
    unsafe {
        f(
            launch.grid,
            launch.block,
            z.as_ptr(),
            b.as_ptr(),
            y.as_mut_ptr(),
            rows,
            b.len() as u64,
            act as i32,
        )
    };
    y
}

/// `dy act'(z + b)` (bias_act.cu).
pub fn bias_act_backward_f32(
    z: &[f32],
    b: &[f32],
    dy: &[f32],
    act: Act,
    launch: Launch,
) -> Vec<f32> {
    let rows = check_bias(z.len(), b.len());
    assert_eq!(dy.len(), z.len());
    let mut dz = vec![0f32; z.len()];
    // SAFETY: as bias_act_f32, dy and dz as z.
    unsafe {
        berth_emu_bias_act_bwd_f32(
            launch.grid,
            launch.block,
            z.as_ptr(),
            b.as_ptr(),
            dy.as_ptr(),
            dz.as_mut_ptr(),
            rows,
            b.len() as u64,
            act as i32,
        )
    };
    dz
}

/// [`bias_act_f32`] in bf16 storage (bits), f32 arithmetic.
pub fn bias_act_bf16(z: &[u16], b: &[u16], act: Act, launch: Launch) -> Vec<u16> {
    let rows = check_bias(z.len(), b.len());
    let mut y = vec![0u16; z.len()];
    // SAFETY: as bias_act_f32.
    unsafe {
        berth_emu_bias_act_fwd_bf16(
            launch.grid,
            launch.block,
            z.as_ptr(),
            b.as_ptr(),
            y.as_mut_ptr(),
            rows,
            b.len() as u64,
            act as i32,
        )
    };
    y
}

/// [`bias_act_backward_f32`] in bf16 storage (bits).
pub fn bias_act_backward_bf16(
    z: &[u16],
    b: &[u16],
    dy: &[u16],
    act: Act,
    launch: Launch,
) -> Vec<u16> {
    let rows = check_bias(z.len(), b.len());
    assert_eq!(dy.len(), z.len());
    let mut dz = vec![0u16; z.len()];
    // SAFETY: as bias_act_backward_f32.
    unsafe {
        berth_emu_bias_act_bwd_bf16(
            launch.grid,
            launch.block,
            z.as_ptr(),
            b.as_ptr(),
            dy.as_ptr(),
            dz.as_mut_ptr(),
            rows,
            b.len() as u64,
            act as i32,
        )
    };
    dz
}

/// The column sums of `x`, `width` columns (the bias gradient; bias_act.cu).
pub fn column_sum_f32(x: &[f32], width: usize, launch: Launch) -> Vec<f32> {
    let rows = check_bias(x.len(), width);
    let mut out = vec![0f32; width];
    // SAFETY: x holds rows x width elements, out width.
    unsafe {
        berth_emu_column_sum_f32(
            launch.grid,
            launch.block,
            x.as_ptr(),
            out.as_mut_ptr(),
            rows,
            width as u64,
        )
    };
    out
}

// ---- The row, attention, loss and optimizer kernels: one table of launchers per
// build (emulated.cpp's `BerthEmuTable`, field for field).

/// A kernel's dropout argument (`BerthDropout` in common.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dropout {
    pub seed: u64,
    pub site: u64,
    pub threshold: u64,
    pub offset: u64,
    pub width: u64,
    pub step: u64,
    pub scale: f32,
    /// 0: no dropout.
    pub on: i32,
}

impl From<&DropoutArgs> for Dropout {
    fn from(a: &DropoutArgs) -> Self {
        Dropout {
            seed: a.seed,
            site: a.site,
            threshold: a.threshold,
            offset: a.offset,
            width: a.rows.0,
            step: a.rows.1,
            scale: a.scale,
            on: 1,
        }
    }
}

/// One parameter of the multi-tensor optimizer kernels (`BerthAdamTensor`): addresses
/// of f32 values, gradient and moments.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AdamTensor {
    pub p: u64,
    pub g: u64,
    pub m: u64,
    pub v: u64,
    pub n: u64,
    /// 1 - lr weight_decay, or 1.
    pub keep: f32,
    pub pad: u32,
}

/// A chunk of `CHUNK` elements of one tensor (`BerthChunk`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub tensor: u64,
    pub start: u64,
}

/// Elements per chunk of the optimizer kernels (adamw.cu's `BERTH_CHUNK`).
pub const CHUNK: u64 = 65536;

/// The scalars of an AdamW step (`BerthAdamArgs`), as berth-trainer computes them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamArgs {
    pub b2: f32,
    pub w1: f32,
    pub w2: f32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
}

type U = c_uint;

#[repr(C)]
struct RowKernels<T> {
    layer_norm_fwd: unsafe extern "C" fn(
        U,
        U,
        *const T,
        *const T,
        *const T,
        *mut T,
        *mut f32,
        u64,
        u32,
        f32,
        *const Dropout,
    ),
    layer_norm_bwd_rows: unsafe extern "C" fn(
        U,
        U,
        *const T,
        *const T,
        *const T,
        *const T,
        *const f32,
        *mut T,
        *mut T,
        u64,
        u32,
        *const Dropout,
    ),
    layer_norm_bwd_params: unsafe extern "C" fn(
        U,
        U,
        U,
        *const T,
        *const T,
        *const T,
        *const f32,
        *mut f32,
        u64,
        u32,
        u64,
        *const Dropout,
    ),
    column_sum: unsafe extern "C" fn(U, U, *const f32, *mut T, u64, u64),
    softmax_fwd: unsafe extern "C" fn(
        U,
        U,
        *const T,
        *const f32,
        *mut T,
        *mut T,
        u64,
        u32,
        u32,
        f32,
        *const Dropout,
    ),
    softmax_bwd:
        unsafe extern "C" fn(U, U, *const T, *const T, *mut T, u64, u32, f32, *const Dropout),
    ce_rows: unsafe extern "C" fn(U, U, *const T, *const i64, *mut f32, *mut f32, u64, u32),
    ce_bwd: unsafe extern "C" fn(
        U,
        U,
        *const T,
        *const i64,
        *const f32,
        *const f32,
        *mut T,
        u64,
        u32,
        f32,
    ),
}

#[repr(C)]
struct Table {
    f32: RowKernels<f32>,
    bf16: RowKernels<u16>,
    ce_mean: unsafe extern "C" fn(U, *const f32, *mut f32, u64, u64),
    grad_sq_partials: unsafe extern "C" fn(U, U, *const AdamTensor, *const Chunk, *mut f64),
    grad_norm_finish: unsafe extern "C" fn(U, *const f64, u64, f64, *mut f64, *mut f32),
    adamw: unsafe extern "C" fn(U, U, *const AdamTensor, *const Chunk, *const f32, *const AdamArgs),
}

unsafe extern "C" {
    fn berth_emu_table() -> Table;
    fn berth_emu_table_shifted() -> Table;
}

fn table(build: Build) -> Table {
    // SAFETY: the constructors only fill in function pointers.
    unsafe {
        match build {
            Build::AsWritten => berth_emu_table(),
            Build::ShiftedIndex => berth_emu_table_shifted(),
        }
    }
}

/// A storage type of the row kernels: f32, or bf16 as its bits.
pub trait Elem: Copy + Default {
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn kernels(t: &Table) -> &RowKernels<Self>;
}
impl Elem for f32 {
    #[allow(private_interfaces)]
    fn kernels(t: &Table) -> &RowKernels<f32> {
        &t.f32
    }
}
impl Elem for u16 {
    #[allow(private_interfaces)]
    fn kernels(t: &Table) -> &RowKernels<u16> {
        &t.bf16
    }
}

fn opt_ptr<T>(r: Option<&[T]>) -> *const T {
    r.map_or(std::ptr::null(), <[T]>::as_ptr)
}

fn rows_of(n: usize, width: usize, what: &str) -> u64 {
    assert!(
        width > 0 && n.is_multiple_of(width),
        "{what}: {n} elements are not rows of {width}"
    );
    (n / width) as u64
}

/// `LayerNorm(dropout(x) + r)` (layer_norm.cu): `(y, [mean, rstd] per row)`. `wb` is
/// `[weight; bias]`; `launch.grid` blocks loop over the rows.
pub fn layer_norm<T: Elem>(
    x: &[T],
    r: Option<&[T]>,
    wb: &[T],
    eps: f32,
    dropout: Dropout,
    launch: Launch,
    build: Build,
) -> (Vec<T>, Vec<f32>) {
    let h = wb.len() / 2;
    let rows = rows_of(x.len(), h, "layer norm");
    assert!(r.is_none_or(|r| r.len() == x.len()));
    let (mut y, mut stats) = (vec![T::default(); x.len()], vec![0f32; 2 * rows as usize]);
    let t = table(build);
    // SAFETY: every buffer holds the rows x h (stats 2 rows, wb 2h) the kernel reads or
    // writes.
    unsafe {
        (T::kernels(&t).layer_norm_fwd)(
            launch.grid,
            launch.block,
            x.as_ptr(),
            opt_ptr(r),
            wb.as_ptr(),
            y.as_mut_ptr(),
            stats.as_mut_ptr(),
            rows,
            h as u32,
            eps,
            &dropout,
        )
    };
    (y, stats)
}

/// The gradients of [`layer_norm`]: `(dx, dr when r is given, d[weight; bias])`;
/// the parameter sums over chunks of `rows_per_chunk` rows, `block` threads per block.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward<T: Elem>(
    x: &[T],
    r: Option<&[T]>,
    wb: &[T],
    dy: &[T],
    stats: &[f32],
    dropout: Dropout,
    launch: Launch,
    rows_per_chunk: u64,
    build: Build,
) -> (Vec<T>, Option<Vec<T>>, Vec<T>) {
    let h = wb.len() / 2;
    let rows = rows_of(x.len(), h, "layer norm backward");
    assert_eq!(dy.len(), x.len());
    assert_eq!(stats.len(), 2 * rows as usize);
    let mut dx = vec![T::default(); x.len()];
    let mut dr = r.map(|_| vec![T::default(); x.len()]);
    let chunks = rows.div_ceil(rows_per_chunk.max(1)).max(1);
    let mut partial = vec![0f32; chunks as usize * 2 * h];
    let mut dwb = vec![T::default(); 2 * h];
    let t = table(build);
    let k = T::kernels(&t);
    // SAFETY: as layer_norm; partial holds chunks x 2h, dwb 2h.
    unsafe {
        (k.layer_norm_bwd_rows)(
            launch.grid,
            launch.block,
            x.as_ptr(),
            opt_ptr(r),
            wb.as_ptr(),
            dy.as_ptr(),
            stats.as_ptr(),
            dx.as_mut_ptr(),
            dr.as_mut().map_or(std::ptr::null_mut(), |d| d.as_mut_ptr()),
            rows,
            h as u32,
            &dropout,
        );
        (k.layer_norm_bwd_params)(
            (h as u32).div_ceil(launch.block),
            chunks as u32,
            launch.block,
            x.as_ptr(),
            opt_ptr(r),
            dy.as_ptr(),
            stats.as_ptr(),
            partial.as_mut_ptr(),
            rows,
            h as u32,
            rows_per_chunk.max(1),
            &dropout,
        );
        (k.column_sum)(
            (2 * h as u32).div_ceil(launch.block),
            launch.block,
            partial.as_ptr(),
            dwb.as_mut_ptr(),
            chunks,
            2 * h as u64,
        );
    }
    (dx, dr, dwb)
}

/// The attention core's forward rows (attention.cu) over scores `[rows, l]`:
/// `(P, P_d)`. `mask` is `[B, l]`, row `r` of batch `r / (heads l)`.
#[allow(clippy::too_many_arguments)]
pub fn softmax<T: Elem>(
    s: &[T],
    mask: Option<&[f32]>,
    l: usize,
    heads: usize,
    scale: f32,
    dropout: Dropout,
    launch: Launch,
    build: Build,
) -> (Vec<T>, Vec<T>) {
    let rows = rows_of(s.len(), l, "softmax");
    if let Some(m) = mask {
        assert_eq!(
            m.len() as u64 * heads as u64,
            rows,
            "mask [B, L] for the rows"
        );
    }
    let (mut p, mut pd) = (vec![T::default(); s.len()], vec![T::default(); s.len()]);
    let t = table(build);
    // SAFETY: s, p, pd hold rows x l; the mask B x l.
    unsafe {
        (T::kernels(&t).softmax_fwd)(
            launch.grid,
            launch.block,
            s.as_ptr(),
            opt_ptr(mask),
            p.as_mut_ptr(),
            pd.as_mut_ptr(),
            rows,
            l as u32,
            heads as u32,
            scale,
            &dropout,
        )
    };
    (p, pd)
}

/// The attention core's backward rows: `dS` from `P` and `dP_d` (attention.cu).
pub fn softmax_backward<T: Elem>(
    p: &[T],
    dpd: &[T],
    l: usize,
    scale: f32,
    dropout: Dropout,
    launch: Launch,
    build: Build,
) -> Vec<T> {
    let rows = rows_of(p.len(), l, "softmax backward");
    assert_eq!(dpd.len(), p.len());
    let mut ds = vec![T::default(); p.len()];
    let t = table(build);
    // SAFETY: all three hold rows x l.
    unsafe {
        (T::kernels(&t).softmax_bwd)(
            launch.grid,
            launch.block,
            p.as_ptr(),
            dpd.as_ptr(),
            ds.as_mut_ptr(),
            rows,
            l as u32,
            scale,
            &dropout,
        )
    };
    ds
}

/// Mean cross-entropy (cross_entropy.cu): `(loss, lse per row)` of logits `[rows, c]`
/// against `labels` (-100 ignored); `mean_block` threads add the rows' terms.
pub fn cross_entropy<T: Elem>(
    x: &[T],
    labels: &[i64],
    launch: Launch,
    mean_block: u32,
    build: Build,
) -> (f32, Vec<f32>) {
    let c = x.len() / labels.len().max(1);
    let rows = rows_of(x.len(), c.max(1), "cross-entropy");
    assert_eq!(rows as usize, labels.len());
    assert!(
        labels
            .iter()
            .all(|&y| y == -100 || (0..c as i64).contains(&y)),
        "cross-entropy: a label outside 0..{c}"
    );
    let kept = labels.iter().filter(|&&y| y != -100).count() as u64;
    let (mut lse, mut terms, mut loss) =
        (vec![0f32; labels.len()], vec![0f32; labels.len()], [0f32]);
    let t = table(build);
    // SAFETY: x holds rows x c, labels / lse / terms rows.
    unsafe {
        (T::kernels(&t).ce_rows)(
            launch.grid,
            launch.block,
            x.as_ptr(),
            labels.as_ptr(),
            lse.as_mut_ptr(),
            terms.as_mut_ptr(),
            rows,
            c as u32,
        );
        (t.ce_mean)(mean_block, terms.as_ptr(), loss.as_mut_ptr(), rows, kept);
    }
    (loss[0], lse)
}

/// The gradient of [`cross_entropy`] given `dloss` and its `lse`.
pub fn cross_entropy_backward<T: Elem>(
    x: &[T],
    labels: &[i64],
    lse: &[f32],
    dloss: f32,
    launch: Launch,
    build: Build,
) -> Vec<T> {
    let c = x.len() / labels.len().max(1);
    let rows = rows_of(x.len(), c.max(1), "cross-entropy backward");
    assert_eq!(lse.len(), labels.len());
    let kept = labels.iter().filter(|&&y| y != -100).count().max(1) as f32;
    let mut dx = vec![T::default(); x.len()];
    let t = table(build);
    // SAFETY: as cross_entropy; dloss is one value.
    unsafe {
        (T::kernels(&t).ce_bwd)(
            launch.grid,
            launch.block,
            x.as_ptr(),
            labels.as_ptr(),
            lse.as_ptr(),
            &dloss,
            dx.as_mut_ptr(),
            rows,
            c as u32,
            kept,
        )
    };
    dx
}

/// One parameter for [`adamw_step`]: values, gradient, moments, and whether weight
/// decay applies.
pub struct Param<'a> {
    pub p: &'a mut [f32],
    pub g: &'a [f32],
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub keep: f32,
}

/// The chunk table of tensors of `sizes` elements (adamw.cu).
pub fn chunk_table(sizes: &[u64]) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for (t, &n) in sizes.iter().enumerate() {
        let mut start = 0;
        while start < n {
            chunks.push(Chunk {
                tensor: t as u64,
                start,
            });
            start += CHUNK;
        }
    }
    chunks
}

/// The optimizer step's three kernels over `params` (adamw.cu): the gradient norm
/// (returned), the clip coefficient for `max_norm`, then AdamW in place.
pub fn adamw_step(
    params: &mut [Param<'_>],
    args: AdamArgs,
    max_norm: f64,
    block: u32,
    build: Build,
) -> f64 {
    let tensors: Vec<AdamTensor> = params
        .iter_mut()
        .map(|q| {
            assert!(q.g.len() == q.p.len() && q.m.len() == q.p.len() && q.v.len() == q.p.len());
            AdamTensor {
                p: q.p.as_mut_ptr() as u64,
                g: q.g.as_ptr() as u64,
                m: q.m.as_mut_ptr() as u64,
                v: q.v.as_mut_ptr() as u64,
                n: q.p.len() as u64,
                keep: q.keep,
                pad: 0,
            }
        })
        .collect();
    let chunks = chunk_table(&tensors.iter().map(|t| t.n).collect::<Vec<_>>());
    let mut partials = vec![0f64; chunks.len()];
    let (mut norm, mut clip) = ([0f64], [0f32]);
    let t = table(build);
    // SAFETY: the table's addresses are the live slices of `params`, each of n values,
    // borrowed mutably for this call; the chunks stay inside them.
    unsafe {
        if !chunks.is_empty() {
            (t.grad_sq_partials)(
                chunks.len() as u32,
                block,
                tensors.as_ptr(),
                chunks.as_ptr(),
                partials.as_mut_ptr(),
            );
        }
        (t.grad_norm_finish)(
            block,
            partials.as_ptr(),
            chunks.len() as u64,
            max_norm,
            norm.as_mut_ptr(),
            clip.as_mut_ptr(),
        );
        if !chunks.is_empty() {
            (t.adamw)(
                chunks.len() as u32,
                block,
                tensors.as_ptr(),
                chunks.as_ptr(),
                clip.as_ptr(),
                &args,
            );
        }
    }
    norm[0]
}
