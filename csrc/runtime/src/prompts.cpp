// VisualRWKV prompt templates (vrwkv_edge.visualrwkv.prompts) and prompt prefill with the image-state cache.
#include <algorithm>

#include "internal.hpp"

namespace vrwkv {

namespace {

const std::u32string kTag = U"<image>";
const std::u32string kShortAnswer = U"Answer the question using a single word or phrase.";

std::u32string to_u32(const std::string& s) {
  if (invalid_utf8_offset(s) != std::string::npos)
    throw Error(Error::Kind::Input, "the prompt is not valid UTF-8 (byte offset " + std::to_string(invalid_utf8_offset(s)) + ")");
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out += cp;
    i += len;
  }
  return out;
}

std::string to_utf8(const std::u32string& s) {
  std::string out;
  for (char32_t cp : s) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
    else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  }
  return out;
}

// Python's str.isspace() (and the regex \s of str patterns).
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::u32string strip(const std::u32string& s) {
  size_t a = 0, b = s.size();
  while (a < b && is_space(s[a])) ++a;
  while (b > a && is_space(s[b - 1])) --b;
  return s.substr(a, b - a);
}

std::u32string replace_all(std::u32string s, const std::u32string& what, const std::u32string& with) {
  for (size_t p = s.find(what); p != std::u32string::npos; p = s.find(what, p + with.size())) s.replace(p, what.size(), with);
  return s;
}

size_t count(const std::u32string& s, const std::u32string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::u32string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// re.sub(r"\n(\s*\n)+", "\n", s): a newline, then whitespace up to the last newline of that whitespace run.
std::u32string collapse_blank_lines(const std::u32string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    out += s[i];
    if (s[i] != U'\n') { ++i; continue; }
    size_t j = i + 1, last = std::u32string::npos;
    for (; j < s.size() && is_space(s[j]); ++j)
      if (s[j] == U'\n') last = j;
    i = last == std::u32string::npos ? i + 1 : last + 1;
  }
  return out;
}

struct Turn {
  bool human;
  std::u32string value;
};

std::u32string join_tags(size_t n) {
  std::u32string s;
  for (size_t k = 0; k < n; ++k) s += (k ? U"\n" : U"") + kTag;
  return s;
}

void process_v6(std::vector<Turn>& turns, const std::string& position) {
  size_t tags = 0;
  for (auto& t : turns) tags += count(t.value, kTag);
  if (tags > 1)
    throw Error(Error::Kind::Argument, "VisualRWKV v6 takes one image per conversation, the turns hold " +
                                           std::to_string(tags) + " <image> tags");
  std::u32string all_human;
  if (position == "middle") {
    bool first = true;
    for (auto& t : turns) {
      if (!t.human) continue;
      std::u32string v;
      if (t.value.find(kTag) != std::u32string::npos) {
        v = strip(replace_all(t.value, kTag, U""));
        v = collapse_blank_lines(strip(replace_all(v, kShortAnswer, U"")));
      } else {
        v = strip(t.value);
      }
      all_human += (first ? U"" : U"\n") + v;
      first = false;
    }
  }
  for (auto& t : turns) {
    if (t.value.find(kTag) != std::u32string::npos) {
      std::u32string v = collapse_blank_lines(strip(replace_all(t.value, kTag, U"")));
      if (position == "first") v = kTag + U"\n" + v;
      else if (position == "middle") v = all_human + U"\n" + kTag + U"\n" + v;
      else v = v + U"\n" + kTag;
      t.value = strip(v);
    } else {
      t.value = collapse_blank_lines(strip(t.value));
    }
  }
}

void process_v7(std::vector<Turn>& turns, int num_images) {
  size_t tags = 0;
  for (auto& t : turns) tags += count(t.value, kTag);
  if (tags != size_t(num_images))
    throw Error(Error::Kind::Argument, "the conversation holds " + std::to_string(tags) + " <image> tag(s) but " +
                                           std::to_string(num_images) + " image(s) were given");
  for (auto& t : turns) {
    if (t.value.find(kTag) != std::u32string::npos) {
      size_t n_local = count(t.value, kTag);
      std::u32string v = collapse_blank_lines(strip(replace_all(t.value, kTag, U"")));
      if (t.human) v = join_tags(n_local) + U"\n" + v;
      t.value = strip(v);
    } else {
      t.value = collapse_blank_lines(strip(t.value));
    }
  }
}

std::u32string render(const Turn& t) {
  std::u32string role = t.human ? U"User" : U"Assistant";
  return t.value.empty() ? role + U":" : role + U": " + t.value + U"\n\n";
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) { h ^= p[i]; h *= 1099511628211ull; }
  return h;
}

}  // namespace

