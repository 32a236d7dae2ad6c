// A fresh directory under the system's temp dir for one test, removed with everything in it when
// the test ends. Header-only, so any test target can use it.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace repeaterd::testing {

class TempDir {
 public:
  // `prefix` names the directory after its test, for whoever finds one left behind by a crash.
  explicit TempDir(const std::string& prefix = "repeaterd-test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + ".XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace repeaterd::testing
