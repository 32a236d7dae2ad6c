// Reading the small files a config names: the config itself, secret files, CA bundles.
#pragma once

#include <cstddef>
#include <string>

#include "repeaterd/result.hpp"

namespace repeaterd::config::detail {

// Reads the whole regular file at `path`. Fails with a reason a person can act on ("No such
// file or directory", "is a directory", "is larger than 64 KiB") when it cannot be read or is
// bigger than `max_bytes`; the cap keeps a wrong path (a device, a log) from being slurped.
// The error message does not repeat the path: callers say which key named it.
Result<std::string> read_small_file(const std::string& path, std::size_t max_bytes);

}  // namespace repeaterd::config::detail
