// vrwkv-chat: streamed chat / one-shot answers on a vrwkv_edge export (text models and VisualRWKV).
//
//   vrwkv-chat --model DIR [--image PATH]... [--prompt TEXT] [--greedy] [--bench] [--dump-logits FILE]
//
// Without --prompt it reads one question per line from stdin (a chat: each answer is closed with "\n\n" and
// the next question continues from the state; the line "/reset" starts a new conversation).  Exit codes: 0 ok, 2 bad input (arguments, export, image, prompt),
// 1 ONNX Runtime failure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <unistd.h>
#include <iostream>
#include <string>
#include <vector>

#include "vrwkv_runtime/runtime.hpp"

namespace {

const char* kUsage =
    "usage: vrwkv-chat --model DIR [--image PATH]... [--prompt TEXT] [options]\n"
    "  --model DIR            export directory (vrwkv-edge export)\n"
    "  --image PATH           JPEG/PNG for a VisualRWKV export (repeatable for v7)\n"
    "  --prompt TEXT          one-shot question; without it, questions are read line by line from stdin\n"
    "                         (\"/reset\" starts a new conversation; the image-state cache keeps the image prefill)\n"
    "  --raw                  feed the prompt as is (default for byte-level models) instead of the chat template\n"
    "  --image-position POS   VisualRWKV v6: first, middle or last (default: the export's)\n"
    "  --ort-lib PATH         libonnxruntime.so.* to load (default: $VRWKV_ORT_LIBRARY, then the search in README)\n"
    "  --provider NAME        cpu (default), cuda or tensorrt\n"
    "  --device-id N          GPU index for cuda/tensorrt\n"
    "  --trt-cache DIR        TensorRT engine cache directory\n"
    "  --threads N            ONNX Runtime intra-op threads (0: its default)\n"
    "  --no-spin              ONNX Runtime worker threads do not busy-wait between runs\n"
    "  --max-prefill-tokens N prompt tokens per prefill run (default 1024)\n"
    "  --greedy               temperature 0, top-p 1, no penalties (the evaluation setting)\n"
    "  --temperature T --top-p P --top-k K --presence-penalty X --frequency-penalty X --penalty-decay D\n"
    "  --max-new-tokens N --seed S --stop-token ID (repeatable) --no-stop\n"
    "  --bench                print TTFT and tokens/s on stderr\n"
    "  --dump-logits FILE     float32 logits rows [steps, vocab]: the row each token was sampled from\n"
    "  --json FILE            prompt ids, generated ids and timings as JSON\n"
    "  --dump-pixels FILE     float32 tower inputs of each image (pixel inputs in metadata order), then exit\n";

struct Args {
  std::string model, prompt, ort_lib, provider = "cpu", trt_cache, dump_logits, json, dump_pixels, image_position;
  std::vector<std::string> images;
  bool has_prompt = false, raw = false, bench = false, spin = true;
  int threads = 0, device_id = 0;
  size_t max_prefill = 1024;
  vrwkv::SamplingParams sp;
  bool stops_given = false, no_stop = false;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double number(const std::string& flag, const char* v) {
  char* end = nullptr;
  double d = std::strtod(v, &end);
  if (!*v || *end) throw UsageError(flag + ": expected a number, got '" + v + "'");
  return d;
}

long integer(const std::string& flag, const char* v) {
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (!*v || *end) throw UsageError(flag + ": expected an integer, got '" + v + "'");
  return n;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) throw UsageError(f + " needs a value");
      return argv[++i];
    };
    if (f == "--help" || f == "-h") { std::fputs(kUsage, stdout); std::exit(0); }
    else if (f == "--model") a.model = val();
    else if (f == "--image") a.images.push_back(val());
    else if (f == "--prompt") { a.prompt = val(); a.has_prompt = true; }
    else if (f == "--raw") a.raw = true;
    else if (f == "--image-position") a.image_position = val();
    else if (f == "--ort-lib") a.ort_lib = val();
    else if (f == "--provider") a.provider = val();
    else if (f == "--device-id") a.device_id = int(integer(f, val()));
    else if (f == "--trt-cache") a.trt_cache = val();
    else if (f == "--threads") a.threads = int(integer(f, val()));
    else if (f == "--no-spin") a.spin = false;
    else if (f == "--max-prefill-tokens") {
      long n = integer(f, val());
      if (n < 1) throw UsageError("--max-prefill-tokens must be >= 1");
      a.max_prefill = size_t(n);
    } else if (f == "--greedy") {
      a.sp.temperature = 0; a.sp.top_p = 1; a.sp.frequency_penalty = 0; a.sp.presence_penalty = 0;
    } else if (f == "--temperature") a.sp.temperature = float(number(f, val()));
    else if (f == "--top-p") a.sp.top_p = float(number(f, val()));
    else if (f == "--top-k") a.sp.top_k = int(integer(f, val()));
    else if (f == "--presence-penalty") a.sp.presence_penalty = float(number(f, val()));
    else if (f == "--frequency-penalty") a.sp.frequency_penalty = float(number(f, val()));
    else if (f == "--penalty-decay") a.sp.penalty_decay = float(number(f, val()));
    else if (f == "--max-new-tokens") a.sp.max_new_tokens = int(integer(f, val()));
    else if (f == "--seed") a.sp.seed = uint64_t(integer(f, val()));
    else if (f == "--stop-token") {
      if (!a.stops_given) a.sp.stop_tokens.clear();
      a.stops_given = true;
      a.sp.stop_tokens.push_back(int32_t(integer(f, val())));
    } else if (f == "--no-stop") a.no_stop = true;
    else if (f == "--bench") a.bench = true;
    else if (f == "--dump-logits") a.dump_logits = val();
    else if (f == "--json") a.json = val();
    else if (f == "--dump-pixels") a.dump_pixels = val();
    else throw UsageError("unknown argument '" + f + "' (see --help)");
  }
  if (a.model.empty()) throw UsageError("--model DIR is required");
  if (a.no_stop) a.sp.stop_tokens.clear();
  try {
    a.sp.validate();
  } catch (const vrwkv::Error& e) {
    throw UsageError(e.what());
  }
  return a;
}

