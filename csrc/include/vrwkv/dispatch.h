// Element types, fp32 conversion and the dtype / head-size dispatch shared by the CPU kernels, the CUDA launchers
// and the emulated CUDA build.  Inputs are loaded as fp16 / bf16 / fp32 and every computation is fp32.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "vrwkv/params.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define VRWKV_HD __host__ __device__ __forceinline__
#else
#define VRWKV_HD inline
#endif

namespace vrwkv {

// Storage-only 16-bit types: the kernels never do arithmetic in them, so bit conversions suffice on host and device.
struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

VRWKV_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}

VRWKV_HD float to_float(float x) { return x; }
VRWKV_HD float to_float(bf16_t x) { return bits_to_float(uint32_t(x.bits) << 16); }
VRWKV_HD float to_float(half_t x) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(x.bits));   // one instruction; the bit version below costs registers
#endif
    const uint32_t sign = uint32_t(x.bits & 0x8000u) << 16, exp = (x.bits >> 10) & 0x1fu, man = x.bits & 0x3ffu;
    if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));      // inf / nan
    if (exp == 0) {                                                                  // zero / subnormal: man * 2^-24
        const float f = float(man) * 5.9604644775390625e-08f;
        return sign ? -f : f;
    }
    return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Token element (b, t, h, n) of a [B, T, H, N] input of the params' layout.
template <class In, class P>
VRWKV_HD float load_token(const void* base, const P& p, int b, int t, int h, int n) {
    return to_float(static_cast<const In*>(base)[b * p.stride_b + t * p.stride_t + h * p.stride_h + n]);
}

template <class F>
decltype(auto) dispatch_dtype(DType d, F&& f) {
    switch (d) {
        case DType::kF32: return f(float{});
        case DType::kF16: return f(half_t{});
        case DType::kBF16: return f(bf16_t{});
    }
    throw std::invalid_argument("vrwkv: unknown dtype " + std::to_string(int(d)));
}

// Head sizes with compiled kernels.  MaxN lets a kernel family support fewer (the CUDA backward's shared-memory
// reduction buffer is N x (N + 1) floats, so it stops at 64); larger sizes are then not even instantiated.
template <int MaxN = 128, class F>
decltype(auto) dispatch_head_size(int N, const char* op, F&& f) {
    switch (N) {
        case 8: return f(std::integral_constant<int, 8>{});     // small heads: the rwkv.cpp tiny test models
        case 16: return f(std::integral_constant<int, 16>{});
        case 32: return f(std::integral_constant<int, 32>{});
        case 64: return f(std::integral_constant<int, 64>{});
        case 128:
            if constexpr (MaxN >= 128) return f(std::integral_constant<int, 128>{});
            break;
    }
    throw std::invalid_argument(std::string(op) + ": head size N = " + std::to_string(N) +
                                " is not supported (N must be 8, 16, 32, 64" +
                                (MaxN >= 128 ? " or 128)" : "; 128 in the forward kernels only)"));
}

}  // namespace vrwkv
