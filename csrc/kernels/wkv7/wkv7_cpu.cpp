// RWKV-7 WKV on the CPU: forward (decode and prefill, state in / out) and backward (with the initial state's
// gradient).  Threads over (batch, head); the state rows are vectorised over the value index.
#include "../wkv_cpu_common.h"

namespace vrwkv {
namespace {

// One token's vectors, fp32.
template <int N>
struct Tok7 {
    alignas(64) float r[N], w[N], k[N], v[N], a[N], b[N];
};

template <int N, class In>
void load_tok7(Tok7<N>& x, const Wkv7Params& p, int b, int t, int h) {
    load_vec<N, In>(x.r, p.r, p, b, t, h);
    load_decay<N, In>(x.w, p, b, t, h);
    load_vec<N, In>(x.k, p.k, p, b, t, h);
    load_vec<N, In>(x.v, p.v, p, b, t, h);
    load_vec<N, In>(x.a, p.a, p, b, t, h);
    load_vec<N, In>(x.b, p.b, p, b, t, h);
}

// dst = diag(w) src + b (a^T src) + k v^T (src == dst: in place); y = dst^T r when y is given.  Reading the
// previous state from src lets the first token read state_in directly instead of copying it first.
template <int N>
void wkv7_update(const float* src, float* dst, const Tok7<N>& x, float* y) {
    // sa and y accumulate in locals (registers): through the y pointer, which may alias S, every row would be a
    // store-to-load round trip.
    alignas(64) float sa[N] = {}, acc[N] = {};
    for (int i = 0; i < N; ++i) axpy<N>(sa, x.a[i], src + i * N);
    for (int i = 0; i < N; ++i) {
        const float* in = src + i * N;
        float* row = dst + i * N;
        const float wi = x.w[i], bi = x.b[i], ki = x.k[i];
        VRWKV_SIMD
        for (int j = 0; j < N; ++j) row[j] = in[j] * wi + bi * sa[j] + ki * x.v[j];
        if (y) axpy<N>(acc, x.r[i], row);
    }
    if (y) std::copy(acc, acc + N, y);
}

}  // namespace

void wkv7_forward_cpu(const Wkv7Params& p, const ParallelFor& pf) {
    for_each_head(p, pf, "wkv7_forward_cpu", [&](int b, int h, auto n, auto in) {
        constexpr int N = decltype(n)::value;
        Tok7<N> x;
        forward_head<N>(p, b, h, [&](int t, const float* src, float* dst, float* y) {
            load_tok7<N, decltype(in)>(x, p, b, t, h);
            wkv7_update<N>(src, dst, x, y);
        });
    });
}

void wkv7_backward_cpu(const Wkv7Params& p, const ParallelFor& pf) {
    for_each_head(p, pf, "wkv7_backward_cpu", [&](int b, int h, auto n, auto in) {
        constexpr int N = decltype(n)::value;
        using In = decltype(in);
        Tok7<N> x;
        auto step = [&](int t, float* S) {
            load_tok7<N, In>(x, p, b, t, h);
            wkv7_update<N>(S, S, x, nullptr);
        };
        auto reverse = [&](int t, const float* prev, const float* cur, float* dS) {
            load_tok7<N, In>(x, p, b, t, h);
            const float* dy = out_ptr(p.dy, p, b, t, h);
            float *dr = out_ptr(p.dr, p, b, t, h), *dk = out_ptr(p.dk, p, b, t, h), *dv = out_ptr(p.dv, p, b, t, h);
            float *dw = out_ptr(p.dw_log, p, b, t, h), *da = out_ptr(p.da, p, b, t, h), *db = out_ptr(p.db, p, b, t, h);
            alignas(64) float sa[N] = {}, dsa[N] = {};
            for (int i = 0; i < N; ++i) axpy<N>(sa, x.a[i], prev + i * N);
            std::fill(dv, dv + N, 0.f);
            for (int i = 0; i < N; ++i) {
                float* g = dS + i * N;                          // becomes dL/dS_t: y_t = S_t^T r_t adds r dy^T
                axpy<N>(g, x.r[i], dy);
                dr[i] = dot<N>(cur + i * N, dy);
                dk[i] = dot<N>(g, x.v);
                db[i] = dot<N>(g, sa);
                dw[i] = x.w[i] * dot<N>(g, prev + i * N);
                axpy<N>(dv, x.k[i], g);
                axpy<N>(dsa, x.b[i], g);
            }
            for (int i = 0; i < N; ++i) {                       // dL/dS_{t-1} = diag(w) dS + a dsa^T
                float* g = dS + i * N;
                da[i] = dot<N>(prev + i * N, dsa);
                const float wi = x.w[i], ai = x.a[i];
                VRWKV_SIMD
                for (int j = 0; j < N; ++j) g[j] = g[j] * wi + ai * dsa[j];
            }
        };
        backward_head<N>(p, b, h, step, reverse);
    });
}

}  // namespace vrwkv