std::string ids_json(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

using Clock = std::chrono::steady_clock;
double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

int run(const Args& a) {
  vrwkv::ModelOptions mo;
  mo.ort_library = a.ort_lib;
  mo.provider = a.provider;
  mo.device_id = a.device_id;
  mo.threads = a.threads;
  mo.spinning = a.spin;
  mo.max_prefill_tokens = a.max_prefill;
  mo.trt_cache_dir = a.trt_cache;
  std::vector<vrwkv::Image> images;
  for (auto& p : a.images) images.push_back(vrwkv::load_image(p));  // bad images fail before any model work
  auto t_open = Clock::now();
  vrwkv::Model model = vrwkv::Model::open(a.model, mo);
  const vrwkv::ModelInfo& info = model.info();
  const vrwkv::Tokenizer& tok = model.tokenizer();
  if (!a.images.empty() && !info.visual)
    throw vrwkv::Error(vrwkv::Error::Kind::Argument, "--image: " + a.model + " is not a VisualRWKV export (no vision graph)");
  if (info.visual && info.visual_version == "v6" && a.images.size() > 1)
    throw vrwkv::Error(vrwkv::Error::Kind::Argument, "--image: VisualRWKV v6 takes one image per conversation");
  double open_s = secs(t_open, Clock::now());
  if (!a.dump_pixels.empty()) {
    std::ofstream px(a.dump_pixels, std::ios::binary);
    for (auto& img : images)
      for (auto& spec : info.pixel_inputs) {
        std::vector<float> t = vrwkv::preprocess(img, spec);
        px.write(reinterpret_cast<const char*>(t.data()), std::streamsize(t.size() * sizeof(float)));
      }
    if (!px) throw vrwkv::Error(vrwkv::Error::Kind::Argument, "--dump-pixels: cannot write " + a.dump_pixels);
    return 0;
  }
  bool raw = a.raw || (tok.byte_level() && !info.visual);

  vrwkv::Session session(model);
  vrwkv::ImageStateCache cache(4);
  std::FILE* dump = nullptr;
  if (!a.dump_logits.empty() && !(dump = std::fopen(a.dump_logits.c_str(), "wb")))
    throw vrwkv::Error(vrwkv::Error::Kind::Argument, "--dump-logits: cannot write " + a.dump_logits);
  std::string json_turns;
  bool first_turn = true;

  auto answer = [&](const std::string& question) {
    if (question.empty()) throw vrwkv::Error(vrwkv::Error::Kind::Input, "the prompt is empty: nothing to condition on");
    auto t0 = Clock::now();
    std::vector<int32_t> prompt_ids;
    if (raw) {
      prompt_ids = tok.encode(question);
      session.prefill(prompt_ids);
    } else if (first_turn) {
      std::vector<vrwkv::PromptItem> items =
          info.visual ? vrwkv::question_prompt(tok, question, info.visual_version,
                                               a.image_position.empty() ? info.image_position : a.image_position,
                                               int(images.size()))
                      : std::vector<vrwkv::PromptItem>{{vrwkv::followup_ids(tok, question), -1}};
      for (auto& it : items) prompt_ids.insert(prompt_ids.end(), it.ids.begin(), it.ids.end());
      vrwkv::prefill_prompt(session, items, images, &cache);
    } else {
      prompt_ids = vrwkv::followup_ids(tok, question);
      session.prefill(prompt_ids);
    }
    auto t_prefill = Clock::now();
    double ttft = -1;
    auto on_token = [&](int32_t t, const std::string& text) {
      if (t >= 0 && ttft < 0) ttft = secs(t0, Clock::now());
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return true;
    };
    const vrwkv::Session::Stats before = session.stats();
    vrwkv::LogitsCallback on_logits;
    if (dump) on_logits = [&](const float* lg, size_t n) { std::fwrite(lg, sizeof(float), n, dump); };
    vrwkv::GenerationResult r = vrwkv::generate(session, tok, a.sp, on_token, on_logits);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    double prefill_s = secs(t0, t_prefill);
    if (a.bench) {
      // Decode steps = tokens fed; the part of a step outside ONNX Runtime's Run is sampling and streaming.
      size_t steps = session.stats().runs - before.runs;
      double run_ms = (session.stats().run_seconds - before.run_seconds) * 1e3;
      double n = double(std::max<size_t>(r.tokens.size(), 1));
      std::fprintf(stderr,
                   "[bench] prompt %zu tokens%s, prefill %.1f ms, TTFT %.1f ms, %zu new tokens in %.1f ms: "
                   "%.2f tokens/s (%.3f ms/token; ORT Run %.3f ms/step over %zu steps, outside Run %.3f ms/token); "
                   "open %.0f ms; ORT %s\n",
                   prompt_ids.size(), images.empty() || !first_turn ? "" : " + images", prefill_s * 1e3,
                   (ttft < 0 ? prefill_s : ttft) * 1e3, r.tokens.size(), r.seconds * 1e3,
                   r.tokens.empty() ? 0.0 : double(r.tokens.size()) / r.seconds, r.seconds * 1e3 / n,
                   steps ? run_ms / double(steps) : 0.0, steps, (r.seconds * 1e3 - run_ms) / n, open_s * 1e3,
                   info.ort_version.c_str());
    }
    char timing[200];
    std::snprintf(timing, sizeof timing,
                  "\"prefill_s\": %.6f, \"ttft_s\": %.6f, \"decode_s\": %.6f, \"decode_run_s\": %.6f", prefill_s,
                  ttft < 0 ? prefill_s : ttft, r.seconds, session.stats().run_seconds - before.run_seconds);
    json_turns += std::string(json_turns.empty() ? "" : ", ") + "{\"prompt_ids\": " + ids_json(prompt_ids) +
                  ", \"tokens\": " + ids_json(r.tokens) + ", \"finish_reason\": \"" + r.finish_reason + "\", " + timing + "}";
    // Close the assistant turn with "\n\n" (261) as in training, so the next question can follow (ChatSession
    // feeds it whatever ended the answer; a stop token itself was not fed).
    if (!raw) session.decode(261);
    first_turn = false;
  };

  if (a.has_prompt) {
    answer(a.prompt);
  } else {
    std::string line;
    if (isatty(0)) std::fprintf(stderr, "%s: %s %s, ask away (Ctrl-D to quit)\n", info.directory.c_str(),
                                info.version.c_str(), info.visual ? "VisualRWKV" : "LM");
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      if (line == "/reset") {  // a new conversation (about the same images: the image-state cache can hit)
        session.reset();
        first_turn = true;
        continue;
      }
      answer(line);
    }
  }
  if (dump) std::fclose(dump);
  if (!a.json.empty()) {
    std::ofstream j(a.json);
    j << "{\"ort_version\": \"" << info.ort_version << "\", \"byte_level\": " << (tok.byte_level() ? "true" : "false")
      << ", \"image_cache\": {\"hits\": " << cache.hits << ", \"misses\": " << cache.misses << "}, \"turns\": ["
      << json_turns << "]}\n";
    if (!j) throw vrwkv::Error(vrwkv::Error::Kind::Argument, "--json: cannot write " + a.json);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const vrwkv::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.kind() == vrwkv::Error::Kind::OnnxRuntime ? 1 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
