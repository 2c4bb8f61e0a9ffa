// Mean cross-entropy with ignore index -100 (the CPU op: fused/cross_entropy.rs).
// Forward: one block per row of logits [n, c] computes its log-sum-exp (max, then the
// sum of exponentials, two passes over the row) and its term lse - x[label] (0 when
// ignored); one block adds the terms in f64 (each thread a fixed stride, then the
// block's tree: the same bits every run) and divides by the kept count. Backward: one
// thread per logit, g exp(x - lse) - g [col = label], g = dloss / kept, 0 on ignored
// rows.
#include "common.cuh"

#define BERTH_IGNORE_INDEX (-100)

template <class T>
__device__ __forceinline__ void berth_ce_rows(const T* x, const int64_t* labels, float* lse,
                                              float* terms, uint64_t rows, uint32_t c) {
    const uint64_t n = rows * c;
    for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        float mx = -INFINITY;
        for (uint32_t j = threadIdx.x; j < c; j += blockDim.x)
            mx = fmaxf(mx, berth_load(x, berth_shifted(row * c + j, n)));
        mx = berth_block_max(mx);
        float sum = 0.0f;
        for (uint32_t j = threadIdx.x; j < c; j += blockDim.x)
            sum += expf(berth_load(x, berth_shifted(row * c + j, n)) - mx);
        sum = berth_block_sum(sum);
        if (threadIdx.x == 0) {
            float l = mx + logf(sum);
            int64_t y = labels[row];
            lse[row] = l;
            terms[row] = y == BERTH_IGNORE_INDEX ? 0.0f : l - berth_load(x, row * c + uint64_t(y));
        }
    }
}

BERTH_KERNEL void berth_ce_rows_f32(const float* x, const int64_t* labels, float* lse,
                                    float* terms, uint64_t rows, uint32_t c) {
    berth_ce_rows(x, labels, lse, terms, rows, c);
}
BERTH_KERNEL void berth_ce_rows_bf16(const __nv_bfloat16* x, const int64_t* labels, float* lse,
                                     float* terms, uint64_t rows, uint32_t c) {
    berth_ce_rows(x, labels, lse, terms, rows, c);
}

// One block: loss[0] = (sum of terms in f64) / kept, as f32.
BERTH_KERNEL void berth_ce_mean(const float* terms, float* loss, uint64_t rows, uint64_t kept) {
    double t = 0.0;
    for (uint64_t r = threadIdx.x; r < rows; r += blockDim.x) t += double(terms[r]);
    t = berth_block_sum(t);
    if (threadIdx.x == 0) loss[0] = float(t / double(kept > 0 ? kept : 1));
}

template <class T>
__device__ __forceinline__ void berth_ce_bwd(const T* x, const int64_t* labels, const float* lse,
                                             const float* dloss, T* dx, uint64_t rows,
                                             uint32_t c, float kept) {
    const uint64_t n = rows * c;
    const float g = dloss[0] / kept;
    for (uint64_t i = berth_first(); i < n; i += berth_stride()) {
        uint64_t row = i / c, col = i % c;
        int64_t y = labels[row];
        float v = 0.0f;
        if (y != BERTH_IGNORE_INDEX) {
            v = g * expf(berth_load(x, berth_shifted(i, n)) - lse[row]);
            if (int64_t(col) == y) v -= g;
        }
        berth_store(dx, i, v);
    }
}

BERTH_KERNEL void berth_ce_bwd_f32(const float* x, const int64_t* labels, const float* lse,
                                   const float* dloss, float* dx, uint64_t rows, uint32_t c,
                                   float kept) {
    berth_ce_bwd(x, labels, lse, dloss, dx, rows, c, kept);
}
BERTH_KERNEL void berth_ce_bwd_bf16(const __nv_bfloat16* x, const int64_t* labels,
                                    const float* lse, const float* dloss, __nv_bfloat16* dx,
                                    uint64_t rows, uint32_t c, float kept) {
    berth_ce_bwd(x, labels, lse, dloss, dx, rows, c, kept);
}
