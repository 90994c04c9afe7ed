// Embedding vrwkv_runtime: open an export, prefill a prompt, stream a greedy answer.
#include <cstdio>
#include <vrwkv_runtime/runtime.hpp>

int main(int argc, char** argv) {
  if (argc < 3) return std::fprintf(stderr, "usage: %s EXPORT_DIR PROMPT\n", argv[0]), 2;
  try {
    vrwkv::Model model = vrwkv::Model::open(argv[1]);  // ORT from $VRWKV_ORT_LIBRARY or the default search
    vrwkv::Session session(model);                      // state buffers allocated and bound once
    session.prefill(model.tokenizer().encode(argv[2]));
    vrwkv::SamplingParams params = vrwkv::SamplingParams::greedy();
    params.max_new_tokens = 32;
    vrwkv::generate(session, model.tokenizer(), params, [](int32_t, const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      return true;  // false stops early
    });
    std::puts("");
  } catch (const vrwkv::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
