// Reporter: collects the errors and warnings found while loading one config file, each at
// the place in the file it concerns, so that all of them can be shown at once.
#pragma once

#include <yaml-cpp/mark.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "repeaterd/config.hpp"

namespace repeaterd::config::detail {

class Reporter {
 public:
  // `text` is the file's content (it must outlive the reporter), used to place findings
  // about empty nodes; may be empty.
  Reporter(std::string file, std::string_view text) : file_(std::move(file)), text_(text) {}

  // `at` is a yaml-cpp mark (0-based); a null mark means "the file as a whole".
  void error(const YAML::Mark& at, std::string message);
  void warning(const YAML::Mark& at, std::string message);
  // For problems that have no place in the file, such as "cannot read it".
  void file_error(std::string message);
  void file_warning(std::string message);

  // Where an empty node is. yaml-cpp marks it at the token after it (the next list item, or
  // nothing at the end of the file); an operator looks for it at the last character before
  // that: the "-" of an empty list item. `next` is the mark yaml-cpp gave the empty node.
  YAML::Mark empty_node_mark(const YAML::Mark& next) const;

  bool has_errors() const { return !errors_.empty(); }

  // Both lists sorted by position; findings at the same place keep the order they were made.
  std::vector<Diagnostic> take_errors();
  std::vector<Diagnostic> take_warnings();

 private:
  Diagnostic make(const YAML::Mark& at, std::string message) const;

  std::string file_;
  std::string_view text_;
  std::vector<Diagnostic> errors_;
  std::vector<Diagnostic> warnings_;
};

}  // namespace repeaterd::config::detail
