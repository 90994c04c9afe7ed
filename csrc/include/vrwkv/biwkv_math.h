// Numerically stable partial sums for the Vision-RWKV (v1) Bi-WKV, shared by the CPU, CUDA and reference code.
#pragma once
#include <cmath>

#include "vrwkv/dispatch.h"

namespace vrwkv {

// Logit of an empty sum: finite, so that differences of two empty anchors are 0 (never NaN), and exp of anything
// minus it underflows to 0.
constexpr float kEmptyLogit = -1e30f;

// sum_i exp(logit_i) (v_i, 1) kept as (num, den) * exp(K - D w): the anchor is the largest term, whose logit is
// an input key K seen from D tokens away (plus u for the current token), so den >= 1 once not empty and nothing
// overflows.  Anchors are compared as (K_a - K_b) - (D_a - D_b) w from the inputs, never as a running logit that
// would accumulate one rounding per token (keys of size ~600 would lose ~T ulps).
struct LogSum {
    float num = 0.f, den = 0.f, K = kEmptyLogit, D = 0.f;

    VRWKV_HD void shift() { D += 1.f; }                 // one token further away: times exp(-w)
    VRWKV_HD void merge(const LogSum& o, float w) {
        const float diff = (K - o.K) - (D - o.D) * w;   // log(this anchor / o's anchor)
        const float a = expf(fminf(diff, 0.f)), b = expf(fminf(-diff, 0.f));
        num = num * a + o.num * b;
        den = den * a + o.den * b;
        K = diff < 0.f ? o.K : K;
        D = diff < 0.f ? o.D : D;
    }
    VRWKV_HD void add(float logit, float v, float w) { merge(LogSum{v, 1.f, logit, 0.f}, w); }
};

}  // namespace vrwkv
