// Shared between the library's sources; not installed.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "json.hpp"
#include "ort.hpp"
#include "vrwkv_runtime/runtime.hpp"

namespace vrwkv {

json::Value read_metadata(const std::string& dir, ModelInfo& info);

struct Model::Impl {
  ModelOptions opts;
  ModelInfo info;
  json::Value meta;
  std::unique_ptr<Tokenizer> tok;
  const ort::Lib* lib = nullptr;
  OrtSessionOptions* options = nullptr;
  std::map<std::string, OrtSession*> sessions;
  std::mutex mutex;  // sessions are created lazily; Sessions on several threads may ask at once

  // The session of a graph kind, created (and checked against the metadata) on first use.
  OrtSession* session(const std::string& kind);
  void check_session(const std::string& kind, const std::string& file, OrtSession* sess, const json::Value& spec);
  ~Impl();
};

}  // namespace vrwkv
