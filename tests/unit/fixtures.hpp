// The CommCare HQ fixtures in tests/fixtures/commcare (BSD-3, see the README there), read by
// the unit tests. The path is fixed at build time (REPEATERD_FIXTURES_DIR), so the tests read
// nothing outside the checkout.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace repeaterd::testing {

inline std::filesystem::path fixtures_dir() { return std::filesystem::path(REPEATERD_FIXTURES_DIR); }

// The fixture's bytes, with each key of `replace` (REPLACE_UID, REPLACE_CASEID) replaced.
inline std::string read_fixture(const std::string& name, const std::map<std::string, std::string>& replace = {}) {
  std::ifstream in(fixtures_dir() / name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read fixture " << (fixtures_dir() / name);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  for (const auto& [from, to] : replace) {
    for (auto pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
      text.replace(pos, from.size(), to);
    }
  }
  return text;
}

}  // namespace repeaterd::testing
