// Opening an export directory (metadata checks mirroring vrwkv_edge's read_metadata/check_metadata and the ORT
// backend's session checks) and running it with preallocated, bound state buffers.
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "custom_ops.hpp"
#include "internal.hpp"

namespace vrwkv {

using json::Value;

namespace {

constexpr const char* kFormat = "vrwkv_edge.onnx";
constexpr int kFormatVersion = 2;   // 1: "tokenizer" was a bare file name; 2: {"kind", "file"}
constexpr const char* kMetadataFile = "metadata.json";
constexpr const char* kMetadataProp = "vrwkv_edge.metadata";
const char* const kFields[3] = {"shift_att", "wkv", "shift_ffn"};
const char* const kGraphKinds[] = {"decode", "prefill", "decode_embeds", "prefill_embeds", "image_prefill", "vision"};

[[noreturn]] void artefact(const std::string& msg) { throw Error(Error::Kind::Artefact, msg); }

bool is_file(const std::string& p, long long* size = nullptr) {
  struct stat st;
  if (stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (size) *size = st.st_size;
  return true;
}

// The value at a dotted path; of ``type`` unless ``any_type`` (then the caller checks it).
const Value& require(const Value& meta, const std::string& path, Value::Type type, const std::string& where,
                     bool integral = false, bool any_type = false) {
  const Value* cur = &meta;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const Value* next = cur->find(part);
    if (!next) artefact(where + ": key '" + path + "' is missing");
    cur = next;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  static const char* names[] = {"null", "bool", "number", "str", "list", "dict"};
  if (!any_type && (cur->type != type || (integral && !cur->integral)))
    artefact(where + ": key '" + path + "' has " + cur->type_name() + " " + cur->dump() + ", expected " +
             (integral ? "int" : names[int(type)]));
  return *cur;
}

int req_int(const Value& m, const std::string& path, const std::string& where) {
  return int(require(m, path, Value::Type::Number, where, true).num);
}
const std::string& req_str(const Value& m, const std::string& path, const std::string& where) {
  return require(m, path, Value::Type::String, where).str;
}

Value shape_of(std::initializer_list<Value> dims) { return Value::of(std::vector<Value>(dims)); }
Value tensor_spec(const std::string& name, const std::string& dtype, const Value& shape) {
  Value v = Value::object();
  v.obj["name"] = Value::of(name);
  v.obj["dtype"] = Value::of(dtype);
  v.obj["shape"] = shape;
  return v;
}

Value state_shapes(const ModelInfo& c) {
  Value v = Value::object();
  v.obj["shift_att"] = shape_of({Value::of("batch"), Value::of(int64_t(c.n_embd))});
  v.obj["wkv"] = shape_of({Value::of("batch"), Value::of(int64_t(c.n_head)), Value::of(int64_t(c.head_size)),
                           Value::of(int64_t(c.head_size))});
  v.obj["shift_ffn"] = shape_of({Value::of("batch"), Value::of(int64_t(c.n_embd))});
  return v;
}

Value state_names(int n_layer, const char* prefix) {
  Value v = Value::of(std::vector<Value>{});
  for (int i = 0; i < n_layer; ++i)
    for (auto f : kFields) v.arr.push_back(Value::of(std::string(prefix) + "." + std::to_string(i) + "." + f));
  return v;
}

// graph_io of vrwkv_edge.export.graphs: the inputs and outputs a graph kind must have.
Value graph_io(const std::string& kind, const ModelInfo& c, const Value* visual) {
  Value io = Value::object();
  Value ins = Value::of(std::vector<Value>{}), outs = Value::of(std::vector<Value>{});
  Value image_embeds;
  if (visual)
    image_embeds = tensor_spec("image_embeds", "float32",
                               shape_of({Value::of("batch"), *visual->find("tokens_per_image"), Value::of(int64_t(c.n_embd))}));
  if (kind == "vision") {
    for (auto& p : visual->find("pixel_inputs")->arr)
      ins.arr.push_back(tensor_spec(p.find("name")->str, "float32",
                                    shape_of({Value::of("batch"), Value::of(int64_t(3)), *p.find("size"), *p.find("size")})));
    outs.arr.push_back(image_embeds);
  } else {
    bool seq = kind.rfind("prefill", 0) == 0;
    if (kind == "image_prefill") ins.arr.push_back(image_embeds);
    else if (kind == "decode" || kind == "prefill")
      ins.arr.push_back(tensor_spec("input_ids", "int64", seq ? shape_of({Value::of("batch"), Value::of("seq")})
                                                              : shape_of({Value::of("batch")})));
    else
      ins.arr.push_back(tensor_spec("inputs_embeds", "float32",
                                    seq ? shape_of({Value::of("batch"), Value::of("seq"), Value::of(int64_t(c.n_embd))})
                                        : shape_of({Value::of("batch"), Value::of(int64_t(c.n_embd))})));
    Value shapes = state_shapes(c);
    outs.arr.push_back(tensor_spec("logits", "float32", shape_of({Value::of("batch"), Value::of(int64_t(c.vocab_size))})));
    for (int i = 0; i < c.n_layer; ++i)
      for (auto f : kFields) {
        std::string suffix = "." + std::to_string(i) + "." + f;
        ins.arr.push_back(tensor_spec("past_key_values" + suffix, "float32", shapes.obj[f]));
        outs.arr.push_back(tensor_spec("present" + suffix, "float32", shapes.obj[f]));
      }
  }
  io.obj["inputs"] = ins;
  io.obj["outputs"] = outs;
  return io;
}

void check_visual(const Value& meta, const std::string& where, ModelInfo& info) {
  const Value& graphs = *meta.find("graphs");
  for (auto kind : {"image_prefill", "vision"})
    if (!graphs.find(kind))
      artefact(where + ": graphs." + kind + " is missing (a VisualRWKV export has vision and image_prefill)");
  const Value& v = require(meta, "visual", Value::Type::Object, where);
  int n = req_int(meta, "visual.tokens_per_image", where);
  const Value& lay = require(meta, "visual.layout", Value::Type::Object, where);
  int vals[4];
  const char* keys[4] = {"num_patches", "grid_h", "grid_w", "num_extra"};
  for (int k = 0; k < 4; ++k) {
    const Value* x = lay.find(keys[k]);
    if (!x || !x->is_int() || x->num < 0)
      artefact(where + ": visual.layout." + keys[k] + " must be a non-negative integer");
    vals[k] = int(x->num);
  }
  if (vals[1] * vals[2] != vals[0] || vals[0] + vals[3] != n)
    artefact(where + ": visual.layout " + lay.dump() + " does not add up to tokens_per_image " + std::to_string(n));
  const Value* scan = v.find("scan");
  static const char* modes[] = {"unidirectional", "bidirectional", "multidirectional", "rotate"};
  bool scan_ok = false;
  if (scan && scan->is_string())
    for (auto m : modes) scan_ok |= scan->str == m;
  if (!scan_ok) artefact(where + ": visual.scan " + (scan ? scan->dump() : "<missing>") + " is not a known scan mode");
  const Value& pix = require(meta, "visual.pixel_inputs", Value::Type::Array, where);
  if (pix.arr.empty()) artefact(where + ": visual.pixel_inputs must list name, mode, size, mean and std per input");
  for (auto& p : pix.arr) {
    const Value *name = p.find("name"), *size = p.find("size"), *mode = p.find("mode"), *mean = p.find("mean"),
                *sd = p.find("std"), *crop = p.find("crop"), *tr = p.find("transform");
    bool ok = name && name->is_string() && size && size->is_int() && size->num > 0 && mode && mode->is_string() &&
              (mode->str == "clip" || mode->str == "resize") && mean && mean->is_array() && mean->arr.size() == 3 &&
              sd && sd->is_array() && sd->arr.size() == 3;
    if (!ok) artefact(where + ": visual.pixel_inputs must list name, mode, size, mean and std per input");
    PixelInput pi;
    pi.name = name->str;
    pi.mode = mode->str;
    pi.transform = tr && tr->is_string() ? tr->str : pi.name;
    pi.size = int(size->num);
    pi.crop = crop && crop->is_int() ? int(crop->num) : pi.size;
    for (int k = 0; k < 3; ++k) {
      if (mean->arr[k].type != Value::Type::Number || sd->arr[k].type != Value::Type::Number || sd->arr[k].num == 0)
        artefact(where + ": visual.pixel_inputs " + pi.name + ": mean/std must be numbers (std non-zero)");
      pi.mean[k] = float(mean->arr[k].num);  // numpy float32 arrays of the metadata's values
      pi.std[k] = float(sd->arr[k].num);
    }
    if (pi.mode == "clip" && pi.crop > pi.size)
      artefact(where + ": visual.pixel_inputs " + pi.name + ": crop " + std::to_string(pi.crop) + " > size");
    info.pixel_inputs.push_back(pi);
  }
  const Value& cfg = require(meta, "visual.config", Value::Type::Object, where);
  const Value* ver = cfg.find("version");
  if (!ver || !ver->is_string() || (ver->str != "v6" && ver->str != "v7"))
    artefact(where + ": visual.config.version must be 'v6' or 'v7'");
  const Value* pos = cfg.find("image_position");
  info.image_position = pos && pos->is_string() ? pos->str : "middle";
  if (info.image_position != "first" && info.image_position != "middle" && info.image_position != "last")
    artefact(where + ": visual.config.image_position '" + info.image_position + "' is not first, middle or last");
  info.visual = true;
  info.visual_version = ver->str;
  info.tokens_per_image = n;
  info.scan = scan->str;
  const Value* tower = cfg.find("tower");
  info.tower = tower && tower->is_string() ? tower->str : "";
}

}  // namespace

// check_metadata + read_metadata of vrwkv_edge.export.artefact, with the same messages.
Value read_metadata(const std::string& dir, ModelInfo& info) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0)
    artefact(dir + ": no such directory (expected an export made by vrwkv-edge export)");
  if (!S_ISDIR(st.st_mode)) artefact(dir + ": not a directory (expected an export made by vrwkv-edge export)");
  std::string where = dir + "/" + kMetadataFile;
  if (!is_file(where)) artefact(dir + ": " + kMetadataFile + " is missing: not a complete vrwkv_edge export");
  std::ifstream f(where, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  if (invalid_utf8_offset(text) != std::string::npos) artefact(where + ": not UTF-8 text");
  Value meta;
  try {
    meta = json::parse(text);
  } catch (const std::runtime_error& e) {
    artefact(where + ": invalid JSON at " + e.what());
  }
  if (!meta.is_object()) artefact(where + ": expected a JSON object, got " + meta.type_name());
  if (req_str(meta, "format", where) != kFormat)
    artefact(where + ": format '" + meta.find("format")->str + "' is not '" + kFormat + "' (not a vrwkv_edge ONNX export)");
  int ver = req_int(meta, "format_version", where);
  if (ver > kFormatVersion)
    artefact(where + ": format_version " + std::to_string(ver) + " is newer than this runtime understands (" +
             std::to_string(kFormatVersion) + "); upgrade vrwkv_runtime");
  int* sizes[] = {&info.n_layer, &info.n_embd, &info.n_head, &info.head_size, &info.vocab_size, &info.dim_ffn};
  const char* size_keys[] = {"n_layer", "n_embd", "n_head", "head_size", "vocab_size", "dim_ffn", "parameters"};
  for (int k = 0; k < 7; ++k) {
    const Value& v = require(meta, std::string("model.") + size_keys[k], Value::Type::Number, where, true);
    if (v.num <= 0) artefact(where + ": model." + size_keys[k] + " must be positive, got " + v.dump());
    if (k < 6) *sizes[k] = int(v.num);
  }
  info.version = req_str(meta, "model.version", where);
  if (info.version != "x060" && info.version != "x070")
    artefact(where + ": model.version '" + info.version + "' is not x060 or x070");
  require(meta, "model.lora", Value::Type::Object, where);
  info.dtype = req_str(meta, "dtype", where);
  info.opset = req_int(meta, "opset", where);
  info.chunk_size = req_int(meta, "chunk_size", where);
  std::string scan_mode = req_str(meta, "scan_mode", where);
  if (ver < 2) {                       // format 1 named the World vocabulary even for byte-level models
    info.tokenizer_file = req_str(meta, "tokenizer", where);
    info.tokenizer_kind = info.vocab_size == 256 ? "bytes" : "world";
  } else {
    info.tokenizer_kind = req_str(meta, "tokenizer.kind", where);
    const Value& file = require(meta, "tokenizer.file", Value::Type::Null, where, false, true);
    if (info.tokenizer_kind == "world" && file.type == Value::Type::String) info.tokenizer_file = file.str;
    else if (!(info.tokenizer_kind == "bytes" && file.type == Value::Type::Null))
      artefact(where + ": tokenizer must be {\"kind\": \"world\", \"file\": NAME} or {\"kind\": \"bytes\", \"file\": null}");
  }
  info.prompt_template = req_str(meta, "prompt_template", where);
  info.exporter_version = req_str(meta, "exporter_version", where);
  const Value& graphs = require(meta, "graphs", Value::Type::Object, where);
  const Value& state = require(meta, "state", Value::Type::Object, where);
  if (info.dtype != "fp32" && info.dtype != "fp16") artefact(where + ": dtype '" + info.dtype + "' is not fp32 or fp16");
  // wkv (optional; absent = the standard flavour), as vrwkv_edge.runtime.custom_ops.required_op_version.
  if (const Value* wkv = meta.find("wkv"); wkv && !wkv->is_null()) {
    info.wkv_flavour = req_str(meta, "wkv.flavour", where);
    if (info.wkv_flavour == "custom") {
      if (req_str(meta, "wkv.domain", where) != kOpDomain)
        artefact(where + ": wkv.domain '" + meta.find("wkv")->find("domain")->str + "': custom-flavour exports use "
                 "domain '" + kOpDomain + "'");
      info.wkv_op_version = req_int(meta, "wkv.op_version", where);
    } else if (info.wkv_flavour != "standard") {
      artefact(where + ": wkv.flavour '" + info.wkv_flavour + "' is not 'standard' or 'custom'");
    }
  }
  const Value* q = meta.find("quantize");
  // int8: MatMulInteger (dynamic activations); int4: MatMulNBits (weight-only). Both are ONNX Runtime kernels the
  // graphs name, so nothing else here changes with the precision.
  if (q && !q->is_null() && !(q->is_string() && (q->str == "int8" || q->str == "int4")))
    artefact(where + ": quantize " + q->dump() + " is not one of (None, 'int8', 'int4')");
  info.quantize = q && q->is_string() ? q->str : "";
  if (scan_mode != "chunked-scan")
    artefact(where + ": scan_mode '" + scan_mode + "' is not supported (expected 'chunked-scan')");
  if (info.opset < 17 || info.opset > 20) artefact(where + ": opset " + std::to_string(info.opset) + " is not one of (17, 18, 19, 20)");
  const Value* batch = meta.find("batch");
  if (batch && !((batch->is_string() && batch->str == "dynamic") || (batch->is_int() && batch->num == 1)))
    artefact(where + ": batch " + batch->dump() + " must be 'dynamic' or 1");
  if (info.n_embd % info.head_size != 0)
    artefact(where + ": model sizes are inconsistent: n_embd " + std::to_string(info.n_embd) +
             " is not a multiple of head_size " + std::to_string(info.head_size));
  if (info.n_head != info.n_embd / info.head_size)
    artefact(where + ": model.n_head " + std::to_string(info.n_head) + " != n_embd / head_size = " +
             std::to_string(info.n_embd / info.head_size));
  const Value* sd = state.find("dtype");
  if (!sd || !sd->is_string() || sd->str != "float32")
    artefact(where + ": state.dtype " + (sd ? sd->dump() : "<missing>") + ": the state is always float32");
  const Value* shapes = state.find("shapes");
  if (!shapes || *shapes != state_shapes(info))
    artefact(where + ": state.shapes " + (shapes ? shapes->dump() : "<missing>") +
             " do not match the model sizes (expected " + state_shapes(info).dump() + ")");
  const Value *si = state.find("inputs"), *so = state.find("outputs");
  if (!si || !so || *si != state_names(info.n_layer, "past_key_values") || *so != state_names(info.n_layer, "present"))
    artefact(where + ": state.inputs/state.outputs are not the io names of " + std::to_string(info.n_layer) + " layers");
  for (auto kind : {"decode", "prefill"})
    if (!graphs.find(kind))
      artefact(where + ": graphs." + kind + " is missing (every export has decode and prefill)");
  const Value* visual = meta.find("visual");
  if (visual || graphs.find("vision") || graphs.find("image_prefill")) check_visual(meta, where, info);
  for (auto& [kind, entry] : graphs.obj) {
    bool known = false;
    for (auto k : kGraphKinds) known |= kind == k;
    if (!known) artefact(where + ": unknown graph '" + kind + "'");
    const Value* file = entry.find("file");
    if (!entry.is_object() || !file || !file->is_string()) artefact(where + ": graphs." + kind + ".file is missing");
    if (file->str.empty() || file->str.find('/') != std::string::npos || file->str == "." || file->str == "..")
      artefact(where + ": graphs." + kind + ".file '" + file->str + "' must be a plain file name");
    Value io = graph_io(kind, info, visual);
    for (auto side : {"inputs", "outputs"}) {
      const Value* got = entry.find(side);
      if (!got || *got != io.obj[side])
        artefact(where + ": graphs." + kind + "." + side + " do not match the model sizes in metadata");
    }
  }
  const Value* files = meta.find("files");
  if (!files || !files->is_object()) artefact(where + ": key 'files' is missing");
  for (auto& [kind, entry] : graphs.obj)
    if (!files->find(entry.find("file")->str))
      artefact(where + ": graph file " + entry.find("file")->str + " is not listed under 'files'");
  for (auto& [name, rec] : files->obj) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      artefact(where + ": files." + name + ": must be a plain file name");
    std::string p = dir + "/" + name;
    long long size = 0;
    if (!is_file(p, &size))
      artefact(dir + ": " + name + " is missing (listed in " + kMetadataFile + "); the export is incomplete");
    const Value* bytes = rec.find("bytes");
    if (!bytes || bytes->type != Value::Type::Number || double(size) != bytes->num)
      artefact(p + ": " + std::to_string(size) + " bytes, " + kMetadataFile + " records " +
               (bytes ? bytes->dump() : rec.dump()) + " (truncated or replaced?)");
  }
  if (info.tokenizer_kind == "world" && !files->find(info.tokenizer_file))
    artefact(where + ": the tokenizer file " + info.tokenizer_file + " is not listed under 'files'");
  return meta;
}

