// Scalar reference of the official-kernel Bi-WKV (biwkv_official.h), written as the kernel is organised: one
// "thread" per (batch, channel, lane) with its own registers, the cross-lane reads of __shfl_sync as reads of the
// other lanes' registers after a barrier, every value in double.  It defines what the fp32 routine must compute.
#include <algorithm>
#include <cmath>
#include <vector>

#include "biwkv_official.h"

namespace vrwkv {

namespace {
struct Lane {   // the registers of one kernel thread
    double a = 0, b = 0, c = 0, d = 0, o1 = kOfficialMinValue, o2 = kOfficialMinValue;
};
}  // namespace

void biwkv_official_forward_reference(const BiWkvParams& p) {
    dispatch_dtype(p.dtype, [&](auto in) {
        using In = decltype(in);
        const int T = p.T;
        if (T <= 0) return;
        const int Lc = (T + kOfficialTokenSplit - 1) / kOfficialTokenSplit;
        for (int b = 0; b < p.B; ++b)
            for (int ch = 0; ch < p.C; ++ch) {
                auto x = [&](const void* base, int t) -> double {
                    return to_float(static_cast<const In*>(base)[b * p.stride_b + int64_t(t) * p.stride_t + ch]);
                };
                const double w = p.w[ch], u = p.u[ch];
                // Every lane of the warp, the empty ones (no tokens) included: they take part in the exchange.
                std::vector<Lane> lane(kOfficialTokenSplit), next(kOfficialTokenSplit);
                for (int q = 0; q < kOfficialTokenSplit; ++q) {
                    Lane& r = lane[q];
                    const int s = q * Lc, len = std::max(0, std::min(Lc, T - s));
                    for (int m = 0; m < len; ++m) {
                        double no = std::max(r.o1, x(p.k, s + m) - w * m);
                        double e1 = std::exp(r.o1 - no), e3 = std::exp(x(p.k, s + m) - w * m - no);
                        r.c = e1 * r.c + e3 * x(p.v, s + m);
                        r.d = e1 * r.d + e3;
                        r.o1 = no;
                        const int back = s + len - 1 - m;
                        no = std::max(r.o2, x(p.k, back) - w * (m + 1));
                        const double e2 = std::exp(r.o2 - no);
                        e3 = std::exp(x(p.k, back) - w * (m + 1) - no);
                        r.a = e2 * r.a + e3 * x(p.v, back);
                        r.b = e2 * r.b + e3;
                        r.o2 = no;
                    }
                }
                // The exchange: every lane reads every lane's sums (barrier: all reads see the values above).
                for (int q = 0; q < kOfficialTokenSplit; ++q) {
                    Lane n;
                    double o3 = kOfficialMinValue, o4 = kOfficialMinValue;
                    for (int i = 0; i < kOfficialTokenSplit; ++i) {
                        const Lane& o = lane[i];
                        if (q > i) {
                            const double dist = double(q - i - 1) * Lc, no = std::max(o.o2 - w * dist, o4);
                            const double e_old = std::exp(o4 - no), e_new = std::exp(o.o2 - w * dist - no);
                            n.a = n.a * e_old + o.a * e_new, n.b = n.b * e_old + o.b * e_new, o4 = no;
                        } else {
                            const double dist = double(i - q) * Lc, no = std::max(o.o1 - w * dist, o3);
                            const double e_old = std::exp(o3 - no), e_new = std::exp(o.o1 - w * dist - no);
                            n.c = n.c * e_old + o.c * e_new, n.d = n.d * e_old + o.d * e_new, o3 = no;
                        }
                    }
                    n.o2 = o4, n.o1 = o3;
                    next[q] = n;
                }
                for (int q = 0; q < kOfficialTokenSplit; ++q) {
                    Lane r = next[q];
                    const int s = q * Lc, len = std::max(0, std::min(Lc, T - s));
                    if (len == 0) continue;
                    const double first = std::exp(x(p.k, s) - r.o1);
                    r.c -= first * x(p.v, s);
                    r.d -= first;
                    for (int m = 0; m < len; ++m) {
                        const int t = s + m, tn = (t + 1) % T;
                        const double kk = x(p.k, t), vv = x(p.v, t), kn = x(p.k, tn), vn = x(p.v, tn);
                        double no = std::max(std::max(r.o1, u + kk), r.o2);
                        double e1 = std::exp(r.o1 - no), e2 = std::exp(r.o2 - no), e3 = std::exp(u + kk - no);
                        p.y[(int64_t(b) * T + t) * p.C + ch] =
                            float((r.c * e1 + r.a * e2 + e3 * vv) / (r.d * e1 + r.b * e2 + e3 + double(kOfficialEps)));
                        no = std::max(r.o2 - w, kk);
                        e2 = std::exp(r.o2 - w - no), e3 = std::exp(kk - no);
                        r.a = e2 * r.a + e3 * vv, r.b = e2 * r.b + e3, r.o2 = no;
                        no = std::max(r.o1 + w, kn + w);
                        e1 = std::exp(r.o1 + w - no), e3 = std::exp(kn + w - no);
                        r.c = e1 * r.c - e3 * vn, r.d = e1 * r.d - e3, r.o1 = no;
                    }
                }
            }
    });
}

}  // namespace vrwkv
