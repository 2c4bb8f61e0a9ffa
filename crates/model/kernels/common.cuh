// What every kernel file shares: how a kernel is declared, and loads and stores that
// widen bf16 to f32 (all arithmetic is f32) and round back to nearest even.
#pragma once

#ifdef __CUDACC__
#include <cstdint>
#include <cuda_bf16.h>
#endif

// Full unrolling of the fixed-count register loops on the GPU (a pragma the host
// compiler does not know).
#ifdef __CUDACC__
#define BERTH_UNROLL _Pragma("unroll")
#else
#define BERTH_UNROLL
#endif

#ifndef BERTH_KERNEL
// A C-named global for nvcc; the emulation (emulated.cpp) declares kernels static and
// wraps each in a launcher.
#define BERTH_KERNEL extern "C" __global__
#endif

#ifndef BERTH_INDEX_SHIFT
// A test-only switch: the negative tests build the kernels with 1 here and must see
// them disagree with the CPU ops.
#define BERTH_INDEX_SHIFT 0
#endif

__device__ __forceinline__ float berth_load(const float* p, uint64_t i) { return p[i]; }
__device__ __forceinline__ float berth_load(const __nv_bfloat16* p, uint64_t i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ void berth_store(float* p, uint64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void berth_store(__nv_bfloat16* p, uint64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

// The first index of this thread and the grid's stride, for grid-stride loops.
__device__ __forceinline__ uint64_t berth_first() {
    return uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ uint64_t berth_stride() { return uint64_t(blockDim.x) * gridDim.x; }

// Index `i` of `n` as a kernel reads it: itself, or its neighbour in the test-only
// shifted build.
__device__ __forceinline__ uint64_t berth_shifted(uint64_t i, uint64_t n) {
    return (i + BERTH_INDEX_SHIFT) % n;
}

// `v` rounded to the storage type and widened back: what a later kernel reads.
__device__ __forceinline__ float berth_round(float v, const float*) { return v; }
__device__ __forceinline__ float berth_round(float v, const __nv_bfloat16*) {
    return __bfloat162float(__float2bfloat16_rn(v));
}

// Dropout of a kernel that applies it on the way (philox.cuh's berth_keep): the
// arguments of fused::DropoutKey, `on` 0 for none. The same layout as the Rust side's
// `#[repr(C)]` struct.
struct BerthDropout {
    uint64_t seed, site, threshold, offset, width, step;
    float scale;
    int on;
};

// Reductions over a warp and over a block (blockDim.x a multiple of 32, at most
// 1024; y and z 1). The xor butterfly hands every lane the same bits (each level adds
// the same two values on both sides), so every thread of a block gets one result.
template <class T>
__device__ __forceinline__ T berth_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float berth_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

template <class T>
__device__ __forceinline__ T berth_block_sum(T v) {
    __shared__ T partial[32];
    v = berth_warp_sum(v);
    unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();  // the previous reduction's readers are done with `partial`
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return berth_warp_sum(lane < (blockDim.x >> 5) ? partial[lane] : T(0));
}

__device__ __forceinline__ float berth_block_max(float v) {
    __shared__ float partial[32];
    v = berth_warp_max(v);
    unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return berth_warp_max(lane < (blockDim.x >> 5) ? partial[lane] : -INFINITY);
}

// How many values of a row each thread of a row kernel keeps in registers: rows of up
// to 16 x blockDim.x values (the launcher picks the block).
#define BERTH_ROW_ITEMS 16
