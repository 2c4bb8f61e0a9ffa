// Inverted dropout: y = x * mask / (1 - p), the mask a pure function of (seed, site,
// element) (philox.cuh), so the backward regenerates it and the CPU op draws the same
// one. One thread per element, grid-stride; f32 and bf16 in, f32 arithmetic.
#include "common.cuh"
#include "philox.cuh"

BERTH_KERNEL void berth_dropout_f32(const float* x, float* y, uint64_t n, uint64_t seed,
                                             uint64_t site, uint64_t threshold, float scale,
                                             uint64_t offset, uint64_t width, uint64_t step) {
    uint64_t stride = uint64_t(blockDim.x) * gridDim.x;
    for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] = x[i] * berth_keep(berth_site_index(i, offset, width, step), seed, site, threshold,
                                 scale);
    }
}

BERTH_KERNEL void berth_dropout_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, uint64_t n,
                                              uint64_t seed, uint64_t site, uint64_t threshold,
                                              float scale, uint64_t offset, uint64_t width,
                                              uint64_t step) {
    uint64_t stride = uint64_t(blockDim.x) * gridDim.x;
    for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        float k = berth_keep(berth_site_index(i, offset, width, step), seed, site, threshold, scale);
        y[i] = __float2bfloat16_rn(__bfloat162float(x[i]) * k);
    }
}
