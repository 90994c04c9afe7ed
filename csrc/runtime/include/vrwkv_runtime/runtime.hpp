// vrwkv_runtime: C++ API of the vrwkv_edge ONNX runtime (RWKV-6/7 language models and VisualRWKV exports).
//
//   vrwkv::Model model = vrwkv::Model::open("out/rwkv7-0.1b");         // metadata checked, sessions created
//   vrwkv::Session s(model);                                            // state buffers allocated and bound
//   s.prefill(vrwkv::followup_ids(model.tokenizer(), "hi"));            // "User: hi\n\n" + "Assistant:"
//   vrwkv::generate(s, model.tokenizer(), vrwkv::SamplingParams::greedy(), [](int32_t, const std::string& text) {
//     std::fputs(text.c_str(), stdout); return true; });
//
// ONNX Runtime is loaded at run time (dlopen + OrtGetApiBase, C API version VRWKV_ORT_API_VERSION), so one
// binary runs against any ONNX Runtime release >= 1.11 (see README.md, "ONNX Runtime").
// Every failure throws vrwkv::Error whose message names the file, key, tensor or argument at fault.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace vrwkv {

// The oldest ONNX Runtime C API this library uses (CUDA/TensorRT provider options V2 appeared in 1.11).
constexpr uint32_t kOrtApiVersion = 11;

