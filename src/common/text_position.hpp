// Where in a text a byte offset is, as people count: 1-based line and column. Parsers report
// offsets (pugixml) or bytes read (nlohmann); error messages should say "line 3, column 14".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace repeaterd {

struct TextPosition {
  std::size_t line = 1;
  std::size_t column = 1;
};

// The position of the byte at `offset` (clamped to the text's end).
TextPosition text_position(std::string_view text, std::size_t offset);

// The position of the last byte a parser read: nlohmann's parse_error::byte counts the
// offending byte itself.
inline TextPosition position_of_last_read(std::string_view text, std::size_t bytes_read) {
  return text_position(text, bytes_read == 0 ? 0 : bytes_read - 1);
}

// "line 3, column 14"
std::string to_string(const TextPosition& p);

}  // namespace repeaterd
