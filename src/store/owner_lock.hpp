// store::OwnerLock: one process at a time owns a queue database.
//
// SQLite lets any number of processes open the same file, so a second repeaterd started on the
// same storage.path (a copied unit, a test run beside the service) would claim and send the same
// records as the first. The owner holds an exclusive flock(2) on "<database>.lock" for as long
// as it runs, with its pid written inside for the message the next one prints. flock, not
// fcntl: it is not SQLite's lock (which is fcntl on the database itself) and closing it cannot
// release SQLite's. The kernel drops the lock when the process dies, kill -9 included, so a
// stale file never blocks a start; the file itself stays (it is empty of meaning without the
// lock).
#pragma once

#include <string>

#include "repeaterd/result.hpp"

namespace repeaterd::store {

class OwnerLock {
 public:
  // Takes the lock beside `database_path`, or says who holds it and what to do.
  static Result<OwnerLock> take(const std::string& database_path);

  OwnerLock(OwnerLock&& other) noexcept;
  OwnerLock& operator=(OwnerLock&& other) noexcept;
  OwnerLock(const OwnerLock&) = delete;
  OwnerLock& operator=(const OwnerLock&) = delete;
  ~OwnerLock();

  const std::string& path() const { return path_; }

 private:
  OwnerLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

}  // namespace repeaterd::store
