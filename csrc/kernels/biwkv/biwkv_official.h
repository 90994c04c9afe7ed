// Vision-RWKV (v1) Bi-WKV with the arithmetic of the official CUDA kernel (cuda_new/bi_wkv_kernel.cu), which the
// released checkpoints were trained with and which departs from the paper formula at every T >= 2 (32 chunks of
// Lc = ceil(T / 32) tokens, symmetric distances at chunk starts, a subtractive right-hand update, eps = 1e-6 added
// to the rescaled denominator).  vrwkv_edge/ops/biwkv.py (bi_wkv_official_ref) documents it and ports it op by op.
//
// Same BiWkvParams as the formula kernels (biwkv_forward_*); no workspace.  The per-channel routine is shared by
// the CPU kernel (a loop over channels) and the CUDA kernel (a thread per channel), so both run the kernel's fp32
// operations in its order; the scalar reference repeats them in double, lane by lane, as the kernel's threads do.
#pragma once
#include <cmath>

#include "vrwkv/dispatch.h"
#include "vrwkv/kernels.h"

namespace vrwkv {

constexpr int kOfficialTokenSplit = 32;       // the kernel's chunks (one warp lane each)
constexpr float kOfficialEps = 1e-6f;         // added to the denominator after rescaling by the running maximum
constexpr float kOfficialMinValue = -1e38f;   // the kernel's empty running maximum

void biwkv_official_forward_cpu(const BiWkvParams& p, const ParallelFor& pf = serial_for);
void biwkv_official_forward_cuda(const BiWkvParams& p, void* stream);
void biwkv_official_forward_reference(const BiWkvParams& p);

// One (batch, channel) of the official forward in fp32.  Lane q owns tokens [q Lc, q Lc + len_q); its partial
// sums (num, den; running maximum exponent) seen from its first token (c, d; o1) and from just past its last
// (a, b; o2) are combined across lanes in ascending lane order, as the kernel's __shfl_sync loop reads them.
template <class In>
VRWKV_HD void biwkv_official_channel(const BiWkvParams& p, int b, int ch) {
    const int T = p.T;
    if (T <= 0) return;
    const float w = p.w[ch], u = p.u[ch];
    const In* kp = static_cast<const In*>(p.k) + b * p.stride_b + ch;
    const In* vp = static_cast<const In*>(p.v) + b * p.stride_b + ch;
    auto key = [&](int t) { return to_float(kp[int64_t(t) * p.stride_t]); };
    auto val = [&](int t) { return to_float(vp[int64_t(t) * p.stride_t]); };
    const int Lc = (T + kOfficialTokenSplit - 1) / kOfficialTokenSplit;
    const int P = (T + Lc - 1) / Lc;          // lanes holding tokens (the others add nothing anywhere)
    float A[kOfficialTokenSplit], Bs[kOfficialTokenSplit], Cs[kOfficialTokenSplit], Ds[kOfficialTokenSplit];
    float O1[kOfficialTokenSplit], O2[kOfficialTokenSplit];
    for (int q = 0; q < P; ++q) {
        const int s = q * Lc, len = T - s < Lc ? T - s : Lc;
        float a = 0.f, bb = 0.f, c = 0.f, d = 0.f, o1 = kOfficialMinValue, o2 = kOfficialMinValue;
        for (int m = 0; m < len; ++m) {
            float kk = key(s + m), vv = val(s + m);
            float no = fmaxf(o1, kk - w * float(m));
            float e1 = expf(o1 - no), e3 = expf(kk - w * float(m) - no);
            c = e1 * c + e3 * vv, d = e1 * d + e3, o1 = no;
            kk = key(s + len - 1 - m), vv = val(s + len - 1 - m);
            no = fmaxf(o2, kk - w * float(m + 1));
            const float e2 = expf(o2 - no);
            e3 = expf(kk - w * float(m + 1) - no);
            a = e2 * a + e3 * vv, bb = e2 * bb + e3, o2 = no;
        }
        A[q] = a, Bs[q] = bb, Cs[q] = c, Ds[q] = d, O1[q] = o1, O2[q] = o2;
    }
    for (int q = 0; q < P; ++q) {
        float a2 = 0.f, b2 = 0.f, c2 = 0.f, d2 = 0.f, o3 = kOfficialMinValue, o4 = kOfficialMinValue;
        for (int i = 0; i < P; ++i) {
            if (q > i) {   // lanes before q, seen from just before q's first token
                const float dist = float((q - i - 1) * Lc);
                const float no = fmaxf(O2[i] - w * dist, o4);
                const float e_old = expf(o4 - no), e_new = expf(O2[i] - w * dist - no);
                a2 = a2 * e_old + A[i] * e_new, b2 = b2 * e_old + Bs[i] * e_new, o4 = no;
            } else {       // q and the lanes after it, seen from q's first token
                const float dist = float((i - q) * Lc);
                const float no = fmaxf(O1[i] - w * dist, o3);
                const float e_old = expf(o3 - no), e_new = expf(O1[i] - w * dist - no);
                c2 = c2 * e_old + Cs[i] * e_new, d2 = d2 * e_old + Ds[i] * e_new, o3 = no;
            }
        }
        const int s = q * Lc, len = T - s < Lc ? T - s : Lc;
        float a = a2, bb = b2, o2 = o4;
        const float first = expf(key(s) - o3);
        float c = c2 - first * val(s), d = d2 - first, o1 = o3;   // the lane's first token leaves (c, d)
        for (int m = 0; m < len; ++m) {
            const int t = s + m, tn = t + 1 < T ? t + 1 : 0;     // the kernel reads token (t + 1) % T
            const float kk = key(t), vv = val(t), kn = key(tn), vn = val(tn);
            float no = fmaxf(fmaxf(o1, u + kk), o2);
            float e1 = expf(o1 - no), e2 = expf(o2 - no), e3 = expf(u + kk - no);
            p.y[(int64_t(b) * T + t) * p.C + ch] = (c * e1 + a * e2 + e3 * vv) / (d * e1 + bb * e2 + e3 + kOfficialEps);
            no = fmaxf(o2 - w, kk);
            e2 = expf(o2 - w - no), e3 = expf(kk - no);
            a = e2 * a + e3 * vv, bb = e2 * bb + e3, o2 = no;
            no = fmaxf(o1 + w, kn + w);
            e1 = expf(o1 + w - no), e3 = expf(kn + w - no);
            c = e1 * c - e3 * vn, d = e1 * d - e3, o1 = no;
        }
    }
}

}  // namespace vrwkv