class Error : public std::runtime_error {
 public:
  enum class Kind { Artefact, OnnxRuntime, Argument, Image, Input };
  Error(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// ---- tokenizer ---------------------------------------------------------------------------------------------
// World tokenizer (greedy longest match over UTF-8 bytes, vocabulary file "<id> <python literal> <length>")
// or the byte-level tokenizer of 256-row models (id = byte value), as vrwkv_edge.tokenizer.
class Tokenizer {
 public:
  static std::unique_ptr<Tokenizer> world(const std::string& vocab_path);
  static std::unique_ptr<Tokenizer> bytes();
  ~Tokenizer();

  // Strict UTF-8 text (throws Error::Kind::Input naming the byte offset of the first invalid sequence).
  std::vector<int32_t> encode(std::string_view utf8) const;
  // Any bytes.
  std::vector<int32_t> encode_bytes(std::string_view data) const;
  // Concatenated token bytes (id 0 = end of text -> nothing); throws for an id with no token.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The bytes of one token, or false when the id has none (never throws).
  bool token_bytes(int32_t id, std::string_view& out) const;
  bool byte_level() const;
  size_t num_tokens() const;  // ids that decode (65530 for the World vocabulary, 256 byte-level)

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Offset of the first invalid UTF-8 sequence (overlong forms, surrogates and > U+10FFFF are invalid), or npos.
size_t invalid_utf8_offset(std::string_view s);

// Incremental decoding that only emits complete UTF-8 characters (vrwkv_edge.generation.TextStreamer).
class TextStreamer {
 public:
  explicit TextStreamer(const Tokenizer& tok) : tok_(tok) {}
  // The text completed by this token (a buffer reused by the next call: no allocation once warm).
  const std::string& push(int32_t token);
  const std::string& flush();  // whatever is held back, invalid bytes replaced by U+FFFD

 private:
  const Tokenizer& tok_;
  std::string pending_, out_;
};

// ---- model -------------------------------------------------------------------------------------------------
struct ModelOptions {
  std::string ort_library;   // path of libonnxruntime.so*; empty: $VRWKV_ORT_LIBRARY, then the search in README
  std::string provider = "cpu";  // "cpu", "cuda" or "tensorrt" (GPU ones fall back to CPU for unsupported nodes)
  int device_id = 0;
  int threads = 0;           // intra-op threads; 0 = ONNX Runtime's default (all cores)
  bool spinning = true;      // false: worker threads do not busy-wait between runs (cores shared with others)
  size_t max_prefill_tokens = 1024;  // prompt tokens per prefill-graph run (exact: the state carries over)
  std::string trt_cache_dir;  // TensorRT engine cache (empty: none)
  // libvrwkv_ort_ops.so for custom-flavour exports (export --wkv custom); empty: $VRWKV_ORT_OPS_LIBRARY, then
  // beside the vrwkv_runtime library.  Unused by standard-flavour exports.
  std::string op_library;
};

struct PixelInput {            // one input of vision.onnx (metadata visual.pixel_inputs)
  std::string name, transform, mode;  // mode "clip" (shortest side + center crop) or "resize" (square)
  int size = 0, crop = 0;
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
};

struct ModelInfo {
  std::string directory, version, dtype, quantize, tokenizer_kind, tokenizer_file, prompt_template, exporter_version;
  int n_layer = 0, n_embd = 0, n_head = 0, head_size = 0, vocab_size = 0, dim_ffn = 0, chunk_size = 0, opset = 0;
  bool visual = false;
  std::string visual_version, image_position, tower, scan;  // VisualRWKV exports only
  int tokens_per_image = 0;
  std::vector<PixelInput> pixel_inputs;
  std::string ort_library;   // the ONNX Runtime library actually loaded
  std::string ort_version;
  std::string wkv_flavour = "standard";  // metadata wkv.flavour: "standard", or "custom" (vrwkv domain nodes)
  int wkv_op_version = 0;                // custom flavour: the vrwkv op version the graphs need
  std::string op_library;                // custom flavour: the op library registered
};

class Session;

class Model {
 public:
  // Opens an export directory: metadata.json checked as strictly as the Python runtime (structure, sizes, files
  // present with their recorded sizes, each graph's embedded metadata equal to metadata.json, graph inputs and
  // outputs as promised); decode and prefill sessions created, visual ones on first use.
  static Model open(const std::string& directory, const ModelOptions& options = {});
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelInfo& info() const;
  const Tokenizer& tokenizer() const;
  size_t state_floats() const;  // n_layer * (2 C + H N N)

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- images ------------------------------------------------------------------------------------------------
struct Image {                 // 8-bit RGB, row-major HxWx3
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// Decodes a JPEG or PNG file (libjpeg-turbo / libpng) into RGB: EXIF orientation applied, grey/palette converted,
// alpha composited over white and 16-bit samples scaled, as vrwkv_edge's image loader does.
Image load_image(const std::string& path);
// One pixel input's tensor [3, S, S] float32: the resize (Pillow's bicubic, bit-exact), crop and normalisation
// of vrwkv_edge.visualrwkv.preprocess.ImageTransform.
std::vector<float> preprocess(const Image& img, const PixelInput& spec);
// Pillow Image.resize(size, BICUBIC) on 8-bit RGB (exposed for tests).
Image resize_bicubic(const Image& img, int width, int height);
// 64-bit content hash of an RGB image (size and pixels), the image-state cache key.
uint64_t image_hash(const Image& img);

// ---- running -----------------------------------------------------------------------------------------------
// One conversation (batch 1): the recurrent state as two preallocated buffer sets bound once to IO bindings
// of the decode graph (ping-pong), the logits buffer, the token input.  decode() allocates nothing.
class Session {
 public:
  explicit Session(const Model& model);
  Session(Session&&) noexcept;
  ~Session();

  void reset();  // zero state, no logits
  // Runs tokens through the prefill graph in blocks of max_prefill_tokens; returns the last token's logits.
  const float* prefill(const std::vector<int32_t>& ids);
  const float* decode(int32_t token);
  // VisualRWKV: pixels through vision.onnx, then the exact layer-wise image scan (image_prefill.onnx).
  const float* prefill_image(const Image& img);
  // The same from precomputed tower inputs (one [3, S, S] tensor per pixel input, in metadata order).
  const float* prefill_pixels(const std::vector<std::vector<float>>& pixels);
  const float* prefill_image_embeds(const std::vector<float>& embeds);  // [tokens_per_image, C]
  std::vector<float> encode_image(const std::vector<std::vector<float>>& pixels);  // vision graph only

  const float* logits() const;  // nullptr before anything ran
  size_t vocab_size() const;

  struct Stats {               // time inside ONNX Runtime's Run (the rest of a step is this library's overhead)
    double run_seconds = 0;
    size_t runs = 0;
  };
  const Stats& stats() const;

  struct Snapshot {            // a copy of the state and logits (image-state cache entries, chat branches)
    std::vector<float> state, logits;
  };
  Snapshot snapshot() const;
  void restore(const Snapshot& s);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// ---- sampling and generation -------------------------------------------------------------------------------
// The Python runtime's SamplingParams (vrwkv_edge.generation), same defaults.
struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 0.3f;
  int top_k = 0;             // 0 = off
  float presence_penalty = 0.0f;
  float frequency_penalty = 1.0f;
  float penalty_decay = 0.996f;
  int max_new_tokens = 256;
  std::vector<int32_t> stop_tokens = {261, 0};
  std::optional<uint64_t> seed;  // none: seeded from std::random_device

  static SamplingParams greedy();  // temperature 0, top_p 1, no penalties
  void validate() const;           // throws Error::Kind::Argument naming the field
};

// Penalties (presence + count * frequency, counts decaying by penalty_decay per step, float32 as in torch), then
// greedy argmax (lowest id on ties) or softmax -> top-k -> top-p -> probs^(1/T) -> one draw.
// Randomness: a std::mt19937_64 seeded with `seed`; one 53-bit uniform draw per sampled token, inverse CDF over
// the token ids in increasing order.  Same seed + same logits -> same tokens on every platform; NOT the same
// draws as torch.multinomial (greedy is identical to the Python runtime).
class Sampler {
 public:
  Sampler(const SamplingParams& params, size_t vocab_size);
  int32_t operator()(const float* logits);
  void reset();  // counts to zero, RNG reseeded

 private:
  SamplingParams p_;
  std::vector<float> counts_, work_;
  std::vector<double> probs_, scratch_;  // scratch_: top-k's partial selection
  std::vector<int32_t> order_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids, stop token excluded
  std::string finish_reason;    // "stop", "length" or "callback"
  double seconds = 0;           // decode loop time
};

// Called with each generated token and the text it completes (possibly empty while a UTF-8 character is split;
// at the end once more with token -1 and any held-back bytes, if there are some); return false to stop.
using TokenCallback = std::function<bool(int32_t token, const std::string& text)>;

// Sees every logits row [vocab] a token is sampled from (e.g. to dump them).
using LogitsCallback = std::function<void(const float* logits, size_t vocab)>;

// Samples from the session's current logits until a stop token (not fed) or max_new_tokens; every emitted token
// is fed to the model, as vrwkv_edge.generation.generate_stream does.
GenerationResult generate(Session& session, const Tokenizer& tok, const SamplingParams& params,
                          const TokenCallback& on_token = {}, const LogitsCallback& on_logits = {});

// ---- prompts -----------------------------------------------------------------------------------------------
// A prompt as token chunks and image slots (vrwkv_edge.visualrwkv.prompts.VisualPrompt).
struct PromptItem {
  std::vector<int32_t> ids;  // text chunk (empty when image >= 0)
  int image = -1;            // image slot index
};

// The VisualRWKV evaluation/chat prompt for one question about `num_images` images (question_prompt): v6 with
// image_position first|middle|last, v7 image-first; each turn tokenized on its own.
std::vector<PromptItem> question_prompt(const Tokenizer& tok, const std::string& question, const std::string& version,
                                        const std::string& image_position, int num_images);
// A later chat turn: "User: {Q}\n\n" + "Assistant:", each turn tokenized on its own (followup_ids).
std::vector<int32_t> followup_ids(const Tokenizer& tok, const std::string& question);

// Prefills prompt items with images (image i = images[slot]).  `cache` (optional) keeps the state right after
// each image keyed by (every item before it, image content hash; a 64-bit FNV-1a chain) and resumes from the
// longest cached prefix when the session starts from the zero state.  A cache belongs to one model.
// Threads: a Model may be shared by Sessions on several threads; a Session, Sampler or cache by one at a time.
class ImageStateCache {
 public:
  explicit ImageStateCache(size_t max_entries = 4) : max_(max_entries ? max_entries : 1) {}
  size_t hits = 0, misses = 0;
  size_t size() const { return entries_.size(); }
  const Session::Snapshot* find(uint64_t key);
  void put(uint64_t key, Session::Snapshot snap);

 private:
  size_t max_;
  std::vector<std::pair<uint64_t, Session::Snapshot>> entries_;  // most recently used last
};

const float* prefill_prompt(Session& session, const std::vector<PromptItem>& items, const std::vector<Image>& images,
                            ImageStateCache* cache = nullptr, bool from_zero_state = true);

}  // namespace vrwkv
