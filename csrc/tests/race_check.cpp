// Runs the emulated CUDA WKV-7 forward kernel once on random inputs and compares it with the scalar reference.
// Exit status 0: match; 1: mismatch (printed).  Built plain, with -DVRWKV_TEST_DROP_BARRIER (one __syncthreads
// removed from the kernel) and with -fsanitize=thread, it shows that the emulation catches a missing barrier:
// deterministically in fiber modes, and as a ThreadSanitizer data race in thread mode.
//
// usage: race_check <mode: 0 fibers-forward | 1 fibers-reverse | 2 fibers-shuffled | 3 threads> [seed]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cuda_on_cpu/cuda_on_cpu.h"
#include "vrwkv/kernels.h"

int main(int argc, char** argv) {
    const int mode = argc > 1 ? std::atoi(argv[1]) : 0;
    const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 0;
    cuda_on_cpu::config().mode = cuda_on_cpu::Mode(mode);
    cuda_on_cpu::config().seed = seed;

    // Three chunks (16 + 16 + 8 tokens), so the chunk buffers are overwritten while a missing barrier matters.
    const int B = 1, T = 40, H = 2, N = 32;
    const size_t tok = size_t(B) * T * H * N, st = size_t(B) * H * N * N;
    std::mt19937 rng(1234 + seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> ud(-0.6f, -0.01f);
    std::vector<float> r(tok), w(tok), k(tok), v(tok), a(tok), b(tok), s0(st);
    for (size_t i = 0; i < tok; ++i) {
        r[i] = nd(rng), w[i] = ud(rng), k[i] = 0.3f * nd(rng), v[i] = nd(rng);
        a[i] = -0.1f * nd(rng), b[i] = 0.1f * nd(rng);
    }
    for (auto& x : s0) x = nd(rng);

    vrwkv::Wkv7Params p;
    p.B = B, p.T = T, p.H = H, p.N = N, p.dtype = vrwkv::DType::kF32;
    p.stride_h = N, p.stride_t = int64_t(H) * N, p.stride_b = int64_t(T) * H * N;
    p.r = r.data(), p.w_log = w.data(), p.k = k.data(), p.v = v.data(), p.a = a.data(), p.b = b.data();
    p.state_in = s0.data();
    std::vector<float> y(tok), s1(st), y_ref(tok), s1_ref(st);
    p.y = y.data(), p.state_out = s1.data();
    vrwkv::wkv7_forward_cuda(p, nullptr);
    p.y = y_ref.data(), p.state_out = s1_ref.data();
    vrwkv::wkv7_forward_reference(p);

    double err = 0, scale = 0;
    for (size_t i = 0; i < tok; ++i) {
        err = std::fmax(err, std::fabs(y[i] - y_ref[i]));
        scale = std::fmax(scale, std::fabs(y_ref[i]));
    }
    for (size_t i = 0; i < st; ++i) err = std::fmax(err, std::fabs(s1[i] - s1_ref[i]));
    const double rel = err / scale;
    std::printf("mode %d seed %llu: max error %.3g relative to max |y| %.3g\n", mode, (unsigned long long)seed, rel,
                scale);
    if (!(rel <= 1e-5)) {
        std::printf("MISMATCH\n");
        return 1;
    }
    return 0;
}
