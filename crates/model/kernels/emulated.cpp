// Every kernel compiled for the CPU against emu.h: dropout and bias + activation each
// behind a C launcher
// `berth_emu_<kernel><suffix>(grid, block, args...)`, the others in one table of
// launchers (below); each runs the grid as CUDA would
// (BERTH_EMU_SUFFIX tells the shifted-index test build apart).
#include "emu.h"

#define BERTH_CAT2(a, b) a##b
#define BERTH_CAT(a, b) BERTH_CAT2(a, b)
#define BERTH_EMU(name) BERTH_CAT(name, BERTH_EMU_SUFFIX)

// Each build's kernels in a namespace of their own: their inline templates would
// otherwise be one COMDAT symbol in both test builds, and the linker would keep one
// build's code for both.
#define BERTH_KERNEL static
namespace BERTH_EMU(berth_build) {
#include "dropout.cu"
#include "bias_act.cu"
#include "layer_norm.cu"
#include "attention.cu"
#include "cross_entropy.cu"
#include "adamw.cu"
}  // namespace
using namespace BERTH_EMU(berth_build);

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

// The row, attention, loss and optimizer kernels, as one table of launchers per build
// (`berth_emu_table` / `berth_emu_table_shifted`), the order of berth-kernel-emu's
// `#[repr(C)] struct Table`. bf16 travels as its bits (uint16_t).
#define BF(p) reinterpret_cast<const __nv_bfloat16*>(p)
#define BFM(p) reinterpret_cast<__nv_bfloat16*>(p)

template <class T>
struct BerthEmuRowKernels {
    void (*layer_norm_fwd)(unsigned, unsigned, const T*, const T*, const T*, T*, float*, uint64_t,
                           uint32_t, float, const BerthDropout*);
    void (*layer_norm_bwd_rows)(unsigned, unsigned, const T*, const T*, const T*, const T*,
                                const float*, T*, T*, uint64_t, uint32_t, const BerthDropout*);
    void (*layer_norm_bwd_params)(unsigned, unsigned, unsigned, const T*, const T*, const T*,
                                  const float*, float*, uint64_t, uint32_t, uint64_t,
                                  const BerthDropout*);
    void (*column_sum)(unsigned, unsigned, const float*, T*, uint64_t, uint64_t);
    void (*softmax_fwd)(unsigned, unsigned, const T*, const float*, T*, T*, uint64_t, uint32_t,
                        uint32_t, float, const BerthDropout*);
    void (*softmax_bwd)(unsigned, unsigned, const T*, const T*, T*, uint64_t, uint32_t, float,
                        const BerthDropout*);
    void (*ce_rows)(unsigned, unsigned, const T*, const int64_t*, float*, float*, uint64_t,
                    uint32_t);
    void (*ce_bwd)(unsigned, unsigned, const T*, const int64_t*, const float*, const float*, T*,
                   uint64_t, uint32_t, float);
};

struct BerthEmuTable {
    BerthEmuRowKernels<float> f32;
    BerthEmuRowKernels<uint16_t> bf16;
    void (*ce_mean)(unsigned, const float*, float*, uint64_t, uint64_t);
    void (*grad_sq_partials)(unsigned, unsigned, const BerthAdamTensor*, const BerthChunk*,
                             double*);
    void (*grad_norm_finish)(unsigned, const double*, uint64_t, double, double*, float*);
    void (*adamw)(unsigned, unsigned, const BerthAdamTensor*, const BerthChunk*, const float*,
                  const BerthAdamArgs*);
};

