#include "json.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace vrwkv::json {

const Value* Value::find(const std::string& key) const {
  if (type != Type::Object) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &it->second;
}

std::string Value::type_name() const {
  switch (type) {
    case Type::Null: return "null";
    case Type::Bool: return "bool";
    case Type::Number: return integral ? "int" : "float";
    case Type::String: return "str";
    case Type::Array: return "list";
    default: return "dict";
  }
}

Value Value::of(const std::string& s) { Value v; v.type = Type::String; v.str = s; return v; }
Value Value::of(int64_t n) { Value v; v.type = Type::Number; v.num = double(n); v.integral = true; return v; }
Value Value::of(const std::vector<Value>& a) { Value v; v.type = Type::Array; v.arr = a; return v; }

static void dump_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { out += '\\'; out += char(c); }
    else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", c); out += buf; }
    else out += char(c);
  }
  out += '"';
}

static void dump_to(const Value& v, std::string& out) {
  switch (v.type) {
    case Value::Type::Null: out += "null"; break;
    case Value::Type::Bool: out += v.b ? "true" : "false"; break;
    case Value::Type::Number: {
      char buf[32];
      if (v.integral) std::snprintf(buf, sizeof buf, "%lld", (long long)v.num);
      else std::snprintf(buf, sizeof buf, "%.17g", v.num);
      out += buf;
      break;
    }
    case Value::Type::String: dump_string(v.str, out); break;
    case Value::Type::Array:
      out += '[';
      for (size_t i = 0; i < v.arr.size(); ++i) { if (i) out += ", "; dump_to(v.arr[i], out); }
      out += ']';
      break;
    case Value::Type::Object: {
      out += '{';
      bool first = true;
      for (auto& [k, x] : v.obj) { if (!first) out += ", "; first = false; dump_string(k, out); out += ": "; dump_to(x, out); }
      out += '}';
      break;
    }
  }
}

std::string Value::dump() const { std::string s; dump_to(*this, s); return s; }

bool operator==(const Value& a, const Value& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case Value::Type::Null: return true;
    case Value::Type::Bool: return a.b == b.b;
    case Value::Type::Number: return a.num == b.num;  // 1 == 1.0, as in Python
    case Value::Type::String: return a.str == b.str;
    case Value::Type::Array: return a.arr == b.arr;
    default: return a.obj == b.obj;
  }
}

namespace {
struct Parser {
  const std::string& s;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < i && k < s.size(); ++k) { if (s[k] == '\n') { ++line; col = 1; } else ++col; }
    throw std::runtime_error("line " + std::to_string(line) + " column " + std::to_string(col) + ": " + what);
  }
  void ws() { while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i; }
  bool lit(const char* w) {
    size_t n = std::char_traits<char>::length(w);
    if (s.compare(i, n, w) != 0) return false;
    i += n;
    return true;
  }
  static void put_utf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
    else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  }
  uint32_t hex4() {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }
  std::string string() {
    ++i;  // opening quote
    std::string out;
    while (true) {
      if (i >= s.size()) fail("unterminated string");
      char c = s[i++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') { out += c; continue; }
      if (i >= s.size()) fail("unterminated string");
      char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            size_t save = i;
            i += 2;
            uint32_t lo = hex4();
            if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            else i = save;
          }
          put_utf8(cp, out);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  }
  Value number() {
    size_t start = i;
    bool integral = true;
    if (s[i] == '-') ++i;
    while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i < s.size() && s[i] == '.') { integral = false; ++i; while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i; }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      integral = false;
      ++i;
      if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
      while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i;
    }
    std::string tok = s.substr(start, i - start);
    if (tok.empty() || tok == "-") fail("bad number");
    Value v;
    v.type = Value::Type::Number;
    v.integral = integral;
    v.num = std::strtod(tok.c_str(), nullptr);
    return v;
  }
  Value value(int depth) {
    if (depth > 200) fail("nesting too deep");
    ws();
    if (i >= s.size()) fail("unexpected end of input");
    char c = s[i];
    Value v;
    if (c == '{') {
      v.type = Value::Type::Object;
      ++i;
      ws();
      if (i < s.size() && s[i] == '}') { ++i; return v; }
      while (true) {
        ws();
        if (i >= s.size() || s[i] != '"') fail("expected a string key");
        std::string k = string();
        ws();
        if (i >= s.size() || s[i] != ':') fail("expected ':'");
        ++i;
        v.obj[k] = value(depth + 1);
        ws();
        if (i < s.size() && s[i] == ',') { ++i; continue; }
        if (i < s.size() && s[i] == '}') { ++i; return v; }
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.type = Value::Type::Array;
      ++i;
      ws();
      if (i < s.size() && s[i] == ']') { ++i; return v; }
      while (true) {
        v.arr.push_back(value(depth + 1));
        ws();
        if (i < s.size() && s[i] == ',') { ++i; continue; }
        if (i < s.size() && s[i] == ']') { ++i; return v; }
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') { v.type = Value::Type::String; v.str = string(); return v; }
    if (c == '-' || isdigit(static_cast<unsigned char>(c))) return number();
    if (lit("true")) { v.type = Value::Type::Bool; v.b = true; return v; }
    if (lit("false")) { v.type = Value::Type::Bool; return v; }
    if (lit("null")) return v;
    if (lit("NaN") || lit("Infinity") || lit("-Infinity")) { v.type = Value::Type::Number; v.num = NAN; return v; }
    fail(std::string("unexpected character '") + c + "'");
  }
};
}  // namespace

Value parse(const std::string& text) {
  Parser p{text};
  Value v = p.value(0);
  p.ws();
  if (p.i != text.size()) p.fail("extra data after the JSON value");
  return v;
}

bool first_difference(const Value& a, const Value& b, std::string& path, std::string& va, std::string& vb) {
  if (a.type == Value::Type::Object && b.type == Value::Type::Object) {
    std::map<std::string, int> keys;
    for (auto& kv : a.obj) keys[kv.first] = 1;
    for (auto& kv : b.obj) keys[kv.first] = 1;
    for (auto& kv : keys) {
      const Value* x = a.find(kv.first);
      const Value* y = b.find(kv.first);
      std::string sub = path.empty() ? kv.first : path + "." + kv.first;
      if (!x || !y) {
        path = sub;
        va = x ? x->dump() : "<missing>";
        vb = y ? y->dump() : "<missing>";
        return true;
      }
      std::string p = sub;
      if (first_difference(*x, *y, p, va, vb)) { path = p; return true; }
    }
    return false;
  }
  if (a.type == Value::Type::Array && b.type == Value::Type::Array && a.arr.size() == b.arr.size()) {
    for (size_t k = 0; k < a.arr.size(); ++k) {
      std::string p = path + "[" + std::to_string(k) + "]";
      if (first_difference(a.arr[k], b.arr[k], p, va, vb)) { path = p; return true; }
    }
    return false;
  }
  if (a == b) return false;
  if (path.empty()) path = "<root>";
  va = a.dump();
  vb = b.dump();
  return true;
}

}  // namespace vrwkv::json
