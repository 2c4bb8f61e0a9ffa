// LayerNorm(dropout(x) + residual) * w + b over rows of `h`, forward and backward (the
// CPU op: fused/layer_norm.rs), statistics in f32 whatever the storage. One block per
// row (grid-stride over rows), each thread keeping up to BERTH_ROW_ITEMS of the row's
// values in registers; mean, then the variance as the mean squared deviation (two
// passes, as the CPU op). `wb` is [weight; bias] ([2, h]), `r` may be null.
//
// The backward recomputes dropout(x) + r (the mask from philox.cuh) instead of keeping
// it: the row kernel writes dsum = rstd (g - mean(g) - x^ mean(g x^)), g = dy w, to dr
// (when there is a residual) and dsum * mask to dx; the parameter kernel sums dy x^
// and dy per column over a chunk of rows into `partial` [chunks, 2h], which
// berth_column_sum (bias_act.cu) adds up in chunk order into d[weight; bias].
#include "common.cuh"
#include "philox.cuh"

// dropout(x) + r at element i of n.
template <class T>
__device__ __forceinline__ float berth_ln_input(const T* x, const T* r, uint64_t i, uint64_t n,
                                                const BerthDropout& d) {
    uint64_t at = berth_shifted(i, n);
    float s = berth_load(x, at) * berth_drop_factor(d, i);
    if (r != nullptr) s += berth_load(r, at);
    return s;
}

template <class T>
__device__ __forceinline__ void berth_ln_fwd(const T* x, const T* r, const T* wb, T* y,
                                             float* stats, uint64_t rows, uint32_t h, float eps,
                                             BerthDropout d) {
    const uint64_t n = rows * h;
    for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        float v[BERTH_ROW_ITEMS];
        float sum = 0.0f;
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            v[k] = 0.0f;
            if (j < h) {
                v[k] = berth_ln_input(x, r, row * h + j, n, d);
                sum += v[k];
            }
        }
        float mean = berth_block_sum(sum) / float(h);
        float sq = 0.0f;
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            if (j < h) sq += (v[k] - mean) * (v[k] - mean);
        }
        float rstd = 1.0f / sqrtf(berth_block_sum(sq) / float(h) + eps);
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            if (j < h) {
                float w = berth_load(wb, j), b = berth_load(wb, h + j);
                berth_store(y, row * h + j, (v[k] - mean) * rstd * w + b);
            }
        }
        if (threadIdx.x == 0) {
            stats[2 * row] = mean;
            stats[2 * row + 1] = rstd;
        }
    }
}

template <class T>
__device__ __forceinline__ void berth_ln_bwd_rows(const T* x, const T* r, const T* wb,
                                                  const T* dy, const float* stats, T* dx, T* dr,
                                                  uint64_t rows, uint32_t h, BerthDropout d) {
    const uint64_t n = rows * h;
    for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float mean = stats[2 * row], rstd = stats[2 * row + 1];
        float xh[BERTH_ROW_ITEMS], g[BERTH_ROW_ITEMS];
        float sg = 0.0f, sgx = 0.0f;
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            xh[k] = 0.0f;
            g[k] = 0.0f;
            if (j < h) {
                uint64_t i = row * h + j;
                xh[k] = (berth_ln_input(x, r, i, n, d) - mean) * rstd;
                g[k] = berth_load(dy, i) * berth_load(wb, j);
                sg += g[k];
                sgx += g[k] * xh[k];
            }
        }
        float mg = berth_block_sum(sg) / float(h);
        float mgx = berth_block_sum(sgx) / float(h);
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            if (j < h) {
                uint64_t i = row * h + j;
                float ds = rstd * (g[k] - mg - xh[k] * mgx);
                if (dr != nullptr) berth_store(dr, i, ds);
                berth_store(dx, i, ds * berth_drop_factor(d, i));
            }
        }
    }
}

// Grid (ceil(h / blockDim.x), chunks): thread (column j, chunk c) sums dy x^ and dy
// over rows c rows_per_chunk .. into partial[c 2h + j] and partial[c 2h + h + j].
template <class T>
__device__ __forceinline__ void berth_ln_bwd_params(const T* x, const T* r, const T* dy,
                                                    const float* stats, float* partial,
                                                    uint64_t rows, uint32_t h,
                                                    uint64_t rows_per_chunk, BerthDropout d) {
    const uint64_t n = rows * h;
    const uint64_t j = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const uint64_t c = blockIdx.y;
    if (j >= h) return;
    const uint64_t end = (c + 1) * rows_per_chunk < rows ? (c + 1) * rows_per_chunk : rows;
    float dw = 0.0f, db = 0.0f;
    for (uint64_t row = c * rows_per_chunk; row < end; ++row) {
        uint64_t i = row * h + j;
        float xh = (berth_ln_input(x, r, i, n, d) - stats[2 * row]) * stats[2 * row + 1];
        float g = berth_load(dy, i);
        dw += g * xh;
        db += g;
    }
    partial[c * 2 * h + j] = dw;
    partial[c * 2 * h + h + j] = db;
}

#define BERTH_LN_KERNELS(T, S)                                                                   \
    BERTH_KERNEL void berth_layer_norm_fwd_##S(const T* x, const T* r, const T* wb, T* y,        \
                                               float* stats, uint64_t rows, uint32_t h,          \
                                               float eps, BerthDropout d) {                      \
        berth_ln_fwd(x, r, wb, y, stats, rows, h, eps, d);                                      \
    }                                                                                            \
    BERTH_KERNEL void berth_layer_norm_bwd_rows_##S(const T* x, const T* r, const T* wb,         \
                                                    const T* dy, const float* stats, T* dx,      \
                                                    T* dr, uint64_t rows, uint32_t h,            \
                                                    BerthDropout d) {                            \
        berth_ln_bwd_rows(x, r, wb, dy, stats, dx, dr, rows, h, d);                              \
    }                                                                                            \
    BERTH_KERNEL void berth_layer_norm_bwd_params_##S(const T* x, const T* r, const T* dy,       \
                                                      const float* stats, float* partial,        \
                                                      uint64_t rows, uint32_t h,                 \
                                                      uint64_t rows_per_chunk, BerthDropout d) { \
        berth_ln_bwd_params(x, r, dy, stats, partial, rows, h, rows_per_chunk, d);               \
    }

BERTH_LN_KERNELS(float, f32)
BERTH_LN_KERNELS(__nv_bfloat16, bf16)
