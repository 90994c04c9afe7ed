// Framework-free parameters of the WKV kernels: filled by the PyTorch binding, the C ABI used by the tests, and
// (later) the ONNX Runtime custom op and the TensorRT plugin.  No torch / CUDA / ORT headers here.
//
// Layout contract (vrwkv_edge/state.py): token tensors are [B, T, H, N] with a contiguous last dimension and
// element strides stride_b / stride_t / stride_h; the recurrent state is float32 [B, H, N, N] KEY-MAJOR
// (S[b][h][key][value]), contiguous; outputs and gradients are float32 and contiguous.
#pragma once
#include <cstdint>

namespace vrwkv {

enum class DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Fields shared by every per-head WKV (RWKV-6, RWKV-7, and Bi-WKV-6 built from RWKV-6).
struct WkvCommonParams {
    int32_t B = 0, T = 0, H = 0, N = 0;
    DType dtype = DType::kF32;                    // of every token input (and of u for RWKV-6)
    int64_t stride_b = 0, stride_t = 0, stride_h = 0;
    const void *r = nullptr, *k = nullptr, *v = nullptr;
    const void* w_log = nullptr;                  // LOG decay; exp() is taken in fp32 inside the kernels
    const float* state_in = nullptr;              // [B, H, N, N]; never written
    float* state_out = nullptr;                   // [B, H, N, N]; must not alias state_in
    float* y = nullptr;                           // [B, T, H, N]
    // Backward (training) only: incoming gradients and the gradients produced, all fp32 and contiguous.
    const float* dy = nullptr;                    // [B, T, H, N]
    const float* dstate_out = nullptr;            // [B, H, N, N]
    float *dr = nullptr, *dk = nullptr, *dv = nullptr, *dw_log = nullptr;   // [B, T, H, N]
    float* dstate_in = nullptr;                   // [B, H, N, N]
    float* workspace = nullptr;                   // CUDA backward only: wkv_backward_workspace_floats() floats
};

// RWKV-6: y_t = r_t^T (S_{t-1} + diag(u) k_t v_t^T);  S_t = diag(exp(w_log_t)) S_{t-1} + k_t v_t^T.
struct Wkv6Params : WkvCommonParams {
    const void* u = nullptr;                      // [H, N], contiguous, dtype
    float* du = nullptr;                          // [B, H, N]: per-sample bonus gradient (the caller sums over B)
};

// RWKV-7: S_t = diag(exp(w_log_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T;  y_t = S_t^T r_t.
struct Wkv7Params : WkvCommonParams {
    const void *a = nullptr, *b = nullptr;        // same layout as r
    float *da = nullptr, *db = nullptr;
};

// Vision-RWKV (v1) Bi-WKV, per channel, no heads: w, u [C] (already divided by T), k, v [B, T, C]:
// y_t = sum_i c_ti v_i / sum_i c_ti with c_ti = exp(k_i - (|t-i|-1) w) for i != t and exp(u + k_t) for i = t.
struct BiWkvParams {
    int32_t B = 0, T = 0, C = 0;
    DType dtype = DType::kF32;                    // of k and v; w and u are float32
    int64_t stride_b = 0, stride_t = 0;           // of k and v (channel contiguous)
    const float *w = nullptr, *u = nullptr;
    const void *k = nullptr, *v = nullptr;
    float* y = nullptr;                           // [B, T, C]
    // Backward only: dy [B, T, C] in; dk, dv [B, T, C] and the per-sample dw, du [B, C] out (fp32, contiguous).
    const float* dy = nullptr;
    float *dk = nullptr, *dv = nullptr, *dw = nullptr, *du = nullptr;
    float* workspace = nullptr;                   // biwkv_workspace_floats() floats (CUDA forward, every backward)
};

// Chunk of tokens between state checkpoints in the backward passes (and staged in shared memory on the GPU).
constexpr int kChunk = 16;

inline int64_t wkv_backward_workspace_floats(const WkvCommonParams& p) {
    // Per (b, h): one state per checkpoint, plus the kChunk + 1 states recomputed inside the current chunk.
    const int64_t n_ckpt = (p.T + kChunk - 1) / kChunk;
    return int64_t(p.B) * p.H * (n_ckpt + kChunk + 1) * p.N * p.N;
}

// Ten [B, T, C] planes: the forward's suffix sums (4), reused by the backward for y, den and the anchors of every
// token, then the backward's suffix sums (6).
inline int64_t biwkv_workspace_floats(const BiWkvParams& p) { return 10 * int64_t(p.B) * p.T * p.C; }

}  // namespace vrwkv
