//! Launch geometry of the CUDA kernels (`crates/model/kernels`), one place for the
//! `cuda` feature's ops and the emulated tests that run the same kernels on the CPU.

/// Values of a row each thread of a row kernel keeps in registers
/// (`BERTH_ROW_ITEMS`, common.cuh).
pub const ROW_ITEMS: usize = 16;

/// The widest row a row kernel (LayerNorm, the attention softmax) takes: 16 values
/// for each of 1,024 threads.
pub const MAX_ROW: usize = ROW_ITEMS * 1024;

/// Threads per block of a row kernel over rows of `width`: about 8 values a thread, a
/// multiple of the 32-thread warp, from 32 to 1,024. `None` above [`MAX_ROW`].
pub fn row_block(width: usize) -> Option<u32> {
    if width > MAX_ROW {
        return None;
    }
    Some(width.div_ceil(8).next_multiple_of(32).clamp(32, 1024) as u32)
}

/// Blocks of a grid-stride row kernel over `rows` rows: one per row up to what the
/// grid's first dimension holds.
pub fn row_grid(rows: usize) -> u32 {
    rows.clamp(1, i32::MAX as usize) as u32
}

/// Rows per chunk of LayerNorm's parameter-gradient kernel: each thread sums a column
/// over this many rows, then berth_column_sum adds the chunks in order.
pub const LN_ROWS_PER_CHUNK: usize = 256;

/// Threads per block of the kernels that reduce a long row or a whole buffer
/// (cross-entropy's rows over the vocabulary, its mean, the gradient norm, AdamW).
pub const REDUCE_BLOCK: u32 = 256;

/// Threads per block and blocks of an element-wise grid-stride kernel over `n`
/// values.
pub fn elementwise(n: usize) -> (u32, u32) {
    const BLOCK: u32 = 256;
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65_535 * 16);
    (blocks as u32, BLOCK)
}
