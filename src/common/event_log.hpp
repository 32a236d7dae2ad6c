// EventLog: the operator-facing record of what happened to each record (spec §7).
//
// One JSON object per line: {"ts": ..., "event": ..., ...fields}. emit() only formats the line
// and appends it to a buffer; a flusher thread writes what has gathered in one write() at most
// Options::flush_interval after the first line of a batch, so `tail -f` and log shippers see
// events within that interval while a busy daemon pays one system call per batch instead of one
// per event. Lines are only ever written whole, in emit() order.
//
// reopen() is for logrotate (SIGUSR1): what was emitted before it goes to the old file, what
// comes after to the new one. flush() and close() (and the destructor) write everything
// buffered, so a clean stop loses no line; a crash (kill -9) can lose the last interval's lines
// (the database, not this log, is what a 2xx promises).
//
// A write that fails (a full disk: ENOSPC) drops that batch's lines, whole, and never stalls
// the caller: every later batch tries again, and the first one written is preceded by a
// `log.lines_lost` line (how many, since when, why). The journal is told once when writes start
// failing and once when they have gone through again for 2 s.
//
// Thread-safety: every method may be called from any thread. Callers put no secrets in events;
// the log writes what it is given.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <thread>

#include "common/failure_run.hpp"
#include "repeaterd/result.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd {

class EventLog {
 public:
  struct Options {
    // How long a line may wait in the buffer before it is written. Default: 20 ms.
    std::chrono::milliseconds flush_interval{20};
    // A buffer this large is written at once, by the emitting thread if the flusher is behind
    // (so a stalled disk slows emitters rather than growing memory). Default: 1 MiB.
    std::size_t max_buffered = std::size_t{1} << 20;
  };

  EventLog() : EventLog(Options{}) {}
  explicit EventLog(Options options);
  ~EventLog();  // close()
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Opens (creating the parent directory if needed) `path` for appending.
  Status open(const std::string& path);

  // Writes what is buffered to the current file, then opens the same path again: after
  // logrotate moved the file away.
  Status reopen();

  // Appends {"ts": now, "event": name, ...fields} as one line. Fields must be an object; a field
  // named "ts" or "event" replaces the line's own.
  void emit(const std::string& event, nlohmann::json fields);

  // Writes every line emitted so far (returns once they are in the file).
  void flush();

  // flush(), then stops the flusher and closes the file; later lines are dropped.
  void close();

 private:
  void flusher_loop();
  // REQUIRES: file_mu_ is held.
  void write_pending_locked();
  void start_flusher();

  const Options options_;
  // Lock order: file_mu_ before mu_. mu_ is held only to append to or take the buffer.
  std::mutex file_mu_;
  std::string path_;   // GUARDED_BY(file_mu_)
  int fd_ = -1;        // GUARDED_BY(file_mu_)
  // GUARDED_BY(file_mu_): lines dropped since the last line written, since when, and why (the
  // next log.lines_lost line); and the run of failures the journal was told of (told again
  // when writes have gone through for 2 s), with when it began and the lines it lost.
  std::uint64_t lost_lines_ = 0;
  Micros lost_since_ = 0;
  std::string lost_error_;
  FailureRun trouble_{std::chrono::seconds(2)};
  Micros trouble_since_ = 0;
  std::uint64_t trouble_lines_ = 0;
  std::mutex mu_;
  std::condition_variable wake_;
  std::string buffer_;     // GUARDED_BY(mu_): whole lines not yet written
  bool open_ = false;      // GUARDED_BY(mu_)
  bool stopping_ = false;  // GUARDED_BY(mu_)
  std::thread flusher_;
};

namespace event_log_detail {
// The line emit() writes, newline included. Exposed for tests.
std::string format_line(std::string_view ts, const std::string& event, const nlohmann::json& fields);
}  // namespace event_log_detail

}  // namespace repeaterd
