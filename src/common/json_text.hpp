// json_text: JSON written straight into a string, for the hot paths that write the same flat
// shapes over and over (event log lines, stored case state). Values come out exactly as
// nlohmann::json::dump(-1, ' ', false, error_handler_t::replace) writes them: text that is
// printable ASCII is copied, anything else (escapes, UTF-8, invalid bytes) goes through
// nlohmann, so the two never disagree on escaping.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace repeaterd::json_text {

// The whole value as nlohmann writes it compactly, except that bytes that are not UTF-8 become
// U+FFFD instead of an exception: text from a request (a path, an id, a header) may hold any.
std::string dump(const nlohmann::json& v);

// Appends `s` as a JSON string, quotes included.
void append_string(std::string& out, std::string_view s);
void append_int(std::string& out, std::int64_t v);
// Any value; strings, integers, booleans and null without building anything.
void append_value(std::string& out, const nlohmann::json& v);

// Appends `,"key":` (no comma for the first member) and clears `first`.
inline void append_key(std::string& out, bool& first, std::string_view key) {
  if (!first) out += ',';
  first = false;
  append_string(out, key);
  out += ':';
}

// Appends `,"key":"value"` (see append_key).
inline void append_member(std::string& out, bool& first, std::string_view key, std::string_view value) {
  append_key(out, first, key);
  append_string(out, value);
}

// Appends an object of string members, in the order given.
inline void append_object(std::string& out,
                          std::initializer_list<std::pair<std::string_view, std::string_view>> members) {
  bool first = true;
  out += '{';
  for (const auto& [key, value] : members) append_member(out, first, key, value);
  out += '}';
}

// HTTP headers as one JSON object: names sorted, the values of a repeated name joined with ", "
// in the order given. The bytes nlohmann writes for the same std::map; every attempt stores its
// response's headers this way.
std::string headers_object(const std::vector<std::pair<std::string, std::string>>& headers);

// Appends {"key": write(value), ...} for a map's entries, in the map's order.
template <class Map, class Write>
void append_map(std::string& out, const Map& map, const Write& write) {
  bool first = true;
  out += '{';
  for (const auto& [key, value] : map) {
    append_key(out, first, key);
    write(value);
  }
  out += '}';
}

}  // namespace repeaterd::json_text
