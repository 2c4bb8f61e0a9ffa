// The CUDA execution model on the CPU, for testing kernel logic with the host C++
// compiler (nvcc's old `-deviceemu` mode is the precedent). `__global__`/`__device__`
// vanish; `emu_launch` runs a grid block by block, and within a block one fiber per
// CUDA thread (a 64 KiB stack each, switched cooperatively on one OS thread):
//
// - `__syncthreads()` parks the fiber until every live thread of the block has
//   arrived; `__syncwarp()` and the warp shuffles and votes park it until every live
//   thread of its warp (32 consecutive linear thread ids) has. Threads that returned
//   count as arrived, as on sm_70+. A block whose threads wait at barriers that can
//   never all be reached (a `__syncthreads` inside a branch some threads skip) aborts
//   with a message: on a GPU that is undefined behaviour.
// - `__shared__` variables are `static thread_local`: one copy per OS thread (tests
//   run in parallel), shared by the fibers of the block running on it, uninitialised
//   (left over from the previous block) as on a GPU.
// - atomics are plain read-modify-writes: fibers never preempt each other.
// - bf16 is its own type with round-to-nearest-even conversions, as
//   `__float2bfloat16_rn`.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local

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

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }

template <class T>
T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}

// A fiber's saved context. On x86-64 a stack pointer and a six-register switch
// (SysV callee-saved registers; no signal mask, so no system call per switch:
// ucontext's swapcontext made the emulated tests 14x slower, 39.3 s against 2.7 s);
// elsewhere ucontext.
#if defined(__x86_64__)
struct EmuContext {
    void* sp;
};
// berth_emu_switch(from, to): saves the callee-saved registers on the current stack,
// stores its pointer in *from and resumes `to`. A local symbol: each test build's
// object has its own.
asm(R"(
    .text
    .p2align 4
berth_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");
extern "C" void berth_emu_switch(void** from, void* to);
inline void emu_switch(EmuContext& from, EmuContext& to) { berth_emu_switch(&from.sp, to.sp); }
#else
struct EmuContext {
    ucontext_t uc;
};
inline void emu_switch(EmuContext& from, EmuContext& to) { swapcontext(&from.uc, &to.uc); }
#endif

// The fibers of the block being run.
struct EmuBlock {
    enum State { Runnable, AtBlockBarrier, AtWarpBarrier, Done };
    struct Fiber {
        EmuContext ctx;
        State state;
        dim3 idx;
    };
    EmuContext scheduler;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    // The per-thread slots through which warp shuffles and votes exchange values.
    std::vector<uint64_t> exchange;
    unsigned current = 0;
    const std::function<void()>* kernel = nullptr;
};

inline thread_local EmuBlock* emu_block = nullptr;

inline void emu_fail(const char* what) {
    std::fprintf(stderr, "berth kernel emulation: %s\n", what);
    std::abort();
}

// Parks the running fiber in `state` and returns to the scheduler.
inline void emu_park(EmuBlock::State state) {
    EmuBlock* b = emu_block;
    if (b == nullptr) emu_fail("a barrier outside emu_launch");
    EmuBlock::Fiber& f = b->fibers[b->current];
    f.state = state;
    emu_switch(f.ctx, b->scheduler);
}

inline void __syncthreads() { emu_park(EmuBlock::AtBlockBarrier); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_park(EmuBlock::AtWarpBarrier); }

inline unsigned emu_linear_tid() { return emu_block->current; }

// Lane `src` of this thread's warp after every lane has offered `v`.
template <class T>
T emu_exchange(T v, unsigned src_lane) {
    static_assert(sizeof(T) <= 8, "warp exchange of more than 8 bytes");
    EmuBlock* b = emu_block;
    unsigned me = emu_linear_tid();
    uint64_t slot = 0;
    std::memcpy(&slot, &v, sizeof(T));
    b->exchange[me] = slot;
    __syncwarp();
    unsigned src = (me & ~31u) | (src_lane & 31u);
    if (src >= b->fibers.size() || b->fibers[src].state == EmuBlock::Done) {
        emu_fail("a warp shuffle reads a lane that does not exist or has returned");
    }
    T out;
    std::memcpy(&out, &b->exchange[src], sizeof(T));
    __syncwarp();
    return out;
}

template <class T>
T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
    unsigned lane = emu_linear_tid() & 31u;
    unsigned base = lane & ~unsigned(width - 1);
    return emu_exchange(v, base + (unsigned(src_lane) & unsigned(width - 1)));
}

template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
    unsigned lane = emu_linear_tid() & 31u;
    unsigned src = lane ^ unsigned(lane_mask);
    // As CUDA: a source beyond the segment of `width` lanes reads the caller's own.
    if ((src & ~unsigned(width - 1)) != (lane & ~unsigned(width - 1))) src = lane;
    return emu_exchange(v, src);
}

template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    unsigned lane = emu_linear_tid() & 31u;
    unsigned src = lane + delta;
    if ((src & ~unsigned(width - 1)) != (lane & ~unsigned(width - 1))) src = lane;
    return emu_exchange(v, src);
}

