// scheduler::Pacer: how many requests a connection may have in flight right now (spec §5),
// an I/O-free state machine fed with each attempt's outcome and latency.
//
// It is TCP's congestion control applied to requests: a slow start (1, 2, 4 … per round of
// answers) after the daemon starts, a circuit closes or a paused repeater resumes, so a backlog
// is released at a rising rate, never as a flood; then additive increase (one more per round of
// answers) while the receiver keeps up, and a multiplicative decrease when it does not: a
// retryable failure, or a latency well above the best seen lately (the receiver is queueing:
// a gradient signal, as in Netflix's concurrency-limits). Always within [1, max_in_flight].
// A healthy receiver soon gets max_in_flight; a fragile one whose latency rises with load is
// held near the concurrency it can serve.
#pragma once

#include <cstddef>
#include <cstdint>

#include "repeaterd/time.hpp"

namespace repeaterd::scheduler {

class Pacer {
 public:
  struct Settings {
    // A latency is a sign of queueing when it is at least `latency_factor` × the baseline (the
    // lowest latency of the last two windows of `window` results) and at least
    // `latency_tolerance` above it (a receiver on the same machine answers in well under a
    // millisecond; its jitter is no signal).
    double latency_factor = 2.0;
    Duration latency_tolerance = std::chrono::milliseconds(50);
    std::size_t window = 256;
    double decrease = 0.5;  // the limit's factor on a sign of overload
  };

  // A new pacer starts its slow start at kInitialWindow (TCP's initial window, RFC 3390: a
  // fresh start has no sign of trouble, and one hung request must not hold the connection).
  static constexpr std::size_t kInitialWindow = 4;
  explicit Pacer(std::uint32_t max_in_flight) : Pacer(max_in_flight, Settings{}) {}
  Pacer(std::uint32_t max_in_flight, Settings settings);

  // Slow start again from `from` (after a circuit closed or a repeater resumed: from 1).
  void restart(std::size_t from = 1);

  // An attempt ended. `retryable_failure`: the receiver failed (network, timeout, 5xx, 429...);
  // `latency`: how long it took; `in_flight`: the connection's attempts in flight when it
  // ended, itself included (the limit only grows when it is being used).
  void on_result(bool retryable_failure, Duration latency, std::size_t in_flight);

  std::size_t limit() const { return static_cast<std::size_t>(limit_); }
  bool slow_start() const { return limit_ < threshold_; }

 private:
  void decrease();

  std::uint32_t max_;
  Settings settings_;
  double limit_ = 1.0;
  double threshold_ = 0.0;  // slow start below this
  std::size_t hold_ = 0;    // results still out from before the last decrease: ignored
  std::size_t acked_ = 0;   // answers since the last additive increase
  // Baseline latency: the minimum of this window and the last one.
  Duration window_min_ = Duration::max();
  Duration last_window_min_ = Duration::max();
  std::size_t window_count_ = 0;
};

}  // namespace repeaterd::scheduler
