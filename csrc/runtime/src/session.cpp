// A conversation's state: two preallocated state buffer sets (A, B) wrapped in OrtValues once, and IO bindings
// built once per graph and direction (A -> B, B -> A), so a decode step only writes the token id into a bound
// int64 and runs: no allocation and no binding per token.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "internal.hpp"

namespace vrwkv {

struct Session::Impl {
  Model::Impl& m;
  const OrtApi& api = ort::api();
  size_t V = 0;
  std::vector<float> buf[2];
  std::vector<OrtValue*> vals[2];  // per set: past/present tensors, layer by layer (shift_att, wkv, shift_ffn)
  std::vector<std::string> in_names, out_names;
  std::vector<float> logits;
  OrtValue* logits_val = nullptr;
  int64_t token = 0;
  OrtValue* token_val = nullptr;
  std::vector<int64_t> ids;                 // prefill block, capacity max_prefill_tokens
  std::vector<float> embeds;                // [1, tokens_per_image, C]
  OrtValue* embeds_val = nullptr;
  OrtIoBinding* vision = nullptr;
  int cur = 0;
  bool has_logits = false;
  Session::Stats stats;

  OrtStatus* timed_run(OrtSession* sess, OrtIoBinding* b) {
    auto t0 = std::chrono::steady_clock::now();
    OrtStatus* st = api.RunWithBinding(sess, nullptr, b);
    stats.run_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++stats.runs;
    return st;
  }

  explicit Impl(Model::Impl& model) : m(model) {
    const ModelInfo& c = m.info;
    V = size_t(c.vocab_size);
    size_t C = size_t(c.n_embd), H = size_t(c.n_head), N = size_t(c.head_size);
    size_t per_layer = 2 * C + H * N * N;
    const int64_t shape_shift[2] = {1, int64_t(C)};
    const int64_t shape_wkv[4] = {1, int64_t(H), int64_t(N), int64_t(N)};
    for (int s = 0; s < 2; ++s) {
      buf[s].assign(per_layer * size_t(c.n_layer), 0.0f);
      for (int l = 0; l < c.n_layer; ++l) {
        float* base = buf[s].data() + per_layer * size_t(l);
        vals[s].push_back(tensor(base, C, shape_shift, 2));
        vals[s].push_back(tensor(base + C, H * N * N, shape_wkv, 4));
        vals[s].push_back(tensor(base + C + H * N * N, C, shape_shift, 2));
      }
    }
    static const char* fields[3] = {"shift_att", "wkv", "shift_ffn"};
    for (int l = 0; l < c.n_layer; ++l)
      for (auto f : fields) {
        in_names.push_back("past_key_values." + std::to_string(l) + "." + f);
        out_names.push_back("present." + std::to_string(l) + "." + f);
      }
    logits.assign(V, 0.0f);
    const int64_t shape_logits[2] = {1, int64_t(V)};
    logits_val = tensor(logits.data(), V, shape_logits, 2);
    const int64_t shape_token[1] = {1};
    ort::check(api.CreateTensorWithDataAsOrtValue(m.lib->cpu, &token, sizeof token, shape_token, 1,
                                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, &token_val), "input_ids tensor");
    ids.resize(m.opts.max_prefill_tokens);
    if (c.visual) {
      embeds.assign(size_t(c.tokens_per_image) * C, 0.0f);
      const int64_t shape_emb[3] = {1, c.tokens_per_image, int64_t(C)};
      embeds_val = tensor(embeds.data(), embeds.size(), shape_emb, 3);
    }
  }

  OrtValue* tensor(float* data, size_t n, const int64_t* shape, size_t rank) {
    OrtValue* v = nullptr;
    ort::check(api.CreateTensorWithDataAsOrtValue(m.lib->cpu, data, n * sizeof(float), shape, rank,
                                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &v), "state tensor");
    return v;
  }

  ~Impl() {
    for (auto& pair : bind)
      for (auto* b : pair)
        if (b) api.ReleaseIoBinding(b);
    if (vision) api.ReleaseIoBinding(vision);
    for (auto& set : vals)
      for (auto* v : set) api.ReleaseValue(v);
    for (auto* v : {logits_val, token_val, embeds_val})
      if (v) api.ReleaseValue(v);
  }

