// A small JSON reader for metadata.json and the metadata embedded in the graphs (no third-party dependency:
// the runtime must build from a bare toolchain plus the ONNX Runtime headers).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace vrwkv::json {

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool b = false;
  double num = 0;
  bool integral = false;  // written without fraction/exponent (Python's int)
  std::string str;
  std::vector<Value> arr;
  std::map<std::string, Value> obj;  // key order is irrelevant for equality, as for Python dicts

  bool is_null() const { return type == Type::Null; }
  bool is_string() const { return type == Type::String; }
  bool is_int() const { return type == Type::Number && integral; }
  bool is_object() const { return type == Type::Object; }
  bool is_array() const { return type == Type::Array; }
  const Value* find(const std::string& key) const;
  std::string type_name() const;
  std::string dump() const;  // compact, for messages

  static Value of(const std::string& s);
  static Value of(const char* s) { return of(std::string(s)); }
  static Value of(int64_t n);
  static Value of(const std::vector<Value>& a);
  static Value object() { Value v; v.type = Type::Object; return v; }
};

bool operator==(const Value& a, const Value& b);
inline bool operator!=(const Value& a, const Value& b) { return !(a == b); }

// Parses a whole document; throws std::runtime_error("line L column C: what") on malformed input.
Value parse(const std::string& text);

// The first path where a and b differ ("" when equal), with both values dumped, like the Python runtime's check.
bool first_difference(const Value& a, const Value& b, std::string& path, std::string& va, std::string& vb);

}  // namespace vrwkv::json
