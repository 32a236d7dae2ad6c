#include "config/reporter.hpp"

#include <algorithm>
#include <utility>

namespace repeaterd::config::detail {
namespace {

std::vector<Diagnostic> sorted(std::vector<Diagnostic> list) {
  std::stable_sort(list.begin(), list.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
  return list;
}

}  // namespace

Diagnostic Reporter::make(const YAML::Mark& at, std::string message) const {
  Diagnostic d;
  d.file = file_;
  if (!at.is_null() && at.line >= 0 && at.column >= 0) {
    d.line = at.line + 1;
    d.column = at.column + 1;
  }
  d.message = std::move(message);
  return d;
}

YAML::Mark Reporter::empty_node_mark(const YAML::Mark& next) const {
  std::size_t end = text_.size();
  if (!next.is_null() && next.pos >= 0) end = std::min(end, static_cast<std::size_t>(next.pos));
  // Split text_[0, end) into lines; look from the last one backwards for one that has
  // something besides blanks and a comment.
  std::size_t line_end = end;
  while (true) {
    const std::size_t nl = line_end == 0 ? std::string_view::npos : text_.rfind('\n', line_end - 1);
    const std::size_t line_start = nl == std::string_view::npos ? 0 : nl + 1;
    std::string_view line = text_.substr(line_start, line_end - line_start);
    for (std::size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
        line = line.substr(0, i);
        break;
      }
    }
    const std::size_t last = line.find_last_not_of(" \t\r");
    if (last != std::string_view::npos) {
      YAML::Mark at;
      at.pos = static_cast<int>(line_start + last);
      at.line = static_cast<int>(
          std::count(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(line_start), '\n'));
      at.column = static_cast<int>(last);
      return at;
    }
    if (line_start == 0) return next;
    line_end = line_start - 1;
  }
}

void Reporter::error(const YAML::Mark& at, std::string message) {
  errors_.push_back(make(at, std::move(message)));
}

void Reporter::warning(const YAML::Mark& at, std::string message) {
  warnings_.push_back(make(at, std::move(message)));
}

void Reporter::file_error(std::string message) {
  error(YAML::Mark::null_mark(), std::move(message));
}

void Reporter::file_warning(std::string message) {
  warning(YAML::Mark::null_mark(), std::move(message));
}

std::vector<Diagnostic> Reporter::take_errors() { return sorted(std::exchange(errors_, {})); }

std::vector<Diagnostic> Reporter::take_warnings() { return sorted(std::exchange(warnings_, {})); }

}  // namespace repeaterd::config::detail
