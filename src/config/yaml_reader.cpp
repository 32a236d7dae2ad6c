#include "config/yaml_reader.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace repeaterd::config::detail {
namespace {

constexpr std::size_t kMaxQuoted = 80;

// yaml-cpp tags an untagged plain scalar "?" and a quoted one "!": the only way to tell
// `port: 8080` from `port: "8080"`.
bool is_plain(const YAML::Node& n) { return n.Tag() == "?"; }

bool is_bool_text(std::string_view s) {
  return s == "true" || s == "True" || s == "TRUE" || s == "false" || s == "False" || s == "FALSE";
}

bool looks_numeric(std::string_view s) {
  if (s.empty()) return false;
  double d = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  return ec == std::errc{} && end == s.data() + s.size();
}

std::string join(const std::vector<std::string_view>& items) {
  std::string out;
  for (auto item : items) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Levenshtein distance, ignoring case: "Port" and "prot" are both one slip from "port".
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      const std::size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The one supported key a typo most likely meant, or empty.
std::string_view suggestion(std::string_view key, const std::vector<std::string_view>& keys) {
  std::string_view best;
  std::size_t best_distance = 3;  // more than two edits away is a different word
  bool unique = false;
  for (auto candidate : keys) {
    const std::size_t d = edit_distance(key, candidate);
    if (d < best_distance) {
      best = candidate;
      best_distance = d;
      unique = true;
    } else if (d == best_distance) {
      unique = false;
    }
  }
  return unique ? best : std::string_view{};
}

std::string child_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string prefix(const std::string& path) { return path.empty() ? "" : path + ": "; }

// Reports a field whose value is not a scalar, or is empty; true when it is a usable scalar.
bool scalar_or_report(const Field& f, const MapReader& map, std::string_view what) {
  if (f.value.IsScalar()) return true;
  map.reporter().error(f.mark(),
                       f.path + ": expected " + std::string(what) + ", got " + describe(f.value));
  return false;
}

// Numbers and booleans must be written bare: `"8080"` is a string in YAML, and accepting
// it would teach operators that quoting does not matter, which it does for other keys.
bool plain_or_report(const Field& f, const MapReader& map, std::string_view what) {
  if (is_plain(f.value)) return true;
  map.reporter().error(f.mark(), f.path + ": expected " + std::string(what) + ", got the string " +
                                     quote(f.value.Scalar()) + " (write it without quotes)");
  return false;
}

std::string range_text(std::string_view noun, std::uint64_t min, std::uint64_t max) {
  if (max == std::numeric_limits<std::uint64_t>::max() ||
      max == std::numeric_limits<std::uint32_t>::max()) {
    return std::string(noun) + " of at least " + std::to_string(min);
  }
  return std::string(noun) + " from " + std::to_string(min) + " to " + std::to_string(max);
}

std::string number_text(double d) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%g", d);
  return buf.data();
}

}  // namespace

