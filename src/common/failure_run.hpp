// common/failure_run: a run of failures of one operation (a write, a commit), so the journal is
// told once when it starts and once when it is over, not at every failure.
//
// A run is over once the operation has gone on succeeding for `settle` since the last failure:
// a nearly full disk takes a small write into a block's last bytes and refuses the next, and
// "working again" at the first success would flip back and forth with it. Not thread-safe: the
// owner's lock or thread guards it. The time is steady_clock's, given by the caller.
#pragma once

#include <chrono>
#include <cstdint>

namespace repeaterd {

class FailureRun {
 public:
  using Clock = std::chrono::steady_clock;

  explicit FailureRun(Clock::duration settle) : settle_(settle) {}

  bool active() const { return failures_ > 0; }
  std::uint64_t failures() const { return failures_; }  // in the current run
  Clock::time_point since() const { return since_; }    // the run's first failure
  Clock::time_point last() const { return last_; }      // its latest failure

  // A failure at `now`; true when it starts a run.
  bool failed(Clock::time_point now) {
    const bool first = failures_ == 0;
    if (first) since_ = now;
    ++failures_;
    last_ = now;
    return first;
  }

  // A success at `now`; true when it ends the run (it has lasted `settle` since the last failure).
  bool succeeded(Clock::time_point now) {
    if (failures_ == 0 || now - last_ < settle_) return false;
    failures_ = 0;
    return true;
  }

 private:
  Clock::duration settle_;
  std::uint64_t failures_ = 0;
  Clock::time_point since_, last_;
};

}  // namespace repeaterd
