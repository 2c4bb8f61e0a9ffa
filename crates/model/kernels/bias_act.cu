// bias + activation, forward and backward (the CPU op: fused/bias_act.rs):
// y = act(z + b) over rows of `width`; dz = dy act'(z + b); db = the column sums of
// dz (a second kernel, one thread per column summing its rows in order). `act`: 0
// exact GELU (erf), 1 GELU's tanh approximation, 2 ReLU (berth_model::Activation's
// order). f32 arithmetic whatever the storage.
#include "common.cuh"

// act(v) and act'(v).
__device__ __forceinline__ void berth_act(int act, float v, float* y, float* dy) {
    if (act == 0) {
        float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
        *y = v * cdf;
        *dy = cdf + v * pdf;
    } else if (act == 1) {
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        float t = tanhf(u);
        float du = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * v * v);
        *y = 0.5f * v * (1.0f + t);
        *dy = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
    } else {
        *y = v > 0.0f ? v : 0.0f;
        *dy = v > 0.0f ? 1.0f : 0.0f;
    }
}

// act(z + b) and its derivative at element i of n (rows of `width`).
template <class T>
__device__ __forceinline__ void berth_bias_act_at(const T* z, const T* b, uint64_t i, uint64_t n,
                                                  uint64_t width, int act, float* y, float* d) {
    uint64_t j = i + BERTH_INDEX_SHIFT;
    berth_act(act, berth_load(z, j % n) + berth_load(b, j % width), y, d);
}

template <class T>
__device__ __forceinline__ void berth_bias_act_fwd(const T* z, const T* b, T* y, uint64_t rows,
                                                   uint64_t width, int act) {
    uint64_t n = rows * width;
    for (uint64_t i = berth_first(); i < n; i += berth_stride()) {
        float out, d;
        berth_bias_act_at(z, b, i, n, width, act, &out, &d);
        berth_store(y, i, out);
    }
}

template <class T>
__device__ __forceinline__ void berth_bias_act_bwd(const T* z, const T* b, const T* dy, T* dz,
                                                   uint64_t rows, uint64_t width, int act) {
    uint64_t n = rows * width;
    for (uint64_t i = berth_first(); i < n; i += berth_stride()) {
        float out, d;
        berth_bias_act_at(z, b, i, n, width, act, &out, &d);
        berth_store(dz, i, berth_load(dy, i) * d);
    }
}

// out[c] = sum over rows r of x[r width + c], rows in order, in f32 (also the last
// step of layer_norm.cu's parameter gradients, out in the parameters' dtype).
template <class In, class Out>
__device__ __forceinline__ void berth_column_sum(const In* x, Out* out, uint64_t rows,
                                                 uint64_t width) {
    for (uint64_t c = berth_first(); c < width; c += berth_stride()) {
        float s = 0.0f;
        for (uint64_t r = 0; r < rows; ++r) s += berth_load(x, r * width + c);
        berth_store(out, c, s);
    }
}

BERTH_KERNEL void berth_bias_act_fwd_f32(const float* z, const float* b, float* y, uint64_t rows,
                                         uint64_t width, int act) {
    berth_bias_act_fwd(z, b, y, rows, width, act);
}
BERTH_KERNEL void berth_bias_act_fwd_bf16(const __nv_bfloat16* z, const __nv_bfloat16* b,
                                          __nv_bfloat16* y, uint64_t rows, uint64_t width,
                                          int act) {
    berth_bias_act_fwd(z, b, y, rows, width, act);
}
BERTH_KERNEL void berth_bias_act_bwd_f32(const float* z, const float* b, const float* dy,
                                         float* dz, uint64_t rows, uint64_t width, int act) {
    berth_bias_act_bwd(z, b, dy, dz, rows, width, act);
}
BERTH_KERNEL void berth_bias_act_bwd_bf16(const __nv_bfloat16* z, const __nv_bfloat16* b,
                                          const __nv_bfloat16* dy, __nv_bfloat16* dz,
                                          uint64_t rows, uint64_t width, int act) {
    berth_bias_act_bwd(z, b, dy, dz, rows, width, act);
}
BERTH_KERNEL void berth_column_sum_f32(const float* x, float* out, uint64_t rows, uint64_t width) {
    berth_column_sum(x, out, rows, width);
}
BERTH_KERNEL void berth_column_sum_f32_to_bf16(const float* x, __nv_bfloat16* out, uint64_t rows,
                                               uint64_t width) {
    berth_column_sum(x, out, rows, width);
}
