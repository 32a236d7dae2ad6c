// Secrets in the config: `X_env: NAME` (an environment variable), `X_file: PATH` (a file,
// trailing newlines stripped) or, with a warning, `X: value` inline. Exactly one form per
// secret. No message made here ever contains the secret's value.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "config/yaml_reader.hpp"
#include "repeaterd/config.hpp"

namespace repeaterd::config::detail {

// The environment as the loader sees it: the injected map when given, else getenv.
class Environment {
 public:
  explicit Environment(const std::map<std::string, std::string>* vars) : vars_(vars) {}
  std::optional<std::string> get(const std::string& name) const;

 private:
  const std::map<std::string, std::string>* vars_;
};

// Bigger secret files are refused: a secret is a line, not a document.
inline constexpr std::size_t kMaxSecretFile = 64 * 1024;

struct SecretRead {
  bool given = false;             // one of the three keys is present
  std::optional<Secret> secret;   // set when it was given once and resolved
  const Field* source = nullptr;  // the key it was resolved from, for later checks
};

// Resolves the secret `name` of the mapping `map`. Reports conflicts, unresolvable sources
// and the inline warning; reports nothing when none of the keys is present (the caller
// knows whether the secret is required).
SecretRead read_secret(const MapReader& map, std::string_view name, const Environment& env);

}  // namespace repeaterd::config::detail
