#include "common/event_log.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "repeaterd/time.hpp"

namespace repeaterd {

EventLog::~EventLog() {
  if (file_ != nullptr) std::fclose(file_);
}

Status EventLog::open(const std::string& path) {
  std::lock_guard lock(mu_);
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::FILE* f = std::fopen(path.c_str(), "ae");
  if (f == nullptr) {
    return make_error("cannot open event log " + path + ": " + std::strerror(errno) +
                      " (check log.events_file and the directory's permissions)");
  }
  if (file_ != nullptr) std::fclose(file_);
  file_ = f;
  path_ = path;
  return Ok{};
}

Status EventLog::reopen() {
  std::string path;
  {
    std::lock_guard lock(mu_);
    path = path_;
  }
  return open(path);
}

void EventLog::emit(const std::string& event, nlohmann::json fields) {
  nlohmann::json line = nlohmann::json::object();
  line["ts"] = format_iso8601(now_micros());
  line["event"] = event;
  for (auto& [k, v] : fields.items()) line[k] = std::move(v);
  // Invalid UTF-8 from a remote response must not stop the event from being written.
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  std::lock_guard lock(mu_);
  if (file_ == nullptr) return;
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    spdlog::error("event log {}: write failed: {}", path_, std::strerror(errno));
  }
}

}  // namespace repeaterd
