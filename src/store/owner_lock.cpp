#include "store/owner_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include "common/text.hpp"

namespace repeaterd::store {
namespace {

std::string errno_message(int e) { return std::strerror(e); }

// The pid the holder wrote, or "" when the file holds none (it is being written).
std::string holder_pid(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return {};
  const std::string_view text = trim(std::string_view(buf, static_cast<std::size_t>(n)));
  for (const char c : text) {
    if (c < '0' || c > '9') return {};
  }
  return std::string(text);
}

}  // namespace

Result<OwnerLock> OwnerLock::take(const std::string& database_path) {
  std::string path = database_path + ".lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;
    return make_error("cannot open " + path + ", the lock that keeps a second repeaterd off the queue database " +
                      database_path + ": " + errno_message(e) +
                      " (the directory must be writable by the user repeaterd runs as)");
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    if (e == EWOULDBLOCK) {
      const std::string pid = holder_pid(fd);
      ::close(fd);
      return make_error("the queue database " + database_path + " is in use by another repeaterd process" +
                        (pid.empty() ? std::string() : " (pid " + pid + ")") + ", which holds " + path +
                        ". Two daemons on one queue would send every record twice: stop the other one first, or "
                        "give this configuration its own storage.path");
    }
    ::close(fd);
    return make_error("cannot lock " + path + ": " + errno_message(e));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int e = errno;
    ::close(fd);
    return make_error("cannot write " + path + ": " + errno_message(e));
  }
  return OwnerLock(fd, std::move(path));
}

OwnerLock::OwnerLock(OwnerLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

OwnerLock& OwnerLock::operator=(OwnerLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

OwnerLock::~OwnerLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace repeaterd::store