  // Graphs that carry the state; their sessions and bindings are looked up once and kept in these arrays, so a
  // decode step does no map lookup, string building or allocation.
  enum Graph { kDecode, kPrefill, kImagePrefill };
  static constexpr const char* kNames[3] = {"decode", "prefill", "image_prefill"};
  OrtSession* sess[3] = {};
  OrtIoBinding* bind[3][2] = {};

  // The binding that runs graph g from state set `from` into the other set (per-call inputs bound by the caller).
  OrtIoBinding* binding(Graph g, int from) {
    if (bind[g][from]) return bind[g][from];
    if (!sess[g]) sess[g] = m.session(kNames[g]);
    OrtIoBinding* b = nullptr;
    ort::check(api.CreateIoBinding(sess[g], &b), "CreateIoBinding");
    bind[g][from] = b;
    for (size_t i = 0; i < in_names.size(); ++i) {
      ort::check(api.BindInput(b, in_names[i].c_str(), vals[from][i]), "BindInput " + in_names[i]);
      ort::check(api.BindOutput(b, out_names[i].c_str(), vals[1 - from][i]), "BindOutput " + out_names[i]);
    }
    ort::check(api.BindOutput(b, "logits", logits_val), "BindOutput logits");
    if (g == kDecode) ort::check(api.BindInput(b, "input_ids", token_val), "BindInput input_ids");
    if (g == kImagePrefill) ort::check(api.BindInput(b, "image_embeds", embeds_val), "BindInput image_embeds");
    return b;
  }

  void run(Graph g) {
    OrtIoBinding* b = binding(g, cur);
    if (OrtStatus* st = timed_run(sess[g], b)) ort::check(st, std::string(kNames[g]) + ".onnx");
    cur = 1 - cur;
    has_logits = true;
  }

