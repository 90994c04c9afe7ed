// vrwkv-tokenize: batch encode/decode with the runtime's tokenizer, one item per line, for scripts and tests.
//   vrwkv-tokenize VOCAB|bytes encode        stdin: hex of UTF-8 text   -> stdout: ids (or "! message")
//   vrwkv-tokenize VOCAB|bytes encode-bytes  stdin: hex of any bytes    -> stdout: ids
//   vrwkv-tokenize VOCAB|bytes decode        stdin: space-separated ids -> stdout: hex of the bytes
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include "vrwkv_runtime/runtime.hpp"

static std::string unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += char(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: vrwkv-tokenize VOCAB|bytes encode|encode-bytes|decode\n"), 2;
  try {
    std::string vocab = argv[1], mode = argv[2];
    auto tok = vocab == "bytes" ? vrwkv::Tokenizer::bytes() : vrwkv::Tokenizer::world(vocab);
    if (mode != "encode" && mode != "encode-bytes" && mode != "decode") throw std::runtime_error("unknown mode " + mode);
    std::string line, out;
    while (std::getline(std::cin, line)) {
      try {
        if (mode == "decode") {
          std::istringstream in(line);
          std::vector<int32_t> ids;
          for (long v; in >> v;) ids.push_back(int32_t(v));
          for (unsigned char c : tok->decode(ids)) { char b[3]; std::snprintf(b, 3, "%02x", c); out += b; }
        } else {
          std::string text = unhex(line);
          auto ids = mode == "encode" ? tok->encode(text) : tok->encode_bytes(text);
          for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
        }
      } catch (const vrwkv::Error& e) {
        out += std::string("! ") + e.what();
      }
      out += '\n';
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
