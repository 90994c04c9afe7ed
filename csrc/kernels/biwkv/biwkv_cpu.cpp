// Vision-RWKV (v1) Bi-WKV on the CPU.  Forward: the same two log-anchored scans as the CUDA kernel, with the channel
// loop innermost (contiguous) and threads over (batch, block of channels).  Backward: the per-channel routine the
// CUDA kernel runs too (biwkv_math.h), threads over (batch, channel).
#include <vector>

#include "../wkv_cpu_common.h"
#include "vrwkv/biwkv_math.h"

namespace vrwkv {

namespace {
constexpr int kChannelBlock = 64;
}

void biwkv_forward_cpu(const BiWkvParams& p, const ParallelFor& pf) {
    dispatch_dtype(p.dtype, [&](auto in) {
        using In = decltype(in);
        const int n_blocks = (p.C + kChannelBlock - 1) / kChannelBlock;
        pf(int64_t(p.B) * n_blocks, [&](int64_t begin, int64_t end) {
            std::vector<LogSum> suffix(size_t(p.T) * kChannelBlock);
            alignas(64) float kt[kChannelBlock], vt[kChannelBlock];
            LogSum acc[kChannelBlock];
            for (int64_t item = begin; item < end; ++item) {
                const int b = int(item / n_blocks), c0 = int(item % n_blocks) * kChannelBlock;
                const int nc = std::min(kChannelBlock, p.C - c0);
                auto load = [&](int t) {
                    const In* k = static_cast<const In*>(p.k) + b * p.stride_b + t * p.stride_t + c0;
                    const In* v = static_cast<const In*>(p.v) + b * p.stride_b + t * p.stride_t + c0;
                    for (int c = 0; c < nc; ++c) kt[c] = to_float(k[c]), vt[c] = to_float(v[c]);
                };
                std::fill(acc, acc + nc, LogSum());
                for (int t = p.T - 1; t >= 0; --t) {     // suffix sums over i > t, seen from t
                    load(t);
                    for (int c = 0; c < nc; ++c) {
                        suffix[size_t(t) * kChannelBlock + c] = acc[c];
                        acc[c].shift();
                        acc[c].add(kt[c], vt[c], p.w[c0 + c]);
                    }
                }
                std::fill(acc, acc + nc, LogSum());
                for (int t = 0; t < p.T; ++t) {          // prefix sums over i < t, plus suffix and the token itself
                    load(t);
                    float* y = p.y + (int64_t(b) * p.T + t) * p.C + c0;
                    for (int c = 0; c < nc; ++c) {
                        LogSum total = acc[c];
                        total.merge(suffix[size_t(t) * kChannelBlock + c], p.w[c0 + c]);
                        total.add(p.u[c0 + c] + kt[c], vt[c], p.w[c0 + c]);
                        y[c] = total.num / total.den;
                        acc[c].shift();
                        acc[c].add(kt[c], vt[c], p.w[c0 + c]);
                    }
                }
            }
        });
    });
}

void biwkv_backward_cpu(const BiWkvParams& p, const ParallelFor& pf) {
    dispatch_dtype(p.dtype, [&](auto in) {
        pf(int64_t(p.B) * p.C, [&](int64_t begin, int64_t end) {
            for (int64_t item = begin; item < end; ++item)
                biwkv_backward_channel<decltype(in)>(p, int(item / p.C), int(item % p.C));
        });
    });
}

}  // namespace vrwkv
