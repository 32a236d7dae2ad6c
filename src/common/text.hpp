// Small text helpers shared by the parsers, the notifier and repeaterctl.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace repeaterd {

inline constexpr std::string_view kWhitespace = " \t\r\n";

// `s` without leading and trailing `chars`.
inline std::string_view trim(std::string_view s, std::string_view chars = kWhitespace) {
  const auto first = s.find_first_not_of(chars);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(chars) - first + 1);
}

// RFC 3986: unreserved characters stay, every other byte becomes %XX (upper-case hex).
std::string percent_encode(std::string_view s);

// The number of UTF-8 code points in `s` (continuation bytes do not count).
std::size_t code_points(std::string_view s);

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one (overlong
// forms, surrogates and code points past U+10FFFF included). REQUIRES: i < s.size().
std::size_t utf8_sequence_length(std::string_view s, std::size_t i);

// Whether `s` is well-formed UTF-8 (RFC 3629).
bool valid_utf8(std::string_view s);

// At most `max_points` code points of `s`, never cutting a character in half; a shortened text
// ends in "…" (which counts as one of them).
std::string shorten(std::string_view s, std::size_t max_points);

}  // namespace repeaterd