std::string quote(std::string_view text) {
  std::string out = "\"";
  std::size_t shown = 0;
  for (char c : text) {
    if (shown == kMaxQuoted) {
      out += "...";
      break;
    }
    ++shown;
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7f) {
      std::array<char, 8> buf{};
      std::snprintf(buf.data(), buf.size(), "\\x%02x", u);
      out += buf.data();
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

std::string describe_shape(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      return "a value";
    default:
      return "nothing";
  }
}

std::string describe(const YAML::Node& node) {
  if (!node.IsScalar()) return describe_shape(node);
  const std::string& s = node.Scalar();
  if (is_plain(node) && (looks_numeric(s) || is_bool_text(s))) return s;
  return quote(s);
}

YAML::Mark Field::mark() const { return value.IsNull() ? key.Mark() : value.Mark(); }

MapReader::MapReader(const YAML::Node& node, std::string path, const KeySet& keys,
                     Reporter& reporter, Empty empty)
    : node_(node), path_(std::move(path)), reporter_(reporter) {
  if (node.IsNull() && empty == Empty::means_defaults) {
    valid_ = true;
    return;
  }
  if (!node.IsMap()) {
    reporter_.error(node.Mark(), prefix(path_) + "expected a mapping with keys " +
                                     join(keys.supported) + ", got " + describe(node));
    return;
  }
  valid_ = true;
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies: yaml-cpp's iterator hands out a temporary, so a reference would dangle.
    const YAML::Node key = it->first;
    if (!key.IsScalar()) {
      reporter_.error(key.Mark(), prefix(path_) + "expected a key name, got " + describe(key));
      continue;
    }
    const std::string& name = key.Scalar();
    const auto known = [&](const std::vector<std::string_view>& list) {
      return std::find(list.begin(), list.end(), name) != list.end();
    };
    if (!known(keys.supported)) {
      std::string message = prefix(path_) + "unknown key " + quote(name);
      if (known(keys.not_yet)) {
        message += ": not supported by this version (allowed keys: ";
      } else if (auto near = suggestion(name, keys.supported); !near.empty()) {
        message += " (did you mean \"" + std::string(near) + "\"? allowed keys: ";
      } else {
        message += " (allowed keys: ";
      }
      reporter_.error(key.Mark(), message + join(keys.supported) + ")");
      continue;
    }
    if (const Field* first = find(name); first != nullptr) {
      // yaml-cpp keeps both entries; which one would win is not obvious to a reader.
      reporter_.error(key.Mark(), prefix(path_) + "duplicate key " + quote(name) +
                                      " (first given at line " +
                                      std::to_string(first->key.Mark().line + 1) + ")");
      continue;
    }
    fields_.push_back(Field{child_path(path_, name), name, key, it->second});
  }
}

const Field* MapReader::find(std::string_view key) const {
  for (const auto& f : fields_) {
    if (f.name == key) return &f;
  }
  return nullptr;
}

const Field* MapReader::require(std::string_view key) const {
  const Field* f = find(key);
  if (f == nullptr && valid_) {
    const YAML::Mark at = node_.IsNull() ? YAML::Mark::null_mark() : node_.Mark();
    reporter_.error(at, prefix(path_) + "missing required key \"" + std::string(key) + "\"");
  }
  return f;
}

void for_each_item(const Field& field, Reporter& reporter,
                   const std::function<void(const YAML::Node&, const std::string&)>& item) {
  if (field.value.IsNull()) return;
  if (!field.value.IsSequence()) {
    reporter.error(field.mark(), field.path + ": expected a list, got " + describe(field.value));
    return;
  }
  std::size_t index = 0;
  for (const auto& element : field.value) {
    const std::string path = field.path + "[" + std::to_string(index) + "]";
    if (element.IsNull()) {
      // An empty item ("- " and nothing else) is never meant; it is usually a
      // half-deleted entry.
      reporter.error(reporter.empty_node_mark(element.Mark()),
                     path + ": expected an entry, got nothing");
    } else {
      item(element, path);
    }
    ++index;
  }
}

const Field* read_string(const MapReader& map, std::string_view key, std::string& out,
                         std::string_view what) {
  const Field* f = map.find(key);
  if (f == nullptr || !scalar_or_report(*f, map, what)) return nullptr;
  if (f->value.Scalar().empty()) {
    map.reporter().error(f->mark(), f->path + ": expected " + std::string(what) + ", got \"\"");
    return nullptr;
  }
  out = f->value.Scalar();
  return f;
}

const Field* read_bool(const MapReader& map, std::string_view key, bool& out) {
  const Field* f = map.find(key);
  constexpr std::string_view kWhat = "true or false";
  if (f == nullptr || !scalar_or_report(*f, map, kWhat) || !plain_or_report(*f, map, kWhat)) {
    return nullptr;
  }
  const std::string& s = f->value.Scalar();
  if (!is_bool_text(s)) {
    map.reporter().error(f->mark(),
                         f->path + ": expected true or false, got " + describe(f->value));
    return nullptr;
  }
  out = s[0] == 't' || s[0] == 'T';
  return f;
}

