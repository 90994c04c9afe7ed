// Numerically stable partial sums for the Vision-RWKV (v1) Bi-WKV, shared by the CPU, CUDA and reference code.
#pragma once
#include <cmath>

#include "vrwkv/dispatch.h"

namespace vrwkv {

// Logit of an empty sum: finite, so that differences of two empty anchors are 0 (never NaN), and exp of anything
// minus it underflows to 0.
constexpr float kEmptyLogit = -1e30f;

// sum_i exp(logit_i) (v_i, 1) kept as (num, den) * exp(m), with m the largest logit seen: nothing overflows, and
// the anchor's own term is 1, so den >= 1 once the sum is not empty.
struct LogSum {
    float num = 0.f, den = 0.f, m = kEmptyLogit;

    VRWKV_HD void add(float logit, float v) {
        const float M = fmaxf(m, logit), old = expf(m - M), e = expf(logit - M);
        num = num * old + v * e;
        den = den * old + e;
        m = M;
    }
    VRWKV_HD void merge(const LogSum& o) {
        const float M = fmaxf(m, o.m), a = expf(m - M), b = expf(o.m - M);
        num = num * a + o.num * b;
        den = den * a + o.den * b;
        m = M;
    }
};

}  // namespace vrwkv