// ---- sessions ---------------------------------------------------------------------------------------------
namespace {

struct OrtString {  // a string ORT allocated with the default allocator
  char* p = nullptr;
  ~OrtString() {
    if (p) {
      OrtAllocator* a;
      if (!ort::api().GetAllocatorWithDefaultOptions(&a)) a->Free(a, p);
    }
  }
};

const char* ort_type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "tensor(float)";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "tensor(int64)";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "tensor(float16)";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "tensor(int32)";
    default: return "tensor(other)";
  }
}

std::string shape_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + (d[i] < 0 ? std::string("?") : std::to_string(d[i]));
  return s + "]";
}

}  // namespace

OrtSession* Model::Impl::session(const std::string& kind) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = sessions.find(kind);
  if (it != sessions.end()) return it->second;
  const OrtApi& api = ort::api();
  const Value* entry = meta.find("graphs")->find(kind);
  if (!entry) artefact(info.directory + ": this export has no " + kind + " graph");
  std::string file = info.directory + "/" + entry->find("file")->str;
  if (!is_file(file)) artefact(info.directory + ": graph file " + entry->find("file")->str + " is missing");
  OrtSession* sess = nullptr;
  OrtStatus* st = api.CreateSession(lib->env, file.c_str(), options, &sess);
  if (st) {
    std::string msg = api.GetErrorMessage(st);
    api.ReleaseStatus(st);
    artefact(file + ": ONNX Runtime cannot load this graph (corrupt or truncated?): " + msg.substr(0, 500));
  }
  sessions[kind] = sess;  // owned from here on (released with the model even if a check below fails)
  check_session(kind, file, sess, *entry);
  return sess;
}

