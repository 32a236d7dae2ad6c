#include "common/text.hpp"

#include <algorithm>

namespace repeaterd {

namespace {
bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }
}  // namespace

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                            ch == '-' || ch == '.' || ch == '_' || ch == '~';
    if (unreserved) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0x0F];
    }
  }
  return out;
}

std::size_t code_points(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) { return !is_continuation(c); }));
}

std::string shorten(std::string_view s, std::size_t max_points) {
  if (code_points(s) <= max_points) return std::string(s);
  if (max_points == 0) return {};
  std::size_t kept = 0;
  std::size_t i = 0;
  for (; i < s.size(); ++i) {
    if (!is_continuation(s[i])) {
      if (kept == max_points - 1) break;
      ++kept;
    }
  }
  return std::string(s.substr(0, i)) + "\xE2\x80\xA6";  // U+2026 HORIZONTAL ELLIPSIS
}

}  // namespace repeaterd
