#include "config/read_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace repeaterd::config::detail {
namespace {

// strerror is not thread-safe; a reload may run beside other threads.
std::string errno_text() { return std::error_code(errno, std::generic_category()).message(); }

std::string describe_limit(std::size_t max_bytes) {
  if (max_bytes % (1u << 20) == 0) return std::to_string(max_bytes >> 20) + " MiB";
  if (max_bytes % (1u << 10) == 0) return std::to_string(max_bytes >> 10) + " KiB";
  return std::to_string(max_bytes) + " bytes";
}

// Closes the descriptor on every return path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Result<std::string> read_small_file(const std::string& path, std::size_t max_bytes) {
  if (path.empty()) return make_error("the path is empty");
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return make_error(errno_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return make_error(errno_text());
  if (S_ISDIR(st.st_mode)) return make_error("it is a directory, not a file");
  std::string data;
  // Read one byte past the cap to tell "exactly at the cap" from "too big" without trusting
  // st_size, which is 0 for pipes and files under /proc.
  char buf[8192];
  while (data.size() <= max_bytes) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(errno_text());
    }
    if (n == 0) return data;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return make_error("it is larger than " + describe_limit(max_bytes));
}

}  // namespace repeaterd::config::detail