void Model::Impl::check_session(const std::string& kind, const std::string& file, OrtSession* sess, const Value& spec) {
  const OrtApi& api = ort::api();
  OrtAllocator* alloc;
  ort::check(api.GetAllocatorWithDefaultOptions(&alloc), "GetAllocatorWithDefaultOptions");
  OrtModelMetadata* mm = nullptr;
  ort::check(api.SessionGetModelMetadata(sess, &mm), file + ": SessionGetModelMetadata");
  OrtString raw, graph_kind;
  OrtStatus* s1 = api.ModelMetadataLookupCustomMetadataMap(mm, alloc, kMetadataProp, &raw.p);
  OrtStatus* s2 = api.ModelMetadataLookupCustomMetadataMap(mm, alloc, "vrwkv_edge.graph", &graph_kind.p);
  api.ReleaseModelMetadata(mm);
  ort::check(s1, file + ": reading " + kMetadataProp);
  ort::check(s2, file + ": reading vrwkv_edge.graph");
  if (!raw.p) artefact(file + ": carries no " + kMetadataProp + " metadata: not a graph written by vrwkv_edge export_model");
  Value inner;
  try {
    inner = json::parse(raw.p);
  } catch (const std::runtime_error& e) {
    artefact(file + ": its embedded " + kMetadataProp + " is not valid JSON: " + e.what());
  }
  Value outer = meta;
  outer.obj.erase("files");
  std::string path, a, b;
  if (json::first_difference(outer, inner, path, a, b))
    artefact(info.directory + "/" + kMetadataFile + " does not match the metadata embedded in " +
             spec.find("file")->str + ": " + path + " is " + a + " in " + kMetadataFile + " but " + b +
             " in the graph (was " + kMetadataFile + " edited, or copied from another export?)");
  if (!graph_kind.p || kind != graph_kind.p)
    artefact(file + ": holds the '" + std::string(graph_kind.p ? graph_kind.p : "None") + "' graph, " + kMetadataFile +
             " lists it as '" + kind + "'");
  for (int side = 0; side < 2; ++side) {
    const char* side_name = side ? "outputs" : "inputs";
    const auto& want = spec.find(side_name)->arr;
    size_t n = 0;
    ort::check(side ? api.SessionGetOutputCount(sess, &n) : api.SessionGetInputCount(sess, &n), file);
    std::vector<std::string> names(n);
    for (size_t i = 0; i < n; ++i) {
      OrtString name;
      ort::check(side ? api.SessionGetOutputName(sess, i, alloc, &name.p) : api.SessionGetInputName(sess, i, alloc, &name.p), file);
      names[i] = name.p;
    }
    bool same = names.size() == want.size();
    for (size_t i = 0; same && i < n; ++i) same = names[i] == want[i].find("name")->str;
    if (!same) {
      std::string missing;
      for (auto& w : want) {
        bool found = false;
        for (auto& nm : names) found |= nm == w.find("name")->str;
        if (!found) missing += (missing.empty() ? "" : ", ") + w.find("name")->str;
      }
      artefact(file + ": graph " + side_name + " (" + std::to_string(n) + ", first " + (n ? names[0] : "-") +
               ") do not match " + kMetadataFile + " (missing: " + (missing.empty() ? "none, order differs" : missing) + ")");
    }
    for (size_t i = 0; i < n; ++i) {
      OrtTypeInfo* ti = nullptr;
      ort::check(side ? api.SessionGetOutputTypeInfo(sess, i, &ti) : api.SessionGetInputTypeInfo(sess, i, &ti), file);
      const OrtTensorTypeAndShapeInfo* tsi = nullptr;
      ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
      size_t rank = 0;
      std::vector<int64_t> dims;
      OrtStatus* st = api.CastTypeInfoToTensorInfo(ti, &tsi);
      if (!st && tsi) st = api.GetTensorElementType(tsi, &et);
      if (!st && tsi) st = api.GetDimensionsCount(tsi, &rank);
      if (!st && tsi) { dims.resize(rank); st = api.GetDimensions(tsi, dims.data(), rank); }
      api.ReleaseTypeInfo(ti);
      ort::check(st, file + ": type of " + names[i]);
      const Value& w = want[i];
      const std::string& dt = w.find("dtype")->str;
      const char* expect = dt == "float32" ? "tensor(float)" : dt == "int64" ? "tensor(int64)" : "tensor(float16)";
      std::string what = std::string(side ? "output " : "input ") + names[i];
      if (std::strcmp(ort_type_name(et), expect) != 0)
        artefact(file + ": " + what + " has type " + ort_type_name(et) + ", " + kMetadataFile + " says " + dt);
      const auto& wshape = w.find("shape")->arr;
      if (dims.size() != wshape.size())
        artefact(file + ": " + what + " has rank " + std::to_string(dims.size()) + ", " + kMetadataFile + " says shape " +
                 w.find("shape")->dump());
      for (size_t d = 0; d < dims.size(); ++d)
        if (wshape[d].is_int() && dims[d] != int64_t(wshape[d].num))
          artefact(file + ": " + what + " has shape " + shape_str(dims) + ", " + kMetadataFile + " says " +
                   w.find("shape")->dump());
    }
  }
}

