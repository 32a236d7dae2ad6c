// Small text helpers shared by the parsers.
#pragma once

#include <string_view>

namespace repeaterd {

inline constexpr std::string_view kWhitespace = " \t\r\n";

// `s` without leading and trailing `chars`.
inline std::string_view trim(std::string_view s, std::string_view chars = kWhitespace) {
  const auto first = s.find_first_not_of(chars);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(chars) - first + 1);
}

}  // namespace repeaterd
