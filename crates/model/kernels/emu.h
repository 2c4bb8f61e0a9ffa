// The CUDA execution model on the CPU, for testing kernel logic with the host C++
// compiler: `__global__`/`__device__` vanish, `threadIdx`/`blockIdx`/`blockDim`/
// `gridDim` are thread-local and set by `emu_launch`, which runs every thread of
// every block in turn. No barriers: kernels that use `__syncthreads`, shared memory
// or warp shuffles need a threaded emulation (see README.md).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

// bf16 as CUDA's `__nv_bfloat16`: the top 16 bits of an f32; conversion from f32
// rounds to nearest even (NaN kept quiet), as `__float2bfloat16_rn`.
struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = uint32_t(h.bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return {uint16_t((u >> 16) | 0x40u)};
    }
    uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    return {uint16_t(rounded >> 16)};
}

inline uint32_t __umulhi(uint32_t a, uint32_t b) {
    return uint32_t((uint64_t(a) * uint64_t(b)) >> 32);
}

// Runs `kernel()` once per CUDA thread of `grid` x `block`, block by block.
template <class Kernel>
void emu_launch(dim3 grid, dim3 block, Kernel kernel) {
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx)
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx) {
                            blockIdx = dim3(bx, by, bz);
                            threadIdx = dim3(tx, ty, tz);
                            kernel();
                        }
}
