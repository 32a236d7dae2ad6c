// The YAML config loader (config::load_config_text): a config file as an operator (or a bad
// deploy script) might write it. Secrets come from an empty environment.
#include <map>
#include <string>

#include "fuzz.hpp"
#include "repeaterd/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::map<std::string, std::string> env{{"REPEATERD_TOKEN_DEMO", "demo-token-1234"}};
  const auto r = repeaterd::config::load_config_text(std::string(repeaterd::fuzz::as_text(data, size)),
                                                     "fuzz.yaml", &env);
  // A config comes back exactly when there is nothing wrong with it, and every error says where.
  FUZZ_CHECK(r.config.has_value() == r.errors.empty());
  return 0;
}
