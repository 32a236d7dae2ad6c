// EventLog: the operator-facing record of what happened to each record (spec §7).
//
// One JSON object per line, appended and flushed per event so `tail -f` and log shippers see
// events as they happen. reopen() is for logrotate (SIGUSR1). Thread-safe: emit() may be called
// from any thread. Callers put no secrets in events; the log writes what it is given.
#pragma once

#include <cstdio>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "repeaterd/result.hpp"

namespace repeaterd {

class EventLog {
 public:
  EventLog() = default;
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Opens (creating the parent directory if needed) `path` for appending.
  Status open(const std::string& path);

  // Closes and opens the same path again: after logrotate moved the file away.
  Status reopen();

  // Writes {"ts": now, "event": name, ...fields} as one line. Fields must be an object.
  void emit(const std::string& event, nlohmann::json fields);

 private:
  std::mutex mu_;
  std::string path_;
  std::FILE* file_ = nullptr;  // GUARDED_BY(mu_)
};

}  // namespace repeaterd