Model::Impl::~Impl() {
  if (!lib) return;
  for (auto& kv : sessions) ort::api().ReleaseSession(kv.second);
  if (options) ort::api().ReleaseSessionOptions(options);
}

namespace {

void append_provider(OrtSessionOptions* so, const ModelOptions& o) {
  const OrtApi& api = ort::api();
  std::string p = o.provider;
  for (auto& c : p) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (p == "cpu" || p == "cpuexecutionprovider" || p.empty()) return;
  std::string name = (p == "cuda" || p == "cudaexecutionprovider") ? "CUDAExecutionProvider"
                     : (p == "tensorrt" || p == "trt" || p == "tensorrtexecutionprovider") ? "TensorrtExecutionProvider"
                                                                                            : "";
  if (name.empty()) throw Error(Error::Kind::Argument, "unknown execution provider '" + o.provider + "' (cpu, cuda or tensorrt)");
  char** avail = nullptr;
  int n = 0;
  ort::check(api.GetAvailableProviders(&avail, &n), "GetAvailableProviders");
  bool found = false;
  std::string list;
  for (int i = 0; i < n; ++i) { found |= name == avail[i]; list += (i ? ", " : "") + std::string(avail[i]); }
  ort::check(api.ReleaseAvailableProviders(avail, n), "ReleaseAvailableProviders");
  if (!found)
    throw Error(Error::Kind::Argument, "execution provider " + name + " is not available in " + ort::load("").path +
                                           " (available: " + list + "); use a GPU build of ONNX Runtime (JetPack's, "
                                           "or onnxruntime-gpu)");
  std::string dev = std::to_string(o.device_id);
  if (name == "TensorrtExecutionProvider") {
    OrtTensorRTProviderOptionsV2* t = nullptr;
    ort::check(api.CreateTensorRTProviderOptions(&t), "CreateTensorRTProviderOptions");
    std::vector<const char*> keys = {"device_id"}, vals = {dev.c_str()};
    if (!o.trt_cache_dir.empty()) {
      keys.insert(keys.end(), {"trt_engine_cache_enable", "trt_engine_cache_path"});
      vals.insert(vals.end(), {"1", o.trt_cache_dir.c_str()});
    }
    OrtStatus* st = api.UpdateTensorRTProviderOptions(t, keys.data(), vals.data(), keys.size());
    if (!st) st = api.SessionOptionsAppendExecutionProvider_TensorRT_V2(so, t);
    api.ReleaseTensorRTProviderOptions(t);
    ort::check(st, "TensorRT execution provider");
  }
  // CUDA for TensorRT's unsupported nodes too (ORT places each node on the first provider that takes it).
  OrtCUDAProviderOptionsV2* c = nullptr;
  ort::check(api.CreateCUDAProviderOptions(&c), "CreateCUDAProviderOptions");
  const char* keys[] = {"device_id"};
  const char* vals[] = {dev.c_str()};
  OrtStatus* st = api.UpdateCUDAProviderOptions(c, keys, vals, 1);
  if (!st) st = api.SessionOptionsAppendExecutionProvider_CUDA_V2(so, c);
  api.ReleaseCUDAProviderOptions(c);
  ort::check(st, "CUDA execution provider");
}

}  // namespace

