// Philox4x32-10 (Salmon et al., SC'11) and dropout's element mapping, the same as
// the CPU op's (crates/model/src/fused/dropout.rs): element `s` of a site is `t = s %
// 64` of group `g = s / 64` and reads word `t / 16` of the Philox block `16 g + t %
// 16`, counter [block lo, block hi, site lo, site hi], key [seed lo, seed hi]; it is
// kept when that word is >= round(p 2^32).
#pragma once

#include "common.cuh"

__device__ __forceinline__ void berth_philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
        uint32_t hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

// Element `i` of a tensor holding part of a site: `offset + i`, or with rows of
// `width` elements taken every `step` rows, row r's element c at `offset + (r step)
// width + c` (DropoutKey::rows).
__device__ __forceinline__ uint64_t berth_site_index(uint64_t i, uint64_t offset, uint64_t width,
                                                     uint64_t step) {
    i += BERTH_INDEX_SHIFT;
    if (width > 0 && step != 1) {
        return offset + (i / width) * step * width + i % width;
    }
    return offset + i;
}

// `scale` when site element `s` is kept, else 0.
__device__ __forceinline__ float berth_keep(uint64_t s, uint64_t seed, uint64_t site,
                                            uint64_t threshold, float scale) {
    uint64_t block = (s / 64) * 16 + (s % 64) % 16;
    uint32_t c[4] = {uint32_t(block), uint32_t(block >> 32), uint32_t(site), uint32_t(site >> 32)};
    berth_philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
    uint32_t r = c[(s % 64) / 16];
    return uint64_t(r) < threshold ? 0.0f : scale;
}

// The factor dropout `d` multiplies element `i` of its tensor by: 1 without dropout.
__device__ __forceinline__ float berth_drop_factor(const BerthDropout& d, uint64_t i) {
    if (!d.on) return 1.0f;
    return berth_keep(berth_site_index(i, d.offset, d.width, d.step), d.seed, d.site, d.threshold,
                      d.scale);
}
