// Typed, strict reading of a yaml-cpp tree: mappings that reject unknown and duplicate keys,
// and readers for the scalar kinds the config uses (strings, booleans, whole numbers,
// numbers, durations, sizes). Every problem goes to the Reporter at the offending node with
// its dotted path ("connections[0].timeout") and what was expected and found; nothing stops
// at the first problem.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "config/reporter.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd::config::detail {

// "a list", "a mapping", "nothing", or the scalar's text (bare if it is a plain number or
// boolean, else quoted and shortened): the "got ..." of a message.
std::string describe(const YAML::Node& node);

// The same, but never showing a scalar's text: for keys that may hold a secret.
std::string describe_shape(const YAML::Node& node);

// "text" with control characters escaped and long texts cut, safe to put in one log line.
std::string quote(std::string_view text);

// One `key: value` entry of a mapping.
struct Field {
  std::string path;  // "connections[0].timeout"
  std::string name;  // "timeout"
  YAML::Node key;
  YAML::Node value;

  // Where a problem with the value is reported: the value, or its key when the value is
  // empty, because yaml-cpp marks an empty value at whatever token follows it.
  YAML::Mark mark() const;
};

// The keys a mapping may hold.
struct KeySet {
  std::vector<std::string_view> supported;
  // Keys of the product contract that this version does not implement yet: still errors,
  // but the message says so instead of suggesting a typo.
  std::vector<std::string_view> not_yet;
};

// A mapping, checked on construction: a non-mapping, non-scalar keys, unknown keys and
// duplicate keys are reported. Holds the reporter by reference; it must outlive the reader.
class MapReader {
 public:
  // An empty value (`listen:` with everything under it commented out) is an empty mapping
  // for sections, but an error for list items (`- ` with nothing after it).
  enum class Empty { means_defaults, is_error };

  MapReader(const YAML::Node& node, std::string path, const KeySet& keys, Reporter& reporter,
            Empty empty);

  // False when the node was not a mapping (already reported).
  bool valid() const { return valid_; }
  const std::string& path() const { return path_; }
  YAML::Mark mark() const { return node_.Mark(); }
  Reporter& reporter() const { return reporter_; }

  // The entry for `key`, or nullptr when absent.
  const Field* find(std::string_view key) const;
  // The same, reporting "missing required key" at the mapping when absent.
  const Field* require(std::string_view key) const;
  // Entries in file order.
  const std::vector<Field>& fields() const { return fields_; }

 private:
  YAML::Node node_;
  std::string path_;
  Reporter& reporter_;
  bool valid_ = false;
  std::vector<Field> fields_;
};

// Calls `item(node, path)` for each element of a list field; an empty value is an empty list,
// an empty element is reported and skipped.
void for_each_item(const Field& field, Reporter& reporter,
                   const std::function<void(const YAML::Node&, const std::string&)>& item);

// Each reader returns the field when it is present and valid (and then sets `out`), nullptr
// when it is absent or invalid (and then leaves `out` alone and has reported why).

// Any non-empty scalar. `what` names it in messages ("a file path").
const Field* read_string(const MapReader& map, std::string_view key, std::string& out,
                         std::string_view what);

// true or false (also True/TRUE/False/FALSE, the YAML 1.2 core schema; not yes/no/on/off).
const Field* read_bool(const MapReader& map, std::string_view key, bool& out);

// A plain decimal whole number in [min, max]; `noun` is "a whole number" or "a port number".
const Field* read_uint(const MapReader& map, std::string_view key, std::uint64_t min,
                       std::uint64_t max, std::string_view noun, std::uint64_t& out);

template <class T>
const Field* read_uint(const MapReader& map, std::string_view key, T min, std::string_view noun,
                       T& out, T max = std::numeric_limits<T>::max()) {
  std::uint64_t v = 0;
  const Field* f = read_uint(map, key, min, max, noun, v);
  if (f != nullptr) out = static_cast<T>(v);
  return f;
}

// A plain number in [min, max] (or [min, max) when !max_inclusive); max may be infinity.
const Field* read_double(const MapReader& map, std::string_view key, double min, double max,
                         bool max_inclusive, double& out);

// A duration ("500ms", "30s", "1h30m") greater than zero.
const Field* read_duration(const MapReader& map, std::string_view key, Duration& out);

// A size ("512", "64KiB", "10MiB") greater than zero.
const Field* read_size(const MapReader& map, std::string_view key, std::uint64_t& out);

// "30s", "1h30m", "500ms": a duration as an operator would write it.
std::string format_duration(Duration d);

}  // namespace repeaterd::config::detail
