#include "common/text_position.hpp"

#include <algorithm>

namespace repeaterd {

TextPosition text_position(std::string_view text, std::size_t offset) {
  const std::string_view before = text.substr(0, std::min(offset, text.size()));
  TextPosition p;
  p.line = 1 + static_cast<std::size_t>(std::count(before.begin(), before.end(), '\n'));
  const auto last_newline = before.rfind('\n');
  p.column = last_newline == std::string_view::npos ? before.size() + 1 : before.size() - last_newline;
  return p;
}

std::string to_string(const TextPosition& p) {
  return "line " + std::to_string(p.line) + ", column " + std::to_string(p.column);
}

}  // namespace repeaterd
