// Every kernel compiled for the CPU against emu.h, each behind a C launcher
// `berth_emu_<kernel><suffix>(grid, block, args...)` that runs the grid as CUDA would
// (BERTH_EMU_SUFFIX tells the shifted-index test build apart).
#include "emu.h"

#define BERTH_KERNEL static
#include "dropout.cu"

#define BERTH_CAT2(a, b) a##b
#define BERTH_CAT(a, b) BERTH_CAT2(a, b)
#define BERTH_EMU(name) BERTH_CAT(name, BERTH_EMU_SUFFIX)

extern "C" void BERTH_EMU(berth_emu_dropout_f32)(unsigned grid, unsigned block, const float* x,
                                                 float* y, uint64_t n, uint64_t seed, uint64_t site,
                                                 uint64_t threshold, float scale, uint64_t offset,
                                                 uint64_t width, uint64_t step) {
    emu_launch(dim3(grid), dim3(block), [&] {
        berth_dropout_f32(x, y, n, seed, site, threshold, scale, offset, width, step);
    });
}

extern "C" void BERTH_EMU(berth_emu_dropout_bf16)(unsigned grid, unsigned block,
                                                  const uint16_t* x, uint16_t* y, uint64_t n,
                                                  uint64_t seed, uint64_t site, uint64_t threshold,
                                                  float scale, uint64_t offset, uint64_t width,
                                                  uint64_t step) {
    emu_launch(dim3(grid), dim3(block), [&] {
        berth_dropout_bf16(reinterpret_cast<const __nv_bfloat16*>(x),
                           reinterpret_cast<__nv_bfloat16*>(y), n, seed, site, threshold, scale,
                           offset, width, step);
    });
}

#include "bias_act.cu"

extern "C" void BERTH_EMU(berth_emu_bias_act_fwd_f32)(unsigned grid, unsigned block,
                                                      const float* z, const float* b, float* y,
                                                      uint64_t rows, uint64_t width, int act) {
    emu_launch(dim3(grid), dim3(block), [&] { berth_bias_act_fwd_f32(z, b, y, rows, width, act); });
}

extern "C" void BERTH_EMU(berth_emu_bias_act_bwd_f32)(unsigned grid, unsigned block,
                                                      const float* z, const float* b,
                                                      const float* dy, float* dz, uint64_t rows,
                                                      uint64_t width, int act) {
    emu_launch(dim3(grid), dim3(block),
               [&] { berth_bias_act_bwd_f32(z, b, dy, dz, rows, width, act); });
}

extern "C" void BERTH_EMU(berth_emu_bias_act_fwd_bf16)(unsigned grid, unsigned block,
                                                       const uint16_t* z, const uint16_t* b,
                                                       uint16_t* y, uint64_t rows, uint64_t width,
                                                       int act) {
    emu_launch(dim3(grid), dim3(block), [&] {
        berth_bias_act_fwd_bf16(reinterpret_cast<const __nv_bfloat16*>(z),
                                reinterpret_cast<const __nv_bfloat16*>(b),
                                reinterpret_cast<__nv_bfloat16*>(y), rows, width, act);
    });
}

extern "C" void BERTH_EMU(berth_emu_column_sum_f32)(unsigned grid, unsigned block, const float* x,
                                                    float* out, uint64_t rows, uint64_t width) {
    emu_launch(dim3(grid), dim3(block), [&] { berth_column_sum_f32(x, out, rows, width); });
}

extern "C" void BERTH_EMU(berth_emu_bias_act_bwd_bf16)(unsigned grid, unsigned block,
                                                       const uint16_t* z, const uint16_t* b,
                                                       const uint16_t* dy, uint16_t* dz,
                                                       uint64_t rows, uint64_t width, int act) {
    emu_launch(dim3(grid), dim3(block), [&] {
        berth_bias_act_bwd_bf16(reinterpret_cast<const __nv_bfloat16*>(z),
                                reinterpret_cast<const __nv_bfloat16*>(b),
                                reinterpret_cast<const __nv_bfloat16*>(dy),
                                reinterpret_cast<__nv_bfloat16*>(dz), rows, width, act);
    });
}