const Field* read_uint(const MapReader& map, std::string_view key, std::uint64_t min,
                       std::uint64_t max, std::string_view noun, std::uint64_t& out) {
  const Field* f = map.find(key);
  const std::string what = range_text(noun, min, max);
  if (f == nullptr || !scalar_or_report(*f, map, what) || !plain_or_report(*f, map, what)) {
    return nullptr;
  }
  const std::string& s = f->value.Scalar();
  std::uint64_t v = 0;
  const bool digits =
      !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (!digits || ec != std::errc{} || end != s.data() + s.size() || v < min || v > max) {
    map.reporter().error(f->mark(), f->path + ": expected " + what + ", got " + describe(f->value));
    return nullptr;
  }
  out = v;
  return f;
}

const Field* read_double(const MapReader& map, std::string_view key, double min, double max,
                         bool max_inclusive, double& out) {
  const Field* f = map.find(key);
  const std::string what = std::isinf(max)
                               ? "a number of at least " + number_text(min)
                               : "a number from " + number_text(min) +
                                     (max_inclusive ? " to " : " up to but not including ") +
                                     number_text(max);
  if (f == nullptr || !scalar_or_report(*f, map, what) || !plain_or_report(*f, map, what)) {
    return nullptr;
  }
  const std::string& s = f->value.Scalar();
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  const bool in_range = v >= min && (max_inclusive ? v <= max : v < max);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v) ||
      !in_range) {
    map.reporter().error(f->mark(), f->path + ": expected " + what + ", got " + describe(f->value));
    return nullptr;
  }
  out = v;
  return f;
}

const Field* read_duration(const MapReader& map, std::string_view key, Duration& out) {
  const Field* f = map.find(key);
  constexpr std::string_view kWhat = "a duration like 500ms, 30s, 5m, 24h or 7d";
  if (f == nullptr || !scalar_or_report(*f, map, kWhat)) return nullptr;
  const std::string& s = f->value.Scalar();
  const auto d = parse_duration(s);
  if (!d) {
    std::string message =
        f->path + ": expected " + std::string(kWhat) + ", got " + describe(f->value);
    if (looks_numeric(s)) message += " (add a unit: ms, s, m, h or d)";
    map.reporter().error(f->mark(), message);
    return nullptr;
  }
  if (d->count() <= 0) {
    map.reporter().error(
        f->mark(), f->path + ": expected a duration longer than zero, got " + describe(f->value));
    return nullptr;
  }
  out = *d;
  return f;
}

const Field* read_size(const MapReader& map, std::string_view key, std::uint64_t& out) {
  const Field* f = map.find(key);
  constexpr std::string_view kWhat = "a size like 512, 64KiB, 10MiB or 1GiB";
  if (f == nullptr || !scalar_or_report(*f, map, kWhat)) return nullptr;
  const auto n = parse_size(f->value.Scalar());
  if (!n) {
    map.reporter().error(
        f->mark(), f->path + ": expected " + std::string(kWhat) + ", got " + describe(f->value));
    return nullptr;
  }
  if (*n == 0) {
    map.reporter().error(
        f->mark(), f->path + ": expected a size greater than zero, got " + describe(f->value));
    return nullptr;
  }
  out = *n;
  return f;
}

std::string format_duration(Duration d) {
  struct Unit {
    std::int64_t millis;
    const char* name;
  };
  static constexpr std::array<Unit, 5> kUnits{
      {{86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1'000, "s"}, {1, "ms"}}};
  std::int64_t left = d.count();
  if (left <= 0) return std::to_string(left) + "ms";
  std::string out;
  for (const auto& u : kUnits) {
    if (left >= u.millis) {
      out += std::to_string(left / u.millis) + u.name;
      left %= u.millis;
    }
  }
  return out;
}

}  // namespace repeaterd::config::detail
