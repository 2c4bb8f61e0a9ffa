// The optimizer step over every parameter in three launches, as Apex's multi-tensor
// apply does it: the host lays the parameters out as a table of tensors and a table
// of chunks (tensor, first element) of BERTH_CHUNK elements each, one block per chunk
// (the CPU op: berth-trainer's optim.rs, torch's single-tensor AdamW).
//
// 1. berth_grad_sq_partials: each chunk's sum of squared gradients in f64;
// 2. berth_grad_norm_finish (one block): the partials added in a fixed order, the norm
//    and torch's clip coefficient min(1, max_norm / (norm + 1e-6)) on the device, so
//    the update needs no host round trip (the host reads the norm once, for the log);
// 3. berth_adamw: g = grad clip, p *= keep (decoupled weight decay: 1 - lr wd),
//    m += (g - m)(1 - b1), v = v b2 + g g (1 - b2), p -= step_size m / (sqrt(v) /
//    sqrt(1 - b2^t) + eps), in f32 as the CPU op.
#include "common.cuh"

#define BERTH_CHUNK 65536u

// One parameter: device addresses of its values, gradient and moments (f32).
struct BerthAdamTensor {
    uint64_t p, g, m, v;
    uint64_t n;
    float keep;
    uint32_t pad;
};

struct BerthChunk {
    uint64_t tensor;
    uint64_t start;
};

struct BerthAdamArgs {
    float b2, w1, w2, step_size, bc2_sqrt, eps;
};

BERTH_KERNEL void berth_grad_sq_partials(const BerthAdamTensor* tensors, const BerthChunk* chunks,
                                         double* partials) {
    const BerthChunk ch = chunks[blockIdx.x];
    const BerthAdamTensor t = tensors[ch.tensor];
    const float* g = reinterpret_cast<const float*>(t.g);
    const uint64_t end = ch.start + BERTH_CHUNK < t.n ? ch.start + BERTH_CHUNK : t.n;
    double s = 0.0;
    for (uint64_t i = ch.start + threadIdx.x; i < end; i += blockDim.x) {
        double v = g[berth_shifted(i, t.n)];
        s += v * v;
    }
    s = berth_block_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// One block. out[0] = the norm (f64), clip[0] = the gradients' scale.
BERTH_KERNEL void berth_grad_norm_finish(const double* partials, uint64_t chunks, double max_norm,
                                         double* norm, float* clip) {
    double s = 0.0;
    for (uint64_t c = threadIdx.x; c < chunks; c += blockDim.x) s += partials[c];
    s = berth_block_sum(s);
    if (threadIdx.x == 0) {
        double total = sqrt(s);
        norm[0] = total;
        double scale = 1.0;
        if (max_norm > 0.0) {
            scale = max_norm / (total + 1e-6);
            if (scale > 1.0) scale = 1.0;
        }
        clip[0] = float(scale);
    }
}

BERTH_KERNEL void berth_adamw(const BerthAdamTensor* tensors, const BerthChunk* chunks,
                              const float* clip, BerthAdamArgs a) {
    const BerthChunk ch = chunks[blockIdx.x];
    const BerthAdamTensor t = tensors[ch.tensor];
    float* p = reinterpret_cast<float*>(t.p);
    const float* g = reinterpret_cast<const float*>(t.g);
    float* m = reinterpret_cast<float*>(t.m);
    float* v = reinterpret_cast<float*>(t.v);
    const float scale = clip[0];
    const uint64_t end = ch.start + BERTH_CHUNK < t.n ? ch.start + BERTH_CHUNK : t.n;
    for (uint64_t i = ch.start + threadIdx.x; i < end; i += blockDim.x) {
        float gi = g[berth_shifted(i, t.n)] * scale;
        float pi = p[i] * t.keep;
        float mi = m[i] + (gi - m[i]) * a.w1;
        float vi = v[i] * a.b2 + gi * gi * a.w2;
        float denom = sqrtf(vi) / a.bc2_sqrt + a.eps;
        p[i] = pi - a.step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}
