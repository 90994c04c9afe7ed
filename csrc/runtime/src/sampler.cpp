// Sampling as vrwkv_edge.generation.Sampler (penalties, greedy / softmax, top-k, top-p, temperature) and the
// generation loop of generate_stream.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "sampling_kernels.hpp"
#include "vrwkv_runtime/runtime.hpp"

namespace vrwkv {

SamplingParams SamplingParams::greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.frequency_penalty = 0.0f;
  return p;
}

void SamplingParams::validate() const {
  auto bad = [](const char* name, double v) {
    throw Error(Error::Kind::Argument, std::string("SamplingParams.") + name + "=" + std::to_string(v) + " is out of range");
  };
  for (auto [name, v] : {std::pair<const char*, float>{"temperature", temperature}, {"top_p", top_p},
                         {"presence_penalty", presence_penalty}, {"frequency_penalty", frequency_penalty},
                         {"penalty_decay", penalty_decay}})
    if (!std::isfinite(v)) bad(name, double(v));
  if (temperature < 0) bad("temperature", temperature);
  if (top_p < 0 || top_p > 1) bad("top_p", top_p);
  if (top_k < 0) bad("top_k", top_k);
  if (penalty_decay < 0 || penalty_decay > 1) bad("penalty_decay", penalty_decay);
  if (max_new_tokens < 0) bad("max_new_tokens", max_new_tokens);
}

Sampler::Sampler(const SamplingParams& params, size_t vocab_size) : p_(params) {
  p_.validate();
  counts_.assign(vocab_size, 0.0f);
  work_.resize(vocab_size);
  probs_.resize(vocab_size);
  order_.resize(vocab_size);
  seed_ = p_.seed ? *p_.seed : (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
  rng_.seed(seed_);
}

void Sampler::reset() {
  std::fill(counts_.begin(), counts_.end(), 0.0f);
  rng_.seed(seed_);
}

int32_t Sampler::operator()(const float* logits) {
  const size_t V = counts_.size();
  // Without penalties the row is used as it is (x - 0.0f == x for every float, NaN and -0.0 included) and the
  // counts, which only feed the penalties, are not kept: a greedy step is one pass over the logits.
  const float pres = p_.presence_penalty, freq = p_.frequency_penalty;
  const bool penalized = pres != 0.0f || freq != 0.0f;
  const float* work = logits;
  bool any_finite = false;
  size_t token = 0;
  if (!penalized && p_.temperature == 0.0f) {  // greedy: the finiteness check comes with the argmax
    token = sampling::argmax_fast(logits, V, &any_finite);
  } else if (penalized) {
    // float32 arithmetic in torch's order: logits - (presence * seen + frequency * counts)
    for (size_t i = 0; i < V; ++i) {
      float pen = pres * (counts_[i] > 0 ? 1.0f : 0.0f) + freq * counts_[i];
      work_[i] = logits[i] - pen;
      any_finite |= std::isfinite(logits[i]);
    }
    work = work_.data();
  } else {
    for (size_t i = 0; i < V; ++i) any_finite |= std::isfinite(logits[i]);
  }
  if (!any_finite) throw Error(Error::Kind::Input, "the model produced logits with no finite value (NaN/inf): cannot sample");
  if (p_.temperature == 0.0f) {
    if (penalized) token = sampling::argmax_fast(work, V);
  } else {
    double mx = -INFINITY;
    for (size_t i = 0; i < V; ++i) mx = std::max(mx, double(work[i]));
    double sum = 0;
    for (size_t i = 0; i < V; ++i) sum += (probs_[i] = std::exp(double(work[i]) - mx));
    for (size_t i = 0; i < V; ++i) probs_[i] /= sum;
    const bool finite = std::isfinite(sum);  // else NaN probabilities: the plain forms, whatever they make of it
    if (p_.top_k > 0 && size_t(p_.top_k) < V) {  // keep probabilities >= the k-th largest (ties kept)
      double kth = finite ? sampling::kth_largest_fast(probs_, scratch_, size_t(p_.top_k))
                          : sampling::kth_largest_reference(probs_, order_, size_t(p_.top_k));
      for (size_t i = 0; i < V; ++i)
        if (probs_[i] < kth) probs_[i] = 0;
    }
    if (p_.top_p < 1.0f) {  // the smallest most-likely set whose mass reaches top_p (at least one token)
      double total = 0;
      for (size_t i = 0; i < V; ++i) total += probs_[i];
      if (finite) sampling::top_p_fast(probs_, order_, double(p_.top_p), total);
      else sampling::top_p_reference(probs_, order_, double(p_.top_p), total);
    }
    if (p_.temperature != 1.0f) {
      double inv = 1.0 / double(p_.temperature);
      for (size_t i = 0; i < V; ++i)
        if (probs_[i] > 0) probs_[i] = std::pow(probs_[i], inv);
    }
    double total = 0;
    for (size_t i = 0; i < V; ++i) total += probs_[i];
    // One 53-bit uniform draw in [0, 1), inverse CDF over ids in increasing order.
    double u = double(rng_() >> 11) * (1.0 / 9007199254740992.0) * total, acc = 0;
    token = V;
    for (size_t i = 0; i < V; ++i) {
      if (probs_[i] <= 0) continue;
      acc += probs_[i];
      token = i;
      if (u < acc) break;
    }
  }
  if (penalized) {
    if (p_.penalty_decay != 1.0f)
      for (auto& c : counts_) c *= p_.penalty_decay;
    counts_[token] += 1.0f;
  }
  return int32_t(token);
}

GenerationResult generate(Session& session, const Tokenizer& tok, const SamplingParams& params,
                          const TokenCallback& on_token, const LogitsCallback& on_logits) {
  params.validate();
  const float* logits = session.logits();
  if (!logits) throw Error(Error::Kind::Argument, "generate: nothing was prefilled (the session has no logits)");
  GenerationResult r;
  r.finish_reason = "length";
  r.tokens.reserve(size_t(params.max_new_tokens));
  Sampler sample(params, session.vocab_size());
  TextStreamer streamer(tok);
  auto t0 = std::chrono::steady_clock::now();
  for (int n = 0; n < params.max_new_tokens; ++n) {
    if (on_logits) on_logits(logits, session.vocab_size());
    int32_t t = sample(logits);
    if (std::find(params.stop_tokens.begin(), params.stop_tokens.end(), t) != params.stop_tokens.end()) {
      r.finish_reason = "stop";
      break;
    }
    r.tokens.push_back(t);
    bool go = on_token ? on_token(t, streamer.push(t)) : true;
    logits = session.decode(t);  // fed even when it is the last one, so the state follows the text
    if (!go) {
      r.finish_reason = "callback";
      break;
    }
  }
  if (on_token) {
    const std::string& rest = streamer.flush();
    if (!rest.empty()) on_token(-1, rest);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace vrwkv
