// The C API: thin wrappers that turn exceptions into error strings.
#include "vrwkv_runtime/vrwkv_runtime.h"

#include <cstdlib>
#include <cstring>

#include "vrwkv_runtime/runtime.hpp"

struct vrwkv_model { vrwkv::Model model; };
struct vrwkv_session { vrwkv::Session session; const vrwkv::Model* model; };

namespace {
void set_error(char** error, const char* msg) {
  if (!error) return;
  size_t n = std::strlen(msg);
  *error = static_cast<char*>(std::malloc(n + 1));
  if (*error) std::memcpy(*error, msg, n + 1);
}

template <class F, class R>
R guard(char** error, R fail, F&& f) {
  if (error) *error = nullptr;
  try {
    return f();
  } catch (const std::exception& e) {
    set_error(error, e.what());
  } catch (...) {
    set_error(error, "unknown error");
  }
  return fail;
}

vrwkv::SamplingParams to_cpp(const vrwkv_sampling_params* p) {
  vrwkv::SamplingParams q;
  if (!p) return q;
  q.temperature = p->temperature;
  q.top_p = p->top_p;
  q.top_k = p->top_k;
  q.presence_penalty = p->presence_penalty;
  q.frequency_penalty = p->frequency_penalty;
  q.penalty_decay = p->penalty_decay;
  q.max_new_tokens = p->max_new_tokens;
  q.stop_tokens.assign(p->stop_tokens, p->stop_tokens + (p->stop_tokens ? p->n_stop_tokens : 0));
  if (p->has_seed) q.seed = p->seed;
  return q;
}
}  // namespace

extern "C" {

void vrwkv_model_options_init(vrwkv_model_options* o) {
  vrwkv::ModelOptions d;
  *o = vrwkv_model_options{nullptr, nullptr, d.device_id, d.threads, d.spinning ? 1 : 0, d.max_prefill_tokens};
}

static const int32_t kDefaultStops[2] = {261, 0};

void vrwkv_sampling_params_init(vrwkv_sampling_params* p) {
  vrwkv::SamplingParams d;
  *p = vrwkv_sampling_params{d.temperature, d.top_p, d.top_k, d.presence_penalty, d.frequency_penalty,
                             d.penalty_decay, d.max_new_tokens, kDefaultStops, 2, 0, 0};
}

void vrwkv_sampling_params_greedy(vrwkv_sampling_params* p) {
  vrwkv_sampling_params_init(p);
  vrwkv::SamplingParams g = vrwkv::SamplingParams::greedy();
  p->temperature = g.temperature;
  p->top_p = g.top_p;
  p->frequency_penalty = g.frequency_penalty;
}

void vrwkv_free(void* p) { std::free(p); }

vrwkv_model* vrwkv_model_open(const char* directory, const vrwkv_model_options* options, char** error) {
  return guard(error, static_cast<vrwkv_model*>(nullptr), [&] {
    vrwkv::ModelOptions o;
    if (options) {
      if (options->ort_library) o.ort_library = options->ort_library;
      if (options->provider) o.provider = options->provider;
      o.device_id = options->device_id;
      o.threads = options->threads;
      o.spinning = options->spinning != 0;
      o.max_prefill_tokens = options->max_prefill_tokens;
    }
    if (!directory) throw vrwkv::Error(vrwkv::Error::Kind::Argument, "directory is NULL");
    return new vrwkv_model{vrwkv::Model::open(directory, o)};
  });
}

void vrwkv_model_close(vrwkv_model* m) { delete m; }
int vrwkv_model_vocab_size(const vrwkv_model* m) { return m->model.info().vocab_size; }
int vrwkv_model_is_visual(const vrwkv_model* m) { return m->model.info().visual ? 1 : 0; }

int vrwkv_tokenize(const vrwkv_model* m, const char* text, size_t len, int32_t* ids, size_t cap, size_t* n_ids,
                   char** error) {
  return guard(error, 1, [&] {
    std::vector<int32_t> v = m->model.tokenizer().encode(std::string_view(text, len));
    if (n_ids) *n_ids = v.size();
    if (v.size() > cap) return 2;
    std::copy(v.begin(), v.end(), ids);
    return 0;
  });
}

char* vrwkv_detokenize(const vrwkv_model* m, const int32_t* ids, size_t n, size_t* len, char** error) {
  return guard(error, static_cast<char*>(nullptr), [&] {
    std::string s = m->model.tokenizer().decode(std::vector<int32_t>(ids, ids + n));
    char* out = static_cast<char*>(std::malloc(s.size() + 1));
    if (!out) throw std::bad_alloc();
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = 0;
    if (len) *len = s.size();
    return out;
  });
}

vrwkv_session* vrwkv_session_new(vrwkv_model* m, char** error) {
  return guard(error, static_cast<vrwkv_session*>(nullptr),
               [&] { return new vrwkv_session{vrwkv::Session(m->model), &m->model}; });
}

void vrwkv_session_free(vrwkv_session* s) { delete s; }
void vrwkv_session_reset(vrwkv_session* s) { s->session.reset(); }

const float* vrwkv_prefill(vrwkv_session* s, const int32_t* ids, size_t n, char** error) {
  return guard(error, static_cast<const float*>(nullptr),
               [&] { return s->session.prefill(std::vector<int32_t>(ids, ids + n)); });
}

const float* vrwkv_decode(vrwkv_session* s, int32_t token, char** error) {
  return guard(error, static_cast<const float*>(nullptr), [&] { return s->session.decode(token); });
}

const float* vrwkv_prefill_image_file(vrwkv_session* s, const char* path, char** error) {
  return guard(error, static_cast<const float*>(nullptr),
               [&] { return s->session.prefill_image(vrwkv::load_image(path)); });
}

int vrwkv_generate(vrwkv_session* s, const vrwkv_sampling_params* p, vrwkv_token_callback cb, void* user,
                   int32_t* tokens, size_t cap, size_t* n_tokens, char** error) {
  return guard(error, 1, [&] {
    vrwkv::TokenCallback f;
    if (cb) f = [&](int32_t t, const std::string& text) { return cb(t, text.data(), text.size(), user) != 0; };
    vrwkv::GenerationResult r = vrwkv::generate(s->session, s->model->tokenizer(), to_cpp(p), f);
    size_t n = std::min(cap, r.tokens.size());
    if (tokens) std::copy(r.tokens.begin(), r.tokens.begin() + long(n), tokens);
    if (n_tokens) *n_tokens = r.tokens.size();
    return 0;
  });
}

}  // extern "C"