extern "C" BerthEmuTable BERTH_EMU(berth_emu_table)() {
    BerthEmuTable t;
    t.f32.layer_norm_fwd = [](unsigned g, unsigned b, const float* x, const float* r,
                              const float* wb, float* y, float* st, uint64_t rows, uint32_t h,
                              float eps, const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b),
                   [&] { berth_layer_norm_fwd_f32(x, r, wb, y, st, rows, h, eps, *d); });
    };
    t.bf16.layer_norm_fwd = [](unsigned g, unsigned b, const uint16_t* x, const uint16_t* r,
                               const uint16_t* wb, uint16_t* y, float* st, uint64_t rows,
                               uint32_t h, float eps, const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b), [&] {
            berth_layer_norm_fwd_bf16(BF(x), BF(r), BF(wb), BFM(y), st, rows, h, eps, *d);
        });
    };
    t.f32.layer_norm_bwd_rows = [](unsigned g, unsigned b, const float* x, const float* r,
                                   const float* wb, const float* dy, const float* st, float* dx,
                                   float* dr, uint64_t rows, uint32_t h, const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b), [&] {
            berth_layer_norm_bwd_rows_f32(x, r, wb, dy, st, dx, dr, rows, h, *d);
        });
    };
    t.bf16.layer_norm_bwd_rows = [](unsigned g, unsigned b, const uint16_t* x, const uint16_t* r,
                                    const uint16_t* wb, const uint16_t* dy, const float* st,
                                    uint16_t* dx, uint16_t* dr, uint64_t rows, uint32_t h,
                                    const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b), [&] {
            berth_layer_norm_bwd_rows_bf16(BF(x), BF(r), BF(wb), BF(dy), st, BFM(dx), BFM(dr),
                                           rows, h, *d);
        });
    };
    t.f32.layer_norm_bwd_params = [](unsigned gx, unsigned gy, unsigned b, const float* x,
                                     const float* r, const float* dy, const float* st,
                                     float* partial, uint64_t rows, uint32_t h, uint64_t per,
                                     const BerthDropout* d) {
        emu_launch(dim3(gx, gy), dim3(b), [&] {
            berth_layer_norm_bwd_params_f32(x, r, dy, st, partial, rows, h, per, *d);
        });
    };
    t.bf16.layer_norm_bwd_params = [](unsigned gx, unsigned gy, unsigned b, const uint16_t* x,
                                      const uint16_t* r, const uint16_t* dy, const float* st,
                                      float* partial, uint64_t rows, uint32_t h, uint64_t per,
                                      const BerthDropout* d) {
        emu_launch(dim3(gx, gy), dim3(b), [&] {
            berth_layer_norm_bwd_params_bf16(BF(x), BF(r), BF(dy), st, partial, rows, h, per, *d);
        });
    };
    t.f32.column_sum = [](unsigned g, unsigned b, const float* x, float* out, uint64_t rows,
                          uint64_t width) {
        emu_launch(dim3(g), dim3(b), [&] { berth_column_sum_f32(x, out, rows, width); });
    };
    t.bf16.column_sum = [](unsigned g, unsigned b, const float* x, uint16_t* out, uint64_t rows,
                           uint64_t width) {
        emu_launch(dim3(g), dim3(b),
                   [&] { berth_column_sum_f32_to_bf16(x, BFM(out), rows, width); });
    };
    t.f32.softmax_fwd = [](unsigned g, unsigned b, const float* s, const float* mask, float* p,
                           float* pd, uint64_t rows, uint32_t l, uint32_t heads, float scale,
                           const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b),
                   [&] { berth_softmax_fwd_f32(s, mask, p, pd, rows, l, heads, scale, *d); });
    };
    t.bf16.softmax_fwd = [](unsigned g, unsigned b, const uint16_t* s, const float* mask,
                            uint16_t* p, uint16_t* pd, uint64_t rows, uint32_t l, uint32_t heads,
                            float scale, const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b), [&] {
            berth_softmax_fwd_bf16(BF(s), mask, BFM(p), BFM(pd), rows, l, heads, scale, *d);
        });
    };
    t.f32.softmax_bwd = [](unsigned g, unsigned b, const float* p, const float* dpd, float* ds,
                           uint64_t rows, uint32_t l, float scale, const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b), [&] { berth_softmax_bwd_f32(p, dpd, ds, rows, l, scale, *d); });
    };
    t.bf16.softmax_bwd = [](unsigned g, unsigned b, const uint16_t* p, const uint16_t* dpd,
                            uint16_t* ds, uint64_t rows, uint32_t l, float scale,
                            const BerthDropout* d) {
        emu_launch(dim3(g), dim3(b),
                   [&] { berth_softmax_bwd_bf16(BF(p), BF(dpd), BFM(ds), rows, l, scale, *d); });
    };
    t.f32.ce_rows = [](unsigned g, unsigned b, const float* x, const int64_t* y, float* lse,
                       float* terms, uint64_t rows, uint32_t c) {
        emu_launch(dim3(g), dim3(b), [&] { berth_ce_rows_f32(x, y, lse, terms, rows, c); });
    };
    t.bf16.ce_rows = [](unsigned g, unsigned b, const uint16_t* x, const int64_t* y, float* lse,
                        float* terms, uint64_t rows, uint32_t c) {
        emu_launch(dim3(g), dim3(b), [&] { berth_ce_rows_bf16(BF(x), y, lse, terms, rows, c); });
    };
    t.f32.ce_bwd = [](unsigned g, unsigned b, const float* x, const int64_t* y, const float* lse,
                      const float* dl, float* dx, uint64_t rows, uint32_t c, float kept) {
        emu_launch(dim3(g), dim3(b), [&] { berth_ce_bwd_f32(x, y, lse, dl, dx, rows, c, kept); });
    };
    t.bf16.ce_bwd = [](unsigned g, unsigned b, const uint16_t* x, const int64_t* y,
                       const float* lse, const float* dl, uint16_t* dx, uint64_t rows, uint32_t c,
                       float kept) {
        emu_launch(dim3(g), dim3(b),
                   [&] { berth_ce_bwd_bf16(BF(x), y, lse, dl, BFM(dx), rows, c, kept); });
    };
    t.ce_mean = [](unsigned b, const float* terms, float* loss, uint64_t rows, uint64_t kept) {
        emu_launch(dim3(1), dim3(b), [&] { berth_ce_mean(terms, loss, rows, kept); });
    };
    t.grad_sq_partials = [](unsigned g, unsigned b, const BerthAdamTensor* ts,
                            const BerthChunk* chunks, double* partials) {
        emu_launch(dim3(g), dim3(b), [&] { berth_grad_sq_partials(ts, chunks, partials); });
    };
    t.grad_norm_finish = [](unsigned b, const double* partials, uint64_t chunks, double max_norm,
                            double* norm, float* clip) {
        emu_launch(dim3(1), dim3(b),
                   [&] { berth_grad_norm_finish(partials, chunks, max_norm, norm, clip); });
    };
    t.adamw = [](unsigned g, unsigned b, const BerthAdamTensor* ts, const BerthChunk* chunks,
                 const float* clip, const BerthAdamArgs* a) {
        emu_launch(dim3(g), dim3(b), [&] { berth_adamw(ts, chunks, clip, *a); });
    };
    return t;
}