inline unsigned __ballot_sync(unsigned, int pred) {
    EmuBlock* b = emu_block;
    unsigned me = emu_linear_tid();
    b->exchange[me] = pred != 0;
    __syncwarp();
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l) {
        unsigned t = (me & ~31u) | l;
        if (t < b->fibers.size() && b->fibers[t].state != EmuBlock::Done && b->exchange[t] != 0)
            bits |= 1u << l;
    }
    __syncwarp();
    return bits;
}
inline int __all_sync(unsigned mask, int pred) {
    EmuBlock* b = emu_block;
    unsigned me = emu_linear_tid();
    unsigned live = 0;
    for (unsigned l = 0; l < 32; ++l) {
        unsigned t = (me & ~31u) | l;
        if (t < b->fibers.size() && b->fibers[t].state != EmuBlock::Done) live |= 1u << l;
    }
    return __ballot_sync(mask, pred) == live;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }

// A fiber's body: the kernel, then back to the scheduler for good.
inline void emu_trampoline() {
    EmuBlock* b = emu_block;
    (*b->kernel)();
    EmuBlock::Fiber& f = b->fibers[b->current];
    f.state = EmuBlock::Done;
    emu_switch(f.ctx, b->scheduler);
    emu_fail("a returned fiber resumed");
}

// Fiber `i` of `b`, at the kernel's start (apart from the loops that call it:
// getcontext returns twice, which would clobber their variables).
__attribute__((noinline)) inline void emu_make_fiber(EmuBlock& b, unsigned i, dim3 idx,
                                                     size_t stack) {
    EmuBlock::Fiber& f = b.fibers[i];
    f.state = EmuBlock::Runnable;
    f.idx = idx;
    char* base = b.stacks.data() + size_t(i) * stack;
#if defined(__x86_64__)
    // The stack berth_emu_switch pops: six zero registers, then the trampoline as
    // the return address, then a zero slot standing for the trampoline's own return
    // address (so that it starts with rsp + 8 16-byte aligned, as the ABI wants).
    uintptr_t top = (uintptr_t(base) + stack) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&emu_trampoline);
    for (int r = 0; r < 6; ++r) *--sp = nullptr;
    f.ctx.sp = sp;
#else
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = base;
    f.ctx.uc.uc_stack.ss_size = stack;
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, emu_trampoline, 0);
#endif
}

// Runs one block: every fiber until it parks or returns, then releases the warps whose
// live threads all wait at a warp barrier, else the block when all its live threads
// wait at `__syncthreads`.
inline void emu_run_block(EmuBlock& b) {
    const unsigned n = unsigned(b.fibers.size());
    const size_t stack = b.stacks.size() / n;
    unsigned i = 0;
    for (unsigned tz = 0; tz < blockDim.z; ++tz)
        for (unsigned ty = 0; ty < blockDim.y; ++ty)
            for (unsigned tx = 0; tx < blockDim.x; ++tx, ++i) {
                emu_make_fiber(b, i, dim3(tx, ty, tz), stack);
            }
    for (;;) {
        for (unsigned t = 0; t < n; ++t) {
            if (b.fibers[t].state != EmuBlock::Runnable) continue;
            b.current = t;
            threadIdx = b.fibers[t].idx;
            emu_switch(b.scheduler, b.fibers[t].ctx);
        }
        bool released = false, any_live = false;
        for (unsigned w = 0; w < n; w += 32) {
            unsigned end = w + 32 < n ? w + 32 : n;
            bool live = false, all_warp = true;
            for (unsigned t = w; t < end; ++t) {
                EmuBlock::State s = b.fibers[t].state;
                if (s == EmuBlock::Done) continue;
                live = true;
                if (s != EmuBlock::AtWarpBarrier) all_warp = false;
            }
            any_live |= live;
            if (live && all_warp) {
                for (unsigned t = w; t < end; ++t)
                    if (b.fibers[t].state == EmuBlock::AtWarpBarrier)
                        b.fibers[t].state = EmuBlock::Runnable;
                released = true;
            }
        }
        if (!any_live) return;
        if (released) continue;
        for (unsigned t = 0; t < n; ++t) {
            EmuBlock::State s = b.fibers[t].state;
            if (s != EmuBlock::Done && s != EmuBlock::AtBlockBarrier) {
                emu_fail("threads of a block wait at different barriers (deadlock)");
            }
        }
        for (unsigned t = 0; t < n; ++t)
            if (b.fibers[t].state == EmuBlock::AtBlockBarrier)
                b.fibers[t].state = EmuBlock::Runnable;
    }
}

// Runs `kernel()` once per CUDA thread of `grid` x `block`, block by block.
template <class Kernel>
void emu_launch(dim3 grid, dim3 block, Kernel kernel) {
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > 1024) emu_fail("a block of 0 or more than 1024 threads");
    if (emu_block != nullptr) emu_fail("a launch inside a launch");
    constexpr size_t kStack = 64 * 1024;
    EmuBlock b;
    b.fibers.resize(n);
    b.stacks.resize(kStack * n);
    b.exchange.assign(n, 0);
    std::function<void()> body = kernel;
    b.kernel = &body;
    gridDim = grid;
    blockDim = block;
    emu_block = &b;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3(bx, by, bz);
                emu_run_block(b);
            }
    emu_block = nullptr;
}
