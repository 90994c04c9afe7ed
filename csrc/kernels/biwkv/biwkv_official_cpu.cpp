// The official-kernel Bi-WKV (biwkv_official.h) on the CPU: threads over (batch, channel), each running the
// per-channel routine the CUDA kernel runs too, so both keep the official kernel's fp32 operation order.
#include "biwkv_official.h"

namespace vrwkv {

void biwkv_official_forward_cpu(const BiWkvParams& p, const ParallelFor& pf) {
    dispatch_dtype(p.dtype, [&](auto in) {
        pf(int64_t(p.B) * p.C, [&](int64_t begin, int64_t end) {
            for (int64_t item = begin; item < end; ++item)
                biwkv_official_channel<decltype(in)>(p, int(item / p.C), int(item % p.C));
        });
    });
}

}  // namespace vrwkv
