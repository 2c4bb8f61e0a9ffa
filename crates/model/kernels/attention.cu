// The attention core's row kernels (the CPU op: fused/attention.rs). cuBLAS batched
// gemms do S = Q K^T, O = P_d V and, backward, dP_d = dO V^T, dV = P_d^T dO,
// dQ = dS K, dK = dS^T Q, per (batch, head), straight on the [B, L, heads d]
// projections (strides d and heads d); between them, one block per score row of
// [B, heads, L, L]:
//
// forward:  p = softmax(scale s + mask[b]) (0 for a row whose every score is -inf),
//           P = p in the storage type (bf16 probabilities in bf16), P_d = P * mask_d,
//           the dropout factor of element row L + col, as the CPU op draws it;
// backward: dP = dP_d * mask_d, dS = scale P (dP - sum(dP P)), scale folded in so the
//           gemms run with alpha 1. P_d for dV comes again from P through dropout.cu.
//
// `mask` is the additive key mask [B, L] in f32 (null for none); row `r` of S is
// batch r / (heads L).
#include "common.cuh"
#include "philox.cuh"

template <class T>
__device__ __forceinline__ void berth_softmax_fwd(const T* s, const float* mask, T* p, T* pd,
                                                  uint64_t rows, uint32_t l, uint32_t heads,
                                                  float scale, BerthDropout d) {
    const uint64_t n = rows * l;
    for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* m = mask != nullptr ? mask + (row / (uint64_t(heads) * l)) * l : nullptr;
        float v[BERTH_ROW_ITEMS];
        float mx = -INFINITY;
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            v[k] = -INFINITY;
            if (j < l) {
                v[k] = berth_load(s, berth_shifted(row * l + j, n)) * scale;
                if (m != nullptr) v[k] += m[j];
                mx = fmaxf(mx, v[k]);
            }
        }
        mx = berth_block_max(mx);
        float sum = 0.0f;
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            v[k] = (j < l && mx != -INFINITY) ? expf(v[k] - mx) : 0.0f;
            sum += v[k];
        }
        sum = berth_block_sum(sum);
        const float inv = mx == -INFINITY ? 0.0f : 1.0f / sum;
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            if (j < l) {
                uint64_t i = row * l + j;
                float pv = berth_round(v[k] * inv, p);
                berth_store(p, i, pv);
                berth_store(pd, i, pv * berth_drop_factor(d, i));
            }
        }
    }
}

template <class T>
__device__ __forceinline__ void berth_softmax_bwd(const T* p, const T* dpd, T* ds, uint64_t rows,
                                                  uint32_t l, float scale, BerthDropout d) {
    const uint64_t n = rows * l;
    for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        float pv[BERTH_ROW_ITEMS], dp[BERTH_ROW_ITEMS];
        float dot = 0.0f;
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            pv[k] = 0.0f;
            dp[k] = 0.0f;
            if (j < l) {
                uint64_t i = row * l + j;
                pv[k] = berth_load(p, berth_shifted(i, n));
                dp[k] = berth_load(dpd, i) * berth_drop_factor(d, i);
                dot += dp[k] * pv[k];
            }
        }
        dot = berth_block_sum(dot);
    BERTH_UNROLL
        for (int k = 0; k < BERTH_ROW_ITEMS; ++k) {
            uint32_t j = threadIdx.x + k * blockDim.x;
            if (j < l) berth_store(ds, row * l + j, scale * pv[k] * (dp[k] - dot));
        }
    }
}

#define BERTH_SOFTMAX_KERNELS(T, S)                                                             \
    BERTH_KERNEL void berth_softmax_fwd_##S(const T* s, const float* mask, T* p, T* pd,        \
                                            uint64_t rows, uint32_t l, uint32_t heads,         \
                                            float scale, BerthDropout d) {                     \
        berth_softmax_fwd(s, mask, p, pd, rows, l, heads, scale, d);                           \
    }                                                                                           \
    BERTH_KERNEL void berth_softmax_bwd_##S(const T* p, const T* dpd, T* ds, uint64_t rows,    \
                                            uint32_t l, float scale, BerthDropout d) {         \
        berth_softmax_bwd(p, dpd, ds, rows, l, scale, d);                                      \
    }

BERTH_SOFTMAX_KERNELS(float, f32)
BERTH_SOFTMAX_KERNELS(__nv_bfloat16, bf16)
