// The per-token loops of the sampler over the whole vocabulary, each fast form beside the plain reference it
// must equal exactly (tests/bench/sampler_check.cpp compares them on random rows).  Not installed.
//
// Why fast forms: a 65,536-token row is scanned once per generated token, outside ONNX Runtime's Run; the plain
// greedy loop (one dependent compare per id) and the full stable sort behind top-p cost more than 2% of an int4
// 0.1B decode step (issue 12).  The fast forms do the same float comparisons and the same double additions in the
// same order, so they pick the same token bit for bit.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

namespace vrwkv::sampling {

// torch.argmax: the first maximum; a NaN counts as the maximum (the first NaN wins).
inline size_t argmax_reference(const float* x, size_t n) {
  size_t token = 0;
  for (size_t i = 1; i < n; ++i)
    if (!(x[i] <= x[token]) && !std::isnan(x[token])) token = i;
  return token;
}

// Chunks of 256 ids: each chunk's maximum in 4x4 independent lanes (GCC/Clang vector extensions, SSE or NEON:
// no loop-carried compare chain), the first chunk holding the overall maximum, then the first id in it.  NaN is
// looked for separately (a max skips it); -0.0 and +0.0 compare equal in both forms, so the first one wins.
// `any_finite` (optional) tells whether some value is finite.
inline size_t argmax_fast(const float* x, size_t n, bool* any_finite = nullptr) {
#if defined(__GNUC__)
  typedef float f4 __attribute__((vector_size(16)));
  typedef int i4 __attribute__((vector_size(16)));
  constexpr size_t kChunk = 256;
  const f4 neg = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, pos = -neg;
  f4 lo = pos;
  i4 nan = {0, 0, 0, 0};
  float best = -INFINITY;
  size_t best_chunk = 0, c = 0;
  for (; c + kChunk <= n; c += kChunk) {
    f4 h0 = neg, h1 = neg, h2 = neg, h3 = neg;
    for (size_t i = 0; i < kChunk; i += 16) {
      f4 v0, v1, v2, v3;
      std::memcpy(&v0, x + c + i, 16);
      std::memcpy(&v1, x + c + i + 4, 16);
      std::memcpy(&v2, x + c + i + 8, 16);
      std::memcpy(&v3, x + c + i + 12, 16);
      h0 = v0 > h0 ? v0 : h0;
      h1 = v1 > h1 ? v1 : h1;
      h2 = v2 > h2 ? v2 : h2;
      h3 = v3 > h3 ? v3 : h3;
      lo = v0 < lo ? v0 : lo;
      lo = v1 < lo ? v1 : lo;
      lo = v2 < lo ? v2 : lo;
      lo = v3 < lo ? v3 : lo;
      nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3);
    }
    h0 = h1 > h0 ? h1 : h0;
    h2 = h3 > h2 ? h3 : h2;
    h0 = h2 > h0 ? h2 : h0;
    float cmax = std::max(std::max(h0[0], h0[1]), std::max(h0[2], h0[3]));
    if (cmax > best) { best = cmax; best_chunk = c; }  // strict: the first chunk holding the maximum
  }
  float least = std::min(std::min(lo[0], lo[1]), std::min(lo[2], lo[3]));
  bool any_nan = nan[0] | nan[1] | nan[2] | nan[3];
  for (; c < n; ++c) {  // the tail
    any_nan |= x[c] != x[c];
    least = x[c] < least ? x[c] : least;
    if (x[c] > best) { best = x[c]; best_chunk = c; }
  }
#else
  float best = -INFINITY, least = INFINITY;
  size_t best_chunk = 0;
  bool any_nan = false;
  for (size_t j = 0; j < n; ++j) {
    any_nan |= x[j] != x[j];
    least = x[j] < least ? x[j] : least;
    if (x[j] > best) { best = x[j]; best_chunk = j; }
  }
#endif
  if (any_finite)  // some value is finite iff the largest or smallest non-NaN one is, or one lies between +-inf
    *any_finite = std::isfinite(best) || std::isfinite(least) || [&] {
      for (size_t j = 0; j < n; ++j)
        if (std::isfinite(x[j])) return true;
      return false;
    }();
  if (any_nan)
    for (size_t j = 0; j < n; ++j)
      if (x[j] != x[j]) return j;
  for (size_t j = best_chunk; j < n; ++j)
    if (x[j] == best) return j;
  return 0;  // every value is -inf: the first id, as the reference
}

// Top-p over probabilities in [0, 1]: keeps the smallest most-likely set whose mass reaches top_p * total (at
// least one token), zeroing the rest.  The order is descending probability, lower id first on ties (a stable
// sort of the ids); `before` sums in that order.
inline void top_p_reference(std::vector<double>& probs, std::vector<int32_t>& order, double top_p, double total) {
  const size_t V = probs.size();
  for (size_t i = 0; i < V; ++i) order[i] = int32_t(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return probs[size_t(a)] > probs[size_t(b)]; });
  double before = 0, limit = top_p * total;
  for (size_t r = 0; r < V; ++r) {
    double& pr = probs[size_t(order[r])];
    double here = pr;
    if (r > 0 && !(before < limit)) pr = 0;
    before += here;
  }
}

// The same, sorting only the ids with probability >= max / 2^10: they are exactly the head of the full order
// (everything above a threshold sorts before everything below it, and ids are gathered in increasing order, so
// the stable sort keeps the same tie order).  When their mass reaches the limit, every later id is zeroed as in
// the reference; otherwise (a flat distribution) the full sort runs.  Non-finite probabilities: the reference.
inline void top_p_fast(std::vector<double>& probs, std::vector<int32_t>& order, double top_p, double total) {
  const size_t V = probs.size();
  double pmax = 0;
  for (size_t i = 0; i < V; ++i) pmax = probs[i] > pmax ? probs[i] : pmax;
  double limit = top_p * total;
  if (!std::isfinite(total) || !std::isfinite(limit) || !(pmax > 0)) return top_p_reference(probs, order, top_p, total);
  const double threshold = std::ldexp(pmax, -10);
  size_t m = 0;
  for (size_t i = 0; i < V; ++i)
    if (probs[i] >= threshold) order[m++] = int32_t(i);
  std::stable_sort(order.begin(), order.begin() + long(m),
                   [&](int32_t a, int32_t b) { return probs[size_t(a)] > probs[size_t(b)]; });
  double before = 0;
  for (size_t r = 0; r < m; ++r) before += probs[size_t(order[r])];
  if (!(before >= limit)) return top_p_reference(probs, order, top_p, total);
  before = 0;
  for (size_t r = 0; r < m; ++r) {
    double& pr = probs[size_t(order[r])];
    double here = pr;
    if (r > 0 && !(before < limit)) pr = 0;
    before += here;
  }
  for (size_t i = 0; i < V; ++i)  // below the threshold: after the head in the order, past the limit
    if (probs[i] < threshold) probs[i] = 0;
}

// The k-th largest probability (1-based): the value at rank k-1 of the descending order, whoever holds it.
inline double kth_largest_reference(const std::vector<double>& probs, std::vector<int32_t>& order, size_t k) {
  for (size_t i = 0; i < probs.size(); ++i) order[i] = int32_t(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return probs[size_t(a)] > probs[size_t(b)]; });
  return probs[size_t(order[k - 1])];
}

inline double kth_largest_fast(const std::vector<double>& probs, std::vector<double>& scratch, size_t k) {
  scratch.assign(probs.begin(), probs.end());
  std::nth_element(scratch.begin(), scratch.begin() + long(k - 1), scratch.end(), std::greater<double>());
  return scratch[k - 1];
}

}  // namespace vrwkv::sampling
