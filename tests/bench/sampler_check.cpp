// The sampler's fast per-token loops (csrc/runtime/src/sampling_kernels.hpp) against their plain references on
// seeded random rows: normal and peaked logits, ties, NaN, +-inf, lengths that are not a multiple of the chunk.
// Built and run by tests/bench/test_decode_overhead.py; prints "ok <cases>" or the first mismatch (exit 1).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "sampling_kernels.hpp"

using namespace vrwkv::sampling;

namespace {

int failures = 0;
long cases = 0;

void expect(bool ok, const char* what, long id, double got, double want) {
  ++cases;
  if (!ok && failures++ < 5) std::fprintf(stderr, "mismatch %s (case %ld): fast %.17g, reference %.17g\n", what, id, got, want);
}

bool any_finite_reference(const std::vector<float>& x) {
  for (float v : x)
    if (std::isfinite(v)) return true;
  return false;
}

}  // namespace

int main() {
  std::mt19937_64 rng(20261202);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<double> unit;
  const size_t sizes[] = {1, 7, 255, 256, 257, 1000, 4096, 65536, 65529};
  long id = 0;
  for (size_t n : sizes)
    for (int kind = 0; kind < 9; ++kind, ++id) {
      std::vector<float> x(n);
      float scale = kind == 1 ? 8.0f : 1.0f;
      for (auto& v : x) v = normal(rng) * scale;
      size_t a = rng() % n, b = rng() % n;
      if (kind == 2) x[a] = x[b] = 50.0f;                                // a tie at the top: the lower id
      if (kind == 3) x[a] = NAN;                                         // NaN is the maximum
      if (kind == 4) { x[a] = NAN; x[b] = NAN; }
      if (kind == 5) x[a] = INFINITY;
      if (kind == 6) for (auto& v : x) v = -INFINITY;                    // no finite value
      if (kind == 7) { for (auto& v : x) v = std::round(v); x[a] = -0.0f; x[b] = 0.0f; }  // many ties, signed zeros
      if (kind == 8) { for (auto& v : x) v = (rng() % 3) ? -INFINITY : INFINITY; }        // only +-inf
      bool finite = false;
      size_t fast = argmax_fast(x.data(), n, &finite), ref = argmax_reference(x.data(), n);
      expect(fast == ref, "argmax", id, double(fast), double(ref));
      expect(finite == any_finite_reference(x), "any_finite", id, finite, any_finite_reference(x));
    }
  // top-p and top-k over probability rows as the sampler makes them (softmax in double, some zeroed by top-k)
  const double top_ps[] = {0.0, 0.05, 0.3, 0.85, 0.999999};
  for (size_t n : {size_t(1), size_t(300), size_t(4096), size_t(65536)})
    for (float scale : {0.5f, 3.0f, 12.0f})
      for (double top_p : top_ps)
        for (int top_k : {0, 1, 5, 40}) {
          ++id;
          std::vector<double> p(n);
          double mx = -INFINITY, sum = 0;
          std::vector<float> lg(n);
          for (auto& v : lg) { v = normal(rng) * scale; mx = std::max(mx, double(v)); }
          if (n > 2 && (id % 3) == 0) lg[1] = lg[0];                      // a tie in probability
          for (size_t i = 0; i < n; ++i) sum += (p[i] = std::exp(double(lg[i]) - mx));
          for (auto& v : p) v /= sum;
          std::vector<int32_t> order(n);
          std::vector<double> scratch;
          if (top_k > 0 && size_t(top_k) < n) {
            double kf = kth_largest_fast(p, scratch, size_t(top_k)), kr = kth_largest_reference(p, order, size_t(top_k));
            expect(kf == kr, "kth_largest", id, kf, kr);
            for (auto& v : p)
              if (v < kr) v = 0;
          }
          double total = 0;
          for (double v : p) total += v;
          std::vector<double> pf(p), pr(p);
          std::vector<int32_t> of(n), orf(n);
          top_p_fast(pf, of, top_p, total);
          top_p_reference(pr, orf, top_p, total);
          size_t first = n;
          for (size_t i = 0; i < n && first == n; ++i)
            if (pf[i] != pr[i]) first = i;
          expect(first == n, "top_p", id, first < n ? pf[first] : 0.0, first < n ? pr[first] : 0.0);
        }
  if (failures) {
    std::fprintf(stderr, "%d of %ld checks failed\n", failures, cases);
    return 1;
  }
  std::printf("ok %ld\n", cases);
  return 0;
}
