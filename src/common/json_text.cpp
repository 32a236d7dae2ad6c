#include "common/json_text.hpp"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

namespace repeaterd::json_text {
namespace {

using nlohmann::json;

// Printable ASCII but the quote and the backslash: JSON carries it as it is.
bool plain(std::string_view s) {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') return false;
  }
  return true;
}

template <class Int>
void append_integer(std::string& out, Int v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace

void append_string(std::string& out, std::string_view s) {
  if (plain(s)) {
    out += '"';
    out += s;
    out += '"';
    return;
  }
  // Invalid UTF-8 (remote responses, phone text) is replaced, never thrown on.
  out += dump(json(s));
}

void append_int(std::string& out, std::int64_t v) { append_integer(out, v); }

std::string dump(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

void append_value(std::string& out, const json& v) {
  switch (v.type()) {
    case json::value_t::string:
      append_string(out, v.get_ref<const std::string&>());
      return;
    case json::value_t::number_integer:
      append_integer(out, v.get<std::int64_t>());
      return;
    case json::value_t::number_unsigned:
      append_integer(out, v.get<std::uint64_t>());
      return;
    case json::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case json::value_t::null:
      out += "null";
      return;
    default:  // arrays, objects, floating point: rare here, and nlohmann's format is the reference
      out += dump(v);
  }
}

std::string headers_object(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::vector<const std::pair<std::string, std::string>*> sorted;
  sorted.reserve(headers.size());
  std::size_t size = 2;
  for (const auto& h : headers) {
    sorted.push_back(&h);
    size += h.first.size() + h.second.size() + 6;
  }
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  std::string out;
  out.reserve(size);
  out += '{';
  bool first = true;
  for (std::size_t i = 0; i < sorted.size();) {
    const std::string& name = sorted[i]->first;
    std::string joined = sorted[i]->second;
    for (++i; i < sorted.size() && sorted[i]->first == name; ++i) joined += ", " + sorted[i]->second;
    append_member(out, first, name, joined);
  }
  out += '}';
  return out;
}

}  // namespace repeaterd::json_text
