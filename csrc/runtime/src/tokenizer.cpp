// World tokenizer: the vocabulary file's Python literals decoded here, a byte trie, greedy longest match
// (identical to vrwkv_edge.tokenizer.WorldTokenizer and the reference TRIE_TOKENIZER).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "vrwkv_runtime/runtime.hpp"

namespace vrwkv {

size_t invalid_utf8_offset(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte (excludes overlongs and surrogates)
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return i;
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

struct Tokenizer::Impl {
  bool byte_level = false;
  std::vector<std::string> tokens;      // by id; empty string with has[id] == false: no token
  std::vector<uint8_t> has;
  size_t n_tokens = 0, max_len = 0;
  // Trie: node 0 is the root; children of a node are edges_[begin, begin + count) sorted by byte.
  struct Node { int32_t token = -1; uint32_t begin = 0, count = 0; };
  std::vector<Node> nodes;
  std::vector<std::pair<uint8_t, uint32_t>> edges;
  uint32_t root_child[256];

  int32_t child(uint32_t node, uint8_t b) const {
    if (node == 0) return int32_t(root_child[b]);
    const Node& nd = nodes[node];
    auto first = edges.begin() + nd.begin, last = first + nd.count;
    auto it = std::lower_bound(first, last, b, [](const auto& e, uint8_t v) { return e.first < v; });
    return (it != last && it->first == b) ? int32_t(it->second) : -1;
  }
};

namespace {

[[noreturn]] void bad_line(const std::string& path, size_t lineno, const std::string& line, const std::string& why) {
  std::string shown = line.size() <= 120 ? line : line.substr(0, 117) + "...";
  throw Error(Error::Kind::Artefact, path + ":" + std::to_string(lineno) + ": bad vocabulary line (" + why + "): " + shown);
}

void put_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) out += char(cp);
  else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A Python str or bytes literal (the forms the vocabulary uses: quotes ' or ", escapes \\ \' \" \a \b \f \n \r
// \t \v \ooo \xhh, \uXXXX and \UXXXXXXXX in str; unknown escapes keep the backslash, as Python does).
// A str literal stands for its UTF-8 bytes.  Returns false if `lit` is not such a literal.
bool parse_literal(const std::string& lit, std::string& out) {
  size_t i = 0;
  bool is_bytes = false;
  if (i < lit.size() && (lit[i] == 'b' || lit[i] == 'B')) { is_bytes = true; ++i; }
  if (i >= lit.size() || (lit[i] != '\'' && lit[i] != '"')) return false;
  char q = lit[i++];
  if (lit.size() < i + 1 || lit.back() != q) return false;
  size_t end = lit.size() - 1;
  out.clear();
  while (i < end) {
    char c = lit[i++];
    if (c == q) return false;  // implicit concatenation or a stray quote: not supported
    if (c != '\\') {
      if (is_bytes && static_cast<unsigned char>(c) >= 0x80) return false;
      out += c;
      continue;
    }
    if (i >= end) return false;
    char e = lit[i++];
    auto emit = [&](uint32_t v) {
      if (is_bytes) out += char(v);
      else put_utf8(v, out);
    };
    switch (e) {
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': {
        if (i + 2 > end || hexval(lit[i]) < 0 || hexval(lit[i + 1]) < 0) return false;
        emit(uint32_t(hexval(lit[i]) * 16 + hexval(lit[i + 1])));
        i += 2;
        break;
      }
      case 'u':
      case 'U': {
        if (is_bytes) { out += '\\'; out += e; break; }
        size_t nd = e == 'u' ? 4 : 8;
        if (i + nd > end) return false;
        uint32_t v = 0;
        for (size_t k = 0; k < nd; ++k) {
          int h = hexval(lit[i + k]);
          if (h < 0) return false;
          v = v * 16 + uint32_t(h);
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v < 0xE000)) return false;  // not encodable as UTF-8
        put_utf8(v, out);
        i += nd;
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = uint32_t(e - '0');
          for (int k = 0; k < 2 && i < end && lit[i] >= '0' && lit[i] <= '7'; ++k) v = v * 8 + uint32_t(lit[i++] - '0');
          if (is_bytes && v > 0xFF) return false;
          emit(v);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return true;
}

}  // namespace

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::bytes() {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->impl_->byte_level = true;
  t->impl_->n_tokens = 256;
  t->impl_->tokens.resize(256);
  t->impl_->has.assign(256, 1);
  for (int b = 0; b < 256; ++b) t->impl_->tokens[b] = std::string(1, char(b));
  return t;
}

std::unique_ptr<Tokenizer> Tokenizer::world(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(Error::Kind::Artefact, "RWKV World vocabulary file not found or unreadable: " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  size_t bad = invalid_utf8_offset(text);
  if (bad != std::string::npos) {
    size_t lineno = size_t(std::count(text.begin(), text.begin() + long(bad), '\n')) + 1;
    throw Error(Error::Kind::Artefact, path + ":" + std::to_string(lineno) + ": vocabulary file is not valid UTF-8");
  }
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  Impl& im = *t->impl_;
  std::vector<std::pair<int64_t, std::string>> entries;
  std::vector<size_t> linenos;
  size_t pos = 0, lineno = 0;
  std::string tok;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\r\f\v") == std::string::npos) {
      if (nl == text.size()) break;
      continue;
    }
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    auto digits = [](const std::string& s) { return !s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos; };
    if (sp1 == std::string::npos || sp2 <= sp1 + 1 || !digits(line.substr(0, sp1)) || !digits(line.substr(sp2 + 1)))
      bad_line(path, lineno, line, "expected '<id> <str or bytes literal> <byte length>'");
    if (!parse_literal(line.substr(sp1 + 1, sp2 - sp1 - 1), tok))
      bad_line(path, lineno, line, "the token is not a Python str or bytes literal");
    size_t want = std::stoul(line.substr(sp2 + 1));
    if (tok.size() != want)
      bad_line(path, lineno, line, "byte length column says " + std::to_string(want) + " but the token has " +
                                       std::to_string(tok.size()) + " bytes");
    int64_t id = std::stoll(line.substr(0, sp1));
    if (id == 0) bad_line(path, lineno, line, "id 0 is reserved for end-of-text");
    if (id > (1 << 24) - 1) bad_line(path, lineno, line, "id is larger than 16777215");
    entries.emplace_back(id, tok);
    linenos.push_back(lineno);
    if (nl == text.size()) break;
  }
  if (entries.empty()) throw Error(Error::Kind::Artefact, path + ": vocabulary file has no tokens");
  int64_t max_id = 0;
  for (auto& e : entries) max_id = std::max(max_id, e.first);
  im.tokens.assign(size_t(max_id) + 1, std::string());
  im.has.assign(size_t(max_id) + 1, 0);
  im.has[0] = 1;  // end of text, decodes to nothing
  // Trie construction with per-node child lists, flattened afterwards.
  std::vector<std::vector<std::pair<uint8_t, uint32_t>>> kids(1);
  std::vector<int32_t> node_token(1, -1);
  for (size_t k = 0; k < entries.size(); ++k) {
    auto& [id, bytes] = entries[k];
    if (im.has[size_t(id)]) bad_line(path, linenos[k], std::to_string(id) + " ...", "id " + std::to_string(id) + " already defined");
    im.has[size_t(id)] = 1;
    im.tokens[size_t(id)] = bytes;
    im.max_len = std::max(im.max_len, bytes.size());
    uint32_t node = 0;
    for (unsigned char b : bytes) {
      uint32_t next = UINT32_MAX;
      for (auto& e : kids[node]) if (e.first == b) { next = e.second; break; }
      if (next == UINT32_MAX) {
        next = uint32_t(kids.size());
        kids[node].emplace_back(b, next);
        kids.emplace_back();
        node_token.push_back(-1);
      }
      node = next;
    }
    if (node_token[node] >= 0) bad_line(path, linenos[k], std::to_string(id) + " ...", "token bytes already defined");
    node_token[node] = int32_t(id);
  }
  for (int b = 0; b < 256; ++b) {
    bool found = false;
    for (auto& e : kids[0]) if (e.first == b && node_token[e.second] >= 0) found = true;
    if (!found)
      throw Error(Error::Kind::Artefact, path + ": vocabulary lacks the single-byte token for byte " + std::to_string(b) +
                                             "; every byte needs a token so that any input can be encoded");
  }
  im.nodes.resize(kids.size());
  for (size_t n = 0; n < kids.size(); ++n) {
    std::sort(kids[n].begin(), kids[n].end());
    im.nodes[n].token = node_token[n];
    im.nodes[n].begin = uint32_t(im.edges.size());
    im.nodes[n].count = uint32_t(kids[n].size());
    im.edges.insert(im.edges.end(), kids[n].begin(), kids[n].end());
  }
  for (auto& e : kids[0]) im.root_child[e.first] = e.second;
  im.n_tokens = entries.size() + 1;
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view utf8) const {
  size_t bad = invalid_utf8_offset(utf8);
  if (bad != std::string_view::npos)
    throw Error(Error::Kind::Input, "the text is not valid UTF-8 (invalid byte 0x" +
                                        [&] { char b[4]; std::snprintf(b, sizeof b, "%02x", (unsigned char)utf8[bad]); return std::string(b); }() +
                                        " at byte offset " + std::to_string(bad) + ")");
  return encode_bytes(utf8);
}

std::vector<int32_t> Tokenizer::encode_bytes(std::string_view data) const {
  const Impl& im = *impl_;
  std::vector<int32_t> out;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  if (im.byte_level) {
    out.assign(p, p + n);
    return out;
  }
  out.reserve(n / 3 + 1);
  size_t pos = 0;
  while (pos < n) {
    uint32_t node = 0;
    int32_t best = -1;
    size_t best_len = 0, limit = std::min(n, pos + im.max_len);
    for (size_t i = pos; i < limit; ++i) {
      int32_t c = im.child(node, p[i]);
      if (c < 0) break;
      node = uint32_t(c);
      if (im.nodes[node].token >= 0) { best = im.nodes[node].token; best_len = i - pos + 1; }
    }
    out.push_back(best);  // every single byte is a token, so best_len >= 1
    pos += best_len;
  }
  return out;
}

bool Tokenizer::token_bytes(int32_t id, std::string_view& out) const {
  const Impl& im = *impl_;
  if (id < 0 || size_t(id) >= im.has.size() || !im.has[size_t(id)]) return false;
  out = im.tokens[size_t(id)];
  return true;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  std::string_view tb;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (!token_bytes(ids[k], tb))
      throw Error(Error::Kind::Argument, "token id " + std::to_string(ids[k]) + " at position " + std::to_string(k) +
                                             " is out of range: the vocabulary defines ids 0.." +
                                             std::to_string(impl_->has.size() - 1));
    out += tb;
  }
  return out;
}

bool Tokenizer::byte_level() const { return impl_->byte_level; }
size_t Tokenizer::num_tokens() const { return impl_->n_tokens; }

// Length of the longest prefix of p[0, n) that starts a well-formed UTF-8 sequence (the "maximal subpart"
// of Unicode's replacement practice, which Python follows), and the full length that sequence needs.
static size_t utf8_subpart(const unsigned char* p, size_t n, size_t& need) {
  unsigned c = p[0];
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) need = 2;
  else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else { need = 1; return 1; }
  size_t k = 1;
  if (k < n && p[k] >= lo && p[k] <= hi) {
    ++k;
    while (k < need && k < n && (p[k] & 0xC0) == 0x80) ++k;
  }
  return k;
}

