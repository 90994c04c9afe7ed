// Scalar references of every WKV: the recurrences / formulas written out one multiply at a time, in double, with
// no blocking, no vectorisation and no threads.  They define what the fast kernels must compute.
#include <cmath>
#include <vector>

#include "vrwkv/dispatch.h"
#include "vrwkv/kernels.h"

namespace vrwkv {

namespace {

template <class In, class P>
double at(const void* x, const P& p, int b, int t, int h, int n) { return load_token<In>(x, p, b, t, h, n); }

// Shared skeleton: per head, state S[i][j] in double; token(b, h, t, S) advances S and writes y.
template <class P, class Token>
void per_head(const P& p, Token token) {
    const int N = p.N;
    dispatch_dtype(p.dtype, [&](auto in) {
        for (int b = 0; b < p.B; ++b)
            for (int h = 0; h < p.H; ++h) {
                const int64_t bh = int64_t(b) * p.H + h;
                std::vector<double> S(size_t(N) * N, 0.0);
                if (p.state_in)
                    for (int e = 0; e < N * N; ++e) S[e] = p.state_in[bh * N * N + e];
                for (int t = 0; t < p.T; ++t) token(in, b, h, t, S);
                for (int e = 0; e < N * N; ++e) p.state_out[bh * N * N + e] = float(S[e]);
            }
    });
}

}  // namespace

void wkv6_forward_reference(const Wkv6Params& p) {
    const int N = p.N;
    per_head(p, [&](auto in, int b, int h, int t, std::vector<double>& S) {
        using In = decltype(in);
        for (int j = 0; j < N; ++j) {
            double y = 0;
            for (int i = 0; i < N; ++i) {
                const double u = to_float(static_cast<const In*>(p.u)[h * N + i]);
                y += at<In>(p.r, p, b, t, h, i) *
                     (S[i * N + j] + u * at<In>(p.k, p, b, t, h, i) * at<In>(p.v, p, b, t, h, j));
            }
            p.y[((int64_t(b) * p.T + t) * p.H + h) * N + j] = float(y);
        }
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < N; ++j)
                S[i * N + j] = std::exp(at<In>(p.w_log, p, b, t, h, i)) * S[i * N + j] +
                               at<In>(p.k, p, b, t, h, i) * at<In>(p.v, p, b, t, h, j);
    });
}

void wkv7_forward_reference(const Wkv7Params& p) {
    const int N = p.N;
    per_head(p, [&](auto in, int b, int h, int t, std::vector<double>& S) {
        using In = decltype(in);
        std::vector<double> sa(N, 0.0);
        for (int j = 0; j < N; ++j)
            for (int i = 0; i < N; ++i) sa[j] += at<In>(p.a, p, b, t, h, i) * S[i * N + j];
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < N; ++j)
                S[i * N + j] = std::exp(at<In>(p.w_log, p, b, t, h, i)) * S[i * N + j] +
                               at<In>(p.b, p, b, t, h, i) * sa[j] +
                               at<In>(p.k, p, b, t, h, i) * at<In>(p.v, p, b, t, h, j);
        for (int j = 0; j < N; ++j) {
            double y = 0;
            for (int i = 0; i < N; ++i) y += at<In>(p.r, p, b, t, h, i) * S[i * N + j];
            p.y[((int64_t(b) * p.T + t) * p.H + h) * N + j] = float(y);
        }
    });
}

// The paper formula directly, O(T^2) per channel: a softmax over i of k_i - (|t-i|-1) w (u + k_t at i = t).
void biwkv_forward_reference(const BiWkvParams& p) {
    dispatch_dtype(p.dtype, [&](auto in) {
        using In = decltype(in);
        auto x = [&](const void* base, int b, int t, int c) -> double {
            return to_float(static_cast<const In*>(base)[b * p.stride_b + t * p.stride_t + c]);
        };
        std::vector<double> logit(p.T);
        for (int b = 0; b < p.B; ++b)
            for (int c = 0; c < p.C; ++c)
                for (int t = 0; t < p.T; ++t) {
                    double mx = -INFINITY, num = 0, den = 0;
                    for (int i = 0; i < p.T; ++i) {
                        logit[i] = i == t ? p.u[c] + x(p.k, b, t, c) : x(p.k, b, i, c) - (std::abs(t - i) - 1) * double(p.w[c]);
                        mx = std::max(mx, logit[i]);
                    }
                    for (int i = 0; i < p.T; ++i) {
                        const double e = std::exp(logit[i] - mx);
                        num += e * x(p.v, b, i, c);
                        den += e;
                    }
                    p.y[(int64_t(b) * p.T + t) * p.C + c] = float(num / den);
                }
    });
}

}  // namespace vrwkv
