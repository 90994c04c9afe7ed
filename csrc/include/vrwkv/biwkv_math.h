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

// The backward's sums over tokens t seen from token i at distance d = |t - i| - 1: of a_t and a_t y_t
// (a_t = dy_t / den_t) and of d times each, every term weighted exp(-M_t - d w) with M_t token t's forward anchor
// logit (so exp(k_i) times a term is c_ti / D_t <= 1).  Kept as * exp(K - D w) like LogSum; a term's anchor is
// K = -K_t, D = d - D_t from the forward anchor's (K_t, D_t).
struct AdjSum {
    float sa = 0.f, sb = 0.f, ga = 0.f, gb = 0.f, K = kEmptyLogit, D = 0.f;

    VRWKV_HD void shift() {             // one token further: every distance grows by one
        ga += sa;
        gb += sb;
        D += 1.f;
    }
    VRWKV_HD void merge(const AdjSum& o, float w) {
        const float diff = (K - o.K) - (D - o.D) * w;
        const float x = expf(fminf(diff, 0.f)), y = expf(fminf(-diff, 0.f));
        sa = sa * x + o.sa * y, sb = sb * x + o.sb * y, ga = ga * x + o.ga * y, gb = gb * x + o.gb * y;
        K = diff < 0.f ? o.K : K;
        D = diff < 0.f ? o.D : D;
    }
};

// Bi-WKV backward of one (batch, channel): the forward again (suffix, then totals: planes 0-3 become y_t, den_t and
// the anchor K_t, D_t), the adjoint suffix sums (planes 4-9), then the prefix sums and the gradients:
//   dv_i = sum_t c_ti dy_t / D_t,  dk_i = sum_t c_ti dy_t (v_i - y_t) / D_t,  du = sum_t c_tt dy_t (v_t - y_t) / D_t,
//   dw = -sum_{t != i} (|t-i| - 1) c_ti dy_t (v_i - y_t) / D_t      (D_t = sum_i c_ti).
// Shared by the CPU kernel (a loop over channels) and the CUDA kernel (a thread per channel).
template <class In>
VRWKV_HD void biwkv_backward_channel(const BiWkvParams& p, int b, int c) {
    const float w = p.w[c], u = p.u[c];
    const In* kp = static_cast<const In*>(p.k) + b * p.stride_b + c;
    const In* vp = static_cast<const In*>(p.v) + b * p.stride_b + c;
    const int64_t plane = int64_t(p.B) * p.T * p.C, base = int64_t(b) * p.T * p.C + c;
    float* ws = p.workspace + base;
    auto at = [&](int q, int t) -> float& { return ws[q * plane + int64_t(t) * p.C]; };
    auto key = [&](int t) { return to_float(kp[t * p.stride_t]); };
    auto val = [&](int t) { return to_float(vp[t * p.stride_t]); };

    LogSum acc;
    for (int t = p.T - 1; t >= 0; --t) {
        at(0, t) = acc.num, at(1, t) = acc.den, at(2, t) = acc.K, at(3, t) = acc.D;
        acc.shift();
        acc.add(key(t), val(t), w);
    }
    acc = LogSum();
    for (int t = 0; t < p.T; ++t) {
        LogSum total = acc;
        total.merge(LogSum{at(0, t), at(1, t), at(2, t), at(3, t)}, w);
        total.add(u + key(t), val(t), w);
        at(0, t) = total.num / total.den, at(1, t) = total.den, at(2, t) = total.K, at(3, t) = total.D;
        acc.shift();
        acc.add(key(t), val(t), w);
    }

    auto term = [&](int t) {
        const float a = p.dy[base + int64_t(t) * p.C] / at(1, t);
        return AdjSum{a, a * at(0, t), 0.f, 0.f, -at(2, t), -at(3, t)};
    };
    AdjSum adj;
    for (int t = p.T - 1; t >= 0; --t) {
        at(4, t) = adj.sa, at(5, t) = adj.sb, at(6, t) = adj.ga, at(7, t) = adj.gb, at(8, t) = adj.K, at(9, t) = adj.D;
        adj.shift();
        adj.merge(term(t), w);
    }
    adj = AdjSum();
    float dw = 0.f, du = 0.f;
    for (int i = 0; i < p.T; ++i) {
        AdjSum s = adj;
        s.merge(AdjSum{at(4, i), at(5, i), at(6, i), at(7, i), at(8, i), at(9, i)}, w);
        const float ki = key(i), vi = val(i), yi = at(0, i);
        const float a = p.dy[base + int64_t(i) * p.C] / at(1, i);
        const float e = expf(ki + s.K - s.D * w);                            // exp(k_i) times the sums' scale
        const float self = expf(u + ki - (at(2, i) - at(3, i) * w)) * a;     // c_ii dy_i / D_i
        const float dv = e * s.sa + self;
        p.dv[base + int64_t(i) * p.C] = dv;
        p.dk[base + int64_t(i) * p.C] = vi * dv - (e * s.sb + self * yi);
        dw -= e * (vi * s.ga - s.gb);
        du += self * (vi - yi);
        adj.shift();
        adj.merge(term(i), w);
    }
    p.dw[int64_t(b) * p.C + c] = dw;
    p.du[int64_t(b) * p.C + c] = du;
}

}  // namespace vrwkv
