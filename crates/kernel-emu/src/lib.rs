//! `berth-kernel-emu`: Berth's CUDA kernels (`crates/model/kernels/*.cu`) compiled by
//! the host C++ compiler against `emu.h`, which runs a launch's grid on the CPU one
//! CUDA thread at a time. Tests compare them with the CPU fused ops, so a kernel's
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
