// What every kernel file shares: how a kernel is declared, and loads and stores that
// widen bf16 to f32 (all arithmetic is f32) and round back to nearest even.
#pragma once

#ifdef __CUDACC__
#include <cstdint>
#include <cuda_bf16.h>
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
