#include "common/event_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/json_text.hpp"
#include "repeaterd/time.hpp"

namespace repeaterd {

namespace event_log_detail {

std::string format_line(std::string_view ts, const std::string& event, const nlohmann::json& fields) {
  std::string out;
  out.reserve(256);
  out += '{';
  bool first = true;
  const bool object = fields.is_object();
  if (!object || !fields.contains("ts")) {
    json_text::append_key(out, first, "ts");
    json_text::append_string(out, ts);
  }
  if (!object || !fields.contains("event")) {
    json_text::append_key(out, first, "event");
    json_text::append_string(out, event);
  }
  if (object) {
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      json_text::append_key(out, first, it.key());
      json_text::append_value(out, it.value());
    }
  }
  out += "}\n";
  return out;
}

}  // namespace event_log_detail

namespace {

// Appends all of `data` (write() may take less than it is given): 0, or the errno of the
// failure, after which the file is as it was before (a part of a batch written before the
// disk filled is cut off again, so no torn line is left for the next one to run into).
int append_whole(int fd, std::string_view data) {
  std::size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      struct stat st {};
      if (written > 0 && ::fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(written)) {
        // Only this process appends to the file (O_APPEND): its last `written` bytes are ours.
        if (::ftruncate(fd, st.st_size - static_cast<off_t>(written)) != 0) {
          spdlog::error("event log: cannot cut off a partly written batch: {}", std::strerror(errno));
        }
      }
      return err;
    }
    written += static_cast<std::size_t>(n);
  }
  return 0;
}

Result<int> open_for_append(const std::string& path) {
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    return make_error("cannot open event log " + path + ": " + std::strerror(errno) +
                      " (check log.events_file and the directory's permissions)");
  }
  return fd;
}

}  // namespace

EventLog::EventLog(Options options) : options_(options) {}

EventLog::~EventLog() { close(); }

Status EventLog::open(const std::string& path) {
  auto fd = open_for_append(path);
  if (!fd) return fd.error();
  std::lock_guard file(file_mu_);
  write_pending_locked();  // what was emitted for the file open until now goes there
  if (fd_ >= 0) ::close(fd_);
  fd_ = *fd;
  path_ = path;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Ok{};  // closed for good; the file is closed by close()'s caller
    open_ = true;
  }
  start_flusher();
  return Ok{};
}

Status EventLog::reopen() {
  std::lock_guard file(file_mu_);
  // Every line emitted before the rotation belongs in the file logrotate moved away.
  write_pending_locked();
  auto fd = open_for_append(path_);
  if (!fd) return fd.error();  // keep writing to the old file
  if (fd_ >= 0) ::close(fd_);
  fd_ = *fd;
  return Ok{};
}

void EventLog::emit(const std::string& event, nlohmann::json fields) {
  std::string line = event_log_detail::format_line(format_iso8601(now_micros()), event, fields);
  bool wake = false, full = false;
  {
    std::lock_guard lock(mu_);
    if (!open_) return;
    wake = buffer_.empty();
    buffer_ += line;
    full = buffer_.size() >= options_.max_buffered;
  }
  if (full) {
    flush();  // the flusher is behind: write here, so the buffer stays bounded
  } else if (wake) {
    wake_.notify_one();
  }
}

void EventLog::flush() {
  std::lock_guard file(file_mu_);
  write_pending_locked();
}

void EventLog::close() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::thread flusher;
  {
    std::lock_guard file(file_mu_);
    flusher = std::move(flusher_);
  }
  // Joined without file_mu_: the flusher may be waiting for it to write a batch.
  if (flusher.joinable()) flusher.join();
  std::lock_guard file(file_mu_);
  write_pending_locked();
  {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void EventLog::write_pending_locked() {
  std::string pending;
  {
    std::lock_guard lock(mu_);
    pending.swap(buffer_);
    // Start the next batch with the capacity this one needed, so a steady stream of events
    // does not regrow the buffer every interval.
    buffer_.reserve(std::min(pending.capacity(), options_.max_buffered));
  }
  if (pending.empty() || fd_ < 0) return;
  const auto lines = static_cast<std::uint64_t>(std::count(pending.begin(), pending.end(), '\n'));
  if (lost_lines_ > 0) {
    // The first batch that can be written after a failure says what the file is missing.
    pending.insert(0, event_log_detail::format_line(format_iso8601(now_micros()), "log.lines_lost",
                                                    {{"lines", lost_lines_},
                                                     {"since", format_iso8601(lost_since_)},
                                                     {"error", lost_error_}}));
  }
  const int err = append_whole(fd_, pending);
  const auto now = FailureRun::Clock::now();
  if (err == 0) {
    lost_lines_ = 0;
    if (trouble_.succeeded(now)) {
      spdlog::warn("event log {}: writing again; {} event line(s) emitted since {} were lost ({}); log.lines_lost "
                   "lines in the file mark the gaps",
                   path_, trouble_lines_, format_iso8601(trouble_since_), lost_error_);
    }
    return;
  }
  // Dropped, not kept: holding lines until the disk has room would grow memory without bound,
  // and what a 2xx promises is in the database, not here.
  if (lost_lines_ == 0) lost_since_ = now_micros();
  lost_lines_ += lines;
  lost_error_ = std::strerror(err);
  if (trouble_.failed(now)) {
    trouble_since_ = lost_since_;
    trouble_lines_ = 0;
    spdlog::error("event log {}: cannot write ({}): event lines are dropped until writes succeed, which is tried "
                  "with every batch; the queue and forwarding go on. Free space on its filesystem",
                  path_, lost_error_);
  }
  trouble_lines_ += lines;
}

void EventLog::start_flusher() {
  if (!flusher_.joinable()) flusher_ = std::thread([this] { flusher_loop(); });
}

void EventLog::flusher_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !buffer_.empty(); });
    if (stopping_) return;  // close() writes what is left
    // Let the batch gather for up to the interval; a full buffer or a stop cuts it short.
    wake_.wait_for(lock, options_.flush_interval,
                   [&] { return stopping_ || buffer_.size() >= options_.max_buffered; });
    if (stopping_) return;
    lock.unlock();
    flush();
    lock.lock();
  }
}

}  // namespace repeaterd