  void check_id(int64_t id, size_t pos) const {
    if (id < 0 || id >= int64_t(V)) [[unlikely]]
      throw Error(Error::Kind::Argument, "token id " + std::to_string(id) + " at position " + std::to_string(pos) +
                                             " is out of range [0, " + std::to_string(V) + ")");
  }
};

Session::Session(const Model& model) : impl_(std::make_unique<Impl>(model.impl())) {}
Session::Session(Session&&) noexcept = default;
Session::~Session() = default;

void Session::reset() {
  std::fill(impl_->buf[impl_->cur].begin(), impl_->buf[impl_->cur].end(), 0.0f);
  impl_->has_logits = false;
}

const float* Session::prefill(const std::vector<int32_t>& ids) {
  Impl& s = *impl_;
  if (ids.empty()) throw Error(Error::Kind::Argument, "prefill needs at least one token");
  for (size_t k = 0; k < ids.size(); ++k) s.check_id(ids[k], k);
  for (size_t start = 0; start < ids.size(); start += s.ids.size()) {
    size_t n = std::min(s.ids.size(), ids.size() - start);
    std::copy(ids.begin() + long(start), ids.begin() + long(start + n), s.ids.begin());
    const int64_t shape[2] = {1, int64_t(n)};
    OrtValue* v = nullptr;  // one per block: the prefill graph's seq dimension changes with the block length
    ort::check(s.api.CreateTensorWithDataAsOrtValue(s.m.lib->cpu, s.ids.data(), n * sizeof(int64_t), shape, 2,
                                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, &v), "input_ids tensor");
    OrtIoBinding* b = s.binding(Impl::kPrefill, s.cur);
    OrtStatus* st = s.api.BindInput(b, "input_ids", v);
    if (!st) st = s.timed_run(s.sess[Impl::kPrefill], b);
    s.api.ReleaseValue(v);
    ort::check(st, "prefill.onnx");
    s.cur = 1 - s.cur;
    s.has_logits = true;
  }
  return s.logits.data();
}

const float* Session::decode(int32_t token) {
  Impl& s = *impl_;
  s.check_id(token, 0);
  s.token = token;
  s.run(Impl::kDecode);
  return s.logits.data();
}

std::vector<float> Session::encode_image(const std::vector<std::vector<float>>& pixels) {
  Impl& s = *impl_;
  const ModelInfo& c = s.m.info;
  if (!c.visual) throw Error(Error::Kind::Argument, c.directory + ": not a VisualRWKV export (no vision graph)");
  if (pixels.size() != c.pixel_inputs.size())
    throw Error(Error::Kind::Argument, "the vision graph takes " + std::to_string(c.pixel_inputs.size()) +
                                           " pixel input(s), got " + std::to_string(pixels.size()));
  OrtSession* sess = s.m.session("vision");
  if (!s.vision) {
    ort::check(s.api.CreateIoBinding(sess, &s.vision), "CreateIoBinding vision");
    ort::check(s.api.BindOutput(s.vision, "image_embeds", s.embeds_val), "BindOutput image_embeds");
  }
  std::vector<OrtValue*> in;
  OrtStatus* st = nullptr;
  for (size_t k = 0; k < pixels.size() && !st; ++k) {
    const PixelInput& p = c.pixel_inputs[k];
    size_t want = 3 * size_t(p.size) * size_t(p.size);
    if (pixels[k].size() != want) {
      for (auto* v : in) s.api.ReleaseValue(v);
      throw Error(Error::Kind::Argument, p.name + ": expected [3, " + std::to_string(p.size) + ", " +
                                             std::to_string(p.size) + "] = " + std::to_string(want) + " floats, got " +
                                             std::to_string(pixels[k].size()));
    }
    const int64_t shape[4] = {1, 3, p.size, p.size};
    OrtValue* v = nullptr;
    st = s.api.CreateTensorWithDataAsOrtValue(s.m.lib->cpu, const_cast<float*>(pixels[k].data()), want * sizeof(float),
                                              shape, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &v);
    if (!st) { in.push_back(v); st = s.api.BindInput(s.vision, p.name.c_str(), v); }
  }
  if (!st) st = s.timed_run(sess, s.vision);
  for (auto* v : in) s.api.ReleaseValue(v);
  ort::check(st, "vision.onnx");
  return s.embeds;
}

const float* Session::prefill_pixels(const std::vector<std::vector<float>>& pixels) {
  encode_image(pixels);  // writes the bound embeddings buffer
  Impl& s = *impl_;
  s.run(Impl::kImagePrefill);
  return s.logits.data();
}

const float* Session::prefill_image_embeds(const std::vector<float>& embeds) {
  Impl& s = *impl_;
  if (!s.m.info.visual) throw Error(Error::Kind::Argument, s.m.info.directory + ": not a VisualRWKV export");
  if (embeds.size() != s.embeds.size())
    throw Error(Error::Kind::Argument, "image embeddings must be [" + std::to_string(s.m.info.tokens_per_image) + ", " +
                                           std::to_string(s.m.info.n_embd) + "], got " + std::to_string(embeds.size()) +
                                           " floats");
  std::copy(embeds.begin(), embeds.end(), s.embeds.begin());
  s.run(Impl::kImagePrefill);
  return s.logits.data();
}

const float* Session::prefill_image(const Image& img) {
  std::vector<std::vector<float>> pixels;
  for (auto& p : impl_->m.info.pixel_inputs) pixels.push_back(preprocess(img, p));
  return prefill_pixels(pixels);
}

const float* Session::logits() const { return impl_->has_logits ? impl_->logits.data() : nullptr; }
size_t Session::vocab_size() const { return impl_->V; }
const Session::Stats& Session::stats() const { return impl_->stats; }

Session::Snapshot Session::snapshot() const {
  Snapshot snap;
  snap.state = impl_->buf[impl_->cur];
  if (impl_->has_logits) snap.logits = impl_->logits;
  return snap;
}

void Session::restore(const Snapshot& snap) {
  Impl& s = *impl_;
  if (snap.state.size() != s.buf[s.cur].size() || (!snap.logits.empty() && snap.logits.size() != s.V))
    throw Error(Error::Kind::Argument, "snapshot does not belong to this model (state of " +
                                           std::to_string(snap.state.size()) + " floats, expected " +
                                           std::to_string(s.buf[s.cur].size()) + ")");
  std::copy(snap.state.begin(), snap.state.end(), s.buf[s.cur].begin());
  s.has_logits = !snap.logits.empty();
  if (s.has_logits) std::copy(snap.logits.begin(), snap.logits.end(), s.logits.begin());
}

}  // namespace vrwkv