Model Model::open(const std::string& directory, const ModelOptions& options) {
  auto im = std::make_unique<Impl>();
  im->opts = options;
  if (options.max_prefill_tokens < 1) throw Error(Error::Kind::Argument, "max_prefill_tokens must be >= 1");
  std::string dir = directory;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  im->info.directory = dir;
  im->meta = read_metadata(dir, im->info);
  // The tokenizer the metadata names (byte-level models: ids = bytes), as vrwkv_edge.runtime.artefact_tokenizer.
  if (im->info.tokenizer_kind == "bytes") im->tok = Tokenizer::bytes();
  else {
    im->tok = Tokenizer::world(dir + "/" + im->info.tokenizer_file);
    if (size_t(im->info.vocab_size) < im->tok->num_tokens())
      artefact(dir + ": the tokenizer " + im->info.tokenizer_file + " has " + std::to_string(im->tok->num_tokens()) +
               " tokens but the model only " + std::to_string(im->info.vocab_size) + " embedding rows");
  }
  im->lib = &ort::load(options.ort_library);
  im->info.ort_library = im->lib->path;
  im->info.ort_version = im->lib->version;
  const OrtApi& api = ort::api();
  ort::check(api.CreateSessionOptions(&im->options), "CreateSessionOptions");
  ort::check(api.SetSessionGraphOptimizationLevel(im->options, ORT_ENABLE_ALL), "SetSessionGraphOptimizationLevel");
  if (options.threads > 0) ort::check(api.SetIntraOpNumThreads(im->options, options.threads), "SetIntraOpNumThreads");
  ort::check(api.AddSessionConfigEntry(im->options, "session.intra_op.allow_spinning", options.spinning ? "1" : "0"),
             "AddSessionConfigEntry");
  append_provider(im->options, options);
  if (im->info.wkv_flavour == "custom") {   // the vrwkv nodes' kernels: checked against the metadata, registered
    im->info.op_library = find_op_library(options.op_library);
    register_op_library(im->options, im->info.op_library, im->info.wkv_op_version, dir + "/" + kMetadataFile);
  }
  im->session("decode");
  im->session("prefill");
  return Model(std::move(im));
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;
const ModelInfo& Model::info() const { return impl_->info; }
const Tokenizer& Model::tokenizer() const { return *impl_->tok; }
size_t Model::state_floats() const {
  const ModelInfo& c = impl_->info;
  return size_t(c.n_layer) * (2 * size_t(c.n_embd) + size_t(c.n_head) * c.head_size * c.head_size);
}

}  // namespace vrwkv
