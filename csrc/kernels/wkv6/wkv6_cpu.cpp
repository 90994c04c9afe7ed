// RWKV-6 WKV on the CPU: forward (decode and prefill, state in / out) and backward (with the initial state's and
// u's gradients).  Threads over (batch, head); the state rows are vectorised over the value index.
#include "../wkv_cpu_common.h"

namespace vrwkv {
namespace {

template <int N>
struct Tok6 {
    alignas(64) float r[N], w[N], k[N], v[N];
};

template <int N, class In>
void load_tok6(Tok6<N>& x, const Wkv6Params& p, int b, int t, int h) {
    load_vec<N, In>(x.r, p.r, p, b, t, h);
    load_decay<N, In>(x.w, p, b, t, h);
    load_vec<N, In>(x.k, p.k, p, b, t, h);
    load_vec<N, In>(x.v, p.v, p, b, t, h);
}

// y = r^T (src + diag(u) k v^T) when y is given, and dst = diag(w) src + k v^T (src == dst: in place).
template <int N>
void wkv6_update(const float* src, float* dst, const Tok6<N>& x, const float* u, float* y) {
    alignas(64) float acc[N] = {};                  // a local accumulator stays in registers (y may alias S)
    for (int i = 0; i < N; ++i) {
        const float* in = src + i * N;
        float* row = dst + i * N;
        if (y) axpy<N>(acc, x.r[i], in);
        const float wi = x.w[i], ki = x.k[i];
        VRWKV_SIMD
        for (int j = 0; j < N; ++j) row[j] = in[j] * wi + ki * x.v[j];
    }
    if (y) {
        float ruk = 0.f;
        for (int i = 0; i < N; ++i) ruk += x.r[i] * u[i] * x.k[i];
        for (int j = 0; j < N; ++j) y[j] = acc[j] + ruk * x.v[j];
    }
}

template <int N, class In>
void load_u(float* u, const Wkv6Params& p, int h) {
    const In* src = static_cast<const In*>(p.u) + int64_t(h) * N;
    for (int i = 0; i < N; ++i) u[i] = to_float(src[i]);
}

}  // namespace

void wkv6_forward_cpu(const Wkv6Params& p, const ParallelFor& pf) {
    for_each_head(p, pf, "wkv6_forward_cpu", [&](int b, int h, auto n, auto in) {
        constexpr int N = decltype(n)::value;
        using In = decltype(in);
        alignas(64) float u[N];
        Tok6<N> x;
        load_u<N, In>(u, p, h);
        forward_head<N>(p, b, h, [&](int t, const float* src, float* dst, float* y) {
            load_tok6<N, In>(x, p, b, t, h);
            wkv6_update<N>(src, dst, x, u, y);
        });
    });
}

void wkv6_backward_cpu(const Wkv6Params& p, const ParallelFor& pf) {
    for_each_head(p, pf, "wkv6_backward_cpu", [&](int b, int h, auto n, auto in) {
        constexpr int N = decltype(n)::value;
        using In = decltype(in);
        alignas(64) float u[N], du[N] = {};
        load_u<N, In>(u, p, h);
        Tok6<N> x;
        auto step = [&](int t, float* S) {
            load_tok6<N, In>(x, p, b, t, h);
            wkv6_update<N>(S, S, x, u, nullptr);
        };
        auto reverse = [&](int t, const float* prev, const float*, float* dS) {
            load_tok6<N, In>(x, p, b, t, h);
            const float* dy = out_ptr(p.dy, p, b, t, h);
            float *dr = out_ptr(p.dr, p, b, t, h), *dk = out_ptr(p.dk, p, b, t, h), *dv = out_ptr(p.dv, p, b, t, h);
            float* dw = out_ptr(p.dw_log, p, b, t, h);
            const float dyv = dot<N>(dy, x.v);
            float ruk = 0.f;
            for (int i = 0; i < N; ++i) ruk += x.r[i] * u[i] * x.k[i];
            for (int j = 0; j < N; ++j) dv[j] = ruk * dy[j];
            for (int i = 0; i < N; ++i) {
                float* g = dS + i * N;                          // dL/dS_t (y_t reads S_{t-1}, not S_t)
                dr[i] = dot<N>(prev + i * N, dy) + u[i] * x.k[i] * dyv;
                dk[i] = dot<N>(g, x.v) + x.r[i] * u[i] * dyv;
                dw[i] = x.w[i] * dot<N>(g, prev + i * N);
                du[i] += x.r[i] * x.k[i] * dyv;
                axpy<N>(dv, x.k[i], g);
                const float wi = x.w[i], ri = x.r[i];           // dL/dS_{t-1} = diag(w) dS + r dy^T
                VRWKV_SIMD
                for (int j = 0; j < N; ++j) g[j] = g[j] * wi + ri * dy[j];
            }
        };
        backward_head<N>(p, b, h, step, reverse);
        std::memcpy(p.du + (int64_t(b) * p.H + h) * N, du, sizeof du);
    });
}

}  // namespace vrwkv