std::vector<PromptItem> question_prompt(const Tokenizer& tok, const std::string& question, const std::string& version,
                                        const std::string& image_position, int num_images) {
  std::u32string q = to_u32(question);
  std::vector<Turn> turns;
  if (version == "v6") {
    if (num_images > 1) throw Error(Error::Kind::Argument, "VisualRWKV v6 takes one image per conversation");
    if (image_position != "first" && image_position != "middle" && image_position != "last")
      throw Error(Error::Kind::Argument, "unknown image_position '" + image_position + "'; choose first, middle or last");
    if (num_images && q.find(kTag) == std::u32string::npos) q = kTag + U"\n" + q;
    turns = {{true, q}, {false, U""}};
    process_v6(turns, image_position);
  } else if (version == "v7") {
    q = strip(replace_all(q, kTag, U""));
    if (num_images) q = join_tags(size_t(num_images)) + U"\n" + q;
    turns = {{true, q}, {false, U""}};
    process_v7(turns, num_images);
  } else {
    throw Error(Error::Kind::Argument, "unknown VisualRWKV version '" + version + "'; choose v6 or v7");
  }
  // Each turn tokenized on its own, split on <image>; adjacent text chunks concatenated.
  std::vector<PromptItem> items;
  int n_img = 0;
  for (auto& t : turns) {
    std::u32string s = render(t);
    size_t start = 0;
    while (true) {
      size_t p = s.find(kTag, start);
      std::vector<int32_t> ids = tok.encode(to_utf8(s.substr(start, p == std::u32string::npos ? std::u32string::npos : p - start)));
      if (!ids.empty()) {
        if (!items.empty() && items.back().image < 0) items.back().ids.insert(items.back().ids.end(), ids.begin(), ids.end());
        else items.push_back({ids, -1});
      }
      if (p == std::u32string::npos) break;
      items.push_back({{}, n_img++});
      start = p + kTag.size();
    }
  }
  return items;
}

std::vector<int32_t> followup_ids(const Tokenizer& tok, const std::string& question) {
  std::u32string q = collapse_blank_lines(strip(replace_all(to_u32(question), kTag, U"")));
  std::vector<int32_t> ids = tok.encode(to_utf8(render({true, q})));
  std::vector<int32_t> tail = tok.encode(to_utf8(render({false, U""})));
  ids.insert(ids.end(), tail.begin(), tail.end());
  return ids;
}

uint64_t image_hash(const Image& img) {
  uint64_t h = 14695981039346656037ull;
  int32_t wh[2] = {img.width, img.height};
  h = fnv1a(h, wh, sizeof wh);
  return fnv1a(h, img.rgb.data(), img.rgb.size());
}

const Session::Snapshot* ImageStateCache::find(uint64_t key) {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].first == key) {
      std::rotate(entries_.begin() + long(i), entries_.begin() + long(i) + 1, entries_.end());  // most recent last
      return &entries_.back().second;
    }
  return nullptr;
}

void ImageStateCache::put(uint64_t key, Session::Snapshot snap) {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].first == key) { entries_.erase(entries_.begin() + long(i)); break; }
  entries_.emplace_back(key, std::move(snap));
  if (entries_.size() > max_) entries_.erase(entries_.begin());
}

const float* prefill_prompt(Session& session, const std::vector<PromptItem>& items, const std::vector<Image>& images,
                            ImageStateCache* cache, bool from_zero_state) {
  for (auto& it : items)
    if (it.image >= 0 && size_t(it.image) >= images.size())
      throw Error(Error::Kind::Argument, "the prompt has an image slot " + std::to_string(it.image) + " but " +
                                             std::to_string(images.size()) + " image(s) were given");
  if (from_zero_state) session.reset();
  bool use_cache = cache && from_zero_state;
  // Key of items[0..n]: a chain hash over each item's token ids or image content (the model is the session's).
  std::vector<uint64_t> keys;
  uint64_t h = 14695981039346656037ull;
  for (auto& it : items) {
    uint64_t item = it.image >= 0 ? image_hash(images[size_t(it.image)]) : fnv1a(7, it.ids.data(), it.ids.size() * 4);
    char kind = it.image >= 0 ? 'i' : 't';
    h = fnv1a(fnv1a(h, &kind, 1), &item, sizeof item);
    keys.push_back(h);
  }
  size_t start = 0;
  const float* last = nullptr;
  if (use_cache) {
    bool has_image = false;
    for (size_t n = items.size(); n-- > 0;) {
      if (items[n].image < 0) continue;
      has_image = true;
      if (const Session::Snapshot* hit = cache->find(keys[n])) {
        session.restore(*hit);
        last = session.logits();
        start = n + 1;
        break;
      }
    }
    if (has_image) (start ? cache->hits : cache->misses)++;
  }
  for (size_t n = start; n < items.size(); ++n) {
    const PromptItem& it = items[n];
    if (it.image < 0) {
      if (it.ids.empty()) continue;
      last = session.prefill(it.ids);
    } else {
      last = session.prefill_image(images[size_t(it.image)]);
      if (use_cache) cache->put(keys[n], session.snapshot());
    }
  }
  if (!last) throw Error(Error::Kind::Argument, "prefill: the prompt holds no tokens and no image");
  return last;
}

}  // namespace vrwkv