// Python's bytes.decode("utf-8", "replace"): each maximal invalid subpart becomes one U+FFFD (appended to out).
static void decode_replace(std::string_view s, std::string& out) {
  while (!s.empty()) {
    size_t bad = invalid_utf8_offset(s);
    if (bad == std::string_view::npos) { out += s; break; }
    out += s.substr(0, bad);
    out += "\xEF\xBF\xBD";
    size_t need;
    s.remove_prefix(bad + utf8_subpart(reinterpret_cast<const unsigned char*>(s.data()) + bad, s.size() - bad, need));
  }
}

const std::string& TextStreamer::push(int32_t token) {
  out_.clear();
  std::string_view tb;
  if (tok_.token_bytes(token, tb)) pending_ += tb;  // ids without a token (a random model's 65530+) add nothing
  size_t bad = invalid_utf8_offset(pending_);
  if (bad == std::string::npos) {
    out_.swap(pending_);
    return out_;
  }
  size_t need, tail = pending_.size() - bad;
  size_t sub = utf8_subpart(reinterpret_cast<const unsigned char*>(pending_.data()) + bad, tail, need);
  if (sub == tail && tail < need) {  // a character cut at the end: hold it back until its bytes arrive
    decode_replace(std::string_view(pending_).substr(0, bad), out_);
    pending_.erase(0, bad);
    return out_;
  }
  decode_replace(pending_, out_);
  pending_.clear();
  return out_;
}

const std::string& TextStreamer::flush() {
  out_.clear();
  decode_replace(pending_, out_);
  pending_.clear();
  return out_;
}

}  // namespace vrwkv
